//! The typed events of the interaction feed: what RecordInteraction puts on
//! it, read back over WatchChanges field by field (exact money, integer
//! scores); and typed profile events with every field set applied by the
//! `ProfileFollower`, their effects read back from the database, the events
//! they cause, and an erasure reducing earlier events to `redacted`.

mod common;

use common::*;
use futures::StreamExt;
use rapport_interaction::follow::ProfileFollower;
use rapport_kit::feed::{FeedHandler, NewEvent};
use rapport_proto::rapport::common::v1::{
    ChangeEvent, Identifier, IdentifierKind, RedactedEvent, RedactionReason,
};
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    Channel, GetInteractionRequest, Initiator, InteractionEvent, InteractionRecorded,
    InteractionType, LineItem, ReassignReason, RecordInteractionsRequest, RejectionReason,
    ServiceRequestStatus, Survey, WatchChangesRequest,
};
use rapport_proto::rapport::profile::v1::profile_event::Event as P;
use rapport_proto::rapport::profile::v1::{
    Customer, CustomerCreated, CustomerErased, CustomerMerged, CustomerOrigin, CustomerUnmerged,
    ProfileEvent,
};
use sqlx::PgPool;
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn recorded_interactions_read_back_exactly_from_the_feed() {
    let s = start().await;
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let campaign = create_campaign(&s, tenant, campaign("Spring")).await;

    // A purchase of EUR 10.50 with a margin of 3.25, with everything the
    // feed must not carry (line items, attributes, a key).
    let mut buy = purchase(customer, at(2024, 3, 1, 10), 10);
    buy.amount = Some(money("EUR", 10, 500_000_000));
    buy.margin = Some(money("EUR", 3, 250_000_000));
    buy.channel = Channel::Store as i32;
    buy.initiator = Initiator::Customer as i32;
    buy.campaign_id = campaign.campaign_id.clone();
    buy.agent_id = "agent-9".into();
    buy.line_items = vec![LineItem {
        sku: "sku-secret".into(),
        name: "Shoe".into(),
        category: "shoes".into(),
        quantity: 1.0,
        unit_price: Some(money("EUR", 10, 500_000_000)),
    }];
    buy.attributes = Some(rapport_kit::convert::json_to_struct(
        serde_json::json!({"receipt": "attr-secret"}),
    ));
    buy.idempotency_key = "key-secret".into();
    buy.decision_id = "01a2512e-704b-700b-94b3-c19a40419966".into();
    // A return of one nano; surveys with CSAT 2 / NPS 3, the lowest scores,
    // and a CSAT alone; a custom type; a service request.
    let mut ret = contact(customer, InteractionType::Return, at(2024, 3, 2, 10));
    ret.amount = Some(money("USD", 0, 1));
    let survey = |day, csat, nps| {
        let mut i = contact(
            customer,
            InteractionType::SurveyResponse,
            at(2024, 3, day, 10),
        );
        i.survey = Some(Survey {
            csat,
            nps,
            comment: "comment-secret".into(),
        });
        i
    };
    let mut custom = contact(customer, InteractionType::Custom, at(2024, 3, 6, 10));
    custom.custom_type = "acme.loyalty_redemption".into();
    custom.initiator = Initiator::Company as i32;
    let request = contact(
        customer,
        InteractionType::ServiceRequest,
        at(2024, 3, 7, 10),
    );
    let all = vec![
        buy,
        ret,
        survey(3, Some(2), Some(3)),
        survey(4, Some(1), Some(0)),
        survey(5, Some(5), None),
        custom,
        request,
    ];
    let mut stored = Vec::new();
    for i in all {
        stored.push(record(&s, tenant, i).await);
    }

    let mut feed = s
        .interactions()
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .answer();
    let mut got: Vec<(ChangeEvent, InteractionRecorded)> = Vec::new();
    while got.len() < stored.len() {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(10), feed.next())
            .await
            .expect("feed")
            .unwrap()
            .unwrap()
            .event
            .unwrap();
        if ev.event_type == "CampaignCreated" {
            continue;
        }
        match rapport_kit::feed::decode::<InteractionEvent>(&ev).and_then(|e| e.event) {
            Some(Event::InteractionRecorded(r)) => got.push((ev, r)),
            other => panic!("unexpected {other:?}"),
        }
    }
    for ((ev, r), i) in got.iter().zip(&stored) {
        assert_eq!(ev.event_type, "InteractionRecorded");
        assert_eq!(ev.aggregate_type, "interaction");
        assert_eq!(ev.aggregate_id, i.interaction_id);
        assert_eq!(ev.tenant_id, tenant.to_string());
        #[allow(deprecated)]
        let legacy = ev.payload.clone();
        assert_eq!(legacy, None);
        let survey = i.survey.clone().unwrap_or_default();
        assert_eq!(
            *r,
            InteractionRecorded {
                interaction_id: i.interaction_id.clone(),
                customer_id: customer.to_string(),
                original_customer_id: customer.to_string(),
                r#type: i.r#type,
                custom_type: i.custom_type.clone(),
                occur_time: i.occur_time,
                channel: i.channel,
                initiator: i.initiator,
                amount: i.amount.clone(),
                margin: i.margin.clone(),
                campaign_id: i.campaign_id.clone(),
                agent_id: i.agent_id.clone(),
                csat: survey.csat,
                nps: survey.nps,
                service_request_status: i.service_request_status,
                decision_id: i.decision_id.clone(),
            }
        );
        let bytes = String::from_utf8_lossy(&ev.event.as_ref().unwrap().value).into_owned();
        assert!(!bytes.contains("secret"), "{bytes}");
    }
    // The same, spelled out for the cases that used to be lost or rounded.
    let buy = &got[0].1;
    let amount = buy.amount.clone().unwrap();
    assert_eq!(
        (amount.currency_code.as_str(), amount.units, amount.nanos),
        ("EUR", 10, 500_000_000)
    );
    let margin = buy.margin.clone().unwrap();
    assert_eq!((margin.units, margin.nanos), (3, 250_000_000));
    assert_eq!(buy.channel, Channel::Store as i32);
    assert_eq!(buy.initiator, Initiator::Customer as i32);
    assert_eq!(buy.campaign_id, campaign.campaign_id);
    assert_eq!(buy.agent_id, "agent-9");
    assert_eq!(buy.decision_id, "01a2512e-704b-700b-94b3-c19a40419966");
    assert_eq!(buy.r#type, InteractionType::Purchase as i32);
    assert_eq!(buy.occur_time, Some(ts(at(2024, 3, 1, 10))));
    let tiny = got[1].1.amount.clone().unwrap();
    assert_eq!(
        (tiny.currency_code.as_str(), tiny.units, tiny.nanos),
        ("USD", 0, 1)
    );
    assert_eq!((got[2].1.csat, got[2].1.nps), (Some(2), Some(3)));
    assert_eq!((got[3].1.csat, got[3].1.nps), (Some(1), Some(0)));
    assert_eq!((got[4].1.csat, got[4].1.nps), (Some(5), None));
    assert_eq!((got[0].1.csat, got[0].1.nps), (None, None));
    assert_eq!(got[5].1.custom_type, "acme.loyalty_redemption");
    assert_eq!(got[5].1.r#type, InteractionType::Custom as i32);
    assert_eq!(
        got[6].1.service_request_status,
        ServiceRequestStatus::Open as i32
    );
    assert_eq!(
        got[0].1.service_request_status,
        ServiceRequestStatus::Unspecified as i32
    );
    s.stop().await;
}

/// The change event the profile service would serve for `event`.
fn profile_event(seq: i64, tenant: Uuid, id: Uuid, name: &'static str, event: P) -> ChangeEvent {
    let new = NewEvent::new(
        tenant,
        "customer",
        id.to_string(),
        name,
        &ProfileEvent { event: Some(event) },
    );
    ChangeEvent {
        sequence: seq,
        tenant_id: tenant.to_string(),
        aggregate_type: "customer".into(),
        aggregate_id: id.to_string(),
        event_type: name.into(),
        commit_time: Some(ts(chrono::Utc::now())),
        event: Some(new.event),
        ..Default::default()
    }
}

async fn apply(pool: &PgPool, events: &[ChangeEvent]) {
    let mut tx = pool.begin().await.unwrap();
    for ev in events {
        let tenant = uuid::Uuid::parse_str(&ev.tenant_id).unwrap();
        ProfileFollower
            .apply(&mut tx, tenant, std::slice::from_ref(ev))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn customer_row(pool: &PgPool, tenant: Uuid, id: Uuid) -> Option<(Option<Uuid>, bool)> {
    sqlx::query_as(
        "SELECT merged_into, erased FROM customers WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

async fn owners(pool: &PgPool, tenant: Uuid) -> Vec<(String, Uuid, Uuid)> {
    let rows: Vec<(Uuid, Uuid, Uuid)> = sqlx::query_as(
        "SELECT interaction_id, customer_id, original_customer_id FROM interactions
         WHERE tenant_id = $1 ORDER BY occur_time",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(i, c, o)| (i.to_string(), c, o))
        .collect()
}

fn email(v: &str) -> Identifier {
    Identifier {
        kind: IdentifierKind::Email as i32,
        system: String::new(),
        value: v.into(),
    }
}

#[tokio::test]
async fn typed_profile_events_merge_unmerge_and_erase() {
    let s = start().await;
    let tenant = Uuid::new_v4();
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let customer = |id: Uuid| Customer {
        customer_id: id.to_string(),
        display_name: "Someone".into(),
        ..Default::default()
    };

    // CustomerCreated: the customer is known.
    apply(
        &s.pool,
        &[profile_event(
            1,
            tenant,
            a,
            "CustomerCreated",
            P::CustomerCreated(CustomerCreated {
                customer_id: a.to_string(),
                customer: Some(customer(a)),
                origin: CustomerOrigin::Create as i32,
            }),
        )],
    )
    .await;
    assert_eq!(customer_row(&s.pool, tenant, a).await, Some((None, false)));

    let a1 = record(&s, tenant, purchase(a, at(2024, 1, 1, 0), 5)).await;
    let mut keyed = purchase(b, at(2024, 1, 2, 0), 6);
    keyed.idempotency_key = "b-key".into();
    let b1 = record(&s, tenant, keyed).await;
    let b2 = record(
        &s,
        tenant,
        contact(b, InteractionType::Call, at(2024, 1, 3, 0)),
    )
    .await;
    let base = feed_events(&s.pool).await.len();

    // CustomerMerged, every field set: B's interactions go to A.
    apply(
        &s.pool,
        &[profile_event(
            2,
            tenant,
            b,
            "CustomerMerged",
            P::CustomerMerged(CustomerMerged {
                survivor_customer_id: a.to_string(),
                merged_customer_id: b.to_string(),
                merge_time: Some(ts(at(2024, 2, 1, 0))),
                moved_identifiers: vec![email("b@example.com")],
                survivor: Some(customer(a)),
            }),
        )],
    )
    .await;
    assert_eq!(
        owners(&s.pool, tenant).await,
        [
            (a1.interaction_id.clone(), a, a),
            (b1.interaction_id.clone(), a, b),
            (b2.interaction_id.clone(), a, b),
        ]
    );
    assert_eq!(
        customer_row(&s.pool, tenant, b).await,
        Some((Some(a), false))
    );
    // Recording under B while merged counts for A.
    let wm = record(&s, tenant, purchase(b, at(2024, 1, 4, 0), 7)).await;
    assert_eq!(wm.customer_id, a.to_string());

    // CustomerUnmerged, every field set: what was first recorded under B
    // goes back.
    apply(
        &s.pool,
        &[profile_event(
            3,
            tenant,
            b,
            "CustomerUnmerged",
            P::CustomerUnmerged(CustomerUnmerged {
                survivor_customer_id: a.to_string(),
                restored_customer_id: b.to_string(),
                unmerge_time: Some(ts(at(2024, 2, 2, 0))),
                restored_identifiers: vec![email("b@example.com")],
                customer: Some(customer(b)),
                survivor: Some(customer(a)),
            }),
        )],
    )
    .await;
    assert_eq!(
        owners(&s.pool, tenant).await,
        [
            (a1.interaction_id.clone(), a, a),
            (b1.interaction_id.clone(), b, b),
            (b2.interaction_id.clone(), b, b),
            (wm.interaction_id.clone(), b, b),
        ]
    );
    assert_eq!(customer_row(&s.pool, tenant, b).await, Some((None, false)));

    // Skipped: a redacted event, one without a typed event (JSON only),
    // another service's envelope, bytes that do not decode.
    let redacted = profile_event(
        4,
        tenant,
        b,
        "CustomerErased",
        P::Redacted(RedactedEvent {
            subject_id: b.to_string(),
            reason: RedactionReason::Erased as i32,
        }),
    );
    #[allow(deprecated)]
    let legacy = ChangeEvent {
        sequence: 5,
        event: None,
        payload: Some(rapport_kit::convert::json_to_struct(
            serde_json::json!({"customer_id": b.to_string()}),
        )),
        ..redacted.clone()
    };
    let foreign = ChangeEvent {
        sequence: 6,
        event: Some(
            NewEvent::new(
                tenant,
                "customer",
                b.to_string(),
                "CustomerErased",
                &InteractionEvent {
                    event: Some(Event::Redacted(RedactedEvent::default())),
                },
            )
            .event,
        ),
        ..redacted.clone()
    };
    let mut garbage = redacted.clone();
    garbage.sequence = 7;
    if let Some(any) = garbage.event.as_mut() {
        any.value = vec![0xff, 0xff, 0xff];
    }
    apply(&s.pool, &[redacted, legacy, foreign, garbage]).await;
    assert_eq!(owners(&s.pool, tenant).await.len(), 4);
    assert_eq!(customer_row(&s.pool, tenant, b).await, Some((None, false)));

    // An event from before typed events about one of B's interactions.
    sqlx::query(
        "INSERT INTO outbox (tenant_id, sequence, aggregate_type, aggregate_id, event_type, payload)
         VALUES ($1, 1000000, 'interaction', $2, 'InteractionRecorded', $3)",
    )
    .bind(tenant)
    .bind(&b1.interaction_id)
    .bind(serde_json::json!({"customer_id": b.to_string(), "amount": {"units": "6"}}))
    .execute(&s.pool)
    .await
    .unwrap();

    // CustomerErased: B's interactions and key go, B is refused after.
    apply(
        &s.pool,
        &[profile_event(
            8,
            tenant,
            b,
            "CustomerErased",
            P::CustomerErased(CustomerErased {
                customer_id: b.to_string(),
                erase_time: Some(ts(at(2024, 2, 3, 0))),
            }),
        )],
    )
    .await;
    assert_eq!(
        owners(&s.pool, tenant).await,
        [(a1.interaction_id.clone(), a, a)]
    );
    assert_eq!(customer_row(&s.pool, tenant, b).await, Some((None, true)));
    assert_eq!(
        s.count("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'b-key'")
            .await,
        0
    );
    s.interactions()
        .get_interaction(req(
            tenant,
            GetInteractionRequest {
                interaction_id: b1.interaction_id.clone(),
            },
        ))
        .await
        .refused(Code::NotFound);
    let r = s
        .interactions()
        .record_interactions(req(
            tenant,
            futures::stream::iter(vec![RecordInteractionsRequest {
                interactions: vec![purchase(b, at(2024, 1, 5, 0), 1)],
            }]),
        ))
        .await
        .answer();
    assert_eq!(
        r.rejections[0].reason,
        RejectionReason::CustomerErased as i32
    );

    // The feed: what the follower said, every field.
    let events = feed_events(&s.pool).await;
    let caused: Vec<(String, String, Event)> = events[base..]
        .iter()
        .filter(|(ev, _)| ev.aggregate_type == "customer")
        .map(|(ev, e)| {
            (
                ev.event_type.clone(),
                ev.aggregate_id.clone(),
                e.clone().unwrap(),
            )
        })
        .collect();
    let [merge, unmerge, erased] = caused.as_slice() else {
        panic!("{caused:?}")
    };
    assert_eq!(
        (merge.0.as_str(), merge.1.clone()),
        ("InteractionsReassigned", a.to_string())
    );
    let Event::InteractionsReassigned(m) = &merge.2 else {
        panic!("{merge:?}")
    };
    assert_eq!(m.from_customer_id, b.to_string());
    assert_eq!(m.to_customer_id, a.to_string());
    assert_eq!(m.reason, ReassignReason::Merge as i32);
    assert_eq!(m.interaction_count, 2);
    let mut ids = m.interaction_ids.clone();
    ids.sort();
    let mut want = vec![b1.interaction_id.clone(), b2.interaction_id.clone()];
    want.sort();
    assert_eq!(ids, want);
    assert!(m.ids_complete);
    assert_eq!(m.profile_sequence, 2);
    assert_eq!(unmerge.1, b.to_string());
    let Event::InteractionsReassigned(u) = &unmerge.2 else {
        panic!("{unmerge:?}")
    };
    assert_eq!(u.from_customer_id, a.to_string());
    assert_eq!(u.to_customer_id, b.to_string());
    assert_eq!(u.reason, ReassignReason::Unmerge as i32);
    assert_eq!(u.interaction_count, 3);
    assert_eq!(u.interaction_ids.len(), 3);
    assert!(u.ids_complete);
    assert_eq!(u.profile_sequence, 3);
    assert_eq!(
        (erased.0.as_str(), erased.1.clone()),
        ("CustomerInteractionsErased", b.to_string())
    );
    let Event::CustomerInteractionsErased(e) = &erased.2 else {
        panic!("{erased:?}")
    };
    assert_eq!(e.customer_id, b.to_string());
    assert_eq!(e.interaction_count, 3);
    assert_eq!(e.profile_sequence, 8);

    // Erasure: every earlier event about B's interactions, typed or JSON,
    // is exactly the redacted envelope; A's is untouched.
    let gone = [
        b1.interaction_id.clone(),
        b2.interaction_id.clone(),
        wm.interaction_id.clone(),
    ];
    let mut reduced = 0;
    for (ev, typed) in &events {
        if ev.aggregate_type != "interaction" {
            continue;
        }
        if gone.contains(&ev.aggregate_id) {
            reduced += 1;
            let want = NewEvent::new(
                tenant,
                "interaction",
                ev.aggregate_id.clone(),
                "InteractionRecorded",
                &InteractionEvent {
                    event: Some(Event::Redacted(RedactedEvent {
                        subject_id: ev.aggregate_id.clone(),
                        reason: RedactionReason::Erased as i32,
                    })),
                },
            );
            assert_eq!(ev.event.as_ref(), Some(&want.event), "{ev:?}");
            #[allow(deprecated)]
            let legacy = ev.payload.clone();
            assert_eq!(legacy, None);
            assert_eq!(ev.event_type, "InteractionRecorded");
        } else {
            assert_eq!(ev.aggregate_id, a1.interaction_id);
            assert!(matches!(typed, Some(Event::InteractionRecorded(_))));
        }
    }
    // Three recordings and the JSON one.
    assert_eq!(reduced, 4);
    s.stop().await;
}

//! Following the feeds: the real profile and interaction services run
//! in-process; a change written to them reaches segment membership within
//! 2 seconds, and the consumers resume from their cursors after a restart.
//! The valuation follower is driven with constructed events in
//! valuation_feed.rs.

mod common;

use std::time::{Duration, Instant};

use chrono::Utc;
use common::*;
use prost_types::FieldMask;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, Money, RelationshipStage, customer_ref,
};
use rapport_proto::rapport::interaction::v1::campaign_service_client::CampaignServiceClient;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Campaign, Channel, CreateCampaignRequest, Interaction, InteractionType,
    RecordInteractionRequest, RecordInteractionsRequest,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    AttributeDefinition, AttributeType, AttributeValue, ConsentChannel, ConsentPurpose,
    ConsentStatus, CreateAttributeDefinitionRequest, Customer as ProfileCustomer,
    DeleteCustomerRequest, MergeCustomersRequest, ResolveIdentitiesRequest, ResolveIdentityRequest,
    SetConsentRequest, UpdateCustomerRequest, attribute_value, resolve_identities_result,
};
use rapport_proto::rapport::segmentation::v1::*;
use serde_json::json;
use uuid::Uuid;

fn purchase(customer: Option<CustomerRef>, units: i64) -> Interaction {
    Interaction {
        customer,
        r#type: InteractionType::Purchase as i32,
        occur_time: Some(timestamp(Utc::now() - chrono::Duration::minutes(5))),
        amount: Some(Money {
            currency_code: "EUR".into(),
            units,
            nanos: 0,
        }),
        ..Default::default()
    }
}

fn by_email(email: &str) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
            identifiers: by_email_identifiers(email),
        })),
    })
}

fn by_id(id: &str) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::CustomerId(id.into())),
    })
}

async fn record(
    c: &mut InteractionServiceClient<tonic::transport::Channel>,
    t: Uuid,
    i: Interaction,
) -> String {
    c.record_interaction(req(
        t,
        RecordInteractionRequest {
            interaction: Some(i),
        },
    ))
    .await
    .answer()
    .interaction
    .unwrap()
    .customer_id
}

/// Sets the customer's tags to `tag` alone in the profile service.
async fn set_tags(
    profile: &mut ProfileServiceClient<tonic::transport::Channel>,
    t: Uuid,
    customer: &str,
    tag: &str,
) {
    profile
        .update_customer(req(
            t,
            UpdateCustomerRequest {
                customer: Some(ProfileCustomer {
                    customer_id: customer.into(),
                    tags: vec![tag.into()],
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["tags".into()],
                }),
            },
        ))
        .await
        .unwrap();
}

async fn is_member(c: &mut Client, t: Uuid, segment: &str, customer: &str) -> bool {
    members(c, t, segment).await.iter().any(|m| m == customer)
}

/// Waits for `customer` to be (or not be) a member; returns how long it took.
async fn until_member(
    c: &mut Client,
    t: Uuid,
    segment: &str,
    customer: &str,
    want: bool,
) -> Duration {
    let start = Instant::now();
    while is_member(c, t, segment, customer).await != want {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "membership of {customer} never became {want}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn profile_and_interaction_changes_reach_membership() {
    let mut s = start_with_feeds().await;
    let t = Uuid::new_v4();
    let mut seg = s.client();
    let icx = rapport_testkit::channel(s.interaction.as_ref().unwrap()).await;
    let mut interactions = InteractionServiceClient::new(icx.clone());
    let pcx = rapport_testkit::channel(s.profile.as_ref().unwrap()).await;
    let mut profile = ProfileServiceClient::new(pcx);

    let repeat = create_segment(
        &mut seg,
        t,
        dynamic("Repeat buyers", "purchases >= 2 and monetary > 15"),
    )
    .await;
    let vips = create_segment(&mut seg, t, dynamic("VIP", "tags contains \"vip\"")).await;

    // The first purchase creates the customer in the profile service.
    let customer = record(
        &mut interactions,
        t,
        purchase(by_email("ana@example.com"), 10),
    )
    .await;
    record(&mut interactions, t, purchase(by_id(&customer), 10)).await;
    let took = until_member(&mut seg, t, &repeat.segment_id, &customer, true).await;
    assert!(
        took < Duration::from_secs(2),
        "interaction feed took {took:?}"
    );

    // A campaign response counts towards awareness: a customer who only
    // opened a campaign message is classified in the awareness stage.
    let campaign = CampaignServiceClient::new(icx.clone())
        .create_campaign(req(
            t,
            CreateCampaignRequest {
                campaign: Some(Campaign {
                    name: "Spring".into(),
                    channel: Channel::Email as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .answer()
        .campaign
        .unwrap();
    let reader = record(
        &mut interactions,
        t,
        Interaction {
            customer: by_email("bea@example.com"),
            r#type: InteractionType::CampaignOpened as i32,
            occur_time: Some(timestamp(Utc::now() - chrono::Duration::minutes(5))),
            campaign_id: campaign.campaign_id.clone(),
            ..Default::default()
        },
    )
    .await;
    let cc = seg.clone();
    eventually("the campaign opener in the awareness stage", || {
        let mut c = cc.clone();
        let reader = reader.clone();
        async move {
            c.classify_customer(req(
                t,
                ClassifyCustomerRequest {
                    customer_id: reader,
                },
            ))
            .await
            .map(|r| {
                r.into_inner().classification.unwrap().stage == RelationshipStage::Awareness as i32
            })
            .unwrap_or(false)
        }
    })
    .await;

    // A profile change: the tag arrives on the profile feed.
    set_tags(&mut profile, t, &customer, "VIP").await;
    let took = until_member(&mut seg, t, &vips.segment_id, &customer, true).await;
    assert!(took < Duration::from_secs(2), "profile feed took {took:?}");

    // The features the explanation sees.
    let ex = seg
        .explain_membership(req(
            t,
            ExplainMembershipRequest {
                customer_id: customer.clone(),
                segment_id: repeat.segment_id.clone(),
            },
        ))
        .await
        .answer();
    assert!(ex.member && ex.rule_held);

    // Restart the segmentation service; a purchase recorded meanwhile is
    // applied once when it is back.
    let cursor_before: i64 =
        sqlx::query_scalar("SELECT coalesce(max(after_sequence), 0)::bigint FROM feed_tenant_cursors WHERE source = 'interaction'")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert!(cursor_before > 0);
    if let Some(r) = s.segmentation.take() {
        r.stop().await;
    }
    record(&mut interactions, t, purchase(by_id(&customer), 10)).await;
    s.restart_segmentation().await;
    let mut seg = s.client();
    let pool = s.pool.clone();
    let cid: Uuid = customer.parse().unwrap();
    eventually("the third purchase after the restart", || {
        let pool = pool.clone();
        async move {
            let n: i64 =
                sqlx::query_scalar("SELECT purchases FROM features WHERE customer_id = $1")
                    .bind(cid)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n == 3
        }
    })
    .await;
    let cursor_after: i64 =
        sqlx::query_scalar("SELECT coalesce(max(after_sequence), 0)::bigint FROM feed_tenant_cursors WHERE source = 'interaction'")
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert!(cursor_after > cursor_before);
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events WHERE customer_id = $1")
        .bind(cid)
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(events, 3);
    let cl = seg
        .classify_customer(req(
            t,
            ClassifyCustomerRequest {
                customer_id: customer.clone(),
            },
        ))
        .await
        .answer()
        .classification
        .unwrap();
    assert!(cl.rfm.is_some());

    // Deleting the customer in the profile service: it exits every segment.
    profile
        .delete_customer(req(
            t,
            DeleteCustomerRequest {
                customer_id: customer.clone(),
                etag: String::new(),
            },
        ))
        .await
        .unwrap();
    until_member(&mut seg, t, &vips.segment_id, &customer, false).await;
    until_member(&mut seg, t, &repeat.segment_id, &customer, false).await;
    seg.get_customer_segments(req(
        t,
        GetCustomerSegmentsRequest {
            customer_id: customer.clone(),
            ..Default::default()
        },
    ))
    .await
    .refused(tonic::Code::NotFound);
    let reasons: Vec<i16> = sqlx::query_scalar(
        "SELECT reason FROM membership_log WHERE customer_id = $1 AND NOT entered",
    )
    .bind(cid)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        vec![MembershipChangeReason::CustomerRemoved as i16; 2]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_move_memberships_to_the_survivor() {
    let s = start_with_feeds().await;
    let t = Uuid::new_v4();
    let mut seg = s.client();
    let icx = rapport_testkit::channel(s.interaction.as_ref().unwrap()).await;
    let mut interactions = InteractionServiceClient::new(icx.clone());
    let pcx = rapport_testkit::channel(s.profile.as_ref().unwrap()).await;
    let mut profile = ProfileServiceClient::new(pcx);

    let buyers = create_segment(&mut seg, t, dynamic("Buyers", "purchases >= 1")).await;
    let list = create_segment(&mut seg, t, of_kind("Hand picked", SegmentKind::Static, "")).await;
    let a = record(
        &mut interactions,
        t,
        purchase(by_email("a@example.com"), 10),
    )
    .await;
    let b = record(
        &mut interactions,
        t,
        purchase(by_email("b@example.com"), 20),
    )
    .await;
    until_member(&mut seg, t, &buyers.segment_id, &a, true).await;
    until_member(&mut seg, t, &buyers.segment_id, &b, true).await;
    let added = seg
        .add_members(req(
            t,
            AddMembersRequest {
                segment_id: list.segment_id.clone(),
                customer_ids: vec![b.clone()],
            },
        ))
        .await
        .answer();
    assert_eq!(added.added_count, 1);

    profile
        .merge_customers(req(
            t,
            MergeCustomersRequest {
                survivor_customer_id: a.clone(),
                merged_customer_id: b.clone(),
                survivor_etag: String::new(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    // The merged customer leaves; the survivor takes its static membership.
    until_member(&mut seg, t, &list.segment_id, &a, true).await;
    until_member(&mut seg, t, &buyers.segment_id, &b, false).await;
    assert_eq!(
        members(&mut seg, t, &list.segment_id).await,
        vec![a.clone()]
    );
    seg.get_customer_segments(req(
        t,
        GetCustomerSegmentsRequest {
            customer_id: b.clone(),
            ..Default::default()
        },
    ))
    .await
    .refused(tonic::Code::NotFound);
    let reasons: Vec<(String, bool, i16)> = sqlx::query_as(
        "SELECT segment_name, entered, reason FROM membership_log WHERE customer_id = ANY($1) AND reason = $2 ORDER BY sequence",
    )
    .bind(vec![a.parse::<Uuid>().unwrap(), b.parse::<Uuid>().unwrap()])
    .bind(MembershipChangeReason::CustomerMerged as i16)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert!(reasons.contains(&(
        "Buyers".into(),
        false,
        MembershipChangeReason::CustomerMerged as i16
    )));
    assert!(reasons.contains(&(
        "Hand picked".into(),
        false,
        MembershipChangeReason::CustomerMerged as i16
    )));
    assert!(reasons.contains(&(
        "Hand picked".into(),
        true,
        MembershipChangeReason::CustomerMerged as i16
    )));
    // The survivor has both purchases.
    let pool = s.pool.clone();
    let aid: Uuid = a.parse().unwrap();
    eventually("the survivor's purchases", || {
        let pool = pool.clone();
        async move {
            let n: i64 =
                sqlx::query_scalar("SELECT purchases FROM features WHERE customer_id = $1")
                    .bind(aid)
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            n == 2
        }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consents_and_attributes_come_from_the_profile_service() {
    let s = start_with_feeds().await;
    let t = Uuid::new_v4();
    let mut seg = s.client();
    let icx = rapport_testkit::channel(s.interaction.as_ref().unwrap()).await;
    let mut interactions = InteractionServiceClient::new(icx.clone());
    let pcx = rapport_testkit::channel(s.profile.as_ref().unwrap()).await;
    let mut profile = ProfileServiceClient::new(pcx);

    // An attribute definition of the profile service is a catalogue field.
    profile
        .create_attribute_definition(req(
            t,
            CreateAttributeDefinitionRequest {
                definition: Some(AttributeDefinition {
                    name: "score".into(),
                    r#type: AttributeType::Number as i32,
                    description: "lead score".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap();
    let fields = seg.list_fields(req(t, ListFieldsRequest {})).await.answer();
    let score = fields
        .fields
        .iter()
        .find(|f| f.name == "attr.score")
        .expect("attr.score listed");
    assert_eq!(score.r#type, FieldType::Decimal as i32);

    let mailable = create_segment(
        &mut seg,
        t,
        dynamic(
            "Mailable",
            "consent(email, marketing) and attr.score >= 40.5",
        ),
    )
    .await;
    let customer = record(
        &mut interactions,
        t,
        purchase(by_email("c@example.com"), 10),
    )
    .await;
    let mut attrs = std::collections::HashMap::new();
    attrs.insert(
        "score".to_string(),
        AttributeValue {
            value: Some(attribute_value::Value::NumberValue(42.0)),
        },
    );
    profile
        .update_customer(req(
            t,
            UpdateCustomerRequest {
                customer: Some(ProfileCustomer {
                    customer_id: customer.clone(),
                    attributes: attrs,
                    ..Default::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["attributes".into()],
                }),
            },
        ))
        .await
        .unwrap();
    let pool = s.pool.clone();
    let cid: Uuid = customer.parse().unwrap();
    eventually("the attribute", || {
        let pool = pool.clone();
        async move {
            let v: Option<serde_json::Value> = sqlx::query_scalar(
                "SELECT attributes -> 'score' FROM features WHERE customer_id = $1",
            )
            .bind(cid)
            .fetch_optional(&pool)
            .await
            .unwrap()
            .flatten();
            v == Some(json!("42"))
        }
    })
    .await;
    // No consent yet: not a member.
    assert!(!is_member(&mut seg, t, &mailable.segment_id, &customer).await);
    profile
        .set_consent(req(
            t,
            SetConsentRequest {
                customer_id: customer.clone(),
                channel: ConsentChannel::Email as i32,
                purpose: ConsentPurpose::Marketing as i32,
                status: ConsentStatus::Granted as i32,
                source: "web form".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let took = until_member(&mut seg, t, &mailable.segment_id, &customer, true).await;
    assert!(took < Duration::from_secs(2), "consent took {took:?}");
    // Withdrawn on every channel: the later `any` record decides.
    profile
        .set_consent(req(
            t,
            SetConsentRequest {
                customer_id: customer.clone(),
                channel: ConsentChannel::Any as i32,
                purpose: ConsentPurpose::Marketing as i32,
                status: ConsentStatus::Withdrawn as i32,
                source: "call".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    until_member(&mut seg, t, &mailable.segment_id, &customer, false).await;
    s.stop().await;
}

/// Consumers and reads together under load. Four clients stream purchases
/// of 400 customers (most new, some created by two streams at once), one
/// resolves and tags the same customers in the profile service, while
/// others read RFM reports, classify, preview and refresh segments. Every
/// read answers within its deadline, every change arrives, and PostgreSQL
/// detects no deadlock in the database: `pg_stat_database.deadlocks` counts
/// each "deadlock detected" the server logs, read after every connection of
/// the services has closed so that none is left unreported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_and_reads_under_load_never_deadlock() {
    const CUSTOMERS: usize = 400;
    const STREAMS: usize = 4;
    const CALLS: usize = 8;
    const PER_CALL: usize = 100;
    let mut s = start_with_feeds().await;
    let t = Uuid::new_v4();
    let seg = s.client();
    let icx = rapport_testkit::channel(s.interaction.as_ref().unwrap()).await;
    let pcx = rapport_testkit::channel(s.profile.as_ref().unwrap()).await;
    let buyers = seg
        .clone()
        .create_segment(req(t, dynamic("Buyers", "purchases >= 1")))
        .await
        .answer()
        .segment
        .unwrap();
    let tagged = seg
        .clone()
        .create_segment(req(
            t,
            dynamic("Tagged buyers", "tags contains \"load\" and purchases >= 1"),
        ))
        .await
        .answer()
        .segment
        .unwrap();
    let email = |n: usize| format!("c{n}@load.example.com");

    let mut writers = tokio::task::JoinSet::new();
    for w in 0..STREAMS {
        let mut c = InteractionServiceClient::new(icx.clone());
        writers.spawn(async move {
            for call in 0..CALLS {
                // Stream w covers customers from its own offset, so two
                // streams meet on the same new customers.
                let batch: Vec<Interaction> = (0..PER_CALL)
                    .map(|i| {
                        let n = (w * CUSTOMERS / STREAMS + call * PER_CALL + i) % CUSTOMERS;
                        purchase(by_email(&email(n)), 10 + i as i64)
                    })
                    .collect();
                let r = c
                    .record_interactions(req(
                        t,
                        futures::stream::iter(vec![RecordInteractionsRequest {
                            interactions: batch,
                        }]),
                    ))
                    .await
                    .answer();
                assert_eq!(r.accepted_count, PER_CALL as i64, "{:?}", r.rejections);
            }
        });
    }
    let mut profile = ProfileServiceClient::new(pcx);
    writers.spawn(async move {
        for chunk in (0..CUSTOMERS).collect::<Vec<_>>().chunks(50) {
            let resolved = profile
                .resolve_identities(req(
                    t,
                    ResolveIdentitiesRequest {
                        requests: chunk
                            .iter()
                            .map(|&n| ResolveIdentityRequest {
                                identifiers: by_email_identifiers(&email(n)),
                                ..Default::default()
                            })
                            .collect(),
                    },
                ))
                .await
                .answer();
            for r in resolved.results {
                let Some(resolve_identities_result::Result::Resolved(r)) = r.result else {
                    panic!("no conflict is possible here: {r:?}");
                };
                let id = r.customer.unwrap().customer_id;
                set_tags(&mut profile, t, &id, "load").await;
            }
        }
    });

    // Readers run until the writers are done.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut readers = tokio::task::JoinSet::new();
    for r in 0..2 {
        let mut c = seg.clone();
        let done = done.clone();
        let (buyers, tagged) = (buyers.segment_id.clone(), tagged.segment_id.clone());
        readers.spawn(async move {
            let mut reads = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let segment = if r == 0 { &buyers } else { &tagged };
                c.get_rfm_report(within(req(t, GetRfmReportRequest::default())))
                    .await
                    .expect("GetRfmReport during the load");
                c.preview_segment(within(req(
                    t,
                    preview_text("monetary > 100 or purchases >= 2", 10),
                )))
                .await
                .expect("PreviewSegment during the load");
                c.refresh_segment(within(req(
                    t,
                    RefreshSegmentRequest {
                        segment_id: segment.clone(),
                    },
                )))
                .await
                .expect("RefreshSegment during the load");
                let some = c
                    .list_members(within(req(
                        t,
                        ListMembersRequest {
                            segment_id: segment.clone(),
                            page_size: 5,
                            ..Default::default()
                        },
                    )))
                    .await
                    .expect_answer("ListMembers during the load");
                for m in some.members {
                    c.classify_customer(within(req(
                        t,
                        ClassifyCustomerRequest {
                            customer_id: m.customer_id,
                        },
                    )))
                    .await
                    .expect("ClassifyCustomer during the load");
                }
                reads += 1;
            }
            reads
        });
    }
    while let Some(w) = writers.join_next().await {
        w.unwrap();
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    while let Some(r) = readers.join_next().await {
        assert!(r.unwrap() > 0, "a reader completed no round");
    }

    // Everything arrives: every purchase, every tag.
    let pool = s.pool.clone();
    eventually("every purchase and tag applied", || {
        let pool = pool.clone();
        async move {
            let (customers, purchases, tagged): (i64, i64, i64) = sqlx::query_as(
                "SELECT count(*), coalesce(sum(purchases), 0)::bigint,
                        count(*) FILTER (WHERE 'load' = ANY(tags))
                   FROM features WHERE tenant_id = $1",
            )
            .bind(t)
            .fetch_one(&pool)
            .await
            .unwrap();
            customers == CUSTOMERS as i64
                && purchases == (STREAMS * CALLS * PER_CALL) as i64
                && tagged == CUSTOMERS as i64
        }
    })
    .await;
    let mut c = seg.clone();
    until_member_count(&mut c, t, &tagged.segment_id, CUSTOMERS).await;

    // Close every connection to the database, then read the server's count.
    for r in [
        s.segmentation.take(),
        s.interaction.take(),
        s.profile.take(),
    ]
    .into_iter()
    .flatten()
    {
        r.stop().await;
    }
    s.pool.close().await;
    let admin = sqlx::PgPool::connect(&s.db.url).await.unwrap();
    eventually("the services' connections closed", || {
        let admin = admin.clone();
        async move {
            let others: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()",
            )
            .fetch_one(&admin)
            .await
            .unwrap();
            others == 0
        }
    })
    .await;
    let deadlocks: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&admin)
    .await
    .unwrap();
    assert_eq!(deadlocks, 0, "PostgreSQL detected deadlocks under load");
    admin.close().await;
}

/// `r` with a 10 s deadline.
fn within<T>(mut r: tonic::Request<T>) -> tonic::Request<T> {
    r.set_timeout(Duration::from_secs(10));
    r
}

fn by_email_identifiers(email: &str) -> Vec<Identifier> {
    vec![Identifier {
        kind: IdentifierKind::Email as i32,
        system: String::new(),
        value: email.into(),
    }]
}

async fn until_member_count(c: &mut Client, t: Uuid, segment: &str, n: usize) {
    let start = Instant::now();
    while members(c, t, segment).await.len() != n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the segment never reached {n} members"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! Deciding over real feeds: the profile, interaction and segmentation
//! services run in-process and the engagement service follows them; what
//! they record (consent, contacts, complaints, segment memberships, ladder
//! rungs) changes the next best actions within seconds. Valuation's values
//! and the outcome loop are driven with constructed events and RecordOutcome.

mod common;

use chrono::{Duration, Utc};
use common::*;
use rapport_engagement::domain::decide::in_control;
use rapport_engagement::follow::ValuationFollower;
use rapport_kit::convert::timestamp;
use rapport_kit::feed::NewEvent;
use rapport_proto::rapport::common::v1::LadderRung;
use rapport_proto::rapport::engagement::v1::{
    self as pb, Arm, ContactChannel, FilterReason, LadderGoal, ListDecisionsRequest, Outcome,
    RecordOutcomeRequest, TreatmentKind,
};
use rapport_proto::rapport::interaction::v1::{
    Channel as Ich, Interaction, InteractionType, RecordInteractionRequest, ServiceRequestStatus,
    UpdateServiceRequestRequest,
};
use rapport_proto::rapport::profile::v1::{
    ConsentChannel, ConsentPurpose, ConsentStatus, CustomerDeleted, CustomerErased,
    SetConsentRequest, profile_event,
};
use rapport_proto::rapport::segmentation::v1::{
    AddMembersRequest, CreateSegmentRequest, Segment, SegmentKind,
};
use rapport_proto::rapport::valuation::v1::{
    CustomerValueChanged, ValuationEvent, ValueTier, valuation_event,
};
use uuid::Uuid;

#[tokio::test]
async fn what_the_other_services_record_changes_the_next_best_actions() {
    let s = start_with_feeds().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    create(&mut c, t, offer("Spring offer")).await;
    create(
        &mut c,
        t,
        service(
            "Sorry call",
            TreatmentKind::ServiceRecovery,
            ContactChannel::Phone,
            50,
            2,
        ),
    )
    .await;
    create(
        &mut c,
        t,
        service(
            "Check-in",
            TreatmentKind::CheckInCall,
            ContactChannel::Phone,
            30,
            1,
        ),
    )
    .await;
    // A playbook of one play (the default one orders kinds by ladder rung,
    // which moves as segmentation classifies the customer).
    c.update_policy(req(
        t,
        pb::UpdatePolicyRequest {
            policy: Some(pb::EngagementPolicy {
                playbook: vec![pb::Play {
                    name: "recover first".into(),
                    complaint_within_days: 30,
                    kinds: vec![TreatmentKind::ServiceRecovery as i32],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            update_mask: mask(&["playbook"]),
        },
    ))
    .await
    .answer();
    let mut partners = service(
        "Partner day",
        TreatmentKind::LoyaltyReward,
        ContactChannel::Push,
        40,
        1,
    );
    partners.ladder_goal = LadderGoal::Enhance as i32;
    create(&mut c, t, partners).await;

    let alice = s
        .record(
            t,
            "alice@example.com",
            interaction(InteractionType::Purchase, Ich::Store, false),
        )
        .await;
    // The customer is known once profile's feed says so, and classified
    // once segmentation's does.
    let r = next_best_until(&c, t, &alice, "the customer known and classified", |r| {
        r.customer.as_ref().is_some_and(|x| x.ladder_rung != 0)
    })
    .await;
    let ctx = r.customer.clone().unwrap();
    assert_ne!(ctx.ladder_rung, LadderRung::Partner as i32);
    // No marketing consent yet; service messages are allowed by default.
    assert_eq!(left_out(&r, "Spring offer"), Some(FilterReason::NoConsent));
    assert_eq!(left_out(&r, "Partner day"), Some(FilterReason::LadderRung));
    assert_eq!(offered(&r), ["Sorry call", "Check-in"]);
    // Hand-computed: Beta(1, 9) prior, mean 0.1; 0.1 × 50 − 2 = 3.00 and
    // 0.1 × 30 − 1 = 2.00.
    let sorry = &r.actions[0];
    assert_eq!(sorry.expected_net_value, Some(eur(3, 0)));
    assert!((sorry.score - 3.0).abs() < 1e-9);
    assert_eq!(r.actions[1].expected_net_value, Some(eur(2, 0)));
    let p = sorry.propensity.unwrap();
    assert!((p.mean - 0.1).abs() < 1e-12);
    // Beta(1, b) has CDF 1 − (1 − x)^b, so its q quantile is 1 − (1 − q)^(1/b).
    assert!(
        (p.lower - (1.0 - 0.95f64.powf(1.0 / 9.0))).abs() < 1e-9,
        "{}",
        p.lower
    );
    assert!(
        (p.upper - (1.0 - 0.05f64.powf(1.0 / 9.0))).abs() < 1e-9,
        "{}",
        p.upper
    );
    assert!(
        sorry
            .eligible_because
            .iter()
            .any(|w| w.contains("service messages are allowed"))
    );
    assert!(
        sorry.rank_reason.contains("the best of 2 eligible"),
        "{}",
        sorry.rank_reason
    );
    // Each action offered is a stored decision.
    let listed = c
        .list_decisions(req(
            t,
            ListDecisionsRequest {
                customer_id: alice.clone(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .decisions;
    // (Two per call: the waiting above asked more than once.)
    assert!(
        !listed.is_empty() && listed.len() % 2 == 0,
        "{}",
        listed.len()
    );
    assert!(
        listed
            .iter()
            .any(|d| d.decision_id == sorry.decision_id && d.arm == Arm::Treatment as i32)
    );

    // Marketing consent on e-mail, given in the profile service.
    s.profile()
        .set_consent(req(
            t,
            SetConsentRequest {
                customer_id: alice.clone(),
                channel: ConsentChannel::Email as i32,
                purpose: ConsentPurpose::Marketing as i32,
                status: ConsentStatus::Granted as i32,
                source: "web-form".into(),
                ..Default::default()
            },
        ))
        .await
        .answer();
    let r = next_best_until(&c, t, &alice, "the offer", |r| {
        offered(r).contains(&"Spring offer".to_string())
    })
    .await;
    let spring = r
        .actions
        .iter()
        .find(|a| a.treatment.as_ref().unwrap().name == "Spring offer")
        .unwrap();
    assert_eq!(spring.expected_net_value, Some(eur(1, 500_000_000)));
    assert_eq!(spring.rank, 3);
    assert_eq!(r.play, "", "no play matches yet");
    assert!(
        spring
            .eligible_because
            .iter()
            .any(|w| w == "marketing consent granted for the channel")
    );
    assert!(
        spring
            .eligible_because
            .iter()
            .any(|w| w.contains("0 of 3 EMAIL contacts"))
    );

    // A static segment in segmentation, with alice in it.
    let mut seg = s.segmentation();
    let segment = seg
        .create_segment(req(
            t,
            CreateSegmentRequest {
                segment: Some(Segment {
                    name: "VIP".into(),
                    kind: SegmentKind::Static as i32,
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .answer()
        .segment
        .unwrap()
        .segment_id;
    let mut vip = service(
        "VIP gift",
        TreatmentKind::LoyaltyReward,
        ContactChannel::Push,
        100,
        1,
    );
    vip.target_segment_ids = vec![segment.clone()];
    create(&mut c, t, vip).await;
    let r = next_best(&mut c, t, &alice).await.unwrap();
    assert_eq!(left_out(&r, "VIP gift"), Some(FilterReason::NotTargeted));
    seg.add_members(req(
        t,
        AddMembersRequest {
            segment_id: segment.clone(),
            customer_ids: vec![alice.clone()],
        },
    ))
    .await
    .answer();
    let r = next_best_until(&c, t, &alice, "the membership", |r| {
        r.customer
            .as_ref()
            .is_some_and(|x| !x.segment_ids.is_empty())
    })
    .await;
    assert_eq!(
        r.customer.clone().unwrap().segment_ids,
        vec![segment.clone()]
    );
    let gift = r
        .actions
        .iter()
        .find(|a| a.treatment.as_ref().unwrap().name == "VIP gift")
        .unwrap();
    // The best score: 0.1 × 100 − 1 = 9.
    assert_eq!(offered(&r)[0], "VIP gift");
    assert!(
        gift.eligible_because.iter().any(|w| w.contains(&segment)),
        "{:?}",
        gift.eligible_because
    );

    // An audience given as a rule: segmentation lists who it matches now.
    let stream = |rule: &str| {
        let mut c = c.clone();
        let rule = rule.to_string();
        async move {
            let mut s = c
                .stream_next_best_actions(req(
                    t,
                    pb::StreamNextBestActionsRequest {
                        rule_text: rule,
                        preview: true,
                        ..Default::default()
                    },
                ))
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(m) = futures::StreamExt::next(&mut s).await {
                out.push(m?);
            }
            Ok::<_, tonic::Status>(out)
        }
    };
    let parts = stream("purchases >= 1").await.unwrap();
    assert_eq!(parts[0].customers.len(), 1);
    assert_eq!(parts[0].customers[0].customer_id, alice);
    assert_eq!(
        parts[0].customers[0].actions[0]
            .treatment
            .as_ref()
            .unwrap()
            .name,
        "VIP gift"
    );
    let summary = parts.last().unwrap().summary.clone().unwrap();
    assert_eq!((summary.members, summary.customers), (1, 1));
    assert!(
        stream("purchases >= 100").await.unwrap()[0]
            .summary
            .is_some(),
        "nobody matches"
    );
    let e = stream("purchases >>= 1")
        .await
        .refused(tonic::Code::InvalidArgument);
    assert!(e.message().contains("rule_text"), "{e:?}");

    // Three e-mails sent by the company in the last week reach the cap.
    for _ in 0..3 {
        s.record(
            t,
            "alice@example.com",
            interaction(InteractionType::Email, Ich::Email, true),
        )
        .await;
    }
    let r = next_best_until(&c, t, &alice, "the cap", |r| {
        left_out(r, "Spring offer") == Some(FilterReason::ContactCap)
    })
    .await;
    let f = r
        .filtered
        .iter()
        .find(|f| f.name == "Spring offer")
        .unwrap();
    assert_eq!(
        f.detail,
        "3 EMAIL contacts in the last 7 days; the cap is 3"
    );

    // A complaint: only service recovery for 14 days.
    let complaint = s
        .interaction()
        .record_interaction(req(
            t,
            RecordInteractionRequest {
                interaction: Some(Interaction {
                    customer: Some(by_email("alice@example.com")),
                    ..interaction(InteractionType::Complaint, Ich::Phone, false)
                }),
            },
        ))
        .await
        .answer()
        .interaction
        .unwrap();
    let r = next_best_until(&c, t, &alice, "the quiet period", |r| {
        left_out(r, "Check-in") == Some(FilterReason::QuietPeriod)
    })
    .await;
    assert_eq!(offered(&r), ["Sorry call"]);
    assert_eq!(r.play, "recover first");
    assert_eq!(left_out(&r, "VIP gift"), Some(FilterReason::QuietPeriod));
    assert!(r.customer.clone().unwrap().last_complaint_time.is_some());
    assert_eq!(r.customer.clone().unwrap().open_complaints, 1);
    // Taken up, then resolved in the interaction service: no longer open here.
    for status in [
        ServiceRequestStatus::InProgress,
        ServiceRequestStatus::Resolved,
    ] {
        s.interaction()
            .update_service_request(req(
                t,
                UpdateServiceRequestRequest {
                    interaction_id: complaint.interaction_id.clone(),
                    status: status as i32,
                    ..Default::default()
                },
            ))
            .await
            .answer();
    }
    next_best_until(&c, t, &alice, "the complaint resolved", |r| {
        r.customer.as_ref().is_some_and(|x| x.open_complaints == 0)
    })
    .await;

    // The customer buys, and the purchase names the decision: the
    // interaction feed records the offer as accepted.
    let sorry = r.actions[0].decision_id.clone();
    s.record(
        t,
        "alice@example.com",
        Interaction {
            decision_id: sorry.clone(),
            occur_time: Some(timestamp(Utc::now())),
            ..interaction(InteractionType::Purchase, Ich::Web, false)
        },
    )
    .await;
    let accepted = || {
        let mut c = c.clone();
        async move {
            c.list_decisions(req(
                t,
                ListDecisionsRequest {
                    outcome: Outcome::Accepted as i32,
                    ..Default::default()
                },
            ))
            .await
            .answer()
            .decisions
        }
    };
    eventually("the offer accepted on the interaction feed", || async {
        accepted().await.len() == 1
    })
    .await;
    let d = accepted().await;
    assert_eq!(d[0].decision_id, sorry);
    assert!(d[0].outcome_time.is_some());
    s.stop().await;
}

async fn outcome(
    c: &mut Client,
    t: Uuid,
    decision: &str,
    o: Outcome,
) -> Result<pb::Decision, tonic::Status> {
    c.record_outcome(req(
        t,
        RecordOutcomeRequest {
            decision_id: decision.into(),
            outcome: o as i32,
            outcome_time: None,
        },
    ))
    .await
    .map(|r| r.into_inner().decision.unwrap())
}

#[tokio::test]
async fn outcomes_teach_the_propensities_and_values_come_from_valuation() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let alice = Uuid::new_v4();
    created(&s, t, &[alice]).await;
    // Valuation's typed event, every field read back on this side.
    let mut tx = s.pool.begin().await.unwrap();
    let v = NewEvent::new(
        t,
        "customer",
        alice.to_string(),
        "CustomerValueChanged",
        &ValuationEvent {
            event: Some(valuation_event::Event::CustomerValueChanged(
                CustomerValueChanged {
                    customer_id: alice.to_string(),
                    clv: Some(eur(300, 250_000_000)),
                    p_alive: 0.8125,
                    expected_purchases: 2.5,
                    value_tier: ValueTier::Top as i32,
                    score_time: Some(timestamp(Utc::now())),
                    ..Default::default()
                },
            )),
        },
    );
    ValuationFollower
        .apply_batch(&mut tx, t, &[change(1, t, v)])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut upsell = service("Upsell", TreatmentKind::Upsell, ContactChannel::Email, 0, 1);
    upsell.value = Some(pb::treatment::Value::ClvShareBps(1000));
    let upsell = create(&mut c, t, upsell).await;
    let r = next_best(&mut c, t, &alice.to_string()).await.answer_ok();
    let ctx = r.customer.clone().unwrap();
    assert_eq!(ctx.clv, Some(eur(300, 250_000_000)));
    assert_eq!(ctx.p_alive, Some(0.8125));
    // 10 % of EUR 300.25 = 30.025; 0.1 × 30.025 − 1 = 2.0025.
    let a = &r.actions[0];
    assert_eq!(a.value, Some(eur(30, 25_000_000)));
    assert_eq!(a.expected_net_value, Some(eur(2, 2_500_000)));
    let first = a.decision_id.clone();

    let d = outcome(&mut c, t, &first, Outcome::Accepted).await.unwrap();
    assert_eq!(d.outcome, Outcome::Accepted as i32);
    assert!(d.outcome_time.is_some());
    assert_eq!(
        outcome(&mut c, t, &first, Outcome::Accepted).await.unwrap(),
        d,
        "a retry changes nothing"
    );
    outcome(&mut c, t, &first, Outcome::Declined)
        .await
        .refused(tonic::Code::FailedPrecondition);
    let r = next_best(&mut c, t, &alice.to_string()).await.answer_ok();
    let p = r.actions[0].propensity.unwrap();
    assert_eq!((p.accepted, p.refused), (1, 0));
    assert!((p.mean - 2.0 / 11.0).abs() < 1e-12);
    outcome(&mut c, t, &r.actions[0].decision_id, Outcome::Declined)
        .await
        .unwrap();
    let r = next_best(&mut c, t, &alice.to_string()).await.answer_ok();
    let p = r.actions[0].propensity.unwrap();
    assert_eq!((p.accepted, p.refused), (1, 1));
    let third = r.actions[0].decision_id.clone();

    // After the outcome window (7 days by default) the pending ones are ignored.
    let n = rapport_engagement::decisions::expire(&s.pool, Utc::now() + Duration::days(8))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let ignored = c
        .list_decisions(req(
            t,
            ListDecisionsRequest {
                outcome: Outcome::Ignored as i32,
                ..Default::default()
            },
        ))
        .await
        .answer()
        .decisions;
    assert_eq!(
        ignored
            .iter()
            .map(|d| d.decision_id.clone())
            .collect::<Vec<_>>(),
        vec![third.clone()]
    );
    // A preview stores nothing.
    let before = c
        .list_decisions(req(t, ListDecisionsRequest::default()))
        .await
        .answer()
        .decisions
        .len();
    let r = c
        .get_next_best_actions(req(
            t,
            pb::GetNextBestActionsRequest {
                customer_id: alice.to_string(),
                preview: true,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert!(r.actions[0].decision_id.is_empty());
    let p = r.actions[0].propensity.unwrap();
    assert_eq!((p.accepted, p.refused), (1, 2));
    assert!((p.mean - 2.0 / 13.0).abs() < 1e-12);
    let after = c
        .list_decisions(req(t, ListDecisionsRequest::default()))
        .await
        .answer()
        .decisions
        .len();
    assert_eq!(before, after);
    // A late acceptance replaces the ignored one.
    outcome(&mut c, t, &third, Outcome::Accepted).await.unwrap();
    let r = next_best(&mut c, t, &alice.to_string()).await.answer_ok();
    let p = r.actions[0].propensity.unwrap();
    assert_eq!((p.accepted, p.refused), (2, 1));
    // Decisions name the treatment's version they were made with.
    assert!(
        ignored
            .iter()
            .all(|d| d.treatment_id == upsell.treatment_id && d.treatment_version == 1)
    );

    // A deleted customer is not decided for; an erased one's decisions go.
    profile_events(
        &s,
        t,
        vec![(
            alice,
            profile_event::Event::CustomerDeleted(CustomerDeleted {
                customer_id: alice.to_string(),
                ..Default::default()
            }),
        )],
    )
    .await;
    next_best(&mut c, t, &alice.to_string())
        .await
        .refused(tonic::Code::NotFound);
    profile_events(
        &s,
        t,
        vec![(
            alice,
            profile_event::Event::CustomerErased(CustomerErased {
                customer_id: alice.to_string(),
                ..Default::default()
            }),
        )],
    )
    .await;
    let left = c
        .list_decisions(req(
            t,
            ListDecisionsRequest {
                customer_id: alice.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .decisions;
    assert!(left.is_empty());
    s.stop().await;
}

#[tokio::test]
async fn control_groups_hold_out_the_customers_drawn_once() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let customers: Vec<Uuid> = (0..30).map(|_| Uuid::new_v4()).collect();
    created(&s, t, &customers).await;
    let mut held = service(
        "Held out",
        TreatmentKind::CheckInCall,
        ContactChannel::Phone,
        30,
        1,
    );
    held.control_share_bps = 3000;
    let held = create(&mut c, t, held).await;
    let tid = Uuid::parse_str(&held.treatment_id).unwrap();
    let (mut control, mut treated) = (0, 0);
    for id in &customers {
        let r = next_best(&mut c, t, &id.to_string()).await.answer_ok();
        if in_control(tid, *id, 3000) {
            control += 1;
            assert!(r.actions.is_empty());
            let f = &r.filtered[0];
            assert_eq!(f.reason, FilterReason::ControlGroup as i32);
            // The draw is stored once: asking again names the same record.
            let again = next_best(&mut c, t, &id.to_string()).await.answer_ok();
            assert_eq!(again.filtered[0].decision_id, f.decision_id);
            let d = c
                .list_decisions(req(
                    t,
                    ListDecisionsRequest {
                        customer_id: id.to_string(),
                        ..Default::default()
                    },
                ))
                .await
                .answer()
                .decisions;
            assert_eq!(d.len(), 1);
            assert_eq!(d[0].arm, Arm::Control as i32);
            outcome(&mut c, t, &f.decision_id, Outcome::Accepted)
                .await
                .refused(tonic::Code::FailedPrecondition);
        } else {
            treated += 1;
            assert_eq!(offered(&r), ["Held out"]);
        }
    }
    assert!(
        control > 0 && treated > 0,
        "{control} held out, {treated} offered"
    );
    s.stop().await;
}

#[tokio::test]
async fn campaign_messages_count_as_contacts_and_an_erasure_leaves_nothing() {
    use rapport_engagement::follow::InteractionFollower;
    use rapport_proto::rapport::interaction::v1::{
        CustomerInteractionsErased, InteractionEvent, InteractionRecorded, interaction_event,
    };
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
    created(&s, t, &[alice, bob]).await;
    let recorded = |customer: Uuid, kind: InteractionType, seq: i64| {
        let id = Uuid::new_v4();
        let e = InteractionEvent {
            event: Some(interaction_event::Event::InteractionRecorded(
                InteractionRecorded {
                    interaction_id: id.to_string(),
                    customer_id: customer.to_string(),
                    original_customer_id: customer.to_string(),
                    r#type: kind as i32,
                    channel: Ich::Email as i32,
                    occur_time: Some(timestamp(Utc::now() - Duration::hours(1))),
                    campaign_id: Uuid::new_v4().to_string(),
                    ..Default::default()
                },
            )),
        };
        change(
            seq,
            t,
            NewEvent::new(t, "interaction", id.to_string(), "InteractionRecorded", &e),
        )
    };
    let erased = InteractionEvent {
        event: Some(interaction_event::Event::CustomerInteractionsErased(
            CustomerInteractionsErased {
                customer_id: bob.to_string(),
                ..Default::default()
            },
        )),
    };
    let events = vec![
        // A campaign message without an initiator is still a contact.
        recorded(alice, InteractionType::CampaignSent, 1),
        // Bob complains and unsubscribes, then is erased in the same batch.
        recorded(bob, InteractionType::Complaint, 2),
        recorded(bob, InteractionType::CampaignUnsubscribed, 3),
        change(
            4,
            t,
            NewEvent::new(
                t,
                "customer",
                bob.to_string(),
                "CustomerInteractionsErased",
                &erased,
            ),
        ),
    ];
    let mut tx = s.pool.begin().await.unwrap();
    InteractionFollower
        .apply_batch(&mut tx, t, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    create(
        &mut c,
        t,
        service(
            "Note",
            TreatmentKind::CheckInCall,
            ContactChannel::Email,
            30,
            1,
        ),
    )
    .await;
    let r = next_best(&mut c, t, &alice.to_string()).await.unwrap();
    assert!(
        r.actions[0]
            .eligible_because
            .iter()
            .any(|w| w.contains("1 of 3 EMAIL contacts")),
        "{:?}",
        r.actions[0].eligible_because
    );
    next_best(&mut c, t, &bob.to_string())
        .await
        .refused(tonic::Code::NotFound);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customers WHERE tenant_id = $1 AND customer_id = $2)
              + (SELECT count(*) FROM contacts WHERE tenant_id = $1 AND customer_id = $2)
              + (SELECT count(*) FROM open_complaints WHERE tenant_id = $1 AND customer_id = $2)",
    )
    .bind(t)
    .bind(bob)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(left, 0, "nothing of the erased customer stays");
    s.stop().await;
}

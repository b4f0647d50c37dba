//! Treatment reports on a simulated tenant whose true lift is known: half of
//! 800 customers are held out by the control draw, purchases are drawn with
//! a 35 % conversion for those offered and 20 % for those held out (a true
//! lift of 0.15), and the report counts exactly what was simulated.

mod common;

use chrono::{Duration, Utc};
use common::*;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rapport_engagement::domain::decide::in_control;
use rapport_engagement::follow::{InteractionFollower, ProfileFollower};
use rapport_kit::convert::timestamp;
use rapport_kit::feed::NewEvent;
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::engagement::v1::{
    self as pb, ContactChannel, GetTreatmentReportRequest, Outcome, RecordOutcomeRequest,
    TreatmentKind,
};
use rapport_proto::rapport::interaction::v1::{
    InteractionEvent, InteractionRecorded, InteractionType, interaction_event,
};
use rapport_proto::rapport::profile::v1::{
    ConsentPurpose, CustomerCreated, ProfileEvent, profile_event,
};
use uuid::Uuid;

#[tokio::test]
async fn the_lift_over_the_control_group_is_measured() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let n = 800u128;
    let customers: Vec<Uuid> = (0..n).map(|i| Uuid::from_u128(0x5eed_0000 + i)).collect();
    let created: Vec<ChangeEvent> = customers
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let e = ProfileEvent {
                event: Some(profile_event::Event::CustomerCreated(CustomerCreated {
                    customer_id: id.to_string(),
                    ..Default::default()
                })),
            };
            change(
                i as i64 + 1,
                t,
                NewEvent::new(t, "customer", id.to_string(), "CustomerCreated", &e),
            )
        })
        .collect();
    let mut tx = s.pool.begin().await.unwrap();
    ProfileFollower
        .apply_batch(&mut tx, t, &created)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let treatment = create(
        &mut c,
        t,
        pb::Treatment {
            name: "Win-back".into(),
            kind: TreatmentKind::WinBack as i32,
            channel: ContactChannel::Phone as i32,
            consent_purpose: ConsentPurpose::Service as i32,
            cost_per_contact: Some(eur(1, 0)),
            value: Some(pb::treatment::Value::FixedValue(eur(50, 0))),
            control_share_bps: 5000,
            ..Default::default()
        },
    )
    .await;
    let tid = Uuid::parse_str(&treatment.treatment_id).unwrap();
    let mut offered = Vec::new();
    let mut held_out = Vec::new();
    for id in &customers {
        let r = next_best(&mut c, t, &id.to_string()).await.unwrap();
        if in_control(tid, *id, 5000) {
            assert_eq!(r.filtered[0].reason, pb::FilterReason::ControlGroup as i32);
            held_out.push(*id);
        } else {
            offered.push((*id, r.actions[0].decision_id.clone()));
        }
    }
    assert_eq!(offered.len() + held_out.len(), customers.len());

    // Outcomes: 30 accepted, 20 declined, the rest pending.
    for (k, (_, decision)) in offered.iter().take(50).enumerate() {
        let outcome = if k < 30 {
            Outcome::Accepted
        } else {
            Outcome::Declined
        };
        c.record_outcome(req(
            t,
            RecordOutcomeRequest {
                decision_id: decision.clone(),
                outcome: outcome as i32,
                outcome_time: None,
            },
        ))
        .await
        .answer();
    }

    // Purchases: a day after the decision, EUR 40, with the arm's chance;
    // every customer also buys 9 days later, outside the 7-day window.
    let mut rng = StdRng::seed_from_u64(42);
    let now = Utc::now();
    let mut converted = std::collections::HashSet::new();
    let mut events = Vec::new();
    let mut purchase = |customer: Uuid, at: chrono::DateTime<Utc>, units: i64| {
        let id = Uuid::new_v4();
        let e = InteractionEvent {
            event: Some(interaction_event::Event::InteractionRecorded(
                InteractionRecorded {
                    interaction_id: id.to_string(),
                    customer_id: customer.to_string(),
                    original_customer_id: customer.to_string(),
                    r#type: InteractionType::Purchase as i32,
                    occur_time: Some(timestamp(at)),
                    amount: Some(eur(units, 0)),
                    margin: Some(eur(units / 4, 0)),
                    ..Default::default()
                },
            )),
        };
        let seq = events.len() as i64 + 1;
        events.push(change(
            seq,
            t,
            NewEvent::new(t, "interaction", id.to_string(), "InteractionRecorded", &e),
        ));
    };
    let treated: Vec<Uuid> = offered.iter().map(|o| o.0).collect();
    for (group, p) in [(&treated, 0.35), (&held_out, 0.20)] {
        for id in group.iter() {
            if rng.random::<f64>() < p {
                purchase(*id, now + Duration::days(1), 40);
                converted.insert(*id);
            }
            purchase(*id, now + Duration::days(9), 1000);
        }
    }
    let mut tx = s.pool.begin().await.unwrap();
    InteractionFollower
        .apply_batch(&mut tx, t, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // Now, no window has ended: nobody is measured yet.
    let live = c
        .get_treatment_report(req(
            t,
            GetTreatmentReportRequest {
                treatment_id: treatment.treatment_id.clone(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .report
        .unwrap();
    assert_eq!(live.offers, treated.len() as i64);
    assert_eq!((live.accepted, live.declined, live.ignored), (30, 20, 0));
    assert_eq!(live.pending, treated.len() as i64 - 50);
    let lift = live.lift.unwrap();
    assert_eq!(lift.customers_not_yet_measured, customers.len() as i64);
    assert_eq!(lift.treated_conversion.unwrap().trials, 0);
    let acceptance = live.acceptance.unwrap();
    assert_eq!((acceptance.successes, acceptance.trials), (30, 50));
    assert!((acceptance.rate - 0.6).abs() < 1e-12);

    // Eight days on, every window has ended.
    let r = rapport_engagement::reports::report(
        &s.pool,
        t,
        tid,
        None,
        Some(now + Duration::seconds(1)),
        now + Duration::days(8),
    )
    .await
    .unwrap();
    let conv_t = treated.iter().filter(|c| converted.contains(c)).count() as i64;
    let conv_c = held_out.iter().filter(|c| converted.contains(c)).count() as i64;
    assert_eq!(
        (r.treated.conversion.successes, r.treated.conversion.trials),
        (conv_t, treated.len() as i64)
    );
    assert_eq!(
        (r.control.conversion.successes, r.control.conversion.trials),
        (conv_c, held_out.len() as i64)
    );
    let (pt, pc) = (
        conv_t as f64 / treated.len() as f64,
        conv_c as f64 / held_out.len() as f64,
    );
    let se =
        (pt * (1.0 - pt) / treated.len() as f64 + pc * (1.0 - pc) / held_out.len() as f64).sqrt();
    assert!((r.lift.0 - (pt - pc)).abs() < 1e-12);
    assert!((r.lift.1 - (pt - pc - 1.959_963_984_540_054 * se)).abs() < 1e-12);
    // The true lift, 0.15, lies within 4 standard errors of the estimate.
    assert!(
        (r.lift.0 - 0.15).abs() < 4.0 * se,
        "lift {} ± {}",
        r.lift.0,
        se
    );
    assert!(
        r.lift.1 > 0.0,
        "an effect this size is detected: {:?}",
        r.lift
    );
    // Revenue within the window only: EUR 40 per converter.
    let nanos = 1_000_000_000i128;
    assert_eq!(
        r.treated.revenue_per_customer,
        40 * nanos * i128::from(conv_t) / treated.len() as i128
    );
    assert_eq!(
        r.control.revenue_per_customer,
        40 * nanos * i128::from(conv_c) / held_out.len() as i128
    );
    // Of the 30 who accepted, those who bought within the window.
    let accepted_buyers = offered
        .iter()
        .take(30)
        .filter(|o| converted.contains(&o.0))
        .count() as i64;
    assert_eq!(
        r.revenue_after_acceptance,
        40 * 1_000_000_000 * accepted_buyers
    );
    assert_eq!(
        r.margin_after_acceptance,
        10 * 1_000_000_000 * accepted_buyers
    );
    assert_eq!(r.treated.pending + r.control.pending, 0);
    s.stop().await;
}

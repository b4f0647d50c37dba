//! The engagement part of a demo tenant: six treatments (one for each
//! ladder goal, win-back and service recovery), and a history of decisions
//! with outcomes for every fifth customer, so reports and propensities have
//! something to show. Treatments carry request ids; the history is made only
//! while the tenant has no decision, so a second run adds nothing.

use std::time::{Duration, Instant};

use rapport_proto::rapport::common::v1::{Money, RelationshipStage};
use rapport_proto::rapport::engagement::v1::engagement_service_client::EngagementServiceClient;
use rapport_proto::rapport::engagement::v1::{
    ContactChannel, CreateTreatmentRequest, GetNextBestActionsRequest, LadderGoal,
    ListDecisionsRequest, Outcome, RecordOutcomeRequest, Treatment, TreatmentKind, treatment,
};
use rapport_proto::rapport::profile::v1::ConsentPurpose;
use sha2::{Digest, Sha256};
use tonic::Code;

use super::{Authed, within_limits};

fn eur(units: i64, nanos: i32) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    })
}

/// The demo treatments.
fn treatments() -> Vec<Treatment> {
    let t = |name: &str,
             kind: TreatmentKind,
             channel: ContactChannel,
             goal: LadderGoal,
             purpose: ConsentPurpose,
             cost: Option<Money>,
             value: Option<Money>| Treatment {
        name: name.into(),
        kind: kind as i32,
        channel: channel as i32,
        ladder_goal: goal as i32,
        consent_purpose: purpose as i32,
        cost_per_contact: cost,
        value: value.map(treatment::Value::FixedValue),
        control_share_bps: 1000,
        ..Default::default()
    };
    let mut win_back = t(
        "Win-back offer",
        TreatmentKind::WinBack,
        ContactChannel::Email,
        LadderGoal::Unspecified,
        ConsentPurpose::Marketing,
        eur(0, 500_000_000),
        eur(30, 0),
    );
    win_back.stages = vec![RelationshipStage::Dissolution as i32];
    vec![
        t(
            "Welcome e-mail",
            TreatmentKind::Welcome,
            ContactChannel::Email,
            LadderGoal::Acquire,
            ConsentPurpose::Marketing,
            eur(0, 100_000_000),
            eur(15, 0),
        ),
        t(
            "Check-in call",
            TreatmentKind::CheckInCall,
            ContactChannel::Phone,
            LadderGoal::Satisfy,
            ConsentPurpose::Service,
            eur(4, 0),
            eur(60, 0),
        ),
        t(
            "Loyalty reward",
            TreatmentKind::LoyaltyReward,
            ContactChannel::Email,
            LadderGoal::Retain,
            ConsentPurpose::Marketing,
            eur(2, 0),
            eur(45, 0),
        ),
        t(
            "Partner upsell visit",
            TreatmentKind::Upsell,
            ContactChannel::FieldVisit,
            LadderGoal::Enhance,
            ConsentPurpose::Service,
            eur(60, 0),
            eur(900, 0),
        ),
        win_back,
        t(
            "Service recovery call",
            TreatmentKind::ServiceRecovery,
            ContactChannel::Phone,
            LadderGoal::Unspecified,
            ConsentPurpose::Service,
            eur(8, 0),
            eur(120, 0),
        ),
    ]
}

/// A fixed draw in 0..100 for a decision of the demo.
fn draw(seed: u64, id: &str) -> u8 {
    let d = Sha256::digest(format!("{seed}/{id}").as_bytes());
    d[0] % 100
}

/// What the engagement part sent.
#[derive(Debug, Default, Clone, Copy)]
pub struct Sent {
    pub treatments: usize,
    pub decisions: usize,
    pub outcomes: usize,
}

/// Creates the treatments, then (while the tenant has no decision) decides
/// for every fifth of `customers` and records outcomes for some.
pub async fn seed(
    client: &EngagementServiceClient<Authed>,
    seed: u64,
    customers: &[String],
) -> anyhow::Result<Sent> {
    let mut sent = Sent::default();
    let c = client.clone();
    for (i, t) in treatments().into_iter().enumerate() {
        let req = CreateTreatmentRequest {
            treatment: Some(t),
            request_id: format!("seed-{seed}-treatment-{i}"),
        };
        let r = within_limits(
            &c,
            &req,
            |mut c, r| async move { c.create_treatment(r).await },
        )
        .await;
        match r {
            Ok(_) => sent.treatments += 1,
            // Named by an earlier seed of the same tenant: kept as it is.
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(anyhow::anyhow!("CreateTreatment: {s}")),
        }
    }
    let req = ListDecisionsRequest {
        page_size: 1,
        ..Default::default()
    };
    let any = within_limits(
        &c,
        &req,
        |mut c, r| async move { c.list_decisions(r).await },
    )
    .await?
    .into_inner();
    if !any.decisions.is_empty() {
        return Ok(sent);
    }
    // The engagement service learns of the customers from the feeds within
    // seconds: wait for the last one.
    let Some(last) = customers.last() else {
        return Ok(sent);
    };
    let started = Instant::now();
    loop {
        let req = GetNextBestActionsRequest {
            customer_id: last.clone(),
            preview: true,
            ..Default::default()
        };
        let known = within_limits(&c, &req, |mut c, r| async move {
            c.get_next_best_actions(r).await
        })
        .await;
        match known {
            Ok(_) => break,
            Err(s)
                if s.code() == Code::NotFound && started.elapsed() < Duration::from_secs(120) =>
            {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(s) => return Err(anyhow::anyhow!("GetNextBestActions: {s}")),
        }
    }
    for id in customers.iter().step_by(5) {
        let req = GetNextBestActionsRequest {
            customer_id: id.clone(),
            limit: 2,
            ..Default::default()
        };
        let r = within_limits(&c, &req, |mut c, r| async move {
            c.get_next_best_actions(r).await
        })
        .await?
        .into_inner();
        for a in r.actions {
            sent.decisions += 1;
            let outcome = match draw(seed, &a.decision_id) {
                0..=17 => Outcome::Accepted,
                18..=39 => Outcome::Declined,
                _ => continue,
            };
            let req = RecordOutcomeRequest {
                decision_id: a.decision_id,
                outcome: outcome as i32,
                outcome_time: None,
            };
            within_limits(
                &c,
                &req,
                |mut c, r| async move { c.record_outcome(r).await },
            )
            .await?;
            sent.outcomes += 1;
        }
    }
    Ok(sent)
}

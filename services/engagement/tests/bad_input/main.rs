//! The bad-input matrix of every EngagementService method, over real gRPC
//! and a real database, with the engagement service alone (customers and
//! segments are announced to it through its profile and segmentation
//! followers, as their feeds would): every
//! method is sent missing, malformed, out-of-range, oversized and hostile
//! input and must answer the documented code, INVALID_ARGUMENT naming every
//! bad field (`treatment.<field>`, `policy.caps[i].<field>`,
//! `update_mask.paths[i]`…), never INTERNAL. Every refused call is followed
//! by a read-back showing nothing was written: no treatment, no change, no
//! decision, no outcome counted. Hostile text comes back byte for byte.

#[path = "../common/mod.rs"]
mod common;

use chrono::Utc;
use common::*;
use prost_types::Timestamp;
use rapport_engagement::follow::{ProfileFollower, SegmentationFollower};
use rapport_kit::convert::timestamp;
use rapport_kit::feed::NewEvent;
use rapport_proto::rapport::common::v1::{ChangeEvent, Money};
use rapport_proto::rapport::engagement::v1::*;
use rapport_proto::rapport::profile::v1::{
    ConsentPurpose, CustomerCreated, CustomerDeleted, ProfileEvent, profile_event,
};
use rapport_proto::rapport::segmentation::v1::{
    MembershipChanged, SegmentChanged, SegmentationEvent, segmentation_event,
};
use rapport_testkit::hostile::{self, assert_code, assert_violations, changed};
use tonic::Code;
use uuid::Uuid;

mod decisions;
mod outcomes;
mod policy;
mod treatments;
mod updates;

/// `Some` Timestamp `seconds` after the epoch, plus `nanos`.
fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(hostile::at(seconds, nanos))
}

/// Timestamps no valid request carries.
fn broken_times() -> Vec<Option<Timestamp>> {
    hostile::invalid_times().into_iter().map(Some).collect()
}

/// The start of `x`'s debug form, to name a case in a failure.
fn brief(x: &impl std::fmt::Debug) -> String {
    format!("{x:?}").chars().take(300).collect()
}

/// Now, in seconds since the epoch.
fn now() -> i64 {
    Utc::now().timestamp()
}

/// `units` and `nanos` of `currency`, whatever they are.
fn money(currency: &str, units: i64, nanos: i32) -> Option<Money> {
    Some(Money {
        currency_code: currency.into(),
        units,
        nanos,
    })
}

/// A fixed value of `units` euros.
fn fixed(units: i64) -> Option<treatment::Value> {
    Some(treatment::Value::FixedValue(eur(units, 0)))
}

/// A valid treatment: an e-mail service message worth EUR 20 for EUR 0.25 a
/// contact (profitable with the default prior, and needing no consent
/// record, so a customer the service knows is offered it).
fn valid(name: &str) -> Treatment {
    Treatment {
        name: name.into(),
        kind: TreatmentKind::Offer as i32,
        channel: ContactChannel::Email as i32,
        consent_purpose: ConsentPurpose::Service as i32,
        cost_per_contact: Some(eur(0, 250_000_000)),
        value: fixed(20),
        ..Default::default()
    }
}

/// CreateTreatment of `t`, without a request id.
fn creating(t: Treatment) -> CreateTreatmentRequest {
    CreateTreatmentRequest {
        treatment: Some(t),
        request_id: String::new(),
    }
}

/// The treatment `id` as stored.
async fn get(c: &mut Client, tenant: Uuid, id: &str) -> Treatment {
    c.get_treatment(req(
        tenant,
        GetTreatmentRequest {
            treatment_id: id.into(),
        },
    ))
    .await
    .expect_answer("the treatment is read back")
    .treatment
    .expect("the treatment")
}

/// Every treatment of the tenant, archived ones too.
async fn treatments_of(c: &mut Client, tenant: Uuid) -> Vec<Treatment> {
    let page = c
        .list_treatments(req(
            tenant,
            ListTreatmentsRequest {
                page_size: 1000,
                page_token: String::new(),
                include_archived: true,
            },
        ))
        .await
        .expect_answer("the treatments are listed");
    assert!(page.next_page_token.is_empty());
    page.treatments
}

/// Every decision stored for the tenant.
async fn decisions_of(c: &mut Client, tenant: Uuid) -> Vec<Decision> {
    let page = c
        .list_decisions(req(
            tenant,
            ListDecisionsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("the decisions are listed");
    assert!(page.next_page_token.is_empty());
    page.decisions
}

/// The tenant's policy in force.
async fn policy_of(c: &mut Client, tenant: Uuid) -> EngagementPolicy {
    c.get_policy(req(tenant, GetPolicyRequest {}))
        .await
        .expect_answer("the policy is read")
        .policy
        .expect("the policy")
}

/// `events` as a feed delivers them.
fn delivered(events: Vec<NewEvent>) -> Vec<ChangeEvent> {
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| ChangeEvent {
            sequence: i as i64 + 1,
            tenant_id: e.tenant_id.to_string(),
            aggregate_type: e.aggregate_type.into(),
            aggregate_id: e.aggregate_id,
            event_type: e.event_type.into(),
            commit_time: Some(timestamp(Utc::now())),
            event: Some(e.event),
            ..Default::default()
        })
        .collect()
}

/// Applies profile events through the service's follower, as its profile
/// feed would.
async fn profile_events(s: &Stack, tenant: Uuid, events: Vec<(Uuid, profile_event::Event)>) {
    let events = delivered(
        events
            .into_iter()
            .map(|(customer, e)| {
                NewEvent::new(
                    tenant,
                    "customer",
                    customer.to_string(),
                    "Profile",
                    &ProfileEvent { event: Some(e) },
                )
            })
            .collect(),
    );
    let mut tx = s.pool.begin().await.expect("a transaction");
    ProfileFollower
        .apply_batch(&mut tx, tenant, &events)
        .await
        .expect("the profile events are applied");
    tx.commit().await.expect("commit");
}

/// A segment with `members`, as segmentation's feed announces it.
async fn segment(s: &Stack, tenant: Uuid, members: &[Uuid]) -> Uuid {
    let segment = Uuid::new_v4();
    let event = |e: segmentation_event::Event| {
        NewEvent::new(
            tenant,
            "segment",
            segment.to_string(),
            "Segmentation",
            &SegmentationEvent { event: Some(e) },
        )
    };
    let events = delivered(vec![
        event(segmentation_event::Event::SegmentCreated(SegmentChanged {
            segment_id: segment.to_string(),
            name: "Audience".into(),
            ..Default::default()
        })),
        event(segmentation_event::Event::MembershipChanged(
            MembershipChanged {
                segment_id: segment.to_string(),
                entered: members.iter().map(Uuid::to_string).collect(),
                ..Default::default()
            },
        )),
    ]);
    let mut tx = s.pool.begin().await.expect("a transaction");
    SegmentationFollower
        .apply_batch(&mut tx, tenant, &events)
        .await
        .expect("the segmentation events are applied");
    tx.commit().await.expect("commit");
    segment
}

/// Customers the profile feed announced to the service.
async fn created(s: &Stack, tenant: Uuid, ids: &[Uuid]) {
    let events = ids
        .iter()
        .map(|c| {
            (
                *c,
                profile_event::Event::CustomerCreated(CustomerCreated {
                    customer_id: c.to_string(),
                    ..Default::default()
                }),
            )
        })
        .collect();
    profile_events(s, tenant, events).await;
}

/// A customer the profile feed announced, then said was deleted.
async fn deleted(s: &Stack, tenant: Uuid, id: Uuid) {
    created(s, tenant, &[id]).await;
    let e = profile_event::Event::CustomerDeleted(CustomerDeleted {
        customer_id: id.to_string(),
        ..Default::default()
    });
    profile_events(s, tenant, vec![(id, e)]).await;
}

/// GetNextBestActions without storing anything.
async fn preview(c: &mut Client, tenant: Uuid, customer: Uuid) -> GetNextBestActionsResponse {
    c.get_next_best_actions(req(
        tenant,
        GetNextBestActionsRequest {
            customer_id: customer.to_string(),
            limit: 20,
            preview: true,
            ..Default::default()
        },
    ))
    .await
    .expect_answer("a preview")
}

/// A request carrying `tenant` verbatim as its tenant header, or none.
fn with_header<T>(tenant: Option<&str>, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Some(raw) = tenant {
        r.metadata_mut().insert(
            rapport_kit::context::TENANT_HEADER,
            raw.parse().expect("an ASCII header value"),
        );
    }
    r
}

#[tokio::test]
async fn a_call_without_a_valid_tenant_is_unauthenticated_and_writes_nothing() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let alice = Uuid::new_v4();
    created(&s, t, &[alice]).await;
    let audience = segment(&s, t, &[alice]).await;
    let known = create(&mut c, t, valid("Known")).await;
    let decided = next_best(&mut c, t, &alice.to_string())
        .await
        .expect("decided");
    let decision = decided.actions[0].decision_id.clone();
    let policy = policy_of(&mut c, t).await;
    let decisions = decisions_of(&mut c, t).await;
    let id = || known.treatment_id.clone();

    for header in [
        None,
        Some(""),
        Some("not-a-uuid"),
        Some("1 OR 1=1"),
        Some("00000000-0000-0000-0000-00000000000g"),
    ] {
        let u = Code::Unauthenticated;
        let case = format!("tenant header {header:?}");
        let case = case.as_str();
        assert_code(
            c.create_treatment(with_header(header, creating(valid("New"))))
                .await,
            u,
            case,
        );
        assert_code(
            c.get_treatment(with_header(
                header,
                GetTreatmentRequest { treatment_id: id() },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.list_treatments(with_header(header, ListTreatmentsRequest::default()))
                .await,
            u,
            case,
        );
        assert_code(
            c.update_treatment(with_header(
                header,
                UpdateTreatmentRequest {
                    treatment: Some(Treatment {
                        treatment_id: id(),
                        name: "Taken over".into(),
                        ..Default::default()
                    }),
                    update_mask: mask(&["name"]),
                },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.archive_treatment(with_header(
                header,
                ArchiveTreatmentRequest {
                    treatment_id: id(),
                    etag: String::new(),
                },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.get_policy(with_header(header, GetPolicyRequest {})).await,
            u,
            case,
        );
        assert_code(
            c.update_policy(with_header(
                header,
                UpdatePolicyRequest {
                    policy: Some(EngagementPolicy {
                        exploration: true,
                        ..Default::default()
                    }),
                    update_mask: mask(&["exploration"]),
                },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.get_next_best_actions(with_header(
                header,
                GetNextBestActionsRequest {
                    customer_id: alice.to_string(),
                    ..Default::default()
                },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.list_decisions(with_header(header, ListDecisionsRequest::default()))
                .await,
            u,
            case,
        );
        assert_code(
            c.record_outcome(with_header(
                header,
                RecordOutcomeRequest {
                    decision_id: decision.clone(),
                    outcome: Outcome::Accepted as i32,
                    outcome_time: None,
                },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.get_treatment_report(with_header(
                header,
                GetTreatmentReportRequest {
                    treatment_id: id(),
                    ..Default::default()
                },
            ))
            .await,
            u,
            case,
        );
        assert_code(
            c.stream_next_best_actions(with_header(
                header,
                StreamNextBestActionsRequest {
                    segment_id: audience.to_string(),
                    ..Default::default()
                },
            ))
            .await,
            u,
            case,
        );
    }
    // Nothing changed.
    assert_eq!(treatments_of(&mut c, t).await, vec![known]);
    assert_eq!(policy_of(&mut c, t).await, policy);
    assert_eq!(decisions_of(&mut c, t).await, decisions);
    s.stop().await;
}

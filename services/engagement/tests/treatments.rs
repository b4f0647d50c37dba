//! Treatments and the policy over real gRPC and PostgreSQL: versions and
//! etags, archiving, idempotent creation, paging, and tenants kept apart.

mod common;

use common::*;
use rapport_proto::rapport::engagement::v1::{
    self as pb, ArchiveTreatmentRequest, ContactCap, ContactChannel, CreateTreatmentRequest,
    EngagementPolicy, GetPolicyRequest, GetTreatmentRequest, ListDecisionsRequest,
    ListTreatmentsRequest, TreatmentState, UpdatePolicyRequest, UpdateTreatmentRequest,
};
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn treatments_are_versioned_archived_and_listed() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let mut spring = offer("Spring offer");
    spring.description = "10 % off the spring collection".into();
    spring.control_share_bps = 1000;
    spring.stages = vec![3, 4];
    let created = create(&mut c, t, spring.clone()).await;
    assert_eq!(created.version, 1);
    assert_eq!(created.etag, "t1");
    assert_eq!(created.state, TreatmentState::Active as i32);
    assert_eq!(created.priority_percent, 100);
    assert_eq!((created.prior_alpha, created.prior_beta), (1.0, 9.0));
    assert_eq!(created.cost_per_contact, Some(eur(0, 500_000_000)));
    assert_eq!(
        created.value,
        Some(pb::treatment::Value::FixedValue(eur(20, 0)))
    );
    assert_eq!(created.stages, vec![3, 4]);
    assert_eq!(created.description, spring.description);
    let got = c
        .get_treatment(req(
            t,
            GetTreatmentRequest {
                treatment_id: created.treatment_id.clone(),
            },
        ))
        .await
        .answer()
        .treatment
        .unwrap();
    assert_eq!(got, created);

    // Same name while active: ALREADY_EXISTS.
    c.create_treatment(req(
        t,
        CreateTreatmentRequest {
            treatment: Some(offer("Spring offer")),
            request_id: String::new(),
        },
    ))
    .await
    .refused(Code::AlreadyExists);

    // A retry with the request id returns the first treatment.
    let first = c
        .create_treatment(req(
            t,
            CreateTreatmentRequest {
                treatment: Some(offer("Summer")),
                request_id: "r-1".into(),
            },
        ))
        .await
        .answer()
        .treatment
        .unwrap();
    let again = c
        .create_treatment(req(
            t,
            CreateTreatmentRequest {
                treatment: Some(offer("Summer")),
                request_id: "r-1".into(),
            },
        ))
        .await
        .answer()
        .treatment
        .unwrap();
    assert_eq!(first, again);

    // Update the masked fields only; a stale etag is ABORTED.
    let update = |etag: &str, priority: i32| UpdateTreatmentRequest {
        treatment: Some(pb::Treatment {
            treatment_id: created.treatment_id.clone(),
            etag: etag.into(),
            priority_percent: priority,
            name: "ignored".into(),
            value: Some(pb::treatment::Value::ClvShareBps(500)),
            ..Default::default()
        }),
        update_mask: mask(&["priority_percent", "value"]),
    };
    let updated = c
        .update_treatment(req(t, update("t1", 250)))
        .await
        .answer()
        .treatment
        .unwrap();
    assert_eq!(updated.version, 2);
    assert_eq!(updated.priority_percent, 250);
    assert_eq!(updated.value, Some(pb::treatment::Value::ClvShareBps(500)));
    assert_eq!(updated.name, "Spring offer");
    assert_eq!(updated.description, spring.description);
    assert_ne!(updated.update_time, created.update_time);
    c.update_treatment(req(t, update("t1", 300)))
        .await
        .refused(Code::Aborted);

    // Archive: not listed by default, never changed again, name free again.
    c.archive_treatment(req(
        t,
        ArchiveTreatmentRequest {
            treatment_id: created.treatment_id.clone(),
            etag: "t1".into(),
        },
    ))
    .await
    .refused(Code::Aborted);
    let archived = c
        .archive_treatment(req(
            t,
            ArchiveTreatmentRequest {
                treatment_id: created.treatment_id.clone(),
                etag: "t2".into(),
            },
        ))
        .await
        .answer()
        .treatment
        .unwrap();
    assert_eq!(archived.state, TreatmentState::Archived as i32);
    assert!(archived.archive_time.is_some());
    let twice = c
        .archive_treatment(req(
            t,
            ArchiveTreatmentRequest {
                treatment_id: created.treatment_id.clone(),
                etag: String::new(),
            },
        ))
        .await
        .answer()
        .treatment
        .unwrap();
    assert_eq!(twice, archived);
    c.update_treatment(req(t, update("", 120)))
        .await
        .refused(Code::FailedPrecondition);
    create(&mut c, t, offer("Spring offer")).await;

    // Paging by name, with and without the archived.
    for n in ["A", "B", "C"] {
        create(&mut c, t, offer(n)).await;
    }
    let list = |page_token: String, include_archived: bool| ListTreatmentsRequest {
        page_size: 2,
        page_token,
        include_archived,
    };
    let mut names = Vec::new();
    let mut token = String::new();
    loop {
        let page = c.list_treatments(req(t, list(token, false))).await.answer();
        assert!(page.treatments.len() <= 2);
        names.extend(page.treatments.into_iter().map(|x| x.name));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(names, ["A", "B", "C", "Spring offer", "Summer"]);
    let all = c
        .list_treatments(req(
            t,
            ListTreatmentsRequest {
                page_size: 100,
                page_token: String::new(),
                include_archived: true,
            },
        ))
        .await
        .answer()
        .treatments;
    assert_eq!(all.len(), 6);
    assert_eq!(
        all.iter()
            .filter(|x| x.state == TreatmentState::Archived as i32)
            .count(),
        1
    );
    s.stop().await;
}

#[tokio::test]
async fn the_policy_has_defaults_and_versions() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let p = c
        .get_policy(req(t, GetPolicyRequest {}))
        .await
        .answer()
        .policy
        .unwrap();
    assert_eq!(p.etag, "p0");
    assert!(p.update_time.is_none());
    assert_eq!(p.caps.len(), 5);
    assert_eq!(
        (
            p.complaint_quiet_days,
            p.unsubscribe_quiet_days,
            p.outcome_window_days
        ),
        (14, 30, 7)
    );
    assert!(!p.exploration);
    let update = |etag: &str| UpdatePolicyRequest {
        policy: Some(EngagementPolicy {
            etag: etag.into(),
            caps: vec![ContactCap {
                channel: ContactChannel::Email as i32,
                max_contacts: 1,
                window_days: 2,
            }],
            exploration: true,
            complaint_quiet_days: 99,
            ..Default::default()
        }),
        update_mask: mask(&["caps", "exploration"]),
    };
    let p = c
        .update_policy(req(t, update("p0")))
        .await
        .answer()
        .policy
        .unwrap();
    assert_eq!(p.etag, "p1");
    assert_eq!(
        p.caps,
        vec![ContactCap {
            channel: ContactChannel::Email as i32,
            max_contacts: 1,
            window_days: 2
        }]
    );
    assert!(p.exploration);
    assert_eq!(p.complaint_quiet_days, 14);
    assert!(p.update_time.is_some());
    c.update_policy(req(t, update("p0")))
        .await
        .refused(Code::Aborted);
    let read = c
        .get_policy(req(t, GetPolicyRequest {}))
        .await
        .answer()
        .policy
        .unwrap();
    assert_eq!(read, p);
    // Another tenant still has the defaults.
    let other = c
        .get_policy(req(Uuid::new_v4(), GetPolicyRequest {}))
        .await
        .answer()
        .policy
        .unwrap();
    assert_eq!(other.etag, "p0");
    s.stop().await;
}

#[tokio::test]
async fn tenants_see_only_their_own() {
    let s = start().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = s.client();
    let mine = create(&mut c, a, offer("Mine")).await;
    c.get_treatment(req(
        b,
        GetTreatmentRequest {
            treatment_id: mine.treatment_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    c.archive_treatment(req(
        b,
        ArchiveTreatmentRequest {
            treatment_id: mine.treatment_id.clone(),
            etag: String::new(),
        },
    ))
    .await
    .refused(Code::NotFound);
    c.update_treatment(req(
        b,
        UpdateTreatmentRequest {
            treatment: Some(pb::Treatment {
                treatment_id: mine.treatment_id.clone(),
                priority_percent: 5,
                ..Default::default()
            }),
            update_mask: mask(&["priority_percent"]),
        },
    ))
    .await
    .refused(Code::NotFound);
    let listed = c
        .list_treatments(req(b, ListTreatmentsRequest::default()))
        .await
        .answer()
        .treatments;
    assert!(listed.is_empty());
    // The same name is free in another tenant.
    create(&mut c, b, offer("Mine")).await;
    let decisions = c
        .list_decisions(req(b, ListDecisionsRequest::default()))
        .await
        .answer()
        .decisions;
    assert!(decisions.is_empty());
    // A page token of one tenant is refused for the other.
    create(&mut c, a, offer("Second")).await;
    let page = c
        .list_treatments(req(
            a,
            ListTreatmentsRequest {
                page_size: 1,
                ..Default::default()
            },
        ))
        .await
        .answer();
    assert!(!page.next_page_token.is_empty());
    c.list_treatments(req(
        b,
        ListTreatmentsRequest {
            page_size: 1,
            page_token: page.next_page_token,
            include_archived: false,
        },
    ))
    .await
    .refused(Code::InvalidArgument);
    s.stop().await;
}

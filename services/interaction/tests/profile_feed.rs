//! With the real profile service in-process: identifiers resolved through
//! ResolveIdentity, customer ids checked, and merges, unmerges and erasures
//! arriving through the profile change feed (exactly once, across a restart).

mod common;

use common::*;
use rapport_proto::rapport::common::v1::{RedactedEvent, RedactionReason};
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    GetInteractionRequest, InteractionType, ListInteractionsRequest, ReassignReason,
    RejectionReason,
};
use rapport_proto::rapport::profile::v1::{
    EraseCustomerRequest, MergeCustomersRequest, UnmergeCustomersRequest,
};
use tonic::Code;
use uuid::Uuid;

async fn timeline(
    c: &mut InteractionServiceClient<tonic::transport::Channel>,
    tenant: Uuid,
    customer: Uuid,
) -> (String, Vec<String>) {
    let r = c
        .list_interactions(req(
            tenant,
            ListInteractionsRequest {
                customer_id: customer.to_string(),
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .answer();
    let mut ids: Vec<String> = r
        .interactions
        .into_iter()
        .map(|i| i.interaction_id)
        .collect();
    ids.sort();
    (r.customer_id, ids)
}

fn by_mail(
    email: &str,
    t: chrono::DateTime<chrono::Utc>,
    units: i64,
) -> rapport_proto::rapport::interaction::v1::Interaction {
    let mut i = purchase(Uuid::nil(), t, units);
    i.customer = by_email(email);
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_resolve_and_ids_are_checked_with_the_profile_service() {
    let s = start_with_profile().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let first = try_record(
        &mut c,
        tenant,
        by_mail("Ann@Example.com", at(2024, 1, 1, 0), 5),
    )
    .await
    .unwrap();
    assert!(first.created && first.customer_created);
    let ann = first.interaction.unwrap().customer_id;
    let second = try_record(
        &mut c,
        tenant,
        by_mail("ann@example.com", at(2024, 1, 2, 0), 6),
    )
    .await
    .unwrap();
    assert!(second.created && !second.customer_created);
    assert_eq!(second.interaction.unwrap().customer_id, ann);
    let ann: Uuid = ann.parse().unwrap();

    // A known id is accepted, an unknown one is NOT_FOUND.
    try_record(&mut c, tenant, purchase(ann, at(2024, 1, 3, 0), 7))
        .await
        .unwrap();
    try_record(
        &mut c,
        tenant,
        purchase(Uuid::new_v4(), at(2024, 1, 3, 0), 7),
    )
    .await
    .refused(Code::NotFound);
    // Ann's id means nothing in another tenant.
    try_record(&mut c, Uuid::new_v4(), purchase(ann, at(2024, 1, 3, 0), 7))
        .await
        .refused(Code::NotFound);

    // A stream: 300 interactions over three distinct e-mails (one set each
    // resolved once), an identifier the profile service refuses, and an
    // unknown id.
    let mut interactions = Vec::new();
    for n in 0..300 {
        interactions.push(by_mail(
            &format!("c{}@example.com", n % 3),
            at(2024, 2, 1, 0),
            n,
        ));
    }
    interactions.push(by_mail("not an e-mail", at(2024, 2, 1, 0), 1));
    interactions.push(purchase(Uuid::new_v4(), at(2024, 2, 1, 0), 1));
    let r = record_batch(&s, tenant, interactions).await;
    assert_eq!(r.accepted_count, 300);
    let reasons: Vec<(i64, i32)> = r.rejections.iter().map(|x| (x.index, x.reason)).collect();
    assert_eq!(
        reasons,
        [
            (300, RejectionReason::Invalid as i32),
            (301, RejectionReason::CustomerNotFound as i32)
        ]
    );
    let customers: i64 = sqlx::query_scalar("SELECT count(DISTINCT customer_id) FROM interactions")
        .fetch_one(&s.pool)
        .await
        .unwrap();
    assert_eq!(customers, 4);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_unmerges_and_erasures_arrive_through_the_feed() {
    let s = start_with_profile().await;
    let mut c = s.interactions();
    let mut profile = s.profile_client().await;
    let tenant = Uuid::new_v4();

    let a_first = try_record(
        &mut c,
        tenant,
        by_mail("a@example.com", at(2024, 3, 1, 0), 10),
    )
    .await
    .unwrap();
    let a: Uuid = a_first
        .interaction
        .as_ref()
        .unwrap()
        .customer_id
        .parse()
        .unwrap();
    let a2 = try_record(&mut c, tenant, purchase(a, at(2024, 3, 2, 0), 11))
        .await
        .unwrap();
    let mut b_keyed = by_mail("b@example.com", at(2024, 3, 3, 0), 20);
    b_keyed.idempotency_key = "b-1".into();
    let b_first = try_record(&mut c, tenant, b_keyed.clone()).await.unwrap();
    let b: Uuid = b_first
        .interaction
        .as_ref()
        .unwrap()
        .customer_id
        .parse()
        .unwrap();
    let b2 = try_record(
        &mut c,
        tenant,
        contact(b, InteractionType::Call, at(2024, 3, 4, 0)),
    )
    .await
    .unwrap();
    let id = |r: &rapport_proto::rapport::interaction::v1::RecordInteractionResponse| {
        r.interaction.as_ref().unwrap().interaction_id.clone()
    };
    let mut a_ids = vec![id(&a_first), id(&a2)];
    let mut b_ids = vec![id(&b_first), id(&b2)];
    a_ids.sort();
    b_ids.sort();

    // Merge B into A: B's interactions move to A.
    profile
        .merge_customers(req(
            tenant,
            MergeCustomersRequest {
                survivor_customer_id: a.to_string(),
                merged_customer_id: b.to_string(),
                survivor_etag: String::new(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let mut all: Vec<String> = a_ids.iter().chain(&b_ids).cloned().collect();
    all.sort();
    eventually("the merge to arrive", || {
        let mut c = c.clone();
        let all = all.clone();
        async move { timeline(&mut c, tenant, a).await.1 == all }
    })
    .await;
    // B's id now lists A's timeline; a new recording under B goes to A.
    let (owner, _) = timeline(&mut c, tenant, b).await;
    assert_eq!(owner, a.to_string());
    let while_merged = try_record(&mut c, tenant, purchase(b, at(2024, 3, 5, 0), 30))
        .await
        .unwrap();
    let wm = while_merged.interaction.unwrap();
    assert_eq!(wm.customer_id, a.to_string());
    assert_eq!(wm.original_customer_id, b.to_string());
    let moved = c
        .get_interaction(req(
            tenant,
            GetInteractionRequest {
                interaction_id: b_ids[0].clone(),
            },
        ))
        .await
        .answer()
        .interaction
        .unwrap();
    assert_eq!(moved.customer_id, a.to_string());
    assert_eq!(moved.original_customer_id, b.to_string());
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type = 'InteractionsReassigned'")
            .await,
        1
    );

    // Unmerge B: exactly B's interactions go back, including the one
    // recorded under its id while it was merged.
    profile
        .unmerge_customers(req(
            tenant,
            UnmergeCustomersRequest {
                merged_customer_id: b.to_string(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();
    let mut b_back = b_ids.clone();
    b_back.push(wm.interaction_id.clone());
    b_back.sort();
    eventually("the unmerge to arrive", || {
        let mut c = c.clone();
        let b_back = b_back.clone();
        async move { timeline(&mut c, tenant, b).await == (b.to_string(), b_back) }
    })
    .await;
    assert_eq!(timeline(&mut c, tenant, a).await.1, a_ids);

    // Erase B: its interactions, keys and feed events go; B is refused after.
    profile
        .erase_customer(req(
            tenant,
            EraseCustomerRequest {
                customer_id: b.to_string(),
                request_reference: String::new(),
            },
        ))
        .await
        .unwrap();
    eventually("the erasure to arrive", || {
        let mut c = c.clone();
        async move { timeline(&mut c, tenant, b).await.1.is_empty() }
    })
    .await;
    c.get_interaction(req(
        tenant,
        GetInteractionRequest {
            interaction_id: b_ids[0].clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    assert_eq!(timeline(&mut c, tenant, a).await.1, a_ids);
    assert_eq!(
        s.count("SELECT count(*) FROM idempotency_keys WHERE idempotency_key = 'b-1'")
            .await,
        0
    );
    // Every earlier event about B's interactions is reduced to its id.
    let scrubbed: Vec<_> = feed_events(&s.pool)
        .await
        .into_iter()
        .filter(|(ev, _)| ev.aggregate_type == "interaction" && b_back.contains(&ev.aggregate_id))
        .collect();
    assert_eq!(scrubbed.len(), 3);
    for (ev, typed) in &scrubbed {
        assert_eq!(ev.event_type, "InteractionRecorded");
        assert_eq!(
            typed.as_ref(),
            Some(&Event::Redacted(RedactedEvent {
                subject_id: ev.aggregate_id.clone(),
                reason: RedactionReason::Erased as i32,
            })),
            "{ev:?}"
        );
        #[allow(deprecated)]
        let legacy = ev.payload.clone();
        assert_eq!(legacy, None);
        let bytes = String::from_utf8_lossy(&ev.event.as_ref().unwrap().value).into_owned();
        assert!(!bytes.contains(&b.to_string()), "{bytes}");
    }
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type = 'CustomerInteractionsErased'")
            .await,
        1
    );
    // The events the feed got for the merge, the unmerge and the erasure.
    let events = feed_events(&s.pool).await;
    let of = |t: &str| -> Vec<(rapport_proto::rapport::common::v1::ChangeEvent, Event)> {
        events
            .iter()
            .filter(|(ev, _)| ev.event_type == t)
            .map(|(ev, e)| (ev.clone(), e.clone().unwrap()))
            .collect()
    };
    let reassigned = of("InteractionsReassigned");
    let [
        (merge_ev, Event::InteractionsReassigned(merge)),
        (unmerge_ev, Event::InteractionsReassigned(unmerge)),
    ] = reassigned.as_slice()
    else {
        panic!("{reassigned:?}")
    };
    assert_eq!(
        (
            merge_ev.aggregate_type.as_str(),
            merge_ev.aggregate_id.as_str()
        ),
        ("customer", a.to_string().as_str())
    );
    assert_eq!(merge.from_customer_id, b.to_string());
    assert_eq!(merge.to_customer_id, a.to_string());
    assert_eq!(merge.reason, ReassignReason::Merge as i32);
    assert_eq!(merge.interaction_count, 2);
    let mut ids = merge.interaction_ids.clone();
    ids.sort();
    assert_eq!(ids, b_ids);
    assert!(merge.ids_complete);
    assert!(merge.profile_sequence > 0);
    assert_eq!(unmerge_ev.aggregate_id, b.to_string());
    assert_eq!(unmerge.from_customer_id, a.to_string());
    assert_eq!(unmerge.to_customer_id, b.to_string());
    assert_eq!(unmerge.reason, ReassignReason::Unmerge as i32);
    assert_eq!(unmerge.interaction_count, 3);
    let mut ids = unmerge.interaction_ids.clone();
    ids.sort();
    assert_eq!(ids, b_back);
    assert!(unmerge.ids_complete);
    assert!(unmerge.profile_sequence > merge.profile_sequence);
    let erased = of("CustomerInteractionsErased");
    let [(erased_ev, Event::CustomerInteractionsErased(e))] = erased.as_slice() else {
        panic!("{erased:?}")
    };
    assert_eq!(erased_ev.aggregate_id, b.to_string());
    assert_eq!(e.customer_id, b.to_string());
    assert_eq!(e.interaction_count, 3);
    assert!(e.profile_sequence > unmerge.profile_sequence);
    try_record(&mut c, tenant, purchase(b, at(2024, 3, 6, 0), 1))
        .await
        .refused(Code::FailedPrecondition);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_the_feed_without_loss_or_repetition() {
    let s = start_with_profile().await;
    let tenant = Uuid::new_v4();
    let mut c = s.interactions();
    let mut profile = s.profile_client().await;
    let a: Uuid = try_record(
        &mut c,
        tenant,
        by_mail("x@example.com", at(2024, 1, 1, 0), 1),
    )
    .await
    .unwrap()
    .interaction
    .unwrap()
    .customer_id
    .parse()
    .unwrap();
    let b: Uuid = try_record(
        &mut c,
        tenant,
        by_mail("y@example.com", at(2024, 1, 1, 0), 1),
    )
    .await
    .unwrap()
    .interaction
    .unwrap()
    .customer_id
    .parse()
    .unwrap();
    let Stack {
        db,
        interaction,
        profile: profile_running,
        pool,
        ..
    } = s;
    interaction.stop().await;

    // While the interaction service is down, B is merged into A.
    profile
        .merge_customers(req(
            tenant,
            MergeCustomersRequest {
                survivor_customer_id: a.to_string(),
                merged_customer_id: b.to_string(),
                survivor_etag: String::new(),
                request_id: String::new(),
            },
        ))
        .await
        .unwrap();

    let profile_running = profile_running.unwrap();
    let restarted = serve_interaction(&db, Some(profile_running.endpoint())).await;
    let mut c = InteractionServiceClient::new(rapport_testkit::channel(&restarted).await);
    eventually("the merge to arrive after the restart", || {
        let mut c = c.clone();
        async move { timeline(&mut c, tenant, a).await.1.len() == 2 }
    })
    .await;
    // And once more, a restart with nothing new applies nothing twice.
    restarted.stop().await;
    let again = serve_interaction(&db, Some(profile_running.endpoint())).await;
    let cursor = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT coalesce(max(after_sequence), 0)::bigint FROM feed_tenant_cursors WHERE source = 'profile'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let before = cursor().await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(cursor().await, before);
    let reassigned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE event_type = 'InteractionsReassigned'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(reassigned, 1);
    let _ = &mut c;
    again.stop().await;
    profile_running.stop().await;
}

//! RecordInteraction, RecordInteractions, GetInteraction and WatchChanges
//! over real gRPC and PostgreSQL: idempotency under retries and concurrency,
//! invalid input writing nothing, tenant isolation, partitions, feed events.

mod common;

use common::*;
use futures::StreamExt;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    Channel, GetInteractionRequest, InteractionEvent, InteractionType, LineItem,
    RecordInteractionRequest, RecordInteractionsRequest, RejectionReason, Survey,
    WatchChangesRequest,
};
use tonic::Code;
use uuid::Uuid;

#[tokio::test]
async fn record_is_idempotent_by_key_and_refuses_a_changed_retry() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let mut i = purchase(customer, at(2024, 3, 1, 10), 12);
    i.amount = Some(money("EUR", 12, 500_000_000));
    i.margin = Some(money("EUR", 4, 0));
    i.channel = Channel::Store as i32;
    i.line_items = vec![LineItem {
        sku: "shoe-42".into(),
        name: "Running shoe".into(),
        category: "shoes/running".into(),
        quantity: 1.0,
        unit_price: Some(money("EUR", 12, 500_000_000)),
    }];
    i.attributes = Some(rapport_kit::convert::json_to_struct(
        serde_json::json!({"receipt": "000981", "store": 12}),
    ));
    i.idempotency_key = "pos:store-12:receipt-000981".into();

    let first = try_record(&mut c, tenant, i.clone()).await.unwrap();
    assert!(first.created);
    assert!(!first.customer_created);
    let stored = first.interaction.unwrap();
    assert_eq!(stored.customer_id, customer.to_string());
    assert_eq!(stored.original_customer_id, customer.to_string());
    assert_eq!(stored.amount, i.amount);
    assert_eq!(stored.margin, i.margin);
    assert_eq!(stored.line_items, i.line_items);
    assert_eq!(stored.attributes, i.attributes);
    assert!(!stored.etag.is_empty());

    // A retry returns the stored interaction.
    let retry = try_record(&mut c, tenant, i.clone()).await.unwrap();
    assert!(!retry.created);
    assert_eq!(retry.interaction.unwrap(), stored);

    // Same key, different content: ALREADY_EXISTS.
    let mut changed = i.clone();
    changed.amount = Some(money("EUR", 13, 0));
    try_record(&mut c, tenant, changed)
        .await
        .refused(Code::AlreadyExists);

    // Another tenant may use the same key, and cannot see the first one's.
    let other = Uuid::new_v4();
    let theirs = try_record(&mut c, other, i.clone()).await.unwrap();
    assert!(theirs.created);
    c.get_interaction(req(
        other,
        GetInteractionRequest {
            interaction_id: stored.interaction_id.clone(),
        },
    ))
    .await
    .refused(Code::NotFound);
    let got = c
        .get_interaction(req(
            tenant,
            GetInteractionRequest {
                interaction_id: stored.interaction_id.clone(),
            },
        ))
        .await
        .answer()
        .interaction
        .unwrap();
    assert_eq!(got, stored);
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 2);
    // The 2024 partition holds them, not the default one.
    assert_eq!(s.count("SELECT count(*) FROM interactions_y2024").await, 2);
    assert_eq!(
        s.count("SELECT count(*) FROM interactions_default").await,
        0
    );
    s.stop().await;
}

#[tokio::test]
async fn concurrent_identical_calls_record_exactly_once() {
    let s = start().await;
    let tenant = Uuid::new_v4();
    let mut i = purchase(Uuid::new_v4(), at(2023, 5, 1, 9), 30);
    i.idempotency_key = "order-1".into();
    let mut tasks = Vec::new();
    for _ in 0..12 {
        let mut c = s.interactions();
        let i = i.clone();
        tasks.push(tokio::spawn(async move {
            try_record(&mut c, tenant, i).await.unwrap()
        }));
    }
    let mut created = 0;
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        created += usize::from(r.created);
        ids.insert(r.interaction.unwrap().interaction_id);
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 1);
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type = 'InteractionRecorded'")
            .await,
        1
    );
    s.stop().await;
}

#[tokio::test]
async fn invalid_input_names_every_problem_and_writes_nothing() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let mut i = purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1);
    i.amount = None;
    i.r#type = InteractionType::SurveyResponse as i32;
    i.survey = Some(Survey {
        csat: Some(6),
        nps: Some(11),
        comment: String::new(),
    });
    i.occur_time = Some(ts(chrono::Utc::now() + chrono::Duration::hours(1)));
    i.idempotency_key = "bad key".into();
    let err = try_record(&mut c, tenant, i)
        .await
        .refused(Code::InvalidArgument);
    assert_eq!(
        violated_fields(&err),
        [
            "interaction.occur_time",
            "interaction.survey.csat",
            "interaction.survey.nps",
            "interaction.idempotency_key"
        ]
    );
    c.record_interaction(req(tenant, RecordInteractionRequest { interaction: None }))
        .await
        .refused(Code::InvalidArgument);
    // No tenant: UNAUTHENTICATED.
    c.record_interaction(tonic::Request::new(RecordInteractionRequest {
        interaction: Some(purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1)),
    }))
    .await
    .refused(Code::Unauthenticated);
    // An unknown campaign is NOT_FOUND.
    let mut sent = contact(
        Uuid::new_v4(),
        InteractionType::CampaignSent,
        at(2024, 1, 1, 0),
    );
    sent.campaign_id = Uuid::new_v4().to_string();
    try_record(&mut c, tenant, sent)
        .await
        .refused(Code::NotFound);
    // Identifiers need the profile service, which is not configured here.
    let mut by_mail = purchase(Uuid::new_v4(), at(2024, 1, 1, 0), 1);
    by_mail.customer = by_email("ann@example.com");
    try_record(&mut c, tenant, by_mail)
        .await
        .refused(Code::Unavailable);
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 0);
    assert_eq!(s.count("SELECT count(*) FROM idempotency_keys").await, 0);
    assert_eq!(s.count("SELECT count(*) FROM outbox").await, 0);
    s.stop().await;
}

fn stream_of(
    messages: Vec<Vec<rapport_proto::rapport::interaction::v1::Interaction>>,
) -> impl futures::Stream<Item = RecordInteractionsRequest> {
    futures::stream::iter(
        messages
            .into_iter()
            .map(|interactions| RecordInteractionsRequest { interactions }),
    )
}

#[tokio::test]
async fn bulk_ingestion_counts_duplicates_and_rejections_by_index() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let campaign = create_campaign(&s, tenant, campaign("Spring")).await;
    let customers: Vec<Uuid> = (0..50).map(|_| Uuid::new_v4()).collect();
    let mut messages = Vec::new();
    for m in 0..5 {
        let mut batch = Vec::new();
        for n in 0..300 {
            let k = m * 300 + n;
            let mut i = purchase(
                customers[k % 50],
                at(2020 + (k % 5) as i32, 1 + (k % 12) as u32, 1, 0),
                1 + k as i64,
            );
            i.idempotency_key = format!("k-{k}");
            batch.push(i);
        }
        messages.push(batch);
    }
    // Index 10: invalid. Index 20: a retry of index 0 within the stream.
    // Index 30: key of index 1 with other content. Index 40: unknown campaign.
    // Index 41: known campaign.
    messages[0][10].amount = None;
    messages[0][20] = messages[0][0].clone();
    messages[0][30].idempotency_key = "k-1".into();
    let mut unknown = contact(
        customers[0],
        InteractionType::CampaignSent,
        at(2024, 1, 1, 0),
    );
    unknown.campaign_id = Uuid::new_v4().to_string();
    unknown.idempotency_key = "camp-unknown".into();
    messages[0][40] = unknown;
    let mut known = contact(
        customers[0],
        InteractionType::CampaignSent,
        at(2024, 1, 1, 0),
    );
    known.campaign_id = campaign.campaign_id.clone();
    known.idempotency_key = "camp-known".into();
    messages[0][41] = known;

    let r = c
        .record_interactions(req(tenant, stream_of(messages.clone())))
        .await
        .answer();
    assert_eq!(r.accepted_count, 1496);
    assert_eq!(r.duplicate_count, 1);
    assert_eq!(r.rejected_count, 3);
    let rej: Vec<(i64, i32)> = r.rejections.iter().map(|x| (x.index, x.reason)).collect();
    assert_eq!(
        rej,
        [
            (10, RejectionReason::Invalid as i32),
            (30, RejectionReason::IdempotencyConflict as i32),
            (40, RejectionReason::CampaignNotFound as i32),
        ]
    );
    assert_eq!(r.rejections[0].field_violations[0].field, "amount");
    assert_eq!(r.rejections[0].idempotency_key, "k-10");
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 1496);

    // Resending the whole stream records nothing new.
    let again = c
        .record_interactions(req(tenant, stream_of(messages)))
        .await
        .answer();
    assert_eq!(again.accepted_count, 0);
    assert_eq!(again.duplicate_count, 1497);
    assert_eq!(again.rejected_count, 3);
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 1496);
    assert_eq!(
        s.count("SELECT count(*) FROM outbox WHERE event_type = 'InteractionRecorded'")
            .await,
        1496
    );

    // A message of more than 1,000 interactions fails the call.
    let big = vec![
        (0..1001)
            .map(|k| purchase(customers[0], at(2024, 1, 1, 0), k))
            .collect(),
    ];
    c.record_interactions(req(tenant, stream_of(big)))
        .await
        .refused(Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test]
async fn concurrent_streams_with_the_same_keys_record_each_once() {
    let s = start().await;
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let messages: Vec<Vec<_>> = (0..4)
        .map(|m| {
            (0..250)
                .map(|n| {
                    let mut i = purchase(
                        customer,
                        at(2022, 6, 1, 0) + chrono::Duration::minutes(m * 250 + n),
                        5,
                    );
                    i.idempotency_key = format!("key-{}", m * 250 + n);
                    i
                })
                .collect()
        })
        .collect();
    let mut tasks = Vec::new();
    for n in 0..4 {
        let mut c = s.interactions();
        let mut msgs = messages.clone();
        msgs.rotate_left(n);
        tasks.push(tokio::spawn(async move {
            c.record_interactions(req(tenant, stream_of(msgs)))
                .await
                .answer()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.rejected_count, 0, "{:?}", r.rejections);
        assert_eq!(r.accepted_count + r.duplicate_count, 1000);
        accepted += r.accepted_count;
    }
    assert_eq!(accepted, 1000);
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 1000);
    s.stop().await;
}

#[tokio::test]
async fn the_feed_carries_recordings_without_free_text() {
    let s = start().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let mut survey = contact(customer, InteractionType::SurveyResponse, at(2024, 2, 2, 2));
    survey.survey = Some(Survey {
        csat: Some(4),
        nps: Some(9),
        comment: "my private words".into(),
    });
    survey.idempotency_key = "secret-key".into();
    let recorded = record(&s, tenant, survey).await;
    let mut feed = c
        .watch_changes(WatchChangesRequest {
            after_sequence: 0,
            ..Default::default()
        })
        .await
        .answer();
    let event = feed.next().await.unwrap().unwrap().event.unwrap();
    assert_eq!(event.event_type, "InteractionRecorded");
    assert_eq!(event.aggregate_type, "interaction");
    assert_eq!(event.aggregate_id, recorded.interaction_id);
    assert_eq!(event.tenant_id, tenant.to_string());
    #[allow(deprecated)]
    let legacy = event.payload.clone();
    assert_eq!(legacy, None);
    let Some(Event::InteractionRecorded(r)) =
        rapport_kit::feed::decode::<InteractionEvent>(&event).and_then(|e| e.event)
    else {
        panic!("{event:?}")
    };
    assert_eq!(r.interaction_id, recorded.interaction_id);
    assert_eq!(r.r#type, InteractionType::SurveyResponse as i32);
    assert_eq!(r.customer_id, customer.to_string());
    assert_eq!(r.original_customer_id, customer.to_string());
    assert_eq!(r.occur_time, Some(ts(at(2024, 2, 2, 2))));
    assert_eq!((r.csat, r.nps), (Some(4), Some(9)));
    assert_eq!((r.amount.as_ref(), r.margin.as_ref()), (None, None));
    let text = String::from_utf8_lossy(&event.event.as_ref().unwrap().value).into_owned();
    assert!(
        !text.contains("private") && !text.contains("secret-key"),
        "{text}"
    );
    c.watch_changes(WatchChangesRequest {
        after_sequence: -1,
        ..Default::default()
    })
    .await
    .refused(Code::InvalidArgument);
    s.stop().await;
}

#[tokio::test]
async fn a_year_recorded_before_its_partition_existed_moves_out_of_the_default() {
    let s = start().await;
    let tenant = Uuid::new_v4();
    // Rows of 1999 written straight into the table land in the default partition.
    let mut conn = s.pool.acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO interactions (tenant_id, interaction_id, occur_time, customer_id, original_customer_id, type)
         VALUES ($1, $2, '1999-06-01T00:00:00Z', $3, $3, 4)",
    )
    .bind(tenant)
    .bind(Uuid::new_v4())
    .bind(Uuid::new_v4())
    .execute(&mut *conn)
    .await
    .unwrap();
    drop(conn);
    assert_eq!(
        s.count("SELECT count(*) FROM interactions_default").await,
        1
    );
    let mut c = s.interactions();
    try_record(
        &mut c,
        tenant,
        purchase(Uuid::new_v4(), at(1999, 7, 1, 0), 3),
    )
    .await
    .unwrap();
    assert_eq!(
        s.count("SELECT count(*) FROM interactions_default").await,
        0
    );
    assert_eq!(s.count("SELECT count(*) FROM interactions_y1999").await, 2);
    s.stop().await;
}

#[tokio::test]
async fn a_stream_ends_unavailable_at_once_when_the_profile_service_dies() {
    let mut s = start_with_profile().await;
    let mut c = s.interactions();
    let tenant = Uuid::new_v4();
    let by_mail = |n: usize| {
        let mut i = purchase(Uuid::new_v4(), at(2024, 2, 1, 0), 1);
        i.customer = by_email(&format!("c{n}@example.com"));
        i.idempotency_key = format!("mail-{n}");
        i
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<RecordInteractionsRequest>(4);
    let call = tokio::spawn(async move {
        c.record_interactions(req(tenant, tokio_stream::wrappers::ReceiverStream::new(rx)))
            .await
    });
    tx.send(RecordInteractionsRequest {
        interactions: (0..10).map(by_mail).collect(),
    })
    .await
    .unwrap();
    let pool = s.pool.clone();
    eventually("the first batch is written", || {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM interactions")
                .fetch_one(&pool)
                .await
                .unwrap()
                == 10
        }
    })
    .await;

    // The profile service dies; the next batch has new customers to resolve.
    s.profile.take().expect("profile service").stop().await;
    tx.send(RecordInteractionsRequest {
        interactions: (10..20).map(by_mail).collect(),
    })
    .await
    .unwrap();
    // The client keeps its side of the stream open: the service must end the
    // call itself rather than wait for messages it cannot write.
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), call)
        .await
        .expect("the stream stayed open after its batch failed")
        .unwrap();
    let err = answer.expect_err("the batch needing the profile service failed");
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("profile"), "{}", err.message());
    drop(tx);
    assert_eq!(s.count("SELECT count(*) FROM interactions").await, 10);
    s.stop().await;
}

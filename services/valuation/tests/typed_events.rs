//! The interaction feed as the valuation service reads it: typed
//! `InteractionEvent`s (every field set, money with nanos, negative and edge
//! amounts) applied by the `InteractionFollower` and their effect read back
//! from the valuation schema to the nano; events without a typed event and
//! `redacted` ones skipped; an erasure reducing the customer's earlier
//! valuation events to `redacted`.

use chrono::{DateTime, TimeZone, Utc};
use rapport_kit::feed::{self, FeedHandler, NewEvent};
use rapport_proto::rapport::common::v1::{ChangeEvent, Money, RedactedEvent, RedactionReason};
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{
    Channel, CustomerInteractionsErased, Initiator, InteractionEvent, InteractionRecorded,
    InteractionType, InteractionsReassigned, ReassignReason, ServiceRequestStatus,
};
use rapport_proto::rapport::valuation::v1::valuation_event;
use rapport_proto::rapport::valuation::v1::{
    CustomerValueChanged, CustomerValueRemoved, ValuationEvent, ValueRemovalReason, ValueTier,
};
use rapport_valuation::follow::InteractionFollower;
use rust_decimal::Decimal;
use sqlx::PgPool;
use uuid::Uuid;

async fn schema() -> (rapport_testkit::TestDatabase, PgPool) {
    let db = rapport_testkit::database().await;
    rapport_kit::db::migrate(
        &db.url,
        rapport_valuation::SCHEMA,
        &rapport_valuation::MIGRATOR,
    )
    .await
    .unwrap();
    let pool = rapport_kit::db::connect(&db.url, rapport_valuation::SCHEMA, 4)
        .await
        .unwrap();
    (db, pool)
}

fn eur(units: i64, nanos: i32) -> Option<Money> {
    Some(Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    })
}

fn at(y: i32, m: u32, d: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, 10, 30, 15).unwrap()
}

/// The change event the interaction service would serve for `event`.
fn change(seq: i64, tenant: Uuid, agg: &'static str, id: String, event: Event) -> ChangeEvent {
    let name = match &event {
        Event::InteractionRecorded(_) => "InteractionRecorded",
        Event::InteractionsReassigned(_) => "InteractionsReassigned",
        Event::CustomerInteractionsErased(_) => "CustomerInteractionsErased",
        _ => "Other",
    };
    let new = NewEvent::new(
        tenant,
        agg,
        id.clone(),
        name,
        &InteractionEvent { event: Some(event) },
    );
    ChangeEvent {
        sequence: seq,
        tenant_id: tenant.to_string(),
        aggregate_type: agg.into(),
        aggregate_id: id,
        event_type: name.into(),
        commit_time: Some(rapport_kit::convert::timestamp(Utc::now())),
        event: Some(new.event),
        ..Default::default()
    }
}

async fn apply(pool: &PgPool, events: &[ChangeEvent]) {
    let mut tx = pool.begin().await.unwrap();
    for ev in events {
        let tenant = Uuid::parse_str(&ev.tenant_id).unwrap();
        InteractionFollower
            .apply(&mut tx, tenant, std::slice::from_ref(ev))
            .await
            .unwrap();
    }
    tx.commit().await.unwrap();
}

#[allow(clippy::type_complexity)]
async fn purchases(
    pool: &PgPool,
    tenant: Uuid,
) -> Vec<(
    Uuid,
    Uuid,
    Uuid,
    DateTime<Utc>,
    Option<String>,
    Option<Decimal>,
    Option<Decimal>,
)> {
    sqlx::query_as(
        "SELECT interaction_id, customer_id, original_customer_id, occur_time, currency, amount, margin
         FROM purchases WHERE tenant_id = $1 ORDER BY occur_time",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn queue(pool: &PgPool, tenant: Uuid) -> Vec<(Uuid, Option<String>)> {
    sqlx::query_as(
        "SELECT customer_id, reason FROM rescore_queue WHERE tenant_id = $1 ORDER BY customer_id",
    )
    .bind(tenant)
    .fetch_all(pool)
    .await
    .unwrap()
}

fn recorded(id: Uuid, customer: Uuid, original: Uuid, t: DateTime<Utc>) -> InteractionRecorded {
    InteractionRecorded {
        interaction_id: id.to_string(),
        customer_id: customer.to_string(),
        original_customer_id: original.to_string(),
        r#type: InteractionType::Purchase as i32,
        custom_type: String::new(),
        occur_time: Some(rapport_kit::convert::timestamp(t)),
        channel: Channel::Store as i32,
        initiator: Initiator::Customer as i32,
        amount: eur(10, 500_000_000),
        margin: eur(3, 250_000_000),
        campaign_id: Uuid::new_v4().to_string(),
        agent_id: "agent-1".into(),
        csat: Some(5),
        nps: Some(10),
        service_request_status: ServiceRequestStatus::Unspecified as i32,
        decision_id: Uuid::new_v4().to_string(),
    }
}

#[tokio::test]
async fn typed_purchases_land_in_the_projection_to_the_nano() {
    let (_db, pool) = schema().await;
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let original = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..7).map(|_| Uuid::now_v7()).collect();
    let t = |d| at(2024, 3, d);
    // EUR 10.50 with a margin of 3.25, recorded under another customer first.
    let full = recorded(ids[0], customer, original, t(1));
    // One nano, and a negative margin (a loss of one cent).
    let tiny = InteractionRecorded {
        amount: eur(0, 1),
        margin: eur(0, -10_000_000),
        ..recorded(ids[1], customer, customer, t(2))
    };
    // The largest amount a Money carries, margin absent.
    let huge = InteractionRecorded {
        amount: eur(i64::MAX, 999_999_999),
        margin: None,
        ..recorded(ids[2], customer, customer, t(3))
    };
    // No amount at all; no original customer (defaults to the customer).
    let free = InteractionRecorded {
        amount: None,
        margin: None,
        original_customer_id: String::new(),
        ..recorded(ids[3], customer, customer, t(4))
    };
    // Not purchases: a return with a negative amount, a survey.
    let ret = InteractionRecorded {
        r#type: InteractionType::Return as i32,
        amount: eur(-10, -500_000_000),
        margin: eur(-3, -250_000_000),
        ..recorded(ids[4], customer, customer, t(5))
    };
    let survey = InteractionRecorded {
        r#type: InteractionType::SurveyResponse as i32,
        amount: None,
        margin: None,
        csat: Some(2),
        nps: Some(3),
        ..recorded(ids[5], customer, customer, t(6))
    };
    // Out of contract: units and nanos disagree in sign: no amount.
    let odd = InteractionRecorded {
        amount: eur(1, -1),
        margin: eur(-1, 1),
        ..recorded(ids[6], customer, customer, t(7))
    };
    let events: Vec<ChangeEvent> = [full, tiny, huge, free, ret, survey, odd]
        .into_iter()
        .enumerate()
        .map(|(n, r)| {
            let id = r.interaction_id.clone();
            change(
                n as i64 + 1,
                tenant,
                "interaction",
                id,
                Event::InteractionRecorded(r),
            )
        })
        .collect();
    apply(&pool, &events).await;
    // At-least-once delivery: applying them again changes nothing.
    apply(&pool, &events).await;

    let got = purchases(&pool, tenant).await;
    let eur = Some("EUR".to_string());
    assert_eq!(
        got,
        [
            (
                ids[0],
                customer,
                original,
                t(1),
                eur.clone(),
                Some(Decimal::new(1050, 2)),
                Some(Decimal::new(325, 2))
            ),
            (
                ids[1],
                customer,
                customer,
                t(2),
                eur.clone(),
                Some(Decimal::new(1, 9)),
                Some(Decimal::new(-1, 2))
            ),
            (
                ids[2],
                customer,
                customer,
                t(3),
                eur,
                Some(Decimal::from(i64::MAX) + Decimal::new(999_999_999, 9)),
                None
            ),
            (ids[3], customer, customer, t(4), None, None, None),
            (ids[6], customer, customer, t(7), None, None, None),
        ]
    );
    // The exact text PostgreSQL keeps.
    let text: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT amount::text FROM purchases WHERE tenant_id = $1 ORDER BY occur_time LIMIT 3",
    )
    .bind(tenant)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        text,
        [
            Some("10.500000000".to_string()),
            Some("0.000000001".to_string()),
            Some("9223372036854775807.999999999".to_string())
        ]
    );
    assert_eq!(queue(&pool, tenant).await, [(customer, None)]);
}

#[tokio::test]
async fn untyped_redacted_and_foreign_events_are_skipped() {
    let (_db, pool) = schema().await;
    let tenant = Uuid::new_v4();
    let customer = Uuid::new_v4();
    let id = Uuid::now_v7();
    let typed = change(
        1,
        tenant,
        "interaction",
        id.to_string(),
        Event::InteractionRecorded(recorded(id, customer, customer, at(2024, 1, 1))),
    );
    // An event appended before typed events: only a JSON payload.
    #[allow(deprecated)]
    let legacy = ChangeEvent {
        sequence: 2,
        event: None,
        payload: Some(rapport_kit::convert::json_to_struct(serde_json::json!({
            "interaction_id": id, "customer_id": customer, "type": "INTERACTION_TYPE_PURCHASE",
            "occur_time": "2024-01-01T10:30:15Z",
            "amount": {"currency_code": "EUR", "units": "10", "nanos": 500000000}
        }))),
        ..typed.clone()
    };
    let redacted = change(
        3,
        tenant,
        "interaction",
        id.to_string(),
        Event::Redacted(RedactedEvent {
            subject_id: id.to_string(),
            reason: RedactionReason::Erased as i32,
        }),
    );
    // A valuation envelope where an interaction one is expected.
    let foreign = ChangeEvent {
        sequence: 4,
        event: Some(
            NewEvent::new(
                tenant,
                "customer",
                customer.to_string(),
                "CustomerValueRemoved",
                &ValuationEvent {
                    event: Some(valuation_event::Event::CustomerValueRemoved(
                        CustomerValueRemoved {
                            customer_id: customer.to_string(),
                            reason: ValueRemovalReason::Erased as i32,
                        },
                    )),
                },
            )
            .event,
        ),
        ..typed.clone()
    };
    // Bytes that are no InteractionEvent at all.
    let mut garbage = typed.clone();
    garbage.sequence = 5;
    if let Some(any) = garbage.event.as_mut() {
        any.value = vec![0xff, 0xff, 0xff];
    }
    apply(&pool, &[legacy, redacted, foreign, garbage]).await;
    assert!(purchases(&pool, tenant).await.is_empty());
    assert!(queue(&pool, tenant).await.is_empty());
    apply(&pool, &[typed]).await;
    assert_eq!(purchases(&pool, tenant).await.len(), 1);
}

#[tokio::test]
async fn reassignments_move_exactly_the_listed_or_all_purchases() {
    let (_db, pool) = schema().await;
    let tenant = Uuid::new_v4();
    let a = Uuid::new_v4();
    let b = Uuid::new_v4();
    let c = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
    let rec = |n: usize, customer: Uuid| {
        change(
            n as i64 + 1,
            tenant,
            "interaction",
            ids[n].to_string(),
            Event::InteractionRecorded(recorded(
                ids[n],
                customer,
                customer,
                at(2024, 2, n as u32 + 1),
            )),
        )
    };
    apply(&pool, &[rec(0, b), rec(1, b), rec(2, b), rec(3, c)]).await;
    sqlx::query("DELETE FROM rescore_queue")
        .execute(&pool)
        .await
        .unwrap();
    let owners = |pool: PgPool| async move {
        let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT interaction_id, customer_id FROM purchases WHERE tenant_id = $1 ORDER BY occur_time",
        )
        .bind(tenant)
        .fetch_all(&pool)
        .await
        .unwrap();
        rows.into_iter().map(|(_, c)| c).collect::<Vec<Uuid>>()
    };

    // Merge B into A, listing two of B's three purchases: only those move.
    let merge = InteractionsReassigned {
        from_customer_id: b.to_string(),
        to_customer_id: a.to_string(),
        reason: ReassignReason::Merge as i32,
        interaction_count: 2,
        interaction_ids: vec![ids[0].to_string(), ids[1].to_string()],
        ids_complete: true,
        profile_sequence: 41,
    };
    apply(
        &pool,
        &[change(
            10,
            tenant,
            "customer",
            a.to_string(),
            Event::InteractionsReassigned(merge),
        )],
    )
    .await;
    assert_eq!(owners(pool.clone()).await, [a, a, b, c]);
    let mut want = vec![(a, None), (b, Some("MERGED".to_string()))];
    want.sort();
    assert_eq!(queue(&pool, tenant).await, want);

    // Too many to list: everything of B moves.
    let merge_all = InteractionsReassigned {
        from_customer_id: b.to_string(),
        to_customer_id: a.to_string(),
        reason: ReassignReason::Merge as i32,
        interaction_count: 10_001,
        interaction_ids: Vec::new(),
        ids_complete: false,
        profile_sequence: 42,
    };
    apply(
        &pool,
        &[change(
            11,
            tenant,
            "customer",
            a.to_string(),
            Event::InteractionsReassigned(merge_all),
        )],
    )
    .await;
    assert_eq!(owners(pool.clone()).await, [a, a, a, c]);

    // Unmerge B without a list: what was first recorded under B goes back.
    sqlx::query("DELETE FROM rescore_queue")
        .execute(&pool)
        .await
        .unwrap();
    let unmerge = InteractionsReassigned {
        from_customer_id: a.to_string(),
        to_customer_id: b.to_string(),
        reason: ReassignReason::Unmerge as i32,
        interaction_count: 3,
        interaction_ids: Vec::new(),
        ids_complete: false,
        profile_sequence: 43,
    };
    apply(
        &pool,
        &[change(
            12,
            tenant,
            "customer",
            b.to_string(),
            Event::InteractionsReassigned(unmerge),
        )],
    )
    .await;
    assert_eq!(owners(pool.clone()).await, [b, b, b, c]);
    // An unmerge does not mark the giver as merged.
    let mut want = vec![(a, None), (b, None)];
    want.sort();
    assert_eq!(queue(&pool, tenant).await, want);
    // The amounts moved with their purchases, exactly.
    let total: Decimal = sqlx::query_scalar(
        "SELECT sum(amount) FROM purchases WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(b)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(total, Decimal::new(3150, 2));
}

#[tokio::test]
async fn an_erasure_deletes_the_projection_and_redacts_earlier_events() {
    let (_db, pool) = schema().await;
    let tenant = Uuid::new_v4();
    let gone = Uuid::new_v4();
    let kept = Uuid::new_v4();
    let ids: Vec<Uuid> = (0..2).map(|_| Uuid::now_v7()).collect();
    apply(
        &pool,
        &[
            change(
                1,
                tenant,
                "interaction",
                ids[0].to_string(),
                Event::InteractionRecorded(recorded(ids[0], gone, gone, at(2024, 1, 1))),
            ),
            change(
                2,
                tenant,
                "interaction",
                ids[1].to_string(),
                Event::InteractionRecorded(recorded(ids[1], kept, kept, at(2024, 1, 2))),
            ),
        ],
    )
    .await;
    // Both customers have a value, announced on the valuation feed.
    let mut conn = pool.acquire().await.unwrap();
    let mut announced = Vec::new();
    for c in [gone, kept] {
        sqlx::query(
            "INSERT INTO customer_values (tenant_id, customer_id, currency_code, clv, p_alive,
                 expected_purchases, expected_order_value, historical_value, value_tier,
                 transaction_model_id, spend_model_id, score_time, horizon_periods, period_unit,
                 discount_rate, margin_ratio, frequency, recency, t)
             VALUES ($1, $2, 'EUR', 123.456789012, 0.75, 1.5, 10.5, 10.5, 1, $3, $3, now(),
                 52, 2, 0.1, 1, 1, 2, 3)",
        )
        .bind(tenant)
        .bind(c)
        .bind(Uuid::new_v4())
        .execute(&mut *conn)
        .await
        .unwrap();
        let changed = CustomerValueChanged {
            customer_id: c.to_string(),
            clv: Some(Money {
                currency_code: "EUR".into(),
                units: 123,
                nanos: 456_789_012,
            }),
            p_alive: 0.75,
            expected_purchases: 1.5,
            value_tier: ValueTier::Top as i32,
            score_time: Some(rapport_kit::convert::timestamp(Utc::now())),
            net_clv: Some(Money {
                currency_code: "EUR".into(),
                units: -4,
                nanos: -500_000_001,
            }),
            cost_to_serve: Some(Money {
                currency_code: "EUR".into(),
                units: 88,
                nanos: 10,
            }),
            net_profit: Some(Money {
                currency_code: "EUR".into(),
                units: -12,
                nanos: -340_000_000,
            }),
            profit_decile: 10,
        };
        announced.push(changed.clone());
        let mut tx = pool.begin().await.unwrap();
        feed::append(
            &mut tx,
            &[NewEvent::new(
                tenant,
                "customer",
                c.to_string(),
                "CustomerValueChanged",
                &ValuationEvent {
                    event: Some(valuation_event::Event::CustomerValueChanged(changed)),
                },
            )],
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    drop(conn);

    let erased = CustomerInteractionsErased {
        customer_id: gone.to_string(),
        interaction_count: 1,
        profile_sequence: 99,
    };
    apply(
        &pool,
        &[change(
            3,
            tenant,
            "customer",
            gone.to_string(),
            Event::CustomerInteractionsErased(erased.clone()),
        )],
    )
    .await;
    let left = purchases(&pool, tenant).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, kept);
    let values: Vec<Uuid> =
        sqlx::query_scalar("SELECT customer_id FROM customer_values WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(values, [kept]);

    // The feed: the erased customer's value is reduced to its id, the other
    // one is untouched, and the removal comes last.
    let events = feed::read_after(&pool, tenant, 0, 100).await.unwrap();
    let typed: Vec<(String, String, Option<valuation_event::Event>)> = events
        .iter()
        .map(|ev| {
            (
                ev.event_type.clone(),
                ev.aggregate_id.clone(),
                feed::decode::<ValuationEvent>(ev).and_then(|e| e.event),
            )
        })
        .collect();
    assert_eq!(
        typed,
        [
            (
                "CustomerValueChanged".to_string(),
                gone.to_string(),
                Some(valuation_event::Event::Redacted(RedactedEvent {
                    subject_id: gone.to_string(),
                    reason: RedactionReason::Erased as i32,
                }))
            ),
            (
                "CustomerValueChanged".to_string(),
                kept.to_string(),
                Some(valuation_event::Event::CustomerValueChanged(
                    announced[1].clone()
                ))
            ),
            (
                "CustomerValueRemoved".to_string(),
                gone.to_string(),
                Some(valuation_event::Event::CustomerValueRemoved(
                    CustomerValueRemoved {
                        customer_id: gone.to_string(),
                        reason: ValueRemovalReason::Erased as i32,
                    }
                ))
            ),
        ]
    );
    #[allow(deprecated)]
    let legacy = events[0].payload.clone();
    assert_eq!(legacy, None);
    // Nothing of the value remains: the stored bytes are exactly the
    // redacted envelope.
    let bytes = &events[0].event.as_ref().unwrap().value;
    let redacted = prost::Message::encode_to_vec(&ValuationEvent {
        event: Some(valuation_event::Event::Redacted(RedactedEvent {
            subject_id: gone.to_string(),
            reason: RedactionReason::Erased as i32,
        })),
    });
    assert_eq!(bytes, &redacted);

    // Erasing a customer without a value says nothing on the feed.
    apply(
        &pool,
        &[change(
            4,
            tenant,
            "customer",
            Uuid::new_v4().to_string(),
            Event::CustomerInteractionsErased(CustomerInteractionsErased {
                customer_id: String::new(),
                ..erased
            }),
        )],
    )
    .await;
    assert_eq!(
        feed::read_after(&pool, tenant, 0, 100).await.unwrap().len(),
        3
    );
}

/// A kept summary row, every column.
type KeptRow = (
    Uuid,
    DateTime<Utc>,
    DateTime<Utc>,
    i32,
    i32,
    i32,
    i64,
    Option<String>,
    bool,
    Option<i64>,
    Option<i64>,
    Option<i64>,
);

async fn kept_rows(conn: &mut sqlx::PgConnection, tenant: Uuid) -> Vec<KeptRow> {
    sqlx::query_as(
        "SELECT customer_id, first_time, last_time, first_day, last_day, days, purchases,
                currency, mixed, value_nanos, first_day_value_nanos, margin_nanos
         FROM purchase_summaries WHERE tenant_id = $1 ORDER BY customer_id",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await
    .unwrap()
}

async fn currency_counts(conn: &mut sqlx::PgConnection, tenant: Uuid) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT currency, purchases FROM purchase_currencies
          WHERE tenant_id = $1 AND purchases <> 0 ORDER BY currency",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// The kept summaries and purchases per currency against a rebuild of the
/// tenant from its purchases.
async fn check_kept(pool: &PgPool, tenant: Uuid, step: usize) {
    let mut tx = pool.begin().await.unwrap();
    let kept = kept_rows(&mut tx, tenant).await;
    let counted = currency_counts(&mut tx, tenant).await;
    rapport_valuation::store::summaries::rebuild_tenant(&mut tx, tenant)
        .await
        .unwrap();
    assert_eq!(kept, kept_rows(&mut tx, tenant).await, "after step {step}");
    assert_eq!(
        counted,
        currency_counts(&mut tx, tenant).await,
        "after step {step}"
    );
    tx.rollback().await.unwrap();
}

/// The purchase summaries a fit reads are merged batch by batch as purchases
/// arrive (in any order, several a day, some without an amount, some in
/// another currency, redelivered) and rebuilt for the customers a merge,
/// unmerge or erasure touches: after every batch they equal a rebuild from
/// the purchases.
#[tokio::test]
async fn kept_summaries_equal_a_rebuild_after_every_batch() {
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{RngExt, SeedableRng};

    let (_db, pool) = schema().await;
    let tenant = Uuid::new_v4();
    let mut rng = StdRng::seed_from_u64(7);
    let customers: Vec<Uuid> = (0..12).map(|_| Uuid::new_v4()).collect();
    let start = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let mut purchases: Vec<InteractionRecorded> = (0..400)
        .map(|n| {
            let customer = customers[rng.random_range(0..customers.len())];
            let t = start + chrono::Duration::minutes(rng.random_range(0..60 * 24 * 30));
            let cents: i64 = rng.random_range(-500..50_000);
            let mut r = InteractionRecorded {
                amount: eur(cents / 100, ((cents % 100) * 10_000_000) as i32),
                margin: eur(cents / 400, 0),
                ..recorded(Uuid::now_v7(), customer, customer, t)
            };
            if n % 10 == 0 {
                (r.amount, r.margin) = (None, None);
            }
            // Customer 1 pays in dollars only; customer 2 once in dollars.
            if customer == customers[1] || (customer == customers[2] && n % 3 == 0) {
                for m in [&mut r.amount, &mut r.margin].into_iter().flatten() {
                    m.currency_code = "USD".into();
                }
            }
            r
        })
        .collect();
    purchases.shuffle(&mut rng);
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut step = 0;
    let mut rest = purchases.as_slice();
    while !rest.is_empty() {
        let n = rng.random_range(1..=40).min(rest.len());
        let (batch, tail) = rest.split_at(n);
        rest = tail;
        let mut events: Vec<ChangeEvent> = batch
            .iter()
            .map(|r| {
                change(
                    next(),
                    tenant,
                    "interaction",
                    r.interaction_id.clone(),
                    Event::InteractionRecorded(r.clone()),
                )
            })
            .collect();
        // Redelivered: an event already applied comes again.
        if step % 4 == 3 {
            events.push(events[0].clone());
        }
        let pick = |rng: &mut StdRng| customers[rng.random_range(3..customers.len())];
        let (from, to) = (pick(&mut rng), pick(&mut rng));
        let reassign = |reason: ReassignReason| InteractionsReassigned {
            from_customer_id: from.to_string(),
            to_customer_id: to.to_string(),
            reason: reason as i32,
            ..Default::default()
        };
        match step % 5 {
            1 if from != to => events.push(change(
                next(),
                tenant,
                "customer",
                to.to_string(),
                Event::InteractionsReassigned(reassign(ReassignReason::Merge)),
            )),
            2 if from != to => events.push(change(
                next(),
                tenant,
                "customer",
                to.to_string(),
                Event::InteractionsReassigned(reassign(ReassignReason::Unmerge)),
            )),
            4 => events.push(change(
                next(),
                tenant,
                "customer",
                from.to_string(),
                Event::CustomerInteractionsErased(CustomerInteractionsErased {
                    customer_id: from.to_string(),
                    ..Default::default()
                }),
            )),
            _ => {}
        }
        let mut tx = pool.begin().await.unwrap();
        InteractionFollower
            .apply(&mut tx, tenant, &events)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        check_kept(&pool, tenant, step).await;
        step += 1;
    }
    let rows = kept_rows(&mut pool.acquire().await.unwrap(), tenant).await;
    assert!(rows.len() >= 3, "{rows:?}");
    let of = |c: Uuid| rows.iter().find(|r| r.0 == c).cloned();
    let dollars = of(customers[1]).expect("customer 1 kept");
    assert_eq!((dollars.7.as_deref(), dollars.8), (Some("USD"), false));
    assert!(
        of(customers[2]).expect("customer 2 kept").8,
        "two currencies"
    );
    let euros = of(customers[0]).expect("customer 0 kept");
    assert_eq!((euros.7.as_deref(), euros.8), (Some("EUR"), false));
    assert!(euros.5 > 1 && euros.9.is_some());

    // The audit's measure of drift: none now; an altered summary and count
    // show, and the audit itself changes nothing.
    use rapport_valuation::store::summaries::drift;
    let mut conn = pool.acquire().await.unwrap();
    assert_eq!(drift(&mut conn, tenant).await.unwrap(), (0, 0));
    sqlx::query(
        "UPDATE purchase_summaries SET days = days + 1 WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(customers[0])
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("UPDATE purchase_currencies SET purchases = purchases + 1 WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&mut *conn)
        .await
        .unwrap();
    let (summaries, currencies) = drift(&mut conn, tenant).await.unwrap();
    assert_eq!(summaries, 2, "the altered row, and the rebuilt one");
    assert!(currencies >= 2, "{currencies}");
    assert_eq!(
        drift(&mut conn, tenant).await.unwrap(),
        (summaries, currencies)
    );
}

/// A scoring run's values written with COPY read back exactly as the
/// inserts write them: the same doubles to the bit (extremes included), the
/// same decimals and times.
#[tokio::test]
async fn values_copied_in_read_back_as_inserted() {
    use rapport_valuation::store::{self, ValueRow};

    let (_db, pool) = schema().await;
    let floats = [
        0.1 + 0.2,
        1e-300,
        5e-324,
        f64::MAX,
        -0.0,
        6.202958222014246e-5,
        1.0 / 3.0,
        f64::INFINITY,
    ];
    let score_time = Utc.with_ymd_and_hms(2026, 12, 7, 13, 13, 0).unwrap()
        + chrono::Duration::microseconds(123_457);
    let rows: Vec<ValueRow> = floats
        .iter()
        .enumerate()
        .map(|(i, &f)| ValueRow {
            customer_id: Uuid::from_u128(i as u128 + 1),
            currency_code: "EUR".into(),
            clv: Decimal::new(-1_234_567_890_123, 9),
            p_alive: f,
            expected_purchases: f / 7.0,
            expected_order_value: Decimal::new(35_170_371_266, 9),
            historical_value: Decimal::new(156, 0),
            value_tier: i as i16,
            transaction_model_id: Uuid::from_u128(77),
            spend_model_id: Uuid::from_u128(78),
            score_time,
            horizon_periods: 52,
            period_unit: 2,
            discount_rate: 0.0018282846336430312,
            margin_ratio: f,
            frequency: i as i64,
            recency: f / 3.0,
            t: 1e300,
            net_clv: (i % 2 == 0).then(|| Decimal::new(-7_000_000_001, 9)),
            cost_per_purchase: Some(Decimal::new(12_345, 3)),
            cost_to_serve: (i % 3 == 0).then(|| Decimal::new(999_999_999_999, 9)),
            net_profit: (i % 2 == 1).then(|| Decimal::new(-5, 0)),
            profit_decile: (i % 11) as i16,
        })
        .collect();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let (copied, inserted) = (Uuid::new_v4(), Uuid::new_v4());
    let mut tx = pool.begin().await.unwrap();
    store::copy_values(&mut tx, copied, &rows).await.unwrap();
    store::write_values(&mut tx, inserted, &rows, false)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let read = |tenant| {
        let (pool, ids) = (pool.clone(), ids.clone());
        async move {
            let mut v = store::values_of(&pool, tenant, &ids).await.unwrap();
            v.sort_by_key(|r| r.customer_id);
            v
        }
    };
    let (a, b) = (read(copied).await, read(inserted).await);
    assert_eq!(a.len(), floats.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x.p_alive.to_bits(), y.p_alive.to_bits(), "{x:?}");
        assert_eq!(
            x.expected_purchases.to_bits(),
            y.expected_purchases.to_bits()
        );
        assert_eq!(x.recency.to_bits(), y.recency.to_bits());
        assert_eq!(x.margin_ratio.to_bits(), y.margin_ratio.to_bits());
    }
    assert_eq!(a, b);
    assert_eq!(a, rows);
}

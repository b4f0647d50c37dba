//! The feature projection is kept incrementally: each batch of new
//! interactions is added to the customers' features without reading their
//! history. Property: after any sequence of batches (with redeliveries,
//! ties in time, surveys with one score or both, campaigns sent and
//! answered more than once, status changes of service requests and
//! complaints), the features are exactly those a recomputation from every
//! stored interaction gives.

mod common;

use std::sync::OnceLock;

use chrono::{DateTime, Duration, TimeZone, Utc};
use proptest::prelude::*;
use rapport_segmentation::store::{self, EventRow};
use rust_decimal::Decimal;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

const KINDS: [&str; 13] = [
    "purchase",
    "return",
    "call",
    "email",
    "sales_visit",
    "service_request",
    "complaint",
    "survey_response",
    "campaign_sent",
    "campaign_opened",
    "campaign_clicked",
    "campaign_converted",
    "acme.webinar_attended",
];

#[derive(Debug, Clone)]
struct Ev {
    customer: u128,
    kind: usize,
    day: i64,
    cents: Option<i64>,
    csat: Option<i32>,
    nps: Option<i32>,
    campaign: u128,
    open: bool,
}

fn ev() -> impl Strategy<Value = Ev> {
    (
        0..5u128,
        0..KINDS.len(),
        0..12i64,
        proptest::option::of(0..50_000i64),
        proptest::option::of(1..=5i32),
        proptest::option::of(0..=10i32),
        0..3u128,
        any::<bool>(),
    )
        .prop_map(
            |(customer, kind, day, cents, csat, nps, campaign, open)| Ev {
                customer,
                kind,
                day,
                cents,
                csat,
                nps,
                campaign,
                open,
            },
        )
}

fn row(index: usize, e: &Ev) -> EventRow {
    let kind = KINDS[e.kind];
    let at: DateTime<Utc> = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    EventRow {
        customer_id: Uuid::from_u128(0x1000 + e.customer),
        interaction_id: Uuid::from_u128(0x10_0000 + index as u128),
        kind: kind.into(),
        custom: kind.contains('.'),
        occur_time: at + Duration::days(e.day),
        amount: match kind {
            "purchase" | "return" => e.cents.map(|c| Decimal::new(c, 2)),
            _ => None,
        },
        margin: None,
        csat: (kind == "survey_response").then_some(e.csat).flatten(),
        nps: (kind == "survey_response").then_some(e.nps).flatten(),
        campaign_id: kind
            .starts_with("campaign_")
            .then(|| Uuid::from_u128(0x2000 + e.campaign)),
        open: matches!(kind, "service_request" | "complaint") && e.open,
    }
}

const COLUMNS: &str = "customer_id, purchases, first_purchase, last_purchase, monetary,
    priced_purchases, avg_order_value, contacts, last_contact, open_service_requests, complaints,
    open_complaints, campaign_responses, csat, csat_time, csat_interaction, nps, nps_time,
    nps_interaction, campaigns_sent, campaigns_responded, campaign_response_rate";

async fn features(conn: &mut PgConnection, tenant: Uuid) -> Vec<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT ROW({COLUMNS})::text FROM features WHERE tenant_id = $1 ORDER BY customer_id"
    )))
    .bind(tenant)
    .fetch_all(conn)
    .await
    .unwrap()
}

/// The migrated database shared by the cases (each case its own tenant).
fn database() -> &'static str {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async { common::migrated().await.url })
    })
}

async fn check(
    url: &str,
    events: Vec<Ev>,
    cuts: Vec<usize>,
    again: Vec<(usize, usize)>,
    status: Vec<(usize, bool)>,
) {
    let pool = rapport_kit::db::connect(url, rapport_segmentation::SCHEMA, 1)
        .await
        .unwrap();
    let mut conn = pool.acquire().await.unwrap();
    let conn: &mut PgConnection = &mut conn;
    let tenant = Uuid::new_v4();
    let rows: Vec<EventRow> = events.iter().enumerate().map(|(i, e)| row(i, e)).collect();
    // Consecutive batches at the cuts; redelivered events go again into a
    // later (or the same) batch.
    let mut bounds: Vec<usize> = cuts.into_iter().map(|c| c % (rows.len() + 1)).collect();
    bounds.extend([0, rows.len()]);
    bounds.sort_unstable();
    bounds.dedup();
    let mut batches: Vec<Vec<EventRow>> = bounds
        .windows(2)
        .map(|w| rows[w[0]..w[1]].to_vec())
        .collect();
    for (i, b) in again {
        let i = i % rows.len();
        let first = bounds
            .iter()
            .rposition(|&s| s <= i)
            .unwrap_or(0)
            .min(batches.len() - 1);
        let to = (first + b).min(batches.len() - 1);
        batches[to].push(rows[i].clone());
    }
    for batch in &batches {
        let mut tx = conn.begin().await.unwrap();
        let customers: Vec<Uuid> = batch.iter().map(|r| r.customer_id).collect();
        store::ensure_tenant(&mut tx, tenant).await.unwrap();
        store::ensure_features_many(&mut tx, tenant, &customers)
            .await
            .unwrap();
        store::record_interactions(&mut tx, tenant, batch)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    let changes: Vec<(Uuid, bool)> = status
        .into_iter()
        .map(|(i, open)| (&rows[i % rows.len()], open))
        .filter(|(r, _)| matches!(r.kind.as_str(), "service_request" | "complaint"))
        .map(|(r, open)| (r.interaction_id, open))
        .collect();
    if !changes.is_empty() {
        store::set_open_many(conn, tenant, &changes).await.unwrap();
    }
    let incremental = features(conn, tenant).await;
    let customers: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    store::recompute_summaries(conn, tenant, &customers)
        .await
        .unwrap();
    let recomputed = features(conn, tenant).await;
    assert_eq!(incremental, recomputed);
    counts_agree(conn, tenant).await;
    // Values arrive for some customers, then one customer leaves: the kept
    // counts follow every kind of statement.
    for change in [
        "UPDATE features SET clv = 10 WHERE tenant_id = $1
            AND customer_id IN (SELECT customer_id FROM features WHERE tenant_id = $1
                                 ORDER BY customer_id LIMIT 2)",
        "DELETE FROM features WHERE tenant_id = $1
            AND customer_id = (SELECT customer_id FROM features WHERE tenant_id = $1
                                ORDER BY customer_id LIMIT 1)",
    ] {
        sqlx::query(change)
            .bind(tenant)
            .execute(&mut *conn)
            .await
            .unwrap();
        counts_agree(conn, tenant).await;
    }
}

/// The counts of customers with a CLV and with a monetary value that the
/// triggers keep are those of the features.
async fn counts_agree(conn: &mut PgConnection, tenant: Uuid) {
    let (kept_clv, kept_monetary, clv, monetary): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT coalesce(max(clv_n), 0) FROM feature_counts WHERE tenant_id = $1),
                (SELECT coalesce(max(monetary_n), 0) FROM feature_counts WHERE tenant_id = $1),
                (SELECT count(clv) FROM features WHERE tenant_id = $1),
                (SELECT count(monetary) FROM features WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await
    .unwrap();
    assert_eq!(
        (kept_clv, kept_monetary),
        (clv, monetary),
        "kept (clv, monetary) counts against the features"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
    #[test]
    fn incremental_features_equal_a_recomputation(
        events in proptest::collection::vec(ev(), 1..60),
        cuts in proptest::collection::vec(0..60usize, 0..6),
        again in proptest::collection::vec((0..60usize, 0..3usize), 0..8),
        status in proptest::collection::vec((0..60usize, any::<bool>()), 0..8),
    ) {
        let url = database();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(check(url, events, cuts, again, status));
    }
}

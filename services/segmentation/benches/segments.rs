//! Segment evaluation benchmark of the segmentation service.
//!
//! 1. Fills `features` with N projected customers (default 1,000,000;
//!    `RAPPORT_BENCH_CUSTOMERS`) and `events` with up to three purchases
//!    each, by SQL `generate_series`, in a throwaway database.
//! 2. PreviewSegment's path (rule parse, type check, SQL compilation, count
//!    and random sample through `store::preview`, customer count) for a
//!    five-condition rule, beside the equivalent hand-written SQL.
//! 3. RefreshSegment's path (`engine::refresh`: segment lock, evaluation,
//!    diff against the stored membership, change log, feed events) for a
//!    segment with that rule: the first full evaluation, then a refresh after
//!    20,000 customers changed, and one with nothing changed; each beside a hand-written SQL diff doing
//!    the same writes on a second membership set.
//! 4. For information, the same for a rule with an aggregate over `events`.
//!
//! Runs on a throwaway PostgreSQL (`RAPPORT_TEST_DATABASE_URL`, or one the
//! test kit starts). `cargo bench -p rapport-segmentation --bench segments`.

use std::time::{Duration, Instant};

use chrono::Utc;
use rapport_proto::rapport::segmentation::v1::MembershipChangeReason;
use rapport_segmentation::{engine, rule, store};
use sqlx::{PgPool, Row};
use uuid::Uuid;

const RULE: &str = "purchases >= 3 and last_purchase within 180d and clv > 500 \
                    and country in [\"ES\", \"MX\", \"FR\"] and p_alive >= 0.5";

const HAND_CONDITION: &str = "f.purchases >= 3 AND f.last_purchase >= now() - interval '180 days' \
     AND f.last_purchase <= now() AND f.clv > 500 AND f.country = ANY(ARRAY['ES','MX','FR']) \
     AND f.p_alive >= 0.5";

const AGG_RULE: &str = "sum(purchase.amount, 365d) > 1000 and country = \"ES\"";

const HAND_AGG_CONDITION: &str = "f.country = 'ES' AND (SELECT coalesce(sum(e.amount), 0) FROM events e \
     WHERE e.tenant_id = f.tenant_id AND e.customer_id = f.customer_id AND e.type = 'purchase' \
     AND e.occur_time > now() - interval '365 days' AND e.occur_time <= now()) > 1000";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn ratio(a: Duration, b: Duration) -> String {
    format!("{:.2}x", a.as_secs_f64() / b.as_secs_f64().max(1e-9))
}

/// The best of `runs` timings (after one warm-up run), with its result.
async fn best<T, F, Fut>(runs: usize, mut f: F) -> (Duration, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut out = f().await;
    let mut best = Duration::MAX;
    for _ in 0..runs {
        let t = Instant::now();
        out = f().await;
        best = best.min(t.elapsed());
    }
    (best, out)
}

async fn fill(pool: &PgPool, tenant: Uuid, n: usize) {
    let t = Instant::now();
    sqlx::query("INSERT INTO tenants (tenant_id, currency_code, rfm_compute_time) VALUES ($1, 'EUR', now())")
        .bind(tenant)
        .execute(pool)
        .await
        .expect("tenant");
    sqlx::query(
        "INSERT INTO features (tenant_id, customer_id, kind, country, tags, purchases, monetary,
             avg_order_value, first_purchase, last_purchase, contacts, nps, clv, p_alive,
             expected_purchases, value_tier, consents)
         SELECT $1, md5('customer-' || i)::uuid,
                CASE WHEN i % 10 = 0 THEN 'organization' ELSE 'person' END,
                (ARRAY['ES','MX','FR','DE','US','GB','IT','BR','AR','PT'])[1 + (i * 7) % 10],
                CASE WHEN i % 7 = 0 THEN ARRAY['vip'] ELSE '{}'::text[] END,
                p,
                CASE WHEN p > 0 THEN m END,
                CASE WHEN p > 0 THEN round(m / p, 2) END,
                CASE WHEN p > 0 THEN now() - (r1 * 720 + r2 * 720) * interval '1 day' END,
                CASE WHEN p > 0 THEN now() - r1 * 720 * interval '1 day' END,
                (i % 5),
                CASE WHEN r2 < 0.6 THEN (r2 * 16)::int END,
                CASE WHEN p > 0 AND r3 > 0.1 THEN round(m * (0.5 + r3), 2) END,
                CASE WHEN p > 0 THEN round(r3::numeric, 3) END,
                CASE WHEN p > 0 THEN round((r3 * 5)::numeric, 2) END,
                CASE WHEN p > 0 THEN (ARRAY['low','medium','high','top'])[1 + (r3 * 3.99)::int] END,
                CASE WHEN i % 3 = 0 THEN '{\"email:marketing\": {\"granted\": true, \"time\": \"2025-01-01T00:00:00Z\"}}'::jsonb
                     ELSE '{}'::jsonb END
         FROM (SELECT i,
                      (abs(hashint4(i)) % 13) AS p,
                      round(((abs(hashint4(i + 1)) % 200000) / 100.0)::numeric, 2) AS m,
                      (abs(hashint4(i + 2)) % 1000) / 1000.0 AS r1,
                      (abs(hashint4(i + 3)) % 1000) / 1000.0 AS r2,
                      (abs(hashint4(i + 4)) % 1000) / 1000.0 AS r3
               FROM generate_series(1, $2::int) AS i) g",
    )
    .bind(tenant)
    .bind(n as i32)
    .execute(pool)
    .await
    .expect("features");
    sqlx::query(
        "INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount)
         SELECT f.tenant_id, f.customer_id, md5(f.customer_id::text || k)::uuid, 'purchase',
                f.last_purchase - (k - 1) * interval '45 days', round(f.monetary / f.purchases, 2)
         FROM features f, generate_series(1, 3) AS k
         WHERE f.tenant_id = $1 AND k <= f.purchases",
    )
    .bind(tenant)
    .execute(pool)
    .await
    .expect("events");
    for table in ["features", "events"] {
        sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM ANALYZE {table}")))
            .execute(pool)
            .await
            .expect("analyze");
    }
    let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count");
    println!(
        "filled {n} customers and {events} purchase events in {}",
        ms(t.elapsed())
    );
}

/// The hand-written refresh: the same diff and writes as the service's, on
/// another membership set.
async fn hand_refresh(pool: &PgPool, tenant: Uuid, segment: Uuid, condition: &str) -> (i64, i64) {
    let sql = format!(
        "WITH target AS MATERIALIZED (
             SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND {condition}),
         gone AS (
             DELETE FROM memberships m WHERE m.tenant_id = $1 AND m.segment_id = $2
               AND NOT EXISTS (SELECT 1 FROM target t WHERE t.customer_id = m.customer_id)
             RETURNING m.customer_id),
         came AS (
             INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
             SELECT $1, $2, t.customer_id, now() FROM target t
             WHERE NOT EXISTS (SELECT 1 FROM memberships m
                               WHERE m.tenant_id = $1 AND m.segment_id = $2 AND m.customer_id = t.customer_id)
             RETURNING customer_id),
         log AS (
             INSERT INTO membership_log (tenant_id, segment_id, segment_name, customer_id, entered, reason, change_time)
             SELECT $1, $2, 'hand', customer_id, true, 3, now() FROM came
             UNION ALL SELECT $1, $2, 'hand', customer_id, false, 3, now() FROM gone
             RETURNING entered)
         SELECT count(*) FILTER (WHERE entered), count(*) FILTER (WHERE NOT entered) FROM log"
    );
    let mut tx = pool.begin().await.expect("begin");
    // As the service does: the planner's estimates can make the anti-joins
    // nested loops, quadratic in the members.
    sqlx::query("SET LOCAL enable_nestloop = off")
        .execute(&mut *tx)
        .await
        .expect("set");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(segment)
        .fetch_one(&mut *tx)
        .await
        .expect("hand refresh");
    tx.commit().await.expect("commit");
    (row.get(0), row.get(1))
}

async fn hand_preview(pool: &PgPool, tenant: Uuid, condition: &str) -> (i64, usize) {
    let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM features f WHERE f.tenant_id = $1 AND {condition}"
    )))
    .bind(tenant)
    .fetch_one(pool)
    .await
    .expect("hand count");
    let sample: Vec<Uuid> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT f.customer_id FROM features f WHERE f.tenant_id = $1 AND {condition}
         ORDER BY random() LIMIT 10"
    )))
    .bind(tenant)
    .fetch_all(pool)
    .await
    .expect("hand sample");
    (count, sample.len())
}

/// PreviewSegment's path: parse, check, compile, count + sample, customer count.
async fn service_preview(pool: &PgPool, tenant: Uuid, text: &str) -> (i64, usize) {
    let mut conn = pool.acquire().await.expect("conn");
    let catalog = engine::catalog(&mut conn, tenant).await.expect("catalog");
    let expr = rule::parse(text).expect("rule parses");
    rule::check(&expr, &catalog).expect("rule checks");
    let sql = rule::compile_sql(&expr, &catalog, Utc::now());
    let (count, sample) = store::preview(&mut conn, tenant, &sql, 10)
        .await
        .expect("preview");
    store::customer_count(&mut conn, tenant)
        .await
        .expect("customers");
    (count, sample.len())
}

async fn segment(pool: &PgPool, tenant: Uuid, name: &str, text: &str) -> Uuid {
    let expr = rule::parse(text).expect("rule parses");
    let id = Uuid::now_v7();
    let mut conn = pool.acquire().await.expect("conn");
    store::insert_segment(
        &mut conn,
        tenant,
        &store::NewSegment {
            segment_id: id,
            name: name.into(),
            description: String::new(),
            kind: "dynamic",
            marketing_approach: 0,
            rule: Some(engine::encode_rule(&expr)),
            refresh_interval_seconds: None,
        },
    )
    .await
    .expect("segment");
    id
}

async fn service_refresh(pool: &PgPool, tenant: Uuid, segment: Uuid) -> (i64, i64) {
    match engine::refresh(pool, tenant, segment, MembershipChangeReason::Refresh).await {
        Ok(r) => (r.entered, r.exited),
        Err(e) => panic!("refresh failed: {e:?}"),
    }
}

async fn run() {
    let n = env_usize("RAPPORT_BENCH_CUSTOMERS", 1_000_000);
    let db = rapport_testkit::database().await;
    rapport_kit::db::migrate(
        &db.url,
        rapport_segmentation::SCHEMA,
        &rapport_segmentation::MIGRATOR,
    )
    .await
    .expect("migrations");
    let pool = rapport_kit::db::connect(&db.url, rapport_segmentation::SCHEMA, 4)
        .await
        .expect("pool");
    let tenant = Uuid::new_v4();
    fill(&pool, tenant, n).await;

    println!("\nrule: {RULE}");
    {
        let mut conn = pool.acquire().await.expect("conn");
        let catalog = engine::catalog(&mut conn, tenant).await.expect("catalog");
        let expr = rule::parse(RULE).expect("rule parses");
        println!(
            "compiled: {}",
            rule::compile_sql(&expr, &catalog, Utc::now()).condition
        );
    }
    // Preview.
    let (svc, (count, sample)) = best(3, || service_preview(&pool, tenant, RULE)).await;
    let (hand, (hcount, _)) = best(3, || hand_preview(&pool, tenant, HAND_CONDITION)).await;
    assert_eq!(count, hcount, "the service and the hand-written SQL agree");
    println!(
        "preview  (count {count}, sample {sample}): service {}  hand-written SQL {}  ratio {}  [target < 1 s]",
        ms(svc),
        ms(hand),
        ratio(svc, hand)
    );

    // First full evaluation.
    let seg = segment(&pool, tenant, "Bench", RULE).await;
    let hand_seg = Uuid::now_v7();
    let t = Instant::now();
    let (entered, _) = service_refresh(&pool, tenant, seg).await;
    let svc_first = t.elapsed();
    let t = Instant::now();
    let (hentered, _) = hand_refresh(&pool, tenant, hand_seg, HAND_CONDITION).await;
    let hand_first = t.elapsed();
    assert_eq!(entered, hentered);
    println!(
        "refresh, first evaluation ({entered} entered): service {}  hand-written SQL {}  ratio {}",
        ms(svc_first),
        ms(hand_first),
        ratio(svc_first, hand_first)
    );

    // Some members stop qualifying, some customers start; refresh again.
    sqlx::query(
        "UPDATE features SET p_alive = 0.1
         WHERE tenant_id = $1 AND customer_id IN (
             SELECT customer_id FROM memberships WHERE tenant_id = $1 AND segment_id = $2 LIMIT 5000)",
    )
    .bind(tenant)
    .bind(seg)
    .execute(&pool)
    .await
    .expect("changes");
    sqlx::query(
        "UPDATE features SET last_purchase = now() - interval '1 day', p_alive = 0.9
         WHERE tenant_id = $1 AND customer_id IN (
             SELECT customer_id FROM features WHERE tenant_id = $1 AND purchases >= 3
               AND clv > 500 AND country IN ('ES', 'MX', 'FR') AND last_purchase < now() - interval '200 days'
             LIMIT 15000)",
    )
    .bind(tenant)
    .execute(&pool)
    .await
    .expect("changes");
    sqlx::query("ANALYZE features")
        .execute(&pool)
        .await
        .expect("analyze");
    let t = Instant::now();
    let (en, ex) = service_refresh(&pool, tenant, seg).await;
    let svc_refresh = t.elapsed();
    let t = Instant::now();
    let (hen, hex) = hand_refresh(&pool, tenant, hand_seg, HAND_CONDITION).await;
    let hand_refresh_t = t.elapsed();
    assert_eq!((en, ex), (hen, hex));
    println!(
        "refresh after changes ({en} entered, {ex} exited): service {}  hand-written SQL {}  ratio {}  [target < 2 s]",
        ms(svc_refresh),
        ms(hand_refresh_t),
        ratio(svc_refresh, hand_refresh_t)
    );
    // Steady state: nothing changed.
    let (svc_idle, _) = best(2, || service_refresh(&pool, tenant, seg)).await;
    let (hand_idle, _) = best(2, || hand_refresh(&pool, tenant, hand_seg, HAND_CONDITION)).await;
    println!(
        "refresh, nothing changed: service {}  hand-written SQL {}  ratio {}  [target < 2 s]",
        ms(svc_idle),
        ms(hand_idle),
        ratio(svc_idle, hand_idle)
    );

    // An aggregate rule, for information.
    println!("\nrule: {AGG_RULE}");
    let (svc, (count, _)) = best(1, || service_preview(&pool, tenant, AGG_RULE)).await;
    let (hand, (hcount, _)) = best(1, || hand_preview(&pool, tenant, HAND_AGG_CONDITION)).await;
    assert_eq!(count, hcount, "the service and the hand-written SQL agree");
    println!(
        "preview  (count {count}): service {}  hand-written SQL {}  ratio {}",
        ms(svc),
        ms(hand),
        ratio(svc, hand)
    );
    let agg = segment(&pool, tenant, "Bench aggregate", AGG_RULE).await;
    let agg_hand = Uuid::now_v7();
    let t = Instant::now();
    let (entered, _) = service_refresh(&pool, tenant, agg).await;
    let svc_t = t.elapsed();
    let t = Instant::now();
    let (hentered, _) = hand_refresh(&pool, tenant, agg_hand, HAND_AGG_CONDITION).await;
    let hand_t = t.elapsed();
    assert_eq!(entered, hentered);
    println!(
        "refresh, first evaluation ({entered} entered): service {}  hand-written SQL {}  ratio {}",
        ms(svc_t),
        ms(hand_t),
        ratio(svc_t, hand_t)
    );

    // The feed path: one customer's features changed (a purchase arrived):
    // rescoring, reclassification and re-evaluation of the tenant's dynamic
    // segments (the two above), as each feed event does. Rolled back.
    let customer: Uuid = sqlx::query_scalar(
        "SELECT customer_id FROM features WHERE tenant_id = $1 AND purchases >= 3 LIMIT 1",
    )
    .bind(tenant)
    .fetch_one(&pool)
    .await
    .expect("a customer");
    let (feed, _) = best(3, || async {
        let mut tx = pool.begin().await.expect("begin");
        store::recompute_summary(&mut tx, tenant, customer)
            .await
            .expect("summary");
        engine::customer_changed(
            &mut tx,
            tenant,
            customer,
            true,
            MembershipChangeReason::FeaturesChanged,
            Utc::now(),
        )
        .await
        .expect("customer changed");
        tx.rollback().await.expect("rollback");
    })
    .await;
    println!(
        "\nfeed event applied for one customer (summary, RFM, classification, 2 dynamic segments): {}",
        ms(feed)
    );
    pool.close().await;
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

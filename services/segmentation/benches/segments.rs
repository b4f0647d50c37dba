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
use rapport_segmentation::synthetic::{
    AGG_RULE, HAND_AGG_CONDITION, HAND_CONDITION, RULE, change_members,
};
use rapport_segmentation::{engine, rule, store, synthetic};
use sqlx::PgPool;
use uuid::Uuid;

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
            kind: store::Kind::Dynamic,
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
    let db = rapport_testkit::migrated(&[rapport_testkit::service!(rapport_segmentation)]).await;
    let pool = rapport_kit::db::connect(&db.url, rapport_segmentation::SCHEMA, 4)
        .await
        .expect("pool");
    let tenant = Uuid::new_v4();
    let t = Instant::now();
    let events = synthetic::fill(&pool, tenant, n).await.expect("fill");
    println!(
        "filled {n} customers and {events} purchase events in {}",
        ms(t.elapsed())
    );

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
    let (hand, (hcount, _)) = best(3, || async {
        synthetic::hand_preview(&pool, tenant, HAND_CONDITION)
            .await
            .expect("hand preview")
    })
    .await;
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
    let (hentered, _) = synthetic::hand_refresh(&pool, tenant, hand_seg, HAND_CONDITION)
        .await
        .expect("hand refresh");
    let hand_first = t.elapsed();
    assert_eq!(entered, hentered);
    println!(
        "refresh, first evaluation ({entered} entered): service {}  hand-written SQL {}  ratio {}",
        ms(svc_first),
        ms(hand_first),
        ratio(svc_first, hand_first)
    );

    // Some members stop qualifying, some customers start; refresh again.
    change_members(&pool, tenant, seg).await.expect("changes");
    let t = Instant::now();
    let (en, ex) = service_refresh(&pool, tenant, seg).await;
    let svc_refresh = t.elapsed();
    let t = Instant::now();
    let (hen, hex) = synthetic::hand_refresh(&pool, tenant, hand_seg, HAND_CONDITION)
        .await
        .expect("hand refresh");
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
    let (hand_idle, _) = best(2, || async {
        synthetic::hand_refresh(&pool, tenant, hand_seg, HAND_CONDITION)
            .await
            .expect("hand refresh")
    })
    .await;
    println!(
        "refresh, nothing changed: service {}  hand-written SQL {}  ratio {}  [target < 2 s]",
        ms(svc_idle),
        ms(hand_idle),
        ratio(svc_idle, hand_idle)
    );

    // An aggregate rule, for information.
    println!("\nrule: {AGG_RULE}");
    let (svc, (count, _)) = best(1, || service_preview(&pool, tenant, AGG_RULE)).await;
    let (hand, (hcount, _)) = best(1, || async {
        synthetic::hand_preview(&pool, tenant, HAND_AGG_CONDITION)
            .await
            .expect("hand preview")
    })
    .await;
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
    let (hentered, _) = synthetic::hand_refresh(&pool, tenant, agg_hand, HAND_AGG_CONDITION)
        .await
        .expect("hand refresh");
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
        store::recompute_summaries(&mut tx, tenant, &[customer])
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

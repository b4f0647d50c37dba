//! A timing run, ignored by default: N synthetic customers (default
//! 100,000; RAPPORT_SCALE_CUSTOMERS) ingested through the interaction
//! service, then FitModel and ScoreCustomers timed over real gRPC.
//!
//!     cargo test -p rapport-valuation --test scale -- --ignored --nocapture

mod common;

use chrono::{Duration, DurationRound, Utc};
use common::*;
use rapport_proto::rapport::valuation::v1::*;
use uuid::Uuid;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a timing run; minutes in debug builds"]
async fn score_a_large_customer_base() {
    let n: usize = std::env::var("RAPPORT_SCALE_CUSTOMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let s = start(false).await;
    let mut v = s.valuation();
    let tenant = Uuid::new_v4();
    let today = Utc::now().duration_trunc(Duration::days(1)).unwrap();
    let interactions: Vec<_> = synthetic(n, 5, today)
        .into_iter()
        .flat_map(|c| c.purchases)
        .collect();
    let started = std::time::Instant::now();
    for chunk in interactions.chunks(50_000) {
        record_all(&s, tenant, chunk.to_vec()).await;
    }
    eprintln!(
        "ingested {} interactions in {:?}",
        interactions.len(),
        started.elapsed()
    );
    for kind in [ModelKind::BgNbd, ModelKind::GammaGamma] {
        let started = std::time::Instant::now();
        let m = fitted(&mut v, tenant, weekly_fit(kind, ts(Utc::now()))).await;
        eprintln!("{kind:?} fit (export included) in {:?}", started.elapsed());
        assert!(m.active);
    }
    let started = std::time::Instant::now();
    let run = v
        .score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .answer();
    eprintln!(
        "ScoreCustomers over {} customers in {:?}",
        run.scored_customer_count,
        started.elapsed()
    );
    assert_eq!(run.scored_customer_count, n as i64);
    let started = std::time::Instant::now();
    let again = v
        .score_customers(req(tenant, ScoreCustomersRequest::default()))
        .await
        .answer();
    eprintln!("second ScoreCustomers in {:?}", started.elapsed());
    assert_eq!(again.scored_customer_count, n as i64);
}

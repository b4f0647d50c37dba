//! Background work: segments due for their refresh interval, the hourly RFM
//! and classification computation of every tenant, and the 400-day retention
//! of the membership change log. Safe with several replicas: each refresh
//! locks its segment row and looks at `next_refresh_time` again.

use std::time::Duration;

use chrono::Utc;
use rapport_kit::shutdown::Shutdown;
use rapport_proto::rapport::segmentation::v1::MembershipChangeReason;
use sqlx::PgPool;

use crate::engine::{self, RefreshError};
use crate::store;

/// How often due segments are looked for.
const TICK: Duration = Duration::from_secs(2);

/// Runs until `shutdown`.
pub async fn run(pool: PgPool, shutdown: Shutdown) {
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.wait() => return,
        }
        if let Err(e) = refresh_due(&pool).await {
            tracing::warn!(error = %e, "scheduled refreshes failed; retrying");
        }
        // Every minute: tenants whose RFM scores are an hour old.
        if ticks.is_multiple_of(30)
            && let Err(e) = recompute_due(&pool).await
        {
            tracing::warn!(error = %e, "hourly RFM and classification failed; retrying");
        }
        // Every hour: retention.
        if ticks.is_multiple_of(1800) {
            let run = async {
                let mut conn = pool.acquire().await?;
                store::prune_log(&mut conn, Utc::now() - chrono::Duration::days(400)).await
            };
            if let Err(e) = run.await {
                tracing::warn!(error = %e, "pruning the membership log failed");
            }
        }
        ticks += 1;
    }
}

/// Refreshes the segments whose `next_refresh_time` has passed.
pub async fn refresh_due(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let due = {
        let mut conn = pool.acquire().await?;
        store::due_segments(&mut conn, Utc::now(), 20).await?
    };
    let mut n = 0;
    for (tenant, segment) in due {
        // Another replica may have refreshed it meanwhile: look again.
        let still_due = {
            let mut conn = pool.acquire().await?;
            store::segment(&mut conn, tenant, segment, false)
                .await?
                .and_then(|s| s.next_refresh_time)
                .is_some_and(|t| t <= Utc::now())
        };
        if !still_due {
            continue;
        }
        match engine::refresh(pool, tenant, segment, MembershipChangeReason::Refresh).await {
            Ok(_) => n += 1,
            Err(RefreshError::NotFound | RefreshError::Static) => {}
            Err(RefreshError::Db(e)) => return Err(e),
        }
    }
    Ok(n)
}

/// Recomputes RFM scores and classifications of tenants an hour old.
pub async fn recompute_due(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let tenants = {
        let mut conn = pool.acquire().await?;
        store::tenants_due(&mut conn, Utc::now() - chrono::Duration::hours(1)).await?
    };
    for t in &tenants {
        let mut tx = pool.begin().await?;
        store::lock_tenant(&mut tx, *t).await?;
        engine::recompute_tenant(&mut tx, *t, Utc::now()).await?;
        tx.commit().await?;
    }
    Ok(tenants.len())
}

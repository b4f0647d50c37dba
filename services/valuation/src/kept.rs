//! Reading the purchase summaries kept from the interaction feed (see
//! `domain::kept` and `store::summaries`) in place of the interaction
//! service's export, when they hold exactly what the export would: a fit
//! or a scoring run over the whole tenant (or a cohort), in UTC, without a
//! holdout, for a model that counts purchase days.
//!
//! Exactly means: every event the interaction feed held when the read began
//! has been applied here (the read asks the interaction service for its
//! feed's head and waits briefly for the consumer to reach it), no purchase
//! is at or after the end of the window, and no customer has amounts in two
//! currencies. Otherwise the caller exports.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rapport_kit::context::CallContext;
use rapport_kit::copy::CopyError;
use rapport_kit::error::ApiError;
use rapport_kit::feed::Consumer;
use sqlx::PgPool;

use crate::domain::kept::KeptRow;
use crate::follow::INTERACTION_CURSOR;
use crate::peers::Interaction;
use crate::store::summaries;

/// How long a read waits for the interaction feed's consumer to apply what
/// the feed held when the read began, before the caller exports instead.
const CATCH_UP: Duration = Duration::from_secs(2);

/// What a read over the kept summaries takes.
#[derive(Debug, Clone)]
pub struct Read<'a> {
    /// The end of the window (exclusive).
    pub end: DateTime<Utc>,
    /// The currency of the values; empty for the tenant's main currency.
    pub currency: &'a str,
    /// Only customers whose first purchase is in `[start, end)`.
    pub cohort: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Whether rows carry the customer id and margin (scoring), or only
    /// what a fit takes.
    pub full: bool,
}

/// Hands every kept summary of the call's tenant to `each` and returns the
/// currency of the values, or None when the summaries cannot stand in for
/// the export (the caller then discards whatever `each` received, and
/// exports).
pub async fn read(
    pool: &PgPool,
    interaction: &Interaction,
    ctx: &CallContext,
    r: Read<'_>,
    each: impl FnMut(KeptRow),
) -> Result<Option<String>, ApiError> {
    let tenant = ctx.tenant_id;
    let head = interaction.feed_head(ctx).await?;
    let started = Instant::now();
    while Consumer::cursor(pool, INTERACTION_CURSOR, tenant).await? < head {
        if started.elapsed() > CATCH_UP {
            tracing::info!(
                head,
                "the interaction feed is not applied yet; reading the export"
            );
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let (latest, main) = summaries::fit_state(&mut tx, tenant).await?;
    if latest.is_none_or(|l| l >= r.end) {
        return Ok(None);
    }
    let currency = match (r.currency, main) {
        ("", Some(main)) => main,
        ("", None) => return Ok(None),
        (c, _) => c.to_string(),
    };
    let read = summaries::for_each_summary(&mut tx, tenant, &currency, r.cohort, r.full, each)
        .await
        .map_err(|e| match e {
            CopyError::Database(e) => ApiError::from(e),
            e => ApiError::internal(e),
        })?;
    tx.commit().await?;
    if read.is_err() {
        tracing::info!("a kept summary has amounts in several currencies; reading the export");
        return Ok(None);
    }
    Ok(Some(currency))
}

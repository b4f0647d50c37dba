//! The tenant's classification: RFM scores rescored when due, and the
//! classification policy changed (then every customer reclassified in the
//! background). Each use case owns its transaction under the tenant's lock.

use chrono::{DateTime, Utc};
use rapport_kit::error::{ApiError, Violations};
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::segmentation::v1::{self as pb, segmentation_event};
use serde_json::Value;
use sqlx::PgPool;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::policy;
use crate::engine;
use crate::segments::envelope;
use crate::store;

/// When the tenant's RFM scores are due for a recomputation, runs it in a
/// writer's transaction of its own, unless another writer (a feed consumer,
/// a refresh) holds the tenant: a read never waits on one, and then reports
/// the scores as they are.
pub async fn rescore_if_due(
    pool: &PgPool,
    tenant: Uuid,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let state = store::rfm_state(&mut tx, tenant).await?;
    if engine::rfm_due(&state, now) && store::try_lock_tenant(&mut tx, tenant).await? {
        engine::recompute_tenant(&mut tx, tenant, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// UpdateClassificationPolicy: applies the masked fields of `update` to the
/// tenant's overrides, appends ClassificationPolicyUpdated, and starts the
/// reclassification of every customer in the background. Returns the
/// overrides, their version and the time of the change.
pub async fn update_policy(
    pool: &PgPool,
    tenant: Uuid,
    update: &pb::ClassificationPolicy,
    paths: &[String],
) -> Result<(serde_json::Map<String, Value>, i64, DateTime<Utc>), ApiError> {
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let (mut overrides, version, _) = store::policy(&mut tx, tenant, true).await?;
    if !update.etag.is_empty() && update.etag != policy::etag(version) {
        return Err(ApiError::Aborted(format!(
            "the policy changed since etag {:?} (now {:?}): get it again and retry",
            update.etag,
            policy::etag(version)
        )));
    }
    let changed = match policy::apply_update(&mut overrides, update, paths) {
        Ok(c) => c,
        Err(problems) => {
            let mut v = Violations::new();
            for (f, d) in problems {
                v.add(f, d);
            }
            return Err(v
                .finish()
                .err()
                .unwrap_or_else(|| ApiError::invalid("update_mask", "invalid")));
        }
    };
    let (version, time) = store::save_policy(&mut tx, tenant, &overrides).await?;
    feed::append(
        &mut tx,
        &[NewEvent::new(
            tenant,
            "classification_policy",
            tenant.to_string(),
            "ClassificationPolicyUpdated",
            &envelope(segmentation_event::Event::ClassificationPolicyUpdated(
                pb::ClassificationPolicyUpdated {
                    changed_fields: changed,
                    etag: policy::etag(version),
                },
            )),
        )],
    )
    .await?;
    tx.commit().await?;
    let background = pool.clone();
    tokio::spawn(
        async move {
            if let Err(e) = reclassify(&background, tenant).await {
                tracing::warn!(error = %e, "reclassification after a policy update failed; the hourly run will retry");
            }
        }
        .instrument(tracing::Span::current()),
    );
    Ok((overrides, version, time))
}

/// Classifies every customer of the tenant again and re-evaluates the
/// segments of those whose classification changed.
pub async fn reclassify(pool: &PgPool, tenant: Uuid) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    store::lock_tenant(&mut tx, tenant).await?;
    let now = Utc::now();
    let changed = engine::classify(&mut tx, tenant, None, now).await?;
    engine::reevaluate_changed(&mut tx, tenant, &changed, now).await?;
    tx.commit().await
}

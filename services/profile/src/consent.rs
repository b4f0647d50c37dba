//! SetConsent: owns its transaction. The record is appended to the holder's
//! history (the customer a merge chain ends at), and ConsentChanged is
//! appended only when the status in force changed.

use rapport_kit::ApiError;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::{Result, customer_not_found};
use crate::store::{self, ConsentInput, ConsentRow, RequestKey};

/// SetConsent: appends a record; returns it and whether the status in force
/// changed. A retry with the same request id answers the same.
pub async fn set(
    pool: &PgPool,
    tenant: Uuid,
    principal: &str,
    c: &ConsentInput,
    key: Option<&RequestKey>,
) -> Result<(ConsentRow, bool)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = store::claim(&mut tx, tenant, "SetConsent", key).await? {
        let id = first["consent_record_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without record"))?;
        let row = store::consent_record(&mut tx, tenant, id).await?;
        tx.rollback().await?;
        let row = row.ok_or_else(|| customer_not_found(c.customer))?;
        return Ok((row, first["changed"].as_bool().unwrap_or(false)));
    }
    let holder = store::lock_following(&mut tx, tenant, c.customer)
        .await?
        .customer_id;
    let key_of = (c.channel, c.purpose);
    let before = store::in_force(&mut tx, tenant, holder)
        .await?
        .remove(&key_of);
    let now = store::now(&mut tx).await?;
    let row = store::insert_consent(
        &mut tx,
        tenant,
        holder,
        holder,
        c.channel,
        c.purpose,
        c.status,
        &c.source,
        &c.evidence,
        c.effective_time.unwrap_or(now),
        principal,
    )
    .await?;
    let after = store::in_force(&mut tx, tenant, holder)
        .await?
        .remove(&key_of);
    let previous = before.as_ref().map_or(0, |b| i32::from(b.status));
    let changed = after.as_ref().is_some_and(|a| {
        a.consent_record_id == row.consent_record_id && i32::from(row.status) != previous
    });
    store::touch(&mut tx, tenant, &[holder]).await?;
    if changed {
        store::append(&mut tx, vec![store::consent_event(tenant, &row, previous)]).await?;
    }
    store::remember(
        &mut tx,
        tenant,
        "SetConsent",
        key,
        json!({"consent_record_id": row.consent_record_id.to_string(), "changed": changed}),
        &[holder],
    )
    .await?;
    tx.commit().await?;
    Ok((row, changed))
}

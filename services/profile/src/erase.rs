//! EraseCustomer: owns its transaction. Every piece of personal data of the
//! customer and of the customers merged into it goes, tombstones stay, the
//! feed events about them or mentioning them are redacted
//! (`domain::erase` decides which and why), and CustomerErased is appended
//! for each, all at once.

use chrono::{DateTime, Utc};
use rapport_kit::convert::timestamp;
use rapport_kit::feed;
use rapport_proto::rapport::common::v1::RedactionReason;
use rapport_proto::rapport::profile::v1 as ev;
use rapport_proto::rapport::profile::v1::ProfileEvent;
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::erase::{erasure_redactions, needles};
use crate::error::{Result, customer_not_found, precondition};
use crate::store::{self, CustomerStatus};

/// EraseCustomer: returns the erased merged ids and the erase time. Erasing
/// an erased customer answers with its first erase time.
pub async fn erase(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    reference: &str,
) -> Result<(Vec<Uuid>, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    let r = match store::lock_row(&mut tx, tenant, id).await? {
        Some(r) => r,
        None => return Err(customer_not_found(id)),
    };
    if r.status == CustomerStatus::Erased {
        tx.rollback().await?;
        return Ok((Vec::new(), r.erase_time.unwrap_or(r.update_time)));
    }
    if r.status == CustomerStatus::Merged {
        let survivor = store::chain_end(&mut tx, tenant, id).await?;
        return Err(precondition(format!(
            "customer {id} was merged into customer {survivor}: erase the survivor (which erases {id} too), or unmerge {id} first"
        )));
    }
    let merged = store::merged_into_each(&mut tx, tenant, &[id])
        .await?
        .remove(&id)
        .unwrap_or_default();
    let mut all = vec![id];
    all.extend(merged.iter().copied());
    let all_text: Vec<String> = all.iter().map(Uuid::to_string).collect();
    // Values to look for in feed payloads that belong to other aggregates.
    let needles = needles(&all, store::identifier_values(&mut tx, tenant, &all).await?);

    let counterparts = store::delete_personal_data(&mut tx, tenant, &all).await?;
    let now = store::tombstone(&mut tx, tenant, &all, id, reference).await?;
    let remaining: Vec<Uuid> = counterparts
        .into_iter()
        .filter(|c| !all.contains(c))
        .collect();
    store::touch(&mut tx, tenant, &remaining).await?;

    // The feed: the customers' own events, the contact-link events naming
    // them, and any other event that mentions them or their identifiers
    // become `redacted`.
    let mentioned = store::feed_mentions(&mut tx, tenant, &all_text, &needles).await?;
    let (about, mentioning) = erasure_redactions(&mentioned, &all_text);
    feed::redact::<ProfileEvent>(&mut tx, tenant, &about, RedactionReason::Erased).await?;
    feed::redact::<ProfileEvent>(
        &mut tx,
        tenant,
        &mentioning,
        RedactionReason::MentionedErased,
    )
    .await?;
    store::scrub_json_payloads(&mut tx, tenant, &all_text, &needles).await?;
    let events = all
        .iter()
        .map(|c| {
            store::event(
                tenant,
                *c,
                Ev::CustomerErased(ev::CustomerErased {
                    customer_id: c.to_string(),
                    erase_time: Some(timestamp(now)),
                }),
            )
        })
        .collect();
    store::append(&mut tx, events).await?;
    tx.commit().await?;
    Ok((merged, now))
}

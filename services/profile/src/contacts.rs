//! LinkContact and UnlinkContact: each owns its transaction;
//! `domain::contacts` decides who may be linked and how many links fit, the
//! store executes, and the event is appended in the same transaction.

use chrono::Utc;
use rapport_kit::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::contacts::{self as rules, Refusal};
use crate::error::{Error, Result, customer_not_found, precondition};
use crate::store::{self, LinkInput, LinkRow};

/// LinkContact: creates or updates the (person, organisation, role) link;
/// returns it and whether it was created.
pub async fn link(pool: &PgPool, tenant: Uuid, l: &LinkInput) -> Result<(LinkRow, bool)> {
    let mut tx = pool.begin().await?;
    let person = store::chain_end(&mut tx, tenant, l.person).await?;
    let org = store::chain_end(&mut tx, tenant, l.organization).await?;
    // Lock both in id order, so two links of the same pair cannot deadlock.
    let (a, b) = if person < org {
        (person, org)
    } else {
        (org, person)
    };
    let ra = store::lock_row(&mut tx, tenant, a).await?;
    let rb = store::lock_row(&mut tx, tenant, b).await?;
    let (rp, ro) = if a == person { (ra, rb) } else { (rb, ra) };
    let rp = rp.ok_or_else(|| customer_not_found(l.person))?;
    let ro = ro.ok_or_else(|| customer_not_found(l.organization))?;
    rules::check_parties((person, rp.kind, rp.status), (org, ro.kind, ro.status))
        .map_err(refused)?;
    let existing = store::link_id(&mut tx, tenant, person, org, l.role).await?;
    if existing.is_none() {
        let (per_org, per_person) = store::link_counts(&mut tx, tenant, org, person).await?;
        rules::check_room(per_org, per_person).map_err(refused)?;
    }
    if rules::takes_primary(l.primary, l.end_date, Utc::now().date_naive()) {
        store::clear_other_primaries(&mut tx, tenant, org, person, l.role).await?;
    }
    let row = store::upsert_link(&mut tx, tenant, person, org, l).await?;
    store::touch(&mut tx, tenant, &[person, org]).await?;
    let mut event = row.event();
    event.tenant_id = tenant;
    store::append(&mut tx, vec![event]).await?;
    tx.commit().await?;
    Ok((row, existing.is_none()))
}

/// UnlinkContact: removes one link and returns it.
pub async fn unlink(
    pool: &PgPool,
    tenant: Uuid,
    person: Uuid,
    organization: Uuid,
    role: i16,
) -> Result<LinkRow> {
    let mut tx = pool.begin().await?;
    let not_found = || {
        Error::Api(ApiError::not_found(
            "contact link",
            format!("{person}/{organization}"),
        ))
    };
    let person = store::chain_end(&mut tx, tenant, person)
        .await
        .map_err(|_| not_found())?;
    let org = store::chain_end(&mut tx, tenant, organization)
        .await
        .map_err(|_| not_found())?;
    let row = store::delete_link(&mut tx, tenant, person, org, role)
        .await?
        .ok_or_else(not_found)?;
    store::touch(&mut tx, tenant, &[person, org]).await?;
    store::append(&mut tx, vec![store::unlinked_event(tenant, &row)]).await?;
    tx.commit().await?;
    Ok(row)
}

/// The error a refusal of the rules becomes.
fn refused(r: Refusal) -> Error {
    match r {
        Refusal::Precondition(m) => precondition(m),
        Refusal::TooMany(message) => Error::Api(ApiError::ResourceExhausted {
            message,
            retry_after: None,
        }),
    }
}

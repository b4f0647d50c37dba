//! ResolveIdentity and ResolveIdentities: each owns its transactions, with
//! the same rules (`domain::resolution::plan` decides for one set as for
//! many). The identifiers' primary key decides races: a loser's insert
//! fails, the whole attempt rolls back, and the next one finds the winner's
//! customer.

use std::collections::HashMap;

use rapport_kit::ApiError;
use rapport_kit::error::is_unique_violation;
use rapport_proto::rapport::profile::v1 as ev;
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::customer::{Ident, Validated};
use crate::domain::resolution::{
    Decision, Holder, Resolution, Set, changed_identifier_fields, plan,
};
use crate::error::{Error, Result};
use crate::store::{self, CustomerStatus};

/// How many times a resolution is tried before the caller is told to retry.
const RESOLVE_ATTEMPTS: usize = 8;

/// ABORTED after RESOLVE_ATTEMPTS lost races.
fn kept_changing() -> Error {
    Error::Api(ApiError::Aborted(
        "the identifiers kept changing while they were resolved; retry".into(),
    ))
}

/// ResolveIdentity: finds the customer the identifiers describe, attaching
/// the ones it lacks within its limits, or creates it from `traits`.
pub async fn resolve(
    pool: &PgPool,
    tenant: Uuid,
    idents: &[Ident],
    traits: &Validated,
    lookup_only: bool,
) -> Result<Resolution> {
    for _ in 0..RESOLVE_ATTEMPTS {
        let mut tx = pool.begin().await?;
        let held = store::held_by(&mut tx, tenant, idents).await?;
        let mut candidates: Vec<Uuid> = held.values().copied().collect();
        candidates.sort();
        candidates.dedup();
        // The one customer found is locked and read before deciding.
        let mut holders = HashMap::new();
        let mut current = None;
        if let [only] = candidates[..] {
            let Some(r) = store::lock_row(&mut tx, tenant, only).await? else {
                tx.rollback().await?;
                continue;
            };
            if r.status.is_gone() {
                // Merged or erased under us: look again.
                tx.rollback().await?;
                continue;
            }
            let c = store::load_one(&mut tx, tenant, only).await?;
            holders.insert(
                only,
                Holder::of(&c.idents, r.status == CustomerStatus::Deleted),
            );
            current = Some(c);
        }
        let set = Set {
            idents,
            lookup_only,
        };
        let decision = plan(&[set], &held, &holders, Uuid::now_v7).pop();
        let attempt = match decision {
            None | Some(Decision::NotFound) => {
                return Err(Error::Api(ApiError::NotFound {
                    resource: "customer",
                    id: "for these identifiers".into(),
                }));
            }
            Some(Decision::Conflict(list)) => {
                tx.rollback().await?;
                return Ok(Resolution::Conflict(list));
            }
            Some(Decision::Found { attach, .. }) if attach.is_empty() => {
                tx.rollback().await?;
                let Some(customer) = current else {
                    continue;
                };
                return Ok(Resolution::Resolved {
                    customer: Box::new(customer),
                    created: false,
                    attached: Vec::new(),
                });
            }
            Some(Decision::Found {
                customer_id,
                attach,
            }) => attach_to(&mut tx, tenant, customer_id, attach).await,
            Some(Decision::Create {
                customer_id,
                idents,
            }) => {
                let mut v = traits.clone();
                v.idents = idents;
                create(&mut tx, tenant, customer_id, &v).await
            }
        };
        match attempt? {
            Some(resolution) => {
                tx.commit().await?;
                return Ok(resolution);
            }
            // Another call took an identifier first: find its customer.
            None => tx.rollback().await?,
        }
    }
    Err(kept_changing())
}

/// Stores identifiers; false when another call took one of them first.
async fn store_identifiers(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    id: Uuid,
    idents: &[Ident],
    start: &HashMap<i16, i32>,
) -> Result<bool> {
    match store::insert_idents(tx, tenant, id, idents, start).await {
        Ok(()) => Ok(true),
        Err(e) if is_unique_violation(&e, None) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates the customer of a set nobody holds (CustomerCreated, origin
/// RESOLVE); None when it lost a race.
async fn create(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    id: Uuid,
    v: &Validated,
) -> Result<Option<Resolution>> {
    store::insert_customer(tx, tenant, id, v).await?;
    if !store_identifiers(tx, tenant, id, &v.idents, &HashMap::new()).await? {
        return Ok(None);
    }
    let stored = store::load_one(tx, tenant, id).await?;
    let event = store::created_event(&stored, ev::CustomerOrigin::Resolve);
    store::append_customer_event(tx, tenant, id, event).await?;
    Ok(Some(Resolution::Resolved {
        customer: Box::new(stored),
        created: true,
        attached: Vec::new(),
    }))
}

/// Attaches identifiers to the customer found (CustomerUpdated); None when
/// it lost a race.
async fn attach_to(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    id: Uuid,
    attach: Vec<Ident>,
) -> Result<Option<Resolution>> {
    let start = store::next_positions(tx, tenant, id).await?;
    if !store_identifiers(tx, tenant, id, &attach, &start).await? {
        return Ok(None);
    }
    store::touch(tx, tenant, &[id]).await?;
    let stored = store::load_one(tx, tenant, id).await?;
    store::append_customer_event(
        tx,
        tenant,
        id,
        Ev::CustomerUpdated(ev::CustomerUpdated {
            customer_id: id.to_string(),
            changed_fields: changed_identifier_fields(&attach),
            customer: store::snapshot(&stored),
        }),
    )
    .await?;
    Ok(Some(Resolution::Resolved {
        customer: Box::new(stored),
        created: false,
        attached: attach,
    }))
}

/// ResolveIdentities: resolves every set as ResolveIdentity would, in
/// request order, in one transaction with set-based SQL
/// (`store::resolve_identities_in`). Each set gets `None` when it is
/// `lookup_only` and no identifier is known. A unique violation (a
/// concurrent caller created or attached one of the identifiers first) or a
/// deadlock rolls the whole call back and retries it, so the winners'
/// customers are found.
pub async fn resolve_many(
    pool: &PgPool,
    tenant: Uuid,
    sets: &[(Vec<Ident>, Validated, bool)],
) -> Result<Vec<Option<Resolution>>> {
    for _ in 0..RESOLVE_ATTEMPTS {
        let mut tx = pool.begin().await?;
        match store::resolve_identities_in(&mut tx, tenant, sets).await? {
            Some(done) => {
                tx.commit().await?;
                return Ok(done.results);
            }
            None => tx.rollback().await?,
        }
    }
    Err(kept_changing())
}

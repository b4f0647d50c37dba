//! CreateCustomer, UpdateCustomer, DeleteCustomer and UndeleteCustomer: each
//! owns its transaction; `domain::customer` validates and compares, the
//! store executes, and the event is appended in the same transaction.

use rapport_kit::ApiError;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::profile::v1 as ev;
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::attributes::Definitions;
use crate::domain::customer::{self as cust, Stored, Validated};
use crate::error::{Error, Result, precondition};
use crate::store::{self, CustomerStatus, RequestKey, StageTime};

/// CreateCustomer: stores a validated customer and emits CustomerCreated,
/// in five round trips: the idempotency key is claimed with its result (the
/// new id is known in advance), the customer and its identifiers are stored
/// in one statement (an identifier someone holds makes it come back short,
/// and the holder is then named), the answer is built from what was written
/// rather than read back, and the event is appended.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    v: &Validated,
    key: Option<&RequestKey>,
) -> Result<Stored> {
    let id = Uuid::now_v7();
    let mut tx = pool.begin().await?;
    if let Some(first) = store::claim_done(
        &mut tx,
        tenant,
        "CreateCustomer",
        key,
        json!({"customer_id": id.to_string()}),
        &[id],
    )
    .await?
    {
        let id = first["customer_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without customer_id"))?;
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        let target = store::chain_end(&mut conn, tenant, id).await?;
        return store::load_one(&mut conn, tenant, target).await;
    }
    let (written, stored_idents) = store::insert_with_identifiers(&mut tx, tenant, id, v).await?;
    if stored_idents != v.idents.len() as i64 {
        // Another customer holds one: name it (nothing of this call stays).
        store::ensure_free(&mut tx, tenant, Some(id), &v.idents, "customer").await?;
        return Err(Error::Api(ApiError::AlreadyExists(
            "an identifier of this request was just given to another customer".into(),
        )));
    }
    let mut idents = v.idents.clone();
    idents.sort_by_key(|i| i.kind);
    let stored = Stored {
        customer_id: id,
        kind: v.kind,
        deleted: false,
        profile: v.profile.clone(),
        idents,
        version: written.version,
        create_time: written.create_time,
        update_time: written.update_time,
        delete_time: None,
        stage_set_time: written.stage_set_time,
        consents: Vec::new(),
        merged_ids: Vec::new(),
    };
    let event = store::created_event(&stored, ev::CustomerOrigin::Create);
    store::append_customer_event(&mut tx, tenant, id, event).await?;
    tx.commit().await?;
    Ok(stored)
}

/// What UpdateCustomer needs from the handler: how to compute the new
/// customer from the current one (validation included).
pub type Updater<'a> =
    dyn FnOnce(&Stored, &Definitions) -> std::result::Result<Validated, ApiError> + Send + 'a;

/// UpdateCustomer: applies `apply` to the locked customer and stores the
/// result when something changed (emitting CustomerUpdated).
pub async fn update(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    etag: &str,
    apply: Box<Updater<'_>>,
) -> Result<Stored> {
    let mut tx = pool.begin().await?;
    let r = store::lock_exact(&mut tx, tenant, id).await?;
    if r.status == CustomerStatus::Deleted {
        return Err(precondition(format!(
            "customer {id} is deleted; undelete it first"
        )));
    }
    store::check_etag(etag, r.version)?;
    let current = store::load_one(&mut tx, tenant, id).await?;
    let defs = store::definitions(&mut tx, tenant).await?;
    let next = apply(&current, &defs)?;
    let before = cust::fields_to_proto(current.kind, &current.profile, &current.idents);
    let after = cust::fields_to_proto(current.kind, &next.profile, &next.idents);
    let changed = cust::changed_fields(&before, &after);
    if changed.is_empty() {
        tx.rollback().await?;
        return Ok(current);
    }
    let ident_kinds_changed = changed
        .iter()
        .any(|f| matches!(*f, "emails" | "phones" | "external_identifiers"));
    if ident_kinds_changed {
        store::ensure_free(&mut tx, tenant, Some(id), &next.idents, "customer").await?;
        store::replace_identifiers(&mut tx, tenant, id, &next.idents).await?;
    }
    let stage = if next.profile.relationship_stage != current.profile.relationship_stage {
        StageTime::Now
    } else {
        StageTime::Keep
    };
    store::write_profile(&mut tx, tenant, id, &next.profile, stage).await?;
    let stored = store::load_one(&mut tx, tenant, id).await?;
    store::append_customer_event(
        &mut tx,
        tenant,
        id,
        Ev::CustomerUpdated(ev::CustomerUpdated {
            customer_id: id.to_string(),
            changed_fields: changed.iter().map(ToString::to_string).collect(),
            customer: store::snapshot(&stored),
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(stored)
}

/// DeleteCustomer (`delete` true) or UndeleteCustomer; asking for the state
/// the customer is in answers with it unchanged.
pub async fn set_deleted(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    etag: &str,
    delete: bool,
) -> Result<Stored> {
    let mut tx = pool.begin().await?;
    let r = store::lock_exact(&mut tx, tenant, id).await?;
    store::check_etag(etag, r.version)?;
    if (r.status == CustomerStatus::Deleted) == delete {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        return store::load_one(&mut conn, tenant, id).await;
    }
    store::set_deleted(&mut tx, tenant, id, delete).await?;
    let stored = store::load_one(&mut tx, tenant, id).await?;
    let event = if delete {
        Ev::CustomerDeleted(ev::CustomerDeleted {
            customer_id: id.to_string(),
            delete_time: stored.delete_time.map(timestamp),
        })
    } else {
        Ev::CustomerUndeleted(ev::CustomerUndeleted {
            customer_id: id.to_string(),
            customer: store::snapshot(&stored),
        })
    };
    store::append(&mut tx, vec![store::event(tenant, id, event)]).await?;
    tx.commit().await?;
    Ok(stored)
}

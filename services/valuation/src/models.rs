//! Storing a fitted model and activating models: each owns its transaction
//! under the lock of the tenant's model kind (versions are numbered and one
//! model per kind is active), and appends the models' events in it.

use chrono::{DateTime, Utc};
use prost::Message;
use rapport_kit::convert::timestamp;
use rapport_kit::error::ApiError;
use rapport_kit::feed::{self, NewEvent};
use rapport_kit::idempotency;
use rapport_proto::rapport::valuation::v1::{self as pb, valuation_event};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::events;
use crate::domain::fitting::Kind;
use crate::engine::decode;
use crate::store;

/// The scope of FitModel's request ids.
pub const FIT_SCOPE: &str = "FitModel";

/// FitModel's last step: numbers and stores the fitted `model` (its id set,
/// fitted at `now`),
/// remembers the request id and hash, activates it when asked and it may
/// be, and appends ModelFitted (and ModelActivated). A concurrent retry with
/// the same request id that stored first is answered with its model.
pub async fn save_fit(
    pool: &PgPool,
    tenant: Uuid,
    mut model: pb::Model,
    kind_db: i16,
    request: Option<(&str, &str)>,
    activate: bool,
    now: DateTime<Utc>,
) -> Result<pb::Model, ApiError> {
    let model_id = Uuid::parse_str(&model.model_id)
        .map_err(|_| ApiError::internal("a fitted model without a valid id"))?;
    let mut tx = pool.begin().await?;
    store::lock_kind(&mut tx, tenant, kind_db).await?;
    if let Some((request_id, hash)) = request
        && let Some(seen) = idempotency::seen(&mut tx, tenant, FIT_SCOPE, request_id).await?
    {
        let (stored, id) = (seen.fingerprint, seen.result_id);
        // A concurrent retry won the race.
        drop(tx);
        if stored != hash {
            return Err(ApiError::AlreadyExists(format!(
                "request_id {request_id:?} was already used with different content; use a new request_id"
            )));
        }
        return stored_model(pool, tenant, id).await;
    }
    model.version = store::next_version(&mut tx, tenant, kind_db).await?;
    store::insert_model(
        &mut tx,
        tenant,
        model_id,
        kind_db,
        model.version,
        &model.encode_to_vec(),
        now,
    )
    .await?;
    if let Some((request_id, hash)) = request {
        idempotency::remember(&mut tx, tenant, FIT_SCOPE, request_id, hash, model_id).await?;
    }
    let mut list = vec![fitted_event(tenant, &model)];
    if activate && activation_refusal(&model).is_none() {
        let previous = store::activate(&mut tx, tenant, kind_db, model_id, now).await?;
        model.active = true;
        model.activate_time = Some(timestamp(now));
        list.push(activated_event(tenant, &model, previous));
    }
    feed::append(&mut tx, &list).await?;
    tx.commit().await?;
    Ok(model)
}

/// ActivateModel: makes `id` its kind's active model; returns it and the
/// model it replaced. An active model answers unchanged.
pub async fn activate(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
) -> Result<(pb::Model, Option<Uuid>), ApiError> {
    let mut tx = pool.begin().await?;
    let row = store::get_model(&mut tx, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id.to_string()))?;
    let kind_db = decode(&row)?.kind as i16;
    store::lock_kind(&mut tx, tenant, kind_db).await?;
    // Re-read under the lock: a concurrent activation may have won.
    let row = store::get_model(&mut tx, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id.to_string()))?;
    let mut model = decode(&row)?;
    if model.active {
        return Ok((model, None));
    }
    if let Some(refusal) = activation_refusal(&model) {
        return Err(ApiError::FailedPrecondition(refusal));
    }
    let now = Utc::now();
    let previous = store::activate(&mut tx, tenant, kind_db, id, now).await?;
    model.active = true;
    model.activate_time = Some(timestamp(now));
    feed::append(&mut tx, &[activated_event(tenant, &model, previous)]).await?;
    tx.commit().await?;
    Ok((model, previous))
}

/// The stored model `id`.
pub async fn stored_model(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<pb::Model, ApiError> {
    let mut conn = pool.acquire().await?;
    let row = store::get_model(&mut conn, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("model", id.to_string()))?;
    decode(&row)
}

/// The ModelFitted event of a stored model.
pub fn fitted_event(tenant: Uuid, m: &pb::Model) -> NewEvent {
    NewEvent::new(
        tenant,
        "model",
        m.model_id.clone(),
        events::MODEL_FITTED,
        &events::envelope(valuation_event::Event::ModelFitted(pb::ModelFitted {
            model: Some(m.clone()),
        })),
    )
}

/// The ModelActivated event of a model that replaced `previous`.
pub fn activated_event(tenant: Uuid, m: &pb::Model, previous: Option<Uuid>) -> NewEvent {
    NewEvent::new(
        tenant,
        "model",
        m.model_id.clone(),
        events::MODEL_ACTIVATED,
        &events::envelope(valuation_event::Event::ModelActivated(
            events::model_activated(&m.model_id, m.kind, m.version, previous),
        )),
    )
}

/// Why a model cannot be activated, if it cannot.
pub fn activation_refusal(m: &pb::Model) -> Option<String> {
    if !m.converged {
        return Some(format!(
            "model {} did not converge and cannot be activated; fit again",
            m.model_id
        ));
    }
    if Kind::from_proto(m.kind) == Some(Kind::GammaGamma)
        && m.parameters.iter().any(|p| p.name == "q" && p.value <= 1.0)
    {
        return Some(format!(
            "Gamma-Gamma model {} has q <= 1 (infinite expected spend) and cannot be activated",
            m.model_id
        ));
    }
    None
}

//! CreateCampaign and UpdateCampaign: each owns its transaction; the
//! campaign rules (`domain::campaign`) validate, the store executes, and the
//! campaign's event is appended in the same transaction.

use rapport_kit::error::{ApiError, Violation};
use rapport_kit::feed::{self, NewEvent};
use rapport_kit::idempotency;
use rapport_proto::rapport::interaction::v1::Campaign;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::campaign::{CampaignInput, apply_update, input_hash};
use crate::domain::model::{StoredCampaign, envelope};
use crate::store;

/// The scope of CreateCampaign's request ids in `request_ids`.
const SCOPE: &str = "CreateCampaign";

/// CreateCampaign: a retry with the same request id and campaign answers
/// with the campaign created first; the same request id with another
/// campaign is ALREADY_EXISTS. Request ids are the kit's
/// (`rapport_kit::idempotency`), kept 24 hours.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    input: &CampaignInput,
    request_id: Option<&str>,
) -> Result<StoredCampaign, ApiError> {
    let fingerprint = hex::encode(input_hash(input));
    let mut tx = pool.begin().await?;
    if let Some(rid) = request_id
        && let Some(first) = earlier(&mut tx, tenant, rid, &fingerprint).await?
    {
        return Ok(first);
    }
    let id = Uuid::now_v7();
    if let Some(rid) = request_id
        && !idempotency::remember(&mut tx, tenant, SCOPE, rid, &fingerprint, id).await?
    {
        // A concurrent call with the same request id won: answer as a retry.
        drop(tx);
        let mut conn = pool.acquire().await?;
        return earlier(&mut conn, tenant, rid, &fingerprint)
            .await?
            .ok_or_else(|| ApiError::Aborted("a concurrent request interfered; retry".into()));
    }
    let created = store::insert_campaign(&mut tx, tenant, id, input).await?;
    let event = Event::CampaignCreated(created.changed_event(None));
    feed::append(
        &mut tx,
        &[campaign_event(tenant, id, "CampaignCreated", event)],
    )
    .await?;
    tx.commit().await?;
    Ok(created)
}

/// The campaign an earlier CreateCampaign with `request_id` created, when
/// its content was the same; ALREADY_EXISTS when it was other.
async fn earlier(
    conn: &mut PgConnection,
    tenant: Uuid,
    request_id: &str,
    fingerprint: &str,
) -> Result<Option<StoredCampaign>, ApiError> {
    let Some(seen) = idempotency::seen(&mut *conn, tenant, SCOPE, request_id).await? else {
        return Ok(None);
    };
    if seen.fingerprint != fingerprint {
        return Err(ApiError::AlreadyExists(format!(
            "request_id {request_id:?} was already used to create a different campaign"
        )));
    }
    Ok(store::get_campaign(conn, tenant, seen.result_id, false).await?)
}

/// UpdateCampaign: applies the masked fields of `campaign` to the locked
/// campaign (invalid fields are INVALID_ARGUMENT), checks its etag, stores
/// it and appends CampaignUpdated.
pub async fn update(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    campaign: &Campaign,
    paths: &[String],
) -> Result<StoredCampaign, ApiError> {
    let mut tx = pool.begin().await?;
    let current = store::get_campaign(&mut tx, tenant, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("campaign", id.to_string()))?;
    let input = apply_update(&current, campaign, paths).map_err(invalid)?;
    if !campaign.etag.is_empty() && campaign.etag != current.etag() {
        return Err(ApiError::Aborted(format!(
            "campaign {id} has changed since it was read (etag {}); read it again and retry",
            current.etag()
        )));
    }
    let updated = store::update_campaign(&mut tx, tenant, id, &input).await?;
    let event = Event::CampaignUpdated(updated.changed_event(Some(paths)));
    feed::append(
        &mut tx,
        &[campaign_event(tenant, id, "CampaignUpdated", event)],
    )
    .await?;
    tx.commit().await?;
    Ok(updated)
}

/// A campaign's event, of type `event_type`.
fn campaign_event(tenant: Uuid, id: Uuid, event_type: &'static str, event: Event) -> NewEvent {
    NewEvent::new(
        tenant,
        "campaign",
        id.to_string(),
        event_type,
        &envelope(event),
    )
}

fn invalid(list: Vec<Violation>) -> ApiError {
    ApiError::InvalidArgument(list)
}

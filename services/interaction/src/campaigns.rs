//! CreateCampaign and UpdateCampaign: each owns its transaction; the
//! campaign rules (`domain::campaign`) validate, the store executes, and the
//! campaign's event is appended in the same transaction.

use rapport_kit::error::{ApiError, Violation};
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::interaction::v1::Campaign;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::campaign::{CampaignInput, apply_update, input_hash};
use crate::domain::model::{StoredCampaign, envelope};
use crate::store;

/// CreateCampaign: a retry with the same request id and campaign answers
/// with the campaign created first; the same request id with another
/// campaign is ALREADY_EXISTS.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    input: &CampaignInput,
    request_id: Option<&str>,
) -> Result<StoredCampaign, ApiError> {
    let hash = input_hash(input);
    let same_request = |found: Option<(StoredCampaign, Vec<u8>)>| match found {
        Some((c, h)) if h == hash => Ok(Some(c)),
        Some(_) => Err(ApiError::AlreadyExists(format!(
            "request_id {:?} was already used to create a different campaign",
            request_id.unwrap_or_default()
        ))),
        None => Ok(None),
    };
    let mut tx = pool.begin().await?;
    if let Some(rid) = request_id {
        let found = store::campaign_by_request(&mut tx, tenant, rid).await?;
        if let Some(c) = same_request(found)? {
            tx.commit().await?;
            return Ok(c);
        }
    }
    let id = Uuid::now_v7();
    let created = store::insert_campaign(
        &mut tx,
        tenant,
        id,
        input,
        request_id.map(|rid| (rid, hash.as_slice())),
    )
    .await?;
    let Some(created) = created else {
        // A concurrent call with the same request id won: answer as a retry.
        drop(tx);
        let mut conn = pool.acquire().await?;
        let found =
            store::campaign_by_request(&mut conn, tenant, request_id.unwrap_or_default()).await?;
        return same_request(found)?
            .ok_or_else(|| ApiError::Aborted("a concurrent request interfered; retry".into()));
    };
    let event = Event::CampaignCreated(created.changed_event(None));
    feed::append(
        &mut tx,
        &[campaign_event(tenant, id, "CampaignCreated", event)],
    )
    .await?;
    tx.commit().await?;
    Ok(created)
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

//! UpdateServiceRequest: owns its transaction. The request's status moves
//! as `domain::status` allows (resolving stamps the resolve time, reopening
//! clears it), and ServiceRequestUpdated is appended when it changed.

use chrono::Utc;
use rapport_kit::error::ApiError;
use rapport_kit::feed::{self, NewEvent};
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::{InteractionType, ServiceRequestStatus};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::model::{StoredInteraction, envelope};
use crate::domain::status::{Transition, transition};
use crate::domain::types::is_tracked_request;
use crate::store;

/// UpdateServiceRequest: moves a SERVICE_REQUEST or COMPLAINT to `status`;
/// asking for the status it has answers with it unchanged.
pub async fn update_status(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    status: ServiceRequestStatus,
    agent_id: &str,
    etag: &str,
) -> Result<StoredInteraction, ApiError> {
    let mut tx = pool.begin().await?;
    let current = store::lock_interaction(&mut tx, tenant, id)
        .await?
        .ok_or_else(|| ApiError::not_found("interaction", id.to_string()))?;
    let kind = InteractionType::try_from(current.kind).unwrap_or(InteractionType::Unspecified);
    if !is_tracked_request(kind) {
        return Err(ApiError::FailedPrecondition(format!(
            "interaction {id} is a {}, not a SERVICE_REQUEST or COMPLAINT",
            kind.as_str_name()
        )));
    }
    if !etag.is_empty() && etag != current.etag() {
        return Err(ApiError::Aborted(format!(
            "interaction {id} has changed (etag {} is not {}); read it again and decide again",
            current.etag(),
            etag
        )));
    }
    let from = ServiceRequestStatus::try_from(current.status).unwrap_or(ServiceRequestStatus::Open);
    let updated = match transition(from, status) {
        Transition::Unchanged => current,
        Transition::Illegal => {
            return Err(ApiError::FailedPrecondition(format!(
                "a request cannot go from {} to {}",
                from.as_str_name(),
                status.as_str_name()
            )));
        }
        Transition::Change { resolves, reopens } => {
            let resolve_time = if resolves {
                Some(crate::domain::validate::to_micros(Utc::now()))
            } else if reopens {
                None
            } else {
                current.resolve_time
            };
            let agent = if agent_id.is_empty() {
                current.agent_id.clone()
            } else {
                Some(agent_id.to_string())
            };
            let updated = store::update_status(
                &mut tx,
                tenant,
                &current,
                status as i32,
                resolve_time,
                agent.as_deref(),
            )
            .await?;
            feed::append(
                &mut tx,
                &[NewEvent::new(
                    tenant,
                    "interaction",
                    id.to_string(),
                    "ServiceRequestUpdated",
                    &envelope(Event::ServiceRequestUpdated(
                        updated.status_event(current.status),
                    )),
                )],
            )
            .await?;
            updated
        }
    };
    tx.commit().await?;
    Ok(updated)
}

//! The calls many tests make only to set the scene (a campaign to refer to,
//! interactions to read back), each in one line, failing the test when the
//! service refuses.

use rapport_proto::rapport::interaction::v1::campaign_service_client::CampaignServiceClient;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Campaign, Channel as ContactChannel, CreateCampaignRequest, Interaction,
    RecordInteractionRequest, RecordInteractionResponse, RecordInteractionsRequest,
    RecordInteractionsResponse,
};
use tonic::transport::Channel;
use tonic::{Response, Status};
use uuid::Uuid;

use crate::for_tenant;

/// An e-mail campaign named `name`.
pub fn email_campaign(name: &str) -> Campaign {
    Campaign {
        name: name.into(),
        channel: ContactChannel::Email as i32,
        ..Default::default()
    }
}

/// Creates `campaign` for `tenant` (no request id) and returns it as stored.
pub async fn create_campaign(
    c: &mut CampaignServiceClient<Channel>,
    tenant: Uuid,
    campaign: Campaign,
) -> Campaign {
    c.create_campaign(for_tenant(
        tenant,
        CreateCampaignRequest {
            campaign: Some(campaign),
            request_id: String::new(),
        },
    ))
    .await
    .expect("campaign created")
    .into_inner()
    .campaign
    .expect("campaign in response")
}

/// RecordInteraction of `i` for `tenant`, as the service answers it.
pub async fn try_record(
    c: &mut InteractionServiceClient<Channel>,
    tenant: Uuid,
    i: Interaction,
) -> Result<RecordInteractionResponse, Status> {
    c.record_interaction(for_tenant(
        tenant,
        RecordInteractionRequest {
            interaction: Some(i),
        },
    ))
    .await
    .map(Response::into_inner)
}

/// Records `i` for `tenant` and returns it as stored.
pub async fn record(
    c: &mut InteractionServiceClient<Channel>,
    tenant: Uuid,
    i: Interaction,
) -> Interaction {
    try_record(c, tenant, i)
        .await
        .expect("interaction recorded")
        .interaction
        .expect("interaction in response")
}

/// Records `interactions` for `tenant` in one streamed message.
pub async fn record_batch(
    c: &mut InteractionServiceClient<Channel>,
    tenant: Uuid,
    interactions: Vec<Interaction>,
) -> RecordInteractionsResponse {
    c.record_interactions(for_tenant(
        tenant,
        futures::stream::iter(vec![RecordInteractionsRequest { interactions }]),
    ))
    .await
    .expect("interactions recorded")
    .into_inner()
}

//! The one service engagement calls: segmentation, to list the customers an
//! ad hoc rule matches (an audience given as a rule). Deciding itself reads
//! only the projection the feeds keep. The internal credential goes on every
//! call and the caller's tenant is forwarded in metadata.

use rapport_kit::context::CallContext;
use rapport_kit::error::ApiError;
use rapport_kit::peer::{MAX_MESSAGE_BYTES, Peer, PeerChannel};
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{ListRuleMatchesRequest, list_rule_matches_request};
use tonic::{Code, Request};
use uuid::Uuid;

/// A client of the segmentation service.
#[derive(Clone)]
pub struct Segmentation {
    client: SegmentationServiceClient<PeerChannel>,
}

impl Segmentation {
    /// A client of the service behind `peer`, connecting on first use.
    pub fn new(peer: &Peer) -> Self {
        Self {
            client: SegmentationServiceClient::new(peer.channel())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// A page of the customers `rule` matches after `token` (empty: the
    /// first page), and the next page's token (empty after the last). A rule
    /// segmentation refuses is INVALID_ARGUMENT on `rule_text`, with its
    /// reason.
    pub async fn rule_matches(
        &self,
        ctx: &CallContext,
        rule: &str,
        token: &str,
    ) -> Result<(Vec<Uuid>, String), ApiError> {
        let mut req = Request::new(ListRuleMatchesRequest {
            rule_definition: Some(list_rule_matches_request::RuleDefinition::RuleText(
                rule.to_string(),
            )),
            page_size: crate::audience::PAGE as i32,
            page_token: token.to_string(),
        });
        ctx.write(req.metadata_mut());
        match self.client.clone().list_rule_matches(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let ids = r
                    .customer_ids
                    .iter()
                    .filter_map(|s| Uuid::parse_str(s).ok())
                    .collect();
                Ok((ids, r.next_page_token))
            }
            Err(s) if s.code() == Code::InvalidArgument => Err(ApiError::invalid(
                "rule_text",
                format!("segmentation refused the rule: {}", s.message()),
            )),
            Err(s) => Err(rapport_kit::peer::error("segmentation", &s)),
        }
    }
}

//! The services valuation calls: interaction (purchase-history exports and
//! customer summaries; its change feed is read with the kit's `PeerFeed`), segmentation (segment members)
//! and profile (the estimated category wallet). The internal credential goes
//! on every call and the caller's tenant is forwarded in metadata.

use std::collections::HashMap;

use futures::StreamExt;
use rapport_kit::context::CallContext;
use rapport_kit::error::ApiError;
use rapport_kit::peer::{MAX_MESSAGE_BYTES, Peer, PeerChannel};
use rapport_proto::rapport::common::v1::{Identifier, IdentifierKind, IdentifierSet};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    CustomerSummary, ExportSummariesRequest, ExportSummariesResponse, GetCustomerSummaryRequest,
    GetFeedHeadRequest, PurchaseHistorySummary, SummaryColumns,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    BatchGetCustomersRequest, Customer, GetCustomerRequest, ResolveIdentitiesRequest,
    ResolveIdentityRequest, resolve_identities_result,
};
use rapport_proto::rapport::segmentation::v1::ListMembersRequest;
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use tonic::{Code, Request, Status};
use uuid::Uuid;

type Svc = PeerChannel;

/// Maps a peer's failure (the kit's one mapping for every service).
pub use rapport_kit::peer::error as peer_error;

/// A client of the interaction service.
#[derive(Clone)]
pub struct Interaction {
    client: InteractionServiceClient<Svc>,
}

/// An export's failure: FAILED_PRECONDITION and INVALID_ARGUMENT answers
/// are passed on with their message.
fn pass_on(s: Status) -> ApiError {
    match s.code() {
        Code::FailedPrecondition => ApiError::FailedPrecondition(s.message().to_string()),
        Code::InvalidArgument => ApiError::FailedPrecondition(format!(
            "the interaction service refused the export: {}",
            s.message()
        )),
        _ => peer_error("interaction", &s),
    }
}

impl Interaction {
    /// A client of the service behind `peer`, connecting on first use.
    pub fn new(peer: &Peer) -> Self {
        Self {
            client: InteractionServiceClient::new(peer.channel())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// Streams `ExportSummaries` for the tenant and collects the summaries.
    /// FAILED_PRECONDITION and INVALID_ARGUMENT answers are passed on with
    /// their message.
    pub async fn export(
        &self,
        ctx: &CallContext,
        request: ExportSummariesRequest,
    ) -> Result<Vec<PurchaseHistorySummary>, ApiError> {
        let messages = self.export_messages(ctx, request).await?;
        Ok(messages.into_iter().flat_map(|m| m.summaries).collect())
    }

    /// Streams `ExportSummaries` with `columnar` set and hands each batch of
    /// columns to `each` as it arrives (nothing is kept).
    pub async fn export_columns(
        &self,
        ctx: &CallContext,
        request: ExportSummariesRequest,
        mut each: impl FnMut(&SummaryColumns),
    ) -> Result<(), ApiError> {
        let request = ExportSummariesRequest {
            columnar: true,
            ..request
        };
        let mut stream = self.open_export(ctx, request).await?;
        while let Some(msg) = stream.next().await {
            if let Some(columns) = msg.map_err(pass_on)?.columns {
                each(&columns);
            }
        }
        Ok(())
    }

    async fn open_export(
        &self,
        ctx: &CallContext,
        request: ExportSummariesRequest,
    ) -> Result<tonic::Streaming<ExportSummariesResponse>, ApiError> {
        let mut req = Request::new(request);
        ctx.write(req.metadata_mut());
        Ok(self
            .client
            .clone()
            .export_summaries(req)
            .await
            .map_err(pass_on)?
            .into_inner())
    }

    async fn export_messages(
        &self,
        ctx: &CallContext,
        request: ExportSummariesRequest,
    ) -> Result<Vec<ExportSummariesResponse>, ApiError> {
        let mut stream = self.open_export(ctx, request).await?;
        let mut out = Vec::new();
        while let Some(msg) = stream.next().await {
            out.push(msg.map_err(pass_on)?);
        }
        Ok(out)
    }

    /// The sequence of the tenant's last event on the interaction feed.
    pub async fn feed_head(&self, ctx: &CallContext) -> Result<i64, ApiError> {
        let mut req = Request::new(GetFeedHeadRequest {});
        ctx.write(req.metadata_mut());
        Ok(self
            .client
            .clone()
            .get_feed_head(req)
            .await
            .map_err(|s| peer_error("interaction", &s))?
            .into_inner()
            .sequence)
    }

    /// The customer's summary now.
    pub async fn summary(
        &self,
        ctx: &CallContext,
        customer: Uuid,
    ) -> Result<CustomerSummary, ApiError> {
        let mut req = Request::new(GetCustomerSummaryRequest {
            customer_id: customer.to_string(),
            as_of: None,
        });
        ctx.write(req.metadata_mut());
        let answer = self
            .client
            .clone()
            .get_customer_summary(req)
            .await
            .map_err(|s| peer_error("interaction", &s))?
            .into_inner();
        answer
            .summary
            .ok_or_else(|| ApiError::internal("GetCustomerSummary answered without a summary"))
    }
}

/// A client of the segmentation service.
#[derive(Clone)]
pub struct Segmentation {
    client: SegmentationServiceClient<Svc>,
}

impl Segmentation {
    /// A client of the service behind `peer`, connecting on first use.
    pub fn new(peer: &Peer) -> Self {
        Self {
            client: SegmentationServiceClient::new(peer.channel())
                .max_decoding_message_size(MAX_MESSAGE_BYTES),
        }
    }

    /// Every current member of the segment; NOT_FOUND when the tenant has no
    /// such segment.
    pub async fn members(&self, ctx: &CallContext, segment: Uuid) -> Result<Vec<Uuid>, ApiError> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let mut req = Request::new(ListMembersRequest {
                segment_id: segment.to_string(),
                page_size: 1000,
                page_token: token.clone(),
            });
            ctx.write(req.metadata_mut());
            let page = match self.client.clone().list_members(req).await {
                Ok(p) => p.into_inner(),
                Err(s) if s.code() == Code::NotFound => {
                    return Err(ApiError::not_found("segment", segment.to_string()));
                }
                Err(s) => return Err(peer_error("segmentation", &s)),
            };
            out.extend(
                page.members
                    .iter()
                    .filter_map(|m| Uuid::parse_str(&m.customer_id).ok()),
            );
            if page.next_page_token.is_empty() {
                return Ok(out);
            }
            token = page.next_page_token;
        }
    }
}

/// A client of the profile service.
#[derive(Clone)]
pub struct Profile {
    client: ProfileServiceClient<Svc>,
}

impl Profile {
    /// A client of the service behind `peer`, connecting on first use.
    pub fn new(peer: &Peer) -> Self {
        Self {
            client: ProfileServiceClient::new(peer.channel()),
        }
    }

    /// Looks up identifier sets (never creating anything), 1..=1,000 in one
    /// call: per set, the customer, or why there is none.
    pub async fn lookup(
        &self,
        ctx: &CallContext,
        sets: &[IdentifierSet],
    ) -> Result<Vec<Lookup>, ApiError> {
        let mut req = Request::new(ResolveIdentitiesRequest {
            requests: sets
                .iter()
                .map(|s| ResolveIdentityRequest {
                    identifiers: s.identifiers.clone(),
                    traits: None,
                    lookup_only: true,
                })
                .collect(),
        });
        ctx.write(req.metadata_mut());
        let answer = self
            .client
            .clone()
            .resolve_identities(req)
            .await
            .map_err(|s| peer_error("profile", &s))?
            .into_inner();
        // Answers are matched to sets by position: a short or long answer
        // would pair identifiers with another set's customer.
        if answer.results.len() != sets.len() {
            return Err(ApiError::internal(format!(
                "ResolveIdentities answered {} results for {} sets",
                answer.results.len(),
                sets.len()
            )));
        }
        Ok(answer
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(resolve_identities_result::Result::Resolved(c)) => c
                    .customer
                    .and_then(|c| Uuid::parse_str(&c.customer_id).ok())
                    .map_or(Lookup::Unknown, Lookup::Found),
                Some(resolve_identities_result::Result::Conflict(c)) => {
                    Lookup::Conflict(c.matches.into_iter().map(|m| m.customer_id).collect())
                }
                Some(resolve_identities_result::Result::Refused(r))
                    if r.code == Code::InvalidArgument as i32 =>
                {
                    Lookup::Invalid(
                        r.field_violations
                            .into_iter()
                            .map(|v| (v.field, v.description))
                            .collect(),
                    )
                }
                _ => Lookup::Unknown,
            })
            .collect())
    }

    /// The identifiers (e-mails, phones, external ids) of up to 1,000
    /// customers, by id; merged ids answer for their survivors.
    pub async fn identifiers(
        &self,
        ctx: &CallContext,
        customers: &[Uuid],
    ) -> Result<HashMap<Uuid, IdentifierSet>, ApiError> {
        if customers.is_empty() {
            return Ok(HashMap::new());
        }
        let mut req = Request::new(BatchGetCustomersRequest {
            customer_ids: customers.iter().map(Uuid::to_string).collect(),
        });
        ctx.write(req.metadata_mut());
        let answer = self
            .client
            .clone()
            .batch_get_customers(req)
            .await
            .map_err(|s| peer_error("profile", &s))?
            .into_inner();
        Ok(answer
            .customers
            .into_iter()
            .filter_map(|c| {
                let id = Uuid::parse_str(&c.customer_id).ok()?;
                Some((id, identifier_set(&c)))
            })
            .collect())
    }

    /// The customer, or `None` when the profile service knows no such
    /// customer of the tenant.
    pub async fn customer(
        &self,
        ctx: &CallContext,
        customer: Uuid,
    ) -> Result<Option<Customer>, ApiError> {
        let mut req = Request::new(GetCustomerRequest {
            customer_id: customer.to_string(),
        });
        ctx.write(req.metadata_mut());
        match self.client.clone().get_customer(req).await {
            Ok(r) => Ok(r.into_inner().customer),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(peer_error("profile", &s)),
        }
    }
}

/// What looking up one identifier set found.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    /// The customer they describe.
    Found(Uuid),
    /// No customer has any of them.
    Unknown,
    /// They belong to these different customers.
    Conflict(Vec<String>),
    /// The set is invalid: (field relative to the set, problem).
    Invalid(Vec<(String, String)>),
}

/// Every identifier a customer has: e-mails, phones, external ids.
fn identifier_set(c: &Customer) -> IdentifierSet {
    let of = |kind: IdentifierKind, value: &str| Identifier {
        kind: kind as i32,
        system: String::new(),
        value: value.to_string(),
    };
    IdentifierSet {
        identifiers: c
            .emails
            .iter()
            .map(|e| of(IdentifierKind::Email, &e.address))
            .chain(
                c.phones
                    .iter()
                    .map(|p| of(IdentifierKind::Phone, &p.number)),
            )
            .chain(c.external_identifiers.iter().cloned())
            .collect(),
    }
}

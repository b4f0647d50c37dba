//! `Customer360Service.ExportCustomerData`: everything held on one customer,
//! read from every service on the caller's behalf, whole or not at all.

use std::future::Future;

use rapport_kit::ApiError;
use rapport_proto::rapport::engagement::v1 as epb;
use rapport_proto::rapport::gateway::v1 as pb;
use rapport_proto::rapport::interaction::v1 as ipb;
use rapport_proto::rapport::profile::v1 as ppb;
use rapport_proto::rapport::segmentation::v1 as spb;
use rapport_proto::rapport::valuation::v1 as vpb;
use tonic::{Code, Status};

use crate::auth::{Principal, require_scope};
use crate::customer360::Customer360;

/// The scopes an export needs: the read scope of every service.
pub const SCOPES: [&str; 5] = [
    "profile:read",
    "interaction:read",
    "segmentation:read",
    "valuation:read",
    "engagement:read",
];

/// At most this many interactions or decisions in one export.
pub const MAX_ITEMS: usize = 100_000;

/// Items per page when reading a list from a service.
const PAGE: i32 = 1000;

/// Every page of a list: `fetch(token)` answers one page and the next token.
/// RESOURCE_EXHAUSTED past [`MAX_ITEMS`].
pub async fn all_pages<T, F, Fut>(what: &str, mut fetch: F) -> Result<Vec<T>, Status>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, String), Status>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (page, next) = fetch(token).await?;
        items.extend(page);
        if items.len() > MAX_ITEMS {
            return Err(Status::resource_exhausted(format!(
                "the customer has more than {MAX_ITEMS} {what}: page through them instead"
            )));
        }
        if next.is_empty() {
            return Ok(items);
        }
        token = next;
    }
}

/// A part the platform may hold nothing for: NOT_FOUND is `None`.
fn optional<T>(result: Result<Option<T>, Status>) -> Result<Option<T>, Status> {
    match result {
        Err(s) if s.code() == Code::NotFound => Ok(None),
        other => other,
    }
}

/// A part's failure, said as the export's: which part, and why.
fn part(name: &'static str) -> impl Fn(Status) -> Status {
    move |s| {
        let message = format!("the export's {name} could not be read: {}", s.message());
        match s.code() {
            // The caller's own problems keep their code.
            Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted => {
                Status::new(s.code(), message)
            }
            Code::DeadlineExceeded | Code::Cancelled => Status::new(s.code(), message),
            _ => Status::unavailable(format!("{message}; retry")),
        }
    }
}

impl Customer360 {
    /// Exports customer `id` for `principal` (see the contract).
    pub async fn export(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<pb::ExportCustomerDataResponse, Status> {
        for scope in SCOPES {
            require_scope(principal, scope).map_err(|s| {
                Status::permission_denied(format!(
                    "{}: an export reads every service's data",
                    s.message()
                ))
            })?;
        }
        let mut profile = self.profile_client(principal)?;
        let found = profile
            .get_customer(ppb::GetCustomerRequest {
                customer_id: id.to_string(),
            })
            .await
            .map(tonic::Response::into_inner);
        let customer = match found {
            Err(s) if s.code() == Code::NotFound => {
                return Err(ApiError::not_found("customer", id).into());
            }
            other => other.map_err(part("profile"))?.customer.ok_or_else(|| {
                Status::unavailable("the profile service answered without a customer; retry")
            })?,
        };
        // A merged id exports the survivor.
        let id = customer.customer_id.clone();
        let person = customer.kind == ppb::CustomerKind::Person as i32;

        let consents = all_pages("consent records", |page_token| {
            let mut c = profile.clone();
            let req = ppb::ListConsentHistoryRequest {
                customer_id: id.clone(),
                page_size: PAGE,
                page_token,
                ..Default::default()
            };
            async move {
                let r = c.list_consent_history(req).await?.into_inner();
                Ok((r.records, r.next_page_token))
            }
        });
        let links = all_pages("contact links", |page_token| {
            let mut c = profile.clone();
            let id = id.clone();
            async move {
                let r = if person {
                    let req = ppb::ListOrganizationsRequest {
                        person_customer_id: id,
                        include_ended: true,
                        page_size: PAGE,
                        page_token,
                    };
                    c.list_organizations(req).await?.into_inner().into()
                } else {
                    let req = ppb::ListContactsRequest {
                        organization_customer_id: id,
                        include_ended: true,
                        page_size: PAGE,
                        page_token,
                        ..Default::default()
                    };
                    c.list_contacts(req).await?.into_inner().into()
                };
                let Links(links, next) = r;
                Ok((links, next))
            }
        });
        let interactions_client = self.interaction_client(principal)?;
        let interactions = all_pages("interactions", |page_token| {
            let mut c = interactions_client.clone();
            let req = ipb::ListInteractionsRequest {
                customer_id: id.clone(),
                order: ipb::TimelineOrder::OldestFirst as i32,
                page_size: PAGE,
                page_token,
                ..Default::default()
            };
            async move {
                let r = c.list_interactions(req).await?.into_inner();
                Ok((r.interactions, r.next_page_token))
            }
        });
        let summary = async {
            let req = ipb::GetCustomerSummaryRequest {
                customer_id: id.clone(),
                as_of: None,
            };
            let r = interactions_client.clone().get_customer_summary(req).await;
            optional(r.map(|r| r.into_inner().summary))
        };
        let segmentation = self.segmentation_client(principal)?;
        let segments = all_pages("segment memberships", |page_token| {
            let mut c = segmentation.clone();
            let req = spb::GetCustomerSegmentsRequest {
                customer_id: id.clone(),
                page_size: PAGE,
                page_token,
            };
            async move {
                let r = c.get_customer_segments(req).await?.into_inner();
                Ok((r.memberships, r.next_page_token))
            }
        });
        let classification = async {
            let req = spb::ClassifyCustomerRequest {
                customer_id: id.clone(),
            };
            let r = segmentation.clone().classify_customer(req).await;
            optional(r.map(|r| r.into_inner().classification))
        };
        let valuation = self.valuation_client(principal)?;
        let value = async {
            let req = vpb::GetCustomerValueRequest {
                customer_id: id.clone(),
                ..Default::default()
            };
            let r = valuation.clone().get_customer_value(req).await;
            optional(r.map(|r| r.into_inner().value))
        };
        let profitability = async {
            let req = vpb::GetCustomerProfitabilityRequest {
                customer_id: id.clone(),
                ..Default::default()
            };
            match valuation.clone().get_customer_profitability(req).await {
                // No cost model: nothing is priced for anyone.
                Err(s) if s.code() == Code::FailedPrecondition => Ok(None),
                r => optional(r.map(|r| r.into_inner().profitability)),
            }
        };
        let engagement = self.engagement_client(principal)?;
        let decisions = all_pages("decisions", |page_token| {
            let mut c = engagement.clone();
            let req = epb::ListDecisionsRequest {
                customer_id: id.clone(),
                page_size: PAGE,
                page_token,
                ..Default::default()
            };
            async move {
                let r = c.list_decisions(req).await;
                match r {
                    // Unknown to engagement: no decision was ever made.
                    Err(s) if s.code() == Code::NotFound => Ok((Vec::new(), String::new())),
                    r => {
                        let r = r?.into_inner();
                        Ok((r.decisions, r.next_page_token))
                    }
                }
            }
        });
        let (
            consents,
            links,
            interactions,
            summary,
            segments,
            classification,
            value,
            profitability,
            decisions,
        ) = tokio::join!(
            consents,
            links,
            interactions,
            summary,
            segments,
            classification,
            value,
            profitability,
            decisions
        );
        Ok(pb::ExportCustomerDataResponse {
            customer_id: id.clone(),
            export_time: Some(rapport_kit::convert::timestamp(chrono::Utc::now())),
            profile: Some(customer),
            consent_history: consents.map_err(part("consent history"))?,
            contact_links: links.map_err(part("contact links"))?,
            interactions: interactions.map_err(part("interactions"))?,
            interaction_summary: summary.map_err(part("interaction summary"))?,
            segments: segments.map_err(part("segments"))?,
            classification: classification.map_err(part("classification"))?,
            value: value.map_err(part("value"))?,
            profitability: profitability.map_err(part("profitability"))?,
            decisions: decisions.map_err(part("decisions"))?,
        })
    }
}

/// One page of contact links, from either direction.
struct Links(Vec<ppb::ContactLink>, String);

impl From<ppb::ListOrganizationsResponse> for Links {
    fn from(r: ppb::ListOrganizationsResponse) -> Self {
        Links(r.links, r.next_page_token)
    }
}

impl From<ppb::ListContactsResponse> for Links {
    fn from(r: ppb::ListContactsResponse) -> Self {
        Links(r.links, r.next_page_token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_are_followed_to_the_end_and_capped() {
        let got = all_pages("items", |token| async move {
            Ok(match token.as_str() {
                "" => (vec![1, 2], "b".to_string()),
                "b" => (vec![3], "c".to_string()),
                _ => (vec![4], String::new()),
            })
        })
        .await
        .unwrap();
        assert_eq!(got, [1, 2, 3, 4]);

        let endless = all_pages("items", |_| async {
            Ok((vec![0u8; PAGE as usize], "more".to_string()))
        })
        .await
        .unwrap_err();
        assert_eq!(endless.code(), Code::ResourceExhausted);
        assert!(endless.message().contains("100000 items"), "{endless:?}");
    }

    #[test]
    fn a_part_that_fails_fails_the_export_with_its_name() {
        let s = part("segments")(Status::internal("boom"));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(s.message().contains("segments") && s.message().contains("retry"));
        let s = part("value")(Status::permission_denied("missing scope"));
        assert_eq!(s.code(), Code::PermissionDenied);
        assert_eq!(
            optional::<u8>(Err(Status::not_found("no value"))).unwrap(),
            None
        );
    }
}

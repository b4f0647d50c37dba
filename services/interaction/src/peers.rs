//! The profile service, as this service calls it: identity resolution and
//! existence checks of customer ids (its change feed is read with the kit's
//! `PeerFeed`).

use std::collections::HashSet;

use rapport_kit::context::CallContext;
use rapport_kit::error::{ApiError, Violation};
use rapport_kit::peer::{self, Peer, PeerChannel};
use rapport_proto::rapport::common::v1::Identifier;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::profile::v1::{
    BatchGetCustomersRequest, ResolveIdentitiesRequest, ResolveIdentityRequest,
    resolve_identities_result, resolve_identity_response,
};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;
use uuid::Uuid;

use crate::domain::validate::IdentifierInput;

type Client = ProfileServiceClient<PeerChannel>;

/// A client of the profile service (cheap to clone).
#[derive(Clone)]
pub struct Profile {
    client: Client,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Profile(..)")
    }
}

/// What resolving a set of identifiers gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The customer (found or created).
    Customer {
        /// Its id.
        id: Uuid,
        /// This call created it.
        created: bool,
    },
    /// The identifiers belong to different customers (named in the message).
    Conflict(String),
    /// The profile service refused the identifiers.
    Invalid(Vec<Violation>),
}

/// Most identifier sets per `ResolveIdentities` call.
const RESOLVE_BATCH: usize = 1000;

fn identifier(i: &IdentifierInput) -> Identifier {
    Identifier {
        kind: i.kind,
        system: i.system.clone(),
        value: i.value.clone(),
    }
}

fn conflict(c: &rapport_proto::rapport::profile::v1::IdentityConflict) -> Resolution {
    let ids: Vec<String> = c.matches.iter().map(|m| m.customer_id.clone()).collect();
    Resolution::Conflict(format!(
        "the identifiers belong to different customers: {}; merge them or fix the identifiers",
        ids.join(", ")
    ))
}

/// Maps a failed call to the profile service.
fn unavailable(s: &Status) -> ApiError {
    peer::error("profile", s)
}

impl Profile {
    /// A client of the profile service `peer`, connecting on first use.
    pub fn new(peer: &Peer) -> Self {
        Self {
            client: ProfileServiceClient::new(peer.channel())
                .max_decoding_message_size(peer::MAX_MESSAGE_BYTES),
        }
    }

    /// Resolves identifiers to a customer (finding or creating it).
    pub async fn resolve(
        &self,
        ctx: &CallContext,
        ids: &[IdentifierInput],
    ) -> Result<Resolution, ApiError> {
        let mut req = Request::new(ResolveIdentityRequest {
            identifiers: ids.iter().map(identifier).collect(),
            traits: None,
            lookup_only: false,
        });
        ctx.write(req.metadata_mut());
        let answer = match self.client.clone().resolve_identity(req).await {
            Ok(a) => a.into_inner(),
            Err(s) if s.code() == Code::InvalidArgument => {
                let details = s.get_error_details();
                let mut list: Vec<Violation> = details
                    .bad_request()
                    .map(|b| {
                        b.field_violations
                            .iter()
                            .map(|f| Violation {
                                field: format!("customer.identifiers.{}", f.field),
                                description: f.description.clone(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if list.is_empty() {
                    list.push(Violation {
                        field: "customer.identifiers".into(),
                        description: s.message().to_string(),
                    });
                }
                return Ok(Resolution::Invalid(list));
            }
            Err(s) => return Err(unavailable(&s)),
        };
        match answer.result {
            Some(resolve_identity_response::Result::Resolved(r)) => {
                let id = r
                    .customer
                    .as_ref()
                    .and_then(|c| Uuid::parse_str(&c.customer_id).ok())
                    .ok_or_else(|| {
                        ApiError::internal("ResolveIdentity answered without a customer id")
                    })?;
                Ok(Resolution::Customer {
                    id,
                    created: r.created,
                })
            }
            Some(resolve_identity_response::Result::Conflict(c)) => Ok(conflict(&c)),
            None => Err(ApiError::internal("ResolveIdentity answered nothing")),
        }
    }

    /// Resolves many identifier sets (finding or creating each customer)
    /// with one `ResolveIdentities` call per 1,000 sets; one answer per set,
    /// in order.
    pub async fn resolve_many(
        &self,
        ctx: &CallContext,
        sets: &[Vec<IdentifierInput>],
    ) -> Result<Vec<Resolution>, ApiError> {
        let mut out = Vec::with_capacity(sets.len());
        for chunk in sets.chunks(RESOLVE_BATCH) {
            let mut req = Request::new(ResolveIdentitiesRequest {
                requests: chunk
                    .iter()
                    .map(|ids| ResolveIdentityRequest {
                        identifiers: ids.iter().map(identifier).collect(),
                        traits: None,
                        lookup_only: false,
                    })
                    .collect(),
            });
            ctx.write(req.metadata_mut());
            let answer = self
                .client
                .clone()
                .resolve_identities(req)
                .await
                .map_err(|s| unavailable(&s))?
                .into_inner();
            if answer.results.len() != chunk.len() {
                return Err(ApiError::internal(format!(
                    "ResolveIdentities answered {} results for {} sets",
                    answer.results.len(),
                    chunk.len()
                )));
            }
            for r in answer.results {
                out.push(match r.result {
                    Some(resolve_identities_result::Result::Resolved(r)) => {
                        let id = r
                            .customer
                            .as_ref()
                            .and_then(|c| Uuid::parse_str(&c.customer_id).ok())
                            .ok_or_else(|| {
                                ApiError::internal(
                                    "ResolveIdentities answered without a customer id",
                                )
                            })?;
                        Resolution::Customer {
                            id,
                            created: r.created,
                        }
                    }
                    Some(resolve_identities_result::Result::Conflict(c)) => conflict(&c),
                    Some(resolve_identities_result::Result::Refused(r))
                        if r.code == Code::InvalidArgument as i32 =>
                    {
                        let mut list: Vec<Violation> = r
                            .field_violations
                            .iter()
                            .map(|f| Violation {
                                field: format!("customer.identifiers.{}", f.field),
                                description: f.description.clone(),
                            })
                            .collect();
                        if list.is_empty() {
                            list.push(Violation {
                                field: "customer.identifiers".into(),
                                description: r.message.clone(),
                            });
                        }
                        Resolution::Invalid(list)
                    }
                    Some(resolve_identities_result::Result::Refused(r)) => {
                        return Err(ApiError::internal(format!(
                            "ResolveIdentities refused a set with code {}: {}",
                            r.code, r.message
                        )));
                    }
                    None => return Err(ApiError::internal("ResolveIdentities answered nothing")),
                });
            }
        }
        Ok(out)
    }

    /// Which of `ids` the profile service knows (merged ids count as known).
    pub async fn existing(
        &self,
        ctx: &CallContext,
        ids: &[Uuid],
    ) -> Result<HashSet<Uuid>, ApiError> {
        let mut found = HashSet::new();
        for chunk in ids.chunks(1000) {
            let mut req = Request::new(BatchGetCustomersRequest {
                customer_ids: chunk.iter().map(|u| u.to_string()).collect(),
            });
            ctx.write(req.metadata_mut());
            let answer = self
                .client
                .clone()
                .batch_get_customers(req)
                .await
                .map_err(|s| unavailable(&s))?
                .into_inner();
            let missing: HashSet<Uuid> = answer
                .missing_customer_ids
                .iter()
                .filter_map(|s| Uuid::parse_str(s).ok())
                .collect();
            found.extend(chunk.iter().filter(|id| !missing.contains(id)));
        }
        Ok(found)
    }
}

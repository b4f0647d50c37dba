//! `rapport.gateway.v1.Customer360Service`: one customer's profile, interaction
//! summary, latest interactions, segments, classification and value, fetched
//! from the services concurrently under one deadline. A part that fails or is
//! late is left empty with its status; the call still answers.

use std::sync::Arc;
use std::time::Duration;

use rapport_kit::ApiError;
use rapport_kit::context::{CallContext, InternalCredential};
use rapport_kit::deadline::parse_grpc_timeout;
use rapport_proto::rapport::engagement::v1 as epb;
use rapport_proto::rapport::gateway::v1 as pb;
use rapport_proto::rapport::gateway::v1::customer360_service_server::Customer360Service;
use rapport_proto::rapport::interaction::v1 as ipb;
use rapport_proto::rapport::profile::v1 as ppb;
use rapport_proto::rapport::segmentation::v1 as spb;
use rapport_proto::rapport::valuation::v1 as vpb;
use tokio::time::Instant;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::auth::{Authenticator, Principal, require_scope};
use crate::front::Backends;

/// The budget of a call that sets no deadline.
pub const DEFAULT_BUDGET: Duration = Duration::from_secs(2);
/// Kept from the client's deadline to assemble the answer.
const ASSEMBLY: Duration = Duration::from_millis(50);

/// The Customer360Service implementation.
pub struct Customer360 {
    auth: Arc<Authenticator>,
    backends: Backends,
    token: Option<String>,
}

impl Customer360 {
    /// Fans out to `backends`, authenticating callers with `auth` and
    /// presenting `token` to the services.
    pub fn new(auth: Arc<Authenticator>, backends: Backends, token: Option<String>) -> Self {
        Self {
            auth,
            backends,
            token,
        }
    }
}

/// Outgoing metadata of a part's call: the caller's tenant and key, the
/// internal credential, the trace.
#[derive(Clone)]
pub(crate) struct OnBehalf {
    context: CallContext,
    credential: InternalCredential,
}

impl Interceptor for OnBehalf {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.context.write(req.metadata_mut());
        self.credential.call(req)
    }
}

type Part<T> = Result<T, Status>;

fn status_of<T>(part: &str, result: &Part<T>) -> pb::PartStatus {
    let (code, message) = match result {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    };
    pb::PartStatus {
        part: part.to_string(),
        code: code as i32,
        code_name: rapport_kit::metrics::code_name(code).to_string(),
        message,
    }
}

/// The non-profile parts, fetched for one customer id.
struct Others {
    summary: Part<Option<ipb::CustomerSummary>>,
    latest: Part<Vec<ipb::Interaction>>,
    segments: Part<Vec<spb::SegmentMembership>>,
    classification: Part<Option<spb::Classification>>,
    value: Part<Option<vpb::CustomerValue>>,
    actions: Part<Vec<epb::NextBestAction>>,
}

pub(crate) type OnBehalfOf = tonic::service::interceptor::InterceptedService<Channel, OnBehalf>;

impl Customer360 {
    pub(crate) fn profile_client(
        &self,
        principal: &Principal,
    ) -> Result<ppb::profile_service_client::ProfileServiceClient<OnBehalfOf>, Status> {
        Ok(
            ppb::profile_service_client::ProfileServiceClient::with_interceptor(
                self.channel("profile")?,
                self.on_behalf(principal),
            ),
        )
    }

    pub(crate) fn interaction_client(
        &self,
        principal: &Principal,
    ) -> Result<ipb::interaction_service_client::InteractionServiceClient<OnBehalfOf>, Status> {
        Ok(
            ipb::interaction_service_client::InteractionServiceClient::with_interceptor(
                self.channel("interaction")?,
                self.on_behalf(principal),
            ),
        )
    }

    pub(crate) fn segmentation_client(
        &self,
        principal: &Principal,
    ) -> Result<spb::segmentation_service_client::SegmentationServiceClient<OnBehalfOf>, Status>
    {
        Ok(
            spb::segmentation_service_client::SegmentationServiceClient::with_interceptor(
                self.channel("segmentation")?,
                self.on_behalf(principal),
            ),
        )
    }

    pub(crate) fn valuation_client(
        &self,
        principal: &Principal,
    ) -> Result<vpb::valuation_service_client::ValuationServiceClient<OnBehalfOf>, Status> {
        Ok(
            vpb::valuation_service_client::ValuationServiceClient::with_interceptor(
                self.channel("valuation")?,
                self.on_behalf(principal),
            ),
        )
    }

    pub(crate) fn engagement_client(
        &self,
        principal: &Principal,
    ) -> Result<epb::engagement_service_client::EngagementServiceClient<OnBehalfOf>, Status> {
        Ok(
            epb::engagement_service_client::EngagementServiceClient::with_interceptor(
                self.channel("engagement")?,
                self.on_behalf(principal),
            ),
        )
    }

    fn channel(&self, area: &str) -> Result<Channel, Status> {
        self.backends.get(area).ok_or_else(|| {
            Status::unavailable(format!(
                "no {area} service is configured behind this gateway"
            ))
        })
    }

    fn on_behalf(&self, principal: &Principal) -> OnBehalf {
        OnBehalf {
            context: CallContext {
                tenant_id: principal.tenant_id,
                principal: principal.key_id.to_string(),
                time_zone: Some(principal.time_zone.clone()),
            },
            credential: InternalCredential::new(self.token.as_deref()),
        }
    }

    async fn within<T>(
        deadline: Instant,
        fut: impl std::future::Future<Output = Part<T>>,
    ) -> Part<T> {
        match tokio::time::timeout_at(deadline, fut).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(
                "no answer within the call's budget",
            )),
        }
    }

    async fn profile(
        &self,
        principal: &Principal,
        id: &str,
        deadline: Instant,
    ) -> Part<ppb::GetCustomerResponse> {
        let mut client = self.profile_client(principal)?;
        let request = ppb::GetCustomerRequest {
            customer_id: id.to_string(),
        };
        Self::within(deadline, async move {
            client.get_customer(request).await.map(Response::into_inner)
        })
        .await
    }

    async fn others(
        &self,
        principal: &Principal,
        id: &str,
        max_interactions: i32,
        deadline: Instant,
    ) -> Others {
        let scoped = |scope: &str| require_scope(principal, scope);
        let summary = async {
            scoped("interaction:read")?;
            let mut c = self.interaction_client(principal)?;
            let req = ipb::GetCustomerSummaryRequest {
                customer_id: id.to_string(),
                as_of: None,
            };
            Self::within(deadline, async move {
                c.get_customer_summary(req)
                    .await
                    .map(|r| r.into_inner().summary)
            })
            .await
        };
        let latest = async {
            scoped("interaction:read")?;
            let mut c = self.interaction_client(principal)?;
            let req = ipb::ListInteractionsRequest {
                customer_id: id.to_string(),
                order: ipb::TimelineOrder::NewestFirst as i32,
                page_size: max_interactions,
                ..Default::default()
            };
            Self::within(deadline, async move {
                c.list_interactions(req)
                    .await
                    .map(|r| r.into_inner().interactions)
            })
            .await
        };
        let segments = async {
            scoped("segmentation:read")?;
            let mut c = self.segmentation_client(principal)?;
            let req = spb::GetCustomerSegmentsRequest {
                customer_id: id.to_string(),
                page_size: 1000,
                page_token: String::new(),
            };
            Self::within(deadline, async move {
                c.get_customer_segments(req)
                    .await
                    .map(|r| r.into_inner().memberships)
            })
            .await
        };
        let classification = async {
            scoped("segmentation:read")?;
            let mut c = self.segmentation_client(principal)?;
            let req = spb::ClassifyCustomerRequest {
                customer_id: id.to_string(),
            };
            Self::within(deadline, async move {
                c.classify_customer(req)
                    .await
                    .map(|r| r.into_inner().classification)
            })
            .await
        };
        let value = async {
            scoped("valuation:read")?;
            let mut c = self.valuation_client(principal)?;
            let req = vpb::GetCustomerValueRequest {
                customer_id: id.to_string(),
                as_of: None,
                ..Default::default()
            };
            Self::within(deadline, async move {
                c.get_customer_value(req)
                    .await
                    .map(|r| r.into_inner().value)
            })
            .await
        };
        let actions = async {
            scoped("engagement:read")?;
            let mut c = self.engagement_client(principal)?;
            let req = epb::GetNextBestActionsRequest {
                customer_id: id.to_string(),
                limit: 3,
                preview: true,
                ..Default::default()
            };
            Self::within(deadline, async move {
                c.get_next_best_actions(req)
                    .await
                    .map(|r| r.into_inner().actions)
            })
            .await
        };
        let (summary, latest, segments, classification, value, actions) =
            tokio::join!(summary, latest, segments, classification, value, actions);
        Others {
            summary,
            latest,
            segments,
            classification,
            value,
            actions,
        }
    }
}

#[tonic::async_trait]
impl Customer360Service for Customer360 {
    async fn get_customer360(
        &self,
        req: Request<pb::GetCustomer360Request>,
    ) -> Result<Response<pb::GetCustomer360Response>, Status> {
        let headers = req.metadata().clone().into_headers();
        let principal = self.auth.authenticate(&headers).await?;
        require_scope(&principal, "profile:read")?;
        self.auth.admit(&principal)?;
        let budget = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map_or(DEFAULT_BUDGET, |d| {
                d.saturating_sub(ASSEMBLY).min(DEFAULT_BUDGET)
            });
        let deadline = Instant::now() + budget;
        let r = req.into_inner();
        let mut v = rapport_kit::Violations::new();
        v.check(
            Uuid::parse_str(&r.customer_id).is_err(),
            "customer_id",
            "must be a customer id (a UUID)",
        );
        v.check(
            r.max_interactions < 0,
            "max_interactions",
            "must not be negative",
        );
        v.finish()?;
        let max_interactions = match r.max_interactions {
            0 => 20,
            n => n.min(200),
        };

        let (profile, mut others) = tokio::join!(
            self.profile(&principal, &r.customer_id, deadline),
            self.others(&principal, &r.customer_id, max_interactions, deadline)
        );
        let mut customer_id = r.customer_id.clone();
        if let Err(s) = &profile
            && s.code() == Code::NotFound
        {
            return Err(ApiError::not_found("customer", r.customer_id).into());
        }
        // A merged id: the profile holds the survivor; ask again for it.
        let survivor = profile
            .as_ref()
            .ok()
            .filter(|p| p.merged)
            .and_then(|p| p.customer.as_ref())
            .map(|c| c.customer_id.clone())
            .filter(|s| *s != customer_id);
        if let Some(survivor) = survivor {
            others = self
                .others(&principal, &survivor, max_interactions, deadline)
                .await;
            customer_id = survivor;
        }

        let part_statuses = vec![
            status_of("profile", &profile),
            status_of("interaction_summary", &others.summary),
            status_of("latest_interactions", &others.latest),
            status_of("segments", &others.segments),
            status_of("classification", &others.classification),
            status_of("value", &others.value),
            status_of("next_best_actions", &others.actions),
        ];
        let complete = part_statuses.iter().all(|p| p.code == Code::Ok as i32);
        Ok(Response::new(pb::GetCustomer360Response {
            customer_id,
            profile: profile.ok().and_then(|p| p.customer),
            interaction_summary: others.summary.ok().flatten(),
            latest_interactions: others.latest.unwrap_or_default(),
            segments: others.segments.unwrap_or_default(),
            classification: others.classification.ok().flatten(),
            value: others.value.ok().flatten(),
            next_best_actions: others.actions.unwrap_or_default(),
            part_statuses,
            complete,
            read_time: Some(rapport_kit::convert::timestamp(chrono::Utc::now())),
        }))
    }

    async fn export_customer_data(
        &self,
        req: Request<pb::ExportCustomerDataRequest>,
    ) -> Result<Response<pb::ExportCustomerDataResponse>, Status> {
        let headers = req.metadata().clone().into_headers();
        let principal = self.auth.authenticate(&headers).await?;
        self.auth.admit(&principal)?;
        let id = &req.get_ref().customer_id;
        let mut v = rapport_kit::Violations::new();
        v.check(
            Uuid::parse_str(id).is_err(),
            "customer_id",
            "must be a customer id (a UUID)",
        );
        v.finish()?;
        Ok(Response::new(self.export(&principal, id).await?))
    }
}

//! Who is calling: the tenant and principal the gateway bound to a call, and
//! the internal credential that proves the call came through the gateway or a
//! peer service.

use std::task::{Context, Poll};

use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::error::ApiError;

/// Metadata key carrying the tenant id (a UUID).
pub const TENANT_HEADER: &str = "x-rapport-tenant";
/// Metadata key carrying the principal (the API key id, or a service name).
pub const PRINCIPAL_HEADER: &str = "x-rapport-principal";
/// Metadata key carrying the internal credential.
pub const INTERNAL_TOKEN_HEADER: &str = "x-rapport-internal-token";
/// Metadata key carrying the tenant's time zone (an IANA name), which the
/// gateway binds from the tenant like its id.
pub const TIME_ZONE_HEADER: &str = "x-rapport-time-zone";

/// The tenant and principal of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallContext {
    /// The tenant whose data the call may read and change, and no other.
    pub tenant_id: Uuid,
    /// Who is calling, for audit: an API key id or a service name.
    pub principal: String,
    /// The tenant's time zone (an IANA name): the days of a request that
    /// names no zone of its own. None when the call carries none (UTC).
    pub time_zone: Option<String>,
}

impl CallContext {
    /// Reads the tenant and principal from call metadata. A call without a
    /// valid tenant is refused with UNAUTHENTICATED.
    pub fn from_metadata(md: &MetadataMap) -> Result<Self, ApiError> {
        let raw = md.get(TENANT_HEADER).and_then(|v| v.to_str().ok()).ok_or_else(|| {
            ApiError::Unauthenticated(format!(
                "no tenant on this call: call through the gateway with an API key (or set `{TENANT_HEADER}` on a development port)"
            ))
        })?;
        let tenant_id = Uuid::parse_str(raw.trim()).map_err(|_| {
            ApiError::Unauthenticated(format!("`{TENANT_HEADER}` is not a tenant id (a UUID)"))
        })?;
        let principal = md
            .get(PRINCIPAL_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("anonymous")
            .to_string();
        let time_zone = md
            .get(TIME_ZONE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|z| !z.is_empty())
            .map(str::to_string);
        Ok(Self {
            tenant_id,
            principal,
            time_zone,
        })
    }

    /// The time zone of a request's days: `requested` when the request
    /// names one, else the tenant's, else "" (UTC).
    pub fn zone_or_tenant<'a>(&'a self, requested: &'a str) -> &'a str {
        if requested.is_empty() {
            self.time_zone.as_deref().unwrap_or("")
        } else {
            requested
        }
    }

    /// Reads the context of a tonic request.
    pub fn of<T>(req: &tonic::Request<T>) -> Result<Self, tonic::Status> {
        Self::from_metadata(req.metadata()).map_err(Into::into)
    }

    /// Writes this context into outgoing metadata (service-to-service calls).
    pub fn write(&self, md: &mut MetadataMap) {
        if let Ok(v) = self.tenant_id.to_string().parse() {
            md.insert(TENANT_HEADER, v);
        }
        if let Ok(v) = self.principal.parse() {
            md.insert(PRINCIPAL_HEADER, v);
        }
        if let Some(v) = self.time_zone.as_ref().and_then(|z| z.parse().ok()) {
            md.insert(TIME_ZONE_HEADER, v);
        }
    }
}

/// Constant-time equality, so the credential check leaks no timing.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Paths that answer without the internal credential: health and reflection.
fn is_open_path(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/") || path.starts_with("/grpc.reflection.")
}

/// A tower layer refusing, with UNAUTHENTICATED, every call that does not carry
/// the internal credential (except health checks and reflection).
#[derive(Clone, Debug)]
pub struct InternalAuthLayer {
    token: Option<std::sync::Arc<str>>,
}

impl InternalAuthLayer {
    /// Requires `token` when `Some`; lets everything through when `None`.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.map(Into::into),
        }
    }
}

impl<S> tower::Layer<S> for InternalAuthLayer {
    type Service = InternalAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        InternalAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service made by [`InternalAuthLayer`].
#[derive(Clone, Debug)]
pub struct InternalAuth<S> {
    inner: S,
    token: Option<std::sync::Arc<str>>,
}

impl<S, B> tower::Service<http::Request<B>> for InternalAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<Result<http::Response<tonic::body::Body>, S::Error>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if let Some(expected) = &self.token {
            let ok = is_open_path(req.uri().path())
                || req
                    .headers()
                    .get(INTERNAL_TOKEN_HEADER)
                    .is_some_and(|v| constant_time_eq(v.as_bytes(), expected.as_bytes()));
            if !ok {
                let status = tonic::Status::unauthenticated(
                    "this port only accepts calls from the Rapport gateway and services; call the gateway with an API key",
                );
                return futures::future::Either::Right(std::future::ready(Ok(status.into_http())));
            }
        }
        futures::future::Either::Left(self.inner.call(req))
    }
}

/// Adds the internal credential and trace context to outgoing calls to peers.
#[derive(Clone, Debug, Default)]
pub struct InternalCredential {
    token: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>,
}

impl InternalCredential {
    /// Presents `token` (when set) on every call.
    pub fn new(token: Option<&str>) -> Self {
        Self {
            token: token.and_then(|t| t.parse().ok()),
        }
    }
}

impl tonic::service::Interceptor for InternalCredential {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.token {
            req.metadata_mut().insert(INTERNAL_TOKEN_HEADER, t.clone());
        }
        tonic::service::Interceptor::call(&mut crate::telemetry::TracePropagation, req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_is_required_and_validated() {
        let mut md = MetadataMap::new();
        assert!(CallContext::from_metadata(&md).is_err());
        md.insert(TENANT_HEADER, "not-a-uuid".parse().unwrap());
        assert!(CallContext::from_metadata(&md).is_err());
        let id = Uuid::new_v4();
        md.insert(TENANT_HEADER, id.to_string().parse().unwrap());
        md.insert(PRINCIPAL_HEADER, "key-1".parse().unwrap());
        let ctx = CallContext::from_metadata(&md).unwrap();
        assert_eq!(ctx.tenant_id, id);
        assert_eq!(ctx.principal, "key-1");
        assert_eq!(ctx.time_zone, None);
        assert_eq!(ctx.zone_or_tenant(""), "");
    }

    #[test]
    fn the_tenants_time_zone_travels_and_yields_to_the_requests() {
        let mut md = MetadataMap::new();
        md.insert(TENANT_HEADER, Uuid::new_v4().to_string().parse().unwrap());
        md.insert(TIME_ZONE_HEADER, "Asia/Tokyo".parse().unwrap());
        let ctx = CallContext::from_metadata(&md).unwrap();
        assert_eq!(ctx.time_zone.as_deref(), Some("Asia/Tokyo"));
        assert_eq!(ctx.zone_or_tenant(""), "Asia/Tokyo");
        assert_eq!(ctx.zone_or_tenant("Europe/Madrid"), "Europe/Madrid");
        let mut out = MetadataMap::new();
        ctx.write(&mut out);
        assert_eq!(CallContext::from_metadata(&out).unwrap(), ctx);
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}

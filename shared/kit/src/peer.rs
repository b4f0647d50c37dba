//! Calling another Rapport service: one way to build the channel (lazy
//! connection, connect timeout, the internal credential and trace context on
//! every call, message limits) and one mapping of a peer's failures to what
//! this service answers its own caller.

use std::time::Duration;

use tonic::codegen::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::context::InternalCredential;
use crate::error::ApiError;

/// A channel to a peer: every call carries the internal credential and the
/// caller's trace context.
pub type PeerChannel = InterceptedService<Channel, InternalCredential>;

/// Largest message this service reads from a peer (feeds, exports).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How often an open connection to a peer is pinged.
pub const KEEPALIVE: Duration = Duration::from_secs(10);

/// How long a ping may go unanswered before the connection is taken as dead.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A peer service: its name (for messages and logs) and a channel to it,
/// connected on first use.
#[derive(Clone)]
pub struct Peer {
    name: &'static str,
    channel: PeerChannel,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Peer({})", self.name)
    }
}

impl Peer {
    /// The `name` service at `url`, called with `token` as the internal
    /// credential. Fails only when `url` is not a URL.
    pub fn new(name: &'static str, url: &str, token: Option<&str>) -> Result<Self, String> {
        let endpoint = endpoint(url)
            .map_err(|e| format!("the {name} service URL {url:?} is not a URL: {e}"))?;
        Ok(Self {
            name,
            channel: InterceptedService::new(
                endpoint.connect_lazy(),
                InternalCredential::new(token),
            ),
        })
    }

    /// The service's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// A channel for a generated client, e.g.
    /// `ProfileServiceClient::new(peer.channel()).max_decoding_message_size(MAX_MESSAGE_BYTES)`.
    pub fn channel(&self) -> PeerChannel {
        self.channel.clone()
    }

    /// What this service answers when a call to the peer failed with `s`
    /// (see [`error`]).
    pub fn error(&self, s: &Status) -> ApiError {
        error(self.name, s)
    }
}

/// An endpoint for calling another Rapport process at `url` (a service
/// calling a peer, the gateway calling a backend): connect timeout, no
/// Nagle's delay, and keepalive pings, so that a peer whose host vanished (no
/// reset ever comes) is noticed within [`KEEPALIVE`] + [`KEEPALIVE_TIMEOUT`]
/// and calls on the connection fail UNAVAILABLE instead of waiting for their
/// deadline.
pub fn endpoint(url: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// What a service answers its caller when a call to peer `service` failed
/// with `s`: the peer shedding the call is RESOURCE_EXHAUSTED with the
/// peer's retry delay; the peer being down or interrupted is UNAVAILABLE
/// (retry later); its deadline passing is DEADLINE_EXCEEDED; anything else
/// is a fault between Rapport's services, INTERNAL (logged, not shown).
/// Answers a caller should see as they are (NOT_FOUND of a looked-up id,
/// INVALID_ARGUMENT of a forwarded value) are mapped by the calling code
/// before it falls back to this.
pub fn error(service: &str, s: &Status) -> ApiError {
    match s.code() {
        // The peer shed the call (the tenant's budget there, or its pool):
        // the caller is told to retry after the delay the peer gave.
        Code::ResourceExhausted => {
            use tonic_types::StatusExt;
            let retry_after = s
                .get_error_details()
                .retry_info()
                .and_then(|r| r.retry_delay)
                .or(Some(crate::error::BUSY_RETRY));
            tracing::warn!(service, message = s.message(), "peer service shed the call");
            ApiError::ResourceExhausted {
                message: format!("the {service} service is busy; retry later"),
                retry_after,
            }
        }
        Code::Unavailable | Code::Unknown | Code::Aborted | Code::Cancelled => {
            tracing::warn!(service, code = ?s.code(), message = s.message(), "peer service unavailable");
            ApiError::Unavailable(format!("the {service} service is unavailable; retry later"))
        }
        Code::DeadlineExceeded => ApiError::DeadlineExceeded(format!(
            "the {service} service did not answer before the deadline"
        )),
        _ => ApiError::internal(format!(
            "{service} service answered {:?}: {}",
            s.code(),
            s.message()
        )),
    }
}

/// Whether the server behind `channel` reports `service` SERVING on
/// `grpc.health.v1.Health/Check` within `timeout` ("" asks about the server
/// as a whole), asked with the internal credential `token` when given (a
/// service that requires it answers only callers presenting it). Any
/// failure, refusal or silence is "no": callers poll, or take a replica out
/// of rotation.
pub async fn reports_serving(
    channel: Channel,
    service: &str,
    token: Option<&str>,
    timeout: Duration,
) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let mut client = HealthClient::with_interceptor(channel, InternalCredential::new(token));
    let request = HealthCheckRequest {
        service: service.to_string(),
    };
    matches!(
        tokio::time::timeout(timeout, client.check(request)).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failures_map_to_what_a_caller_can_act_on() {
        let code = |c: Code| error("profile", &Status::new(c, "boom")).code();
        for c in [
            Code::Unavailable,
            Code::Unknown,
            Code::Aborted,
            Code::Cancelled,
        ] {
            assert_eq!(code(c), Code::Unavailable, "{c:?}");
        }
        // Shed by the peer: RESOURCE_EXHAUSTED with the peer's retry delay.
        let shed: Status = ApiError::ResourceExhausted {
            message: "busy".into(),
            retry_after: Some(std::time::Duration::from_millis(1500)),
        }
        .into();
        let status: Status = error("profile", &shed).into();
        assert_eq!(status.code(), Code::ResourceExhausted);
        use tonic_types::StatusExt;
        assert_eq!(
            status
                .get_error_details()
                .retry_info()
                .and_then(|r| r.retry_delay),
            Some(std::time::Duration::from_millis(1500))
        );
        assert_eq!(code(Code::DeadlineExceeded), Code::DeadlineExceeded);
        assert_eq!(code(Code::FailedPrecondition), Code::Internal);
        assert_eq!(code(Code::PermissionDenied), Code::Internal);
        let msg = error("profile", &Status::unavailable("x")).to_string();
        assert!(msg.contains("profile service is unavailable"), "{msg}");
        assert!(Peer::new("profile", "not a url", None).is_err());
        assert_eq!(
            Peer::new("profile", "http://127.0.0.1:1", None)
                .unwrap()
                .name(),
            "profile"
        );
    }
}

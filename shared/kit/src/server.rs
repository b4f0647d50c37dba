//! The gRPC server every service runs: its own services plus `grpc.health.v1`,
//! server reflection (v1 and v1alpha, so grpcurl 1.8 works), request tracing,
//! the internal credential check, deadlines, connection limits and graceful
//! shutdown that drains in-flight calls.

use std::convert::Infallible;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::NamedService;
use tonic::service::RoutesBuilder;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;
use tower::Service;
use tower_http::classify::{GrpcCode, GrpcErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

use crate::config::ServiceConfig;
use crate::context::InternalAuthLayer;
use crate::shutdown::Shutdown;

/// The health name that reports whether the port requires the internal
/// credential: SERVING when it does, NOT_SERVING when internal authentication
/// is off (`RAPPORT_REQUIRE_INTERNAL_AUTH=false`), so monitoring can alert on it.
pub const INTERNAL_AUTH_HEALTH: &str = "rapport.internal_auth";

/// How often the database is pinged to keep the health status current (at
/// once, too, when a call meets a broken connection).
const HEALTH_PROBE: Duration = Duration::from_secs(1);

/// Server settings taken from [`ServiceConfig`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Internal credential required on every call but health and reflection.
    pub internal_token: Option<String>,
    /// Upper bound on any call's duration.
    pub request_timeout: Duration,
    /// How long in-flight calls may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

impl From<&ServiceConfig> for ServeOptions {
    fn from(c: &ServiceConfig) -> Self {
        Self {
            internal_token: if c.require_internal_auth {
                c.internal_token.clone()
            } else {
                None
            },
            request_timeout: c.request_timeout(),
            shutdown_grace: c.shutdown_grace(),
        }
    }
}

/// Unary methods whose contracts document runs longer than an ordinary call
/// (model fits and scoring over a whole tenant): bound by the client's
/// deadline only, like uploads.
pub const LONG_RUNNING_UNARY: [&str; 2] = [
    "/rapport.valuation.v1.ValuationService/FitModel",
    "/rapport.valuation.v1.ValuationService/ScoreCustomers",
];

/// The methods (as paths) of `service` that the server's own bound on a
/// call does not apply to: its client-streaming uploads, from the
/// contracts, and its [`LONG_RUNNING_UNARY`] methods.
pub fn unbounded_methods(service: &str) -> Vec<String> {
    let mut methods = streaming_methods(service, true);
    let prefix = format!("/{service}/");
    methods.extend(
        LONG_RUNNING_UNARY
            .iter()
            .filter(|m| m.starts_with(&prefix))
            .map(|m| m.to_string()),
    );
    methods
}

/// The methods of `service` that stream in either direction (as paths).
pub fn any_streaming_methods(service: &str) -> Vec<String> {
    streaming_methods(service, false)
}

fn streaming_methods(service: &str, client_only: bool) -> Vec<String> {
    use prost::Message;
    static SET: std::sync::OnceLock<prost_types::FileDescriptorSet> = std::sync::OnceLock::new();
    let set = SET.get_or_init(|| {
        prost_types::FileDescriptorSet::decode(rapport_proto::FILE_DESCRIPTOR_SET)
            .unwrap_or_default()
    });
    let mut out = Vec::new();
    for file in &set.file {
        for svc in &file.service {
            let full = format!("{}.{}", file.package(), svc.name());
            if full == service {
                out.extend(
                    svc.method
                        .iter()
                        .filter(|m| m.client_streaming() || (!client_only && m.server_streaming()))
                        .map(|m| format!("/{full}/{}", m.name())),
                );
            }
        }
    }
    out
}

/// A service answering every call no registered service claims (the gateway's
/// forwarding proxy).
pub type Fallback = tower::util::BoxCloneSyncService<
    http::Request<axum::body::Body>,
    http::Response<Body>,
    Infallible,
>;

/// Assembles one process's gRPC server.
pub struct ServerBuilder {
    component: String,
    routes: RoutesBuilder,
    names: Vec<&'static str>,
    advertised: Vec<String>,
    pool: Option<PgPool>,
    health: HealthReporter,
    public: bool,
    fallback: Option<Fallback>,
    grpc_web: Option<Vec<String>>,
    connect: Option<crate::connect::ConnectLayer>,
    long_running: std::collections::HashSet<String>,
    development: bool,
    budgets: Option<(usize, usize)>,
}

impl ServerBuilder {
    /// A server for `component` (e.g. "profile"), with health and reflection.
    pub fn new(component: impl Into<String>) -> Self {
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut routes = RoutesBuilder::default();
        routes.add_service(health_service);
        Self {
            component: component.into(),
            routes,
            names: Vec::new(),
            advertised: Vec::new(),
            pool: None,
            health,
            public: false,
            fallback: None,
            grpc_web: None,
            connect: None,
            long_running: std::collections::HashSet::new(),
            development: false,
            budgets: None,
        }
    }

    /// Per-tenant budgets (see [`crate::budget`]): at most `calls` calls in
    /// progress and `streams` open watches per tenant. Not applied on a
    /// public port, where the tenant header would be the client's word.
    pub fn tenant_budgets(&mut self, calls: usize, streams: usize) -> &mut Self {
        self.budgets = Some((calls, streams));
        self
    }

    /// Part of a development stack (`rapport dev`): a port without internal
    /// authentication is then expected while it listens on loopback only, and
    /// said once at INFO instead of warned about.
    pub fn development(&mut self) -> &mut Self {
        self.development = true;
        self
    }

    /// Also serves gRPC-Web (HTTP/1.1 and HTTP/2) for browsers, with CORS for
    /// `origins` (`*` for any).
    pub fn grpc_web(&mut self, origins: Vec<String>) -> &mut Self {
        self.grpc_web = Some(origins);
        self
    }

    /// Also speaks the Connect protocol (see [`crate::connect`]) on the same
    /// port, HTTP/1.1 and HTTP/2, for the methods of `contracts`, with request
    /// bodies of at most `max_request_bytes`.
    pub fn connect(
        &mut self,
        contracts: crate::connect::Contracts,
        max_request_bytes: usize,
    ) -> &mut Self {
        self.connect = Some(crate::connect::ConnectLayer::new(
            contracts,
            max_request_bytes,
        ));
        self
    }

    /// Takes calls without the internal credential: the gateway's port, which
    /// authenticates clients by API key instead.
    pub fn public(&mut self) -> &mut Self {
        self.public = true;
        self
    }

    /// Lists `name` in reflection although no local route serves it (services
    /// the fallback forwards).
    pub fn advertise(&mut self, name: impl Into<String>) -> &mut Self {
        let name = name.into();
        self.long_running.extend(unbounded_methods(&name));
        self.advertised.push(name);
        self
    }

    /// Sends every call that no registered service claims to `fallback`.
    pub fn fallback(&mut self, fallback: Fallback) -> &mut Self {
        self.fallback = Some(fallback);
        self
    }

    /// Hosts a generated tonic service. Its name is reported SERVING by health
    /// checks while the database answers, and advertised by reflection.
    pub fn add_service<S>(&mut self, svc: S) -> &mut Self
    where
        S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.names.push(S::NAME);
        self.long_running.extend(unbounded_methods(S::NAME));
        self.routes.add_service(svc);
        self
    }

    /// Reports NOT_SERVING while this pool's database does not answer.
    pub fn watch_database(&mut self, pool: PgPool) -> &mut Self {
        self.pool = Some(pool);
        self
    }

    /// The health reporter, for components that manage their own statuses.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves on `listener` until `shutdown` fires, then drains in-flight calls
    /// for at most the grace period.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        options: ServeOptions,
        shutdown: Shutdown,
    ) -> Result<(), tonic::transport::Error> {
        let reporter = self.health.clone();
        let mut names: Vec<String> = vec![String::new()];
        names.extend(self.names.iter().map(|n| n.to_string()));
        for n in &names {
            reporter.set_service_status(n, ServingStatus::Serving).await;
        }
        // A service port that takes calls without the internal credential
        // trusts any tenant a caller names: said loudly at start, every ten
        // minutes after, in metrics, and in health under its own name.
        let open = !self.public && options.internal_token.is_none();
        metrics::gauge!("rapport_internal_auth_required", "component" => self.component.clone())
            .set(if open { 0.0 } else { 1.0 });
        reporter
            .set_service_status(
                INTERNAL_AUTH_HEALTH,
                if open {
                    ServingStatus::NotServing
                } else {
                    ServingStatus::Serving
                },
            )
            .await;
        let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
        if open && self.development && loopback {
            tracing::info!(
                component = %self.component,
                "internal authentication is off on this development port (loopback only)"
            );
        } else if open {
            let component = self.component.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    tracing::warn!(
                        component = %component,
                        "INTERNAL AUTHENTICATION IS OFF (RAPPORT_REQUIRE_INTERNAL_AUTH=false): this port \
                         takes calls without the internal credential and trusts any x-rapport-tenant a \
                         caller sends, so anyone who can reach it can read and change every tenant's data. \
                         For development on a loopback address only."
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(600)) => {}
                        _ = shutdown.wait() => return,
                    }
                }
            });
        }

        // Besides the contracts and health, the `google.rpc` status and error
        // details, so that clients resolving types by reflection (grpcurl
        // -format-error, buf curl) decode BadRequest, ErrorInfo, RetryInfo
        // and ResourceInfo instead of printing their bytes.
        let mut reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rapport_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        let mut reflection_alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(rapport_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .with_service_name("grpc.health.v1.Health");
        for n in self
            .names
            .iter()
            .map(|n| n.to_string())
            .chain(self.advertised.iter().cloned())
        {
            reflection = reflection.with_service_name(n.clone());
            reflection_alpha = reflection_alpha.with_service_name(n);
        }
        // The descriptor sets are compiled into the binary: failing here is a build defect.
        let v1 = reflection
            .build_v1()
            .expect("embedded descriptor sets are valid");
        let v1alpha = reflection_alpha
            .build_v1alpha()
            .expect("embedded descriptor sets are valid");
        self.routes.add_service(v1);
        self.routes.add_service(v1alpha);

        if let Some(pool) = self.pool.clone() {
            let component = self.component.clone();
            let reporter = reporter.clone();
            let names = names.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut serving = true;
                let mut probe = crate::db::Probe::new(&pool);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(HEALTH_PROBE) => {}
                        _ = crate::db::suspected() => {}
                        _ = shutdown.wait() => return,
                    }
                    let up = probe.check().await;
                    let size = f64::from(pool.size());
                    let idle = pool.num_idle() as f64;
                    metrics::gauge!("rapport_db_pool_connections", "component" => component.clone(), "state" => "idle").set(idle);
                    metrics::gauge!("rapport_db_pool_connections", "component" => component.clone(), "state" => "busy")
                        .set((size - idle).max(0.0));
                    if up != serving {
                        serving = up;
                        let status = if up {
                            ServingStatus::Serving
                        } else {
                            ServingStatus::NotServing
                        };
                        if up {
                            tracing::info!("database reachable again; serving");
                        } else {
                            tracing::warn!("database unreachable; reporting NOT_SERVING");
                        }
                        for n in &names {
                            reporter.set_service_status(n, status).await;
                        }
                    }
                }
            });
        }

        let classifier = GrpcErrorsAsFailures::new()
            .with_success(GrpcCode::InvalidArgument)
            .with_success(GrpcCode::NotFound)
            .with_success(GrpcCode::AlreadyExists)
            .with_success(GrpcCode::Aborted)
            .with_success(GrpcCode::FailedPrecondition)
            .with_success(GrpcCode::PermissionDenied)
            .with_success(GrpcCode::Unauthenticated)
            .with_success(GrpcCode::ResourceExhausted)
            .with_success(GrpcCode::Cancelled);
        let component = self.component.clone();
        let trace = TraceLayer::new(SharedClassifier::new(classifier))
            .make_span_with(move |req: &http::Request<Body>| {
                let span = tracing::info_span!(
                    "grpc",
                    otel.name = %req.uri().path(),
                    otel.kind = "server",
                    rpc.system = "grpc",
                    rpc.method = %req.uri().path(),
                    component = %component,
                );
                crate::telemetry::adopt_remote_parent(&span, req.headers());
                span
            })
            .on_request(())
            .on_response(DefaultOnResponse::new().level(Level::DEBUG))
            .on_failure(DefaultOnFailure::new().level(Level::WARN));

        let routes = match self.fallback.take() {
            Some(fallback) => tonic::service::Routes::from(
                self.routes
                    .routes()
                    .into_axum_router()
                    .fallback_service(fallback),
            ),
            None => self.routes.routes(),
        }
        .prepare();
        let internal_token = if self.public {
            None
        } else {
            options.internal_token
        };
        // Every accepted connection without Nagle's delay: a connection that
        // carries many calls at once (the gateway's to a service) would
        // otherwise hold small responses back until earlier ones are
        // acknowledged, delaying one tenant's call behind another's.
        // (`Server::tcp_nodelay` applies only to listeners tonic binds.)
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let grace = options.shutdown_grace;
        let cors = self.grpc_web.as_ref().map(|origins| cors_layer(origins));
        let grpc_web = self
            .grpc_web
            .as_ref()
            .map(|_| tonic_web::GrpcWebLayer::new());
        let server = tonic::transport::Server::builder()
            .accept_http1(self.grpc_web.is_some() || self.connect.is_some())
            .concurrency_limit_per_connection(1024)
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .layer(trace)
            .layer(tower::util::option_layer(cors))
            // Connect before gRPC-Web, which refuses any other HTTP/1.1 call.
            .layer(tower::util::option_layer(self.connect.take()))
            .layer(tower::util::option_layer(grpc_web))
            .layer(crate::metrics::MetricsLayer::new(self.component.clone()))
            .layer(InternalAuthLayer::new(internal_token))
            .layer(crate::deadline::DeadlineLayer::new(
                options.request_timeout,
                std::mem::take(&mut self.long_running),
            ))
            .layer(match self.budgets {
                Some((calls, streams)) if !self.public => crate::budget::TenantBudgetLayer::new(
                    &self.component,
                    calls,
                    streams,
                    self.names
                        .iter()
                        .flat_map(|n| streaming_methods(n, true))
                        .collect(),
                ),
                _ => crate::budget::TenantBudgetLayer::none(),
            })
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, {
                let shutdown = shutdown.clone();
                let reporter = reporter.clone();
                let names = names.clone();
                async move {
                    shutdown.wait().await;
                    for n in &names {
                        reporter
                            .set_service_status(n, ServingStatus::NotServing)
                            .await;
                    }
                }
            });
        tokio::pin!(server);
        tokio::select! {
            r = &mut server => r,
            _ = async { shutdown.wait().await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_ms = grace.as_millis() as u64, "calls still in flight after the grace period; stopping anyway");
                Ok(())
            }
        }
    }
}

/// CORS for gRPC-Web: the origins given (`*`: any), the headers gRPC-Web
/// clients send, and the status headers they must read.
fn cors_layer(origins: &[String]) -> tower_http::cors::CorsLayer {
    use tower_http::cors::{AllowOrigin, CorsLayer};
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| http::HeaderValue::from_str(o).ok()),
        )
    };
    let header = |h: &'static str| http::HeaderName::from_static(h);
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([http::Method::POST, http::Method::OPTIONS])
        .allow_headers([
            http::header::AUTHORIZATION,
            http::header::CONTENT_TYPE,
            header("x-grpc-web"),
            header("x-user-agent"),
            header("grpc-timeout"),
            header("connect-protocol-version"),
            header("connect-timeout-ms"),
        ])
        .expose_headers([
            header("grpc-status"),
            header("grpc-message"),
            header("grpc-status-details-bin"),
        ])
        .max_age(Duration::from_secs(3600))
}

/// Why a service stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The database could not be reached at start.
    #[error("cannot connect to the database: {0}")]
    Database(#[from] sqlx::Error),
    /// The server failed.
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// What a service's registration gets to build its handlers from.
#[derive(Debug, Clone)]
pub struct ServiceRuntime {
    /// The service's pool (its schema, its role).
    pub pool: PgPool,
    /// The process configuration.
    pub config: ServiceConfig,
    /// Fires when the process shuts down (long streams end on it).
    pub shutdown: Shutdown,
    /// Signs and checks page tokens.
    pub page_tokens: crate::page::PageTokens,
    /// Tasks that must finish their work once serving has stopped and before
    /// the pool closes (see [`ServiceRuntime::finish_before_stop`]).
    finishing: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl ServiceRuntime {
    /// Waits, once serving has stopped (and its services, with whatever
    /// they held, are dropped), for `task` to end before the pool closes: at
    /// most [`FINISH_GRACE`]. For writers that drain a queue the handlers
    /// fill (the gateway's audit trail).
    pub fn finish_before_stop(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.finishing.lock() {
            tasks.push(task);
        }
    }

    /// The peer service `name` at `url`: None when no URL is configured, or
    /// (logged) when the URL is not one.
    pub fn peer(&self, name: &'static str, url: Option<&str>) -> Option<crate::peer::Peer> {
        match crate::peer::Peer::new(name, url?, self.config.internal_token.as_deref()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, peer = name, "a peer service cannot be reached; its feed is not followed");
                None
            }
        }
    }

    /// Follows the change feed of `peer` (the `W` service) with `handler`,
    /// under the cursor `cursor`, until shutdown; nothing without a peer.
    pub fn follow<W: crate::feed::WatchMethod>(
        &self,
        cursor: &'static str,
        peer: Option<&crate::peer::Peer>,
        handler: impl crate::feed::FeedHandler,
    ) {
        use std::sync::Arc;
        let Some(peer) = peer else {
            return;
        };
        let consumer = crate::feed::Consumer::new(
            cursor,
            self.pool.clone(),
            Arc::new(crate::feed::PeerFeed::<W>::new(peer)),
            Arc::new(handler),
        );
        tokio::spawn(consumer.run(self.shutdown.clone()));
    }
}

/// How long tasks given to [`ServiceRuntime::finish_before_stop`] may run
/// after serving has stopped.
pub const FINISH_GRACE: Duration = Duration::from_secs(10);

/// Runs one service: connects its pool (its schema, its role), lets `register`
/// add its gRPC services, and serves until `shutdown` fires.
pub async fn run_service<F>(
    component: &'static str,
    spec: crate::db::SchemaSpec,
    config: &ServiceConfig,
    listener: TcpListener,
    shutdown: Shutdown,
    register: F,
) -> Result<(), ServeError>
where
    F: FnOnce(&mut ServerBuilder, &ServiceRuntime),
{
    let pool = crate::db::connect(&config.database_url, spec, config.db_max_connections).await?;
    let mut builder = ServerBuilder::new(component);
    builder.watch_database(pool.clone());
    builder.tenant_budgets(
        crate::budget::calls_per_tenant(config.db_max_connections as usize),
        crate::budget::DEFAULT_STREAMS,
    );
    let page_tokens = match &config.page_token_secret {
        Some(secret) => crate::page::PageTokens::new(secret),
        None => crate::page::PageTokens::random(),
    };
    let runtime = ServiceRuntime {
        pool: pool.clone(),
        config: config.clone(),
        shutdown: shutdown.clone(),
        page_tokens,
        finishing: Default::default(),
    };
    register(&mut builder, &runtime);
    let addr = listener.local_addr().ok();
    tracing::info!(component, ?addr, "serving");
    let result = builder
        .serve(listener, ServeOptions::from(config), shutdown)
        .await;
    let finishing = runtime
        .finishing
        .lock()
        .map(|mut t| std::mem::take(&mut *t))
        .unwrap_or_default();
    if tokio::time::timeout(FINISH_GRACE, futures::future::join_all(finishing))
        .await
        .is_err()
    {
        tracing::warn!(component, "background work still unfinished at stop");
    }
    pool.close().await;
    tracing::info!(component, "stopped");
    Ok(result?)
}

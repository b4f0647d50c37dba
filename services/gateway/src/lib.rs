//! The gateway: one front door for every public API (ARCHITECTURE.md, "Services
//! and what each owns"). Owns the `gateway` schema: tenants and API keys.
//!
//! What it does today: authenticates API keys (stored hashed), checks each
//! method's scope, applies per-key rate limits and forwards calls to the
//! services it serves (see [`front::SERVED`]) with the key's tenant over the
//! internal credential; merged reflection and a health status per backend
//! service; `AdminService` for tenants, keys and the audit trail
//! ([`audit`]); the Connect protocol for HTTP/JSON clients; and
//! `Customer360Service`, which fans out to the services and answers with the
//! parts that arrived.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod customer360;
pub mod export;
pub mod front;
pub mod keys;
pub mod routes;
pub mod store;

use chrono::Utc;
use rapport_kit::db::SchemaSpec;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use uuid::Uuid;

/// Schema `gateway`, role `rapport_gateway`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("gateway", "rapport_gateway");

/// The gateway's migrations.
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Sets up the gateway on `server`: public port, forwarding front door,
/// merged reflection, and a health status per forwarded service that follows
/// its backend.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    server.public();
    let config = &runtime.config;
    if let Some(origins) = &config.grpc_web_origins {
        server.grpc_web(
            origins
                .split(',')
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        );
    }
    // One copy of the contracts' descriptors for Connect and the audit.
    let contracts = rapport_kit::connect::Contracts::rapport()
        .expect("the contracts' descriptors are built into the binary");
    server.connect(contracts.clone(), config.max_request_bytes);
    let urls = [
        ("profile", config.profile_url.as_deref()),
        ("interaction", config.interaction_url.as_deref()),
        ("segmentation", config.segmentation_url.as_deref()),
        ("valuation", config.valuation_url.as_deref()),
        ("engagement", config.engagement_url.as_deref()),
    ];
    let backends = match front::Backends::from_urls(&urls) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "bad backend address; forwarding nothing");
            front::Backends::default()
        }
    };
    for service in front::SERVED {
        server.advertise(service);
    }
    let auth = std::sync::Arc::new(auth::Authenticator::new(runtime.pool.clone()));
    let admin = admin::Admin::new(
        runtime.pool.clone(),
        auth.clone(),
        runtime.page_tokens.clone(),
    );
    let table = routes::RouteTable::public(&front::SERVED);
    let (log, writer) = audit::AuditLog::start(
        runtime.pool.clone(),
        std::time::Duration::from_secs(u64::from(config.audit_retention_days) * 86_400),
        runtime.shutdown.clone(),
    );
    // Events queued when serving stops are written before the pool closes.
    runtime.finish_before_stop(writer);
    let auditor = std::sync::Arc::new(audit::Auditor {
        log,
        auth: auth.clone(),
        routes: table.clone(),
        contracts,
    });
    server.add_service(audit::Audited::new(
        rapport_proto::rapport::gateway::v1::admin_service_server::AdminServiceServer::new(admin)
            .max_decoding_message_size(config.max_message_bytes),
        auditor.clone(),
    ));
    server.add_service(audit::Audited::new(
        rapport_proto::rapport::gateway::v1::customer360_service_server::Customer360ServiceServer::new(
            customer360::Customer360::new(auth.clone(), backends.clone(), config.internal_token.clone()),
        )
        .max_decoding_message_size(config.max_message_bytes),
        auditor.clone(),
    ));
    let front = front::Front::new(
        table,
        auth,
        backends.clone(),
        config.internal_token.as_deref(),
    )
    .with_max_request_bytes(config.max_request_bytes)
    .with_shutdown(runtime.shutdown.clone());
    server.fallback(tower::util::BoxCloneSyncService::new(audit::Audited::new(
        front, auditor,
    )));
    let reporter = server.health_reporter();
    let token = config.internal_token.clone();
    let shutdown = runtime.shutdown.clone();
    tokio::spawn(follow_backend_health(backends, reporter, token, shutdown));
}

/// Mirrors each forwarded service's health, as its backend reports it, into the
/// gateway's own health service.
async fn follow_backend_health(
    backends: front::Backends,
    reporter: tonic_health::server::HealthReporter,
    token: Option<String>,
    shutdown: rapport_kit::shutdown::Shutdown,
) {
    use tonic_health::ServingStatus;
    loop {
        for service in front::SERVED {
            let area = routes::FORWARDED
                .iter()
                .find(|(s, _)| *s == service)
                .map_or("", |(_, a)| *a);
            let status = match backends.get(area) {
                None => ServingStatus::NotServing,
                Some(channel) => {
                    let serving = rapport_kit::peer::reports_serving(
                        channel,
                        service,
                        token.as_deref(),
                        std::time::Duration::from_secs(2),
                    )
                    .await;
                    if serving {
                        ServingStatus::Serving
                    } else {
                        ServingStatus::NotServing
                    }
                }
            };
            reporter.set_service_status(service, status).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// The tenant `rapport dev` creates for local work.
pub const DEV_TENANT_NAME: &str = "dev";

/// The development tenant and a key holding every scope.
#[derive(Debug, Clone)]
pub struct DevCredentials {
    /// The development tenant's id.
    pub tenant_id: Uuid,
    /// The key, in full.
    pub api_key: String,
}

/// Why the development credentials could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum DevKeyError {
    /// The fixed key given is not a valid key.
    #[error("RAPPORT_DEV_API_KEY: {0}")]
    BadKey(keys::KeyError),
    /// The fixed key exists but is revoked, expired or another tenant's.
    #[error(
        "RAPPORT_DEV_API_KEY names a key that is revoked, expired or not the development tenant's; choose another"
    )]
    Unusable,
    /// The key generator failed.
    #[error("{0}")]
    Random(keys::KeyError),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Makes sure the development tenant exists and that `wanted` (a fixed key, or
/// an earlier session's key) is a live key of it with every scope; with no
/// usable key wanted, creates a new one.
pub async fn ensure_dev_credentials(
    pool: &PgPool,
    wanted: Option<&str>,
    fixed: bool,
) -> Result<DevCredentials, DevKeyError> {
    let tenant_id = match store::tenant_by_name(pool, DEV_TENANT_NAME).await? {
        Some(id) => id,
        None => {
            let id = Uuid::now_v7();
            store::create_tenant(pool, id, DEV_TENANT_NAME).await?;
            id
        }
    };
    // The development tenant is the operator tenant of a development stack.
    store::make_operator(pool, tenant_id).await?;
    let all_scopes: Vec<String> = keys::SCOPES.iter().map(|s| s.to_string()).collect();
    if let Some(w) = wanted {
        match keys::parse(w) {
            Ok(k) => {
                if let Some(row) = store::key_by_hash(pool, &k.hash).await? {
                    let live =
                        row.revoke_time.is_none() && row.expire_time.is_none_or(|t| t > Utc::now());
                    if row.tenant_id == tenant_id && live {
                        return Ok(DevCredentials {
                            tenant_id,
                            api_key: k.key,
                        });
                    }
                } else {
                    store::insert_key(pool, tenant_id, &k, "rapport dev", &all_scopes, None)
                        .await?;
                    return Ok(DevCredentials {
                        tenant_id,
                        api_key: k.key,
                    });
                }
            }
            Err(e) if fixed => return Err(DevKeyError::BadKey(e)),
            Err(_) => {}
        }
        if fixed {
            return Err(DevKeyError::Unusable);
        }
    }
    let k = keys::generate().map_err(DevKeyError::Random)?;
    store::insert_key(pool, tenant_id, &k, "rapport dev", &all_scopes, None).await?;
    Ok(DevCredentials {
        tenant_id,
        api_key: k.key,
    })
}

/// Creates the operator tenant when there is none (named `tenant_name`) and a
/// new key of it with the `admin` scope: the first admin key of a
/// deployment, or a replacement when every admin key was revoked.
pub async fn create_operator_key(
    pool: &PgPool,
    tenant_name: &str,
) -> Result<DevCredentials, DevKeyError> {
    let existing: Option<Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM tenants WHERE is_operator")
            .fetch_optional(pool)
            .await?;
    let tenant_id = match existing {
        Some(id) => id,
        None => {
            let id = Uuid::now_v7();
            store::create_tenant(pool, id, tenant_name).await?;
            store::make_operator(pool, id).await?;
            id
        }
    };
    let k = keys::generate().map_err(DevKeyError::Random)?;
    store::insert_key(
        pool,
        tenant_id,
        &k,
        "operator (rapport admin-key)",
        &["admin".to_string()],
        None,
    )
    .await?;
    Ok(DevCredentials {
        tenant_id,
        api_key: k.key,
    })
}

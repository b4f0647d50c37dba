//! The gateway: one front door for every public API (DESIGN.md, "Tenancy and
//! access"). Owns the `gateway` schema: tenants and API keys.
//!
//! What it does today: stores tenants and hashed API keys (the development
//! key of `rapport dev` among them) and serves health and reflection. Request
//! forwarding, authentication of calls, rate limits and Customer 360 are built
//! on these tables; no method is registered that would answer UNIMPLEMENTED.

pub mod keys;
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

/// Adds the gateway's gRPC services to `server`.
pub fn register(_server: &mut ServerBuilder, _runtime: &ServiceRuntime) {}

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

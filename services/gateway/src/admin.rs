//! `rapport.gateway.v1.AdminService`: tenants and API keys. Thin handlers:
//! authenticate, validate, call the store, map the rows.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rapport_kit::convert::{from_timestamp, timestamp};
use rapport_kit::idempotency;
use rapport_kit::page::PageTokens;
use rapport_kit::{ApiError, Violations};
use rapport_proto::rapport::gateway::v1 as pb;
use rapport_proto::rapport::gateway::v1::admin_service_server::AdminService;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::auth::{Authenticator, Principal, require_scope};
use crate::keys;
use crate::store::audit::{AuditFilter, AuditRow};
use crate::store::{self, ApiKeyRow, NewTenant, TenantRow};

/// Limits a tenant gets when created without them.
pub const DEFAULT_RATE_PER_SECOND: i32 = 100;
/// Default burst.
pub const DEFAULT_BURST: i32 = 200;
/// Default open streams per key.
pub const DEFAULT_MAX_STREAMS: i32 = 100;
/// Default sustained rate of all a tenant's keys together.
pub const DEFAULT_TENANT_RATE_PER_SECOND: i32 = 1_000;
/// Default burst of all a tenant's keys together.
pub const DEFAULT_TENANT_BURST: i32 = 2_000;
/// Default open streams of all a tenant's keys together.
pub const DEFAULT_TENANT_MAX_STREAMS: i32 = 1_000;

/// The update-mask paths of a tenant's limits, each naming one stored value.
const LIMIT_PATHS: [&str; 6] = [
    "rate_limit.requests_per_second",
    "rate_limit.burst",
    "max_concurrent_streams",
    "tenant_rate_limit.requests_per_second",
    "tenant_rate_limit.burst",
    "tenant_max_concurrent_streams",
];

/// Sets the limit named by `path` (one of [`LIMIT_PATHS`]) in `new` from the
/// request's `t`, checking its range (0 takes the default).
fn apply_limit(path: &str, t: &pb::Tenant, new: &mut NewTenant, v: &mut Violations) {
    let key = t.rate_limit.unwrap_or_default();
    let tenant = t.tenant_rate_limit.unwrap_or_default();
    let (value, max, default, slot) = match path {
        "rate_limit.requests_per_second" => (
            key.requests_per_second,
            100_000,
            DEFAULT_RATE_PER_SECOND,
            &mut new.rate_limit_per_second,
        ),
        "rate_limit.burst" => (
            key.burst,
            1_000_000,
            DEFAULT_BURST,
            &mut new.rate_limit_burst,
        ),
        "max_concurrent_streams" => (
            t.max_concurrent_streams,
            10_000,
            DEFAULT_MAX_STREAMS,
            &mut new.max_concurrent_streams,
        ),
        "tenant_rate_limit.requests_per_second" => (
            tenant.requests_per_second,
            1_000_000,
            DEFAULT_TENANT_RATE_PER_SECOND,
            &mut new.tenant_rate_limit_per_second,
        ),
        "tenant_rate_limit.burst" => (
            tenant.burst,
            10_000_000,
            DEFAULT_TENANT_BURST,
            &mut new.tenant_rate_limit_burst,
        ),
        _ => (
            t.tenant_max_concurrent_streams,
            100_000,
            DEFAULT_TENANT_MAX_STREAMS,
            &mut new.tenant_max_concurrent_streams,
        ),
    };
    *slot = check_limit(value, max, default, &format!("tenant.{path}"), v);
}

/// The AdminService implementation.
pub struct Admin {
    pool: PgPool,
    auth: Arc<Authenticator>,
    pages: PageTokens,
}

impl Admin {
    /// An AdminService over the gateway schema.
    pub fn new(pool: PgPool, auth: Arc<Authenticator>, pages: PageTokens) -> Self {
        Self { pool, auth, pages }
    }

    /// Authenticates the caller, requires `admin`, and takes a rate token.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Principal, Status> {
        let headers = req.metadata().clone().into_headers();
        let principal = self.auth.authenticate(&headers).await?;
        require_scope(&principal, "admin")?;
        self.auth.admit(&principal)?;
        Ok(principal)
    }
}

/// The tenant a request names: its own when empty; another only for operator keys.
fn target_tenant(principal: &Principal, requested: &str, field: &str) -> Result<Uuid, ApiError> {
    if requested.is_empty() {
        return Ok(principal.tenant_id);
    }
    let id = Uuid::parse_str(requested)
        .map_err(|_| ApiError::invalid(field, "must be a tenant id (a UUID)"))?;
    if id != principal.tenant_id && !principal.operator {
        return Err(ApiError::PermissionDenied(
            "this key may manage only its own tenant".into(),
        ));
    }
    Ok(id)
}

fn parse_id(value: &str, field: &str) -> Result<Uuid, ApiError> {
    rapport_kit::error::required_uuid(field, value)
}

/// NUL characters cannot be stored in PostgreSQL text: refuse them as input.
const NO_NUL: &str = "must not contain NUL characters";

fn check_name(name: &str, field: &str, v: &mut Violations) -> String {
    let name = name.trim();
    v.check(name.is_empty(), field, "is required");
    v.check(
        name.chars().count() > 200,
        field,
        "must be at most 200 characters",
    );
    v.check(name.contains('\0'), field, NO_NUL);
    name.to_string()
}

/// A tenant's time zone: an IANA name, "UTC" when empty.
fn check_time_zone(name: &str, v: &mut Violations) -> String {
    let name = name.trim();
    if name.is_empty() {
        return "UTC".into();
    }
    v.time_zone("tenant.time_zone", name).name().to_string()
}

fn check_limit(value: i32, max: i32, default: i32, field: &str, v: &mut Violations) -> i32 {
    v.check(
        value < 0 || value > max,
        field,
        format!("must be between 0 (default) and {max}"),
    );
    if value == 0 { default } else { value }
}

fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

fn tenant_pb(t: TenantRow) -> pb::Tenant {
    pb::Tenant {
        tenant_id: t.tenant_id.to_string(),
        display_name: t.display_name,
        rate_limit: Some(pb::RateLimit {
            requests_per_second: t.rate_limit_per_second,
            burst: t.rate_limit_burst,
        }),
        max_concurrent_streams: t.max_concurrent_streams,
        tenant_rate_limit: Some(pb::RateLimit {
            requests_per_second: t.tenant_rate_limit_per_second,
            burst: t.tenant_rate_limit_burst,
        }),
        tenant_max_concurrent_streams: t.tenant_max_concurrent_streams,
        is_operator: t.is_operator,
        time_zone: t.time_zone,
        etag: etag(t.version),
        create_time: Some(timestamp(t.create_time)),
        update_time: Some(timestamp(t.update_time)),
    }
}

fn key_pb(k: ApiKeyRow) -> pb::ApiKey {
    let now = Utc::now();
    let state = if k.revoke_time.is_some() {
        pb::ApiKeyState::Revoked
    } else if k.expire_time.is_some_and(|t| t <= now) {
        pb::ApiKeyState::Expired
    } else {
        pb::ApiKeyState::Active
    };
    pb::ApiKey {
        api_key_id: k.key_id.to_string(),
        tenant_id: k.tenant_id.to_string(),
        display_name: k.display_name,
        prefix: k.prefix,
        scopes: k.scopes,
        expire_time: k.expire_time.map(timestamp),
        create_time: Some(timestamp(k.create_time)),
        revoke_time: k.revoke_time.map(timestamp),
        last_used_time: k.last_used_time.map(timestamp),
        state: state as i32,
    }
}

fn request_hash(parts: &[&str]) -> Vec<u8> {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().to_vec()
}

/// With an idempotency key: takes its lock in `tx` and returns what an
/// earlier request with the same key and content created (INVALID_ARGUMENT on
/// `request_id` for other content). Without one: `None`.
async fn earlier_result(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    kind: &str,
    request_id: &str,
    hash: &[u8],
) -> Result<Option<Uuid>, ApiError> {
    if request_id.is_empty() {
        return Ok(None);
    }
    store::lock_request(tx, tenant, kind, request_id).await?;
    match idempotency::seen(tx, tenant, kind, request_id).await? {
        Some(earlier) if earlier.fingerprint != hex::encode(hash) => Err(ApiError::invalid(
            "request_id",
            "was already used for a different request",
        )),
        Some(earlier) => Ok(Some(earlier.result_id)),
        None => Ok(None),
    }
}

/// Records what a request with an idempotency key created (nothing without one).
async fn remember_result(
    tx: &mut sqlx::PgConnection,
    tenant: Uuid,
    kind: &str,
    request_id: &str,
    hash: &[u8],
    id: Uuid,
) -> Result<(), ApiError> {
    if !request_id.is_empty() {
        idempotency::remember(tx, tenant, kind, request_id, &hex::encode(hash), id).await?;
    }
    Ok(())
}

fn check_request_id(id: &str, v: &mut Violations) {
    if id.chars().count() > 128 {
        v.add("request_id", "must be at most 128 characters");
    } else {
        v.check(id.contains('\0'), "request_id", NO_NUL);
    }
}

/// The filter and page size of a `ListAuditEvents` request, checked.
fn audit_filter(
    principal: &Principal,
    r: &pb::ListAuditEventsRequest,
) -> Result<(AuditFilter, i64), ApiError> {
    let tenant_id = if r.tenant_id.is_empty() && principal.operator {
        None
    } else {
        Some(target_tenant(principal, &r.tenant_id, "tenant_id")?)
    };
    let mut v = Violations::new();
    let mut time = |field: &str, ts: &Option<prost_types::Timestamp>| {
        let t = ts.as_ref().map(from_timestamp);
        v.check(matches!(t, Some(None)), field, "must be a valid time");
        t.flatten()
    };
    let start = time("start_time", &r.start_time);
    let end = time("end_time", &r.end_time);
    if let (Some(s), Some(e)) = (start, end) {
        v.check(e <= s, "end_time", "must be after start_time");
    }
    let api_key_id = if r.api_key_id.is_empty() {
        None
    } else {
        v.uuid("api_key_id", &r.api_key_id)
    };
    let (service, method) = match r.method.split_once('/') {
        _ if r.method.is_empty() => (None, None),
        Some((service, method)) => (Some(service.to_string()), Some(method.to_string())),
        None => (None, Some(r.method.clone())),
    };
    v.check(
        r.method.len() > 200
            || r.method.contains('\0')
            || service.as_deref() == Some("")
            || method
                .as_deref()
                .is_some_and(|m| m.is_empty() || m.contains('/')),
        "method",
        "must be a method name (`UpdateCustomer`) or `service/method`",
    );
    v.check(
        r.resource_id.len() > 100 || r.resource_id.contains('\0'),
        "resource_id",
        "must be at most 100 characters, without NUL",
    );
    let code = r.code.to_ascii_uppercase();
    v.check(
        !code.is_empty()
            && !(0..=16).any(|c| rapport_kit::metrics::code_name(tonic::Code::from_i32(c)) == code),
        "code",
        "must be a gRPC code name such as OK or PERMISSION_DENIED",
    );
    let size = rapport_kit::page::page_size(&mut v, r.page_size);
    v.finish()?;
    let filter = AuditFilter {
        tenant_id,
        start,
        end,
        api_key_id,
        service,
        method,
        resource_id: (!r.resource_id.is_empty()).then(|| r.resource_id.clone()),
        code: (!code.is_empty()).then_some(code),
    };
    Ok((filter, size))
}

fn audit_pb(row: AuditRow) -> pb::AuditEvent {
    pb::AuditEvent {
        audit_event_id: row.audit_event_id.to_string(),
        time: Some(timestamp(row.time)),
        tenant_id: row.tenant_id.to_string(),
        api_key_id: row.api_key_id.to_string(),
        api_key_prefix: row.api_key_prefix,
        service: row.service,
        method: row.method,
        resource: row.resource,
        code: row.code,
        request_id: row.request_id,
        trace_id: row.trace_id,
    }
}

#[derive(Serialize, Deserialize)]
struct Cursor {
    t: DateTime<Utc>,
    id: Uuid,
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn create_tenant(
        &self,
        req: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::CreateTenantResponse>, Status> {
        let principal = self.caller(&req).await?;
        if !principal.operator {
            return Err(ApiError::PermissionDenied(
                "only admin keys of the operator tenant may create tenants".into(),
            )
            .into());
        }
        let r = req.into_inner();
        let t = r.tenant.unwrap_or_default();
        let mut v = Violations::new();
        let mut new = NewTenant {
            display_name: check_name(&t.display_name, "tenant.display_name", &mut v),
            rate_limit_per_second: 0,
            rate_limit_burst: 0,
            max_concurrent_streams: 0,
            tenant_rate_limit_per_second: 0,
            tenant_rate_limit_burst: 0,
            tenant_max_concurrent_streams: 0,
            time_zone: check_time_zone(&t.time_zone, &mut v),
        };
        for path in LIMIT_PATHS {
            apply_limit(path, &t, &mut new, &mut v);
        }
        check_request_id(&r.request_id, &mut v);
        v.finish()?;
        let hash = request_hash(&[
            &new.display_name,
            &new.rate_limit_per_second.to_string(),
            &new.rate_limit_burst.to_string(),
            &new.max_concurrent_streams.to_string(),
            &new.tenant_rate_limit_per_second.to_string(),
            &new.tenant_rate_limit_burst.to_string(),
            &new.tenant_max_concurrent_streams.to_string(),
            &new.time_zone,
        ]);
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        if let Some(id) = earlier_result(
            &mut tx,
            principal.tenant_id,
            "CreateTenant",
            &r.request_id,
            &hash,
        )
        .await?
        {
            let tenant = store::get_tenant(&self.pool, id)
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| ApiError::not_found("tenant", id.to_string()))?;
            return Ok(Response::new(pb::CreateTenantResponse {
                tenant: Some(tenant_pb(tenant)),
            }));
        }
        let id = Uuid::now_v7();
        let tenant = store::insert_tenant(&mut tx, id, &new)
            .await
            .map_err(ApiError::from)?;
        remember_result(
            &mut tx,
            principal.tenant_id,
            "CreateTenant",
            &r.request_id,
            &hash,
            id,
        )
        .await?;
        tx.commit().await.map_err(ApiError::from)?;
        tracing::info!(tenant = %id, by = %principal.prefix, "tenant created");
        Ok(Response::new(pb::CreateTenantResponse {
            tenant: Some(tenant_pb(tenant)),
        }))
    }

    async fn get_tenant(
        &self,
        req: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::GetTenantResponse>, Status> {
        let principal = self.caller(&req).await?;
        let id = target_tenant(&principal, &req.get_ref().tenant_id, "tenant_id")?;
        let tenant = store::get_tenant(&self.pool, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("tenant", id.to_string()))?;
        Ok(Response::new(pb::GetTenantResponse {
            tenant: Some(tenant_pb(tenant)),
        }))
    }

    async fn list_tenants(
        &self,
        req: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let principal = self.caller(&req).await?;
        let r = req.into_inner();
        let mut v = Violations::new();
        let size = rapport_kit::page::page_size(&mut v, r.page_size);
        v.finish()?;
        let scope = format!("ListTenants/{}/{}", principal.tenant_id, principal.operator);
        let cursor: Option<Cursor> = self.pages.decode(&scope, &r.page_token)?;
        let only = (!principal.operator).then_some(principal.tenant_id);
        let mut rows = store::list_tenants(&self.pool, cursor.map(|c| (c.t, c.id)), only, size + 1)
            .await
            .map_err(ApiError::from)?;
        let next = self.pages.trim_page(&scope, &mut rows, size, |t| Cursor {
            t: t.create_time,
            id: t.tenant_id,
        });
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: rows.into_iter().map(tenant_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn update_tenant(
        &self,
        req: Request<pb::UpdateTenantRequest>,
    ) -> Result<Response<pb::UpdateTenantResponse>, Status> {
        let principal = self.caller(&req).await?;
        let r = req.into_inner();
        let t = r.tenant.unwrap_or_default();
        let id = target_tenant(&principal, &t.tenant_id, "tenant.tenant_id")?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let mut v = Violations::new();
        v.check(
            paths.is_empty(),
            "update_mask",
            "name at least one field to change",
        );
        let current = store::get_tenant(&self.pool, id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("tenant", id.to_string()))?;
        let mut new = NewTenant {
            display_name: current.display_name.clone(),
            rate_limit_per_second: current.rate_limit_per_second,
            rate_limit_burst: current.rate_limit_burst,
            max_concurrent_streams: current.max_concurrent_streams,
            tenant_rate_limit_per_second: current.tenant_rate_limit_per_second,
            tenant_rate_limit_burst: current.tenant_rate_limit_burst,
            tenant_max_concurrent_streams: current.tenant_max_concurrent_streams,
            time_zone: current.time_zone.clone(),
        };
        let mut touches_limits = false;
        for path in &paths {
            let path = path.as_str();
            if path == "display_name" {
                new.display_name = check_name(&t.display_name, "tenant.display_name", &mut v);
                continue;
            }
            if path == "time_zone" {
                new.time_zone = check_time_zone(&t.time_zone, &mut v);
                continue;
            }
            // A message path selects each of its fields.
            let selected: Vec<&str> = LIMIT_PATHS
                .into_iter()
                .filter(|leaf| {
                    *leaf == path
                        || leaf
                            .strip_prefix(path)
                            .is_some_and(|rest| rest.starts_with('.'))
                })
                .collect();
            if selected.is_empty() {
                v.add("update_mask", format!("{path:?} cannot be updated (display_name, time_zone, rate_limit, rate_limit.requests_per_second, rate_limit.burst, max_concurrent_streams, tenant_rate_limit, tenant_rate_limit.requests_per_second, tenant_rate_limit.burst, tenant_max_concurrent_streams)"));
            }
            for leaf in selected {
                touches_limits = true;
                apply_limit(leaf, &t, &mut new, &mut v);
            }
        }
        let expected = if t.etag.is_empty() {
            None
        } else {
            match t.etag.trim_matches('"').parse::<i64>() {
                Ok(n) => Some(n),
                Err(_) => {
                    v.add("tenant.etag", "not an etag of this tenant");
                    None
                }
            }
        };
        v.finish()?;
        if touches_limits && !principal.operator {
            return Err(ApiError::PermissionDenied(
                "only admin keys of the operator tenant may change limits".into(),
            )
            .into());
        }
        match store::update_tenant(&self.pool, id, expected, &new)
            .await
            .map_err(ApiError::from)?
        {
            Some(updated) => Ok(Response::new(pb::UpdateTenantResponse {
                tenant: Some(tenant_pb(updated)),
            })),
            None => Err(ApiError::Aborted(
                "the tenant changed since this etag was read; read it again and reapply the change"
                    .into(),
            )
            .into()),
        }
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let principal = self.caller(&req).await?;
        let r = req.into_inner();
        let tenant_id = target_tenant(&principal, &r.tenant_id, "tenant_id")?;
        let mut v = Violations::new();
        let name = check_name(&r.display_name, "display_name", &mut v);
        v.check(r.scopes.is_empty(), "scopes", "grant at least one scope");
        v.check(r.scopes.len() > 20, "scopes", "at most 20 scopes");
        for (i, scope) in r.scopes.iter().enumerate() {
            if !keys::unknown_scopes(std::slice::from_ref(scope)).is_empty() {
                v.add(format!("scopes[{i}]"), format!("unknown scope {scope:?}"));
            }
        }
        let mut scopes = r.scopes.clone();
        scopes.sort();
        scopes.dedup();
        let expire = match &r.expire_time {
            None => None,
            Some(ts) => match from_timestamp(ts) {
                Some(t) if t > Utc::now() => Some(t),
                _ => {
                    v.add("expire_time", "must be a valid time in the future");
                    None
                }
            },
        };
        check_request_id(&r.request_id, &mut v);
        v.finish()?;
        if store::get_tenant(&self.pool, tenant_id)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::not_found("tenant", tenant_id.to_string()).into());
        }
        let hash = request_hash(&[
            &tenant_id.to_string(),
            &name,
            &scopes.join(" "),
            &expire.map(|t| t.to_rfc3339()).unwrap_or_default(),
        ]);
        let mut tx = self.pool.begin().await.map_err(ApiError::from)?;
        if let Some(id) =
            earlier_result(&mut tx, tenant_id, "CreateApiKey", &r.request_id, &hash).await?
        {
            let key = store::get_key(&self.pool, id, Some(tenant_id))
                .await
                .map_err(ApiError::from)?
                .ok_or_else(|| ApiError::not_found("api key", id.to_string()))?;
            return Ok(Response::new(pb::CreateApiKeyResponse {
                api_key: Some(key_pb(key)),
                secret: String::new(),
            }));
        }
        let new = keys::generate().map_err(ApiError::internal)?;
        let row = store::insert_key_tx(&mut tx, tenant_id, &new, &name, &scopes, expire)
            .await
            .map_err(ApiError::from)?;
        remember_result(
            &mut tx,
            tenant_id,
            "CreateApiKey",
            &r.request_id,
            &hash,
            row.key_id,
        )
        .await?;
        tx.commit().await.map_err(ApiError::from)?;
        tracing::info!(tenant = %tenant_id, key = %row.prefix, by = %principal.prefix, "api key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            api_key: Some(key_pb(row)),
            secret: new.key,
        }))
    }

    async fn get_api_key(
        &self,
        req: Request<pb::GetApiKeyRequest>,
    ) -> Result<Response<pb::GetApiKeyResponse>, Status> {
        let principal = self.caller(&req).await?;
        let id = parse_id(&req.get_ref().api_key_id, "api_key_id")?;
        let scope = (!principal.operator).then_some(principal.tenant_id);
        let key = store::get_key(&self.pool, id, scope)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("api key", id.to_string()))?;
        Ok(Response::new(pb::GetApiKeyResponse {
            api_key: Some(key_pb(key)),
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let principal = self.caller(&req).await?;
        let r = req.into_inner();
        let tenant_id = target_tenant(&principal, &r.tenant_id, "tenant_id")?;
        let mut v = Violations::new();
        let size = rapport_kit::page::page_size(&mut v, r.page_size);
        v.finish()?;
        if store::get_tenant(&self.pool, tenant_id)
            .await
            .map_err(ApiError::from)?
            .is_none()
        {
            return Err(ApiError::not_found("tenant", tenant_id.to_string()).into());
        }
        let scope = format!(
            "ListApiKeys/{}/{tenant_id}/{}",
            principal.tenant_id, r.include_revoked
        );
        let cursor: Option<Cursor> = self.pages.decode(&scope, &r.page_token)?;
        let mut rows = store::list_keys(
            &self.pool,
            tenant_id,
            r.include_revoked,
            cursor.map(|c| (c.t, c.id)),
            size + 1,
        )
        .await
        .map_err(ApiError::from)?;
        let next = self.pages.trim_page(&scope, &mut rows, size, |k| Cursor {
            t: k.create_time,
            id: k.key_id,
        });
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: rows.into_iter().map(key_pb).collect(),
            next_page_token: next,
        }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let principal = self.caller(&req).await?;
        let id = parse_id(&req.get_ref().api_key_id, "api_key_id")?;
        let scope = (!principal.operator).then_some(principal.tenant_id);
        let key = store::get_key(&self.pool, id, scope)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("api key", id.to_string()))?;
        store::revoke_key(&self.pool, key.tenant_id, key.key_id)
            .await
            .map_err(ApiError::from)?;
        let key = store::get_key(&self.pool, id, scope)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| ApiError::not_found("api key", id.to_string()))?;
        tracing::info!(key = %key.prefix, by = %principal.prefix, "api key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse {
            api_key: Some(key_pb(key)),
        }))
    }

    async fn list_audit_events(
        &self,
        req: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let principal = self.caller(&req).await?;
        let r = req.into_inner();
        let (filter, size) = audit_filter(&principal, &r)?;
        let scope = format!("ListAuditEvents/{}/{filter:?}", principal.tenant_id);
        let cursor: Option<Cursor> = self.pages.decode(&scope, &r.page_token)?;
        let mut rows =
            store::audit::list(&self.pool, &filter, cursor.map(|c| (c.t, c.id)), size + 1)
                .await
                .map_err(ApiError::from)?;
        let next = self.pages.trim_page(&scope, &mut rows, size, |e| Cursor {
            t: e.time,
            id: e.audit_event_id,
        });
        Ok(Response::new(pb::ListAuditEventsResponse {
            audit_events: rows.into_iter().map(audit_pb).collect(),
            next_page_token: next,
        }))
    }
}

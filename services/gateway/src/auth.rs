//! Authentication of API keys, with a short-lived cache so a revoked key stops
//! working within seconds on every replica without a database round trip per
//! call, per-key rate limits (token buckets sized by the tenant) and the
//! tenant's own budgets shared by all of its keys.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use rapport_kit::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::keys;
use crate::store;

/// How long a looked-up key is trusted before it is read again: the bound on
/// how late a revocation or a limit change takes effect.
pub const CACHE_TTL: Duration = Duration::from_secs(2);

/// Age from which a key still in use is read again in the background, so
/// that a key with steady traffic never makes a call wait for the database
/// (a call meets a lookup only when its key was idle for [`CACHE_TTL`]).
pub const REFRESH_AFTER: Duration = Duration::from_secs(1);

/// How often a key's `last_used_time` is written, at most (per replica).
pub const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Who is calling, once their key is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The key's tenant.
    pub tenant_id: Uuid,
    /// The key's id (forwarded as the principal).
    pub key_id: Uuid,
    /// The key's visible prefix (for logs and messages).
    pub prefix: String,
    /// What it may do.
    pub scopes: Vec<String>,
    /// Sustained calls per second allowed.
    pub rate_per_second: u32,
    /// Burst allowed.
    pub burst: u32,
    /// Streaming calls the key may have open at once.
    pub max_streams: u32,
    /// Sustained calls per second of all the tenant's keys together.
    pub tenant_rate_per_second: u32,
    /// Burst of all the tenant's keys together.
    pub tenant_burst: u32,
    /// Streaming calls all the tenant's keys may have open at once.
    pub tenant_max_streams: u32,
    /// Whether the key's tenant is the operator tenant.
    pub operator: bool,
    /// The tenant's time zone (an IANA name), forwarded with each call.
    pub time_zone: String,
}

#[derive(Clone)]
enum Cached {
    Valid(Principal, Option<chrono::DateTime<Utc>>),
    Revoked,
    Unknown,
}

/// A token bucket and the limits (rate, burst) it was made with.
type Bucket = (u32, u32, Arc<DefaultDirectRateLimiter>);

/// Token buckets by key or tenant id (a bucket is made afresh when its
/// limits change).
#[derive(Default)]
struct Buckets(Mutex<HashMap<Uuid, Bucket>>);

impl Buckets {
    /// Takes a token from `id`'s bucket, or says how long until one is there.
    fn take(&self, id: Uuid, per_second: u32, burst: u32) -> Result<(), Duration> {
        let limiter = {
            let Ok(mut buckets) = self.0.lock() else {
                return Ok(());
            };
            let entry = buckets
                .entry(id)
                .or_insert_with(|| (per_second, burst, Arc::new(limiter(per_second, burst))));
            if entry.0 != per_second || entry.1 != burst {
                *entry = (per_second, burst, Arc::new(limiter(per_second, burst)));
            }
            entry.2.clone()
        };
        limiter.check().map_err(|not_until| {
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }
}

/// Open-stream counters by key or tenant id.
#[derive(Default)]
struct Counters(Mutex<HashMap<Uuid, Arc<AtomicU32>>>);

impl Counters {
    /// One of `id`'s `max` slots, or `None` when all are taken.
    fn take(&self, id: Uuid, max: u32) -> Result<Option<Slot>, ApiError> {
        let counter = {
            let Ok(mut counters) = self.0.lock() else {
                return Err(ApiError::internal("stream table poisoned"));
            };
            counters.entry(id).or_default().clone()
        };
        let taken = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        });
        Ok(taken.ok().map(|_| Slot(counter)))
    }
}

/// A looked-up key: when it was read, what was read, and whether a
/// background read is under way.
struct Entry {
    at: Instant,
    value: Cached,
    refreshing: bool,
}

type Cache = Arc<Mutex<HashMap<[u8; 32], Entry>>>;

/// When each key's last use was last written.
type Touched = Arc<Mutex<HashMap<Uuid, Instant>>>;

/// Checks keys and applies rate limits.
pub struct Authenticator {
    pool: PgPool,
    cache: Cache,
    touched: Touched,
    key_buckets: Buckets,
    tenant_buckets: Buckets,
    key_streams: Counters,
    tenant_streams: Counters,
}

/// One taken slot of a counter, given back when dropped.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One open stream: a slot of its key and one of its tenant, given back when
/// this is dropped.
pub struct StreamSlot {
    _key: Slot,
    _tenant: Slot,
}

impl Authenticator {
    /// An authenticator reading keys from the gateway schema.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::default(),
            touched: Arc::default(),
            key_buckets: Buckets::default(),
            tenant_buckets: Buckets::default(),
            key_streams: Counters::default(),
            tenant_streams: Counters::default(),
        }
    }

    /// The principal of a call from its `authorization` metadata.
    pub async fn authenticate(&self, headers: &http::HeaderMap) -> Result<Principal, ApiError> {
        let hash = key_hash(headers)?;
        self.principal(&hash).await
    }

    /// The principal of the key whose secret hashes to `hash`, as the cache
    /// (at most [`CACHE_TTL`] old) or the database says now: UNAUTHENTICATED
    /// once the key is unknown, revoked or expired. A cached key older than
    /// [`REFRESH_AFTER`] is read again in the background.
    pub async fn principal(&self, hash: &[u8; 32]) -> Result<Principal, ApiError> {
        let unauthenticated = |m: &str| ApiError::Unauthenticated(m.to_string());
        let entry = match self.cached(hash) {
            Some(c) => c,
            None => {
                let read_at = Instant::now();
                let fresh = lookup(&self.pool, &self.touched, hash).await?;
                remember(&self.cache, hash, fresh.clone(), read_at);
                fresh
            }
        };
        match entry {
            Cached::Unknown => Err(unauthenticated("invalid api key")),
            Cached::Revoked => Err(unauthenticated("api key revoked")),
            Cached::Valid(_, Some(expiry)) if expiry <= Utc::now() => {
                Err(unauthenticated("api key expired"))
            }
            Cached::Valid(p, _) => Ok(p),
        }
    }

    /// The cached entry of `hash` if it is younger than [`CACHE_TTL`];
    /// starts a background read when it is older than [`REFRESH_AFTER`].
    fn cached(&self, hash: &[u8; 32]) -> Option<Cached> {
        let (value, refresh) = {
            let mut cache = self.cache.lock().ok()?;
            let entry = cache.get_mut(hash)?;
            let age = entry.at.elapsed();
            if age >= CACHE_TTL {
                return None;
            }
            let refresh = age >= REFRESH_AFTER && !entry.refreshing;
            entry.refreshing |= refresh;
            (entry.value.clone(), refresh)
        };
        if refresh {
            let (pool, cache, touched, hash) = (
                self.pool.clone(),
                self.cache.clone(),
                self.touched.clone(),
                *hash,
            );
            tokio::spawn(async move {
                let read_at = Instant::now();
                match lookup(&pool, &touched, &hash).await {
                    Ok(fresh) => remember(&cache, &hash, fresh, read_at),
                    Err(e) => {
                        tracing::debug!(error = %e, "could not read a key again; it expires from the cache");
                        if let Ok(mut cache) = cache.lock()
                            && let Some(entry) = cache.get_mut(&hash)
                        {
                            entry.refreshing = false;
                        }
                    }
                }
            });
        }
        Some(value)
    }

    /// Takes one token from the key's bucket and one from its tenant's, or
    /// says which is empty and how long to wait. A call refused by the key's
    /// bucket takes nothing from the tenant's.
    pub fn admit(&self, principal: &Principal) -> Result<(), ApiError> {
        let exhausted = |whose: String, wait: Duration| ApiError::ResourceExhausted {
            message: format!(
                "rate limit exceeded for {whose}; retry in {}ms",
                wait.as_millis().max(1)
            ),
            retry_after: Some(wait),
        };
        self.key_buckets
            .take(principal.key_id, principal.rate_per_second, principal.burst)
            .map_err(|wait| exhausted(format!("key {}", principal.prefix), wait))?;
        self.tenant_buckets
            .take(
                principal.tenant_id,
                principal.tenant_rate_per_second,
                principal.tenant_burst,
            )
            .map_err(|wait| exhausted(format!("tenant {}", principal.tenant_id), wait))
    }
}

/// Caches what a read of the key `hash` begun at `read_at` found, unless a
/// read begun later is cached already (a slow background read must not
/// bring back a key that a later read found revoked).
fn remember(cache: &Cache, hash: &[u8; 32], value: Cached, read_at: Instant) {
    if let Ok(mut cache) = cache.lock() {
        if cache.get(hash).is_some_and(|e| e.at > read_at) {
            return;
        }
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(
            *hash,
            Entry {
                at: read_at,
                value,
                refreshing: false,
            },
        );
    }
}

/// Reads the key `hash` and its tenant's limits. Writes the key's last use
/// in the background, at most every [`TOUCH_EVERY`]: bookkeeping never
/// delays or fails a call.
async fn lookup(pool: &PgPool, touched: &Touched, hash: &[u8; 32]) -> Result<Cached, ApiError> {
    let Some(row) = store::authenticate(pool, hash).await? else {
        return Ok(Cached::Unknown);
    };
    if row.revoke_time.is_some() {
        return Ok(Cached::Revoked);
    }
    let touch = touched.lock().is_ok_and(|mut t| {
        let due = t
            .get(&row.key_id)
            .is_none_or(|at| at.elapsed() >= TOUCH_EVERY);
        if due {
            t.insert(row.key_id, Instant::now());
        }
        due
    });
    if touch {
        let (pool, tenant_id, key_id) = (pool.clone(), row.tenant_id, row.key_id);
        tokio::spawn(async move {
            if let Err(e) = store::touch_key(&pool, tenant_id, key_id).await {
                tracing::warn!(error = %e, "could not record the key's last use");
            }
        });
    }
    Ok(Cached::Valid(
        Principal {
            tenant_id: row.tenant_id,
            key_id: row.key_id,
            prefix: row.prefix,
            scopes: row.scopes,
            rate_per_second: row.rate_limit_per_second.max(1) as u32,
            burst: row.rate_limit_burst.max(1) as u32,
            max_streams: row.max_concurrent_streams.max(1) as u32,
            tenant_rate_per_second: row.tenant_rate_limit_per_second.max(1) as u32,
            tenant_burst: row.tenant_rate_limit_burst.max(1) as u32,
            tenant_max_streams: row.tenant_max_concurrent_streams.max(1) as u32,
            operator: row.is_operator,
            time_zone: row.time_zone,
        },
        row.expire_time,
    ))
}

/// The hash of the API key in a call's `authorization` metadata
/// (`Bearer <key>`, exactly one entry), or UNAUTHENTICATED saying what is
/// wrong without echoing the key.
pub fn key_hash(headers: &http::HeaderMap) -> Result<[u8; 32], ApiError> {
    let unauthenticated = |m: &str| ApiError::Unauthenticated(m.to_string());
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values
        .next()
        .ok_or_else(|| unauthenticated("missing api key"))?;
    if values.next().is_some() {
        return Err(unauthenticated(
            "invalid api key: send exactly one authorization entry",
        ));
    }
    let value = value
        .to_str()
        .map_err(|_| unauthenticated("invalid api key"))?;
    let (scheme, key) = value
        .trim()
        .split_once(' ')
        .ok_or_else(|| unauthenticated("invalid api key"))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(unauthenticated(
            "invalid api key: use `authorization: Bearer <key>`",
        ));
    }
    let parsed = keys::parse(key.trim()).map_err(|_| unauthenticated("invalid api key"))?;
    Ok(parsed.hash)
}

fn limiter(per_second: u32, burst: u32) -> DefaultDirectRateLimiter {
    let per_second = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst))
}

impl Authenticator {
    /// Takes one of the key's stream slots and one of its tenant's, or
    /// RESOURCE_EXHAUSTED when all of either are in use (retry once a stream
    /// ends).
    pub fn open_stream(&self, principal: &Principal) -> Result<StreamSlot, ApiError> {
        let full = |message: String| ApiError::ResourceExhausted {
            message,
            retry_after: None,
        };
        let key = self
            .key_streams
            .take(principal.key_id, principal.max_streams)?
            .ok_or_else(|| {
                full(format!(
                    "key {} already has {} streams open, its tenant's limit per key; retry when one ends",
                    principal.prefix, principal.max_streams
                ))
            })?;
        let tenant = self
            .tenant_streams
            .take(principal.tenant_id, principal.tenant_max_streams)?
            .ok_or_else(|| {
                full(format!(
                    "tenant {} already has {} streams open, its limit for all keys together; retry when one ends",
                    principal.tenant_id, principal.tenant_max_streams
                ))
            })?;
        Ok(StreamSlot {
            _key: key,
            _tenant: tenant,
        })
    }
}

/// PERMISSION_DENIED unless `principal` holds `scope`, naming the scope.
pub fn require_scope(principal: &Principal, scope: &str) -> Result<(), tonic::Status> {
    if keys::grants(&principal.scopes, scope) {
        return Ok(());
    }
    let mut metadata = HashMap::new();
    metadata.insert("scope".to_string(), scope.to_string());
    Err(
        <tonic::Status as tonic_types::StatusExt>::with_error_details(
            tonic::Code::PermissionDenied,
            format!("missing scope {scope}"),
            tonic_types::ErrorDetails::with_error_info(
                "MISSING_SCOPE",
                "rapport.gateway",
                metadata,
            ),
        ),
    )
}

/// A principal standing for no tenant, to key test limiters.
#[cfg(test)]
pub(crate) fn test_principal(rate: u32, burst: u32) -> Principal {
    Principal {
        tenant_id: Uuid::nil(),
        key_id: Uuid::new_v4(),
        prefix: "rpk_00000000".into(),
        scopes: vec!["profile:read".into()],
        rate_per_second: rate,
        burst,
        max_streams: 1,
        tenant_rate_per_second: 1_000,
        tenant_burst: 1_000,
        tenant_max_streams: 1_000,
        operator: false,
        time_zone: "UTC".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_errors_name_the_scope() {
        let p = test_principal(1, 1);
        assert!(require_scope(&p, "profile:read").is_ok());
        let status = require_scope(&p, "profile:write").unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied);
        assert_eq!(status.message(), "missing scope profile:write");
    }
}

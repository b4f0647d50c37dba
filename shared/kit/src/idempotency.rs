//! Request ids: what a request with a client-chosen id did, remembered for
//! 24 hours in the service's `request_ids` table, so that a retry gets the
//! same answer and a reuse with other content can be refused. One mechanism
//! for every service:
//!
//! - a create method remembers the id of what it created ([`seen`],
//!   [`remember`]); the caller serialises calls with the same id (a row or
//!   advisory lock) where it needs to;
//! - a method whose answer is a document claims the id before it works and
//!   stores the answer after ([`claim`], [`answer`]), or in one step when the
//!   answer is known first ([`claim_answered`]); batches read and store many
//!   at once ([`answers`], [`remember_answers`]). The customers an answer
//!   names are kept with it, and [`forget`] drops every answer naming an
//!   erased customer.

use std::collections::HashMap;

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// What an earlier request with the id created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The fingerprint of its content.
    pub fingerprint: String,
    /// What it created.
    pub result_id: Uuid,
}

/// The earlier request with `request_id` in `scope`, if one came in the last
/// 24 hours.
pub async fn seen(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    request_id: &str,
) -> sqlx::Result<Option<Seen>> {
    let row: Option<(String, Uuid)> = sqlx::query_as(
        "SELECT fingerprint, result_id FROM request_ids
          WHERE tenant_id = $1 AND scope = $2 AND request_id = $3 AND result_id IS NOT NULL
            AND create_time > now() - interval '24 hours'",
    )
    .bind(tenant)
    .bind(scope)
    .bind(request_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(fingerprint, result_id)| Seen {
        fingerprint,
        result_id,
    }))
}

/// Remembers that `request_id` in `scope` created `result_id`, replacing a
/// use of the id older than 24 hours. False when another request holds the
/// id now (a concurrent call took it first).
pub async fn remember(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    request_id: &str,
    fingerprint: &str,
    result_id: Uuid,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "INSERT INTO request_ids (tenant_id, scope, request_id, fingerprint, result_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (tenant_id, scope, request_id) DO UPDATE
            SET fingerprint = EXCLUDED.fingerprint, result_id = EXCLUDED.result_id, create_time = now()
          WHERE request_ids.create_time <= now() - interval '24 hours'",
    )
    .bind(tenant)
    .bind(scope)
    .bind(request_id)
    .bind(fingerprint)
    .bind(result_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// What claiming a request id found.
#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// This request is the first with the id: do the work, then [`answer`].
    First,
    /// An earlier request with the id and the same content answered this.
    Answered(Value),
    /// The id was given to a request with other content.
    Reused,
    /// The earlier request with the id has not stored its answer.
    Pending,
}

impl Claim {
    /// The answer to give now: `Ok(None)` to go on with the work, the
    /// earlier answer for a retry, INVALID_ARGUMENT on `field` for a reused
    /// id, ABORTED while the earlier request runs.
    pub fn settle(self, field: &str) -> Result<Option<Value>, ApiError> {
        match self {
            Claim::First => Ok(None),
            Claim::Answered(v) => Ok(Some(v)),
            Claim::Reused => Err(ApiError::invalid(
                field,
                "this request_id was used for a different request in the last 24 hours",
            )),
            Claim::Pending => Err(ApiError::Aborted(
                "a request with this request_id is still in progress; retry".into(),
            )),
        }
    }
}

/// The earlier request's claim on an id this call could not take.
async fn earlier(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    request_id: &str,
    fingerprint: &str,
) -> sqlx::Result<Claim> {
    let (first, result): (String, Option<Value>) = sqlx::query_as(
        "SELECT fingerprint, result FROM request_ids
          WHERE tenant_id = $1 AND scope = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(scope)
    .bind(request_id)
    .fetch_one(conn)
    .await?;
    Ok(if first != fingerprint {
        Claim::Reused
    } else {
        result.map_or(Claim::Pending, Claim::Answered)
    })
}

/// Stores an answer over an id whose last use is more than 24 hours old
/// (the end of an `INSERT INTO request_ids AS k ...`).
macro_rules! take_over_stale {
    () => {
        " ON CONFLICT (tenant_id, scope, request_id) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, result = EXCLUDED.result, result_id = NULL,
                 subject_ids = EXCLUDED.subject_ids, create_time = now()
             WHERE k.create_time <= now() - interval '24 hours'
         RETURNING 1"
    };
}

/// Takes `request_id` in `scope` for a request with `fingerprint`, with its
/// answer when it is known, in the caller's transaction: a use older than
/// 24 hours is taken over, and a concurrent request holding the id makes
/// this one wait until it ends.
async fn take(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    (request_id, fingerprint): (&str, &str),
    result: Option<&Value>,
    subjects: &[Uuid],
) -> sqlx::Result<Claim> {
    let claimed: Option<i32> = sqlx::query_scalar(concat!(
        "INSERT INTO request_ids AS k (tenant_id, scope, request_id, fingerprint, result, subject_ids)
         VALUES ($1, $2, $3, $4, $5, $6)",
        take_over_stale!()
    ))
    .bind(tenant)
    .bind(scope)
    .bind(request_id)
    .bind(fingerprint)
    .bind(result)
    .bind(subjects)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(Claim::First);
    }
    earlier(conn, tenant, scope, request_id, fingerprint).await
}

/// Claims `request_id` in `scope` for a request with `fingerprint`, in the
/// caller's transaction, before the work: a concurrent request with the same
/// id waits until this transaction ends. A use older than 24 hours is
/// taken over.
pub async fn claim(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    request_id: &str,
    fingerprint: &str,
) -> sqlx::Result<Claim> {
    take(conn, tenant, scope, (request_id, fingerprint), None, &[]).await
}

/// Stores the answer of the request that [`claim`]ed `request_id`, with
/// the customers it names.
pub async fn answer(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    request_id: &str,
    result: &Value,
    subjects: &[Uuid],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE request_ids SET result = $4, subject_ids = $5
          WHERE tenant_id = $1 AND scope = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(scope)
    .bind(request_id)
    .bind(result)
    .bind(subjects)
    .execute(conn)
    .await?;
    Ok(())
}

/// [`claim`] and [`answer`] in one statement, for a request whose answer is
/// known before it is applied. A concurrent first request holding the id
/// makes this one wait until it ends.
pub async fn claim_answered(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    id: (&str, &str),
    result: &Value,
    subjects: &[Uuid],
) -> sqlx::Result<Claim> {
    take(conn, tenant, scope, id, Some(result), subjects).await
}

/// The stored answers of the ids among `request_ids` used in the last 24
/// hours: request id → (fingerprint, answer).
pub async fn answers(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    request_ids: &[&str],
) -> sqlx::Result<HashMap<String, (String, Value)>> {
    if request_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, String, Value)> = sqlx::query_as(
        // One key lookup per id (a lateral subquery the planner cannot
        // flatten), whatever the statistics say about the tenant.
        "SELECT k.request_id, k.fingerprint, k.result
           FROM unnest($3::text[]) AS r (id)
           CROSS JOIN LATERAL (
               SELECT request_id, fingerprint, result FROM request_ids
                WHERE tenant_id = $1 AND scope = $2 AND request_id = r.id AND result IS NOT NULL
                  AND create_time > now() - interval '24 hours'
                LIMIT 1) k",
    )
    .bind(tenant)
    .bind(scope)
    .bind(request_ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, fp, result)| (id, (fp, result)))
        .collect())
}

/// One answer for [`remember_answers`].
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// The fingerprint of the request's content.
    pub fingerprint: &'a str,
    /// What it answered.
    pub result: &'a Value,
    /// The customer it names.
    pub subject: Uuid,
}

/// Stores many answers in one statement, taking over ids used more than 24
/// hours ago. False when an id was taken meanwhile by a concurrent request
/// (the caller rolls back and tries again).
pub async fn remember_answers(
    conn: &mut PgConnection,
    tenant: Uuid,
    scope: &str,
    rows: &[Answer<'_>],
) -> sqlx::Result<bool> {
    if rows.is_empty() {
        return Ok(true);
    }
    let ids: Vec<&str> = rows.iter().map(|a| a.request_id).collect();
    let fingerprints: Vec<&str> = rows.iter().map(|a| a.fingerprint).collect();
    let results: Vec<&Value> = rows.iter().map(|a| a.result).collect();
    let subjects: Vec<Uuid> = rows.iter().map(|a| a.subject).collect();
    let stored: i64 = sqlx::query_scalar(concat!(
        "WITH s AS (
             INSERT INTO request_ids AS k (tenant_id, scope, request_id, fingerprint, result, subject_ids)
             SELECT $1, $2, t.rid, t.fp, t.result, ARRAY[t.subject]
               FROM unnest($3::text[], $4::text[], $5::jsonb[], $6::uuid[]) AS t (rid, fp, result, subject)",
        take_over_stale!(),
        ") SELECT count(*) FROM s"
    ))
    .bind(tenant)
    .bind(scope)
    .bind(&ids)
    .bind(&fingerprints)
    .bind(&results)
    .bind(&subjects)
    .fetch_one(conn)
    .await?;
    Ok(stored == rows.len() as i64)
}

/// Forgets every remembered answer that names one of `subjects` (their
/// erasure): a retry then runs again instead of answering about them.
pub async fn forget(conn: &mut PgConnection, tenant: Uuid, subjects: &[Uuid]) -> sqlx::Result<u64> {
    if subjects.is_empty() {
        return Ok(0);
    }
    let done = sqlx::query("DELETE FROM request_ids WHERE tenant_id = $1 AND subject_ids && $2")
        .bind(tenant)
        .bind(subjects)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}

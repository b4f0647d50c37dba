//! Request ids: what a request with a client-chosen id created, remembered
//! for 24 hours in the service's `request_ids` table, so that a retry gets
//! the same answer and a reuse with other content can be refused. One
//! mechanism for every service's create methods; the caller serialises
//! calls with the same id (a row or advisory lock) where it needs to.

use sqlx::PgConnection;
use uuid::Uuid;

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
          WHERE tenant_id = $1 AND scope = $2 AND request_id = $3
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

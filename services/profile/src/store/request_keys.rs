//! Idempotency of create requests: a `request_id` is claimed in the
//! writing transaction and its result remembered, so a retry gets the first
//! answer.

use super::*;

/// A request_id with the fingerprint of its request.
#[derive(Debug, Clone)]
pub struct RequestKey {
    /// The client's key.
    pub request_id: String,
    /// SHA-256 of the normalised request.
    pub fingerprint: String,
}

/// Claims `key` for `method` in the transaction: `Ok(None)` when this call is
/// the first, `Ok(Some(result))` for a retry (the first call's stored result).
pub async fn claim(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    key: Option<&RequestKey>,
) -> Result<Option<Value>> {
    let Some(key) = key else { return Ok(None) };
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND method = $2 AND request_id = $3
           AND create_time < now() - interval '24 hours'",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .execute(&mut *conn)
    .await?;
    let inserted: Option<i32> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, method, request_id, fingerprint)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING 1",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(None);
    }
    let (fingerprint, result): (String, Option<Value>) = sqlx::query_as(
        "SELECT fingerprint, result FROM idempotency_keys
         WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .fetch_one(&mut *conn)
    .await?;
    if fingerprint != key.fingerprint {
        return Err(crate::error::invalid(
            "request_id",
            "this request_id was used for a different request in the last 24 hours",
        ));
    }
    match result {
        Some(r) => Ok(Some(r)),
        None => Err(Error::Api(ApiError::Aborted(
            "a request with this request_id is still in progress; retry".into(),
        ))),
    }
}

/// Stores the result of the first call with `key`.
pub async fn remember(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    key: Option<&RequestKey>,
    result: Value,
    customers: &[Uuid],
) -> Result<()> {
    let Some(key) = key else { return Ok(()) };
    sqlx::query(
        "UPDATE idempotency_keys SET result = $4, customer_ids = $5
         WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .bind(result)
    .bind(customers)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// [`claim`] for a method whose result is known before it runs: the key is
/// claimed with its result in one statement (a key older than 24 hours is
/// taken over). `Ok(None)` when this call is the first; the first call's
/// result for a retry; INVALID_ARGUMENT when the key was used for other
/// content. A concurrent first call holding the key makes this one wait
/// until it ends.
pub async fn claim_done(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    key: Option<&RequestKey>,
    result: Value,
    customers: &[Uuid],
) -> Result<Option<Value>> {
    let Some(key) = key else { return Ok(None) };
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys AS k (tenant_id, method, request_id, fingerprint, result, customer_ids)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (tenant_id, method, request_id) DO UPDATE
             SET fingerprint = EXCLUDED.fingerprint, result = EXCLUDED.result,
                 customer_ids = EXCLUDED.customer_ids, create_time = now()
             WHERE k.create_time < now() - interval '24 hours'
         RETURNING 1",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .bind(&key.fingerprint)
    .bind(&result)
    .bind(customers)
    .fetch_optional(&mut *conn)
    .await?;
    if claimed.is_some() {
        return Ok(None);
    }
    let (fingerprint, first): (String, Option<Value>) = sqlx::query_as(
        "SELECT fingerprint, result FROM idempotency_keys
         WHERE tenant_id = $1 AND method = $2 AND request_id = $3",
    )
    .bind(tenant)
    .bind(method)
    .bind(&key.request_id)
    .fetch_one(&mut *conn)
    .await?;
    if fingerprint != key.fingerprint {
        return Err(crate::error::invalid(
            "request_id",
            "this request_id was used for a different request in the last 24 hours",
        ));
    }
    first.map(Some).ok_or_else(|| {
        Error::Api(ApiError::Aborted(
            "a request with this request_id is still in progress; retry".into(),
        ))
    })
}

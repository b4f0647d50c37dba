//! Idempotency of profile writes, on the kit's one mechanism
//! (`rapport_kit::idempotency`): a `request_id` is claimed in the writing
//! transaction and its answer remembered with the customers it names, so a
//! retry gets the first answer and an erasure forgets it.

use rapport_kit::idempotency::{self, Answer};

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
    let claim = idempotency::claim(conn, tenant, method, &key.request_id, &key.fingerprint).await?;
    Ok(claim.settle("request_id")?)
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
    idempotency::answer(conn, tenant, method, &key.request_id, &result, customers).await?;
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
    let claim = idempotency::claim_answered(
        conn,
        tenant,
        method,
        (&key.request_id, &key.fingerprint),
        &result,
        customers,
    )
    .await?;
    Ok(claim.settle("request_id")?)
}

/// The stored outcomes of import items by request_id (within 24 hours):
/// (fingerprint, outcome, customer).
pub async fn import_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    keys: &[&RequestKey],
) -> Result<HashMap<String, (String, String, Uuid)>> {
    let ids: Vec<&str> = keys.iter().map(|k| k.request_id.as_str()).collect();
    let found = idempotency::answers(conn, tenant, method, &ids).await?;
    Ok(found
        .into_iter()
        .filter_map(|(rid, (fp, r))| {
            let outcome = r.get("outcome")?.as_str()?.to_string();
            let id = Uuid::parse_str(r.get("customer_id")?.as_str()?).ok()?;
            Some((rid, (fp, outcome, id)))
        })
        .collect())
}

/// Remembers import items' outcomes under their request_ids, taking over
/// keys older than 24 hours, in one statement. False when a key was taken
/// meanwhile by a concurrent import (nothing then is to be kept: the
/// caller rolls back and tries again).
pub async fn remember_import_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    method: &str,
    keys: &[(&RequestKey, Value, Uuid)],
) -> std::result::Result<bool, sqlx::Error> {
    let answers: Vec<Answer<'_>> = keys
        .iter()
        .map(|(k, result, customer)| Answer {
            request_id: &k.request_id,
            fingerprint: &k.fingerprint,
            result,
            subject: *customer,
        })
        .collect();
    idempotency::remember_answers(conn, tenant, method, &answers).await
}

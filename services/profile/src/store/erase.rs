//! Erasure's statements: the personal data deleted, the tombstones written,
//! the feed searched and its old JSON payloads scrubbed. The use case is
//! `crate::erase`.

use super::*;
use crate::domain::erase::FeedEntry;

/// The identifier values of `ids`.
pub async fn identifier_values(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT value FROM identifiers WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?)
}

/// Deletes every piece of personal data of `ids` beside their rows:
/// identifiers, consent records, contact links, merges, not-duplicate marks
/// and remembered request results. Returns the customers at the other end of
/// the deleted contact links.
pub async fn delete_personal_data(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    sqlx::query("DELETE FROM identifiers WHERE tenant_id = $1 AND customer_id = ANY($2)")
        .bind(tenant)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "DELETE FROM consent_records WHERE tenant_id = $1 AND (holder_id = ANY($2) OR customer_id = ANY($2))",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    let counterparts: Vec<Uuid> = sqlx::query_scalar(
        "DELETE FROM contact_links WHERE tenant_id = $1 AND (person_id = ANY($2) OR organization_id = ANY($2))
         RETURNING CASE WHEN person_id = ANY($2) THEN organization_id ELSE person_id END",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM merges WHERE tenant_id = $1 AND (merged_customer_id = ANY($2) OR survivor_customer_id = ANY($2))",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "DELETE FROM not_duplicates WHERE tenant_id = $1 AND (first_id = ANY($2) OR second_id = ANY($2))",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    rapport_kit::idempotency::forget(conn, tenant, ids).await?;
    Ok(counterparts)
}

/// Leaves `ids` as tombstones (status erased, empty profile); the reference
/// is kept on `requested` only. Returns the erase time.
pub async fn tombstone(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    requested: Uuid,
    reference: &str,
) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar(
        "UPDATE customers SET status = $5, data = '{}', merged_into = NULL, delete_time = NULL,
                stage_set_time = NULL, erase_time = now(), version = version + 1, update_time = now(),
                erase_reference = CASE WHEN customer_id = $3 THEN nullif($4, '') END
          WHERE tenant_id = $1 AND customer_id = ANY($2) RETURNING erase_time",
    )
    .bind(tenant)
    .bind(ids)
    .bind(requested)
    .bind(reference)
    .bind(CustomerStatus::Erased)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .next()
    .unwrap_or_else(Utc::now))
}

/// The numbered feed events of `ids` (customer aggregates) and those whose
/// encoded bytes hold any of `needles` (protobuf keeps strings as plain
/// UTF-8, so a byte search finds every id and identifier an event holds).
/// Committed events get their sequences first (readers number them), so
/// none that is still waiting for one escapes.
pub async fn feed_mentions(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[String],
    needles: &[String],
) -> Result<Vec<FeedEntry>> {
    feed::number_committed(&mut *conn, tenant).await?;
    Ok(sqlx::query_as(
        "SELECT sequence, aggregate_type, aggregate_id, event FROM outbox_events
          WHERE tenant_id = $1 AND event IS NOT NULL AND sequence IS NOT NULL
            AND ((aggregate_type = 'customer' AND aggregate_id = ANY($2))
                 OR EXISTS (SELECT 1 FROM unnest($3::text[]) n
                             WHERE position(convert_to(n, 'UTF8') in event) > 0))",
    )
    .bind(tenant)
    .bind(ids)
    .bind(needles)
    .fetch_all(&mut *conn)
    .await?)
}

/// Scrubs the events appended before typed events (JSON payloads): those
/// of `ids` and their contact links say only "erased"; others that mention
/// any of `needles` say only "redacted".
pub async fn scrub_json_payloads(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[String],
    needles: &[String],
) -> Result<()> {
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id', aggregate_id, 'erased', true)
          WHERE tenant_id = $1 AND event IS NULL AND aggregate_type = 'customer' AND aggregate_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id',
                    CASE WHEN payload->>'person_customer_id' = ANY($2) THEN payload->>'person_customer_id'
                         ELSE payload->>'organization_customer_id' END, 'erased', true)
          WHERE tenant_id = $1 AND event IS NULL AND aggregate_type = 'contact_link'
            AND (payload->>'person_customer_id' = ANY($2) OR payload->>'organization_customer_id' = ANY($2))",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE outbox SET payload = jsonb_build_object('customer_id', aggregate_id, 'redacted', true)
          WHERE tenant_id = $1 AND event IS NULL
            AND NOT (aggregate_type = 'customer' AND aggregate_id = ANY($2))
            AND payload->'erased' IS NULL
            AND EXISTS (SELECT 1 FROM unnest($3::text[]) n WHERE strpos(payload::text, n) > 0)",
    )
    .bind(tenant)
    .bind(ids)
    .bind(needles)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

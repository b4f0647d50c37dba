//! Recording interactions: partitions, idempotency keys, and the rows written
//! with `COPY`.

use super::*;

/// The campaigns among `ids` that exist for the tenant.
pub async fn existing_campaigns(
    pool: &PgPool,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashSet<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let found: Vec<Uuid> = sqlx::query_scalar(
        "SELECT campaign_id FROM campaigns WHERE tenant_id = $1 AND campaign_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(found.into_iter().collect())
}

/// Makes sure the partition of `year` exists.
pub async fn ensure_partition(pool: &PgPool, year: i32) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT ensure_interaction_partition($1)")
        .bind(year)
        .execute(&mut *tx)
        .await?;
    tx.commit().await
}

/// A key to claim for a new interaction.
pub struct KeyClaim<'a> {
    /// The idempotency key.
    pub key: &'a str,
    /// The interaction it will name.
    pub interaction_id: Uuid,
    /// Its time.
    pub occur_time: DateTime<Utc>,
    /// Its content hash.
    pub hash: &'a [u8],
}

/// Claims idempotency keys (in byte order of the keys, so concurrent
/// claimers never deadlock: the rows are inserted in array order, which is
/// sorted here rather than by an `ORDER BY` that would compare under the
/// database's collation). Returns the keys claimed by this call; the others already
/// belong to an interaction (committed, or committed by a concurrent
/// transaction this one waited for).
pub async fn claim_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    claims: &[KeyClaim<'_>],
) -> Result<HashSet<String>, sqlx::Error> {
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let mut sorted: Vec<&KeyClaim<'_>> = claims.iter().collect();
    sorted.sort_unstable_by_key(|c| c.key);
    let keys: Vec<&str> = sorted.iter().map(|c| c.key).collect();
    let ids: Vec<Uuid> = sorted.iter().map(|c| c.interaction_id).collect();
    let times: Vec<DateTime<Utc>> = sorted.iter().map(|c| c.occur_time).collect();
    let hashes: Vec<&[u8]> = sorted.iter().map(|c| c.hash).collect();
    let claimed: Vec<String> = sqlx::query_scalar(
        "INSERT INTO idempotency_keys (tenant_id, idempotency_key, interaction_id, occur_time, content_hash)
         SELECT $1, k, i, t, h FROM unnest($2::text[], $3::uuid[], $4::timestamptz[], $5::bytea[]) AS u (k, i, t, h)
         ON CONFLICT DO NOTHING
         RETURNING idempotency_key",
    )
    .bind(tenant)
    .bind(&keys)
    .bind(&ids)
    .bind(&times)
    .bind(&hashes)
    .fetch_all(conn)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// An interaction an idempotency key already names.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedKey {
    /// The key.
    pub idempotency_key: String,
    /// The interaction.
    pub interaction_id: Uuid,
    /// Its time.
    pub occur_time: DateTime<Utc>,
    /// Its content hash.
    pub content_hash: Vec<u8>,
}

/// The interactions `keys` already name.
pub async fn claimed_keys(
    conn: &mut PgConnection,
    tenant: Uuid,
    keys: &[&str],
) -> Result<HashMap<String, ClaimedKey>, sqlx::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<ClaimedKey> = sqlx::query_as(
        "SELECT c.idempotency_key, c.interaction_id, c.occur_time, c.content_hash
           FROM unnest($2::text[]) AS k (key)
           CROSS JOIN LATERAL (SELECT idempotency_key, interaction_id, occur_time, content_hash
                                 FROM idempotency_keys
                                WHERE tenant_id = $1 AND idempotency_key = k.key LIMIT 1) c",
    )
    .bind(tenant)
    .bind(keys)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.idempotency_key.clone(), r))
        .collect())
}

/// The columns [`copy_text`] writes, in order.
pub const COPY_STATEMENT: &str = "COPY interactions (tenant_id, interaction_id, occur_time, customer_id, \
     original_customer_id, type, custom_type, channel, initiator, currency, amount, margin, line_items, \
     campaign_id, agent_id, csat, nps, survey_comment, status, resolve_time, attributes, idempotency_key, \
     create_time, update_time, version, decision_id) FROM STDIN";

fn copy_escape(out: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

fn copy_opt(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => out.extend_from_slice(b"\\N"),
        Some(s) => copy_escape(out, s),
    }
}

fn copy_time(t: DateTime<Utc>) -> String {
    // RFC 3339 with microseconds, which COPY reads as timestamptz; chrono's
    // dedicated writer is several times faster than a format string.
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Appends `rows` to `out` in COPY text format (see [`COPY_STATEMENT`]).
pub fn copy_text(out: &mut Vec<u8>, tenant: Uuid, rows: &[StoredInteraction]) {
    let mut s = String::with_capacity(512);
    for r in rows {
        s.clear();
        let currency = r.amount.as_ref().map(|a| a.currency.as_str());
        let _ = write!(
            s,
            "{tenant}\t{}\t{}\t{}\t{}\t{}\t",
            r.interaction_id,
            copy_time(r.occur_time),
            r.customer_id,
            r.original_customer_id,
            r.kind
        );
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, r.custom_type.as_deref());
        s.clear();
        let _ = write!(s, "\t{}\t{}\t", r.channel, r.initiator);
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, currency);
        out.push(b'\t');
        copy_opt(
            out,
            r.amount
                .as_ref()
                .map(|a| nanos_to_decimal(a.nanos))
                .as_deref(),
        );
        out.push(b'\t');
        copy_opt(
            out,
            r.margin
                .as_ref()
                .map(|a| nanos_to_decimal(a.nanos))
                .as_deref(),
        );
        out.push(b'\t');
        copy_opt(
            out,
            line_items_json(&r.line_items)
                .map(|v| v.to_string())
                .as_deref(),
        );
        out.push(b'\t');
        copy_opt(out, r.campaign_id.map(|c| c.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.agent_id.as_deref());
        out.push(b'\t');
        copy_opt(out, r.csat.map(|c| c.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.nps.map(|c| c.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.comment.as_deref());
        s.clear();
        let _ = write!(s, "\t{}\t", r.status);
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, r.resolve_time.map(copy_time).as_deref());
        out.push(b'\t');
        copy_opt(out, r.attributes.as_ref().map(|v| v.to_string()).as_deref());
        out.push(b'\t');
        copy_opt(out, r.idempotency_key.as_deref());
        s.clear();
        let _ = write!(
            s,
            "\t{}\t{}\t{}\t",
            copy_time(r.create_time),
            copy_time(r.update_time),
            r.version
        );
        out.extend_from_slice(s.as_bytes());
        copy_opt(out, r.decision_id.map(|d| d.to_string()).as_deref());
        out.push(b'\n');
    }
}

/// Writes interactions with COPY.
pub async fn copy_interactions(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[StoredInteraction],
) -> Result<u64, sqlx::Error> {
    if rows.is_empty() {
        return Ok(0);
    }
    let mut buf = Vec::with_capacity(rows.len() * 400);
    copy_text(&mut buf, tenant, rows);
    let mut copy = conn.copy_in_raw(COPY_STATEMENT).await?;
    copy.send(buf).await?;
    copy.finish().await
}

//! Segment definitions, their references to one another, and the
//! idempotency keys of `CreateSegment`.

use super::*;

/// A segment as stored, with its member count.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SegmentRow {
    pub segment_id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: Kind,
    pub marketing_approach: i16,
    pub rule: Option<Vec<u8>>,
    pub refresh_interval_seconds: Option<i64>,
    pub last_refresh_time: Option<DateTime<Utc>>,
    pub next_refresh_time: Option<DateTime<Utc>>,
    pub create_time: DateTime<Utc>,
    pub update_time: DateTime<Utc>,
    pub version: i64,
    pub member_count: i64,
}

const SEGMENT_COLUMNS: &str = "s.segment_id, s.name, s.description, s.kind, s.marketing_approach, s.rule,
    s.refresh_interval_seconds, s.last_refresh_time, s.next_refresh_time, s.create_time,
    s.update_time, s.version,
    (SELECT count(*) FROM memberships m WHERE m.tenant_id = s.tenant_id AND m.segment_id = s.segment_id) AS member_count";

/// One segment; `lock` locks its row for the transaction.
pub async fn segment(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<SegmentRow>> {
    let sql = format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments s WHERE s.tenant_id = $1 AND s.segment_id = $2{}",
        if lock { " FOR UPDATE OF s" } else { "" }
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// The tenant's segments of one kind, without
/// member counts.
pub async fn segments_of_kind(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: Kind,
) -> Result<Vec<SegmentRow>> {
    sqlx::query_as(
        "SELECT s.segment_id, s.name, s.description, s.kind, s.marketing_approach, s.rule,
                s.refresh_interval_seconds, s.last_refresh_time, s.next_refresh_time, s.create_time,
                s.update_time, s.version, 0::bigint AS member_count
         FROM segments s WHERE s.tenant_id = $1 AND s.kind = $2
         ORDER BY s.name",
    )
    .bind(tenant)
    .bind(kind)
    .fetch_all(conn)
    .await
}

/// The tenant's segment names by id.
pub async fn segment_names(conn: &mut PgConnection, tenant: Uuid) -> Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT segment_id, name FROM segments WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The tenant's reference graph: segment -> the segments its rule refers to.
pub async fn reference_graph(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<HashMap<Uuid, Vec<Uuid>>> {
    let rows: Vec<(Uuid, Uuid)> =
        sqlx::query_as("SELECT segment_id, referenced_id FROM segment_refs WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_all(conn)
            .await?;
    let mut g: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (s, r) in rows {
        g.entry(s).or_default().push(r);
    }
    Ok(g)
}

/// Replaces a segment's references.
pub async fn set_refs(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    refs: &[Uuid],
) -> Result<()> {
    sqlx::query("DELETE FROM segment_refs WHERE tenant_id = $1 AND segment_id = $2")
        .bind(tenant)
        .bind(segment)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO segment_refs (tenant_id, segment_id, referenced_id)
         SELECT $1, $2, r FROM unnest($3::uuid[]) AS r ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(segment)
    .bind(refs)
    .execute(conn)
    .await?;
    Ok(())
}

/// The names of the segments whose rules refer to `segment`.
pub async fn referrers(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT s.name FROM segment_refs r JOIN segments s
             ON s.tenant_id = r.tenant_id AND s.segment_id = r.segment_id
         WHERE r.tenant_id = $1 AND r.referenced_id = $2 ORDER BY s.name",
    )
    .bind(tenant)
    .bind(segment)
    .fetch_all(conn)
    .await
}

/// A new segment's definition.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub segment_id: Uuid,
    pub name: String,
    pub description: String,
    pub kind: Kind,
    pub marketing_approach: i16,
    pub rule: Option<Vec<u8>>,
    pub refresh_interval_seconds: Option<i64>,
}

/// Inserts a segment (unique violation on the name: the caller maps it).
pub async fn insert_segment(conn: &mut PgConnection, tenant: Uuid, s: &NewSegment) -> Result<()> {
    sqlx::query(
        "INSERT INTO segments (tenant_id, segment_id, name, description, kind, marketing_approach, rule,
                               refresh_interval_seconds)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(s.segment_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(s.kind)
    .bind(s.marketing_approach)
    .bind(&s.rule)
    .bind(s.refresh_interval_seconds)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes a changed definition and bumps the version.
pub async fn update_segment(conn: &mut PgConnection, tenant: Uuid, s: &SegmentRow) -> Result<()> {
    sqlx::query(
        "UPDATE segments SET name = $3, description = $4, marketing_approach = $5, rule = $6,
                refresh_interval_seconds = $7, next_refresh_time = $8, update_time = now(),
                version = version + 1
         WHERE tenant_id = $1 AND segment_id = $2",
    )
    .bind(tenant)
    .bind(s.segment_id)
    .bind(&s.name)
    .bind(&s.description)
    .bind(s.marketing_approach)
    .bind(&s.rule)
    .bind(s.refresh_interval_seconds)
    .bind(s.next_refresh_time)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a full evaluation's time and the next one's.
pub async fn set_refreshed(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    at: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
) -> Result<()> {
    sqlx::query(
        "UPDATE segments SET last_refresh_time = $3, next_refresh_time = $4
         WHERE tenant_id = $1 AND segment_id = $2",
    )
    .bind(tenant)
    .bind(segment)
    .bind(at)
    .bind(next)
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes a segment with its membership, history and references.
pub async fn delete_segment(conn: &mut PgConnection, tenant: Uuid, segment: Uuid) -> Result<()> {
    for sql in [
        "DELETE FROM memberships WHERE tenant_id = $1 AND segment_id = $2",
        "DELETE FROM membership_log WHERE tenant_id = $1 AND segment_id = $2",
        "DELETE FROM segment_refs WHERE tenant_id = $1 AND segment_id = $2",
        "DELETE FROM segments WHERE tenant_id = $1 AND segment_id = $2",
    ] {
        sqlx::query(sql)
            .bind(tenant)
            .bind(segment)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// ListSegments: by name after `after`, optional kind and approach filters.
pub async fn list_segments(
    conn: &mut PgConnection,
    tenant: Uuid,
    kind: Option<Kind>,
    approach: Option<i16>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<SegmentRow>> {
    let sql = format!(
        "SELECT {SEGMENT_COLUMNS} FROM segments s
         WHERE s.tenant_id = $1 AND ($2::text IS NULL OR s.kind = $2)
           AND ($3::smallint IS NULL OR s.marketing_approach = $3)
           AND ($4::text IS NULL OR s.name COLLATE \"C\" > $4)
         ORDER BY s.name COLLATE \"C\" LIMIT $5"
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(tenant)
        .bind(kind)
        .bind(approach)
        .bind(after)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Segments due for a scheduled full evaluation, oldest first.
pub async fn due_segments(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(Uuid, Uuid)>> {
    sqlx::query_as(
        "SELECT tenant_id, segment_id FROM segments
         WHERE next_refresh_time IS NOT NULL AND next_refresh_time <= $1
         ORDER BY next_refresh_time LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

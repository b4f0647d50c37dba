//! Evaluation of segment rules and the memberships they give.

use super::*;

/// Applies a rule to a segment's membership: customers matching enter (at
/// `now`), members no longer matching exit. With `scope`, only those
/// customers are considered. Returns (entered, exited).
pub async fn evaluate_into(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    sql: &Sql,
    scope: Option<&[Uuid]>,
    now: DateTime<Utc>,
) -> Result<(Vec<Uuid>, Vec<Uuid>)> {
    let k = next_param(sql);
    let (seg, at, sc) = (k, k + 1, k + 2);
    let text = if scope.is_some() {
        // Customers of a feed batch: each one's match and membership are
        // looked up by key (subqueries per customer, which no estimate can
        // turn into a scan of the segment or of the tenant), members leave
        // by row address.
        format!(
            "WITH scope AS MATERIALIZED (
                 SELECT k.id,
                        EXISTS (SELECT 1 FROM features f
                                 WHERE f.tenant_id = $1 AND f.customer_id = k.id AND ({cond})) AS matches,
                        (SELECT m.ctid FROM memberships m
                          WHERE m.tenant_id = $1 AND m.segment_id = ${seg} AND m.customer_id = k.id) AS member
                   FROM unnest(${sc}::uuid[]) AS k (id)),
             gone AS (
                 DELETE FROM memberships m
                  WHERE m.ctid = ANY(ARRAY(SELECT member FROM scope WHERE member IS NOT NULL AND NOT matches))
                    AND m.tenant_id = $1 AND m.segment_id = ${seg}
                 RETURNING m.customer_id),
             came AS (
                 INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
                 SELECT $1, ${seg}, id, ${at} FROM scope WHERE matches AND member IS NULL
                 ON CONFLICT DO NOTHING
                 RETURNING customer_id)
             SELECT true AS entered, customer_id FROM came
             UNION ALL SELECT false, customer_id FROM gone",
            cond = sql.condition,
        )
    } else {
        format!(
            "WITH target AS MATERIALIZED (
                 SELECT f.customer_id FROM features f
                 WHERE f.tenant_id = $1 AND ({cond})),
             gone AS (
                 DELETE FROM memberships m
                 WHERE m.tenant_id = $1 AND m.segment_id = ${seg}
                   AND NOT EXISTS (SELECT 1 FROM target t WHERE t.customer_id = m.customer_id)
                 RETURNING m.customer_id),
             came AS (
                 INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
                 SELECT $1, ${seg}, t.customer_id, ${at} FROM target t
                 WHERE NOT EXISTS (SELECT 1 FROM memberships m
                                   WHERE m.tenant_id = $1 AND m.segment_id = ${seg} AND m.customer_id = t.customer_id)
                 ON CONFLICT DO NOTHING
                 RETURNING customer_id)
             SELECT true AS entered, customer_id FROM came
             UNION ALL SELECT false, customer_id FROM gone",
            cond = sql.condition,
        )
    };
    let mut q = rule_query(text, tenant, sql).bind(segment).bind(now);
    if let Some(s) = scope {
        q = q.bind(s);
    }
    // A full evaluation diffs two large sets: with the rule's estimates the
    // planner may pick nested-loop anti-joins (quadratic). Hash joins are
    // always right here, so nested loops are off for this statement only;
    // and it is planned for its values (its execution outweighs planning).
    if scope.is_none() {
        sqlx::query(
            "SELECT set_config('enable_nestloop', 'off', true),
                    set_config('plan_cache_mode', 'force_custom_plan', true)",
        )
        .execute(&mut *conn)
        .await?;
    }
    let rows = q.fetch_all(&mut *conn).await?;
    if scope.is_none() {
        sqlx::query(
            "SELECT set_config('enable_nestloop', 'on', true),
                    set_config('plan_cache_mode', 'force_generic_plan', true)",
        )
        .execute(&mut *conn)
        .await?;
    }
    let mut entered = Vec::new();
    let mut exited = Vec::new();
    for r in rows {
        use sqlx::Row;
        let e: bool = r.try_get(0)?;
        let c: Uuid = r.try_get(1)?;
        if e {
            entered.push(c);
        } else {
            exited.push(c);
        }
    }
    Ok((entered, exited))
}

/// PreviewSegment: the number of matching customers and a random sample.
pub async fn preview(
    conn: &mut PgConnection,
    tenant: Uuid,
    sql: &Sql,
    sample: i64,
) -> Result<(i64, Vec<Uuid>)> {
    let k = next_param(sql);
    let text = format!(
        "SELECT count(*) OVER () AS n, f.customer_id FROM features f
         WHERE f.tenant_id = $1 AND ({cond})
         ORDER BY random() LIMIT ${k}",
        cond = sql.condition
    );
    // Planned for its values: a count over the tenant outweighs planning.
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    rapport_kit::db::custom_plans(&mut tx).await?;
    let rows = rule_query(text, tenant, sql)
        .bind(sample.max(1))
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    use sqlx::Row;
    let mut count = 0;
    let mut ids = Vec::new();
    for r in rows {
        count = r.try_get::<i64, _>(0)?;
        ids.push(r.try_get::<Uuid, _>(1)?);
    }
    if sample == 0 {
        ids.clear();
    }
    Ok((count, ids))
}

/// Up to `limit` customers the rule matches, by id, after `after`.
pub async fn rule_matches(
    conn: &mut PgConnection,
    tenant: Uuid,
    sql: &Sql,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>> {
    let k = next_param(sql);
    let text = format!(
        "SELECT f.customer_id FROM features f
         WHERE f.tenant_id = $1 AND ({cond}) AND (${k}::uuid IS NULL OR f.customer_id > ${k})
         ORDER BY f.customer_id LIMIT ${l}",
        cond = sql.condition,
        l = k + 1
    );
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    rapport_kit::db::custom_plans(&mut tx).await?;
    let rows = rule_query(text, tenant, sql)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    use sqlx::Row;
    rows.iter().map(|r| r.try_get::<Uuid, _>(0)).collect()
}

/// The number of the tenant's customers (with features).
pub async fn customer_count(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM features WHERE tenant_id = $1")
        .bind(tenant)
        .fetch_one(conn)
        .await
}

/// Inserts static members; returns those who entered.
pub async fn add_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "INSERT INTO memberships (tenant_id, segment_id, customer_id, enter_time)
         SELECT $1, $2, c, $4 FROM unnest($3::uuid[]) AS c
         ON CONFLICT DO NOTHING RETURNING customer_id",
    )
    .bind(tenant)
    .bind(segment)
    .bind(ids)
    .bind(now)
    .fetch_all(conn)
    .await
}

/// Deletes members; returns those who exited.
pub async fn remove_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    ids: &[Uuid],
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "DELETE FROM memberships WHERE tenant_id = $1 AND segment_id = $2 AND customer_id = ANY($3)
         RETURNING customer_id",
    )
    .bind(tenant)
    .bind(segment)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// The member count of a segment.
pub async fn member_count(conn: &mut PgConnection, tenant: Uuid, segment: Uuid) -> Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM memberships WHERE tenant_id = $1 AND segment_id = $2")
        .bind(tenant)
        .bind(segment)
        .fetch_one(conn)
        .await
}

/// A membership: since when, or None.
pub async fn membership(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    customer: Uuid,
) -> Result<Option<DateTime<Utc>>> {
    sqlx::query_scalar(
        "SELECT enter_time FROM memberships WHERE tenant_id = $1 AND segment_id = $2 AND customer_id = $3",
    )
    .bind(tenant)
    .bind(segment)
    .bind(customer)
    .fetch_optional(conn)
    .await
}

/// ListMembers: by customer id after `after`.
pub async fn list_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT customer_id, enter_time FROM memberships
         WHERE tenant_id = $1 AND segment_id = $2 AND ($3::uuid IS NULL OR customer_id > $3)
         ORDER BY customer_id LIMIT $4",
    )
    .bind(tenant)
    .bind(segment)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// GetCustomerSegments: (segment id, name, enter time) by name after `after`.
pub async fn customer_segments(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<(Uuid, String, DateTime<Utc>)>> {
    sqlx::query_as(
        "SELECT s.segment_id, s.name, m.enter_time FROM memberships m
         JOIN segments s ON s.tenant_id = m.tenant_id AND s.segment_id = m.segment_id
         WHERE m.tenant_id = $1 AND m.customer_id = $2 AND ($3::text IS NULL OR s.name COLLATE \"C\" > $3)
         ORDER BY s.name COLLATE \"C\" LIMIT $4",
    )
    .bind(tenant)
    .bind(customer)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The segments a customer is a member of.
pub async fn segments_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT segment_id FROM memberships WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(conn)
    .await
}

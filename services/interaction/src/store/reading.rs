//! Reading interactions (one, a timeline, filtered lists, summaries) and
//! updating the status of service requests and complaints.

use super::*;

/// One interaction of the tenant by id.
pub async fn get_interaction(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<StoredInteraction>, sqlx::Error> {
    let row: Option<InteractionRow> = sqlx::query_as(concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions WHERE tenant_id = $1 AND interaction_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// One interaction of the tenant by id and time (the time narrows the
/// search to one partition).
pub async fn get_interaction_at(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    occur_time: DateTime<Utc>,
) -> Result<Option<StoredInteraction>, sqlx::Error> {
    let row: Option<InteractionRow> = sqlx::query_as(concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions WHERE tenant_id = $1 AND interaction_id = $2 AND occur_time = $3"
    ))
    .bind(tenant)
    .bind(id)
    .bind(occur_time)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Filters of a timeline.
#[derive(Debug, Clone, Default)]
pub struct TimelineFilter {
    /// Only these types (empty: all).
    pub types: Vec<i16>,
    /// Only these custom types for CUSTOM interactions (empty: all).
    pub custom_types: Vec<String>,
    /// Only these channels (empty: all).
    pub channels: Vec<i16>,
    /// occur_time >= this.
    pub start: Option<DateTime<Utc>>,
    /// occur_time < this.
    pub end: Option<DateTime<Utc>>,
    /// Oldest first instead of newest first.
    pub oldest_first: bool,
}

/// A page of a customer's timeline after `after` (exclusive), in the
/// filter's order.
pub async fn list_interactions(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    f: &TimelineFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<StoredInteraction>, sqlx::Error> {
    const NEWEST: &str = concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions
         WHERE tenant_id = $1 AND customer_id = $2
           AND (cardinality($3::smallint[]) = 0 OR type = ANY($3))
           AND (cardinality($4::text[]) = 0 OR type <> 17 OR custom_type = ANY($4))
           AND (cardinality($5::smallint[]) = 0 OR channel = ANY($5))
           AND ($6::timestamptz IS NULL OR occur_time >= $6)
           AND ($7::timestamptz IS NULL OR occur_time < $7)
           AND ($8::timestamptz IS NULL OR (occur_time, interaction_id) < ($8, $9::uuid))
         ORDER BY occur_time DESC, interaction_id DESC LIMIT $10"
    );
    const OLDEST: &str = concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions
         WHERE tenant_id = $1 AND customer_id = $2
           AND (cardinality($3::smallint[]) = 0 OR type = ANY($3))
           AND (cardinality($4::text[]) = 0 OR type <> 17 OR custom_type = ANY($4))
           AND (cardinality($5::smallint[]) = 0 OR channel = ANY($5))
           AND ($6::timestamptz IS NULL OR occur_time >= $6)
           AND ($7::timestamptz IS NULL OR occur_time < $7)
           AND ($8::timestamptz IS NULL OR (occur_time, interaction_id) > ($8, $9::uuid))
         ORDER BY occur_time ASC, interaction_id ASC LIMIT $10"
    );
    let rows: Vec<InteractionRow> = sqlx::query_as(if f.oldest_first { OLDEST } else { NEWEST })
        .bind(tenant)
        .bind(customer)
        .bind(&f.types)
        .bind(&f.custom_types)
        .bind(&f.channels)
        .bind(f.start)
        .bind(f.end)
        .bind(after.map(|a| a.0))
        .bind(after.map(|a| a.1))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Locks one interaction for an update.
pub async fn lock_interaction(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<StoredInteraction>, sqlx::Error> {
    let row: Option<InteractionRow> = sqlx::query_as(concat!(
        "SELECT ",
        interaction_cols!(),
        " FROM interactions WHERE tenant_id = $1 AND interaction_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Writes a service request's new status, resolve time and agent.
pub async fn update_status(
    conn: &mut PgConnection,
    tenant: Uuid,
    current: &StoredInteraction,
    status: i32,
    resolve_time: Option<DateTime<Utc>>,
    agent_id: Option<&str>,
) -> Result<StoredInteraction, sqlx::Error> {
    let row: InteractionRow = sqlx::query_as(concat!(
        "UPDATE interactions SET status = $4, resolve_time = $5, agent_id = $6,
                update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND interaction_id = $2 AND occur_time = $3
         RETURNING ",
        interaction_cols!()
    ))
    .bind(tenant)
    .bind(current.interaction_id)
    .bind(current.occur_time)
    .bind(status as i16)
    .bind(resolve_time)
    .bind(agent_id)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

#[derive(sqlx::FromRow)]
struct SummarySqlRow {
    interaction_id: Uuid,
    kind: i16,
    occur_time: DateTime<Utc>,
    currency: Option<String>,
    amount: Option<String>,
    margin: Option<String>,
    campaign_id: Option<Uuid>,
    status: i16,
    resolve_time: Option<DateTime<Utc>>,
    csat: Option<i16>,
    nps: Option<i16>,
}

/// What a customer's summary needs of its interactions up to `as_of`.
pub async fn summary_rows(
    pool: &PgPool,
    tenant: Uuid,
    customer: Uuid,
    as_of: DateTime<Utc>,
) -> Result<Vec<SummaryRow>, sqlx::Error> {
    let rows: Vec<SummarySqlRow> = sqlx::query_as(
        "SELECT interaction_id, type AS kind, occur_time, currency, amount::text AS amount,
                margin::text AS margin, campaign_id, status, resolve_time, csat, nps
         FROM interactions
         WHERE tenant_id = $1 AND customer_id = $2 AND occur_time <= $3 AND type <> 17",
    )
    .bind(tenant)
    .bind(customer)
    .bind(as_of)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| SummaryRow {
            interaction_id: r.interaction_id,
            kind: i32::from(r.kind),
            occur_time: r.occur_time,
            amount: r.amount.as_deref().and_then(decimal_to_nanos),
            margin: r.margin.as_deref().and_then(decimal_to_nanos),
            currency: r.currency,
            campaign_id: r.campaign_id,
            status: i32::from(r.status),
            resolve_time: r.resolve_time,
            csat: r.csat.map(i32::from),
            nps: r.nps.map(i32::from),
        })
        .collect())
}

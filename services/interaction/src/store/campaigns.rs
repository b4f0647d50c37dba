//! Campaigns and their response reports.

use super::*;

#[derive(sqlx::FromRow)]
struct CampaignRow {
    campaign_id: Uuid,
    name: String,
    description: String,
    channel: i16,
    target_segment_id: Option<Uuid>,
    start_time: Option<DateTime<Utc>>,
    end_time: Option<DateTime<Utc>>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    version: i64,
}

impl From<CampaignRow> for StoredCampaign {
    fn from(r: CampaignRow) -> Self {
        StoredCampaign {
            campaign_id: r.campaign_id,
            name: r.name,
            description: r.description,
            channel: i32::from(r.channel),
            target_segment_id: r.target_segment_id,
            start_time: r.start_time,
            end_time: r.end_time,
            create_time: r.create_time,
            update_time: r.update_time,
            version: r.version,
        }
    }
}

/// Inserts a campaign.
pub async fn insert_campaign(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    c: &CampaignInput,
) -> Result<StoredCampaign, sqlx::Error> {
    let row: CampaignRow = sqlx::query_as(concat!(
        "INSERT INTO campaigns (tenant_id, campaign_id, name, description, channel, target_segment_id,
                                start_time, end_time)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING ",
        campaign_cols!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(&c.name)
    .bind(&c.description)
    .bind(c.channel as i16)
    .bind(c.target_segment_id)
    .bind(c.start_time)
    .bind(c.end_time)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// One campaign of the tenant.
pub async fn get_campaign(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    for_update: bool,
) -> Result<Option<StoredCampaign>, sqlx::Error> {
    let sql = if for_update {
        concat!(
            "SELECT ",
            campaign_cols!(),
            " FROM campaigns WHERE tenant_id = $1 AND campaign_id = $2 FOR UPDATE"
        )
    } else {
        concat!(
            "SELECT ",
            campaign_cols!(),
            " FROM campaigns WHERE tenant_id = $1 AND campaign_id = $2"
        )
    };
    let row: Option<CampaignRow> = sqlx::query_as(sql)
        .bind(tenant)
        .bind(id)
        .fetch_optional(conn)
        .await?;
    Ok(row.map(Into::into))
}

/// Writes a campaign's new fields.
pub async fn update_campaign(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    c: &CampaignInput,
) -> Result<StoredCampaign, sqlx::Error> {
    let row: CampaignRow = sqlx::query_as(concat!(
        "UPDATE campaigns SET name = $3, description = $4, channel = $5, target_segment_id = $6,
                start_time = $7, end_time = $8, update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND campaign_id = $2
         RETURNING ",
        campaign_cols!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(&c.name)
    .bind(&c.description)
    .bind(c.channel as i16)
    .bind(c.target_segment_id)
    .bind(c.start_time)
    .bind(c.end_time)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// Filters of a campaign listing.
#[derive(Debug, Clone, Default)]
pub struct CampaignFilter {
    /// Only this channel.
    pub channel: Option<i16>,
    /// Only this target segment.
    pub target_segment_id: Option<Uuid>,
    /// Only campaigns running at this time.
    pub active_time: Option<DateTime<Utc>>,
}

/// A page of the tenant's campaigns, newest first, after `after`.
pub async fn list_campaigns(
    pool: &PgPool,
    tenant: Uuid,
    f: &CampaignFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<StoredCampaign>, sqlx::Error> {
    let rows: Vec<CampaignRow> = sqlx::query_as(concat!(
        "SELECT ",
        campaign_cols!(),
        " FROM campaigns
         WHERE tenant_id = $1
           AND ($2::smallint IS NULL OR channel = $2)
           AND ($3::uuid IS NULL OR target_segment_id = $3)
           AND ($4::timestamptz IS NULL OR (start_time <= $4 AND (end_time IS NULL OR end_time > $4)))
           AND ($5::timestamptz IS NULL OR (create_time, campaign_id) < ($5, $6::uuid))
         ORDER BY create_time DESC, campaign_id DESC LIMIT $7"
    ))
    .bind(tenant)
    .bind(f.channel)
    .bind(f.target_segment_id)
    .bind(f.active_time)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Distinct customers per response type of a campaign.
pub async fn campaign_counts(
    pool: &PgPool,
    tenant: Uuid,
    campaign: Uuid,
) -> Result<ResponseCounts, sqlx::Error> {
    let rows: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT type, count(DISTINCT customer_id) FROM interactions
         WHERE tenant_id = $1 AND campaign_id = $2 AND type BETWEEN 10 AND 14
         GROUP BY type",
    )
    .bind(tenant)
    .bind(campaign)
    .fetch_all(pool)
    .await?;
    let mut c = ResponseCounts::default();
    for (t, n) in rows {
        match t {
            10 => c.sent = n,
            11 => c.opened = n,
            12 => c.clicked = n,
            13 => c.converted = n,
            14 => c.unsubscribed = n,
            _ => {}
        }
    }
    Ok(c)
}

/// The purchases made within `window_seconds` after a click or conversion of
/// the campaign by the same customer.
pub async fn attributed_purchases(
    pool: &PgPool,
    tenant: Uuid,
    campaign: Uuid,
    window_seconds: f64,
) -> Result<Vec<AttributedPurchase>, sqlx::Error> {
    type Row = (Uuid, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT p.customer_id, p.currency, p.amount::text, p.margin::text
         FROM interactions p
         WHERE p.tenant_id = $1 AND p.type = 1
           AND p.customer_id IN (SELECT customer_id FROM interactions
                                 WHERE tenant_id = $1 AND campaign_id = $2 AND type IN (12, 13))
           AND EXISTS (SELECT 1 FROM interactions t
                       WHERE t.tenant_id = $1 AND t.campaign_id = $2 AND t.type IN (12, 13)
                         AND t.customer_id = p.customer_id
                         AND t.occur_time <= p.occur_time
                         AND t.occur_time >= p.occur_time - make_interval(secs => $3))",
    )
    .bind(tenant)
    .bind(campaign)
    .bind(window_seconds)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(customer_id, currency, amount, margin)| {
            Some(AttributedPurchase {
                customer_id,
                currency: currency?,
                amount: decimal_to_nanos(amount.as_deref()?)?,
                margin: margin.as_deref().and_then(decimal_to_nanos),
            })
        })
        .collect())
}

//! The interactions that cost (`activities`) and what the service knows of
//! each customer beyond its purchases (`customers`: first interaction,
//! first purchase, ladder rung and Dwyer stage), kept from the interaction
//! and segmentation feeds.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::PgConnection;
use uuid::Uuid;

/// One interaction that costs, as received on the interaction feed.
#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    /// The interaction.
    pub interaction_id: Uuid,
    /// Its customer now.
    pub customer_id: Uuid,
    /// The customer it was first recorded under.
    pub original_customer_id: Uuid,
    /// When it happened.
    pub occur_time: DateTime<Utc>,
    /// Type (proto value).
    pub kind: i16,
    /// Channel (proto value).
    pub channel: i16,
    /// Returns: the refund's currency.
    pub currency: Option<String>,
    /// Returns: the refund.
    pub amount: Option<Decimal>,
    /// Service requests and complaints recorded as already resolved.
    pub resolve_time: Option<DateTime<Utc>>,
}

/// Records activities (one already recorded is left alone).
pub async fn record(tx: &mut PgConnection, tenant: Uuid, list: &[Activity]) -> sqlx::Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = list.iter().map(|a| a.interaction_id).collect();
    let customers: Vec<Uuid> = list.iter().map(|a| a.customer_id).collect();
    let originals: Vec<Uuid> = list.iter().map(|a| a.original_customer_id).collect();
    let times: Vec<DateTime<Utc>> = list.iter().map(|a| a.occur_time).collect();
    let kinds: Vec<i16> = list.iter().map(|a| a.kind).collect();
    let channels: Vec<i16> = list.iter().map(|a| a.channel).collect();
    let currencies: Vec<Option<String>> = list.iter().map(|a| a.currency.clone()).collect();
    let amounts: Vec<Option<Decimal>> = list.iter().map(|a| a.amount).collect();
    let resolved: Vec<Option<DateTime<Utc>>> = list.iter().map(|a| a.resolve_time).collect();
    sqlx::query(
        "INSERT INTO activities (tenant_id, interaction_id, customer_id, original_customer_id,
             occur_time, type, channel, currency, amount, resolve_time)
         SELECT $1, t.* FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::timestamptz[],
             $6::smallint[], $7::smallint[], $8::text[], $9::numeric[], $10::timestamptz[]) AS t
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&customers)
    .bind(&originals)
    .bind(&times)
    .bind(&kinds)
    .bind(&channels)
    .bind(&currencies)
    .bind(&amounts)
    .bind(&resolved)
    .execute(tx)
    .await?;
    Ok(())
}

/// Sets the resolution time of service requests and complaints (None when
/// reopened), in feed order: the last change of an interaction wins.
pub async fn resolve(
    tx: &mut PgConnection,
    tenant: Uuid,
    changes: &[(Uuid, Option<DateTime<Utc>>)],
) -> sqlx::Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    let times: Vec<Option<DateTime<Utc>>> = changes.iter().map(|c| c.1).collect();
    sqlx::query(
        "UPDATE activities a SET resolve_time = x.t
         FROM (SELECT DISTINCT ON (id) id, t FROM unnest($2::uuid[], $3::timestamptz[])
                   WITH ORDINALITY AS u(id, t, n)
               ORDER BY id, n DESC) AS x
         WHERE a.tenant_id = $1 AND a.interaction_id = x.id
           AND a.resolve_time IS DISTINCT FROM x.t",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&times)
    .execute(tx)
    .await?;
    Ok(())
}

/// Notes that customers had a purchase (`purchase`) or a priced
/// interaction at a time: their first interaction and first purchase move
/// earlier when it is earlier. Rows are written in customer order.
pub async fn seen(
    tx: &mut PgConnection,
    tenant: Uuid,
    list: &[(Uuid, DateTime<Utc>, bool)],
) -> sqlx::Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let customers: Vec<Uuid> = list.iter().map(|s| s.0).collect();
    let times: Vec<DateTime<Utc>> = list.iter().map(|s| s.1).collect();
    let purchases: Vec<bool> = list.iter().map(|s| s.2).collect();
    sqlx::query(
        "INSERT INTO customers AS c (tenant_id, customer_id, first_seen, first_purchase)
         SELECT $1, x.c, min(x.t), min(x.t) FILTER (WHERE x.p)
         FROM unnest($2::uuid[], $3::timestamptz[], $4::bool[]) AS x(c, t, p)
         GROUP BY x.c ORDER BY x.c
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             first_seen = LEAST(c.first_seen, EXCLUDED.first_seen),
             first_purchase = LEAST(c.first_purchase, EXCLUDED.first_purchase)
         WHERE (c.first_seen, c.first_purchase) IS DISTINCT FROM
               (LEAST(c.first_seen, EXCLUDED.first_seen),
                LEAST(c.first_purchase, EXCLUDED.first_purchase))",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(&times)
    .bind(&purchases)
    .execute(tx)
    .await?;
    Ok(())
}

/// Recomputes the first interaction and first purchase of customers from
/// their purchases and activities (after a merge or unmerge moved them).
pub async fn recount(tx: &mut PgConnection, tenant: Uuid, customers: &[Uuid]) -> sqlx::Result<()> {
    let mut sorted = customers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sqlx::query(
        "INSERT INTO customers AS c (tenant_id, customer_id, first_seen, first_purchase)
         SELECT $1, x.c, LEAST(p.t, a.t), p.t
         FROM unnest($2::uuid[]) AS x(c)
         LEFT JOIN LATERAL (SELECT min(occur_time) AS t FROM purchases
                            WHERE tenant_id = $1 AND customer_id = x.c) p ON true
         LEFT JOIN LATERAL (SELECT min(occur_time) AS t FROM activities
                            WHERE tenant_id = $1 AND customer_id = x.c) a ON true
         ORDER BY x.c
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             first_seen = EXCLUDED.first_seen, first_purchase = EXCLUDED.first_purchase",
    )
    .bind(tenant)
    .bind(&sorted)
    .execute(tx)
    .await?;
    Ok(())
}

/// Records segmentation's classification of customers (ladder rung, Dwyer
/// stage; proto values), the last of a customer's in the list winning.
pub async fn classify(
    tx: &mut PgConnection,
    tenant: Uuid,
    list: &[(Uuid, i16, i16)],
) -> sqlx::Result<()> {
    if list.is_empty() {
        return Ok(());
    }
    let customers: Vec<Uuid> = list.iter().map(|s| s.0).collect();
    let rungs: Vec<i16> = list.iter().map(|s| s.1).collect();
    let stages: Vec<i16> = list.iter().map(|s| s.2).collect();
    sqlx::query(
        "INSERT INTO customers AS c (tenant_id, customer_id, ladder_rung, stage)
         SELECT $1, x.c, x.r, x.s FROM (
             SELECT DISTINCT ON (c) c, r, s
             FROM unnest($2::uuid[], $3::smallint[], $4::smallint[]) WITH ORDINALITY AS u(c, r, s, n)
             ORDER BY c, n DESC) AS x
         ORDER BY x.c
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             ladder_rung = EXCLUDED.ladder_rung, stage = EXCLUDED.stage
         WHERE (c.ladder_rung, c.stage) IS DISTINCT FROM (EXCLUDED.ladder_rung, EXCLUDED.stage)",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(&rungs)
    .bind(&stages)
    .execute(tx)
    .await?;
    Ok(())
}

/// Deletes an erased customer's activities and what is known of it.
pub async fn erase(tx: &mut PgConnection, tenant: Uuid, customer: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM activities WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM customers WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(tx)
        .await?;
    Ok(())
}

/// True when the tenant has a cost model (its customers are re-scored when
/// their costs change).
pub async fn priced(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cost_models WHERE tenant_id = $1)")
        .bind(tenant)
        .fetch_one(tx)
        .await
}

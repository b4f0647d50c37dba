//! Customers in the projection one at a time: known, removed and restored,
//! their attribute types, and their events moved or deleted.

use super::*;

/// Whether the customer was deleted, erased or merged.
pub async fn is_removed(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<bool> {
    let r: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM removed_customers WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_optional(conn)
    .await?;
    Ok(r.is_some())
}

/// Whether the service has features for the customer.
pub async fn is_known(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<bool> {
    let r: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM features WHERE tenant_id = $1 AND customer_id = $2")
            .bind(tenant)
            .bind(customer)
            .fetch_optional(conn)
            .await?;
    Ok(r.is_some())
}

/// Which of `ids` have features.
pub async fn known_among(conn: &mut PgConnection, tenant: Uuid, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    // One key lookup per id (a lateral subquery the planner cannot flatten),
    // whatever the statistics say about a fast-growing tenant.
    sqlx::query_scalar(
        "SELECT f.customer_id FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT customer_id FROM features
                                WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) f",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await
}

/// The profile part of a customer's features.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProfileFacts {
    pub kind: Option<String>,
    pub country: Option<String>,
    pub tags: Vec<String>,
    pub profile_stage: Option<String>,
    pub attributes: Value,
    pub consents: Value,
}

/// Attribute types seen on a snapshot, for attributes the catalogue lacks.
pub async fn note_attribute_types(
    conn: &mut PgConnection,
    tenant: Uuid,
    types: &[(String, &'static str)],
) -> Result<()> {
    if types.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = types.iter().map(|(n, _)| n.as_str()).collect();
    let kinds: Vec<&str> = types.iter().map(|(_, t)| *t).collect();
    sqlx::query(
        "INSERT INTO attribute_fields (tenant_id, name, type)
         SELECT $1, n, t FROM unnest($2::text[], $3::text[]) AS x(n, t)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&kinds)
    .execute(conn)
    .await?;
    Ok(())
}

/// Replaces attribute fields with the profile service's definitions.
pub async fn save_attribute_definitions(
    conn: &mut PgConnection,
    tenant: Uuid,
    defs: &[crate::peers::AttributeDef],
) -> Result<()> {
    if defs.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = defs.iter().map(|d| d.name.as_str()).collect();
    let kinds: Vec<&str> = defs.iter().map(|d| d.ty).collect();
    let descs: Vec<&str> = defs.iter().map(|d| d.description.as_str()).collect();
    sqlx::query(
        "INSERT INTO attribute_fields (tenant_id, name, type, description)
         SELECT $1, n, t, d FROM unnest($2::text[], $3::text[], $4::text[]) AS x(n, t, d)
         ON CONFLICT (tenant_id, name) DO UPDATE SET type = excluded.type, description = excluded.description",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&kinds)
    .bind(&descs)
    .execute(conn)
    .await?;
    Ok(())
}

/// The attribute fields of the tenant: (name, type, description).
pub async fn attribute_fields(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<Vec<(String, String, String)>> {
    sqlx::query_as(
        "SELECT name, type, description FROM attribute_fields WHERE tenant_id = $1 ORDER BY name",
    )
    .bind(tenant)
    .fetch_all(conn)
    .await
}

/// The custom interaction types seen for the tenant, in ascending order.
pub async fn custom_types(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<String>> {
    sqlx::query_scalar("SELECT type FROM custom_types WHERE tenant_id = $1 ORDER BY type")
        .bind(tenant)
        .fetch_all(conn)
        .await
}

/// Removes a customer's features (deleted, erased or merged). Returns the
/// memberships it had: (segment id, segment name, segment kind).
pub async fn remove_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    state: Removal,
    merged_into: Option<Uuid>,
) -> Result<Vec<(Uuid, String, Kind)>> {
    sqlx::query(
        "INSERT INTO removed_customers (tenant_id, customer_id, state, merged_into) VALUES ($1, $2, $3, $4)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET state = excluded.state,
             merged_into = excluded.merged_into, update_time = now()",
    )
    .bind(tenant)
    .bind(customer)
    .bind(state)
    .bind(merged_into)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM features WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(
        "WITH gone AS (
             DELETE FROM memberships WHERE tenant_id = $1 AND customer_id = $2 RETURNING segment_id)
         SELECT s.segment_id, s.name, s.kind FROM gone g
         JOIN segments s ON s.tenant_id = $1 AND s.segment_id = g.segment_id
         ORDER BY s.name",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(conn)
    .await
}

/// Forgets a removal (undelete, unmerge): the customer may have features again.
pub async fn restore_customer(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM removed_customers WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes every interaction of an erased customer.
pub async fn delete_events(conn: &mut PgConnection, tenant: Uuid, customer: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM events WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(customer)
        .execute(conn)
        .await?;
    Ok(())
}

/// Moves interactions from one customer to another (all of them, or the
/// listed ones). Idempotent.
pub async fn move_events(
    conn: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
    only: Option<&[Uuid]>,
) -> Result<u64> {
    let r = sqlx::query(
        "WITH moved AS (
             DELETE FROM events WHERE tenant_id = $1 AND customer_id = $2
               AND ($4::uuid[] IS NULL OR interaction_id = ANY($4))
             RETURNING *)
         INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount, margin,
                             csat, nps, campaign_id, open)
         SELECT tenant_id, $3, interaction_id, type, occur_time, amount, margin, csat, nps, campaign_id, open
         FROM moved ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .bind(only)
    .execute(conn)
    .await?;
    Ok(r.rows_affected())
}

/// Valuation values of a customer.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValueFacts {
    pub clv: Option<Decimal>,
    pub p_alive: Option<Decimal>,
    pub expected_purchases: Option<Decimal>,
    pub value_tier: Option<String>,
    pub net_clv: Option<Decimal>,
    pub cost_to_serve: Option<Decimal>,
    pub net_profit: Option<Decimal>,
    pub profit_decile: Option<i16>,
}

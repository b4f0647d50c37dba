//! Facts for explanations: a customer's features, events and ranks.

use super::*;

/// The customer's features row as JSON (`to_jsonb(f)`).
pub async fn features_json(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<Option<Value>> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM features f WHERE f.tenant_id = $1 AND f.customer_id = $2",
        crate::rule::FEATURES_ROW_SQL
    )))
    .bind(tenant)
    .bind(customer)
    .fetch_optional(conn)
    .await
}

/// The customer's events.
pub async fn customer_events(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<Vec<crate::rule::Event>> {
    type EventTuple = (
        String,
        DateTime<Utc>,
        Option<Decimal>,
        Option<Decimal>,
        Option<i32>,
        Option<i32>,
    );
    let rows: Vec<EventTuple> = sqlx::query_as(
        "SELECT type, occur_time, amount, margin, csat, nps FROM events
             WHERE tenant_id = $1 AND customer_id = $2 ORDER BY occur_time",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(kind, occur_time, amount, margin, csat, nps)| crate::rule::Event {
                kind,
                occur_time,
                amount,
                margin,
                csat,
                nps,
            },
        )
        .collect())
}

/// The SQL expression of a rankable field over `f`, if it is one
/// (attribute names are bound, never spliced).
fn ranked_expr(field: &str) -> Option<&'static str> {
    Some(match field {
        "purchases" => "f.purchases::numeric",
        "monetary" => "f.monetary",
        "avg_order_value" => "f.avg_order_value",
        "contacts" => "f.contacts::numeric",
        "open_service_requests" => "f.open_service_requests::numeric",
        "complaints" => "f.complaints::numeric",
        "open_complaints" => "f.open_complaints::numeric",
        "csat" => "f.csat::numeric",
        "nps" => "f.nps::numeric",
        "campaign_response_rate" => "f.campaign_response_rate",
        "clv" => "f.clv",
        "p_alive" => "f.p_alive",
        "expected_purchases" => "f.expected_purchases",
        "net_clv" => "f.net_clv",
        "cost_to_serve" => "f.cost_to_serve",
        "net_profit" => "f.net_profit",
        "profit_decile" => "f.profit_decile::numeric",
        "rfm.r" => "f.rfm_r::numeric",
        "rfm.f" => "f.rfm_f::numeric",
        "rfm.m" => "f.rfm_m::numeric",
        "rfm.fm" => "f.rfm_fm::numeric",
        _ => return None,
    })
}

/// The customer's standing on a numeric field among the tenant's customers
/// with a value: (greater, smaller, total); None when the customer has none.
pub async fn rank_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    field: &str,
) -> Result<Option<(i64, i64, i64)>> {
    let (expr, attr) = match (ranked_expr(field), field.strip_prefix("attr.")) {
        (Some(e), _) => (e.to_string(), None),
        (None, Some(name)) => (
            "(CASE WHEN jsonb_typeof(f.attributes -> $3) = 'string' AND (f.attributes ->> $3) ~ '^-?[0-9]+(\\.[0-9]+)?$'
                   THEN (f.attributes ->> $3)::numeric
                   WHEN jsonb_typeof(f.attributes -> $3) = 'number' THEN (f.attributes ->> $3)::numeric END)"
                .to_string(),
            Some(name.to_string()),
        ),
        _ => return Ok(None),
    };
    let text = format!(
        "WITH me AS (SELECT {expr} AS v FROM features f WHERE f.tenant_id = $1 AND f.customer_id = $2)
         SELECT count(*) FILTER (WHERE x.v > me.v), count(*) FILTER (WHERE x.v < me.v), count(x.v)
         FROM me, (SELECT {expr} AS v FROM features f WHERE f.tenant_id = $1) x
         WHERE me.v IS NOT NULL"
    );
    let q = sqlx::query_as::<_, (i64, i64, i64)>(sqlx::AssertSqlSafe(text))
        .bind(tenant)
        .bind(customer);
    let q = match attr.as_deref() {
        Some(a) => q.bind(a.to_string()),
        None => q,
    };
    let r = q.fetch_optional(conn).await?;
    Ok(r.filter(|(_, _, n)| *n > 0))
}

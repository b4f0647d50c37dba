//! Export: purchase histories streamed for valuation.

use super::*;

/// The tenant's most frequent currency among purchases before `before`.
pub async fn main_currency(
    conn: &mut PgConnection,
    tenant: Uuid,
    before: DateTime<Utc>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT currency FROM interactions
         WHERE tenant_id = $1 AND type = 1 AND occur_time < $2 AND currency IS NOT NULL
         GROUP BY currency ORDER BY count(*) DESC, currency LIMIT 1",
    )
    .bind(tenant)
    .bind(before)
    .fetch_optional(conn)
    .await
}

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportQuery {
    /// The tenant.
    pub tenant: Uuid,
    /// End of the calibration period (exclusive).
    pub calibration_end: DateTime<Utc>,
    /// End of the holdout period (exclusive), if any.
    pub holdout_end: Option<DateTime<Utc>>,
    /// The export currency.
    pub currency: String,
    /// Only these customers (current ids).
    pub customers: Option<Vec<Uuid>>,
}

#[derive(sqlx::FromRow)]
struct ExportRow {
    customer_id: Uuid,
    occur_time: DateTime<Utc>,
    amount_nanos: Option<i64>,
    amount_text: Option<String>,
    margin_nanos: Option<i64>,
    margin_text: Option<String>,
}

/// An amount in nanos: computed by the database as a bigint when it fits
/// (below 9 billion units, nearly always), read as text otherwise.
fn nanos(int: Option<i64>, text: Option<&str>) -> Option<i128> {
    int.map(i128::from)
        .or_else(|| text.and_then(decimal_to_nanos))
}

/// Streams the purchases an export needs, in (customer id, time) order:
/// every purchase before the holdout end (or the calibration end), with its
/// amount and margin when it is in the export currency. Run it in a
/// repeatable-read transaction for one consistent snapshot.
pub fn export_purchases<'a>(
    conn: &'a mut PgConnection,
    q: &'a ExportQuery,
) -> BoxStream<'a, Result<(Uuid, Purchase), sqlx::Error>> {
    sqlx::query_as::<_, ExportRow>(
        "SELECT customer_id, occur_time,
                CASE WHEN currency = $3 AND abs(amount) < 9e9
                     THEN (amount * 1000000000)::int8 END AS amount_nanos,
                CASE WHEN currency = $3 AND abs(amount) >= 9e9
                     THEN amount::text END AS amount_text,
                CASE WHEN currency = $3 AND abs(margin) < 9e9
                     THEN (margin * 1000000000)::int8 END AS margin_nanos,
                CASE WHEN currency = $3 AND abs(margin) >= 9e9
                     THEN margin::text END AS margin_text
         FROM interactions
         WHERE tenant_id = $1 AND type = 1 AND occur_time < $2
           AND ($4::uuid[] IS NULL OR customer_id = ANY($4))
         ORDER BY customer_id, occur_time",
    )
    .bind(q.tenant)
    .bind(q.holdout_end.unwrap_or(q.calibration_end))
    .bind(&q.currency)
    .bind(q.customers.as_deref())
    .fetch(conn)
    .map(|r| {
        r.map(|r| {
            let amount = nanos(r.amount_nanos, r.amount_text.as_deref());
            (
                r.customer_id,
                Purchase {
                    occur_time: r.occur_time,
                    in_currency: amount.is_some(),
                    amount: amount.unwrap_or(0),
                    margin: nanos(r.margin_nanos, r.margin_text.as_deref()),
                },
            )
        })
    })
    .boxed()
}

//! The kept purchase summaries (see `domain::kept`): merged batch by batch
//! as purchases arrive on the interaction feed, rebuilt for the customers a
//! merge, unmerge or erasure touches, and read whole by a fit with a binary
//! `COPY`.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rapport_kit::copy::{self, CopyError};
use sqlx::{AssertSqlSafe, PgConnection};
use uuid::Uuid;

use crate::domain::kept::{Delta, KeptRow, day_start};

/// The (customer, UTC day) pairs among `pairs` on which the customer
/// already has a purchase.
pub async fn existing_days(
    tx: &mut PgConnection,
    tenant: Uuid,
    pairs: &[(Uuid, i32)],
) -> sqlx::Result<HashSet<(Uuid, i32)>> {
    if pairs.is_empty() {
        return Ok(HashSet::new());
    }
    let customers: Vec<Uuid> = pairs.iter().map(|p| p.0).collect();
    let days: Vec<i32> = pairs.iter().map(|p| p.1).collect();
    let starts: Vec<DateTime<Utc>> = days.iter().map(|d| day_start(*d)).collect();
    let rows: Vec<(Uuid, i32)> = sqlx::query_as(
        "SELECT t.c, t.d FROM unnest($2::uuid[], $3::int4[], $4::timestamptz[]) AS t(c, d, s)
          WHERE EXISTS (SELECT 1 FROM purchases p
                         WHERE p.tenant_id = $1 AND p.customer_id = t.c
                           AND p.occur_time >= t.s AND p.occur_time < t.s + interval '1 day')",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(&days)
    .bind(&starts)
    .fetch_all(tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Merges what a batch of new purchases adds into the customers' summaries,
/// and notes the tenant's latest purchase time.
pub async fn merge(tx: &mut PgConnection, tenant: Uuid, deltas: &[Delta]) -> sqlx::Result<()> {
    let Some(latest) = deltas.iter().map(|d| d.last_time).max() else {
        return Ok(());
    };
    let col = |f: fn(&Delta) -> Option<i64>| deltas.iter().map(f).collect::<Vec<_>>();
    sqlx::query(
        "INSERT INTO purchase_summaries AS s (tenant_id, customer_id, first_time, last_time,
             first_day, last_day, days, purchases, currency, mixed, value_nanos,
             first_day_value_nanos, margin_nanos)
         SELECT $1, t.* FROM unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[],
             $5::int4[], $6::int4[], $7::int4[], $8::int8[], $9::text[], $10::bool[],
             $11::int8[], $12::int8[], $13::int8[]) AS t
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET
             first_day_value_nanos = CASE
                 WHEN EXCLUDED.first_day < s.first_day THEN EXCLUDED.first_day_value_nanos
                 WHEN EXCLUDED.first_day > s.first_day THEN s.first_day_value_nanos
                 WHEN abs(s.first_day_value_nanos::numeric + EXCLUDED.first_day_value_nanos) < 9e18
                 THEN s.first_day_value_nanos + EXCLUDED.first_day_value_nanos END,
             first_time = least(s.first_time, EXCLUDED.first_time),
             last_time = greatest(s.last_time, EXCLUDED.last_time),
             first_day = least(s.first_day, EXCLUDED.first_day),
             last_day = greatest(s.last_day, EXCLUDED.last_day),
             days = s.days + EXCLUDED.days,
             purchases = s.purchases + EXCLUDED.purchases,
             currency = CASE
                 WHEN s.mixed OR EXCLUDED.mixed OR s.currency <> EXCLUDED.currency THEN NULL
                 ELSE coalesce(s.currency, EXCLUDED.currency) END,
             mixed = s.mixed OR EXCLUDED.mixed OR coalesce(s.currency <> EXCLUDED.currency, false),
             value_nanos = CASE WHEN abs(s.value_nanos::numeric + EXCLUDED.value_nanos) < 9e18
                 THEN s.value_nanos + EXCLUDED.value_nanos END,
             margin_nanos = CASE WHEN abs(s.margin_nanos::numeric + EXCLUDED.margin_nanos) < 9e18
                 THEN s.margin_nanos + EXCLUDED.margin_nanos END",
    )
    .bind(tenant)
    .bind(deltas.iter().map(|d| d.customer).collect::<Vec<_>>())
    .bind(deltas.iter().map(|d| d.first_time).collect::<Vec<_>>())
    .bind(deltas.iter().map(|d| d.last_time).collect::<Vec<_>>())
    .bind(deltas.iter().map(|d| d.first_day).collect::<Vec<_>>())
    .bind(deltas.iter().map(|d| d.last_day).collect::<Vec<_>>())
    .bind(deltas.iter().map(|d| d.new_days).collect::<Vec<_>>())
    .bind(deltas.iter().map(|d| d.purchases).collect::<Vec<_>>())
    .bind(
        deltas
            .iter()
            .map(|d| d.currency.clone())
            .collect::<Vec<_>>(),
    )
    .bind(deltas.iter().map(|d| d.mixed).collect::<Vec<_>>())
    .bind(col(|d| d.value))
    .bind(col(|d| d.first_day_value))
    .bind(col(|d| d.margin))
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO purchase_summary_tenants AS s (tenant_id, last_time) VALUES ($1, $2)
         ON CONFLICT (tenant_id) DO UPDATE SET last_time = greatest(s.last_time, EXCLUDED.last_time)",
    )
    .bind(tenant)
    .bind(latest)
    .execute(tx)
    .await?;
    Ok(())
}

/// Adds `counts` (currency, purchases; negative to take away) to the
/// tenant's purchases per currency.
pub async fn count_currencies(
    tx: &mut PgConnection,
    tenant: Uuid,
    counts: &[(String, i64)],
) -> sqlx::Result<()> {
    if counts.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO purchase_currencies AS c (tenant_id, currency, purchases)
         SELECT $1, t.* FROM unnest($2::text[], $3::int8[]) AS t
         ON CONFLICT (tenant_id, currency) DO UPDATE SET purchases = c.purchases + EXCLUDED.purchases",
    )
    .bind(tenant)
    .bind(counts.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
    .bind(counts.iter().map(|c| c.1).collect::<Vec<_>>())
    .execute(tx)
    .await?;
    Ok(())
}

/// Takes a customer's purchases out of the tenant's counts per currency
/// (before they are deleted).
pub async fn uncount_customer(
    tx: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE purchase_currencies c SET purchases = c.purchases - e.n
           FROM (SELECT currency, count(*) AS n FROM purchases
                  WHERE tenant_id = $1 AND customer_id = $2 AND currency IS NOT NULL
                  GROUP BY currency) e
          WHERE c.tenant_id = $1 AND c.currency = e.currency",
    )
    .bind(tenant)
    .bind(customer)
    .execute(tx)
    .await?;
    Ok(())
}

/// The summaries of the purchases that `{filter}` selects (a condition on
/// `tenant_id = $1` and `customer_id`), as rows of `purchase_summaries`.
const SUMMARISE: &str = "
    SELECT $1, customer_id, first_time, last_time, first_day, last_day, days, purchases,
           CASE WHEN low = high THEN low END, low IS DISTINCT FROM high,
           CASE WHEN abs(value) < 9e9 THEN (value * 1000000000)::int8 END,
           CASE WHEN abs(first_value) < 9e9 THEN (first_value * 1000000000)::int8 END,
           CASE WHEN abs(margin) < 9e9 THEN (margin * 1000000000)::int8 END
    FROM (
        SELECT customer_id, min(first_time) AS first_time, max(last_time) AS last_time,
               min(day)::int4 AS first_day, max(day)::int4 AS last_day, count(*)::int4 AS days,
               sum(purchases)::int8 AS purchases, min(low) AS low, max(high) AS high,
               sum(value) AS value, (array_agg(value ORDER BY day))[1] AS first_value,
               sum(margin) AS margin
        FROM (
            SELECT customer_id,
                   (occur_time AT TIME ZONE 'UTC')::date - DATE '1970-01-01' AS day,
                   min(occur_time) AS first_time, max(occur_time) AS last_time,
                   count(*) AS purchases, min(currency) AS low, max(currency) AS high,
                   coalesce(sum(amount), 0) AS value,
                   coalesce(sum(margin) FILTER (WHERE currency IS NOT NULL), 0) AS margin
            FROM purchases WHERE {filter}
            GROUP BY 1, 2
        ) d
        GROUP BY customer_id
    ) c";

/// Rebuilds the summaries of `customers` from their purchases (a customer
/// left without any loses its summary).
pub async fn rebuild(tx: &mut PgConnection, tenant: Uuid, customers: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM purchase_summaries WHERE tenant_id = $1 AND customer_id = ANY($2)")
        .bind(tenant)
        .bind(customers)
        .execute(&mut *tx)
        .await?;
    let select = SUMMARISE.replace("{filter}", "tenant_id = $1 AND customer_id = ANY($2)");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO purchase_summaries {select}"
    )))
    .bind(tenant)
    .bind(customers)
    .execute(tx)
    .await?;
    Ok(())
}

/// Rebuilds everything kept for a tenant from its purchases: every
/// summary, the latest purchase time and the purchases per currency (a
/// repair, and the bench's way to summarise purchases it loaded by COPY).
pub async fn rebuild_tenant(tx: &mut PgConnection, tenant: Uuid) -> sqlx::Result<()> {
    for table in [
        "purchase_summaries",
        "purchase_summary_tenants",
        "purchase_currencies",
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1"
        )))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    }
    let select = SUMMARISE.replace("{filter}", "tenant_id = $1");
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO purchase_summaries {select}"
    )))
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO purchase_summary_tenants
         SELECT $1, max(occur_time) FROM purchases WHERE tenant_id = $1 HAVING count(*) > 0",
    )
    .bind(tenant)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO purchase_currencies
         SELECT $1, currency, count(*) FROM purchases
          WHERE tenant_id = $1 AND currency IS NOT NULL GROUP BY currency",
    )
    .bind(tenant)
    .execute(tx)
    .await?;
    Ok(())
}

/// How far what is kept for a tenant is from a rebuild from its purchases:
/// (summaries that differ, are missing or are extra; currencies whose
/// purchase counts differ). Nothing is changed: the rebuild is rolled back.
/// The soak's audit and repairs use it.
pub async fn drift(conn: &mut PgConnection, tenant: Uuid) -> sqlx::Result<(i64, i64)> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for (table, filter) in [
        ("purchase_summaries", ""),
        ("purchase_currencies", " AND purchases <> 0"),
    ] {
        sqlx::query(AssertSqlSafe(format!(
            "CREATE TEMP TABLE kept_{table} ON COMMIT DROP AS
             SELECT * FROM {table} WHERE tenant_id = $1{filter}"
        )))
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
    }
    rebuild_tenant(&mut tx, tenant).await?;
    let mut out = [0i64; 2];
    for (slot, table) in out
        .iter_mut()
        .zip(["purchase_summaries", "purchase_currencies"])
    {
        *slot = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM (
                 (SELECT * FROM kept_{table} EXCEPT SELECT * FROM {table} WHERE tenant_id = $1)
                 UNION ALL
                 (SELECT * FROM {table} WHERE tenant_id = $1 EXCEPT SELECT * FROM kept_{table})) d"
        )))
        .bind(tenant)
        .fetch_one(&mut *tx)
        .await?;
    }
    tx.rollback().await?;
    Ok((out[0], out[1]))
}

/// What a fit needs to know before it reads the summaries: the latest
/// purchase time ever summarised (None before the first purchase) and the
/// tenant's main currency (most purchases, then alphabetical).
pub async fn fit_state(
    tx: &mut PgConnection,
    tenant: Uuid,
) -> sqlx::Result<(Option<DateTime<Utc>>, Option<String>)> {
    let latest: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT last_time FROM purchase_summary_tenants WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_optional(&mut *tx)
            .await?;
    let currency: Option<String> = sqlx::query_scalar(
        "SELECT currency FROM purchase_currencies WHERE tenant_id = $1 AND purchases > 0
         ORDER BY purchases DESC, currency LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(&mut *tx)
    .await?;
    Ok((latest, currency))
}

/// A summary the fast form cannot represent (amounts in several
/// currencies, or beyond int8): the fit must export instead.
#[derive(Debug)]
pub struct NotExact;

/// Calls `each` with every kept summary of the tenant, values in
/// `currency` (0 for customers whose amounts are in another), with a first
/// purchase in `[from, to)` when given; with the customer id and margin when
/// `full`. `Ok(Err(NotExact))` when a summary cannot be represented.
pub async fn for_each_summary(
    tx: &mut PgConnection,
    tenant: Uuid,
    currency: &str,
    cohort: Option<(DateTime<Utc>, DateTime<Utc>)>,
    full: bool,
    mut each: impl FnMut(KeptRow),
) -> Result<Result<(), NotExact>, CopyError> {
    // COPY takes no parameters: the tenant is a UUID and the times are
    // formatted here; the currency is checked to be three capital letters.
    if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
        return Ok(Err(NotExact));
    }
    let cohort = cohort
        .map(|(from, to)| {
            format!(
                " AND first_time >= '{}' AND first_time < '{}'",
                from.to_rfc3339(),
                to.to_rfc3339()
            )
        })
        .unwrap_or_default();
    let extra = if full {
        format!(
            ", customer_id,
               CASE WHEN mixed THEN NULL WHEN currency = '{currency}' THEN margin_nanos ELSE 0 END"
        )
    } else {
        String::new()
    };
    let statement = format!(
        "COPY (SELECT first_time, days, first_day, last_day,
                      CASE WHEN mixed THEN NULL WHEN currency = '{currency}' THEN value_nanos ELSE 0 END,
                      CASE WHEN mixed THEN NULL WHEN currency = '{currency}' THEN first_day_value_nanos ELSE 0 END
                      {extra}
                 FROM purchase_summaries WHERE tenant_id = '{tenant}'{cohort})
         TO STDOUT (FORMAT binary)"
    );
    copy::for_each_row(tx, &statement, |f| {
        let (
            Some(first_time),
            Some(days),
            Some(first_day),
            Some(last_day),
            Some(value),
            Some(first_value),
        ) = (
            copy::timestamptz(f.first().copied().flatten()),
            copy::int4(f.get(1).copied().flatten()),
            copy::int4(f.get(2).copied().flatten()),
            copy::int4(f.get(3).copied().flatten()),
            copy::int8(f.get(4).copied().flatten()),
            copy::int8(f.get(5).copied().flatten()),
        )
        else {
            return Err(NotExact);
        };
        let (customer_id, margin) = if full {
            let id = f
                .get(6)
                .copied()
                .flatten()
                .and_then(|b| Uuid::from_slice(b).ok());
            match (id, copy::int8(f.get(7).copied().flatten())) {
                (Some(id), Some(margin)) => (id, margin),
                _ => return Err(NotExact),
            }
        } else {
            (Uuid::nil(), 0)
        };
        each(KeptRow {
            customer_id,
            first_time,
            days,
            first_day,
            last_day,
            value,
            first_day_value: first_value,
            margin,
        });
        Ok(())
    })
    .await
}

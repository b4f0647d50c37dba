//! What the feeds of the other services said of each customer: status,
//! classification, value, memberships, consents, contacts, complaints and
//! unsubscribes. Written by the feed consumers, read to decide.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Duration, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;
use crate::domain::Amount;
use crate::domain::consent::Record;
use crate::domain::decide::Customer;

/// How far back contacts are read: the longest cap window.
const CONTACT_HORIZON_DAYS: i64 = 365;

#[derive(sqlx::FromRow)]
struct CustomerRow {
    customer_id: Uuid,
    ladder_rung: i32,
    stage: i32,
    clv_currency: Option<String>,
    clv_units: Option<i64>,
    clv_nanos: Option<i32>,
    net_clv_units: Option<i64>,
    net_clv_nanos: Option<i32>,
    p_alive: Option<f64>,
    last_complaint_time: Option<DateTime<Utc>>,
    last_unsubscribe_time: Option<DateTime<Utc>>,
}

/// The customer as known to the service, when the profile feed has said it
/// exists and it is not deleted.
pub async fn customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Option<Customer>> {
    Ok(customers(conn, tenant, &[id], now).await?.pop())
}

/// Those of `ids` the profile feed has said exist and are not deleted, in
/// the order of `ids`, with everything decisions read of them (six
/// set-based reads whatever their number).
pub async fn customers(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Vec<Customer>> {
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT customer_id, ladder_rung, stage, clv_currency, clv_units, clv_nanos,
                net_clv_units, net_clv_nanos, p_alive, last_complaint_time, last_unsubscribe_time
           FROM customers WHERE tenant_id = $1 AND customer_id = ANY($2) AND status = 'active'",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    if rows.is_empty() {
        return Ok(vec![]);
    }
    let known: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let memberships: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "SELECT customer_id, segment_id FROM memberships WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(&known)
    .fetch_all(&mut *conn)
    .await?;
    let consents: Vec<(Uuid, i32, i32, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT customer_id, channel, purpose, status, effective_time FROM consents
          WHERE tenant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(tenant)
    .bind(&known)
    .fetch_all(&mut *conn)
    .await?;
    let contacts: Vec<(Uuid, i32, DateTime<Utc>)> = sqlx::query_as(
        "SELECT customer_id, channel, occur_time FROM contacts
          WHERE tenant_id = $1 AND customer_id = ANY($2) AND occur_time > $3",
    )
    .bind(tenant)
    .bind(&known)
    .bind(now - Duration::days(CONTACT_HORIZON_DAYS))
    .fetch_all(&mut *conn)
    .await?;
    let margins: Vec<(Uuid, String, i64)> = sqlx::query_as(
        "SELECT customer_id, currency, sum(margin_nanos)::bigint FROM purchases
          WHERE tenant_id = $1 AND customer_id = ANY($2) AND margin_nanos IS NOT NULL
            AND occur_time > $3 AND occur_time <= $4
          GROUP BY customer_id, currency",
    )
    .bind(tenant)
    .bind(&known)
    .bind(now - Duration::days(365))
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let open: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT customer_id, count(*) FROM open_complaints
          WHERE tenant_id = $1 AND customer_id = ANY($2) GROUP BY customer_id",
    )
    .bind(tenant)
    .bind(&known)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Uuid, Customer> = rows
        .into_iter()
        .map(|r| {
            let amount = |currency: &Option<String>, u: Option<i64>, n: Option<i32>| match (
                currency, u, n,
            ) {
                (Some(currency), Some(u), Some(n)) => {
                    i64::try_from(i128::from(u) * crate::domain::NANOS + i128::from(n))
                        .ok()
                        .map(|nanos| Amount {
                            currency: currency.clone(),
                            nanos,
                        })
                }
                _ => None,
            };
            let clv = amount(&r.clv_currency, r.clv_units, r.clv_nanos);
            let net_clv = amount(&r.clv_currency, r.net_clv_units, r.net_clv_nanos);
            let c = Customer {
                customer_id: r.customer_id,
                ladder_rung: r.ladder_rung,
                stage: r.stage,
                clv,
                net_clv,
                p_alive: r.p_alive,
                segments: HashSet::new(),
                consents: HashMap::new(),
                contacts: HashMap::new(),
                last_complaint: r.last_complaint_time,
                last_unsubscribe: r.last_unsubscribe_time,
                margins: HashMap::new(),
                open_complaints: 0,
            };
            (r.customer_id, c)
        })
        .collect();
    for (c, s) in memberships {
        if let Some(x) = out.get_mut(&c) {
            x.segments.insert(s);
        }
    }
    for (c, ch, p, st, t) in consents {
        if let Some(x) = out.get_mut(&c) {
            x.consents.insert(
                (ch, p),
                Record {
                    status: st,
                    effective_time: t,
                },
            );
        }
    }
    for (c, n) in open {
        if let Some(x) = out.get_mut(&c) {
            x.open_complaints = i32::try_from(n).unwrap_or(i32::MAX);
        }
    }
    for (c, currency, m) in margins {
        if let Some(x) = out.get_mut(&c) {
            x.margins.insert(currency, m);
        }
    }
    for (c, ch, t) in contacts {
        if let Some(x) = out.get_mut(&c) {
            x.contacts.entry(ch).or_default().push(t);
        }
    }
    Ok(ids.iter().filter_map(|id| out.remove(id)).collect())
}

/// A page of a segment's members (as followed from segmentation), by id,
/// after `after`.
pub async fn segment_members(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "SELECT customer_id FROM memberships
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

/// Whether segmentation's feed has announced the segment (and not its
/// deletion).
pub async fn segment_exists(conn: &mut PgConnection, tenant: Uuid, segment: Uuid) -> Result<bool> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM segments WHERE tenant_id = $1 AND segment_id = $2)",
    )
    .bind(tenant)
    .bind(segment)
    .fetch_one(conn)
    .await
}

/// Records segments announced by segmentation: (id, name).
pub async fn set_segments(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, String)],
) -> Result<()> {
    for (id, name) in rows {
        sqlx::query(
            "INSERT INTO segments (tenant_id, segment_id, name) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, segment_id) DO UPDATE SET name = EXCLUDED.name",
        )
        .bind(tenant)
        .bind(id)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Sets the status of customers (`active` or `deleted`), creating them.
pub async fn set_status(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    status: &str,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, status)
         SELECT $1, c, $3 FROM unnest($2::uuid[]) AS c
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET status = EXCLUDED.status",
    )
    .bind(tenant)
    .bind(ids)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets everything the feeds said of customers (erased, or merged into
/// another), their decisions too when `with_decisions`.
pub async fn forget(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
    with_decisions: bool,
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut tables = vec![
        "customers",
        "memberships",
        "consents",
        "contacts",
        "purchases",
        "open_complaints",
    ];
    if with_decisions {
        tables.push("decisions");
    }
    for table in tables {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND customer_id = ANY($2)"
        )))
        .bind(tenant)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Moves a merged customer's decisions to the survivor.
pub async fn move_decisions(
    conn: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
) -> Result<()> {
    // A control record of the survivor for the same treatment wins.
    sqlx::query(
        "DELETE FROM decisions d WHERE d.tenant_id = $1 AND d.customer_id = $2 AND d.arm = 'control'
            AND EXISTS (SELECT 1 FROM decisions s WHERE s.tenant_id = $1 AND s.customer_id = $3
                           AND s.arm = 'control' AND s.treatment_id = d.treatment_id)",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE decisions SET customer_id = $3 WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(from)
        .bind(to)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores ladder rungs and stages: (customer, rung, stage).
pub async fn set_classes(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, i32, i32)],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let rungs: Vec<i32> = rows.iter().map(|r| r.1).collect();
    let stages: Vec<i32> = rows.iter().map(|r| r.2).collect();
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, status, ladder_rung, stage)
         SELECT DISTINCT ON (c) $1, c, 'pending', r, s
           FROM unnest($2::uuid[], $3::int[], $4::int[]) WITH ORDINALITY AS x(c, r, s, o)
          ORDER BY c, o DESC
         ON CONFLICT (tenant_id, customer_id) DO UPDATE
            SET ladder_rung = EXCLUDED.ladder_rung, stage = EXCLUDED.stage",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&rungs)
    .bind(&stages)
    .execute(conn)
    .await?;
    Ok(())
}

/// A customer's value from valuation: CLV (None: removed), CLV net of the
/// cost to serve (units and nanos, in the CLV's currency) and P(alive).
pub struct ValueFact {
    pub customer_id: Uuid,
    pub clv: Option<(String, i64, i32)>,
    pub net_clv: Option<(i64, i32)>,
    pub p_alive: Option<f64>,
}

/// Stores customers' values, the last of each customer winning.
pub async fn set_values(conn: &mut PgConnection, tenant: Uuid, rows: &[ValueFact]) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let cur: Vec<Option<String>> = rows
        .iter()
        .map(|r| r.clv.as_ref().map(|c| c.0.clone()))
        .collect();
    let units: Vec<Option<i64>> = rows.iter().map(|r| r.clv.as_ref().map(|c| c.1)).collect();
    let nanos: Vec<Option<i32>> = rows.iter().map(|r| r.clv.as_ref().map(|c| c.2)).collect();
    let alive: Vec<Option<f64>> = rows.iter().map(|r| r.p_alive).collect();
    let net_units: Vec<Option<i64>> = rows.iter().map(|r| r.net_clv.map(|n| n.0)).collect();
    let net_nanos: Vec<Option<i32>> = rows.iter().map(|r| r.net_clv.map(|n| n.1)).collect();
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, status, clv_currency, clv_units, clv_nanos,
                                p_alive, net_clv_units, net_clv_nanos)
         SELECT DISTINCT ON (c) $1, c, 'pending', cu, u, n, p, nu, nn
           FROM unnest($2::uuid[], $3::text[], $4::bigint[], $5::int[], $6::float8[],
                       $7::bigint[], $8::int[])
                WITH ORDINALITY AS x(c, cu, u, n, p, nu, nn, o)
          ORDER BY c, o DESC
         ON CONFLICT (tenant_id, customer_id) DO UPDATE
            SET clv_currency = EXCLUDED.clv_currency, clv_units = EXCLUDED.clv_units,
                clv_nanos = EXCLUDED.clv_nanos, p_alive = EXCLUDED.p_alive,
                net_clv_units = EXCLUDED.net_clv_units, net_clv_nanos = EXCLUDED.net_clv_nanos",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&cur)
    .bind(&units)
    .bind(&nanos)
    .bind(&alive)
    .bind(&net_units)
    .bind(&net_nanos)
    .execute(conn)
    .await?;
    Ok(())
}

/// Applies membership changes: customers entered or exited a segment.
pub async fn change_memberships(
    conn: &mut PgConnection,
    tenant: Uuid,
    segment: Uuid,
    entered: &[Uuid],
    exited: &[Uuid],
) -> Result<()> {
    if !exited.is_empty() {
        sqlx::query(
            "DELETE FROM memberships WHERE tenant_id = $1 AND segment_id = $2 AND customer_id = ANY($3)",
        )
        .bind(tenant)
        .bind(segment)
        .bind(exited)
        .execute(&mut *conn)
        .await?;
    }
    if !entered.is_empty() {
        sqlx::query(
            "INSERT INTO memberships (tenant_id, customer_id, segment_id)
             SELECT $1, c, $2 FROM unnest($3::uuid[]) AS c ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(segment)
        .bind(entered)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A deleted segment is forgotten, with its members.
pub async fn drop_segment(conn: &mut PgConnection, tenant: Uuid, segment: Uuid) -> Result<()> {
    for table in ["memberships", "segments"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DELETE FROM {table} WHERE tenant_id = $1 AND segment_id = $2"
        )))
        .bind(tenant)
        .bind(segment)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A consent record: (customer, channel, purpose, status, effective time).
pub type ConsentFact = (Uuid, i32, i32, i32, DateTime<Utc>);

/// Stores consent records, each replacing an earlier one of its customer,
/// channel and purpose.
pub async fn set_consents(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[ConsentFact],
) -> Result<()> {
    for r in rows {
        sqlx::query(
            "INSERT INTO consents (tenant_id, customer_id, channel, purpose, status, effective_time)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant_id, customer_id, channel, purpose) DO UPDATE
                SET status = EXCLUDED.status, effective_time = EXCLUDED.effective_time
              WHERE consents.effective_time <= EXCLUDED.effective_time",
        )
        .bind(tenant)
        .bind(r.0)
        .bind(r.1)
        .bind(r.2)
        .bind(r.3)
        .bind(r.4)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A company-initiated contact: (interaction, customer, interaction channel, time).
pub type ContactFact = (Uuid, Uuid, i32, DateTime<Utc>);

/// Stores contacts (a redelivered one once).
pub async fn add_contacts(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[ContactFact],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let customers: Vec<Uuid> = rows.iter().map(|r| r.1).collect();
    let channels: Vec<i32> = rows.iter().map(|r| r.2).collect();
    let times: Vec<DateTime<Utc>> = rows.iter().map(|r| r.3).collect();
    sqlx::query(
        "INSERT INTO contacts (tenant_id, interaction_id, customer_id, channel, occur_time)
         SELECT $1, i, c, ch, t FROM unnest($2::uuid[], $3::uuid[], $4::int[], $5::timestamptz[])
             AS x(i, c, ch, t)
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&customers)
    .bind(&channels)
    .bind(&times)
    .execute(conn)
    .await?;
    Ok(())
}

/// Opens complaints (interaction, customer) and closes others (interaction).
pub async fn complaints(
    conn: &mut PgConnection,
    tenant: Uuid,
    opened: &[(Uuid, Uuid)],
    closed: &[Uuid],
) -> Result<()> {
    if !opened.is_empty() {
        let ids: Vec<Uuid> = opened.iter().map(|o| o.0).collect();
        let customers: Vec<Uuid> = opened.iter().map(|o| o.1).collect();
        sqlx::query(
            "INSERT INTO open_complaints (tenant_id, interaction_id, customer_id)
             SELECT $1, i, c FROM unnest($2::uuid[], $3::uuid[]) AS x(i, c)
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(&ids)
        .bind(&customers)
        .execute(&mut *conn)
        .await?;
    }
    if !closed.is_empty() {
        sqlx::query(
            "DELETE FROM open_complaints WHERE tenant_id = $1 AND interaction_id = ANY($2)",
        )
        .bind(tenant)
        .bind(closed)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Which moment of a customer's a fact sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Moment {
    Complaint,
    Unsubscribe,
}

/// Keeps the latest complaint or unsubscribe of customers.
pub async fn mark(
    conn: &mut PgConnection,
    tenant: Uuid,
    moment: Moment,
    rows: &[(Uuid, DateTime<Utc>)],
) -> Result<()> {
    let column = match moment {
        Moment::Complaint => "last_complaint_time",
        Moment::Unsubscribe => "last_unsubscribe_time",
    };
    for (c, t) in rows {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO customers (tenant_id, customer_id, status, {column}) VALUES ($1, $2, 'pending', $3)
             ON CONFLICT (tenant_id, customer_id) DO UPDATE
                SET {column} = GREATEST(customers.{column}, EXCLUDED.{column})"
        )))
        .bind(tenant)
        .bind(c)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Moves contacts and purchases between customers after a merge or
/// unmerge: the listed interactions, or (`ids` empty) every one of `from`.
pub async fn reassign_interactions(
    conn: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
    ids: &[Uuid],
) -> Result<()> {
    for table in ["contacts", "purchases", "open_complaints"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE {table} SET customer_id = $3
              WHERE tenant_id = $1 AND customer_id = $2
                AND (cardinality($4::uuid[]) = 0 OR interaction_id = ANY($4))"
        )))
        .bind(tenant)
        .bind(from)
        .bind(to)
        .bind(ids)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

//! Treatments.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Result;
use crate::domain::treatment::{Spec, Stored};

#[derive(sqlx::FromRow)]
struct Row {
    treatment_id: Uuid,
    name: String,
    state: String,
    version: i64,
    doc: sqlx::types::Json<Spec>,
    create_time: DateTime<Utc>,
    update_time: DateTime<Utc>,
    archive_time: Option<DateTime<Utc>>,
}

impl From<Row> for Stored {
    fn from(r: Row) -> Self {
        Stored {
            treatment_id: r.treatment_id,
            name: r.name,
            archived: r.state == "archived",
            version: r.version,
            spec: r.doc.0,
            create_time: r.create_time,
            update_time: r.update_time,
            archive_time: r.archive_time,
        }
    }
}

const COLUMNS: &str =
    "treatment_id, name, state, version, doc, create_time, update_time, archive_time";

/// Inserts a new active treatment, version 1.
pub async fn insert_treatment(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    name: &str,
    spec: &Spec,
    now: DateTime<Utc>,
) -> Result<Stored> {
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO treatments (tenant_id, treatment_id, name, state, version, doc, create_time, update_time)
         VALUES ($1, $2, $3, 'active', 1, $4, $5, $5) RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(id)
    .bind(name)
    .bind(sqlx::types::Json(spec))
    .bind(now)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// A treatment, locked for update when `lock`.
pub async fn treatment(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    lock: bool,
) -> Result<Option<Stored>> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treatments WHERE tenant_id = $1 AND treatment_id = $2{lock}"
    )))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(Into::into))
}

/// Writes a changed treatment as its next version.
pub async fn save_treatment(conn: &mut PgConnection, tenant: Uuid, t: &Stored) -> Result<Stored> {
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE treatments SET name = $3, doc = $4, state = $5, version = version + 1,
                update_time = $6, archive_time = $7
          WHERE tenant_id = $1 AND treatment_id = $2 RETURNING {COLUMNS}"
    )))
    .bind(tenant)
    .bind(t.treatment_id)
    .bind(&t.name)
    .bind(sqlx::types::Json(&t.spec))
    .bind(if t.archived { "archived" } else { "active" })
    .bind(t.update_time)
    .bind(t.archive_time)
    .fetch_one(conn)
    .await?;
    Ok(row.into())
}

/// A page of treatments by name and id, after `after` (name, id).
pub async fn list_treatments(
    conn: &mut PgConnection,
    tenant: Uuid,
    include_archived: bool,
    after: Option<(String, Uuid)>,
    limit: i64,
) -> Result<Vec<Stored>> {
    let (name, id) = after.unzip();
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treatments
          WHERE tenant_id = $1 AND ($2 OR state = 'active')
            AND ($3::text IS NULL OR (name, treatment_id) > ($3, $4))
          ORDER BY name, treatment_id LIMIT $5"
    )))
    .bind(tenant)
    .bind(include_archived)
    .bind(name)
    .bind(id)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

/// Every active treatment of the tenant, by name.
pub async fn active_treatments(conn: &mut PgConnection, tenant: Uuid) -> Result<Vec<Stored>> {
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM treatments WHERE tenant_id = $1 AND state = 'active'
          ORDER BY name, treatment_id"
    )))
    .bind(tenant)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Into::into).collect())
}

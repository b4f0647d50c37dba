//! The audit trail's rows: written in batches, listed newest first with
//! filters, and deleted once past the retention period.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

/// One recorded call, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditRow {
    pub audit_event_id: Uuid,
    pub tenant_id: Uuid,
    pub time: DateTime<Utc>,
    pub api_key_id: Uuid,
    pub api_key_prefix: String,
    pub service: String,
    pub method: String,
    pub resource: String,
    pub resource_ids: Vec<String>,
    pub code: String,
    pub request_id: String,
    pub trace_id: String,
}

/// What `list` returns: every filter set narrows it.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// One tenant, or every tenant when `None` (operator keys only).
    pub tenant_id: Option<Uuid>,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub api_key_id: Option<Uuid>,
    /// The service, when the filter names it.
    pub service: Option<String>,
    pub method: Option<String>,
    pub resource_id: Option<String>,
    pub code: Option<String>,
}

/// Writes `rows` in one statement.
pub async fn insert(pool: &PgPool, rows: &[AuditRow]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO audit_events (audit_event_id, tenant_id, time, api_key_id, api_key_prefix, \
         service, method, resource, resource_ids, code, request_id, trace_id) ",
    );
    q.push_values(rows, |mut b, r| {
        b.push_bind(r.audit_event_id)
            .push_bind(r.tenant_id)
            .push_bind(r.time)
            .push_bind(r.api_key_id)
            .push_bind(&r.api_key_prefix)
            .push_bind(&r.service)
            .push_bind(&r.method)
            .push_bind(&r.resource)
            .push_bind(&r.resource_ids)
            .push_bind(&r.code)
            .push_bind(&r.request_id)
            .push_bind(&r.trace_id);
    });
    q.build().execute(pool).await?;
    Ok(())
}

/// The events `filter` selects, newest first, after the keyset `before`.
pub async fn list(
    pool: &PgPool,
    filter: &AuditFilter,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT audit_event_id, tenant_id, time, api_key_id, api_key_prefix, service, method, \
         resource, resource_ids, code, request_id, trace_id FROM audit_events WHERE true",
    );
    if let Some(t) = filter.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    if let Some(t) = filter.start {
        q.push(" AND time >= ").push_bind(t);
    }
    if let Some(t) = filter.end {
        q.push(" AND time < ").push_bind(t);
    }
    if let Some(k) = filter.api_key_id {
        q.push(" AND api_key_id = ").push_bind(k);
    }
    if let Some(s) = &filter.service {
        q.push(" AND service = ").push_bind(s);
    }
    if let Some(m) = &filter.method {
        q.push(" AND method = ").push_bind(m);
    }
    if let Some(r) = &filter.resource_id {
        q.push(" AND resource_ids @> ARRAY[")
            .push_bind(r)
            .push("]::text[]");
    }
    if let Some(c) = &filter.code {
        q.push(" AND code = ").push_bind(c);
    }
    if let Some((t, id)) = before {
        q.push(" AND (time, audit_event_id) < (")
            .push_bind(t)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY time DESC, audit_event_id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as().fetch_all(pool).await
}

/// Deletes up to `batch` events older than `cutoff`; how many went.
pub async fn expire(pool: &PgPool, cutoff: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM audit_events WHERE (tenant_id, time, audit_event_id) IN (
           SELECT tenant_id, time, audit_event_id FROM audit_events
           WHERE time < $1 ORDER BY time LIMIT $2)",
    )
    .bind(cutoff)
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

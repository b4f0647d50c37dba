//! Upgrades that move data: request ids that profile, interaction,
//! segmentation, valuation and the gateway kept in tables of their own reach
//! the kit's `request_ids` table, every field intact, and the old tables (or
//! columns) are gone.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rapport_kit::db::{SchemaSpec, migrate};
use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// The migrations of `full` below `version`: the schema as an older release
/// left it.
fn before(full: &Migrator, version: i64) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            full.migrations
                .iter()
                .filter(|m| m.version < version)
                .cloned()
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// One row of `request_ids`: scope, request id, fingerprint, result id,
/// answer, the customers it names, time.
type Moved = (
    String,
    String,
    String,
    Option<Uuid>,
    Option<serde_json::Value>,
    Vec<Uuid>,
    DateTime<Utc>,
);

/// Migrates `schema` up to `version` (excluded), runs `old_rows`, migrates
/// the rest, and returns `request_ids` and whether `old_table` is left
/// (`table.column` asks for a column).
async fn upgrade(
    schema: SchemaSpec,
    full: &Migrator,
    version: i64,
    old_rows: &str,
    old_table: &str,
) -> (Vec<Moved>, bool) {
    let db = rapport_testkit::database().await;
    migrate(&db.url, schema, &before(full, version))
        .await
        .expect("migrate to the older release");
    let mut conn = PgConnection::connect(&db.url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path TO {}; {old_rows}",
        schema.schema
    )))
    .execute(&mut conn)
    .await
    .expect("rows of the older release");
    migrate(&db.url, schema, full).await.expect("upgrade");
    let moved: Vec<Moved> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT scope, request_id, fingerprint, result_id, result, subject_ids, create_time
           FROM {}.request_ids ORDER BY scope, request_id",
        schema.schema
    )))
    .fetch_all(&mut conn)
    .await
    .expect("request_ids");
    let left: bool = match old_table.split_once('.') {
        None => sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{}.{old_table}", schema.schema))
            .fetch_one(&mut conn)
            .await
            .expect("to_regclass"),
        Some((table, column)) => sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                             WHERE table_schema = $1 AND table_name = $2 AND column_name = $3)",
        )
        .bind(schema.schema)
        .bind(table)
        .bind(column)
        .fetch_one(&mut conn)
        .await
        .expect("information_schema"),
    };
    (moved, left)
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

const TENANT: &str = "0190f0c0-0000-7000-8000-000000000001";
const RESULT: &str = "0190f0c0-0000-7000-8000-0000000000aa";

/// Upgrades `schema` past `version` with one row in `old_table` and checks
/// the row it became in `request_ids`: (scope, request id, fingerprint) and
/// the result and time every row carries.
async fn assert_moved(
    (schema, full): (SchemaSpec, &Migrator),
    version: i64,
    old_table: &str,
    insert: &str,
    expected: (&str, &str, &str),
) {
    let (moved, left) = upgrade(schema, full, version, insert, old_table).await;
    let result = Uuid::parse_str(RESULT).unwrap();
    assert_eq!(moved.len(), 1, "{moved:?}");
    let m = &moved[0];
    assert_eq!(
        (
            m.0.as_str(),
            m.1.as_str(),
            m.2.as_str(),
            m.3,
            &m.4,
            m.5.len(),
            m.6
        ),
        (
            expected.0,
            expected.1,
            expected.2,
            Some(result),
            &None,
            0,
            at(WHEN)
        )
    );
    assert!(!left, "{old_table} is dropped");
}

const WHEN: &str = "2026-12-01T10:00:00Z";

#[tokio::test]
async fn segmentation_request_keys_move_to_request_ids() {
    assert_moved(
        (
            rapport_segmentation::SCHEMA,
            &rapport_segmentation::MIGRATOR,
        ),
        6,
        "request_keys",
        &format!(
            "INSERT INTO request_keys (tenant_id, request_id, fingerprint, segment_id, create_time)
             VALUES ('{TENANT}', 'seg-1', 'ab12', '{RESULT}', '{WHEN}')"
        ),
        ("CreateSegment", "seg-1", "ab12"),
    )
    .await;
}

#[tokio::test]
async fn valuation_fit_requests_move_to_request_ids() {
    assert_moved(
        (rapport_valuation::SCHEMA, &rapport_valuation::MIGRATOR),
        2,
        "fit_requests",
        &format!(
            "INSERT INTO fit_requests (tenant_id, request_id, request_hash, model_id, create_time)
             VALUES ('{TENANT}', 'fit-1', 'cd34', '{RESULT}', '{WHEN}')"
        ),
        ("FitModel", "fit-1", "cd34"),
    )
    .await;
}

#[tokio::test]
async fn gateway_idempotency_moves_to_request_ids_with_hex_fingerprints() {
    assert_moved(
        (rapport_gateway::SCHEMA, &rapport_gateway::MIGRATOR),
        5,
        "idempotency",
        &format!(
            "INSERT INTO idempotency (tenant_id, kind, request_id, request_hash, result_id, create_time)
             VALUES ('{TENANT}', 'api_key', 'key-1', '\\x00ff10'::bytea, '{RESULT}', '{WHEN}')"
        ),
        ("api_key", "key-1", "00ff10"),
    )
    .await;
}

#[tokio::test]
async fn interaction_campaign_request_ids_move_to_request_ids() {
    let campaign = format!(
        "INSERT INTO campaigns (tenant_id, campaign_id, name, channel, request_id, request_hash, create_time)
         VALUES ('{TENANT}', '{RESULT}', 'Spring', 1, 'camp-1', '\\xbeef'::bytea, '{WHEN}')"
    );
    assert_moved(
        (rapport_interaction::SCHEMA, &rapport_interaction::MIGRATOR),
        2,
        "campaigns.request_id",
        &campaign,
        ("CreateCampaign", "camp-1", "beef"),
    )
    .await;
}

#[tokio::test]
async fn profile_idempotency_keys_move_with_their_answers_and_customers() {
    let customer = Uuid::parse_str(RESULT).unwrap();
    let (moved, left) = upgrade(
        rapport_profile::SCHEMA,
        &rapport_profile::MIGRATOR,
        2,
        &format!(
            "INSERT INTO idempotency_keys (tenant_id, method, request_id, fingerprint, result, customer_ids, create_time)
             VALUES ('{TENANT}', 'MergeCustomers', 'merge-1', 'ef56', '{{\"survivor\": \"{RESULT}\"}}', ARRAY['{RESULT}'::uuid], '{WHEN}')"
        ),
        "idempotency_keys",
    )
    .await;
    assert_eq!(moved.len(), 1, "{moved:?}");
    let m = &moved[0];
    assert_eq!(
        (m.0.as_str(), m.1.as_str(), m.2.as_str(), m.3, m.6),
        ("MergeCustomers", "merge-1", "ef56", None, at(WHEN))
    );
    assert_eq!(m.4, Some(serde_json::json!({ "survivor": RESULT })));
    assert_eq!(m.5, vec![customer]);
    assert!(!left, "idempotency_keys is dropped");
}

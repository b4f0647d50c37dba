//! Schemas and roles: each service reaches its own schema and nothing else.

use rapport_kit::db::{self, SchemaSpec};

const A: SchemaSpec = SchemaSpec::new("dbtest_a", "rapport_dbtest_a");
const B: SchemaSpec = SchemaSpec::new("dbtest_b", "rapport_dbtest_b");
static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

#[tokio::test]
async fn a_service_role_reaches_only_its_own_schema() {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, A, &NO_MIGRATIONS).await.unwrap();
    db::migrate(&db.url, B, &NO_MIGRATIONS).await.unwrap();
    // Idempotent: a second run changes nothing and does not fail.
    db::migrate(&db.url, A, &NO_MIGRATIONS).await.unwrap();

    let a = db::connect(&db.url, A, 2).await.unwrap();
    let (user, path): (String, String) =
        sqlx::query_as("SELECT current_user::text, current_setting('search_path')")
            .fetch_one(&a)
            .await
            .unwrap();
    assert_eq!(user, "rapport_dbtest_a");
    assert_eq!(path, "dbtest_a");

    // Its own tables (the change feed's) are there, owned by its role.
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(n, 0);
    let owner: String = sqlx::query_scalar("SELECT tableowner::text FROM pg_tables WHERE schemaname = 'dbtest_a' AND tablename = 'outbox'")
        .fetch_one(&a)
        .await
        .unwrap();
    assert_eq!(owner, "rapport_dbtest_a");

    // Another service's schema is out of reach, for reading and for writing.
    let err = sqlx::query("SELECT count(*) FROM dbtest_b.outbox")
        .fetch_one(&a)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let err = sqlx::query("CREATE TABLE dbtest_b.intruder (x int)")
        .execute(&a)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");

    // Logged in as its own role (as in production), it cannot take another's.
    let options: sqlx::postgres::PgConnectOptions = db.url.parse().unwrap();
    let own = db::connect_with(options.username("rapport_dbtest_a"), A, 1)
        .await
        .unwrap();
    let user: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&own)
        .await
        .unwrap();
    assert_eq!(user, "rapport_dbtest_a");
    let err = sqlx::query("SET ROLE rapport_dbtest_b")
        .execute(&own)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
    let err = sqlx::query("SELECT count(*) FROM dbtest_b.outbox")
        .fetch_one(&own)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}

//! Request ids over a real PostgreSQL: a retry gets the first answer, a
//! reused id is refused, a concurrent request with the same id waits for the
//! first and then gets its answer, a day-old id is taken over, batches store
//! and read many at once, and an erasure forgets the answers naming the
//! erased customer.

use std::time::Duration;

use rapport_kit::db::{self, SchemaSpec};
use rapport_kit::idempotency::{self, Answer, Claim};
use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

const SCHEMA: SchemaSpec = SchemaSpec::new("idemtest", "rapport_idemtest");
static NO_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate::Migrator::DEFAULT;

async fn pool() -> (rapport_testkit::TestDatabase, PgPool) {
    let db = rapport_testkit::database().await;
    db::migrate(&db.url, SCHEMA, &NO_MIGRATIONS)
        .await
        .expect("migrate");
    let pool = db::connect(&db.url, SCHEMA, 4).await.expect("connect");
    (db, pool)
}

#[tokio::test]
async fn a_claimed_id_answers_its_retry_and_refuses_other_content() {
    let (_db, pool) = pool().await;
    let tenant = Uuid::now_v7();
    let customer = Uuid::now_v7();
    let mut tx = pool.begin().await.unwrap();
    let first = idempotency::claim(&mut tx, tenant, "Merge", "r-1", "fp-a").await;
    assert_eq!(first.unwrap(), Claim::First);
    let answer = json!({ "survivor": customer.to_string() });
    idempotency::answer(&mut tx, tenant, "Merge", "r-1", &answer, &[customer])
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut conn = pool.acquire().await.unwrap();
    let retry = idempotency::claim(&mut conn, tenant, "Merge", "r-1", "fp-a").await;
    assert_eq!(retry.unwrap(), Claim::Answered(answer.clone()));
    let other = idempotency::claim(&mut conn, tenant, "Merge", "r-1", "fp-b").await;
    assert_eq!(other.unwrap(), Claim::Reused);
    let e = Claim::Reused.settle("request_id").unwrap_err();
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
    // The same id in another scope or another tenant is another request.
    let scope = idempotency::claim(&mut conn, tenant, "Unmerge", "r-1", "fp-b").await;
    assert_eq!(scope.unwrap(), Claim::First);
    let tenant_b = idempotency::claim(&mut conn, Uuid::now_v7(), "Merge", "r-1", "fp-b").await;
    assert_eq!(tenant_b.unwrap(), Claim::First);

    // A claim whose answer never came is pending: the caller is told to retry.
    let pending = idempotency::claim(&mut conn, tenant, "Unmerge", "r-1", "fp-b").await;
    assert_eq!(pending.unwrap(), Claim::Pending);
    let e = Claim::Pending.settle("request_id").unwrap_err();
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::Aborted);
}

#[tokio::test]
async fn a_concurrent_request_with_the_same_id_waits_for_the_first() {
    let (_db, pool) = pool().await;
    let tenant = Uuid::now_v7();
    let mut first = pool.begin().await.unwrap();
    let claim = idempotency::claim(&mut first, tenant, "Consent", "r-2", "fp").await;
    assert_eq!(claim.unwrap(), Claim::First);
    let second = tokio::spawn({
        let pool = pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            idempotency::claim(&mut tx, tenant, "Consent", "r-2", "fp")
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !second.is_finished(),
        "the second claim waits for the first"
    );
    let answer = json!({ "ok": true });
    idempotency::answer(&mut first, tenant, "Consent", "r-2", &answer, &[])
        .await
        .unwrap();
    first.commit().await.unwrap();
    assert_eq!(second.await.unwrap(), Claim::Answered(answer));
}

#[tokio::test]
async fn a_day_old_id_is_taken_over_by_a_new_request() {
    let (_db, pool) = pool().await;
    let tenant = Uuid::now_v7();
    let mut conn = pool.acquire().await.unwrap();
    let old = json!({ "n": 1 });
    let claim =
        idempotency::claim_answered(&mut conn, tenant, "Create", ("r-3", "fp-a"), &old, &[]).await;
    assert_eq!(claim.unwrap(), Claim::First);
    let again =
        idempotency::claim_answered(&mut conn, tenant, "Create", ("r-3", "fp-b"), &old, &[]).await;
    assert_eq!(again.unwrap(), Claim::Reused);
    sqlx::query("UPDATE request_ids SET create_time = now() - interval '25 hours'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let new = json!({ "n": 2 });
    let taken =
        idempotency::claim_answered(&mut conn, tenant, "Create", ("r-3", "fp-b"), &new, &[]).await;
    assert_eq!(taken.unwrap(), Claim::First);
    let retry = idempotency::claim(&mut conn, tenant, "Create", "r-3", "fp-b").await;
    assert_eq!(retry.unwrap(), Claim::Answered(new));
    // A day-old id of a create is forgotten by `seen` and taken by `remember`.
    let made = Uuid::now_v7();
    assert!(
        idempotency::remember(&mut conn, tenant, "Made", "r-4", "fp", made)
            .await
            .unwrap()
    );
    let seen = idempotency::seen(&mut conn, tenant, "Made", "r-4").await;
    assert_eq!(seen.unwrap().map(|s| s.result_id), Some(made));
    sqlx::query("UPDATE request_ids SET create_time = now() - interval '25 hours'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let seen = idempotency::seen(&mut conn, tenant, "Made", "r-4").await;
    assert_eq!(seen.unwrap(), None);
    let other = Uuid::now_v7();
    assert!(
        idempotency::remember(&mut conn, tenant, "Made", "r-4", "fp2", other)
            .await
            .unwrap()
    );
    // A claim before the work takes over a day-old answer too.
    let again = idempotency::claim(&mut conn, tenant, "Create", "r-3", "fp-c").await;
    assert_eq!(again.unwrap(), Claim::First);
    let pending = idempotency::claim(&mut conn, tenant, "Create", "r-3", "fp-c").await;
    assert_eq!(pending.unwrap(), Claim::Pending);
}

#[tokio::test]
async fn batches_store_and_read_answers_and_an_erasure_forgets_them() {
    let (_db, pool) = pool().await;
    let tenant = Uuid::now_v7();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (ra, rb) = (json!({ "customer_id": a }), json!({ "customer_id": b }));
    let rows = [
        Answer {
            request_id: "i-1",
            fingerprint: "fa",
            result: &ra,
            subject: a,
        },
        Answer {
            request_id: "i-2",
            fingerprint: "fb",
            result: &rb,
            subject: b,
        },
    ];
    let mut conn = pool.acquire().await.unwrap();
    let stored = idempotency::remember_answers(&mut conn, tenant, "Import", &rows).await;
    assert!(stored.unwrap());
    // Taken already: the batch says so, and nothing of it is kept by the caller.
    let again = idempotency::remember_answers(&mut conn, tenant, "Import", &rows[..1]).await;
    assert!(!again.unwrap());
    let found = idempotency::answers(&mut conn, tenant, "Import", &["i-1", "i-2", "i-3"]).await;
    let found = found.unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found["i-1"], ("fa".to_string(), ra));
    assert_eq!(found["i-2"], ("fb".to_string(), rb.clone()));

    let forgotten = idempotency::forget(&mut conn, tenant, &[a]).await.unwrap();
    assert_eq!(forgotten, 1);
    let found = idempotency::answers(&mut conn, tenant, "Import", &["i-1", "i-2"]).await;
    let found = found.unwrap();
    assert_eq!(found.keys().collect::<Vec<_>>(), vec!["i-2"]);
    // Another tenant's answers naming the same id are not touched.
    let other = idempotency::forget(&mut conn, Uuid::now_v7(), &[b]).await;
    assert_eq!(other.unwrap(), 0);
}

//! Writing treatments and the policy: each call one transaction.

use rapport_kit::error::{ApiError, Violations, is_unique_violation};
use rapport_kit::idempotency;
use rapport_proto::rapport::engagement::v1 as pb;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::policy;
use crate::domain::treatment::{self, Draft, Stored};
use crate::store::{self, PolicyRow};

/// The request-id scope of CreateTreatment.
const SCOPE: &str = "CreateTreatment";

fn name_taken(name: &str) -> ApiError {
    ApiError::AlreadyExists(format!(
        "an active treatment is named {name:?}; choose another name or archive that treatment"
    ))
}

/// Creates a treatment from a checked draft; `request` is the client's
/// request id with the fingerprint of the treatment asked for.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    draft: Draft,
    request: Option<(String, String)>,
) -> Result<Stored, ApiError> {
    let mut tx = pool.begin().await?;
    if let Some((id, fp)) = &request {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text || $2, 0))")
            .bind(tenant)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if let Some(seen) = idempotency::seen(&mut tx, tenant, SCOPE, id).await? {
            if &seen.fingerprint != fp {
                return Err(ApiError::AlreadyExists(format!(
                    "request_id {id:?} was used for a different treatment; use a new request_id"
                )));
            }
            return store::treatment(&mut tx, tenant, seen.result_id, false)
                .await?
                .ok_or_else(|| ApiError::not_found("treatment", seen.result_id.to_string()));
        }
    }
    let id = Uuid::now_v7();
    if let Some((rid, fp)) = &request
        && !idempotency::remember(&mut tx, tenant, SCOPE, rid, fp, id).await?
    {
        return Err(ApiError::Aborted(
            "another call with this request_id is in progress; retry".into(),
        ));
    }
    let t = match store::insert_treatment(
        &mut tx,
        tenant,
        id,
        &draft.name,
        &draft.spec,
        crate::domain::now(),
    )
    .await
    {
        Ok(t) => t,
        Err(e) if is_unique_violation(&e, Some("treatments_active_name")) => {
            return Err(name_taken(&draft.name));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(t)
}

/// The fingerprint of a create request's treatment.
pub fn fingerprint(t: &pb::Treatment) -> String {
    hex::encode(Sha256::digest(prost::Message::encode_to_vec(t)))
}

fn check_etag(etag: &str, t: &Stored) -> Result<(), ApiError> {
    if !etag.is_empty() && etag != treatment::etag(t.version) {
        return Err(ApiError::Aborted(format!(
            "treatment {} changed since it was read (etag {} now); read it again",
            t.treatment_id,
            treatment::etag(t.version)
        )));
    }
    Ok(())
}

/// Applies the masked fields of `t` to the stored treatment.
pub async fn update(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    t: &pb::Treatment,
    paths: &[String],
) -> Result<Stored, ApiError> {
    let mut tx = pool.begin().await?;
    let mut cur = store::treatment(&mut tx, tenant, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("treatment", id.to_string()))?;
    check_etag(&t.etag, &cur)?;
    if cur.archived {
        return Err(ApiError::FailedPrecondition(format!(
            "treatment {id} is archived; create a new treatment instead"
        )));
    }
    let mut v = Violations::new();
    let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
    let draft = treatment::apply(
        &Draft {
            name: cur.name.clone(),
            spec: cur.spec.clone(),
        },
        t,
        &paths,
        &mut v,
    );
    v.finish()?;
    cur.name = draft.name;
    cur.spec = draft.spec;
    cur.update_time = crate::domain::now();
    let saved = match store::save_treatment(&mut tx, tenant, &cur).await {
        Ok(s) => s,
        Err(e) if is_unique_violation(&e, Some("treatments_active_name")) => {
            return Err(name_taken(&cur.name));
        }
        Err(e) => return Err(e.into()),
    };
    tx.commit().await?;
    Ok(saved)
}

/// Archives a treatment (an archived one is returned unchanged).
pub async fn archive(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    etag: &str,
) -> Result<Stored, ApiError> {
    let mut tx = pool.begin().await?;
    let mut cur = store::treatment(&mut tx, tenant, id, true)
        .await?
        .ok_or_else(|| ApiError::not_found("treatment", id.to_string()))?;
    check_etag(etag, &cur)?;
    if cur.archived {
        return Ok(cur);
    }
    let now = crate::domain::now();
    cur.archived = true;
    cur.update_time = now;
    cur.archive_time = Some(now);
    let saved = store::save_treatment(&mut tx, tenant, &cur).await?;
    tx.commit().await?;
    Ok(saved)
}

/// Applies the masked fields of `p` to the tenant's policy.
pub async fn update_policy(
    pool: &PgPool,
    tenant: Uuid,
    p: &pb::EngagementPolicy,
    paths: &[String],
) -> Result<PolicyRow, ApiError> {
    let mut tx = pool.begin().await?;
    store::lock_policy(&mut tx, tenant).await?;
    let cur = store::policy(&mut tx, tenant, true).await?;
    if !p.etag.is_empty() && p.etag != policy::etag(cur.version) {
        return Err(ApiError::Aborted(format!(
            "the policy changed since it was read (etag {} now); read it again",
            policy::etag(cur.version)
        )));
    }
    let mut v = Violations::new();
    let next = policy::apply(&cur.policy, p, paths, &mut v);
    v.finish()?;
    let saved = store::save_policy(&mut tx, tenant, &next, crate::domain::now()).await?;
    tx.commit().await?;
    Ok(saved)
}

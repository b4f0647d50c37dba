//! MergeCustomers and UnmergeCustomers: each owns its transaction. The rules
//! decide (`domain::merge`: who may merge, what fits, where identifiers and
//! contact links go, how profiles combine; `domain::consent`: which consent
//! stays in force) and the store executes (`store/merge.rs` and its
//! neighbours); the events are appended in the same transaction.

use chrono::{DateTime, Utc};
use rapport_kit::ApiError;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::profile::v1 as ev;
use rapport_proto::rapport::profile::v1::profile_event::Event as Ev;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::domain::consent::{self as consent_rules, MergeConsent};
use crate::domain::customer::Stored;
use crate::domain::customer::etag;
use crate::domain::merge::{self as rules, Admission, Refusal};
use crate::error::{Error, Result, customer_not_found, precondition};
use crate::store::{self, ConsentRow, MergeSnapshot, RequestKey, StageTime};

/// The error a refusal of the rules becomes; a customer merged away is
/// named with where its chain of merges ends.
async fn refused(conn: &mut PgConnection, tenant: Uuid, r: Refusal) -> Error {
    match r {
        Refusal::NotFound(id) => customer_not_found(id),
        Refusal::Precondition(m) => precondition(m),
        Refusal::StaleEtag => Error::Api(ApiError::Aborted(
            "the customer changed since this etag was read; read it again and reapply".into(),
        )),
        Refusal::MergedAway {
            customer,
            survivor_side,
        } => match store::chain_end(conn, tenant, customer).await {
            Err(e) => e,
            Ok(into) if survivor_side => precondition(format!(
                "customer {customer} was merged into customer {into}; merge into the survivor instead"
            )),
            Ok(into) => precondition(format!(
                "customer {customer} was already merged into customer {into}"
            )),
        },
    }
}

/// MergeCustomers: `merged` is absorbed into `survivor`. Returns the
/// survivor and the merge time; a retry with the same request id, or a
/// merge already done, answers the same.
pub async fn merge(
    pool: &PgPool,
    tenant: Uuid,
    survivor: Uuid,
    merged: Uuid,
    survivor_etag: &str,
    key: Option<&RequestKey>,
) -> Result<(Stored, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = store::claim(&mut tx, tenant, "MergeCustomers", key).await? {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        let target = store::chain_end(&mut conn, tenant, survivor).await?;
        let time = first["merge_time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        return Ok((store::load_one(&mut conn, tenant, target).await?, time));
    }
    // Lock both in id order, so two merges of the same pair cannot deadlock.
    let (a, b) = if survivor < merged {
        (survivor, merged)
    } else {
        (merged, survivor)
    };
    let ra = store::lock_row(&mut tx, tenant, a).await?;
    let rb = store::lock_row(&mut tx, tenant, b).await?;
    let (rs, rm) = if a == survivor { (ra, rb) } else { (rb, ra) };
    let party = |r: &Option<store::CustomerRow>| r.as_ref().map(store::CustomerRow::party);
    let admitted = rules::admit(survivor, merged, party(&rs), party(&rm), |v| {
        survivor_etag.is_empty() || survivor_etag == etag(v)
    });
    match admitted {
        Err(r) => return Err(refused(&mut tx, tenant, r).await),
        Ok(Admission::AlreadyDone) => {
            let stored = store::load_one(&mut tx, tenant, survivor).await?;
            let time = match store::merge_time(&mut tx, tenant, merged).await? {
                Some(t) => t,
                None => rm.map_or_else(Utc::now, |r| r.update_time),
            };
            tx.rollback().await?;
            return Ok((stored, time));
        }
        Ok(Admission::Merge) => {}
    }
    let kind = rs.map_or(0, |r| r.kind);

    // What fits: identifiers and contact links of both.
    let s_idents = store::identifiers_of(&mut tx, tenant, survivor).await?;
    let m_idents = store::identifiers_of(&mut tx, tenant, merged).await?;
    let kinds = |v: &[store::IdentRow]| v.iter().map(|i| i.kind).collect::<Vec<_>>();
    if let Err(r) = rules::check_identifier_limits(&kinds(&s_idents), &kinds(&m_idents)) {
        return Err(refused(&mut tx, tenant, r).await);
    }
    let s_links = store::contact_links_of(&mut tx, tenant, survivor).await?;
    let m_links = store::contact_links_of(&mut tx, tenant, merged).await?;
    let view = |v: &[store::LinkRow]| v.iter().map(store::LinkRow::plan_view).collect::<Vec<_>>();
    let links = match rules::plan_links(survivor, merged, kind, &view(&s_links), &view(&m_links)) {
        Ok(plan) => plan,
        Err(r) => return Err(refused(&mut tx, tenant, r).await),
    };

    let now = store::now(&mut tx).await?;
    let s_before = store::load_one(&mut tx, tenant, survivor).await?;
    let m_before = store::load_one(&mut tx, tenant, merged).await?;

    // Identifiers: the merged customer's move, after the survivor's.
    let start = store::next_positions(&mut tx, tenant, survivor).await?;
    let s_primary = s_idents
        .iter()
        .filter(|i| i.is_primary)
        .map(|i| i.kind)
        .collect();
    let m_view: Vec<_> = m_idents
        .iter()
        .map(|i| (i.kind, i.position, i.is_primary))
        .collect();
    let moves = rules::plan_identifiers(&m_view, &start, &s_primary);
    for (i, to) in m_idents.iter().zip(&moves) {
        let place = (to.position, to.is_primary);
        store::move_identifier(&mut tx, tenant, i, survivor, place, None).await?;
    }

    // Contact links: moved, or dropped where the survivor has the same one.
    for (link, primary) in &links.moves {
        store::move_link(&mut tx, tenant, *link, merged, survivor, *primary).await?;
    }
    for link in &links.drops {
        store::drop_link(&mut tx, tenant, *link).await?;
    }

    // Consents: histories join; the most restrictive record in force wins.
    let s_force = store::in_force(&mut tx, tenant, survivor).await?;
    let m_force = store::in_force(&mut tx, tenant, merged).await?;
    let moved_records = store::move_consent_history(&mut tx, tenant, merged, survivor).await?;
    let mut keys: Vec<(i16, i16)> = s_force.keys().chain(m_force.keys()).copied().collect();
    keys.sort();
    keys.dedup();
    let mut consent_events = Vec::new();
    for k in keys {
        let s = s_force.get(&k).map(ConsentRow::rec);
        let m = m_force.get(&k).map(ConsentRow::rec);
        if let MergeConsent::Append {
            status,
            effective_time,
        } = consent_rules::merge_decision(s.as_ref(), m.as_ref(), now)
        {
            let row = store::insert_consent(
                &mut tx,
                tenant,
                survivor,
                survivor,
                k.0,
                k.1,
                status as i16,
                "rapport:merge",
                &format!("merge of customer {merged}"),
                effective_time,
                store::SERVICE_PRINCIPAL,
            )
            .await?;
            let previous = s.map_or(0, |r| r.status);
            if previous != status {
                consent_events.push(store::consent_event(tenant, &row, previous));
            }
        }
    }

    // Profile fields.
    let (profile, taken) = rules::merge_profiles(&s_before.profile, &m_before.profile);
    let stage_taken = profile.relationship_stage != s_before.profile.relationship_stage;
    let stage = if stage_taken {
        StageTime::Now
    } else {
        StageTime::Keep
    };
    store::write_profile(&mut tx, tenant, survivor, &profile, stage).await?;
    store::set_merged_into(&mut tx, tenant, merged, Some(survivor)).await?;
    // Links' counterparts changed too.
    store::touch(&mut tx, tenant, &links.counterparts).await?;
    store::forget_not_duplicate(&mut tx, tenant, survivor, merged).await?;
    let snapshot = MergeSnapshot {
        identifiers: m_idents.clone(),
        links: m_links,
        moved_links: links.moves.iter().map(|(l, _)| *l).collect(),
        consent_record_ids: moved_records,
        taken,
        stage_taken,
    };
    store::record_merge(&mut tx, tenant, merged, survivor, now, &snapshot).await?;

    let stored = store::load_one(&mut tx, tenant, survivor).await?;
    let mut events = vec![store::event(
        tenant,
        merged,
        Ev::CustomerMerged(ev::CustomerMerged {
            survivor_customer_id: survivor.to_string(),
            merged_customer_id: merged.to_string(),
            merge_time: Some(timestamp(now)),
            moved_identifiers: m_idents.iter().map(store::IdentRow::identifier).collect(),
            survivor: store::snapshot(&stored),
        }),
    )];
    events.extend(consent_events);
    store::append(&mut tx, events).await?;
    store::remember(
        &mut tx,
        tenant,
        "MergeCustomers",
        key,
        json!({"survivor_customer_id": survivor.to_string(), "merge_time": now.to_rfc3339()}),
        &[survivor, merged],
    )
    .await?;
    tx.commit().await?;
    Ok((stored, now))
}

/// UnmergeCustomers: `merged` comes back with what it brought. Returns the
/// restored customer and the survivor.
pub async fn unmerge(
    pool: &PgPool,
    tenant: Uuid,
    merged: Uuid,
    key: Option<&RequestKey>,
) -> Result<(Stored, Stored)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = store::claim(&mut tx, tenant, "UnmergeCustomers", key).await? {
        tx.rollback().await?;
        let survivor = first["survivor_customer_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without survivor"))?;
        let mut conn = pool.acquire().await?;
        let restored = store::chain_end(&mut conn, tenant, merged).await?;
        let survivor = store::chain_end(&mut conn, tenant, survivor).await?;
        let r = store::load_one(&mut conn, tenant, restored).await?;
        let s = store::load_one(&mut conn, tenant, survivor).await?;
        return Ok((r, s));
    }
    let rm = store::lock_row(&mut tx, tenant, merged).await?;
    let survivor = match rules::admit_unmerge(merged, rm.as_ref().map(store::CustomerRow::party)) {
        Ok(s) => s,
        Err(r) => return Err(refused(&mut tx, tenant, r).await),
    };
    let rs = store::lock_row(&mut tx, tenant, survivor)
        .await?
        .ok_or_else(|| customer_not_found(survivor))?;
    if rs.status == store::CustomerStatus::Merged {
        return Err(precondition(format!(
            "customer {merged} was merged into {survivor}, which was itself merged afterwards; unmerge {survivor} first"
        )));
    }
    let snap = store::merge_snapshot(&mut tx, tenant, merged)
        .await?
        .ok_or_else(|| ApiError::internal(format!("merge of {merged} has no snapshot")))?;

    // Identifiers: those still with the survivor go back; those nobody holds
    // are given back; those a third customer now holds stay there.
    let mut restored_idents = Vec::new();
    for i in &snap.identifiers {
        match store::identifier_holder(&mut tx, tenant, i).await? {
            Some(h) if h == survivor => {
                // Back as it was: position, primary flag and label.
                let place = (i.position, i.is_primary);
                store::move_identifier(&mut tx, tenant, i, merged, place, Some(&i.label)).await?;
                restored_idents.push(i.identifier());
            }
            None => {
                store::reinsert_identifier(&mut tx, tenant, i, merged).await?;
                restored_idents.push(i.identifier());
            }
            Some(_) => {}
        }
    }
    // The survivor keeps one primary per kind.
    store::ensure_primaries(&mut tx, tenant, survivor).await?;

    // Contact links, as they were at the merge.
    for l in &snap.links {
        store::restore_link(&mut tx, tenant, l).await?;
    }
    // Consent history goes back; the survivor keeps its records in force.
    store::return_consent_history(&mut tx, tenant, merged, &snap.consent_record_ids).await?;

    // Profile fields the survivor took and has not changed since.
    let current = store::load_one(&mut tx, tenant, survivor).await?;
    let profile = rules::unmerge_profile(&current.profile, &snap.taken);
    let stage_back =
        snap.stage_taken && profile.relationship_stage != current.profile.relationship_stage;
    let stage = if stage_back && profile.relationship_stage == 0 {
        StageTime::Clear
    } else {
        StageTime::Keep
    };
    store::write_profile(&mut tx, tenant, survivor, &profile, stage).await?;
    store::set_merged_into(&mut tx, tenant, merged, None).await?;
    let counterparts: Vec<Uuid> = snap
        .links
        .iter()
        .map(store::LinkRow::plan_view)
        .map(|l| {
            if l.person == merged {
                l.organization
            } else {
                l.person
            }
        })
        .collect();
    store::touch(&mut tx, tenant, &counterparts).await?;
    store::forget_merge(&mut tx, tenant, merged).await?;
    let restored = store::load_one(&mut tx, tenant, merged).await?;
    let survivor_now = store::load_one(&mut tx, tenant, survivor).await?;
    let now = store::now(&mut tx).await?;
    store::append_customer_event(
        &mut tx,
        tenant,
        merged,
        Ev::CustomerUnmerged(ev::CustomerUnmerged {
            survivor_customer_id: survivor.to_string(),
            restored_customer_id: merged.to_string(),
            unmerge_time: Some(timestamp(now)),
            restored_identifiers: restored_idents,
            customer: store::snapshot(&restored),
            survivor: store::snapshot(&survivor_now),
        }),
    )
    .await?;
    store::remember(
        &mut tx,
        tenant,
        "UnmergeCustomers",
        key,
        json!({"survivor_customer_id": survivor.to_string()}),
        &[survivor, merged],
    )
    .await?;
    tx.commit().await?;
    Ok((restored, survivor_now))
}

/// MarkNotDuplicate: records the pair (ordered, both customers locked) and
/// returns it with its first mark time.
pub async fn mark_not_duplicate(
    pool: &PgPool,
    tenant: Uuid,
    a: Uuid,
    b: Uuid,
) -> Result<(Uuid, Uuid, DateTime<Utc>)> {
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    let mut tx = pool.begin().await?;
    store::lock_exact(&mut tx, tenant, first).await?;
    store::lock_exact(&mut tx, tenant, second).await?;
    let time = store::insert_not_duplicate(&mut tx, tenant, first, second).await?;
    tx.commit().await?;
    Ok((first, second, time))
}

//! Merging duplicates into a survivor, undoing a merge, and pairs marked as
//! not duplicates.

use super::*;

/// What a merged customer brought, kept until the unmerge.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MergeSnapshot {
    /// Its identifiers as they were (positions, primary flags, labels).
    pub identifiers: Vec<IdentRow>,
    /// Its contact links as they were.
    pub links: Vec<LinkRow>,
    /// Ids of the links that moved to the survivor (the others were dropped
    /// because the survivor already had the same link).
    pub moved_links: Vec<Uuid>,
    /// The consent records whose history moved to the survivor.
    pub consent_record_ids: Vec<Uuid>,
    /// What the survivor's profile took.
    pub taken: Taken,
    /// Whether the survivor's stage came from the merged customer.
    pub stage_taken: bool,
}

async fn idents_of(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Vec<IdentRow>> {
    Ok(sqlx::query_as(
        "SELECT customer_id, kind, system, value, position, is_primary, label FROM identifiers
          WHERE tenant_id = $1 AND customer_id = $2 ORDER BY kind, position, value",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

async fn links_of(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Vec<LinkRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        link_cols!(),
        " FROM contact_links WHERE tenant_id = $1 AND (person_id = $2 OR organization_id = $2)
          ORDER BY create_time, contact_link_id"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

/// MergeCustomers: `merged` is absorbed into `survivor`.
pub async fn merge(
    pool: &PgPool,
    tenant: Uuid,
    survivor: Uuid,
    merged: Uuid,
    survivor_etag: &str,
    key: Option<&RequestKey>,
) -> Result<(Stored, DateTime<Utc>)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = claim(&mut tx, tenant, "MergeCustomers", key).await? {
        tx.rollback().await?;
        let mut conn = pool.acquire().await?;
        let target = follow(&mut conn, tenant, survivor).await?;
        let time = first["merge_time"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc));
        return Ok((load_one(&mut conn, tenant, target).await?, time));
    }
    // Lock both in id order, so two merges of the same pair cannot deadlock.
    let (a, b) = if survivor < merged {
        (survivor, merged)
    } else {
        (merged, survivor)
    };
    let ra = lock_row(&mut tx, tenant, a).await?;
    let rb = lock_row(&mut tx, tenant, b).await?;
    let (rs, rm) = if a == survivor { (ra, rb) } else { (rb, ra) };
    let rs = match rs {
        Some(r) if r.status != CustomerStatus::Erased => r,
        _ => return Err(customer_not_found(survivor)),
    };
    let rm = match rm {
        Some(r) if r.status != CustomerStatus::Erased => r,
        _ => return Err(customer_not_found(merged)),
    };
    if rm.status == CustomerStatus::Merged {
        if rm.merged_into == Some(survivor) && rs.status != CustomerStatus::Merged {
            // Already done: the survivor, unchanged.
            let stored = load_one(&mut tx, tenant, survivor).await?;
            let time = sqlx::query_scalar(
                "SELECT merge_time FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2",
            )
            .bind(tenant)
            .bind(merged)
            .fetch_optional(&mut *tx)
            .await?
            .unwrap_or(rm.update_time);
            tx.rollback().await?;
            return Ok((stored, time));
        }
        let into = follow(&mut tx, tenant, merged).await?;
        return Err(precondition(format!(
            "customer {merged} was already merged into customer {into}"
        )));
    }
    if rs.status == CustomerStatus::Merged {
        let into = follow(&mut tx, tenant, survivor).await?;
        return Err(precondition(format!(
            "customer {survivor} was merged into customer {into}; merge into the survivor instead"
        )));
    }
    if rs.kind != rm.kind {
        return Err(precondition(
            "a person and an organisation cannot be merged: the two customers differ in kind",
        ));
    }
    if rs.status == CustomerStatus::Deleted || rm.status == CustomerStatus::Deleted {
        return Err(precondition(
            "a soft-deleted customer cannot be merged; undelete it first",
        ));
    }
    check_etag(survivor_etag, rs.version)?;

    // Limits of the union.
    let s_idents = idents_of(&mut tx, tenant, survivor).await?;
    let m_idents = idents_of(&mut tx, tenant, merged).await?;
    for (kind, limit, name) in [
        (EMAIL, MAX_EMAILS, "e-mail addresses"),
        (PHONE, MAX_PHONES, "phone numbers"),
        (EXTERNAL, MAX_EXTERNAL, "external identifiers"),
    ] {
        let n = s_idents.iter().filter(|i| i.kind == kind).count()
            + m_idents.iter().filter(|i| i.kind == kind).count();
        if n > limit {
            return Err(precondition(format!(
                "together the two customers have {n} {name}, more than the {limit} a customer may have"
            )));
        }
    }
    let s_links = links_of(&mut tx, tenant, survivor).await?;
    let m_links = links_of(&mut tx, tenant, merged).await?;
    let same_link = |l: &LinkRow, s: &LinkRow| {
        l.role == s.role
            && if l.person_id == merged {
                s.person_id == survivor && s.organization_id == l.organization_id
            } else {
                s.organization_id == survivor && s.person_id == l.person_id
            }
    };
    let moving: Vec<&LinkRow> = m_links
        .iter()
        .filter(|l| !s_links.iter().any(|s| same_link(l, s)))
        .collect();
    let link_limit =
        if i32::from(rs.kind) == rapport_proto::rapport::profile::v1::CustomerKind::Person as i32 {
            MAX_LINKS_PER_PERSON
        } else {
            MAX_LINKS_PER_ORGANIZATION
        };
    let link_count = (s_links.len() + moving.len()) as i64;
    if link_count > link_limit {
        return Err(precondition(format!(
            "together the two customers have {link_count} contact links, more than the {link_limit} allowed"
        )));
    }

    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    let s_before = load_one(&mut tx, tenant, survivor).await?;
    let m_before = load_one(&mut tx, tenant, merged).await?;

    // Identifiers: the merged customer's move, after the survivor's.
    let start = next_positions(&mut tx, tenant, survivor).await?;
    let s_has_primary: HashSet<i16> = s_idents
        .iter()
        .filter(|i| i.is_primary)
        .map(|i| i.kind)
        .collect();
    for i in &m_idents {
        sqlx::query(
            "UPDATE identifiers SET customer_id = $2, position = $3, is_primary = $4
              WHERE tenant_id = $1 AND kind = $5 AND system = $6 AND value = $7",
        )
        .bind(tenant)
        .bind(survivor)
        .bind(start.get(&i.kind).copied().unwrap_or(0) + i.position)
        .bind(i.is_primary && !s_has_primary.contains(&i.kind))
        .bind(i.kind)
        .bind(&i.system)
        .bind(&i.value)
        .execute(&mut *tx)
        .await?;
    }

    // Contact links.
    let survivor_has_primary_link = s_links
        .iter()
        .any(|l| l.organization_id == survivor && l.is_primary);
    let mut moved_links = Vec::new();
    for l in &m_links {
        let moves = moving
            .iter()
            .any(|m| m.contact_link_id == l.contact_link_id);
        if moves {
            let keep_primary =
                l.is_primary && !(l.organization_id == merged && survivor_has_primary_link);
            sqlx::query(
                "UPDATE contact_links SET
                    person_id = CASE WHEN person_id = $3 THEN $4 ELSE person_id END,
                    organization_id = CASE WHEN organization_id = $3 THEN $4 ELSE organization_id END,
                    is_primary = $5, update_time = now()
                  WHERE tenant_id = $1 AND contact_link_id = $2",
            )
            .bind(tenant)
            .bind(l.contact_link_id)
            .bind(merged)
            .bind(survivor)
            .bind(keep_primary)
            .execute(&mut *tx)
            .await?;
            moved_links.push(l.contact_link_id);
        } else {
            sqlx::query("DELETE FROM contact_links WHERE tenant_id = $1 AND contact_link_id = $2")
                .bind(tenant)
                .bind(l.contact_link_id)
                .execute(&mut *tx)
                .await?;
        }
    }

    // Consents: histories join; the most restrictive record in force wins.
    let s_force = in_force(&mut tx, tenant, survivor).await?;
    let m_force = in_force(&mut tx, tenant, merged).await?;
    let moved_records: Vec<Uuid> = sqlx::query_scalar(
        "UPDATE consent_records SET holder_id = $3 WHERE tenant_id = $1 AND holder_id = $2
         RETURNING consent_record_id",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .fetch_all(&mut *tx)
    .await?;
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
            let row = insert_consent(
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
                SERVICE_PRINCIPAL,
            )
            .await?;
            let previous = s.map_or(0, |r| r.status);
            if previous != status {
                consent_events.push(consent_event(tenant, &row, previous));
            }
        }
    }

    // Profile fields.
    let (profile, taken) = merge_rules::merge_profiles(&s_before.profile, &m_before.profile);
    let stage_taken = profile.relationship_stage != s_before.profile.relationship_stage;
    sqlx::query(
        "UPDATE customers SET data = $3, version = version + 1, update_time = now(),
                stage_set_time = CASE WHEN $4 THEN now() ELSE stage_set_time END
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(survivor)
    .bind(Json(&profile))
    .bind(stage_taken)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE customers SET status = 'merged', merged_into = $3, version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .execute(&mut *tx)
    .await?;
    // Links' counterparts changed too.
    let counterparts: Vec<Uuid> = m_links
        .iter()
        .map(|l| {
            if l.person_id == merged {
                l.organization_id
            } else {
                l.person_id
            }
        })
        .collect();
    touch(&mut tx, tenant, &counterparts).await?;
    let (first, second) = if survivor < merged {
        (survivor, merged)
    } else {
        (merged, survivor)
    };
    sqlx::query(
        "DELETE FROM not_duplicates WHERE tenant_id = $1 AND first_id = $2 AND second_id = $3",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .execute(&mut *tx)
    .await?;
    let snapshot_doc = MergeSnapshot {
        identifiers: m_idents.clone(),
        links: m_links.clone(),
        moved_links,
        consent_record_ids: moved_records,
        taken,
        stage_taken,
    };
    sqlx::query(
        "INSERT INTO merges (tenant_id, merged_customer_id, survivor_customer_id, merge_time, snapshot)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .bind(now)
    .bind(Json(&snapshot_doc))
    .execute(&mut *tx)
    .await?;

    let stored = load_one(&mut tx, tenant, survivor).await?;
    let mut events = vec![event(
        tenant,
        merged,
        Ev::CustomerMerged(ev::CustomerMerged {
            survivor_customer_id: survivor.to_string(),
            merged_customer_id: merged.to_string(),
            merge_time: Some(timestamp(now)),
            moved_identifiers: m_idents
                .iter()
                .map(|i| identifier(i32::from(i.kind), &i.system, &i.value))
                .collect(),
            survivor: snapshot(&stored),
        }),
    )];
    events.extend(consent_events);
    append(&mut tx, events).await?;
    remember(
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

/// UnmergeCustomers: `merged` comes back with what it brought.
pub async fn unmerge(
    pool: &PgPool,
    tenant: Uuid,
    merged: Uuid,
    key: Option<&RequestKey>,
) -> Result<(Stored, Stored)> {
    let mut tx = pool.begin().await?;
    if let Some(first) = claim(&mut tx, tenant, "UnmergeCustomers", key).await? {
        tx.rollback().await?;
        let survivor = first["survivor_customer_id"]
            .as_str()
            .and_then(|s| Uuid::parse_str(s).ok())
            .ok_or_else(|| ApiError::internal("idempotency result without survivor"))?;
        let mut conn = pool.acquire().await?;
        let restored = follow(&mut conn, tenant, merged).await?;
        let survivor = follow(&mut conn, tenant, survivor).await?;
        let r = load_one(&mut conn, tenant, restored).await?;
        let s = load_one(&mut conn, tenant, survivor).await?;
        return Ok((r, s));
    }
    let rm = match lock_row(&mut tx, tenant, merged).await? {
        Some(r) if r.status != CustomerStatus::Erased => r,
        _ => return Err(customer_not_found(merged)),
    };
    let Some(survivor) = rm
        .merged_into
        .filter(|_| rm.status == CustomerStatus::Merged)
    else {
        return Err(precondition(format!(
            "customer {merged} is not merged into another customer"
        )));
    };
    let rs = lock_row(&mut tx, tenant, survivor)
        .await?
        .ok_or_else(|| customer_not_found(survivor))?;
    if rs.status == CustomerStatus::Merged {
        return Err(precondition(format!(
            "customer {merged} was merged into {survivor}, which was itself merged afterwards; unmerge {survivor} first"
        )));
    }
    let snap: Json<MergeSnapshot> = sqlx::query_scalar(
        "SELECT snapshot FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::internal(format!("merge of {merged} has no snapshot")))?;
    let snap = snap.0;

    // Identifiers: those still with the survivor go back; those nobody holds
    // are given back; those a third customer now holds stay there.
    let mut restored_idents = Vec::new();
    for i in &snap.identifiers {
        let holder: Option<Uuid> = sqlx::query_scalar(
            "SELECT customer_id FROM identifiers WHERE tenant_id = $1 AND kind = $2 AND system = $3 AND value = $4",
        )
        .bind(tenant)
        .bind(i.kind)
        .bind(&i.system)
        .bind(&i.value)
        .fetch_optional(&mut *tx)
        .await?;
        match holder {
            Some(h) if h == survivor => {
                sqlx::query(
                    "UPDATE identifiers SET customer_id = $2, position = $3, is_primary = $4, label = $5
                      WHERE tenant_id = $1 AND kind = $6 AND system = $7 AND value = $8",
                )
                .bind(tenant)
                .bind(merged)
                .bind(i.position)
                .bind(i.is_primary)
                .bind(&i.label)
                .bind(i.kind)
                .bind(&i.system)
                .bind(&i.value)
                .execute(&mut *tx)
                .await?;
                restored_idents.push(i.clone());
            }
            None => {
                let ident = i.ident();
                let start: HashMap<i16, i32> = [(i.kind, i.position)].into_iter().collect();
                insert_idents(&mut tx, tenant, merged, &[ident], &start)
                    .await
                    .map_err(unique_to_error)?;
                restored_idents.push(i.clone());
            }
            Some(_) => {}
        }
    }
    // The survivor keeps one primary per kind.
    sqlx::query(
        "UPDATE identifiers i SET is_primary = true
           FROM (SELECT DISTINCT ON (kind) kind, system, value FROM identifiers
                  WHERE tenant_id = $1 AND customer_id = $2 AND kind IN (1, 2)
                  ORDER BY kind, position, value) f
          WHERE i.tenant_id = $1 AND i.kind = f.kind AND i.system = f.system AND i.value = f.value
            AND NOT EXISTS (SELECT 1 FROM identifiers p WHERE p.tenant_id = $1 AND p.customer_id = $2
                             AND p.kind = f.kind AND p.is_primary)",
    )
    .bind(tenant)
    .bind(survivor)
    .execute(&mut *tx)
    .await?;

    // Contact links, as they were at the merge.
    for l in &snap.links {
        sqlx::query("DELETE FROM contact_links WHERE tenant_id = $1 AND contact_link_id = $2")
            .bind(tenant)
            .bind(l.contact_link_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO contact_links (tenant_id, contact_link_id, person_id, organization_id, role, job_title,
                                        start_date, end_date, end_day, is_primary, create_time, update_time)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12
              WHERE EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $3 AND status IN ('active', 'deleted', 'merged'))
                AND EXISTS (SELECT 1 FROM customers WHERE tenant_id = $1 AND customer_id = $4 AND status IN ('active', 'deleted', 'merged'))
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(l.contact_link_id)
        .bind(l.person_id)
        .bind(l.organization_id)
        .bind(l.role)
        .bind(&l.job_title)
        .bind(l.start_date.as_ref())
        .bind(l.end_date.as_ref())
        .bind(l.end_date.as_ref().and_then(|d| d.0.naive()))
        .bind(l.is_primary)
        .bind(l.create_time)
        .bind(l.update_time)
        .execute(&mut *tx)
        .await?;
    }

    // Consent history goes back; the survivor keeps its records in force.
    sqlx::query(
        "UPDATE consent_records SET holder_id = $2 WHERE tenant_id = $1 AND consent_record_id = ANY($3)",
    )
    .bind(tenant)
    .bind(merged)
    .bind(&snap.consent_record_ids)
    .execute(&mut *tx)
    .await?;

    // Profile fields the survivor took and has not changed since.
    let current = load_one(&mut tx, tenant, survivor).await?;
    let profile = merge_rules::unmerge_profile(&current.profile, &snap.taken);
    let stage_back =
        snap.stage_taken && profile.relationship_stage != current.profile.relationship_stage;
    sqlx::query(
        "UPDATE customers SET data = $3, version = version + 1, update_time = now(),
                stage_set_time = CASE WHEN $4 THEN NULL ELSE stage_set_time END
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(survivor)
    .bind(Json(&profile))
    .bind(stage_back && profile.relationship_stage == 0)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE customers SET status = 'active', merged_into = NULL, version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .execute(&mut *tx)
    .await?;
    let counterparts: Vec<Uuid> = snap
        .links
        .iter()
        .map(|l| {
            if l.person_id == merged {
                l.organization_id
            } else {
                l.person_id
            }
        })
        .collect();
    touch(&mut tx, tenant, &counterparts).await?;
    sqlx::query("DELETE FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2")
        .bind(tenant)
        .bind(merged)
        .execute(&mut *tx)
        .await?;
    let restored = load_one(&mut tx, tenant, merged).await?;
    let survivor_now = load_one(&mut tx, tenant, survivor).await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    append(
        &mut tx,
        vec![event(
            tenant,
            merged,
            Ev::CustomerUnmerged(ev::CustomerUnmerged {
                survivor_customer_id: survivor.to_string(),
                restored_customer_id: merged.to_string(),
                unmerge_time: Some(timestamp(now)),
                restored_identifiers: restored_idents
                    .iter()
                    .map(|i| identifier(i32::from(i.kind), &i.system, &i.value))
                    .collect(),
                customer: snapshot(&restored),
                survivor: snapshot(&survivor_now),
            }),
        )],
    )
    .await?;
    remember(
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

/// MarkNotDuplicate: records the pair (ordered) and returns its first mark time.
pub async fn mark_not_duplicate(
    pool: &PgPool,
    tenant: Uuid,
    a: Uuid,
    b: Uuid,
) -> Result<(Uuid, Uuid, DateTime<Utc>)> {
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    let mut tx = pool.begin().await?;
    lock_exact(&mut tx, tenant, first).await?;
    lock_exact(&mut tx, tenant, second).await?;
    sqlx::query(
        "INSERT INTO not_duplicates (tenant_id, first_id, second_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .execute(&mut *tx)
    .await?;
    let time: DateTime<Utc> = sqlx::query_scalar(
        "SELECT mark_time FROM not_duplicates WHERE tenant_id = $1 AND first_id = $2 AND second_id = $3",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok((first, second, time))
}

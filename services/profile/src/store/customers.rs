//! Customers: reading them (by id, following merge chains, in bulk), and
//! creating, updating, deleting and undeleting them.

use super::*;

/// The row of `id`, if the tenant has one.
pub async fn row(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Option<CustomerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        customer_cols!(),
        " FROM customers WHERE tenant_id = $1 AND customer_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The row of `id`, locked until the end of the transaction.
pub async fn lock_row(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Option<CustomerRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        customer_cols!(),
        " FROM customers WHERE tenant_id = $1 AND customer_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?)
}

/// For each of `ids` the tenant has: the end of its chain of merges (itself
/// when not merged) and that customer's status.
pub async fn resolve_chains(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, (Uuid, CustomerStatus)>> {
    let rows: Vec<(Uuid, Uuid, CustomerStatus)> = sqlx::query_as(
        "WITH RECURSIVE chain(start_id, cur_id, merged_into, status, depth) AS (
             SELECT c.customer_id, c.customer_id, c.merged_into, c.status, 0
               FROM unnest($2::uuid[]) AS k (id)
               CROSS JOIN LATERAL (SELECT customer_id, merged_into, status FROM customers
                                    WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) c
             UNION ALL
             SELECT chain.start_id, c.customer_id, c.merged_into, c.status, chain.depth + 1
               FROM chain JOIN customers c
                 ON c.tenant_id = $1 AND c.customer_id = chain.merged_into
              WHERE chain.status = 'merged' AND chain.depth < 1000
         )
         SELECT start_id, cur_id, status FROM chain WHERE status <> 'merged'",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|(s, c, st)| (s, (c, st))).collect())
}

/// Where `id` leads: the live customer (following merges), or NOT_FOUND for
/// an unknown or erased id.
pub async fn chain_end(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Uuid> {
    match resolve_chains(conn, tenant, &[id]).await?.get(&id) {
        Some((cur, status)) if *status != CustomerStatus::Erased => Ok(*cur),
        _ => Err(customer_not_found(id)),
    }
}

/// Locks the customer `id` leads to (following merges). NOT_FOUND for
/// unknown or erased ids.
pub async fn lock_following(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<CustomerRow> {
    let target = chain_end(conn, tenant, id).await?;
    match lock_row(conn, tenant, target).await? {
        Some(r) if r.status == CustomerStatus::Active || r.status == CustomerStatus::Deleted => {
            Ok(r)
        }
        // Merged in the meantime: follow again once.
        Some(r) if r.status == CustomerStatus::Merged => {
            let target = chain_end(conn, tenant, r.customer_id).await?;
            match lock_row(conn, tenant, target).await? {
                Some(r)
                    if r.status == CustomerStatus::Active
                        || r.status == CustomerStatus::Deleted =>
                {
                    Ok(r)
                }
                _ => Err(customer_not_found(id)),
            }
        }
        _ => Err(customer_not_found(id)),
    }
}

/// Locks exactly `id`: NOT_FOUND when unknown or erased, FAILED_PRECONDITION
/// naming the survivor when merged.
pub async fn lock_exact(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<CustomerRow> {
    match lock_row(conn, tenant, id).await? {
        Some(r) if r.status == CustomerStatus::Merged => {
            let survivor = chain_end(conn, tenant, id).await?;
            Err(precondition(format!(
                "customer {id} was merged into customer {survivor}; act on the survivor, or unmerge {id} first"
            )))
        }
        Some(r) if r.status == CustomerStatus::Erased => Err(customer_not_found(id)),
        Some(r) => Ok(r),
        None => Err(customer_not_found(id)),
    }
}

/// Loads everything the contract shows of the live customers `ids`.
pub async fn load(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Stored>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<CustomerRow> = sqlx::query_as(concat!(
        "SELECT ",
        customer_cols!(),
        " FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT * FROM customers WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) c
          WHERE status IN ('active', 'deleted')"
    ))
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let found: Vec<Uuid> = rows.iter().map(|r| r.customer_id).collect();
    let idents: Vec<IdentRow> = sqlx::query_as(
        "SELECT i.customer_id, i.kind, i.system, i.value, i.position, i.is_primary, i.label
           FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT * FROM identifiers WHERE tenant_id = $1 AND customer_id = k.id
                                ORDER BY kind, position, value) i
          ORDER BY i.customer_id, i.kind, i.position, i.value",
    )
    .bind(tenant)
    .bind(&found)
    .fetch_all(&mut *conn)
    .await?;
    let consents: Vec<ConsentRow> = sqlx::query_as(concat!(
        "SELECT r.* FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (
               SELECT DISTINCT ON (channel, purpose) ",
        consent_cols!(),
        "        FROM consent_records WHERE tenant_id = $1 AND holder_id = k.id
                ORDER BY channel, purpose, effective_time DESC, record_time DESC, consent_record_id DESC) r"
    ))
    .bind(tenant)
    .bind(&found)
    .fetch_all(&mut *conn)
    .await?;
    let merged = merged_into_each(conn, tenant, &found).await?;
    let mut by_id: HashMap<Uuid, Stored> = rows
        .into_iter()
        .map(|r| {
            (
                r.customer_id,
                Stored {
                    customer_id: r.customer_id,
                    kind: i32::from(r.kind),
                    deleted: r.status == CustomerStatus::Deleted,
                    profile: r.data.0,
                    idents: Vec::new(),
                    version: r.version,
                    create_time: r.create_time,
                    update_time: r.update_time,
                    delete_time: r.delete_time,
                    stage_set_time: r.stage_set_time,
                    consents: Vec::new(),
                    merged_ids: Vec::new(),
                },
            )
        })
        .collect();
    for i in idents {
        if let Some(s) = by_id.get_mut(&i.customer_id) {
            s.idents.push(i.ident());
        }
    }
    for c in consents {
        if let Some(s) = by_id.get_mut(&c.holder_id) {
            s.consents.push(c.to_proto());
        }
    }
    for (root, list) in merged {
        if let Some(s) = by_id.get_mut(&root) {
            s.merged_ids = list;
        }
    }
    Ok(by_id)
}

/// Loads one live customer, or NOT_FOUND.
pub async fn load_one(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<Stored> {
    load(conn, tenant, &[id])
        .await?
        .remove(&id)
        .ok_or_else(|| customer_not_found(id))
}

/// For each of `roots`, the customers merged into it, directly or through a
/// chain, sorted.
pub async fn merged_into_each(
    conn: &mut PgConnection,
    tenant: Uuid,
    roots: &[Uuid],
) -> Result<HashMap<Uuid, Vec<Uuid>>> {
    let rows: Vec<(Uuid, Uuid)> = sqlx::query_as(
        "WITH RECURSIVE m(root, id, depth) AS (
             SELECT merged_into, customer_id, 0 FROM customers
              WHERE tenant_id = $1 AND status = 'merged' AND merged_into = ANY($2)
             UNION ALL
             SELECT m.root, c.customer_id, m.depth + 1 FROM customers c
               JOIN m ON c.tenant_id = $1 AND c.status = 'merged' AND c.merged_into = m.id
              WHERE m.depth < 1000
         )
         SELECT root, id FROM m ORDER BY root, id",
    )
    .bind(tenant)
    .bind(roots)
    .fetch_all(&mut *conn)
    .await?;
    let mut out: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (root, id) in rows {
        out.entry(root).or_default().push(id);
    }
    Ok(out)
}

/// The tenant's attribute definitions.
pub async fn definitions(conn: &mut PgConnection, tenant: Uuid) -> Result<Definitions> {
    let rows: Vec<(String, i16, bool, i16)> = sqlx::query_as(
        "SELECT name, type, required, state FROM attribute_definitions WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, t, required, state)| {
            (
                name.clone(),
                Definition {
                    name,
                    attribute_type: i32::from(t),
                    required,
                    state: i32::from(state),
                },
            )
        })
        .collect())
}

/// The etag check of conditional writes.
pub fn check_etag(etag: &str, version: i64) -> Result<()> {
    if !etag.is_empty() && etag != cust::etag(version) {
        return Err(Error::Api(ApiError::Aborted(
            "the customer changed since this etag was read; read it again and reapply".into(),
        )));
    }
    Ok(())
}

/// Bumps the version and update time of `ids`.
pub async fn touch(conn: &mut PgConnection, tenant: Uuid, ids: &[Uuid]) -> Result<()> {
    sqlx::query(
        "UPDATE customers SET version = version + 1, update_time = now()
         WHERE tenant_id = $1 AND customer_id = ANY($2) AND status IN ('active', 'deleted')",
    )
    .bind(tenant)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// An identifier as the feed carries it.
pub(super) fn identifier(kind: i32, system: &str, value: &str) -> Identifier {
    Identifier {
        kind,
        system: system.to_string(),
        value: value.to_string(),
    }
}

/// The customer snapshot the feed carries.
pub fn snapshot(s: &Stored) -> Option<Customer> {
    Some(cust::to_proto(s))
}

/// The CustomerCreated event of a new customer.
pub fn created_event(stored: &Stored, origin: ev::CustomerOrigin) -> Ev {
    Ev::CustomerCreated(ev::CustomerCreated {
        customer_id: stored.customer_id.to_string(),
        customer: snapshot(stored),
        origin: origin as i32,
    })
}

pub fn stage_time(stage: i32) -> Option<DateTime<Utc>> {
    (stage != 0).then(Utc::now)
}

pub async fn insert_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    v: &Validated,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, kind, status, data, stage_set_time)
         VALUES ($1, $2, $3, 'active', $4, $5)",
    )
    .bind(tenant)
    .bind(id)
    .bind(v.kind as i16)
    .bind(Json(&v.profile))
    .bind(stage_time(v.profile.relationship_stage))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores a new active customer and its identifiers in one statement.
/// Returns what was written (version, create, update and stage times) and
/// how many identifiers were stored: fewer than given when another customer
/// holds one (the caller then names the holder and rolls back).
pub async fn insert_with_identifiers(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    v: &Validated,
) -> Result<(Written, i64)> {
    // Positions per kind, in the order given.
    let mut next: HashMap<i16, i32> = HashMap::new();
    let positions: Vec<i32> = v
        .idents
        .iter()
        .map(|i| {
            let p = next.entry(i.kind).or_insert(0);
            *p += 1;
            *p - 1
        })
        .collect();
    let kinds: Vec<i16> = v.idents.iter().map(|i| i.kind).collect();
    let systems: Vec<&str> = v.idents.iter().map(|i| i.system.as_str()).collect();
    let values: Vec<&str> = v.idents.iter().map(|i| i.value.as_str()).collect();
    let primaries: Vec<bool> = v.idents.iter().map(|i| i.primary).collect();
    let labels: Vec<&str> = v.idents.iter().map(|i| i.label.as_str()).collect();
    let keys: Vec<String> = v
        .idents
        .iter()
        .map(|i| duplicate_rules::match_key(i.kind, &i.value))
        .collect();
    let (version, create_time, update_time, stage_set_time, stored): (
        i64,
        DateTime<Utc>,
        DateTime<Utc>,
        Option<DateTime<Utc>>,
        i64,
    ) = sqlx::query_as(
        "WITH c AS (
             INSERT INTO customers (tenant_id, customer_id, kind, status, data, stage_set_time)
             VALUES ($1, $2, $3, 'active', $4, $5)
             RETURNING version, create_time, update_time, stage_set_time),
         i AS (
             INSERT INTO identifiers (tenant_id, customer_id, kind, system, value, position, is_primary, label, match_key)
             SELECT $1, $2, * FROM unnest($6::int2[], $7::text[], $8::text[], $9::int4[], $10::bool[], $11::text[], $12::text[])
             ON CONFLICT DO NOTHING
             RETURNING 1)
         SELECT c.version, c.create_time, c.update_time, c.stage_set_time, (SELECT count(*) FROM i) FROM c",
    )
    .bind(tenant)
    .bind(id)
    .bind(v.kind as i16)
    .bind(Json(&v.profile))
    .bind(stage_time(v.profile.relationship_stage))
    .bind(&kinds)
    .bind(&systems)
    .bind(&values)
    .bind(&positions)
    .bind(&primaries)
    .bind(&labels)
    .bind(&keys)
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        Written {
            version,
            create_time,
            update_time,
            stage_set_time,
        },
        stored,
    ))
}

/// What a new customer's row got from the database.
#[derive(Debug, Clone, Copy)]
pub struct Written {
    /// Its version.
    pub version: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Last changed.
    pub update_time: DateTime<Utc>,
    /// Stage set.
    pub stage_set_time: Option<DateTime<Utc>>,
}

/// GetCustomer: the customer `id` leads to, and whether `id` was merged.
pub async fn get_customer(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<(Stored, bool)> {
    let mut conn = pool.acquire().await?;
    let target = chain_end(&mut conn, tenant, id).await?;
    let stored = load_one(&mut conn, tenant, target).await?;
    Ok((stored, target != id))
}

/// BatchGetCustomers: the customers the ids lead to, in first-mention order,
/// the ids that lead nowhere, and merged id -> survivor.
pub async fn batch_get(
    pool: &PgPool,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<(Vec<Stored>, Vec<Uuid>, Vec<(Uuid, Uuid)>)> {
    let mut conn = pool.acquire().await?;
    let chains = resolve_chains(&mut conn, tenant, ids).await?;
    let targets: Vec<Uuid> = chains
        .values()
        .filter(|(_, s)| *s != CustomerStatus::Erased)
        .map(|(c, _)| *c)
        .collect();
    let mut loaded = load(&mut conn, tenant, &targets).await?;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    let mut merged = Vec::new();
    let mut seen = HashSet::new();
    for id in ids {
        match chains.get(id) {
            Some((target, status)) if *status != CustomerStatus::Erased => {
                if target != id {
                    merged.push((*id, *target));
                }
                if seen.insert(*target)
                    && let Some(s) = loaded.remove(target)
                {
                    found.push(s);
                }
            }
            _ => missing.push(*id),
        }
    }
    Ok((found, missing, merged))
}

/// Replaces a customer's identifiers with `idents` (in their order).
pub async fn replace_identifiers(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    idents: &[Ident],
) -> Result<()> {
    sqlx::query("DELETE FROM identifiers WHERE tenant_id = $1 AND customer_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    insert_idents(conn, tenant, id, idents, &HashMap::new())
        .await
        .map_err(unique_to_error)
}

/// Soft-deletes (`delete` true) or undeletes a customer.
pub async fn set_deleted(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    delete: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE customers SET status = $3, delete_time = CASE WHEN $4 THEN now() END,
                version = version + 1, update_time = now()
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(if delete {
        CustomerStatus::Deleted
    } else {
        CustomerStatus::Active
    })
    .bind(delete)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

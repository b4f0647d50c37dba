//! Customers known from the profile service's feed: who exists, who was
//! merged into whom, who was erased, and the interactions that move with
//! them.

use super::*;

/// What the service knows of one customer id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownCustomer {
    /// The customer the id resolves to through merges in force (itself when
    /// not merged).
    pub current: Uuid,
    /// The id, or the customer it resolves to, was erased.
    pub erased: bool,
}

/// Resolves `ids` through the merges in force. Ids the service has never
/// heard of are absent from the answer.
pub async fn known_customers(
    conn: &mut PgConnection,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, KnownCustomer>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    // Most customers were never merged: one index probe each answers for
    // them, and only the merged ones have their chains followed.
    let direct: Vec<(Uuid, Option<Uuid>, bool)> = sqlx::query_as(
        // One key lookup per id (a lateral subquery the planner cannot
        // flatten), whatever the statistics say about a fast-growing tenant.
        "SELECT c.customer_id, c.merged_into, c.erased FROM unnest($2::uuid[]) AS k (id)
           CROSS JOIN LATERAL (SELECT customer_id, merged_into, erased FROM customers
                                WHERE tenant_id = $1 AND customer_id = k.id LIMIT 1) c",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(&mut *conn)
    .await?;
    let mut known: HashMap<Uuid, KnownCustomer> = HashMap::with_capacity(direct.len());
    let mut merged: Vec<Uuid> = Vec::new();
    for (id, merged_into, erased) in direct {
        match merged_into {
            None => {
                known.insert(
                    id,
                    KnownCustomer {
                        current: id,
                        erased,
                    },
                );
            }
            Some(_) => merged.push(id),
        }
    }
    if merged.is_empty() {
        return Ok(known);
    }
    let rows: Vec<(Uuid, Uuid, bool)> = sqlx::query_as(
        "WITH RECURSIVE chain (start, cur, erased, depth) AS (
             SELECT customer_id, customer_id, erased, 0
             FROM customers WHERE tenant_id = $1 AND customer_id = ANY($2)
           UNION ALL
             SELECT ch.start, c.customer_id, c.erased, ch.depth + 1
             FROM chain ch
             JOIN customers p ON p.tenant_id = $1 AND p.customer_id = ch.cur
             JOIN customers c ON c.tenant_id = $1 AND c.customer_id = p.merged_into
             WHERE ch.depth < 64
         )
         SELECT start, (array_agg(cur ORDER BY depth DESC))[1], bool_or(erased)
         FROM chain GROUP BY start",
    )
    .bind(tenant)
    .bind(&merged)
    .fetch_all(conn)
    .await?;
    known.extend(
        rows.into_iter()
            .map(|(start, current, erased)| (start, KnownCustomer { current, erased })),
    );
    Ok(known)
}

/// Records that the profile service knows these customers.
pub async fn remember_customers(
    pool: &PgPool,
    tenant: Uuid,
    ids: &[Uuid],
) -> Result<(), sqlx::Error> {
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id)
         SELECT $1, unnest($2::uuid[]) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(ids)
    .execute(pool)
    .await?;
    Ok(())
}

/// Taken (shared) by every recording transaction of the tenant before it
/// reads where customers resolve to; taken (exclusive) while a merge, unmerge
/// or erasure of the tenant is applied. So a recording never files an
/// interaction under a customer that a concurrent merge just emptied, and
/// tenants never wait on each other's merges.
pub async fn lock_customers_shared(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock_shared(hashtext('interaction.customers'), hashtext($1::text))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// See [`lock_customers_shared`].
pub async fn lock_customers_exclusive(
    conn: &mut PgConnection,
    tenant: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('interaction.customers'), hashtext($1::text))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// Customers created in the profile service.
pub async fn customers_created(
    conn: &mut PgConnection,
    tenant: Uuid,
    customers: &[Uuid],
) -> Result<(), sqlx::Error> {
    if customers.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id)
         SELECT $1, c FROM unnest($2::uuid[]) AS c ORDER BY c ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(customers)
    .execute(conn)
    .await?;
    Ok(())
}

/// `merged` was merged into `survivor`: re-keys its interactions. Returns the
/// ids of the interactions moved.
pub async fn merge_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
    survivor: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, merged_into) VALUES ($1, $2, $3)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET merged_into = $3, update_time = now()",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .execute(&mut *conn)
    .await?;
    customers_created(&mut *conn, tenant, &[survivor]).await?;
    sqlx::query_scalar(
        "UPDATE interactions SET customer_id = $3, update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND customer_id = $2
         RETURNING interaction_id",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .fetch_all(conn)
    .await
}

/// `restored` was unmerged: every interaction first recorded under it, or
/// under a customer still merged into it, goes back to it. Returns the ids
/// of the interactions moved.
pub async fn unmerge_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    restored: Uuid,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id) VALUES ($1, $2)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET merged_into = NULL, update_time = now()",
    )
    .bind(tenant)
    .bind(restored)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar(
        "WITH RECURSIVE family (id, depth) AS (
             SELECT $2::uuid, 0
           UNION ALL
             SELECT c.customer_id, f.depth + 1 FROM customers c
             JOIN family f ON c.tenant_id = $1 AND c.merged_into = f.id
             WHERE f.depth < 64
         )
         UPDATE interactions SET customer_id = $2, update_time = now(), version = version + 1
         WHERE tenant_id = $1 AND original_customer_id IN (SELECT id FROM family)
           AND customer_id <> $2
         RETURNING interaction_id",
    )
    .bind(tenant)
    .bind(restored)
    .fetch_all(conn)
    .await
}

/// `customer` was erased: deletes every interaction belonging to it or first
/// recorded under it, their idempotency keys, and reduces their earlier feed
/// events to `redacted` ones. Returns how many interactions were deleted.
pub async fn erase_customer(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
) -> Result<usize, sqlx::Error> {
    sqlx::query(
        "INSERT INTO customers (tenant_id, customer_id, erased) VALUES ($1, $2, true)
         ON CONFLICT (tenant_id, customer_id) DO UPDATE SET erased = true, update_time = now()",
    )
    .bind(tenant)
    .bind(customer)
    .execute(&mut *conn)
    .await?;
    let deleted: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "DELETE FROM interactions
         WHERE tenant_id = $1 AND (customer_id = $2 OR original_customer_id = $2)
         RETURNING interaction_id, idempotency_key",
    )
    .bind(tenant)
    .bind(customer)
    .fetch_all(&mut *conn)
    .await?;
    let keys: Vec<&str> = deleted.iter().filter_map(|(_, k)| k.as_deref()).collect();
    if !keys.is_empty() {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant_id = $1 AND idempotency_key = ANY($2)",
        )
        .bind(tenant)
        .bind(&keys)
        .execute(&mut *conn)
        .await?;
    }
    let ids: Vec<String> = deleted.iter().map(|(id, _)| id.to_string()).collect();
    // Every earlier event about these interactions, typed or from before
    // typed events (its JSON payload is cleared too), becomes a `redacted`
    // event that keeps only the interaction id.
    feed::redact_aggregates::<InteractionEvent>(
        conn,
        tenant,
        "interaction",
        &ids,
        RedactionReason::Erased,
    )
    .await?;
    Ok(deleted.len())
}

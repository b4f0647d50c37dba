//! Identity resolution: one identifier set (`ResolveIdentity`) or many in
//! one transaction (`ResolveIdentities`, `ImportCustomers`), and the keys and
//! updates of imports.

use super::*;

/// For each of `idents` that some customer holds: its key and the customer
/// its holder's chain of merges ends at.
pub async fn held_by(
    conn: &mut PgConnection,
    tenant: Uuid,
    idents: &[Ident],
) -> Result<HashMap<Key, Uuid>> {
    let held = holders(conn, tenant, idents).await?;
    let ids: Vec<Uuid> = held.iter().map(|(_, c)| *c).collect();
    let chains = resolve_chains(conn, tenant, &ids).await?;
    Ok(held
        .into_iter()
        .map(|(n, holder)| {
            let target = chains.get(&holder).map_or(holder, |(c, _)| *c);
            (idents[n].key(), target)
        })
        .collect())
}

/// A stage time as stored.
type StageTime = Option<DateTime<Utc>>;

/// What the database gave a new customer: version, create and update time,
/// stage time.
type Written = (i64, DateTime<Utc>, DateTime<Utc>, StageTime);

/// What [`resolve_identities_in`] did.
#[derive(Debug)]
pub struct BulkResolved {
    /// Each set's answer (`None`: lookup only, nothing known).
    pub results: Vec<Option<Resolution>>,
    /// Every customer a set resolved to, as it is now.
    pub customers: HashMap<Uuid, Stored>,
}

/// The work of ResolveIdentities (`crate::resolution::resolve_many`) in the
/// caller's transaction. `None` when a concurrent writer won a race (a
/// unique violation or a deadlock, or a customer merged meanwhile): the
/// transaction is then aborted and the caller rolls it back and tries again.
pub async fn resolve_identities_in(
    tx: &mut PgConnection,
    tenant: Uuid,
    sets: &[(Vec<Ident>, Validated, bool)],
) -> Result<Option<BulkResolved>> {
    use crate::domain::resolution::{self, Decision, Holder, Key, Set};
    rapport_kit::db::prefer_key_lookups(&mut *tx).await?;
    {
        // Every identifier of the call, once.
        let mut all: Vec<Ident> = Vec::new();
        let mut seen: HashSet<Key> = HashSet::new();
        for (idents, _, _) in sets {
            for i in idents {
                if seen.insert(i.key()) {
                    all.push(i.clone());
                }
            }
        }
        let held_raw = holders(&mut *tx, tenant, &all).await?;
        let holder_ids: Vec<Uuid> = held_raw.iter().map(|(_, c)| *c).collect();
        let chains = resolve_chains(&mut *tx, tenant, &holder_ids).await?;
        let mut held: HashMap<Key, Uuid> = HashMap::new();
        for (n, holder) in &held_raw {
            let target = chains.get(holder).map_or(*holder, |(c, _)| *c);
            held.insert(all[*n].key(), target);
        }
        // Lock the customers found, in id order (no deadlock between bulk
        // callers), and look again if one was merged or erased meanwhile.
        let mut targets: Vec<Uuid> = held.values().copied().collect();
        targets.sort_unstable();
        targets.dedup();
        let locked: Vec<(Uuid, CustomerStatus)> = sqlx::query_as(
            "SELECT c.customer_id, c.status FROM unnest($2::uuid[]) WITH ORDINALITY AS k (id, ord)
               CROSS JOIN LATERAL (SELECT customer_id, status FROM customers
                                    WHERE tenant_id = $1 AND customer_id = k.id FOR UPDATE) c
              ORDER BY k.ord",
        )
        .bind(tenant)
        .bind(&targets)
        .fetch_all(&mut *tx)
        .await?;
        if locked.len() != targets.len() || locked.iter().any(|(_, st)| st.is_gone()) {
            return Ok(None);
        }
        let current = load(&mut *tx, tenant, &targets).await?;
        let holders_now: HashMap<Uuid, Holder> = current
            .iter()
            .map(|(id, c)| {
                let mut h = Holder {
                    deleted: c.deleted,
                    ..Holder::default()
                };
                for i in &c.idents {
                    *h.counts.entry(i.kind).or_default() += 1;
                    if i.primary {
                        h.primaries.insert(i.kind);
                    }
                }
                (*id, h)
            })
            .collect();
        let plan_sets: Vec<Set<'_>> = sets
            .iter()
            .map(|(idents, _, lookup_only)| Set {
                idents,
                lookup_only: *lookup_only,
            })
            .collect();
        let decisions = resolution::plan(&plan_sets, &held, &holders_now, Uuid::now_v7);

        // New customers, then every new identifier in one statement each.
        let mut new_ids: Vec<Uuid> = Vec::new();
        let mut new_kinds: Vec<i16> = Vec::new();
        let mut new_data: Vec<String> = Vec::new();
        let mut new_stage: Vec<Option<DateTime<Utc>>> = Vec::new();
        let mut rows: Vec<(Uuid, Ident)> = Vec::new();
        let mut attached_to: BTreeMap<Uuid, Vec<i16>> = BTreeMap::new();
        for (d, (_, traits, _)) in decisions.iter().zip(sets) {
            match d {
                Decision::Create {
                    customer_id,
                    idents,
                } => {
                    new_ids.push(*customer_id);
                    new_kinds.push(traits.kind as i16);
                    new_data.push(
                        serde_json::to_string(&traits.profile)
                            .map_err(|e| ApiError::internal(e.to_string()))?,
                    );
                    new_stage.push(stage_time(traits.profile.relationship_stage));
                    rows.extend(idents.iter().map(|i| (*customer_id, i.clone())));
                }
                Decision::Found {
                    customer_id,
                    attach,
                } if !attach.is_empty() => {
                    rows.extend(attach.iter().map(|i| (*customer_id, i.clone())));
                    if current.contains_key(customer_id) {
                        attached_to
                            .entry(*customer_id)
                            .or_default()
                            .extend(attach.iter().map(|i| i.kind));
                    }
                }
                _ => {}
            }
        }
        if rows.is_empty() {
            return Ok(Some(BulkResolved {
                results: bulk_results(decisions, &current),
                customers: current,
            }));
        }
        // What the database gives new customers (version and times), to
        // answer with them without reading them back.
        let mut written: HashMap<Uuid, Written> = HashMap::new();
        if !new_ids.is_empty() {
            #[derive(sqlx::FromRow)]
            struct New {
                customer_id: Uuid,
                version: i64,
                create_time: DateTime<Utc>,
                update_time: DateTime<Utc>,
                stage_set_time: StageTime,
            }
            let rows: Vec<New> =
                sqlx::query_as(
                    "INSERT INTO customers (tenant_id, customer_id, kind, status, data, stage_set_time)
                     SELECT $1, t.id, t.kind, 'active', t.data::jsonb, t.stage
                       FROM unnest($2::uuid[], $3::int2[], $4::text[], $5::timestamptz[]) AS t (id, kind, data, stage)
                     RETURNING customer_id, version, create_time, update_time, stage_set_time",
                )
                .bind(tenant)
                .bind(&new_ids)
                .bind(&new_kinds)
                .bind(&new_data)
                .bind(&new_stage)
                .fetch_all(&mut *tx)
                .await?;
            written = rows
                .into_iter()
                .map(|n| {
                    (
                        n.customer_id,
                        (n.version, n.create_time, n.update_time, n.stage_set_time),
                    )
                })
                .collect();
        }
        let existing: Vec<Uuid> = attached_to.keys().copied().collect();
        let mut next: HashMap<(Uuid, i16), i32> = sqlx::query_as::<_, (Uuid, i16, i32)>(
            "SELECT k.id, i.kind, max(i.position) + 1 FROM unnest($2::uuid[]) AS k (id)
               CROSS JOIN LATERAL (SELECT kind, position FROM identifiers
                                    WHERE tenant_id = $1 AND customer_id = k.id OFFSET 0) i
              GROUP BY k.id, i.kind",
        )
        .bind(tenant)
        .bind(&existing)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(c, k, p)| ((c, k), p))
        .collect();
        let mut positioned: Vec<(Uuid, Ident, i32)> = rows
            .into_iter()
            .map(|(c, i)| {
                let p = next.entry((c, i.kind)).or_insert(0);
                let pos = *p;
                *p += 1;
                (c, i, pos)
            })
            .collect();
        // One order for every writer: concurrent calls wait for each other
        // on the identifiers' unique index instead of deadlocking.
        positioned.sort_by_key(|a| a.1.key());
        match insert_positioned(&mut *tx, tenant, &positioned).await {
            Ok(()) => {}
            Err(e)
                if rapport_kit::error::is_unique_violation(&e, None)
                    || e.as_database_error().and_then(|d| d.code()).as_deref() == Some("40P01") =>
            {
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        touch(&mut *tx, tenant, &existing).await?;
        // Existing customers as they are now; new ones as they were written:
        // their traits and every identifier given them, by kind and position.
        let existing_now: Vec<Uuid> = current.keys().copied().collect();
        let mut after = load(&mut *tx, tenant, &existing_now).await?;
        let mut idents_of: HashMap<Uuid, Vec<(i16, i32, Ident)>> = HashMap::new();
        for (c, i, pos) in &positioned {
            if written.contains_key(c) {
                idents_of
                    .entry(*c)
                    .or_default()
                    .push((i.kind, *pos, i.clone()));
            }
        }
        for (d, (_, traits, _)) in decisions.iter().zip(sets) {
            let Decision::Create { customer_id, .. } = d else {
                continue;
            };
            let Some((version, create_time, update_time, stage_set_time)) =
                written.get(customer_id).copied()
            else {
                continue;
            };
            let mut idents = idents_of.remove(customer_id).unwrap_or_default();
            idents.sort_by_key(|(kind, pos, _)| (*kind, *pos));
            after.insert(
                *customer_id,
                Stored {
                    customer_id: *customer_id,
                    kind: traits.kind,
                    deleted: false,
                    profile: traits.profile.clone(),
                    idents: idents.into_iter().map(|(_, _, i)| i).collect(),
                    version,
                    create_time,
                    update_time,
                    delete_time: None,
                    stage_set_time,
                    consents: Vec::new(),
                    merged_ids: Vec::new(),
                },
            );
        }
        let mut events = Vec::with_capacity(new_ids.len() + existing.len());
        for id in &new_ids {
            if let Some(stored) = after.get(id) {
                events.push(event(
                    tenant,
                    *id,
                    Ev::CustomerCreated(ev::CustomerCreated {
                        customer_id: id.to_string(),
                        customer: snapshot(stored),
                        origin: ev::CustomerOrigin::Resolve as i32,
                    }),
                ));
            }
        }
        for (id, kinds) in &attached_to {
            if let Some(stored) = after.get(id) {
                let changed = [
                    (EMAIL, "emails"),
                    (PHONE, "phones"),
                    (EXTERNAL, "external_identifiers"),
                ]
                .into_iter()
                .filter(|(k, _)| kinds.contains(k))
                .map(|(_, name)| name.to_string())
                .collect();
                events.push(event(
                    tenant,
                    *id,
                    Ev::CustomerUpdated(ev::CustomerUpdated {
                        customer_id: id.to_string(),
                        changed_fields: changed,
                        customer: snapshot(stored),
                    }),
                ));
            }
        }
        append(&mut *tx, events).await?;
        Ok(Some(BulkResolved {
            results: bulk_results(decisions, &after),
            customers: after,
        }))
    }
}

/// Sets the new profiles of existing customers changed by an import, in one
/// statement, and publishes CustomerUpdated for each: (customer, its next
/// state, the fields that changed, whether its stage changed).
pub async fn apply_import_updates(
    conn: &mut PgConnection,
    tenant: Uuid,
    changes: &[(Uuid, &Validated, &[&'static str], bool)],
) -> Result<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let ids: Vec<Uuid> = changes.iter().map(|c| c.0).collect();
    let mut data = Vec::with_capacity(changes.len());
    for c in changes {
        data.push(
            serde_json::to_string(&c.1.profile).map_err(|e| ApiError::internal(e.to_string()))?,
        );
    }
    let stages: Vec<bool> = changes.iter().map(|c| c.3).collect();
    sqlx::query(
        "UPDATE customers c SET data = t.data::jsonb, version = c.version + 1, update_time = now(),
                stage_set_time = CASE WHEN t.stage THEN now() ELSE c.stage_set_time END
           FROM unnest($2::uuid[], $3::text[], $4::bool[]) AS t (id, data, stage)
          WHERE c.tenant_id = $1 AND c.customer_id = t.id",
    )
    .bind(tenant)
    .bind(&ids)
    .bind(&data)
    .bind(&stages)
    .execute(&mut *conn)
    .await?;
    let after = load(conn, tenant, &ids).await?;
    let events = changes
        .iter()
        .filter_map(|(id, _, changed, _)| {
            let stored = after.get(id)?;
            Some(event(
                tenant,
                *id,
                Ev::CustomerUpdated(ev::CustomerUpdated {
                    customer_id: id.to_string(),
                    changed_fields: changed.iter().map(ToString::to_string).collect(),
                    customer: snapshot(stored),
                }),
            ))
        })
        .collect();
    append(conn, events).await
}

/// The answer of each set, with the customers as they are at the end of
/// the call.
fn bulk_results(
    decisions: Vec<crate::domain::resolution::Decision>,
    customers: &HashMap<Uuid, Stored>,
) -> Vec<Option<Resolution>> {
    use crate::domain::resolution::Decision;
    decisions
        .into_iter()
        .map(|d| match d {
            Decision::NotFound => None,
            Decision::Conflict(m) => Some(Resolution::Conflict(m)),
            Decision::Create { customer_id, .. } => {
                customers.get(&customer_id).map(|c| Resolution::Resolved {
                    customer: Box::new(c.clone()),
                    created: true,
                    attached: Vec::new(),
                })
            }
            Decision::Found {
                customer_id,
                attach,
            } => customers.get(&customer_id).map(|c| Resolution::Resolved {
                customer: Box::new(c.clone()),
                created: false,
                attached: attach,
            }),
        })
        .collect()
}

/// Inserts identifiers of several customers, each with its position.
pub(super) async fn insert_positioned(
    conn: &mut PgConnection,
    tenant: Uuid,
    rows: &[(Uuid, Ident, i32)],
) -> std::result::Result<(), sqlx::Error> {
    let customers: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let kinds: Vec<i16> = rows.iter().map(|r| r.1.kind).collect();
    let systems: Vec<&str> = rows.iter().map(|r| r.1.system.as_str()).collect();
    let values: Vec<&str> = rows.iter().map(|r| r.1.value.as_str()).collect();
    let positions: Vec<i32> = rows.iter().map(|r| r.2).collect();
    let primaries: Vec<bool> = rows.iter().map(|r| r.1.primary).collect();
    let labels: Vec<&str> = rows.iter().map(|r| r.1.label.as_str()).collect();
    let keys: Vec<String> = rows
        .iter()
        .map(|r| duplicate_rules::match_key(r.1.kind, &r.1.value))
        .collect();
    sqlx::query(
        "INSERT INTO identifiers (tenant_id, customer_id, kind, system, value, position, is_primary, label, match_key)
         SELECT $1, * FROM unnest($2::uuid[], $3::int2[], $4::text[], $5::text[], $6::int4[], $7::bool[], $8::text[], $9::text[])",
    )
    .bind(tenant)
    .bind(&customers)
    .bind(&kinds)
    .bind(&systems)
    .bind(&values)
    .bind(&positions)
    .bind(&primaries)
    .bind(&labels)
    .bind(&keys)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The next free position of each identifier kind of a customer.
pub async fn next_positions(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<HashMap<i16, i32>> {
    let rows: Vec<(i16, i32)> = sqlx::query_as(
        "SELECT kind, max(position) + 1 FROM identifiers WHERE tenant_id = $1 AND customer_id = $2 GROUP BY kind",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

//! Identifiers: who holds them, that they are free, and storing them.

use super::*;

/// For each of `idents` that some customer other than `except` holds: the
/// identifier's index in `idents` and its holder.
pub(super) async fn holders(
    conn: &mut PgConnection,
    tenant: Uuid,
    idents: &[Ident],
) -> Result<Vec<(usize, Uuid)>> {
    if idents.is_empty() {
        return Ok(Vec::new());
    }
    let kinds: Vec<i16> = idents.iter().map(|i| i.kind).collect();
    let systems: Vec<&str> = idents.iter().map(|i| i.system.as_str()).collect();
    let values: Vec<&str> = idents.iter().map(|i| i.value.as_str()).collect();
    // The match key (a function of kind and value) is given too, so that
    // whichever of the two indexes on (tenant, kind, system, …) the planner
    // picks, every column of it is bound: one key lookup per identifier,
    // whatever the statistics say about a fast-growing tenant.
    let keys: Vec<String> = idents
        .iter()
        .map(|i| duplicate_rules::match_key(i.kind, &i.value))
        .collect();
    let rows: Vec<(i32, Uuid)> = sqlx::query_as(
        "SELECT (q.ord - 1)::int4, i.customer_id
           FROM unnest($2::int2[], $3::text[], $4::text[], $5::text[])
                WITH ORDINALITY AS q(kind, system, value, match_key, ord)
           CROSS JOIN LATERAL (
               SELECT customer_id FROM identifiers
                WHERE tenant_id = $1 AND kind = q.kind AND system = q.system AND value = q.value
                  AND match_key = q.match_key
                LIMIT 1) i
          ORDER BY q.ord",
    )
    .bind(tenant)
    .bind(&kinds)
    .bind(&systems)
    .bind(&values)
    .bind(&keys)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(i, c)| (usize::try_from(i).unwrap_or(0), c))
        .collect())
}

/// The request field of the `n`th identifier of a validated customer.
fn ident_field(prefix: &str, idents: &[Ident], n: usize) -> String {
    let Some(target) = idents.get(n) else {
        return prefix.to_string();
    };
    let index = idents[..n].iter().filter(|i| i.kind == target.kind).count();
    match target.kind {
        EMAIL => format!("{prefix}.emails[{index}].address"),
        PHONE => format!("{prefix}.phones[{index}].number"),
        _ => format!("{prefix}.external_identifiers[{index}].value"),
    }
}

/// Refuses identifiers another customer holds (ALREADY_EXISTS naming it).
pub async fn ensure_free(
    conn: &mut PgConnection,
    tenant: Uuid,
    owner: Option<Uuid>,
    idents: &[Ident],
    prefix: &str,
) -> Result<()> {
    for (n, holder) in holders(conn, tenant, idents).await? {
        if Some(holder) != owner {
            return Err(Error::IdentifierTaken {
                field: ident_field(prefix, idents, n),
                owner: holder,
            });
        }
    }
    Ok(())
}

/// Inserts identifiers for `customer`, positions counted per kind from
/// `start` (by kind). A unique violation (a concurrent writer took one) is
/// returned as the database error.
pub async fn insert_idents(
    conn: &mut PgConnection,
    tenant: Uuid,
    customer: Uuid,
    idents: &[Ident],
    start: &HashMap<i16, i32>,
) -> std::result::Result<(), sqlx::Error> {
    if idents.is_empty() {
        return Ok(());
    }
    let mut next = start.clone();
    let rows: Vec<(Uuid, Ident, i32)> = idents
        .iter()
        .map(|i| {
            let p = next.entry(i.kind).or_insert(0);
            let pos = *p;
            *p += 1;
            (customer, i.clone(), pos)
        })
        .collect();
    insert_positioned(conn, tenant, &rows).await
}

pub fn unique_to_error(e: sqlx::Error) -> Error {
    if rapport_kit::error::is_unique_violation(&e, Some("identifiers_pkey")) {
        Error::Api(ApiError::AlreadyExists(
            "an identifier of this request was just given to another customer".into(),
        ))
    } else {
        e.into()
    }
}

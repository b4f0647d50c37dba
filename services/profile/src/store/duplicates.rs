//! Duplicate candidates: customers that share identifiers or look alike,
//! scored by the evidence.

use super::*;

/// FindDuplicates: every candidate pair of the tenant (or of `only`) scoring
/// at least `min_score`, best first.
pub async fn find_duplicates(
    pool: &PgPool,
    tenant: Uuid,
    only: Option<Uuid>,
    min_score: f64,
) -> Result<Vec<DuplicateCandidate>> {
    let mut conn = pool.acquire().await?;
    // Equivalent identifiers of live customers of the same kind.
    let ident_pairs: Vec<(Uuid, Uuid, i16, String, String)> = sqlx::query_as(
        "SELECT a.customer_id, b.customer_id, a.kind, a.value, b.value
           FROM identifiers a
           JOIN identifiers b ON b.tenant_id = a.tenant_id AND b.kind = a.kind AND b.system = a.system
                             AND b.match_key = a.match_key AND a.customer_id < b.customer_id
           JOIN customers ca ON ca.tenant_id = a.tenant_id AND ca.customer_id = a.customer_id AND ca.status = 'active'
           JOIN customers cb ON cb.tenant_id = b.tenant_id AND cb.customer_id = b.customer_id AND cb.status = 'active'
          WHERE a.tenant_id = $1 AND ca.kind = cb.kind
            AND ($2::uuid IS NULL OR a.customer_id = $2 OR b.customer_id = $2)",
    )
    .bind(tenant)
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    // Similar names with a place in common (same city, same postal code).
    #[allow(clippy::type_complexity)]
    let name_pairs: Vec<(Uuid, Uuid, f64, String, String, bool, String, bool, String)> = sqlx::query_as(
        "WITH names AS (
             SELECT customer_id, kind, n.name
               FROM customers c,
                    LATERAL (VALUES (c.data->>'display_name'),
                                    (nullif(concat_ws(' ', c.data->'person'->>'given_name', c.data->'person'->>'family_name'), '')),
                                    (c.data->'organization'->>'legal_name')) AS n(name)
              WHERE c.tenant_id = $1 AND c.status = 'active' AND coalesce(n.name, '') <> ''
         ), places AS (
             SELECT DISTINCT c.customer_id, upper(coalesce(a->>'country_code', '')) AS country,
                    lower(coalesce(a->>'locality', '')) AS locality, coalesce(a->>'locality', '') AS locality_shown,
                    upper(coalesce(a->>'postal_code', '')) AS postal_code
               FROM customers c, jsonb_array_elements(coalesce(c.data->'postal_addresses', '[]')) a
              WHERE c.tenant_id = $1 AND c.status = 'active'
         ), pairs AS (
             SELECT pa.customer_id AS a, pb.customer_id AS b,
                    bool_or(pa.locality <> '' AND pa.locality = pb.locality) AS same_city,
                    coalesce(max(pa.locality_shown) FILTER (WHERE pa.locality <> '' AND pa.locality = pb.locality), '') AS city,
                    bool_or(pa.postal_code <> '' AND pa.postal_code = pb.postal_code) AS same_postal,
                    coalesce(max(pa.country || ' ' || pa.postal_code) FILTER (WHERE pa.postal_code <> '' AND pa.postal_code = pb.postal_code), '') AS postal
               FROM places pa JOIN places pb
                 ON pb.country = pa.country AND pa.customer_id < pb.customer_id
                AND ((pa.locality <> '' AND pa.locality = pb.locality)
                     OR (pa.postal_code <> '' AND pa.postal_code = pb.postal_code))
              WHERE ($2::uuid IS NULL OR pa.customer_id = $2 OR pb.customer_id = $2)
              GROUP BY pa.customer_id, pb.customer_id
         )
         SELECT DISTINCT ON (p.a, p.b) p.a, p.b, similarity(lower(na.name), lower(nb.name))::float8 AS sim,
                na.name, nb.name, p.same_city, p.city, p.same_postal, p.postal
           FROM pairs p
           JOIN names na ON na.customer_id = p.a
           JOIN names nb ON nb.customer_id = p.b AND nb.kind = na.kind
          WHERE similarity(lower(na.name), lower(nb.name)) >= 0.6
          ORDER BY p.a, p.b, sim DESC, na.name, nb.name",
    )
    .bind(tenant)
    .bind(only)
    .fetch_all(&mut *conn)
    .await?;
    let marks: HashSet<(Uuid, Uuid)> = sqlx::query_as::<_, (Uuid, Uuid)>(
        "SELECT first_id, second_id FROM not_duplicates WHERE tenant_id = $1",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .collect();
    let mut evidence: BTreeMap<(Uuid, Uuid), Vec<Evidence>> = BTreeMap::new();
    for (a, b, kind, va, vb) in ident_pairs {
        evidence
            .entry((a.min(b), a.max(b)))
            .or_default()
            .push(Evidence::Identifier {
                kind,
                first: va,
                second: vb,
            });
    }
    for (a, b, sim, na, nb, same_city, city, same_postal, postal) in name_pairs {
        let entry = evidence.entry((a.min(b), a.max(b))).or_default();
        for (same, postal_code, place) in [(same_city, false, city), (same_postal, true, postal)] {
            if same {
                entry.push(Evidence::Name {
                    similarity: sim,
                    names: (na.clone(), nb.clone()),
                    same_postal_code: postal_code,
                    place,
                });
            }
        }
    }
    let mut out: Vec<DuplicateCandidate> = evidence
        .into_iter()
        .filter(|(pair, _)| !marks.contains(pair))
        .map(|((a, b), ev)| duplicate_rules::score(a, b, &ev))
        .filter(|c| c.score >= min_score)
        .collect();
    out.sort_by(|x, y| {
        y.score
            .total_cmp(&x.score)
            .then_with(|| x.first_customer_id.cmp(&y.first_customer_id))
            .then_with(|| x.second_customer_id.cmp(&y.second_customer_id))
    });
    Ok(out)
}

/// True when the tenant has a live or deleted customer `id` leads to.
pub async fn exists(pool: &PgPool, tenant: Uuid, id: Uuid) -> Result<bool> {
    let mut conn = pool.acquire().await?;
    Ok(chain_end(&mut conn, tenant, id).await.is_ok())
}

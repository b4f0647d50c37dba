//! Listing customers by filter and searching them by name or identifier.

use super::*;

/// ListCustomers filters, normalised.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListFilter {
    /// CustomerKind number; 0 every kind.
    pub kind: i32,
    /// JSON containment on the profile (tags, stage, country, owner, attributes).
    pub contains: Value,
    /// Updated at or after.
    pub updated_since: Option<DateTime<Utc>>,
    /// Order: 1 create asc, 2 create desc, 3 update asc, 4 update desc.
    pub order: i32,
    /// Include soft-deleted customers.
    pub show_deleted: bool,
}

/// A ListCustomers position: the last row's order time (microseconds) and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ListCursor {
    /// Order time of the last row, in microseconds since the epoch.
    pub t: i64,
    /// Id of the last row.
    pub id: Uuid,
}

/// ListCustomers: one page, and the cursor of its last row when more follow.
pub async fn list_customers(
    pool: &PgPool,
    tenant: Uuid,
    f: &ListFilter,
    after: Option<&ListCursor>,
    limit: i64,
) -> Result<(Vec<Stored>, Option<ListCursor>)> {
    let (column, desc) = match f.order {
        2 => ("create_time", true),
        3 => ("update_time", false),
        4 => ("update_time", true),
        _ => ("create_time", false),
    };
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("SELECT customer_id, (extract(epoch FROM ");
    q.push(column)
        .push(")::numeric * 1000000)::int8 AS t FROM customers WHERE tenant_id = ")
        .push_bind(tenant);
    if f.show_deleted {
        q.push(" AND status IN ('active', 'deleted')");
    } else {
        q.push(" AND status = 'active'");
    }
    if f.kind != 0 {
        q.push(" AND kind = ").push_bind(f.kind as i16);
    }
    if f.contains.as_object().is_some_and(|o| !o.is_empty()) {
        q.push(" AND data @> ").push_bind(f.contains.clone());
    }
    if let Some(t) = f.updated_since {
        q.push(" AND update_time >= ").push_bind(t);
    }
    if let Some(c) = after {
        let t = DateTime::<Utc>::from_timestamp_micros(c.t).unwrap_or_default();
        q.push(format_args!(" AND ({column}, customer_id) "))
            .push(if desc { "<" } else { ">" })
            .push(" (")
            .push_bind(t)
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    let dir = if desc { "DESC" } else { "ASC" };
    q.push(format_args!(
        " ORDER BY {column} {dir}, customer_id {dir} LIMIT "
    ))
    .push_bind(limit + 1);
    let mut conn = pool.acquire().await?;
    let mut rows: Vec<(Uuid, i64)> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut loaded = load(&mut conn, tenant, &ids).await?;
    let page: Vec<Stored> = ids.iter().filter_map(|id| loaded.remove(id)).collect();
    let next = if more {
        rows.last().map(|(id, t)| ListCursor { t: *t, id: *id })
    } else {
        None
    };
    Ok((page, next))
}

/// A SearchCustomers position: the last hit's score and id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchCursor {
    /// Score of the last hit.
    pub score: f64,
    /// Id of the last hit.
    pub id: Uuid,
}

/// How a search hit matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchKind {
    /// E-mail, exactly.
    Email,
    /// Phone, exactly.
    Phone,
    /// External identifier value, exactly.
    External,
    /// Name similarity.
    Name,
}

/// The names expression the trigram index covers.
const NAMES: &str = "lower(coalesce(data->>'display_name', '') || ' ' || coalesce(data->'person'->>'given_name', '') || ' ' || coalesce(data->'person'->>'family_name', '') || ' ' || coalesce(data->'organization'->>'legal_name', ''))";

/// SearchCustomers: exact identifier hits (`email`, `phone` normalised by the
/// caller, `raw` against external values) rank first with score 1, then
/// names by trigram similarity down to 0.3.
#[allow(clippy::too_many_arguments)]
pub async fn search(
    pool: &PgPool,
    tenant: Uuid,
    query: &str,
    email: Option<&str>,
    phone: Option<&str>,
    kind: i32,
    after: Option<&SearchCursor>,
    limit: i64,
) -> Result<(Vec<(Stored, f64, MatchKind)>, Option<SearchCursor>)> {
    let mut conn = pool.begin().await?;
    // The trigram index finds names with a word similarity of at least 0.3,
    // a superset of the per-name similarities ranked below.
    sqlx::query("SELECT set_config('pg_trgm.word_similarity_threshold', '0.3', true)")
        .execute(&mut *conn)
        .await?;
    let exact: Vec<(Uuid, i16)> = sqlx::query_as(
        "SELECT DISTINCT ON (customer_id) customer_id, kind FROM identifiers
          WHERE tenant_id = $1 AND ((kind = 1 AND value = $2) OR (kind = 2 AND value = $3) OR (kind = 3 AND value = $4))
          ORDER BY customer_id, kind",
    )
    .bind(tenant)
    .bind(email.unwrap_or(""))
    .bind(phone.unwrap_or(""))
    .bind(query)
    .fetch_all(&mut *conn)
    .await?;
    let exact_kind: HashMap<Uuid, MatchKind> = exact
        .iter()
        .map(|(id, k)| {
            (
                *id,
                match *k {
                    EMAIL => MatchKind::Email,
                    PHONE => MatchKind::Phone,
                    _ => MatchKind::External,
                },
            )
        })
        .collect();
    let exact_ids: Vec<Uuid> = exact_kind.keys().copied().collect();
    let lowered = query.to_lowercase();
    let mut q: QueryBuilder<Postgres> =
        QueryBuilder::new("WITH hits AS (SELECT customer_id, CASE WHEN customer_id = ANY(");
    q.push_bind(&exact_ids)
        .push(") THEN 1.0::float8 ELSE GREATEST(similarity(lower(coalesce(data->>'display_name', '')), ")
        .push_bind(&lowered)
        .push("), similarity(lower(concat_ws(' ', data->'person'->>'given_name', data->'person'->>'family_name')), ")
        .push_bind(&lowered)
        .push("), similarity(lower(coalesce(data->'organization'->>'legal_name', '')), ")
        .push_bind(&lowered)
        .push("))::float8 END AS score FROM customers WHERE tenant_id = ")
        .push_bind(tenant)
        .push(" AND status = 'active'");
    if kind != 0 {
        q.push(" AND kind = ").push_bind(kind as i16);
    }
    q.push(" AND (customer_id = ANY(")
        .push_bind(&exact_ids)
        .push(") OR ")
        .push_bind(&lowered)
        .push(format_args!(
            " <% {NAMES})) SELECT customer_id, score FROM hits WHERE score >= 0.3"
        ));
    if let Some(c) = after {
        q.push(" AND (score < ")
            .push_bind(c.score)
            .push(" OR (score = ")
            .push_bind(c.score)
            .push(" AND customer_id > ")
            .push_bind(c.id)
            .push("))");
    }
    q.push(" ORDER BY score DESC, customer_id LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<(Uuid, f64)> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let ids: Vec<Uuid> = rows.iter().map(|r| r.0).collect();
    let mut loaded = load(&mut conn, tenant, &ids).await?;
    let hits = rows
        .iter()
        .filter_map(|(id, score)| {
            let kind = exact_kind.get(id).copied().unwrap_or(MatchKind::Name);
            loaded.remove(id).map(|s| (s, *score, kind))
        })
        .collect();
    let next = if more {
        rows.last().map(|(id, score)| SearchCursor {
            score: *score,
            id: *id,
        })
    } else {
        None
    };
    Ok((hits, next))
}

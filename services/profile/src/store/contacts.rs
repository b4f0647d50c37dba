//! Contact links between people and organisations.

use super::*;

/// A link to create or update.
#[derive(Debug, Clone)]
pub struct LinkInput {
    /// The person (as requested).
    pub person: Uuid,
    /// The organisation (as requested).
    pub organization: Uuid,
    /// ContactRole number.
    pub role: i16,
    /// Job title.
    pub job_title: String,
    /// First day.
    pub start_date: Option<Date>,
    /// Last day.
    pub end_date: Option<Date>,
    /// Primary contact of the organisation.
    pub primary: bool,
}

/// The id of the (person, organisation, role) link, when there is one.
pub async fn link_id(
    conn: &mut PgConnection,
    tenant: Uuid,
    person: Uuid,
    organization: Uuid,
    role: i16,
) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT contact_link_id FROM contact_links WHERE tenant_id = $1 AND person_id = $2 AND organization_id = $3 AND role = $4",
    )
    .bind(tenant)
    .bind(person)
    .bind(organization)
    .bind(role)
    .fetch_optional(&mut *conn)
    .await?)
}

/// How many contact links the organisation and the person have.
pub async fn link_counts(
    conn: &mut PgConnection,
    tenant: Uuid,
    organization: Uuid,
    person: Uuid,
) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*) FILTER (WHERE organization_id = $2), count(*) FILTER (WHERE person_id = $3)
           FROM contact_links WHERE tenant_id = $1 AND (organization_id = $2 OR person_id = $3)",
    )
    .bind(tenant)
    .bind(organization)
    .bind(person)
    .fetch_one(&mut *conn)
    .await?)
}

/// Takes the primary flag from the organisation's other links.
pub async fn clear_other_primaries(
    conn: &mut PgConnection,
    tenant: Uuid,
    organization: Uuid,
    person: Uuid,
    role: i16,
) -> Result<()> {
    sqlx::query(
        "UPDATE contact_links SET is_primary = false, update_time = now()
          WHERE tenant_id = $1 AND organization_id = $2 AND is_primary
            AND NOT (person_id = $3 AND role = $4)",
    )
    .bind(tenant)
    .bind(organization)
    .bind(person)
    .bind(role)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Creates the (person, organisation, role) link of `l` or updates it.
pub async fn upsert_link(
    conn: &mut PgConnection,
    tenant: Uuid,
    person: Uuid,
    organization: Uuid,
    l: &LinkInput,
) -> Result<LinkRow> {
    Ok(sqlx::query_as(concat!(
        "INSERT INTO contact_links (tenant_id, contact_link_id, person_id, organization_id, role, job_title,
                                    start_date, end_date, end_day, is_primary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
         ON CONFLICT (tenant_id, person_id, organization_id, role) DO UPDATE SET
            job_title = EXCLUDED.job_title, start_date = EXCLUDED.start_date, end_date = EXCLUDED.end_date,
            end_day = EXCLUDED.end_day, is_primary = EXCLUDED.is_primary, update_time = now()
         RETURNING ",
        link_cols!()
    ))
    .bind(tenant)
    .bind(Uuid::now_v7())
    .bind(person)
    .bind(organization)
    .bind(l.role)
    .bind(&l.job_title)
    .bind(l.start_date.map(Json))
    .bind(l.end_date.map(Json))
    .bind(l.end_date.and_then(|d| d.naive()))
    .bind(l.primary)
    .fetch_one(&mut *conn)
    .await?)
}

/// Deletes the (person, organisation, role) link; returns it, if there was one.
pub async fn delete_link(
    conn: &mut PgConnection,
    tenant: Uuid,
    person: Uuid,
    organization: Uuid,
    role: i16,
) -> Result<Option<LinkRow>> {
    Ok(sqlx::query_as(concat!(
        "DELETE FROM contact_links WHERE tenant_id = $1 AND person_id = $2 AND organization_id = $3 AND role = $4
         RETURNING ",
        link_cols!()
    ))
    .bind(tenant)
    .bind(person)
    .bind(organization)
    .bind(role)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The ContactUnlinked event of a deleted link.
pub fn unlinked_event(tenant: Uuid, row: &LinkRow) -> NewEvent {
    NewEvent::new(
        tenant,
        "contact_link",
        row.contact_link_id.to_string(),
        "ContactUnlinked",
        &ProfileEvent {
            event: Some(Ev::ContactUnlinked(ev::ContactUnlinked {
                contact_link_id: row.contact_link_id.to_string(),
                person_customer_id: row.person_id.to_string(),
                organization_customer_id: row.organization_id.to_string(),
                role: i32::from(row.role),
            })),
        },
    )
}

/// A links page position: creation time (microseconds) and link id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LinkCursor {
    /// Creation time of the last link, in microseconds.
    pub t: i64,
    /// Its id.
    pub id: Uuid,
}

/// ListContacts (`of_organization`) or ListOrganizations: the links of a
/// customer (`id` followed through merges), oldest first.
#[allow(clippy::too_many_arguments)]
pub async fn list_links(
    pool: &PgPool,
    tenant: Uuid,
    id: Uuid,
    of_organization: bool,
    role: i16,
    include_ended: bool,
    after: Option<&LinkCursor>,
    limit: i64,
) -> Result<(Vec<LinkRow>, Option<LinkCursor>)> {
    use rapport_proto::rapport::profile::v1::CustomerKind;
    let mut conn = pool.acquire().await?;
    let target = chain_end(&mut conn, tenant, id).await?;
    let r = row(&mut conn, tenant, target)
        .await?
        .ok_or_else(|| customer_not_found(id))?;
    let wanted = if of_organization {
        CustomerKind::Organization
    } else {
        CustomerKind::Person
    };
    if i32::from(r.kind) != wanted as i32 {
        return Err(precondition(if of_organization {
            format!("customer {id} is not an organisation")
        } else {
            format!("customer {id} is not a person")
        }));
    }
    let column = if of_organization {
        "organization_id"
    } else {
        "person_id"
    };
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(concat!(
        "SELECT ",
        link_cols!(),
        " FROM contact_links WHERE tenant_id = "
    ));
    q.push_bind(tenant)
        .push(format_args!(" AND {column} = "))
        .push_bind(target);
    if role != 0 {
        q.push(" AND role = ").push_bind(role);
    }
    if !include_ended {
        q.push(" AND (end_day IS NULL OR end_day >= current_date)");
    }
    if let Some(c) = after {
        q.push(" AND (create_time, contact_link_id) > (")
            .push_bind(DateTime::<Utc>::from_timestamp_micros(c.t).unwrap_or_default())
            .push(", ")
            .push_bind(c.id)
            .push(")");
    }
    q.push(" ORDER BY create_time, contact_link_id LIMIT ")
        .push_bind(limit + 1);
    let mut rows: Vec<LinkRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|l| LinkCursor {
            t: l.create_time.timestamp_micros(),
            id: l.contact_link_id,
        })
    } else {
        None
    };
    Ok((rows, next))
}

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

/// The identifiers of a customer, in order.
pub async fn identifiers_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Vec<IdentRow>> {
    Ok(sqlx::query_as(
        "SELECT customer_id, kind, system, value, position, is_primary, label FROM identifiers
          WHERE tenant_id = $1 AND customer_id = $2 ORDER BY kind, position, value",
    )
    .bind(tenant)
    .bind(id)
    .fetch_all(&mut *conn)
    .await?)
}

/// The contact links of a customer, either side, oldest first.
pub async fn contact_links_of(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
) -> Result<Vec<LinkRow>> {
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

impl LinkRow {
    /// The link as merge planning sees it.
    pub fn plan_view(&self) -> merge_rules::Link {
        merge_rules::Link {
            id: self.contact_link_id,
            person: self.person_id,
            organization: self.organization_id,
            role: self.role,
            primary: self.is_primary,
        }
    }
}

impl CustomerRow {
    /// The row as merge admission sees it.
    pub fn party(&self) -> merge_rules::Party {
        merge_rules::Party {
            id: self.customer_id,
            status: self.status,
            kind: self.kind,
            version: self.version,
            merged_into: self.merged_into,
        }
    }
}

/// When `merged` was merged (None when no merge is recorded).
pub async fn merge_time(
    conn: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT merge_time FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .fetch_optional(&mut *conn)
    .await?)
}

/// The database's transaction time.
pub async fn now(conn: &mut PgConnection) -> Result<DateTime<Utc>> {
    Ok(sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *conn)
        .await?)
}

/// Gives the identifier `i` to `to` at `position`, primary or not, with
/// `label` (None: the label it has).
pub async fn move_identifier(
    conn: &mut PgConnection,
    tenant: Uuid,
    i: &IdentRow,
    to: Uuid,
    (position, is_primary): (i32, bool),
    label: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE identifiers SET customer_id = $2, position = $3, is_primary = $4,
                label = coalesce($8, label)
          WHERE tenant_id = $1 AND kind = $5 AND system = $6 AND value = $7",
    )
    .bind(tenant)
    .bind(to)
    .bind(position)
    .bind(is_primary)
    .bind(i.kind)
    .bind(&i.system)
    .bind(&i.value)
    .bind(label)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Moves a contact link's `from` end to `to`, primary or not.
pub async fn move_link(
    conn: &mut PgConnection,
    tenant: Uuid,
    link: Uuid,
    from: Uuid,
    to: Uuid,
    is_primary: bool,
) -> Result<()> {
    sqlx::query(
        "UPDATE contact_links SET
            person_id = CASE WHEN person_id = $3 THEN $4 ELSE person_id END,
            organization_id = CASE WHEN organization_id = $3 THEN $4 ELSE organization_id END,
            is_primary = $5, update_time = now()
          WHERE tenant_id = $1 AND contact_link_id = $2",
    )
    .bind(tenant)
    .bind(link)
    .bind(from)
    .bind(to)
    .bind(is_primary)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes a contact link.
pub async fn drop_link(conn: &mut PgConnection, tenant: Uuid, link: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM contact_links WHERE tenant_id = $1 AND contact_link_id = $2")
        .bind(tenant)
        .bind(link)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Moves the consent history of `from` to `to`; returns the records moved.
pub async fn move_consent_history(
    conn: &mut PgConnection,
    tenant: Uuid,
    from: Uuid,
    to: Uuid,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "UPDATE consent_records SET holder_id = $3 WHERE tenant_id = $1 AND holder_id = $2
         RETURNING consent_record_id",
    )
    .bind(tenant)
    .bind(from)
    .bind(to)
    .fetch_all(&mut *conn)
    .await?)
}

/// Gives the consent records `ids` back to `holder`.
pub async fn return_consent_history(
    conn: &mut PgConnection,
    tenant: Uuid,
    holder: Uuid,
    ids: &[Uuid],
) -> Result<()> {
    sqlx::query(
        "UPDATE consent_records SET holder_id = $2 WHERE tenant_id = $1 AND consent_record_id = ANY($3)",
    )
    .bind(tenant)
    .bind(holder)
    .bind(ids)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// How a profile write changes the stage's set time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageTime {
    /// Left as it is.
    Keep,
    /// Set to now (the stage was taken from the merged customer).
    Now,
    /// Cleared (the stage taken at the merge was given back and none is left).
    Clear,
}

/// Writes a customer's profile document and bumps its version.
pub async fn write_profile(
    conn: &mut PgConnection,
    tenant: Uuid,
    id: Uuid,
    profile: &Profile,
    stage: StageTime,
) -> Result<()> {
    sqlx::query(
        "UPDATE customers SET data = $3, version = version + 1, update_time = now(),
                stage_set_time = CASE $4 WHEN 'now' THEN now() WHEN 'clear' THEN NULL ELSE stage_set_time END
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(Json(profile))
    .bind(match stage {
        StageTime::Keep => "keep",
        StageTime::Now => "now",
        StageTime::Clear => "clear",
    })
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks `merged` as merged into `survivor`, or (None) active again.
pub async fn set_merged_into(
    conn: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
    survivor: Option<Uuid>,
) -> Result<()> {
    let status = if survivor.is_some() {
        CustomerStatus::Merged
    } else {
        CustomerStatus::Active
    };
    sqlx::query(
        "UPDATE customers SET status = $3, merged_into = $4, version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .bind(status)
    .bind(survivor)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Forgets that `a` and `b` were marked as not duplicates.
pub async fn forget_not_duplicate(
    conn: &mut PgConnection,
    tenant: Uuid,
    a: Uuid,
    b: Uuid,
) -> Result<()> {
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    sqlx::query(
        "DELETE FROM not_duplicates WHERE tenant_id = $1 AND first_id = $2 AND second_id = $3",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the merge of `merged` into `survivor` with what it brought.
pub async fn record_merge(
    conn: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
    survivor: Uuid,
    time: DateTime<Utc>,
    snapshot: &MergeSnapshot,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO merges (tenant_id, merged_customer_id, survivor_customer_id, merge_time, snapshot)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(merged)
    .bind(survivor)
    .bind(time)
    .bind(Json(snapshot))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What `merged` brought at its merge.
pub async fn merge_snapshot(
    conn: &mut PgConnection,
    tenant: Uuid,
    merged: Uuid,
) -> Result<Option<MergeSnapshot>> {
    let snap: Option<Json<MergeSnapshot>> = sqlx::query_scalar(
        "SELECT snapshot FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2",
    )
    .bind(tenant)
    .bind(merged)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(snap.map(|s| s.0))
}

/// Forgets the merge of `merged`.
pub async fn forget_merge(conn: &mut PgConnection, tenant: Uuid, merged: Uuid) -> Result<()> {
    sqlx::query("DELETE FROM merges WHERE tenant_id = $1 AND merged_customer_id = $2")
        .bind(tenant)
        .bind(merged)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Who holds the identifier `i` now.
pub async fn identifier_holder(
    conn: &mut PgConnection,
    tenant: Uuid,
    i: &IdentRow,
) -> Result<Option<Uuid>> {
    Ok(sqlx::query_scalar(
        "SELECT customer_id FROM identifiers WHERE tenant_id = $1 AND kind = $2 AND system = $3 AND value = $4",
    )
    .bind(tenant)
    .bind(i.kind)
    .bind(&i.system)
    .bind(&i.value)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Gives `i`, held by nobody now, back to `to` at its old position.
pub async fn reinsert_identifier(
    conn: &mut PgConnection,
    tenant: Uuid,
    i: &IdentRow,
    to: Uuid,
) -> Result<()> {
    let start: HashMap<i16, i32> = [(i.kind, i.position)].into_iter().collect();
    insert_idents(conn, tenant, to, &[i.ident()], &start)
        .await
        .map_err(unique_to_error)
}

/// Makes sure `id` has one primary e-mail and phone where it has any.
pub async fn ensure_primaries(conn: &mut PgConnection, tenant: Uuid, id: Uuid) -> Result<()> {
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
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Puts a contact link back as it was at the merge, where both its
/// customers still exist (not erased).
pub async fn restore_link(conn: &mut PgConnection, tenant: Uuid, l: &LinkRow) -> Result<()> {
    drop_link(conn, tenant, l.contact_link_id).await?;
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
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Marks the ordered pair (`first` < `second`) as not duplicates; returns
/// its first mark time.
pub async fn insert_not_duplicate(
    conn: &mut PgConnection,
    tenant: Uuid,
    first: Uuid,
    second: Uuid,
) -> Result<DateTime<Utc>> {
    sqlx::query(
        "INSERT INTO not_duplicates (tenant_id, first_id, second_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .execute(&mut *conn)
    .await?;
    Ok(sqlx::query_scalar(
        "SELECT mark_time FROM not_duplicates WHERE tenant_id = $1 AND first_id = $2 AND second_id = $3",
    )
    .bind(tenant)
    .bind(first)
    .bind(second)
    .fetch_one(&mut *conn)
    .await?)
}

//! Attribute definitions: a tenant's typed custom attributes.

use super::*;

/// An `attribute_definitions` row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DefinitionRow {
    /// Name.
    pub name: String,
    /// AttributeType number.
    pub r#type: i16,
    /// Required.
    pub required: bool,
    /// Description.
    pub description: String,
    /// AttributeDefinitionState number.
    pub state: i16,
    /// Version (etag).
    pub version: i64,
    /// Created.
    pub create_time: DateTime<Utc>,
    /// Changed.
    pub update_time: DateTime<Utc>,
    /// Deprecated.
    pub deprecate_time: Option<DateTime<Utc>>,
}

macro_rules! definition_cols {
    () => {
        "name, type, required, description, state, version, create_time, update_time, deprecate_time"
    };
}

impl DefinitionRow {
    /// The contract's definition.
    pub fn to_proto(&self) -> AttributeDefinition {
        AttributeDefinition {
            name: self.name.clone(),
            r#type: i32::from(self.r#type),
            required: self.required,
            description: self.description.clone(),
            state: i32::from(self.state),
            create_time: Some(timestamp(self.create_time)),
            update_time: Some(timestamp(self.update_time)),
            deprecate_time: self.deprecate_time.map(timestamp),
            etag: cust::etag(self.version),
        }
    }
}

/// Serialises the creation of definitions of a tenant (the count limit).
pub async fn lock_definitions(conn: &mut PgConnection, tenant: Uuid) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1::text || '/attribute_definitions'))")
        .bind(tenant.to_string())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// How many definitions the tenant has, deprecated ones included.
pub async fn definition_count(conn: &mut PgConnection, tenant: Uuid) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM attribute_definitions WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Inserts a definition; ALREADY_EXISTS when the name was ever used.
pub async fn insert_definition(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
    attribute_type: i16,
    required: bool,
    description: &str,
) -> Result<DefinitionRow> {
    let row: std::result::Result<DefinitionRow, sqlx::Error> = sqlx::query_as(concat!(
        "INSERT INTO attribute_definitions (tenant_id, name, type, required, description)
         VALUES ($1, $2, $3, $4, $5) RETURNING ",
        definition_cols!()
    ))
    .bind(tenant)
    .bind(name)
    .bind(attribute_type)
    .bind(required)
    .bind(description)
    .fetch_one(&mut *conn)
    .await;
    match row {
        Ok(r) => Ok(r),
        Err(e) if rapport_kit::error::is_unique_violation(&e, None) => {
            Err(Error::Api(ApiError::AlreadyExists(format!(
                "an attribute definition named {name:?} already exists (names are never reused)"
            ))))
        }
        Err(e) => Err(e.into()),
    }
}

/// ListAttributeDefinitions: by ascending name, after `after`.
pub async fn list_definitions(
    pool: &PgPool,
    tenant: Uuid,
    show_deprecated: bool,
    after: Option<&str>,
    limit: i64,
) -> Result<(Vec<DefinitionRow>, Option<String>)> {
    let mut rows: Vec<DefinitionRow> = sqlx::query_as(concat!(
        "SELECT ",
        definition_cols!(),
        " FROM attribute_definitions WHERE tenant_id = $1 AND ($2 OR state = 1) AND name > $3
          ORDER BY name LIMIT $4"
    ))
    .bind(tenant)
    .bind(show_deprecated)
    .bind(after.unwrap_or(""))
    .bind(limit + 1)
    .fetch_all(pool)
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(usize::try_from(limit).unwrap_or(0));
    let next = if more {
        rows.last().map(|r| r.name.clone())
    } else {
        None
    };
    Ok((rows, next))
}

/// The definition `name`, locked until the end of the transaction.
pub async fn lock_definition(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
) -> Result<Option<DefinitionRow>> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        definition_cols!(),
        " FROM attribute_definitions WHERE tenant_id = $1 AND name = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?)
}

/// Sets a definition's description.
pub async fn set_definition_description(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
    description: &str,
) -> Result<DefinitionRow> {
    Ok(sqlx::query_as(concat!(
        "UPDATE attribute_definitions SET description = $3, version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND name = $2 RETURNING ",
        definition_cols!()
    ))
    .bind(tenant)
    .bind(name)
    .bind(description)
    .fetch_one(&mut *conn)
    .await?)
}

/// Deprecates a definition.
pub async fn deprecate_definition(
    conn: &mut PgConnection,
    tenant: Uuid,
    name: &str,
) -> Result<DefinitionRow> {
    Ok(sqlx::query_as(concat!(
        "UPDATE attribute_definitions SET state = $3, deprecate_time = now(), version = version + 1, update_time = now()
          WHERE tenant_id = $1 AND name = $2 RETURNING ",
        definition_cols!()
    ))
    .bind(tenant)
    .bind(name)
    .bind(DEPRECATED)
    .fetch_one(&mut *conn)
    .await?)
}

/// The stored state of a deprecated definition (the contract's number).
pub const DEPRECATED: i16 =
    rapport_proto::rapport::profile::v1::AttributeDefinitionState::Deprecated as i16;

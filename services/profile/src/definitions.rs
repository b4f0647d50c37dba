//! CreateAttributeDefinition, UpdateAttributeDefinition and
//! DeprecateAttributeDefinition: each owns its transaction; the limits are
//! `domain::attributes`', the statements the store's.

use rapport_kit::ApiError;
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::attributes::MAX_DEFINITIONS;
use crate::domain::customer::etag;
use crate::error::{Error, Result};
use crate::store::{self, DEPRECATED, DefinitionRow};

/// CreateAttributeDefinition: at most MAX_DEFINITIONS per tenant, names
/// never reused.
pub async fn create(
    pool: &PgPool,
    tenant: Uuid,
    name: &str,
    attribute_type: i16,
    required: bool,
    description: &str,
) -> Result<DefinitionRow> {
    let mut tx = pool.begin().await?;
    store::lock_definitions(&mut tx, tenant).await?;
    if store::definition_count(&mut tx, tenant).await? >= MAX_DEFINITIONS {
        return Err(Error::Api(ApiError::ResourceExhausted {
            message: format!(
                "a tenant has at most {MAX_DEFINITIONS} attribute definitions, deprecated ones included"
            ),
            retry_after: None,
        }));
    }
    let row =
        store::insert_definition(&mut tx, tenant, name, attribute_type, required, description)
            .await?;
    tx.commit().await?;
    Ok(row)
}

/// UpdateAttributeDefinition (a new description) or, with None,
/// DeprecateAttributeDefinition. A change to what is already there answers
/// with the definition unchanged.
pub async fn change(
    pool: &PgPool,
    tenant: Uuid,
    name: &str,
    description: Option<&str>,
    if_etag: &str,
) -> Result<DefinitionRow> {
    let mut tx = pool.begin().await?;
    let current = store::lock_definition(&mut tx, tenant, name)
        .await?
        .ok_or_else(|| Error::Api(ApiError::not_found("attribute definition", name)))?;
    if !if_etag.is_empty() && if_etag != etag(current.version) {
        return Err(Error::Api(ApiError::Aborted(
            "the definition changed since this etag was read".into(),
        )));
    }
    let row = match description {
        Some(d) if d == current.description => return Ok(current),
        Some(d) => store::set_definition_description(&mut tx, tenant, name, d).await?,
        None if current.state == DEPRECATED => return Ok(current),
        None => store::deprecate_definition(&mut tx, tenant, name).await?,
    };
    tx.commit().await?;
    Ok(row)
}

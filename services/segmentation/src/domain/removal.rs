//! Why a customer left segmentation, as the `removed_customers.state` column
//! holds it. The one mapping between the column's text and the enum is the
//! `sqlx::Type` derive; code passes variants, never strings.

/// Why a customer's features and memberships were removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Removal {
    /// Soft-deleted in the profile service.
    Deleted,
    /// Erased for privacy.
    Erased,
    /// Merged into another customer (the survivor is kept beside it).
    Merged,
}

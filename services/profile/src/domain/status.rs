//! Where a customer record is in its life, as the `customers.status` column
//! holds it. The one mapping between the column's text and the enum is the
//! `sqlx::Type` derive below; code compares variants, never strings.

/// The life of a customer record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum CustomerStatus {
    /// In use.
    Active,
    /// Soft-deleted: readable, undeletable, not matched by resolution.
    Deleted,
    /// Merged into another customer (`merged_into`); reads follow the chain.
    Merged,
    /// Erased for privacy: nothing of the person remains, and it reads as not found.
    Erased,
}

impl CustomerStatus {
    /// Readable by id: active or soft-deleted.
    pub fn is_readable(self) -> bool {
        matches!(self, Self::Active | Self::Deleted)
    }

    /// Gone as a record of its own: merged away or erased.
    pub fn is_gone(self) -> bool {
        matches!(self, Self::Merged | Self::Erased)
    }
}

#[cfg(test)]
mod tests {
    use super::CustomerStatus::*;

    #[test]
    fn readable_and_gone_split_the_states() {
        for s in [Active, Deleted, Merged, Erased] {
            assert_ne!(s.is_readable(), s.is_gone(), "{s:?}");
        }
        assert!(Active.is_readable() && Deleted.is_readable());
        assert!(Merged.is_gone() && Erased.is_gone());
    }
}

//! Pure logic of the profile service, without I/O: normalisation and
//! validation of input, field masks, merge rules, duplicate scoring, consent
//! decisions.

pub mod attributes;
pub mod consent;
pub mod contacts;
pub mod country;
pub mod customer;
pub mod duplicates;
pub mod erase;
pub mod mask;
pub mod merge;
pub mod normalize;
pub mod resolution;
pub mod status;

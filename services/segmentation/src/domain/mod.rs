//! Pure logic of the segmentation service (no I/O): RFM scores and segments,
//! the classification policy, ladder and stage classification, segment
//! definitions.

pub mod classify;
pub mod policy;
pub mod removal;
pub mod rfm;
pub mod segment;

//! Pure logic of the interaction service: no I/O. Input rules and the content
//! hash of idempotent recording, exact money, the service-request life cycle,
//! customer summaries, Buy-Till-You-Die inputs and campaign reports, and the
//! shapes of stored interactions and their feed events.

pub mod btyd;
pub mod campaign;
pub mod model;
pub mod money;
pub mod status;
pub mod summary;
pub mod types;
pub mod validate;

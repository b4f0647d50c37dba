//! The Rapport service kit: what every service is built on.
//!
//! * [`config`]: settings from defaults, an optional file and `RAPPORT_*` variables.
//! * [`telemetry`]: logs, OTLP traces, W3C trace context in gRPC metadata.
//! * [`server`]: health, reflection, tracing, deadlines, graceful shutdown.
//! * [`db`]: a schema and a role per service, pools, migrations.
//! * [`pg`]: a PostgreSQL server run from the local installation.
//! * [`error`]: errors mapped to precise gRPC statuses with details.
//! * [`page`]: opaque, tamper-evident page tokens.
//! * [`feed`]: the outbox, `WatchChanges` streams and feed consumers.
//! * [`peer`]: channels to other Rapport services and the mapping of their failures.
//! * [`context`]: tenant and principal of a call, the internal credential.

pub mod budget;
pub mod calendar;
pub mod config;
pub mod connect;
pub mod context;
pub mod convert;
pub mod copy;
pub mod db;
pub mod deadline;
pub mod error;
pub mod feed;
pub mod idempotency;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod peer;
pub mod pg;
pub mod repeat;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use error::{ApiError, Violations};

/// What the kit's macros name in the crates that use them.
#[doc(hidden)]
pub mod __private {
    pub use futures::future::BoxFuture;
    pub use rapport_proto::rapport::common::v1::ChangeEvent;
    pub use sqlx::{Error as SqlxError, PgConnection};
    pub use uuid::Uuid;
}

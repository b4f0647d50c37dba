//! The segmentation service (ARCHITECTURE.md, "Services and what each owns"):
//! segments defined by rules or lists, who is in them and why, RFM scores and
//! relationship classification. Owns the `segmentation` schema.
//!
//! * [`api`]: the gRPC handlers of `SegmentationService`.
//! * [`rule`]: the rule language (parser, printer, type check, SQL, evaluator).
//! * [`domain`]: pure logic (RFM, classification policy and rules, segment
//!   definitions).
//! * [`engine`]: keeping memberships and computed features current.
//! * [`store`]: every SQL statement.
//! * [`follow`] and [`peers`]: the consumers of the profile, interaction and
//!   valuation feeds, and the clients they read with.
//! * [`scheduler`]: scheduled refreshes, hourly RFM and classification, log
//!   retention.

pub mod api;
pub mod classification;
pub mod domain;
pub mod engine;
pub mod follow;
pub mod peers;
pub mod rule;
pub mod scheduler;
pub mod segments;
pub mod store;
pub mod synthetic;

use rapport_kit::db::SchemaSpec;
use rapport_kit::feed::{InteractionFeed, ProfileFeed, ValuationFeed};
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use rapport_proto::rapport::segmentation::v1::segmentation_service_server::SegmentationServiceServer;
use sqlx::migrate::Migrator;

/// Schema `segmentation`, role `rapport_segmentation`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("segmentation", "rapport_segmentation");

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds `SegmentationService` to `server`, follows the configured peers'
/// change feeds and runs the scheduler until shutdown.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    let config = &runtime.config;
    let profile = runtime.peer("profile", config.profile_url.as_deref());
    let interaction = runtime.peer("interaction", config.interaction_url.as_deref());
    let valuation = runtime.peer("valuation", config.valuation_url.as_deref());
    runtime.follow::<ProfileFeed>(
        follow::PROFILE_CURSOR,
        profile.as_ref(),
        follow::ProfileFollower,
    );
    runtime.follow::<InteractionFeed>(
        follow::INTERACTION_CURSOR,
        interaction.as_ref(),
        follow::InteractionFollower,
    );
    runtime.follow::<ValuationFeed>(
        follow::VALUATION_CURSOR,
        valuation.as_ref(),
        follow::ValuationFollower,
    );
    tokio::spawn(scheduler::run(
        runtime.pool.clone(),
        runtime.shutdown.clone(),
    ));

    let api = api::SegmentationApi::new(
        runtime.pool.clone(),
        runtime.page_tokens.clone(),
        runtime.shutdown.clone(),
        profile.as_ref().map(peers::Profile::new),
    );
    server.add_service(
        SegmentationServiceServer::new(api)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
    );
}

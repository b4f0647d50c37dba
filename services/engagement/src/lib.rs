//! The engagement service (ARCHITECTURE.md, "Services and what each owns"):
//! customizes each relationship. Treatments the company can offer, the
//! tenant's contact policy, and per customer the next best actions, ranked
//! by expected net value and explained, with control groups and
//! acceptance probabilities learned from outcomes. Owns the `engagement`
//! schema.
//!
//! * [`api`]: the gRPC handlers of `EngagementService`.
//! * [`domain`]: pure logic (treatments, policy, consent, propensities,
//!   deciding).
//! * [`treatments`], [`decisions`], [`audience`], [`reports`]: the use cases.
//! * [`store`]: every SQL statement.
//! * [`follow`]: the consumers of the profile, segmentation, valuation and
//!   interaction feeds.

pub mod api;
pub mod audience;
pub mod decisions;
pub mod domain;
pub mod follow;
pub mod peers;
pub mod reports;
pub mod store;
pub mod treatments;

use rapport_kit::db::SchemaSpec;
use rapport_kit::feed::{InteractionFeed, ProfileFeed, SegmentationFeed, ValuationFeed};
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use rapport_proto::rapport::engagement::v1::engagement_service_server::EngagementServiceServer;
use sqlx::migrate::Migrator;

/// Schema `engagement`, role `rapport_engagement`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("engagement", "rapport_engagement");

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds `EngagementService` to `server`, follows the configured peers'
/// change feeds and counts decisions left without outcome, until shutdown.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    let config = &runtime.config;
    let segmentation = runtime.peer("segmentation", config.segmentation_url.as_deref());
    let profile = runtime.peer("profile", config.profile_url.as_deref());
    let valuation = runtime.peer("valuation", config.valuation_url.as_deref());
    let interaction = runtime.peer("interaction", config.interaction_url.as_deref());
    runtime.follow::<ProfileFeed>(
        follow::PROFILE_CURSOR,
        profile.as_ref(),
        follow::ProfileFollower,
    );
    runtime.follow::<SegmentationFeed>(
        follow::SEGMENTATION_CURSOR,
        segmentation.as_ref(),
        follow::SegmentationFollower,
    );
    runtime.follow::<ValuationFeed>(
        follow::VALUATION_CURSOR,
        valuation.as_ref(),
        follow::ValuationFollower,
    );
    runtime.follow::<InteractionFeed>(
        follow::INTERACTION_CURSOR,
        interaction.as_ref(),
        follow::InteractionFollower,
    );
    tokio::spawn(decisions::sweep_loop(
        runtime.pool.clone(),
        runtime.shutdown.clone(),
    ));

    let api = api::EngagementApi::new(
        runtime.pool.clone(),
        runtime.page_tokens.clone(),
        runtime.shutdown.clone(),
        segmentation.as_ref().map(peers::Segmentation::new),
    );
    server.add_service(
        EngagementServiceServer::new(api)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
    );
}

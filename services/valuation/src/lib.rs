//! The valuation service (ARCHITECTURE.md, "Services and what each owns"): fits
//! the Buy-Till-You-Die models, scores every customer and answers value
//! questions per customer, segment and acquisition cohort. Owns the `valuation`
//! schema.
//!
//! * [`api`]: the gRPC handlers of `ValuationService`.
//! * [`domain`]: pure logic (models, fits, scores, tiers, reports).
//! * [`engine`]: scoring runs and background re-scoring.
//! * [`store`]: every SQL statement.
//! * [`peers`]: the interaction, segmentation and profile services as this
//!   service calls them; [`follow`]: the consumer of the interaction feed.

pub mod api;
pub mod domain;
pub mod engine;
pub mod follow;
pub mod kept;
pub mod models;
pub mod peers;
pub mod profitability;
pub mod store;

use rapport_kit::db::SchemaSpec;
use rapport_kit::feed::{InteractionFeed, SegmentationFeed};
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use rapport_proto::rapport::valuation::v1::valuation_service_server::ValuationServiceServer;
use sqlx::migrate::Migrator;

/// Schema `valuation`, role `rapport_valuation`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("valuation", "rapport_valuation");

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds `ValuationService` to `server`; when the interaction service is
/// configured, follows its change feed and re-scores customers in the
/// background until shutdown.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    let config = &runtime.config;
    let interaction_peer = runtime.peer("interaction", config.interaction_url.as_deref());
    let interaction = interaction_peer.as_ref().map(peers::Interaction::new);
    let segmentation_peer = runtime.peer("segmentation", config.segmentation_url.as_deref());
    let segmentation = segmentation_peer.as_ref().map(peers::Segmentation::new);
    let profile = runtime
        .peer("profile", config.profile_url.as_deref())
        .as_ref()
        .map(peers::Profile::new);

    runtime.follow::<InteractionFeed>(
        follow::INTERACTION_CURSOR,
        interaction_peer.as_ref(),
        follow::InteractionFollower,
    );
    if let Some(interaction) = &interaction {
        tokio::spawn(engine::rescore_loop(
            runtime.pool.clone(),
            interaction.clone(),
            runtime.shutdown.clone(),
        ));
    }
    runtime.follow::<SegmentationFeed>(
        follow::SEGMENTATION_CURSOR,
        segmentation_peer.as_ref(),
        follow::ClassificationFollower,
    );

    let api = api::ValuationApi::new(
        runtime.pool.clone(),
        runtime.page_tokens.clone(),
        runtime.shutdown.clone(),
        interaction,
        segmentation,
        profile,
    );
    server.add_service(
        ValuationServiceServer::new(api)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
    );
}

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

use std::sync::Arc;

use rapport_kit::db::SchemaSpec;
use rapport_kit::feed::{Consumer, InteractionFeed, PeerFeed, SegmentationFeed};
use rapport_kit::peer::Peer;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use rapport_proto::rapport::valuation::v1::valuation_service_server::ValuationServiceServer;
use sqlx::migrate::Migrator;

/// Schema `valuation`, role `rapport_valuation`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("valuation", "rapport_valuation");

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

fn peer(name: &'static str, url: Option<&str>, token: Option<&str>) -> Option<Peer> {
    match Peer::new(name, url?, token) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(service = name, error = %e, "peer service cannot be reached");
            None
        }
    }
}

/// Adds `ValuationService` to `server`; when the interaction service is
/// configured, follows its change feed and re-scores customers in the
/// background until shutdown.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    let config = &runtime.config;
    let token = config.internal_token.as_deref();
    let interaction_peer = peer("interaction", config.interaction_url.as_deref(), token);
    let interaction = interaction_peer.as_ref().map(peers::Interaction::new);
    let segmentation_peer = peer("segmentation", config.segmentation_url.as_deref(), token);
    let segmentation = segmentation_peer.as_ref().map(peers::Segmentation::new);
    let profile = peer("profile", config.profile_url.as_deref(), token)
        .as_ref()
        .map(peers::Profile::new);

    if let (Some(interaction), Some(feed_peer)) = (&interaction, &interaction_peer) {
        let consumer = Consumer::new(
            follow::INTERACTION_CURSOR,
            runtime.pool.clone(),
            Arc::new(PeerFeed::<InteractionFeed>::new(feed_peer)),
            Arc::new(follow::InteractionFollower),
        );
        tokio::spawn(consumer.run(runtime.shutdown.clone()));
        tokio::spawn(engine::rescore_loop(
            runtime.pool.clone(),
            interaction.clone(),
            runtime.shutdown.clone(),
        ));
    }

    if let Some(feed_peer) = &segmentation_peer {
        let consumer = Consumer::new(
            follow::SEGMENTATION_CURSOR,
            runtime.pool.clone(),
            Arc::new(PeerFeed::<SegmentationFeed>::new(feed_peer)),
            Arc::new(follow::ClassificationFollower),
        );
        tokio::spawn(consumer.run(runtime.shutdown.clone()));
    }

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

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

use std::sync::Arc;

use rapport_kit::db::SchemaSpec;
use rapport_kit::feed::{
    Consumer, FeedHandler, FeedSource, InteractionFeed, PeerFeed, ProfileFeed, SegmentationFeed,
    ValuationFeed,
};
use rapport_kit::peer::Peer;
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
    let token = config.internal_token.as_deref();
    let connect = |name: &'static str, url: Option<&str>| match Peer::new(name, url?, token) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, peer = name, "a peer service cannot be reached; its feed is not followed");
            None
        }
    };
    let segmentation = connect("segmentation", config.segmentation_url.as_deref());
    let follow =
        |name: &'static str, source: Option<Arc<dyn FeedSource>>, handler: Arc<dyn FeedHandler>| {
            if let Some(source) = source {
                let consumer = Consumer::new(name, runtime.pool.clone(), source, handler);
                tokio::spawn(consumer.run(runtime.shutdown.clone()));
            }
        };
    follow(
        follow::PROFILE_CURSOR,
        connect("profile", config.profile_url.as_deref())
            .as_ref()
            .map(|p| Arc::new(PeerFeed::<ProfileFeed>::new(p)) as Arc<dyn FeedSource>),
        Arc::new(follow::ProfileFollower),
    );
    follow(
        follow::SEGMENTATION_CURSOR,
        segmentation
            .as_ref()
            .map(|p| Arc::new(PeerFeed::<SegmentationFeed>::new(p)) as Arc<dyn FeedSource>),
        Arc::new(follow::SegmentationFollower),
    );
    follow(
        follow::VALUATION_CURSOR,
        connect("valuation", config.valuation_url.as_deref())
            .as_ref()
            .map(|p| Arc::new(PeerFeed::<ValuationFeed>::new(p)) as Arc<dyn FeedSource>),
        Arc::new(follow::ValuationFollower),
    );
    follow(
        follow::INTERACTION_CURSOR,
        connect("interaction", config.interaction_url.as_deref())
            .as_ref()
            .map(|p| Arc::new(PeerFeed::<InteractionFeed>::new(p)) as Arc<dyn FeedSource>),
        Arc::new(follow::InteractionFollower),
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

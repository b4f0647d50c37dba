//! The interaction service (ARCHITECTURE.md, "Services and what each owns"):
//! records every episode of the relationship and turns them into timelines,
//! per-customer summaries, Buy-Till-You-Die inputs and campaign reports. Owns
//! the `interaction` schema.
//!
//! * [`api`]: the gRPC handlers of `InteractionService` and `CampaignService`.
//! * [`domain`]: pure logic (validation, hashing, money, status transitions,
//!   summaries, exports, reports).
//! * [`ingest`]: recording one interaction or a batch.
//! * [`store`]: every SQL statement.
//! * [`peers`] and [`follow`]: calls to the profile service and the
//!   consumer of its change feed.

pub mod api;
pub mod campaigns;
pub mod domain;
pub mod follow;
pub mod ingest;
pub mod peers;
pub mod requests;
pub mod store;
pub mod synthetic;

use chrono::{Datelike, Utc};
use rapport_kit::db::SchemaSpec;
use rapport_kit::feed::ProfileFeed;
use rapport_kit::peer::Peer;
use rapport_kit::server::{ServerBuilder, ServiceRuntime};
use rapport_proto::rapport::interaction::v1::campaign_service_server::CampaignServiceServer;
use rapport_proto::rapport::interaction::v1::interaction_service_server::InteractionServiceServer;
use sqlx::migrate::Migrator;

/// Schema `interaction`, role `rapport_interaction`.
pub const SCHEMA: SchemaSpec = SchemaSpec::new("interaction", "rapport_interaction");

/// The service's own migrations (the kit adds the change-feed tables).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Adds `InteractionService` and `CampaignService` to `server`, and, when the
/// profile service is configured, follows its change feed until shutdown.
pub fn register(server: &mut ServerBuilder, runtime: &ServiceRuntime) {
    let config = &runtime.config;
    let peer = match config.profile_url.as_deref() {
        None => None,
        Some(url) => match Peer::new("profile", url, config.internal_token.as_deref()) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::error!(error = %e, "the profile service cannot be reached; identifiers will not resolve");
                None
            }
        },
    };
    let profile = peer.as_ref().map(peers::Profile::new);
    let recorder = ingest::Recorder::new(runtime.pool.clone(), profile);

    // Partitions for this year and the next, ahead of time.
    let ahead = recorder.clone();
    tokio::spawn(async move {
        let year = Utc::now().year();
        if let Err(e) = ahead.ensure_partitions([year, year + 1]).await {
            tracing::warn!(error = %e, "could not create this year's interaction partitions yet");
        }
    });

    runtime.follow::<ProfileFeed>(
        follow::PROFILE_CURSOR,
        peer.as_ref(),
        follow::ProfileFollower,
    );

    let interactions = api::InteractionApi::new(
        runtime.pool.clone(),
        recorder,
        runtime.page_tokens.clone(),
        runtime.shutdown.clone(),
    );
    let campaigns = api::CampaignApi::new(runtime.pool.clone(), runtime.page_tokens.clone());
    server.add_service(
        InteractionServiceServer::new(interactions)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
    );
    server.add_service(
        CampaignServiceServer::new(campaigns)
            .max_decoding_message_size(config.max_message_bytes)
            .max_encoding_message_size(config.max_message_bytes),
    );
}

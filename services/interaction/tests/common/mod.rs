//! A real PostgreSQL database, the interaction service (and, when asked, the
//! profile service) running in-process on real gRPC ports, and helpers to
//! build requests.

#![allow(dead_code)]

use chrono::{DateTime, TimeZone, Utc};
use prost_types::Timestamp;
use rapport_kit::config::ServiceConfig;
use rapport_proto::rapport::common::v1::ChangeEvent;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, Money, customer_ref,
};
use rapport_proto::rapport::interaction::v1::campaign_service_client::CampaignServiceClient;
use rapport_proto::rapport::interaction::v1::interaction_event::Event;
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Campaign, Interaction, InteractionEvent, InteractionType, RecordInteractionsResponse,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_testkit::{Running, Service, TestDatabase};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

// Not every test binary uses each of these.
#[allow(unused_imports)]
pub use rapport_testkit::{eventually, for_tenant as req};

pub struct Stack {
    pub db: TestDatabase,
    pub interaction: Running,
    pub profile: Option<Running>,
    pub channel: Channel,
    /// The interaction schema, as the service sees it.
    pub pool: PgPool,
}

impl Stack {
    pub fn interactions(&self) -> InteractionServiceClient<Channel> {
        InteractionServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    pub fn campaigns(&self) -> CampaignServiceClient<Channel> {
        CampaignServiceClient::new(self.channel.clone())
    }

    pub async fn profile_client(&self) -> ProfileServiceClient<Channel> {
        let running = self
            .profile
            .as_ref()
            .expect("started with a profile service");
        ProfileServiceClient::new(rapport_testkit::channel(running).await)
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    pub async fn stop(self) {
        self.interaction.stop().await;
        if let Some(p) = self.profile {
            p.stop().await;
        }
    }
}

pub const INTERACTION: Service = rapport_testkit::service!(rapport_interaction);
pub const PROFILE: Service = rapport_testkit::service!(rapport_profile);

pub async fn serve_interaction(db: &TestDatabase, profile_url: Option<String>) -> Running {
    INTERACTION
        .serve(ServiceConfig {
            profile_url,
            ..rapport_testkit::service_config(db)
        })
        .await
}

pub async fn serve_profile(db: &TestDatabase) -> Running {
    PROFILE.serve(rapport_testkit::service_config(db)).await
}

/// The interaction service alone: customer ids are taken as given.
pub async fn start() -> Stack {
    rapport_testkit::logs();
    let db = rapport_testkit::migrated(&[INTERACTION]).await;
    let interaction = serve_interaction(&db, None).await;
    finish(db, interaction, None).await
}

/// The interaction and profile services on one database.
pub async fn start_with_profile() -> Stack {
    rapport_testkit::logs();
    let db = rapport_testkit::migrated(&[PROFILE, INTERACTION]).await;
    let profile = serve_profile(&db).await;
    let interaction = serve_interaction(&db, Some(profile.endpoint())).await;
    finish(db, interaction, Some(profile)).await
}

async fn finish(db: TestDatabase, interaction: Running, profile: Option<Running>) -> Stack {
    let channel = rapport_testkit::channel(&interaction).await;
    let pool = INTERACTION.pool(&db, 4).await;
    Stack {
        db,
        interaction,
        profile,
        channel,
        pool,
    }
}

pub fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
}

pub fn ts(t: DateTime<Utc>) -> Timestamp {
    rapport_kit::convert::timestamp(t)
}

pub fn money(cur: &str, units: i64, nanos: i32) -> Money {
    Money {
        currency_code: cur.into(),
        units,
        nanos,
    }
}

pub fn by_id(id: Uuid) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::CustomerId(id.to_string())),
    })
}

pub fn by_email(email: &str) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
            identifiers: vec![Identifier {
                kind: IdentifierKind::Email as i32,
                system: String::new(),
                value: email.into(),
            }],
        })),
    })
}

/// A purchase of `units` EUR by `customer` at `t`.
pub fn purchase(customer: Uuid, t: DateTime<Utc>, units: i64) -> Interaction {
    Interaction {
        customer: by_id(customer),
        r#type: InteractionType::Purchase as i32,
        occur_time: Some(ts(t)),
        amount: Some(money("EUR", units, 0)),
        ..Default::default()
    }
}

/// An interaction of `kind` with `customer` at `t`.
pub fn contact(customer: Uuid, kind: InteractionType, t: DateTime<Utc>) -> Interaction {
    Interaction {
        customer: by_id(customer),
        r#type: kind as i32,
        occur_time: Some(ts(t)),
        ..Default::default()
    }
}

// Not every test binary uses each of these.
#[allow(unused_imports)]
pub use rapport_testkit::calls::{email_campaign as campaign, try_record};

/// Creates `c` for `tenant` and returns it as stored.
pub async fn create_campaign(s: &Stack, tenant: Uuid, c: Campaign) -> Campaign {
    rapport_testkit::calls::create_campaign(&mut s.campaigns(), tenant, c).await
}

/// Records `i` for `tenant` and returns it as stored.
pub async fn record(s: &Stack, tenant: Uuid, i: Interaction) -> Interaction {
    rapport_testkit::calls::record(&mut s.interactions(), tenant, i).await
}

/// Records `interactions` for `tenant` in one streamed message.
pub async fn record_batch(
    s: &Stack,
    tenant: Uuid,
    interactions: Vec<Interaction>,
) -> RecordInteractionsResponse {
    rapport_testkit::calls::record_batch(&mut s.interactions(), tenant, interactions).await
}

/// The field paths of an INVALID_ARGUMENT status's BadRequest detail.
#[allow(unused_imports)]
pub use rapport_testkit::hostile::violations as violated_fields;
// Not every test binary calls a service.
#[allow(unused_imports)]
pub use rapport_testkit::{Answer, Refused};

/// Every event of the interaction feed (the outbox), tenant by tenant and
/// in sequence order within each, with its typed case (None for an event
/// without a typed `event`).
pub async fn feed_events(pool: &PgPool) -> Vec<(ChangeEvent, Option<Event>)> {
    rapport_kit::feed::number_pending(pool, None, None)
        .await
        .unwrap();
    let tenants: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tenant_id FROM outbox_heads ORDER BY tenant_id")
            .fetch_all(pool)
            .await
            .unwrap();
    let mut out = Vec::new();
    for tenant in tenants {
        let mut after = 0;
        loop {
            let batch = rapport_kit::feed::read_after(pool, tenant, after, 1000)
                .await
                .unwrap();
            let Some(last) = batch.last() else {
                break;
            };
            after = last.sequence;
            for ev in batch {
                let typed =
                    rapport_kit::feed::decode::<InteractionEvent>(&ev).and_then(|e| e.event);
                out.push((ev, typed));
            }
        }
    }
    out
}

/// The typed events of type `event_type` on the interaction feed, in order.
pub async fn typed_events(pool: &PgPool, event_type: &str) -> Vec<Event> {
    feed_events(pool)
        .await
        .into_iter()
        .filter(|(ev, _)| ev.event_type == event_type)
        .map(|(ev, e)| e.unwrap_or_else(|| panic!("event {} is not typed", ev.sequence)))
        .collect()
}

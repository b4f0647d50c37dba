//! The engagement service over a real PostgreSQL, alone or following the
//! real profile, interaction and segmentation services running in-process;
//! helpers to build treatments and read decisions.

#![allow(dead_code)]

use chrono::Utc;
use rapport_kit::config::ServiceConfig;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{
    CustomerRef, Identifier, IdentifierKind, IdentifierSet, Money, customer_ref,
};
use rapport_proto::rapport::engagement::v1::engagement_service_client::EngagementServiceClient;
use rapport_proto::rapport::engagement::v1::{
    self as pb, ContactChannel, CreateTreatmentRequest, GetNextBestActionsRequest, Treatment,
    TreatmentKind,
};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Channel as InteractionChannel, Initiator, Interaction, InteractionType,
    RecordInteractionRequest,
};
use rapport_proto::rapport::profile::v1::ConsentPurpose;
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_testkit::{Running, Service, TestDatabase};
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

#[allow(unused_imports)]
pub use rapport_testkit::{Answer, Refused, eventually, for_tenant as req, mask};

pub const ENGAGEMENT: Service = rapport_testkit::service!(rapport_engagement);
pub const PROFILE: Service = rapport_testkit::service!(rapport_profile);
pub const INTERACTION: Service = rapport_testkit::service!(rapport_interaction);
pub const SEGMENTATION: Service = rapport_testkit::service!(rapport_segmentation);

pub type Client = EngagementServiceClient<Channel>;

pub struct Stack {
    pub db: TestDatabase,
    pub running: Vec<Running>,
    pub engagement: Channel,
    pub profile: Option<Channel>,
    pub interaction: Option<Channel>,
    pub segmentation: Option<Channel>,
    /// The engagement schema.
    pub pool: PgPool,
}

/// The engagement service alone.
pub async fn start() -> Stack {
    rapport_testkit::logs();
    let db = rapport_testkit::migrated(&[ENGAGEMENT]).await;
    let e = ENGAGEMENT.serve(rapport_testkit::service_config(&db)).await;
    let engagement = rapport_testkit::channel(&e).await;
    let pool = ENGAGEMENT.pool(&db, 4).await;
    Stack {
        db,
        running: vec![e],
        engagement,
        profile: None,
        interaction: None,
        segmentation: None,
        pool,
    }
}

/// Profile, interaction, segmentation and engagement on one database,
/// engagement following the other three (valuation's feed is driven with
/// constructed events through its follower).
pub async fn start_with_feeds() -> Stack {
    rapport_testkit::logs();
    let db = rapport_testkit::migrated(&[PROFILE, INTERACTION, SEGMENTATION, ENGAGEMENT]).await;
    let profile = PROFILE.serve(rapport_testkit::service_config(&db)).await;
    let interaction = INTERACTION
        .serve(ServiceConfig {
            profile_url: Some(profile.endpoint()),
            ..rapport_testkit::service_config(&db)
        })
        .await;
    let segmentation = SEGMENTATION
        .serve(ServiceConfig {
            profile_url: Some(profile.endpoint()),
            interaction_url: Some(interaction.endpoint()),
            ..rapport_testkit::service_config(&db)
        })
        .await;
    let engagement = ENGAGEMENT
        .serve(ServiceConfig {
            profile_url: Some(profile.endpoint()),
            interaction_url: Some(interaction.endpoint()),
            segmentation_url: Some(segmentation.endpoint()),
            ..rapport_testkit::service_config(&db)
        })
        .await;
    let pool = ENGAGEMENT.pool(&db, 4).await;
    Stack {
        engagement: rapport_testkit::channel(&engagement).await,
        profile: Some(rapport_testkit::channel(&profile).await),
        interaction: Some(rapport_testkit::channel(&interaction).await),
        segmentation: Some(rapport_testkit::channel(&segmentation).await),
        running: vec![engagement, segmentation, interaction, profile],
        db,
        pool,
    }
}

impl Stack {
    pub fn client(&self) -> Client {
        EngagementServiceClient::new(self.engagement.clone())
    }

    pub fn profile(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(self.profile.clone().expect("profile runs"))
    }

    pub fn interaction(&self) -> InteractionServiceClient<Channel> {
        InteractionServiceClient::new(self.interaction.clone().expect("interaction runs"))
    }

    pub fn segmentation(&self) -> SegmentationServiceClient<Channel> {
        SegmentationServiceClient::new(self.segmentation.clone().expect("segmentation runs"))
    }

    pub async fn stop(self) {
        for r in self.running {
            r.stop().await;
        }
    }

    /// Records an interaction for the customer with `email` (created on
    /// first use); returns the customer's id.
    pub async fn record(&self, tenant: Uuid, email: &str, i: Interaction) -> String {
        self.interaction()
            .record_interaction(req(
                tenant,
                RecordInteractionRequest {
                    interaction: Some(Interaction {
                        customer: Some(by_email(email)),
                        ..i
                    }),
                },
            ))
            .await
            .answer()
            .interaction
            .expect("interaction")
            .customer_id
    }
}

pub fn eur(units: i64, nanos: i32) -> Money {
    Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    }
}

pub fn by_email(email: &str) -> CustomerRef {
    CustomerRef {
        r#ref: Some(customer_ref::Ref::Identifiers(IdentifierSet {
            identifiers: vec![Identifier {
                kind: IdentifierKind::Email as i32,
                system: String::new(),
                value: email.into(),
            }],
        })),
    }
}

/// An interaction of `kind` a minute ago, on `channel`, started by the company
/// when `company`.
pub fn interaction(
    kind: InteractionType,
    channel: InteractionChannel,
    company: bool,
) -> Interaction {
    Interaction {
        r#type: kind as i32,
        channel: channel as i32,
        initiator: if company {
            Initiator::Company
        } else {
            Initiator::Customer
        } as i32,
        occur_time: Some(timestamp(Utc::now() - chrono::Duration::minutes(1))),
        amount: (kind == InteractionType::Purchase).then(|| eur(25, 0)),
        ..Default::default()
    }
}

/// An e-mail offer worth EUR 20 for EUR 0.50 a contact, for marketing.
pub fn offer(name: &str) -> Treatment {
    Treatment {
        name: name.into(),
        kind: TreatmentKind::Offer as i32,
        channel: ContactChannel::Email as i32,
        consent_purpose: ConsentPurpose::Marketing as i32,
        cost_per_contact: Some(eur(0, 500_000_000)),
        value: Some(pb::treatment::Value::FixedValue(eur(20, 0))),
        ..Default::default()
    }
}

pub async fn create(c: &mut Client, tenant: Uuid, t: Treatment) -> Treatment {
    c.create_treatment(req(
        tenant,
        CreateTreatmentRequest {
            treatment: Some(t),
            request_id: String::new(),
        },
    ))
    .await
    .answer()
    .treatment
    .expect("treatment")
}

pub async fn next_best(
    c: &mut Client,
    tenant: Uuid,
    customer: &str,
) -> Result<pb::GetNextBestActionsResponse, tonic::Status> {
    c.get_next_best_actions(req(
        tenant,
        GetNextBestActionsRequest {
            customer_id: customer.into(),
            limit: 20,
            ..Default::default()
        },
    ))
    .await
    .map(tonic::Response::into_inner)
}

/// The names of the actions offered, best first.
pub fn offered(r: &pb::GetNextBestActionsResponse) -> Vec<String> {
    r.actions
        .iter()
        .map(|a| {
            a.treatment
                .as_ref()
                .map(|t| t.name.clone())
                .unwrap_or_default()
        })
        .collect()
}

/// The reason a treatment named `name` was left out, if it was.
pub fn left_out(r: &pb::GetNextBestActionsResponse, name: &str) -> Option<pb::FilterReason> {
    r.filtered
        .iter()
        .find(|f| f.name == name)
        .map(|f| pb::FilterReason::try_from(f.reason).unwrap_or_default())
}

/// Asks for the customer's next best actions until `want` holds of the
/// answer (a feed's change has arrived); fails the test after 30 s.
pub async fn next_best_until(
    c: &Client,
    tenant: Uuid,
    customer: &str,
    what: &str,
    want: impl Fn(&pb::GetNextBestActionsResponse) -> bool,
) -> pb::GetNextBestActionsResponse {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let mut c = c.clone();
        if let Ok(r) = next_best(&mut c, tenant, customer).await
            && want(&r)
        {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// A feed event of `tenant` as a consumer receives it, at `sequence`.
pub fn change(
    sequence: i64,
    tenant: Uuid,
    e: rapport_kit::feed::NewEvent,
) -> rapport_proto::rapport::common::v1::ChangeEvent {
    rapport_proto::rapport::common::v1::ChangeEvent {
        sequence,
        tenant_id: tenant.to_string(),
        aggregate_type: e.aggregate_type.into(),
        aggregate_id: e.aggregate_id.clone(),
        event_type: e.event_type.into(),
        commit_time: Some(timestamp(Utc::now())),
        event: Some(e.event),
        ..Default::default()
    }
}

/// A treatment for the service purpose with a fixed value and a cost, in
/// EUR units.
pub fn service(
    name: &str,
    kind: rapport_proto::rapport::engagement::v1::TreatmentKind,
    channel: rapport_proto::rapport::engagement::v1::ContactChannel,
    value: i64,
    cost: i64,
) -> rapport_proto::rapport::engagement::v1::Treatment {
    rapport_proto::rapport::engagement::v1::Treatment {
        name: name.into(),
        kind: kind as i32,
        channel: channel as i32,
        consent_purpose: ConsentPurpose::Service as i32,
        cost_per_contact: Some(eur(cost, 0)),
        value: Some(
            rapport_proto::rapport::engagement::v1::treatment::Value::FixedValue(eur(value, 0)),
        ),
        ..Default::default()
    }
}

/// Applies constructed profile events through the engagement's follower.
pub async fn profile_events(
    s: &Stack,
    tenant: Uuid,
    events: Vec<(
        Uuid,
        rapport_proto::rapport::profile::v1::profile_event::Event,
    )>,
) {
    let mut tx = s.pool.begin().await.unwrap();
    let evs: Vec<rapport_proto::rapport::common::v1::ChangeEvent> = events
        .into_iter()
        .enumerate()
        .map(|(i, (c, e))| {
            let e = rapport_kit::feed::NewEvent::new(
                tenant,
                "customer",
                c.to_string(),
                "Profile",
                &rapport_proto::rapport::profile::v1::ProfileEvent { event: Some(e) },
            );
            change(i as i64 + 1, tenant, e)
        })
        .collect();
    rapport_engagement::follow::ProfileFollower
        .apply_batch(&mut tx, tenant, &evs)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

pub async fn created(s: &Stack, tenant: Uuid, ids: &[Uuid]) {
    profile_events(
        s,
        tenant,
        ids.iter()
            .map(|c| {
                (
                    *c,
                    rapport_proto::rapport::profile::v1::profile_event::Event::CustomerCreated(
                        rapport_proto::rapport::profile::v1::CustomerCreated {
                            customer_id: c.to_string(),
                            ..Default::default()
                        },
                    ),
                )
            })
            .collect(),
    )
    .await;
}

/// `Result` of a call that must succeed, as its message.
pub trait AnswerOk<T> {
    fn answer_ok(self) -> T;
}

impl<T> AnswerOk<T> for Result<T, tonic::Status> {
    #[track_caller]
    fn answer_ok(self) -> T {
        self.unwrap_or_else(|s| panic!("the call failed: {s:?}"))
    }
}

//! A real PostgreSQL database, the segmentation service (and, when asked, the
//! profile and interaction services) running in-process on real gRPC ports,
//! and helpers to build requests and projected customers.

#![allow(dead_code)]

use chrono::{DateTime, Duration, Utc};
use rapport_kit::config::ServiceConfig;
use rapport_proto::rapport::segmentation::v1::segmentation_service_client::SegmentationServiceClient;
use rapport_proto::rapport::segmentation::v1::{
    CreateSegmentRequest, GetSegmentRequest, MarketingApproach, PreviewSegmentRequest, Segment,
    SegmentKind, preview_segment_request,
};
use rapport_testkit::{Running, Service, TestDatabase};
use rust_decimal::Decimal;
use sqlx::PgPool;
use tonic::transport::Channel;
use uuid::Uuid;

// Not every test binary uses each of these.
#[allow(unused_imports)]
pub use rapport_testkit::{eventually, for_tenant as req};
// Not every test binary calls a service.
#[allow(unused_imports)]
pub use rapport_testkit::{Answer, Refused};

pub type Client = SegmentationServiceClient<Channel>;

pub struct Stack {
    pub db: TestDatabase,
    pub segmentation: Option<Running>,
    pub profile: Option<Running>,
    pub interaction: Option<Running>,
    pub channel: Channel,
    /// The segmentation schema.
    pub pool: PgPool,
}

pub const SEGMENTATION: Service = rapport_testkit::service!(rapport_segmentation);
pub const PROFILE: Service = rapport_testkit::service!(rapport_profile);
pub const INTERACTION: Service = rapport_testkit::service!(rapport_interaction);

pub async fn serve_segmentation(
    db: &TestDatabase,
    profile: Option<String>,
    interaction: Option<String>,
) -> Running {
    SEGMENTATION
        .serve(ServiceConfig {
            profile_url: profile,
            interaction_url: interaction,
            ..rapport_testkit::service_config(db)
        })
        .await
}

/// A fresh database with the segmentation schema migrated.
pub async fn migrated() -> TestDatabase {
    rapport_testkit::migrated(&[SEGMENTATION]).await
}

/// The segmentation service alone (features are inserted directly).
pub async fn start() -> Stack {
    rapport_testkit::logs();
    let db = migrated().await;
    let seg = serve_segmentation(&db, None, None).await;
    finish(db, seg, None, None).await
}

/// Profile, interaction and segmentation on one database, segmentation
/// following the other two.
pub async fn start_with_feeds() -> Stack {
    rapport_testkit::logs();
    let db = rapport_testkit::migrated(&[PROFILE, INTERACTION, SEGMENTATION]).await;
    let profile = PROFILE.serve(rapport_testkit::service_config(&db)).await;
    let interaction = INTERACTION
        .serve(ServiceConfig {
            profile_url: Some(profile.endpoint()),
            ..rapport_testkit::service_config(&db)
        })
        .await;
    let seg = serve_segmentation(&db, Some(profile.endpoint()), Some(interaction.endpoint())).await;
    finish(db, seg, Some(profile), Some(interaction)).await
}

async fn finish(
    db: TestDatabase,
    seg: Running,
    profile: Option<Running>,
    interaction: Option<Running>,
) -> Stack {
    let channel = rapport_testkit::channel(&seg).await;
    let pool = SEGMENTATION.pool(&db, 4).await;
    Stack {
        db,
        segmentation: Some(seg),
        profile,
        interaction,
        channel,
        pool,
    }
}

impl Stack {
    pub fn client(&self) -> Client {
        SegmentationServiceClient::new(self.channel.clone()).max_decoding_message_size(64 << 20)
    }

    /// Stops the segmentation service and starts it again on the same database.
    pub async fn restart_segmentation(&mut self) {
        if let Some(s) = self.segmentation.take() {
            s.stop().await;
        }
        let seg = serve_segmentation(
            &self.db,
            self.profile.as_ref().map(Running::endpoint),
            self.interaction.as_ref().map(Running::endpoint),
        )
        .await;
        self.channel = rapport_testkit::channel(&seg).await;
        self.segmentation = Some(seg);
    }

    pub async fn stop(self) {
        for r in [self.segmentation, self.interaction, self.profile]
            .into_iter()
            .flatten()
        {
            r.stop().await;
        }
    }
}

/// A projected customer, written straight into `features`.
#[derive(Debug, Clone)]
pub struct Customer {
    pub id: Uuid,
    pub country: &'static str,
    pub tags: Vec<&'static str>,
    pub purchases: i64,
    pub monetary: Option<Decimal>,
    pub last_purchase_days: Option<i64>,
    pub first_purchase_days: Option<i64>,
    pub clv: Option<Decimal>,
    pub nps: Option<i32>,
}

impl Customer {
    pub fn new(country: &'static str) -> Self {
        Self {
            id: Uuid::new_v4(),
            country,
            tags: vec![],
            purchases: 0,
            monetary: None,
            last_purchase_days: None,
            first_purchase_days: None,
            clv: None,
            nps: None,
        }
    }
    pub fn bought(
        mut self,
        purchases: i64,
        monetary: i64,
        first_days: i64,
        last_days: i64,
    ) -> Self {
        self.purchases = purchases;
        self.monetary = Some(Decimal::from(monetary));
        self.first_purchase_days = Some(first_days);
        self.last_purchase_days = Some(last_days);
        self
    }
    pub fn clv(mut self, clv: i64) -> Self {
        self.clv = Some(Decimal::from(clv));
        self
    }
}

pub fn days_ago(d: i64) -> DateTime<Utc> {
    Utc::now() - Duration::days(d)
}

/// Inserts customers with their purchases as events.
pub async fn insert(pool: &PgPool, tenant: Uuid, customers: &[Customer]) {
    sqlx::query(
        "INSERT INTO tenants (tenant_id, currency_code) VALUES ($1, 'EUR') ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .execute(pool)
    .await
    .unwrap();
    for c in customers {
        let tags: Vec<String> = c.tags.iter().map(|t| t.to_string()).collect();
        sqlx::query(
            "INSERT INTO features (tenant_id, customer_id, kind, country, tags, purchases, monetary,
                 avg_order_value, first_purchase, last_purchase, clv, nps)
             VALUES ($1, $2, 'person', $3, $4, $5, $6, CASE WHEN $5 > 0 THEN $6 / $5 END, $7, $8, $9, $10)",
        )
        .bind(tenant)
        .bind(c.id)
        .bind(c.country)
        .bind(&tags)
        .bind(c.purchases)
        .bind(c.monetary)
        .bind(c.first_purchase_days.map(days_ago))
        .bind(c.last_purchase_days.map(days_ago))
        .bind(c.clv)
        .bind(c.nps)
        .execute(pool)
        .await
        .unwrap();
        // Purchases spread between the first and the last.
        for i in 0..c.purchases {
            let (f, l) = (
                c.first_purchase_days.unwrap_or(0),
                c.last_purchase_days.unwrap_or(0),
            );
            let d = if c.purchases == 1 {
                l
            } else {
                f - (f - l) * i / (c.purchases - 1)
            };
            let amount = c.monetary.unwrap_or_default() / Decimal::from(c.purchases);
            sqlx::query(
                "INSERT INTO events (tenant_id, customer_id, interaction_id, type, occur_time, amount)
                 VALUES ($1, $2, $3, 'purchase', $4, $5)",
            )
            .bind(tenant)
            .bind(c.id)
            .bind(Uuid::new_v4())
            .bind(days_ago(d))
            .bind(amount)
            .execute(pool)
            .await
            .unwrap();
        }
    }
}

pub fn dynamic(name: &str, rule: &str) -> CreateSegmentRequest {
    CreateSegmentRequest {
        segment: Some(Segment {
            name: name.into(),
            kind: SegmentKind::Dynamic as i32,
            rule_text: rule.into(),
            marketing_approach: MarketingApproach::Differentiated as i32,
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

pub fn of_kind(name: &str, kind: SegmentKind, rule: &str) -> CreateSegmentRequest {
    CreateSegmentRequest {
        segment: Some(Segment {
            name: name.into(),
            kind: kind as i32,
            rule_text: rule.into(),
            ..Default::default()
        }),
        request_id: String::new(),
    }
}

/// The field paths of an INVALID_ARGUMENT status's BadRequest detail.
pub fn violations(status: &tonic::Status) -> Vec<(String, String)> {
    use tonic_types::StatusExt;
    status
        .get_error_details()
        .bad_request()
        .map(|b| {
            b.field_violations
                .iter()
                .map(|f| (f.field.clone(), f.description.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// The sorted member ids of a segment.
/// Creates the segment `r` asks for in `tenant`, and returns it.
pub async fn create_segment(client: &mut Client, tenant: Uuid, r: CreateSegmentRequest) -> Segment {
    client
        .create_segment(req(tenant, r))
        .await
        .expect_answer("segment created")
        .segment
        .expect("segment in response")
}

/// The segment `id` of `tenant`, as the service has it now.
pub async fn get_segment(client: &mut Client, tenant: Uuid, id: &str) -> Segment {
    client
        .get_segment(req(
            tenant,
            GetSegmentRequest {
                segment_id: id.into(),
            },
        ))
        .await
        .expect("the segment is there")
        .into_inner()
        .segment
        .expect("a segment")
}

/// A preview of the rule written as `rule`, sampling `sample_size` members.
pub fn preview_text(rule: impl Into<String>, sample_size: i32) -> PreviewSegmentRequest {
    PreviewSegmentRequest {
        rule_definition: Some(preview_segment_request::RuleDefinition::RuleText(
            rule.into(),
        )),
        sample_size,
    }
}

pub async fn members(client: &mut Client, tenant: Uuid, segment: &str) -> Vec<String> {
    use rapport_proto::rapport::segmentation::v1::ListMembersRequest;
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_members(req(
                tenant,
                ListMembersRequest {
                    segment_id: segment.into(),
                    page_size: 2,
                    page_token: token.clone(),
                },
            ))
            .await
            .answer();
        out.extend(page.members.into_iter().map(|m| m.customer_id));
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

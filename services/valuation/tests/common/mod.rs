//! A real PostgreSQL database; the interaction service (and, when asked, the
//! profile service) and the valuation service running in-process on real
//! gRPC ports; a stand-in segmentation service answering `ListMembers` from
//! a table the test fills (its change feed stays empty); synthetic purchase
//! histories; request helpers.

#![allow(dead_code)]

pub mod costs;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, Utc};
use futures::stream::BoxStream;
use prost_types::Timestamp;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rapport_kit::config::ServiceConfig;
use rapport_kit::context::TENANT_HEADER;
use rapport_proto::rapport::common::v1::{CustomerRef, Money, PeriodUnit, customer_ref};
use rapport_proto::rapport::interaction::v1::interaction_service_client::InteractionServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Interaction, InteractionType, PurchaseHistorySummary, RecordInteractionsRequest,
};
use rapport_proto::rapport::profile::v1::profile_service_client::ProfileServiceClient;
use rapport_proto::rapport::segmentation::v1 as seg;
use rapport_proto::rapport::segmentation::v1::segmentation_service_server::{
    SegmentationService, SegmentationServiceServer,
};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::{FitModelRequest, FitOptions, Model, ModelKind};
use rapport_testkit::{Running, Service, TestDatabase};
use rapport_valuation::domain::bgnbd::BgNbd;
use rapport_valuation::domain::gamma_gamma::GammaGamma;
use rapport_valuation::domain::synthetic::BgNbdGenerator;
use sqlx::PgPool;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use uuid::Uuid;

// Not every test binary uses each of these.
#[allow(unused_imports)]
pub use rapport_testkit::{eventually, for_tenant as req};

/// Segment members by (tenant, segment).
pub type Members = Arc<Mutex<HashMap<(Uuid, Uuid), Vec<Uuid>>>>;

/// The stand-in segmentation service: `ListMembers` from [`Members`] (pages
/// of 2 to exercise paging), NOT_FOUND for unknown segments.
#[derive(Clone, Default)]
pub struct FakeSegmentation {
    pub members: Members,
}

#[tonic::async_trait]
impl SegmentationService for FakeSegmentation {
    async fn list_fields(
        &self,
        _: Request<seg::ListFieldsRequest>,
    ) -> Result<Response<seg::ListFieldsResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn create_segment(
        &self,
        _: Request<seg::CreateSegmentRequest>,
    ) -> Result<Response<seg::CreateSegmentResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn get_segment(
        &self,
        _: Request<seg::GetSegmentRequest>,
    ) -> Result<Response<seg::GetSegmentResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn update_segment(
        &self,
        _: Request<seg::UpdateSegmentRequest>,
    ) -> Result<Response<seg::UpdateSegmentResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn delete_segment(
        &self,
        _: Request<seg::DeleteSegmentRequest>,
    ) -> Result<Response<seg::DeleteSegmentResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn list_segments(
        &self,
        _: Request<seg::ListSegmentsRequest>,
    ) -> Result<Response<seg::ListSegmentsResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn add_members(
        &self,
        _: Request<seg::AddMembersRequest>,
    ) -> Result<Response<seg::AddMembersResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn remove_members(
        &self,
        _: Request<seg::RemoveMembersRequest>,
    ) -> Result<Response<seg::RemoveMembersResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn preview_segment(
        &self,
        _: Request<seg::PreviewSegmentRequest>,
    ) -> Result<Response<seg::PreviewSegmentResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn list_rule_matches(
        &self,
        _: Request<seg::ListRuleMatchesRequest>,
    ) -> Result<Response<seg::ListRuleMatchesResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn refresh_segment(
        &self,
        _: Request<seg::RefreshSegmentRequest>,
    ) -> Result<Response<seg::RefreshSegmentResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn get_customer_segments(
        &self,
        _: Request<seg::GetCustomerSegmentsRequest>,
    ) -> Result<Response<seg::GetCustomerSegmentsResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn get_segment_history(
        &self,
        _: Request<seg::GetSegmentHistoryRequest>,
    ) -> Result<Response<seg::GetSegmentHistoryResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn explain_membership(
        &self,
        _: Request<seg::ExplainMembershipRequest>,
    ) -> Result<Response<seg::ExplainMembershipResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn get_rfm_report(
        &self,
        _: Request<seg::GetRfmReportRequest>,
    ) -> Result<Response<seg::GetRfmReportResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn classify_customer(
        &self,
        _: Request<seg::ClassifyCustomerRequest>,
    ) -> Result<Response<seg::ClassifyCustomerResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn get_classification_policy(
        &self,
        _: Request<seg::GetClassificationPolicyRequest>,
    ) -> Result<Response<seg::GetClassificationPolicyResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn update_classification_policy(
        &self,
        _: Request<seg::UpdateClassificationPolicyRequest>,
    ) -> Result<Response<seg::UpdateClassificationPolicyResponse>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    async fn list_members(
        &self,
        req: Request<seg::ListMembersRequest>,
    ) -> Result<Response<seg::ListMembersResponse>, Status> {
        let tenant: Uuid = req
            .metadata()
            .get(TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Status::unauthenticated("no tenant"))?;
        let r = req.into_inner();
        let segment: Uuid = r
            .segment_id
            .parse()
            .map_err(|_| Status::invalid_argument("segment_id"))?;
        let all = self
            .members
            .lock()
            .unwrap()
            .get(&(tenant, segment))
            .cloned()
            .ok_or_else(|| Status::not_found("segment not found"))?;
        let start: usize = r.page_token.parse().unwrap_or(0);
        let end = (start + 2).min(all.len());
        Ok(Response::new(seg::ListMembersResponse {
            members: all[start..end]
                .iter()
                .map(|c| seg::SegmentMember {
                    customer_id: c.to_string(),
                    enter_time: None,
                })
                .collect(),
            next_page_token: if end < all.len() {
                end.to_string()
            } else {
                String::new()
            },
        }))
    }

    type WatchMembershipStream = BoxStream<'static, Result<seg::WatchMembershipResponse, Status>>;
    async fn watch_membership(
        &self,
        _: Request<seg::WatchMembershipRequest>,
    ) -> Result<Response<Self::WatchMembershipStream>, Status> {
        Err(Status::unimplemented("not part of the stand-in"))
    }

    type WatchChangesStream = BoxStream<'static, Result<seg::WatchChangesResponse, Status>>;
    async fn watch_changes(
        &self,
        _: Request<seg::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        // A feed with nothing on it: the tests that need classifications
        // apply them to the valuation schema themselves.
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

pub struct Stack {
    pub db: TestDatabase,
    pub interaction: Running,
    pub profile: Option<Running>,
    pub valuation: Running,
    pub segmentation: Running,
    pub members: Members,
    pub interaction_channel: Channel,
    pub valuation_channel: Channel,
    /// The valuation schema, as the service sees it.
    pub pool: PgPool,
}

impl Stack {
    pub fn interactions(&self) -> InteractionServiceClient<Channel> {
        InteractionServiceClient::new(self.interaction_channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    pub fn valuation(&self) -> ValuationServiceClient<Channel> {
        ValuationServiceClient::new(self.valuation_channel.clone())
            .max_decoding_message_size(64 << 20)
    }

    pub async fn profile_client(&self) -> ProfileServiceClient<Channel> {
        ProfileServiceClient::new(
            rapport_testkit::channel(self.profile.as_ref().expect("a profile service")).await,
        )
    }

    pub fn set_members(&self, tenant: Uuid, segment: Uuid, members: Vec<Uuid>) {
        self.members
            .lock()
            .unwrap()
            .insert((tenant, segment), members);
    }

    pub async fn count(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

/// Fits over large synthetic bases take longer than the default deadline.
fn config(db: &TestDatabase) -> ServiceConfig {
    ServiceConfig {
        request_timeout_ms: 120_000,
        ..rapport_testkit::service_config(db)
    }
}

const PROFILE: Service = rapport_testkit::service!(rapport_profile);
const INTERACTION: Service = rapport_testkit::service!(rapport_interaction);
const VALUATION: Service = rapport_testkit::service!(rapport_valuation);

/// Interaction (with profile when asked), valuation and the stand-in
/// segmentation service on one database.
pub async fn start(with_profile: bool) -> Stack {
    rapport_testkit::logs();
    let services: &[Service] = if with_profile {
        &[PROFILE, INTERACTION, VALUATION]
    } else {
        &[INTERACTION, VALUATION]
    };
    let db = rapport_testkit::migrated(services).await;
    let profile = if with_profile {
        Some(PROFILE.serve(config(&db)).await)
    } else {
        None
    };
    let interaction = INTERACTION
        .serve(ServiceConfig {
            profile_url: profile.as_ref().map(|p| p.endpoint()),
            ..config(&db)
        })
        .await;
    let members = Members::default();
    let fake = FakeSegmentation {
        members: members.clone(),
    };
    let segmentation = rapport_testkit::serve(move |listener, shutdown| async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let _ = tonic::transport::Server::builder()
            .add_service(SegmentationServiceServer::new(fake))
            .serve_with_incoming_shutdown(incoming, async move { shutdown.wait().await })
            .await;
    })
    .await;
    let valuation = VALUATION
        .serve(ServiceConfig {
            interaction_url: Some(interaction.endpoint()),
            profile_url: profile.as_ref().map(|p| p.endpoint()),
            segmentation_url: Some(segmentation.endpoint()),
            ..config(&db)
        })
        .await;
    let interaction_channel = rapport_testkit::channel(&interaction).await;
    let valuation_channel = rapport_testkit::channel(&valuation).await;
    let pool = VALUATION.pool(&db, 4).await;
    Stack {
        db,
        interaction,
        profile,
        valuation,
        segmentation,
        members,
        interaction_channel,
        valuation_channel,
        pool,
    }
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

pub fn amount(m: &Option<Money>) -> f64 {
    m.as_ref()
        .map_or(f64::NAN, |m| m.units as f64 + f64::from(m.nanos) / 1e9)
}

pub fn by_id(id: Uuid) -> Option<CustomerRef> {
    Some(CustomerRef {
        r#ref: Some(customer_ref::Ref::CustomerId(id.to_string())),
    })
}

/// A purchase of `cents` EUR cents by `customer` at `t`.
pub fn purchase(customer: Uuid, t: DateTime<Utc>, cents: i64) -> Interaction {
    Interaction {
        customer: by_id(customer),
        r#type: InteractionType::Purchase as i32,
        occur_time: Some(ts(t)),
        amount: Some(money(
            "EUR",
            cents / 100,
            ((cents % 100) * 10_000_000) as i32,
        )),
        ..Default::default()
    }
}

/// The parameters synthetic histories are drawn with (weeks).
pub const TRUTH: BgNbd = BgNbd {
    r: 0.25,
    alpha: 4.0,
    a: 0.8,
    b: 2.5,
};
pub const SPEND_TRUTH: GammaGamma = GammaGamma {
    p: 6.0,
    q: 4.0,
    gamma: 15.0,
};

/// One synthetic customer's purchases.
pub struct Synthetic {
    pub customer: Uuid,
    pub purchases: Vec<Interaction>,
    pub first: DateTime<Utc>,
}

/// `n` customers drawn from the BG/NBD process (weeks, day resolution),
/// acquired over the 52 weeks before `end` (midnight UTC), with Gamma-Gamma
/// spend: repeat purchases on distinct days, the last at the recency.
pub fn synthetic(n: usize, seed: u64, end: DateTime<Utc>) -> Vec<Synthetic> {
    let g = BgNbdGenerator::new(TRUTH, Some(SPEND_TRUTH), 1.0 / 7.0).unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let age_weeks = 1.0 + (i % 52) as f64;
            let c = g.draw(&mut rng, age_weeks);
            let age_days = (c.observation.age * 7.0).round() as i64;
            let first = end - Duration::days(age_days) + Duration::hours(1);
            let customer = Uuid::new_v4();
            let x = c.observation.frequency as i64;
            let tx_days = (c.observation.recency * 7.0).round() as i64;
            let mut days: Vec<i64> = (1..=x)
                .map(|k| (tx_days * k / x.max(1)).max(k.min(tx_days)))
                .collect();
            days.dedup();
            let spend = c.mean_spend.unwrap_or(20.0);
            let cents = ((spend * 100.0).round() as i64).max(1);
            let mut purchases = vec![purchase(customer, first, 2000)];
            purchases.extend(
                days.iter()
                    .filter(|&&d| d > 0 && d < age_days)
                    .map(|&d| purchase(customer, first + Duration::days(d), cents)),
            );
            Synthetic {
                customer,
                purchases,
                first,
            }
        })
        .collect()
}

/// A model's estimate of parameter `name`.
pub fn param(m: &Model, name: &str) -> f64 {
    m.parameters.iter().find(|p| p.name == name).unwrap().value
}

/// A BG/NBD fit of the CDNOW calibration period, checked against the
/// published estimates (Fader, Hardie & Lee 2005: r 0.243, α 4.414, a
/// 0.793, b 2.426, log-likelihood −9582.4) over its 2,357 customers.
pub fn assert_published_cdnow_bg_nbd(bg: &Model) {
    assert_eq!(bg.customer_count, 2357);
    for (name, published) in [("r", 0.243), ("alpha", 4.414), ("a", 0.793), ("b", 2.426)] {
        let got = param(bg, name);
        assert!((got - published).abs() / published < 0.002, "{name}: {got}");
    }
    assert!(
        (bg.log_likelihood - -9582.4).abs() < 0.05,
        "{}",
        bg.log_likelihood
    );
}

/// The CDNOW sample's purchases (fixtures/PROVENANCE.md) in EUR, at
/// midnight UTC of their day, those before `before` when given. Customer
/// `n` of the sample has the id `0c0d…n`.
pub fn cdnow_purchases(before: Option<chrono::NaiveDate>) -> Vec<Interaction> {
    include_str!("../fixtures/cdnow_sample.txt")
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let customer = cdnow_customer(f[1].parse().unwrap());
            let day = chrono::NaiveDate::parse_from_str(f[2], "%Y%m%d").unwrap();
            let dollars: f64 = f[4].parse().unwrap();
            let at = day.and_hms_opt(0, 0, 0).unwrap().and_utc();
            before
                .is_none_or(|b| day < b)
                .then(|| purchase(customer, at, (dollars * 100.0).round() as i64))
        })
        .collect()
}

/// The id of customer `n` of the CDNOW sample.
pub fn cdnow_customer(n: u128) -> Uuid {
    Uuid::from_u128(0x0c0d_0000_0000_0000 + n)
}

/// Records interactions for `tenant` through `RecordInteractions`, 1,000 a message.
pub async fn record_all(s: &Stack, tenant: Uuid, interactions: Vec<Interaction>) {
    let n = interactions.len() as i64;
    let messages: Vec<RecordInteractionsRequest> = interactions
        .chunks(1000)
        .map(|c| RecordInteractionsRequest {
            interactions: c.to_vec(),
        })
        .collect();
    let r = s
        .interactions()
        .record_interactions(req(tenant, futures::stream::iter(messages)))
        .await
        .answer();
    assert_eq!(r.accepted_count, n, "{:?}", r.rejections.first());
}

/// The field paths of an INVALID_ARGUMENT status's BadRequest detail.
#[allow(unused_imports)]
pub use rapport_testkit::hostile::violations as violated_fields;
// Not every test binary calls a service.
#[allow(unused_imports)]
pub use rapport_testkit::{Answer, Refused};

/// The CDNOW sample (fixtures/PROVENANCE.md) as inline summaries in weeks,
/// its amounts in `currency`.
pub fn cdnow_inline(currency: &str) -> Vec<PurchaseHistorySummary> {
    include_str!("../fixtures/cdnow_summary_with_spend.csv")
        .lines()
        .skip(1)
        .map(|line| {
            let f: Vec<f64> = line.split(',').map(|v| v.parse().unwrap()).collect();
            PurchaseHistorySummary {
                customer_id: Uuid::new_v4().to_string(),
                frequency: f[1] as i64,
                recency: f[2],
                t: f[3],
                monetary_value: f[4],
                currency_code: currency.into(),
                ..Default::default()
            }
        })
        .collect()
}

/// A fit of `kind` in weeks, calibrated up to `calibration`, activated on
/// success.
pub fn weekly_fit(kind: ModelKind, calibration: Timestamp) -> FitModelRequest {
    FitModelRequest {
        kind: kind as i32,
        calibration_end_time: Some(calibration),
        period_unit: PeriodUnit::Week as i32,
        options: Some(FitOptions {
            activate_on_success: true,
            max_iterations: 0,
        }),
        ..Default::default()
    }
}

/// BG/NBD and Gamma-Gamma fitted on the CDNOW sample (inline, weeks, EUR)
/// and activated in `tenant`: models to score a few recorded customers with.
pub async fn cdnow_models(v: &mut ValuationServiceClient<Channel>, tenant: Uuid) {
    for kind in [ModelKind::BgNbd, ModelKind::GammaGamma] {
        let m = fitted(
            v,
            tenant,
            FitModelRequest {
                inline_summaries: cdnow_inline("EUR"),
                ..weekly_fit(kind, ts(Utc::now()))
            },
        )
        .await;
        assert!(m.active, "{m:?}");
    }
}

/// Fits the model `r` asks for in `tenant`, and returns it.
pub async fn fitted(
    v: &mut ValuationServiceClient<Channel>,
    tenant: Uuid,
    r: FitModelRequest,
) -> Model {
    v.fit_model(req(tenant, r))
        .await
        .expect("a fit")
        .into_inner()
        .model
        .expect("a model")
}

/// A purchase-history summary of a new customer: `x` repeat purchases, the
/// last at `tx`, observed for `t` weeks, `m` EUR on average.
pub fn summary(x: i64, tx: f64, t: f64, m: f64) -> PurchaseHistorySummary {
    PurchaseHistorySummary {
        customer_id: Uuid::new_v4().to_string(),
        frequency: x,
        recency: tx,
        t,
        monetary_value: m,
        currency_code: "EUR".into(),
        ..Default::default()
    }
}

/// A fit of `kind` in weeks over `summaries`, calibrated up to now.
pub fn inline_fit(kind: ModelKind, summaries: Vec<PurchaseHistorySummary>) -> FitModelRequest {
    FitModelRequest {
        kind: kind as i32,
        calibration_end_time: Some(ts(Utc::now())),
        period_unit: PeriodUnit::Week as i32,
        inline_summaries: summaries,
        ..Default::default()
    }
}

/// 40 plausible summaries, in weeks.
pub fn data() -> Vec<PurchaseHistorySummary> {
    (0..40)
        .map(|i| {
            let x = i % 5;
            let t = 10.0 + f64::from(i as i32);
            summary(
                x,
                if x == 0 { 0.0 } else { t / 2.0 },
                t,
                if x == 0 { 0.0 } else { 10.0 + i as f64 },
            )
        })
        .collect()
}

//! Cost to serve and profitability over real PostgreSQL and gRPC, on a
//! small tenant whose every figure is computed by hand below: interactions
//! recorded through the interaction service reach valuation on its feed,
//! two cost model versions price them by when they happened, and the
//! report's totals, cost lines, whale curve, deciles, breakdowns and value
//! destroyers are checked to the cent. Then an interaction that arrives
//! late, a resolution, a merge and an erasure through the feeds, net CLV
//! after a scoring run, the cost model's history and etags, and tenant
//! isolation.
//!
//! The tenant, with day 0 = `base` (200 days before today, midnight UTC)
//! and the report window [day 0, day 181):
//!
//! | customer | what happens                                                   |
//! |----------|----------------------------------------------------------------|
//! | A        | buys 1,000.00 (margin 400.00) on day 9 and 500.00 (no margin) on day 129; calls on days 31 and 120; two campaign e-mails on days 32 and 121 |
//! | B        | field sales visit on day 0; buys 2,000.00 (margin 300.00) on day 45; returns 200.00 on day 68; complaint opened day 120, still open; service request opened day 180 14:00, still open; store sales visit on day 151 |
//! | C        | buys 100.00 (no margin) on day 59                              |
//! | D        | bought 50.00 on day −31 (before the window); e-mail on day 165 |
//! | E        | buys USD 100.00 on day 31 (another currency)                   |
//!
//! Cost model v1 (effective day 0, and before it as the first version):
//! call 5.00 on any channel, field sales visit 120.00, sales visit elsewhere
//! 80.00, campaign message by e-mail 0.10, service request 20.00 + 2.00 an
//! hour, complaint 30.00 + 1.50 an hour, return handling 7.50, fixed 12.00
//! per 30 days, default margin 25 %. v2 (effective day 90): the same with
//! calls at 6.00 and no fixed cost.
//!
//! By hand (EUR):
//! - A: revenue 1,500; margin 400 + 500 × 25 % = 525; contacts 5 + 6 = 11;
//!   campaigns 0.20; fixed 12 × 81/30 = 32.40 (day 9 to day 90); cost
//!   43.60; net 481.40.
//! - B: revenue 2,000; refunds 200; margin 300 − 200 × 25 % = 250; contacts
//!   120 + 80 = 200; service request 20 + 10 h × 2 = 40; complaint 30 +
//!   1,464 h × 1.50 = 2,226; return 7.50; fixed 12 × 90/30 = 36; cost
//!   2,509.50; net −2,259.50.
//! - C: revenue 100; margin 25; fixed 12 × 31/30 = 12.40; net 12.60.
//! - D: one contact at no price; fixed 36 (day 0 to day 90); net −36.
//! - E: the USD purchase is left out; fixed 12 × 59/30 = 23.60; net −23.60.
//! - Ranked: A 481.40, C 12.60, E −23.60, D −36, B −2,259.50; total
//!   −1,825.10; the whale curve peaks after two customers at 494.00.

mod common;

use std::str::FromStr;

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use common::costs::*;
use common::*;
use rapport_proto::rapport::common::v1::{LadderRung, Money, RelationshipStage};
use rapport_proto::rapport::interaction::v1::campaign_service_client::CampaignServiceClient;
use rapport_proto::rapport::interaction::v1::{
    Campaign, Channel, CreateCampaignRequest, Interaction, InteractionType, ServiceRequestStatus,
    UpdateServiceRequestRequest,
};
use rapport_proto::rapport::profile::v1::{
    CreateCustomerRequest, Customer, CustomerKind, EraseCustomerRequest, MergeCustomersRequest,
};
use rapport_proto::rapport::segmentation::v1::{CustomerClass, CustomersClassified};
use rapport_proto::rapport::segmentation::v1::{SegmentationEvent, segmentation_event};
use rapport_proto::rapport::valuation::v1::valuation_service_client::ValuationServiceClient;
use rapport_proto::rapport::valuation::v1::*;
use rapport_valuation::follow::ClassificationFollower;
use rust_decimal::Decimal;
use tonic::Code;
use tonic::transport::Channel as GrpcChannel;
use uuid::Uuid;

fn dec(m: &Option<Money>) -> Decimal {
    let m = m.as_ref().expect("an amount");
    Decimal::from(m.units) + Decimal::new(i64::from(m.nanos), 9)
}

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

#[derive(Clone)]
struct Tenant {
    id: Uuid,
    base: DateTime<Utc>,
    a: Uuid,
    b: Uuid,
    c: Uuid,
    d: Uuid,
    e: Uuid,
    campaign: String,
}

impl Tenant {
    fn day(&self, n: i64) -> DateTime<Utc> {
        self.base + Duration::days(n)
    }

    fn window(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.day(0), self.day(181))
    }
}

fn interaction(
    customer: Uuid,
    kind: InteractionType,
    channel: Channel,
    at: DateTime<Utc>,
) -> Interaction {
    Interaction {
        customer: by_id(customer),
        r#type: kind as i32,
        channel: channel as i32,
        occur_time: Some(ts(at)),
        ..Default::default()
    }
}

fn bought(customer: Uuid, at: DateTime<Utc>, amount: Money, margin: Option<Money>) -> Interaction {
    Interaction {
        amount: Some(amount),
        margin,
        ..interaction(customer, InteractionType::Purchase, Channel::Web, at)
    }
}

async fn profile_customer(s: &Stack, tenant: Uuid, name: &str) -> Uuid {
    let c = s
        .profile_client()
        .await
        .create_customer(req(
            tenant,
            CreateCustomerRequest {
                customer: Some(Customer {
                    kind: CustomerKind::Person as i32,
                    display_name: name.into(),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .answer()
        .customer
        .unwrap();
    c.customer_id.parse().unwrap()
}

/// Records the tenant of the module's table.
async fn tenant(s: &Stack) -> Tenant {
    let id = Uuid::new_v4();
    let today = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap();
    let base = Utc.from_utc_datetime(&today) - Duration::days(200);
    let campaign = CampaignServiceClient::new(s.interaction_channel.clone())
        .create_campaign(req(
            id,
            CreateCampaignRequest {
                campaign: Some(Campaign {
                    name: "Newsletter".into(),
                    channel: Channel::Email as i32,
                    start_time: Some(ts(base)),
                    ..Default::default()
                }),
                request_id: String::new(),
            },
        ))
        .await
        .answer()
        .campaign
        .unwrap()
        .campaign_id;
    let t = Tenant {
        id,
        base,
        a: profile_customer(s, id, "A").await,
        b: profile_customer(s, id, "B").await,
        c: profile_customer(s, id, "C").await,
        d: profile_customer(s, id, "D").await,
        e: profile_customer(s, id, "E").await,
        campaign,
    };
    use InteractionType as T;
    let sent = |at: DateTime<Utc>| Interaction {
        campaign_id: t.campaign.clone(),
        ..interaction(t.a, T::CampaignSent, Channel::Email, at)
    };
    let mut open_request = interaction(t.b, T::ServiceRequest, Channel::Phone, t.day(180));
    open_request.occur_time = Some(ts(t.day(180) + Duration::hours(14)));
    record_all(
        s,
        id,
        vec![
            bought(t.a, t.day(9), eur(1000, 0), Some(eur(400, 0))),
            bought(t.a, t.day(129), eur(500, 0), None),
            interaction(t.a, T::Call, Channel::Phone, t.day(31)),
            interaction(t.a, T::Call, Channel::Phone, t.day(120)),
            sent(t.day(32)),
            sent(t.day(121)),
            interaction(t.b, T::SalesVisit, Channel::Field, t.day(0)),
            bought(t.b, t.day(45), eur(2000, 0), Some(eur(300, 0))),
            Interaction {
                amount: Some(eur(200, 0)),
                ..interaction(t.b, T::Return, Channel::Store, t.day(68))
            },
            interaction(t.b, T::Complaint, Channel::Phone, t.day(120)),
            open_request,
            interaction(t.b, T::SalesVisit, Channel::Store, t.day(151)),
            bought(t.c, t.day(59), eur(100, 0), None),
            bought(t.d, t.day(-31), eur(50, 0), None),
            interaction(t.d, T::Email, Channel::Email, t.day(165)),
            bought(t.e, t.day(31), money("USD", 100, 0), None),
        ],
    )
    .await;
    t
}

async fn customer(
    v: &mut ValuationServiceClient<GrpcChannel>,
    t: &Tenant,
    who: Uuid,
    window: (DateTime<Utc>, DateTime<Utc>),
) -> CustomerProfitability {
    v.get_customer_profitability(req(
        t.id,
        GetCustomerProfitabilityRequest {
            customer_id: who.to_string(),
            start_time: Some(ts(window.0)),
            end_time: Some(ts(window.1)),
        },
    ))
    .await
    .answer()
    .profitability
    .unwrap()
}

async fn report(
    v: &mut ValuationServiceClient<GrpcChannel>,
    t: &Tenant,
    segments: Vec<String>,
) -> ProfitabilityReport {
    let (start, end) = t.window();
    v.get_profitability_report(req(
        t.id,
        GetProfitabilityReportRequest {
            start_time: Some(ts(start)),
            end_time: Some(ts(end)),
            curve_intervals: 10,
            destroyer_count: 2,
            segment_ids: segments,
            max_staleness: None,
        },
    ))
    .await
    .answer()
    .report
    .unwrap()
}

fn line(p: &[CostLine], c: CostComponent) -> (i64, f64, Decimal) {
    let l = p
        .iter()
        .find(|l| l.component == c as i32)
        .expect("every component");
    (l.count, l.hours, dec(&l.cost))
}

/// Waits until valuation has applied the tenant's interactions: B's two
/// open requests (recorded last but one) are priced.
async fn applied(v: &ValuationServiceClient<GrpcChannel>, t: &Tenant, net_b: &str) {
    let want = d(net_b);
    eventually("the interactions to reach valuation", || {
        let mut v = v.clone();
        async move {
            let (start, end) = t.window();
            let r = v
                .get_customer_profitability(req(
                    t.id,
                    GetCustomerProfitabilityRequest {
                        customer_id: t.b.to_string(),
                        start_time: Some(ts(start)),
                        end_time: Some(ts(end)),
                    },
                ))
                .await;
            r.is_ok_and(|r| {
                let p = r.into_inner().profitability.unwrap();
                dec(&p.net_profit) == want
            })
        }
    })
    .await;
}

/// Erases `who` through the profile service.
async fn erase(s: &Stack, t: &Tenant, who: Uuid) {
    s.profile_client()
        .await
        .erase_customer(req(
            t.id,
            EraseCustomerRequest {
                customer_id: who.to_string(),
                request_reference: String::new(),
            },
        ))
        .await
        .answer();
}

async fn classify(s: &Stack, tenant: Uuid, classes: &[(Uuid, LadderRung, RelationshipStage)]) {
    let event = SegmentationEvent {
        event: Some(segmentation_event::Event::CustomersClassified(
            CustomersClassified {
                classes: classes
                    .iter()
                    .map(|(c, r, st)| CustomerClass {
                        customer_id: c.to_string(),
                        ladder_rung: *r as i32,
                        stage: *st as i32,
                    })
                    .collect(),
                classify_time: Some(ts(Utc::now())),
            },
        )),
    };
    let e = rapport_kit::feed::NewEvent::new(
        tenant,
        "classification",
        tenant.to_string(),
        "CustomersClassified",
        &event,
    );
    let change = rapport_proto::rapport::common::v1::ChangeEvent {
        sequence: 1,
        tenant_id: tenant.to_string(),
        aggregate_type: e.aggregate_type.into(),
        aggregate_id: e.aggregate_id.clone(),
        event_type: e.event_type.into(),
        event: Some(e.event),
        ..Default::default()
    };
    let mut tx = s.pool.begin().await.unwrap();
    ClassificationFollower
        .apply_batch(&mut tx, tenant, &[change])
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_is_priced_to_the_cent() {
    let s = start(true).await;
    let mut v = s.valuation();
    let t = tenant(&s).await;

    // Nothing is priced before the tenant has a cost model.
    v.get_profitability_report(req(t.id, GetProfitabilityReportRequest::default()))
        .await
        .refused(Code::FailedPrecondition);
    let v1 = set(&mut v, t.id, model_v1(t.day(0)), "").await;
    assert_eq!((v1.version, v1.etag.as_str()), (1, "cost-model-v1"));
    let v2 = set(&mut v, t.id, model_v2(t.day(90)), &v1.etag).await;
    assert_eq!(v2.version, 2);
    applied(&v, &t, "-2259.50").await;
    classify(
        &s,
        t.id,
        &[
            (t.a, LadderRung::Partner, RelationshipStage::Commitment),
            (t.b, LadderRung::Friend, RelationshipStage::Dissolution),
        ],
    )
    .await;

    // Each customer, component by component.
    let a = customer(&mut v, &t, t.a, t.window()).await;
    assert_eq!(a.purchases, 2);
    assert_eq!(dec(&a.revenue), d("1500"));
    assert_eq!(dec(&a.gross_margin), d("525"));
    assert_eq!(line(&a.costs, CostComponent::Contacts), (2, 0.0, d("11")));
    assert_eq!(line(&a.costs, CostComponent::Campaigns), (2, 0.0, d("0.2")));
    assert_eq!(line(&a.costs, CostComponent::Fixed), (1, 0.0, d("32.4")));
    assert_eq!(dec(&a.cost_to_serve), d("43.6"));
    assert_eq!(dec(&a.net_profit), d("481.4"));
    assert_eq!(a.costs.len(), 6);

    let b = customer(&mut v, &t, t.b, t.window()).await;
    assert_eq!((b.returns, dec(&b.refunds)), (1, d("200")));
    assert_eq!(dec(&b.gross_margin), d("250"));
    assert_eq!(line(&b.costs, CostComponent::Contacts), (2, 0.0, d("200")));
    assert_eq!(
        line(&b.costs, CostComponent::ServiceRequests),
        (1, 10.0, d("40"))
    );
    assert_eq!(
        line(&b.costs, CostComponent::Complaints),
        (1, 1464.0, d("2226"))
    );
    assert_eq!(line(&b.costs, CostComponent::Returns), (1, 0.0, d("7.5")));
    assert_eq!(line(&b.costs, CostComponent::Fixed), (1, 0.0, d("36")));
    assert_eq!(dec(&b.cost_to_serve), d("2509.5"));

    let dd = customer(&mut v, &t, t.d, t.window()).await;
    assert_eq!(line(&dd.costs, CostComponent::Contacts), (1, 0.0, d("0")));
    assert_eq!(dec(&dd.net_profit), d("-36"));
    let e = customer(&mut v, &t, t.e, t.window()).await;
    assert_eq!((e.purchases, dec(&e.revenue)), (0, d("0")));
    assert_eq!(dec(&e.net_profit), d("-23.6"));
    // A customer with nothing recorded has zero figures.
    let nobody = customer(&mut v, &t, Uuid::new_v4(), t.window()).await;
    assert_eq!(dec(&nobody.net_profit), Decimal::ZERO);

    // The report.
    let segment = Uuid::new_v4();
    s.set_members(t.id, segment, vec![t.a, t.b, Uuid::new_v4()]);
    let r = report(&mut v, &t, vec![segment.to_string()]).await;
    assert_eq!(r.currency_code, "EUR");
    assert_eq!(r.customer_count, 5);
    assert_eq!(r.other_currency_interactions, 1);
    assert_eq!(r.unprofitable_customers, 3);
    let total = r.total.clone().unwrap();
    assert_eq!(dec(&total.revenue), d("3600"));
    assert_eq!(dec(&total.gross_margin), d("800"));
    assert_eq!(dec(&total.cost_to_serve), d("2625.1"));
    assert_eq!(dec(&total.net_profit), d("-1825.1"));
    assert_eq!(line(&r.costs, CostComponent::Contacts), (5, 0.0, d("211")));
    assert_eq!(line(&r.costs, CostComponent::Fixed), (5, 0.0, d("140.4")));
    let curve: Vec<(i64, Decimal)> = r
        .whale_curve
        .iter()
        .map(|p| (p.customers, dec(&p.cumulative_net_profit)))
        .collect();
    let want: Vec<(i64, Decimal)> = [
        (0, "0"),
        (1, "481.4"),
        (1, "481.4"),
        (2, "494"),
        (2, "494"),
        (3, "470.4"),
        (3, "470.4"),
        (4, "434.4"),
        (4, "434.4"),
        (5, "-1825.1"),
        (5, "-1825.1"),
    ]
    .iter()
    .map(|(n, x)| (*n, d(x)))
    .collect();
    assert_eq!(curve, want);
    let peak = r.peak.clone().unwrap();
    assert_eq!(
        (peak.customers, dec(&peak.cumulative_net_profit)),
        (2, d("494"))
    );
    assert!((peak.customer_share - 0.4).abs() < 1e-12);
    // The total is negative: no share of it is quoted.
    assert_eq!(peak.profit_share, 0.0);
    let deciles: Vec<(String, i64)> = r
        .deciles
        .iter()
        .map(|g| (g.key.clone(), g.customers))
        .collect();
    assert_eq!(deciles.len(), 10);
    assert_eq!(
        deciles
            .iter()
            .filter(|g| g.1 == 1)
            .map(|g| g.0.as_str())
            .collect::<Vec<_>>(),
        vec!["1", "3", "5", "7", "9"]
    );
    assert_eq!(dec(&r.deciles[8].net_profit), d("-2259.5"));
    let destroyers: Vec<String> = r
        .value_destroyers
        .iter()
        .map(|c| c.customer_id.clone())
        .collect();
    assert_eq!(destroyers, vec![t.b.to_string(), t.d.to_string()]);
    let groups = |dim: ProfitDimension| -> Vec<(String, i64, Decimal)> {
        r.breakdowns
            .iter()
            .find(|b| b.dimension == dim as i32)
            .expect("the dimension")
            .groups
            .iter()
            .map(|g| (g.key.clone(), g.customers, dec(&g.net_profit)))
            .collect()
    };
    assert_eq!(
        groups(ProfitDimension::LadderRung),
        vec![
            ("friend".into(), 1, d("-2259.5")),
            ("partner".into(), 1, d("481.4")),
            ("unclassified".into(), 3, d("-47"))
        ]
    );
    assert_eq!(
        groups(ProfitDimension::Stage),
        vec![
            ("commitment".into(), 1, d("481.4")),
            ("dissolution".into(), 1, d("-2259.5")),
            ("unclassified".into(), 3, d("-47"))
        ]
    );
    assert_eq!(
        groups(ProfitDimension::ValueTier),
        vec![("unscored".into(), 5, d("-1825.1"))]
    );
    let month = |n: i64| {
        let x = t.day(n);
        format!("{:04}-{:02}", x.year(), x.month())
    };
    let mut cohorts: Vec<(String, Decimal)> = vec![
        (month(9), d("481.4")),
        (month(45), d("-2259.5")),
        (month(59), d("12.6")),
        (month(-31), d("-36")),
        (month(31), d("-23.6")),
    ];
    cohorts.sort();
    let mut merged: Vec<(String, Decimal)> = Vec::new();
    for (k, x) in cohorts {
        match merged.last_mut() {
            Some(last) if last.0 == k => last.1 += x,
            _ => merged.push((k, x)),
        }
    }
    let got: Vec<(String, Decimal)> = groups(ProfitDimension::AcquisitionCohort)
        .into_iter()
        .map(|g| (g.0, g.2))
        .collect();
    assert_eq!(got, merged);
    assert_eq!(
        groups(ProfitDimension::Segment),
        vec![(segment.to_string(), 2, d("-1778.1"))]
    );
    // A segment the segmentation service does not know.
    v.get_profitability_report(req(
        t.id,
        GetProfitabilityReportRequest {
            segment_ids: vec![Uuid::new_v4().to_string()],
            ..Default::default()
        },
    ))
    .await
    .refused(Code::NotFound);

    // Another tenant sees none of it.
    let other = Uuid::new_v4();
    v.get_profitability_report(req(other, GetProfitabilityReportRequest::default()))
        .await
        .refused(Code::FailedPrecondition);
    set(&mut v, other, model_v1(t.day(0)), "").await;
    let empty = v
        .get_profitability_report(req(other, GetProfitabilityReportRequest::default()))
        .await
        .answer()
        .report
        .unwrap();
    assert_eq!(empty.customer_count, 0);
    let theirs = v
        .get_customer_profitability(req(
            other,
            GetCustomerProfitabilityRequest {
                customer_id: t.a.to_string(),
                start_time: Some(ts(t.day(0))),
                end_time: Some(ts(t.day(181))),
            },
        ))
        .await
        .answer()
        .profitability
        .unwrap();
    assert_eq!(dec(&theirs.revenue), Decimal::ZERO);

    // A call of C's on day 31 arrives late: priced at v1's 5.00 (in effect
    // then), not v2's 6.00; C's fixed cost now runs from day 31, its first
    // interaction: 12 × 59/30 = 23.60, so C nets 25 − 5 − 23.60 = −3.60.
    record_all(
        &s,
        t.id,
        vec![interaction(
            t.c,
            InteractionType::Call,
            Channel::Phone,
            t.day(31),
        )],
    )
    .await;
    eventually("the late call to be priced", || {
        let mut v = v.clone();
        let t = &t;
        async move {
            let c = customer(&mut v, t, t.c, t.window()).await;
            line(&c.costs, CostComponent::Contacts) == (1, 0.0, d("5"))
                && dec(&c.net_profit) == d("-3.6")
        }
    })
    .await;

    // Resolving B's service request stops its clock: over a window to
    // tomorrow it counts the hours to the resolution.
    let requests = s
        .interactions()
        .list_interactions(req(
            t.id,
            rapport_proto::rapport::interaction::v1::ListInteractionsRequest {
                customer_id: t.b.to_string(),
                types: vec![InteractionType::ServiceRequest as i32],
                ..Default::default()
            },
        ))
        .await
        .answer()
        .interactions;
    assert_eq!(requests.len(), 1);
    let mut resolved = None;
    for status in [
        ServiceRequestStatus::InProgress,
        ServiceRequestStatus::Resolved,
    ] {
        resolved = s
            .interactions()
            .update_service_request(req(
                t.id,
                UpdateServiceRequestRequest {
                    interaction_id: requests[0].interaction_id.clone(),
                    status: status as i32,
                    ..Default::default()
                },
            ))
            .await
            .answer()
            .interaction;
    }
    let resolved = resolved.unwrap();
    let resolve_time =
        rapport_kit::convert::from_timestamp(resolved.resolve_time.as_ref().unwrap()).unwrap();
    let opened = t.day(180) + Duration::hours(14);
    let micros = (resolve_time - opened).num_microseconds().unwrap();
    let hours = Decimal::from(micros) / Decimal::from(3_600_000_000i64);
    let want_cost = (d("20") + d("2") * hours).round_dp(9);
    let later = (t.day(180), Utc::now() + Duration::days(1));
    eventually("the resolution to reach valuation", || {
        let mut v = v.clone();
        let t = &t;
        async move {
            let b = customer(&mut v, t, t.b, later).await;
            let (n, h, cost) = line(&b.costs, CostComponent::ServiceRequests);
            n == 1 && (cost - want_cost).abs() <= Decimal::new(1, 9) && h < 24.0 * 30.0
        }
    })
    .await;

    // A merge moves C's purchase and call to A; C leaves the report.
    s.profile_client()
        .await
        .merge_customers(req(
            t.id,
            MergeCustomersRequest {
                survivor_customer_id: t.a.to_string(),
                merged_customer_id: t.c.to_string(),
                survivor_etag: String::new(),
                request_id: String::new(),
            },
        ))
        .await
        .answer();
    eventually("the merge to reach valuation", || {
        let mut v = v.clone();
        let t = &t;
        async move {
            let a = customer(&mut v, t, t.a, t.window()).await;
            let r = report(&mut v, t, Vec::new()).await;
            // A gains 25 of margin and a 5.00 call; its fixed cost starts
            // as before on day 9.
            dec(&a.net_profit) == d("501.4") && r.customer_count == 4
        }
    })
    .await;

    // Erasing D removes everything about it.
    erase(&s, &t, t.d).await;
    eventually("the erasure to reach valuation", || {
        let mut v = v.clone();
        let t = &t;
        async move { report(&mut v, t, Vec::new()).await.customer_count == 3 }
    })
    .await;
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM activities WHERE tenant_id = $1 AND customer_id = $2)
              + (SELECT count(*) FROM customers WHERE tenant_id = $1 AND customer_id = $2)",
    )
    .bind(t.id)
    .bind(t.d)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoring_nets_clv_of_the_cost_to_serve() {
    let s = start(true).await;
    let mut v = s.valuation();
    let t = tenant(&s).await;
    set(&mut v, t.id, model_v1(t.day(0)), "").await;
    let v1 = v
        .get_cost_model(req(t.id, GetCostModelRequest::default()))
        .await
        .answer()
        .cost_model
        .unwrap();
    set(&mut v, t.id, model_v2(t.day(90)), &v1.etag).await;
    applied(&v, &t, "-2259.50").await;
    classify(
        &s,
        t.id,
        &[(t.a, LadderRung::Partner, RelationshipStage::Commitment)],
    )
    .await;
    cdnow_models(&mut v, t.id).await;
    let run = v
        .score_customers(req(t.id, ScoreCustomersRequest::default()))
        .await
        .answer();
    let a = v
        .get_customer_value(req(
            t.id,
            GetCustomerValueRequest {
                customer_id: t.a.to_string(),
                ..Default::default()
            },
        ))
        .await
        .answer()
        .value
        .unwrap();
    // Over the 365 days before scoring A cost 43.60 over 2 purchase days;
    // it is the only partner, so its rung's rate is 21.80 a purchase and
    // c = (43.60 + 2 × 21.80) / (2 + 2) = 21.80.
    assert_eq!(dec(&a.cost_to_serve), d("43.6"));
    assert_eq!(dec(&a.net_profit), d("481.4"));
    assert_eq!(dec(&a.cost_per_purchase), d("21.8"));
    assert_eq!(a.profit_decile, 1);
    // net CLV = CLV − D · c, with D = CLV / (margin ratio × E[V]).
    let clv = dec(&a.clv);
    let eov = dec(&a.expected_average_order_value);
    let ratio = a.settings.as_ref().unwrap().margin_ratio;
    let discounted = f64::try_from(clv).unwrap() / (ratio * f64::try_from(eov).unwrap());
    let want = f64::try_from(clv).unwrap() - discounted * 21.8;
    let got = f64::try_from(dec(&a.net_clv)).unwrap();
    assert!(
        (got - want).abs() <= 1e-6 * want.abs().max(1.0),
        "net CLV {got}, by hand {want}"
    );
    assert!(got < f64::try_from(clv).unwrap());
    // Ranking by net CLV lists every scored customer with one.
    let ranked = v
        .rank_customers(req(
            t.id,
            RankCustomersRequest {
                metric: RankMetric::NetClv as i32,
                ..Default::default()
            },
        ))
        .await
        .answer()
        .customers;
    assert_eq!(ranked.len() as i64, run.scored_customer_count);
    let nets: Vec<Decimal> = ranked
        .iter()
        .map(|c| dec(&c.value.as_ref().unwrap().net_clv))
        .collect();
    assert!(nets.windows(2).all(|w| w[0] >= w[1]), "{nets:?}");
    let concentration = v
        .get_value_concentration(req(t.id, GetValueConcentrationRequest::default()))
        .await
        .answer();
    assert_eq!(concentration.net_customer_count, run.scored_customer_count);
    assert_eq!(
        dec(&concentration.net_predicted.unwrap().total),
        nets.iter().copied().sum::<Decimal>()
    );
    // The event carries the net figures to the other services.
    let carried: Vec<u8> = sqlx::query_scalar(
        "SELECT event FROM outbox WHERE tenant_id = $1 AND aggregate_id = $2
           AND event_type = 'CustomerValueChanged' ORDER BY sequence DESC LIMIT 1",
    )
    .bind(t.id)
    .bind(t.a.to_string())
    .fetch_one(&s.pool)
    .await
    .unwrap();
    use prost::Message;
    let e = ValuationEvent::decode(carried.as_slice()).unwrap();
    let Some(valuation_event::Event::CustomerValueChanged(c)) = e.event else {
        panic!("a CustomerValueChanged");
    };
    assert_eq!(dec(&c.net_clv), dec(&a.net_clv));
    assert_eq!(dec(&c.cost_to_serve), d("43.6"));
    assert_eq!(dec(&c.net_profit), d("481.4"));
    assert_eq!(c.profit_decile, 1);
}

/// The tenant's report of the default window, kept or computed as
/// `max_staleness` allows.
async fn kept_report(
    v: &mut ValuationServiceClient<GrpcChannel>,
    t: &Tenant,
    (intervals, destroyers): (i32, i32),
    segments: Vec<String>,
    max_staleness: prost_types::Duration,
) -> ProfitabilityReport {
    v.get_profitability_report(req(
        t.id,
        GetProfitabilityReportRequest {
            curve_intervals: intervals,
            destroyer_count: destroyers,
            segment_ids: segments,
            max_staleness: Some(max_staleness),
            ..Default::default()
        },
    ))
    .await
    .answer()
    .report
    .unwrap()
}

fn later_than(a: &prost_types::Timestamp, b: Option<&prost_types::Timestamp>) -> bool {
    let b = b.expect("a time");
    (a.seconds, a.nanos) > (b.seconds, b.nanos)
}

/// A kept report answers like one computed over its window, whatever curve,
/// destroyers and segments are asked of it; an age beyond `max_staleness`
/// or a new cost model version computes it again; an erased customer's id
/// leaves it while its figures stay in the totals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_report_answers_like_a_computed_one() {
    let s = start(true).await;
    let mut v = s.valuation();
    let t = tenant(&s).await;
    let v1 = set(&mut v, t.id, model_v1(t.day(0)), "").await;
    let v2 = set(&mut v, t.id, model_v2(t.day(90)), &v1.etag).await;
    applied(&v, &t, "-2259.50").await;
    let segment = Uuid::new_v4();
    s.set_members(t.id, segment, vec![t.a, t.b, t.d, Uuid::new_v4()]);
    let hour = prost_types::Duration {
        seconds: 3600,
        nanos: 0,
    };
    let nano = prost_types::Duration {
        seconds: 0,
        nanos: 1,
    };

    // Computed now over the last 365 days, and kept.
    let first = kept_report(&mut v, &t, (100, 10), Vec::new(), hour).await;
    let kept_at = first.compute_time.unwrap();
    assert_eq!(first.end_time, Some(kept_at));
    assert_eq!(first.customer_count, 5);
    let kept_rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM kept_report_ranks WHERE tenant_id = $1")
            .bind(t.id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(kept_rows, 5);

    // Served from it: the same report as one computed over its window.
    let without_time = |r: ProfitabilityReport| ProfitabilityReport {
        compute_time: None,
        ..r
    };
    for (shape, segments) in [
        ((100, 10), Vec::new()),
        ((37, 3), vec![segment.to_string()]),
        ((1000, 100), vec![segment.to_string()]),
        ((10, 1), Vec::new()),
    ] {
        let served = kept_report(&mut v, &t, shape, segments.clone(), hour).await;
        assert_eq!(served.compute_time, Some(kept_at), "{shape:?} is served");
        let computed = v
            .get_profitability_report(req(
                t.id,
                GetProfitabilityReportRequest {
                    start_time: first.start_time,
                    end_time: first.end_time,
                    curve_intervals: shape.0,
                    destroyer_count: shape.1,
                    segment_ids: segments,
                    max_staleness: None,
                },
            ))
            .await
            .answer()
            .report
            .unwrap();
        assert_ne!(computed.compute_time, Some(kept_at));
        assert_eq!(without_time(served), without_time(computed), "{shape:?}");
    }

    // Older than allowed: computed again, and kept in its place.
    let again = kept_report(&mut v, &t, (10, 10), Vec::new(), nano).await;
    let kept_at = again.compute_time.unwrap();
    assert!(later_than(&kept_at, first.compute_time.as_ref()));
    let served = kept_report(&mut v, &t, (10, 10), Vec::new(), hour).await;
    assert_eq!(served.compute_time, Some(kept_at));

    // A new cost model version makes the kept report stale.
    set(&mut v, t.id, model_v2(t.day(90)), &v2.etag).await;
    let repriced = kept_report(&mut v, &t, (10, 10), Vec::new(), hour).await;
    let kept_at = repriced.compute_time.unwrap();
    assert!(later_than(&kept_at, served.compute_time.as_ref()));

    // Erasing B, the biggest value destroyer, removes its id from the kept
    // report, which is not computed again: its figures stay in the totals.
    assert_eq!(repriced.value_destroyers[0].customer_id, t.b.to_string());
    erase(&s, &t, t.b).await;
    eventually("the erasure to reach valuation", || {
        let mut v = v.clone();
        let t = &t;
        async move {
            let b = customer(&mut v, t, t.b, t.window()).await;
            dec(&b.cost_to_serve) == Decimal::ZERO
        }
    })
    .await;
    let after = kept_report(&mut v, &t, (10, 100), Vec::new(), hour).await;
    assert_eq!(after.compute_time, Some(kept_at));
    assert_eq!(after.total, repriced.total);
    assert_eq!(after.customer_count, 5);
    let destroyers: Vec<&str> = after
        .value_destroyers
        .iter()
        .map(|d| d.customer_id.as_str())
        .collect();
    assert_eq!(destroyers.len(), 4);
    assert!(!destroyers.contains(&t.b.to_string().as_str()));
    let (named, anonymous): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE customer_id = $2), count(*) FILTER (WHERE customer_id IS NULL)
         FROM kept_report_ranks WHERE tenant_id = $1",
    )
    .bind(t.id)
    .bind(t.b)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!((named, anonymous), (0, 1));

    // Another tenant's kept report is its own.
    let other = Tenant {
        id: Uuid::new_v4(),
        ..t.clone()
    };
    set(&mut v, other.id, model_v1(t.day(0)), "").await;
    let theirs = kept_report(&mut v, &other, (10, 10), Vec::new(), hour).await;
    assert_eq!(theirs.customer_count, 0);
    let ours = kept_report(&mut v, &t, (10, 10), Vec::new(), hour).await;
    assert_eq!(ours.compute_time, Some(kept_at));
}

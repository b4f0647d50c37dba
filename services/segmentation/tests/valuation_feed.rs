//! The valuation follower, driven with the events valuation writes: values
//! (CLV, P(alive), tier) and their cost-to-serve figures reach the feature
//! projection to the nano and change dynamic segments.

mod common;

use chrono::Utc;
use common::*;
use rapport_kit::convert::timestamp;
use rapport_proto::rapport::common::v1::{ChangeEvent, Money};
use rapport_proto::rapport::segmentation::v1::*;
use rapport_proto::rapport::valuation::v1::{
    CustomerValueChanged, CustomerValueRemoved, ValuationEvent, ValueRemovalReason, ValueTier,
    valuation_event,
};
use rapport_segmentation::follow::ValuationFollower;
use rust_decimal::Decimal;
use uuid::Uuid;

fn value_event(
    sequence: i64,
    tenant: Uuid,
    customer: &str,
    e: valuation_event::Event,
) -> ChangeEvent {
    let kind = match &e {
        valuation_event::Event::CustomerValueChanged(_) => "CustomerValueChanged",
        valuation_event::Event::CustomerValueRemoved(_) => "CustomerValueRemoved",
        _ => "Other",
    };
    let typed = rapport_kit::feed::NewEvent::new(
        tenant,
        "customer",
        customer,
        kind,
        &ValuationEvent { event: Some(e) },
    );
    ChangeEvent {
        sequence,
        tenant_id: tenant.to_string(),
        aggregate_type: "customer".into(),
        aggregate_id: customer.into(),
        event_type: kind.into(),
        commit_time: Some(timestamp(Utc::now())),
        event: Some(typed.event),
        ..Default::default()
    }
}

fn changed(customer: &str, clv: Money, p_alive: f64, tier: ValueTier) -> valuation_event::Event {
    valuation_event::Event::CustomerValueChanged(CustomerValueChanged {
        customer_id: customer.into(),
        clv: Some(clv),
        p_alive,
        expected_purchases: 2.5,
        value_tier: tier as i32,
        ..Default::default()
    })
}

// The valuation service's feed is being built at the same time; its
// follower is driven here with the events it will write.
#[tokio::test]
async fn valuation_events_update_values_and_segments() {
    let s = start().await;
    let t = Uuid::new_v4();
    let a = Customer::new("ES").bought(3, 300, 100, 5);
    let b = Customer::new("ES").bought(1, 50, 10, 10);
    insert(&s.pool, t, &[a.clone(), b.clone()]).await;
    let mut c = s.client();
    let seg = create_segment(
        &mut c,
        t,
        dynamic(
            "Valuable",
            "clv > 500 and p_alive >= 0.5 and value_tier = \"top\"",
        ),
    )
    .await;
    assert_eq!(seg.member_count, 0);
    let f = ValuationFollower;
    let apply = |ev: ChangeEvent| {
        let pool = s.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            f.apply_batch(&mut tx, t, std::slice::from_ref(&ev), Utc::now())
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    let eur = |units: i64, nanos: i32| Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    };
    apply(value_event(
        1,
        t,
        &a.id.to_string(),
        changed(
            &a.id.to_string(),
            eur(812, 400_000_000),
            0.83,
            ValueTier::Top,
        ),
    ))
    .await;
    assert_eq!(
        members(&mut c, t, &seg.segment_id).await,
        vec![a.id.to_string()]
    );
    let (clv, tier): (rust_decimal::Decimal, String) =
        sqlx::query_as("SELECT clv, value_tier FROM features WHERE customer_id = $1")
            .bind(a.id)
            .fetch_one(&s.pool)
            .await
            .unwrap();
    assert_eq!(clv.to_string(), "812.4");
    assert_eq!(tier, "top");
    // A CLV in another currency is left out.
    apply(value_event(
        2,
        t,
        &b.id.to_string(),
        changed(
            &b.id.to_string(),
            Money {
                currency_code: "USD".into(),
                units: 9000,
                nanos: 0,
            },
            0.9,
            ValueTier::Top,
        ),
    ))
    .await;
    assert_eq!(
        members(&mut c, t, &seg.segment_id).await,
        vec![a.id.to_string()]
    );
    // Removed values: the customer exits.
    apply(value_event(
        3,
        t,
        &a.id.to_string(),
        valuation_event::Event::CustomerValueRemoved(CustomerValueRemoved {
            customer_id: a.id.to_string(),
            reason: ValueRemovalReason::NoPurchases as i32,
        }),
    ))
    .await;
    assert!(members(&mut c, t, &seg.segment_id).await.is_empty());
    let reasons: Vec<i16> = sqlx::query_scalar(
        "SELECT reason FROM membership_log WHERE customer_id = $1 ORDER BY sequence",
    )
    .bind(a.id)
    .fetch_all(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        reasons,
        vec![MembershipChangeReason::FeaturesChanged as i16; 2]
    );
    s.stop().await;
}

// The cost-to-serve figures of CustomerValueChanged arrive to the nano and
// serve rules: "partners in the bottom profit decile" and the like.
#[tokio::test]
async fn cost_to_serve_features_serve_rules() {
    let s = start().await;
    let t = Uuid::new_v4();
    let a = Customer::new("ES").bought(3, 300, 100, 5);
    let b = Customer::new("ES").bought(1, 50, 10, 10);
    insert(&s.pool, t, &[a.clone(), b.clone()]).await;
    let mut c = s.client();
    let losing = create_segment(
        &mut c,
        t,
        dynamic(
            "Losing money",
            "profit_decile >= 9 and net_profit < 0 and cost_to_serve > 100.5 and net_clv < 0",
        ),
    )
    .await;
    let f = ValuationFollower;
    let eur = |units: i64, nanos: i32| Money {
        currency_code: "EUR".into(),
        units,
        nanos,
    };
    let value = |customer: &Customer, net: Money, cost: Money, profit: Money, decile: i32| {
        valuation_event::Event::CustomerValueChanged(CustomerValueChanged {
            customer_id: customer.id.to_string(),
            clv: Some(eur(10, 0)),
            p_alive: 0.5,
            expected_purchases: 1.0,
            value_tier: ValueTier::Low as i32,
            net_clv: Some(net),
            cost_to_serve: Some(cost),
            net_profit: Some(profit),
            profit_decile: decile,
            ..Default::default()
        })
    };
    let events = vec![
        value_event(
            1,
            t,
            &a.id.to_string(),
            value(
                &a,
                eur(-4, -500_000_001),
                eur(100, 500_000_001),
                eur(-12, -340_000_000),
                10,
            ),
        ),
        value_event(
            2,
            t,
            &b.id.to_string(),
            value(&b, eur(3, 0), eur(100, 500_000_000), eur(-1, 0), 9),
        ),
    ];
    let mut tx = s.pool.begin().await.unwrap();
    f.apply_batch(&mut tx, t, &events, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // A: every figure read back exactly; B costs exactly 100.50, not more.
    let row: (Decimal, Decimal, Decimal, i16) = sqlx::query_as(
        "SELECT net_clv, cost_to_serve, net_profit, profit_decile FROM features
         WHERE tenant_id = $1 AND customer_id = $2",
    )
    .bind(t)
    .bind(a.id)
    .fetch_one(&s.pool)
    .await
    .unwrap();
    assert_eq!(
        (
            row.0.to_string(),
            row.1.to_string(),
            row.2.to_string(),
            row.3
        ),
        (
            "-4.500000001".to_string(),
            "100.500000001".to_string(),
            "-12.34".to_string(),
            10
        )
    );
    assert_eq!(
        members(&mut c, t, &losing.segment_id).await,
        vec![a.id.to_string()]
    );
    // A decile out of range is no decile at all.
    let mut tx = s.pool.begin().await.unwrap();
    f.apply_batch(
        &mut tx,
        t,
        &[value_event(
            3,
            t,
            &a.id.to_string(),
            value(&a, eur(-5, 0), eur(200, 0), eur(-20, 0), 11),
        )],
        Utc::now(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert!(members(&mut c, t, &losing.segment_id).await.is_empty());
    s.stop().await;
}

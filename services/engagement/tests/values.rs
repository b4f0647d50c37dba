//! What a treatment is worth when its value follows the customer: a share
//! of the last year's margin (from the interaction feed) or of CLV net of the
//! cost to serve (from the valuation feed), driven with constructed events.

mod common;

use chrono::{Duration, Utc};
use common::*;
use rapport_engagement::follow::ValuationFollower;
use rapport_kit::convert::timestamp;
use rapport_kit::feed::NewEvent;
use rapport_proto::rapport::engagement::v1::{
    self as pb, ContactChannel, FilterReason, TreatmentKind,
};
use rapport_proto::rapport::interaction::v1::InteractionType;
use rapport_proto::rapport::valuation::v1::{
    CustomerValueChanged, ValuationEvent, valuation_event,
};
use uuid::Uuid;

#[tokio::test]
async fn a_share_of_net_clv_follows_the_cost_to_serve_valuation_prices() {
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let bob = Uuid::new_v4();
    created(&s, t, &[bob]).await;
    // Valuation's value with its net CLV, as the feed brings it.
    let value = |sequence: i64, net: rapport_proto::rapport::common::v1::Money| {
        change(
            sequence,
            t,
            NewEvent::new(
                t,
                "customer",
                bob.to_string(),
                "CustomerValueChanged",
                &ValuationEvent {
                    event: Some(valuation_event::Event::CustomerValueChanged(
                        CustomerValueChanged {
                            customer_id: bob.to_string(),
                            clv: Some(eur(300, 0)),
                            p_alive: 0.5,
                            net_clv: Some(net),
                            ..Default::default()
                        },
                    )),
                },
            ),
        )
    };
    let apply = |e| {
        let pool = s.pool.clone();
        async move {
            let mut tx = pool.begin().await.unwrap();
            ValuationFollower
                .apply_batch(&mut tx, t, &[e])
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    };
    apply(value(1, eur(120, 500_000_000))).await;
    let mut upsell = service("Upsell", TreatmentKind::Upsell, ContactChannel::Email, 0, 1);
    upsell.value = Some(pb::treatment::Value::NetClvShareBps(2000));
    let created_t = create(&mut c, t, upsell).await;
    assert_eq!(
        created_t.value,
        Some(pb::treatment::Value::NetClvShareBps(2000))
    );
    // 20 % of EUR 120.50 = 24.10; 0.1 × 24.10 − 1 = 1.41.
    let r = next_best(&mut c, t, &bob.to_string()).await.answer_ok();
    let a = &r.actions[0];
    assert_eq!(a.value, Some(eur(24, 100_000_000)));
    assert_eq!(a.expected_net_value, Some(eur(1, 410_000_000)));
    // Once serving Bob costs more than he brings, the treatment has no value.
    apply(value(2, eur(-3, 0))).await;
    let r = next_best(&mut c, t, &bob.to_string()).await.answer_ok();
    assert!(r.actions.is_empty(), "{:?}", r.actions);
    assert_eq!(left_out(&r, "Upsell"), Some(FilterReason::NoValue));
}

#[tokio::test]
async fn a_value_can_be_a_share_of_the_margin_of_the_last_year() {
    use rapport_engagement::follow::InteractionFollower;
    use rapport_proto::rapport::interaction::v1::{
        InteractionEvent, InteractionRecorded, interaction_event,
    };
    let s = start().await;
    let t = Uuid::new_v4();
    let mut c = s.client();
    let alice = Uuid::new_v4();
    created(&s, t, &[alice]).await;
    // Two purchases in the last year with margins EUR 30.25 and 9.75, one
    // of 400 days ago with EUR 100 (outside the year) and one in dollars.
    let purchase = |days: i64, margin: rapport_proto::rapport::common::v1::Money, seq: i64| {
        let id = Uuid::new_v4();
        let e = InteractionEvent {
            event: Some(interaction_event::Event::InteractionRecorded(
                InteractionRecorded {
                    interaction_id: id.to_string(),
                    customer_id: alice.to_string(),
                    original_customer_id: alice.to_string(),
                    r#type: InteractionType::Purchase as i32,
                    occur_time: Some(timestamp(Utc::now() - Duration::days(days))),
                    amount: Some(rapport_proto::rapport::common::v1::Money {
                        units: margin.units * 4,
                        ..margin.clone()
                    }),
                    margin: Some(margin),
                    ..Default::default()
                },
            )),
        };
        change(
            seq,
            t,
            NewEvent::new(t, "interaction", id.to_string(), "InteractionRecorded", &e),
        )
    };
    let usd = rapport_proto::rapport::common::v1::Money {
        currency_code: "USD".into(),
        units: 50,
        nanos: 0,
    };
    let events = vec![
        purchase(10, eur(30, 250_000_000), 1),
        purchase(100, eur(9, 750_000_000), 2),
        purchase(400, eur(100, 0), 3),
        purchase(5, usd, 4),
    ];
    let mut tx = s.pool.begin().await.unwrap();
    InteractionFollower
        .apply_batch(&mut tx, t, &events)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut share = service(
        "Margin share",
        TreatmentKind::CrossSell,
        ContactChannel::Email,
        0,
        1,
    );
    share.value = Some(pb::treatment::Value::MarginShareBps(2500));
    let share = create(&mut c, t, share).await;
    assert_eq!(
        share.value,
        Some(pb::treatment::Value::MarginShareBps(2500))
    );
    let r = next_best(&mut c, t, &alice.to_string()).await.unwrap();
    let ctx = r.customer.clone().unwrap();
    assert_eq!(
        ctx.margin_last_year,
        vec![
            eur(40, 0),
            rapport_proto::rapport::common::v1::Money {
                currency_code: "USD".into(),
                units: 50,
                nanos: 0
            }
        ]
    );
    // 25 % of EUR 40 = 10; 0.1 × 10 − 1 = 0.
    assert_eq!(
        left_out(&r, "Margin share"),
        Some(FilterReason::NotProfitable)
    );
    let mut richer = service(
        "Richer share",
        TreatmentKind::CrossSell,
        ContactChannel::Email,
        0,
        0,
    );
    richer.value = Some(pb::treatment::Value::MarginShareBps(10_000));
    create(&mut c, t, richer).await;
    let r = next_best(&mut c, t, &alice.to_string()).await.unwrap();
    // 100 % of EUR 40; 0.1 × 40 − 0 = 4.
    assert_eq!(r.actions[0].value, Some(eur(40, 0)));
    assert_eq!(r.actions[0].expected_net_value, Some(eur(4, 0)));
    s.stop().await;
}

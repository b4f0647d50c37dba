//! Segments over real gRPC with a throwaway database: CRUD and validation,
//! preview, refresh diffs, static members, references and cycles,
//! explanations, history, the membership stream, tenant isolation.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use futures::StreamExt;
use prost_types::FieldMask;
use rapport_proto::rapport::segmentation::v1::*;
use rust_decimal::Decimal;
use tonic::Code;
use uuid::Uuid;

fn sample() -> Vec<Customer> {
    vec![
        Customer::new("ES").bought(5, 900, 400, 10).clv(2000),
        Customer::new("ES").bought(1, 50, 20, 20).clv(100),
        Customer::new("MX").bought(3, 400, 200, 100),
        Customer::new("FR").bought(8, 3000, 800, 2).clv(5000),
        Customer::new("ES"),
    ]
}

/// A fresh segmentation service with the [`sample`] customers in tenant `t`.
struct Sampled {
    s: Stack,
    t: Uuid,
    cs: Vec<Customer>,
    c: Client,
}

async fn sampled() -> Sampled {
    let s = start().await;
    let t = Uuid::new_v4();
    let cs = sample();
    insert(&s.pool, t, &cs).await;
    let c = s.client();
    Sampled { s, t, cs, c }
}

mod isolation;
mod lifecycle;
mod membership;

#[allow(unused_imports)]
use isolation::*;
#[allow(unused_imports)]
use lifecycle::*;
#[allow(unused_imports)]
use membership::*;

//! The bad-input matrix of every ValuationService method over real gRPC and
//! a real database, beyond what validation.rs covers: every malformed id,
//! non-finite and out-of-range numbers, out-of-range enums, broken and
//! extreme timestamps, oversized lists, NUL bytes, forged, tampered and
//! foreign page tokens, another tenant's models and values, calls without a
//! tenant. Every refused write is followed by a read-back showing nothing
//! changed.

#[path = "../common/mod.rs"]
mod common;

use chrono::{Duration, DurationRound, Utc};
use common::*;
use futures::StreamExt;
use prost_types::Timestamp;
use rapport_proto::rapport::common::v1::PeriodUnit;
use rapport_proto::rapport::interaction::v1::{OpportunityHistory, PurchaseHistorySummary};
use rapport_proto::rapport::valuation::v1::*;
use rapport_testkit::hostile::{self, BAD_IDS, TEXT, YEAR_1, YEAR_9999_END};
use tonic::{Code, Status};
use uuid::Uuid;

/// Asserts INVALID_ARGUMENT with a field violation on `field`.
#[track_caller]
fn invalid<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, field: &str) {
    hostile::assert_invalid(r, field, field);
}

/// Asserts the call failed with `code`.
#[track_caller]
fn failed<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, code: Code) {
    hostile::assert_code(r, code, "the call");
}

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(hostile::at(seconds, nanos))
}

/// Timestamps no valid request carries.
fn broken_times() -> Vec<Option<Timestamp>> {
    hostile::invalid_times().into_iter().map(Some).collect()
}

/// A fit of `kind` over [`data`].
fn inline_fit(kind: ModelKind) -> FitModelRequest {
    common::inline_fit(kind, data())
}

/// Every model of the tenant.
async fn models(s: &Stack, tenant: Uuid) -> Vec<Model> {
    let page = s
        .valuation()
        .list_models(req(
            tenant,
            ListModelsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("list models");
    assert!(page.next_page_token.is_empty());
    page.models
}

/// A request without a tenant.
fn no<T>(msg: T) -> tonic::Request<T> {
    tonic::Request::new(msg)
}

mod models;
mod profitability;
mod scoring;

#[allow(unused_imports)]
use models::*;
#[allow(unused_imports)]
use profitability::*;
#[allow(unused_imports)]
use scoring::*;

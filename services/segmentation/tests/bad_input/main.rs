//! The bad-input matrix of every SegmentationService method, over real gRPC
//! and a real database: missing and malformed fields, hostile sizes, ids that
//! are not UUIDs or name nothing, another tenant's objects, out-of-range
//! enums, numbers and timestamps, forged and tampered page tokens, NUL bytes.
//! Every refused write is followed by a read-back showing nothing changed,
//! and text full of SQL metacharacters and unusual Unicode comes back byte
//! for byte.

#[path = "../common/mod.rs"]
mod common;

use common::*;
use prost_types::{Duration as PbDuration, Timestamp};
use rapport_proto::rapport::segmentation::v1::*;
use rapport_testkit::hostile::{self, BAD_IDS, FORGED_TOKEN, TEXT, YEAR_1, changed, tampered};
use tonic::{Code, Status};
use uuid::Uuid;

/// `s` as a string literal of the rule language.
fn lit(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// The refusal of a call that must fail.
#[track_caller]
fn refused<T>(r: Result<tonic::Response<T>, Status>) -> Status {
    match r {
        Ok(_) => panic!("the call succeeded; a refusal was expected"),
        Err(e) => e,
    }
}

/// Asserts INVALID_ARGUMENT with a field violation on `field`.
#[track_caller]
fn invalid<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, field: &str) {
    hostile::assert_invalid(r, field, field);
}

/// Asserts INVALID_ARGUMENT with a field violation on `prefix` or below it.
#[track_caller]
fn invalid_under<T>(r: Result<tonic::Response<T>, Status>, prefix: &str) {
    let e = refused(r);
    assert_eq!(e.code(), Code::InvalidArgument, "{prefix}: {e:?}");
    let fields: Vec<String> = violations(&e).into_iter().map(|v| v.0).collect();
    assert!(
        fields.iter().any(|f| f.starts_with(prefix)),
        "no violation under {prefix:?} among {fields:?}: {e:?}"
    );
}

/// Asserts the call failed with `code`.
#[track_caller]
fn failed<T: std::fmt::Debug>(r: Result<tonic::Response<T>, Status>, code: Code) {
    hostile::assert_code(r, code, "the call");
}

fn secs(seconds: i64) -> Option<PbDuration> {
    Some(PbDuration { seconds, nanos: 0 })
}

fn at(seconds: i64, nanos: i32) -> Option<Timestamp> {
    Some(hostile::at(seconds, nanos))
}

/// Timestamps no valid request carries.
fn broken_times() -> Vec<Option<Timestamp>> {
    hostile::invalid_times().into_iter().map(Some).collect()
}

async fn create(c: &mut Client, t: Uuid, r: CreateSegmentRequest) -> Segment {
    c.create_segment(req(t, r))
        .await
        .expect_answer("a valid segment is created")
        .segment
        .expect("the created segment")
}

/// Every segment of the tenant, by name.
async fn all_segments(c: &mut Client, t: Uuid) -> Vec<Segment> {
    let page = c
        .list_segments(req(
            t,
            ListSegmentsRequest {
                page_size: 1000,
                ..Default::default()
            },
        ))
        .await
        .expect_answer("list segments");
    assert!(page.next_page_token.is_empty());
    page.segments
}

async fn policy(c: &mut Client, t: Uuid) -> GetClassificationPolicyResponse {
    c.get_classification_policy(req(t, GetClassificationPolicyRequest {}))
        .await
        .expect_answer("the policy")
}

/// A request without a tenant.
fn no<T>(msg: T) -> tonic::Request<T> {
    tonic::Request::new(msg)
}

mod membership;
mod reads;
mod segments;

#[allow(unused_imports)]
use membership::*;
use rapport_testkit::mask;
#[allow(unused_imports)]
use reads::*;
#[allow(unused_imports)]
use segments::*;

//! Customers over real gRPC and PostgreSQL: create, read, update with masks
//! and etags, soft delete, list, search, attribute definitions, tenancy.

#[path = "../support/mod.rs"]
mod support;

use prost_types::{FieldMask, Timestamp};
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::profile::v1::*;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn mask(paths: &[&str]) -> Option<FieldMask> {
    Some(FieldMask {
        paths: paths.iter().map(|p| p.to_string()).collect(),
    })
}

mod attributes;
mod finding;
mod lifecycle;

#[allow(unused_imports)]
use attributes::*;
#[allow(unused_imports)]
use finding::*;
#[allow(unused_imports)]
use lifecycle::*;

//! Customers over real gRPC and PostgreSQL: create, read, update with masks
//! and etags, soft delete, list, search, attribute definitions, tenancy.

#[path = "../support/mod.rs"]
mod support;

use prost_types::Timestamp;
use rapport_proto::rapport::common::v1::Money;
use rapport_proto::rapport::profile::v1::*;
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

mod attributes;
mod finding;
mod lifecycle;

#[allow(unused_imports)]
use attributes::*;
#[allow(unused_imports)]
use finding::*;
#[allow(unused_imports)]
use lifecycle::*;
use rapport_testkit::mask;

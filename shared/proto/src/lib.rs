//! Generated code for Rapport's v1 contracts (`proto/rapport/**/v1/*.proto`).
//!
//! Modules follow the protobuf packages: `rapport::profile::v1`,
//! `rapport::interaction::v1`, and so on. [`FILE_DESCRIPTOR_SET`] is the encoded
//! descriptor set of every contract, for gRPC server reflection.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

include!(concat!(env!("OUT_DIR"), "/_includes.rs"));

pub mod codec;

/// Encoded `google.protobuf.FileDescriptorSet` of every Rapport contract and the
/// well-known types they import.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rapport_descriptor.bin"));

//! hermetic's own gRPC services, beside the Remote Execution API.
//!
//! - `hermetic.v1.Status` ([`StatusClient`], [`StatusServer`]): daemon health, the sandbox
//!   features in force on the host, the queue, images and profiles; what
//!   `hermetic status` shows.
//! - `hermetic.v1.Images` ([`ImagesClient`], [`ImagesServer`]): base images
//!   (import, list, inspect, remove, trust); what `hermetic image` drives.
//! - `hermetic.v1.Provenance` ([`ProvenanceClient`], [`ProvenanceServer`]):
//!   signed provenance bundles and SBOMs of executed actions, the public
//!   keyring, transparency-log checkpoints and consistency proofs, key
//!   rotation and revocation.
//! - `hermetic.v1.Admin` ([`AdminClient`], [`AdminServer`]): garbage
//!   collection and pins (admin role).
//!
//! [`FILE_DESCRIPTOR_SET`] holds the encoded descriptors of every
//! `hermetic.v1` file, for gRPC reflection.

/// `hermetic.v1`: the generated messages, clients and servers.
pub mod v1 {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("hermetic.v1");
}

pub use v1::status_client::StatusClient;
pub use v1::status_server::{Status, StatusServer};

pub use v1::images_client::ImagesClient;
pub use v1::images_server::{Images, ImagesServer};
pub use v1::provenance_client::ProvenanceClient;
pub use v1::provenance_server::{Provenance, ProvenanceServer};

pub use v1::admin_client::AdminClient;
pub use v1::admin_server::{Admin, AdminServer};

/// The encoded `FileDescriptorSet` of `hermetic/v1/*.proto`.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/hermetic_v1_descriptor.bin"));

/// The encoded `FileDescriptorSet` of the Remote Execution API v2 and what
/// it uses (`build.bazel.semver`, `google.bytestream`, `google.longrunning`,
/// `google.rpc`, and the well-known types), for gRPC reflection. Only
/// descriptors: the message types are those of `bazel-remote-apis`.
pub const REAPI_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/reapi_descriptor.bin"));

//! Base images: the store in the state directory, how actions name images
//! (by digest only), trust records, the images named in the configuration,
//! and the `hermetic.v1.Images` gRPC service.
//!
//! - [`reference`]: `hermetic-image:blake3:<hex>` and the other digest
//!   forms; aliases.
//! - [`store`]: `images/<blake3 hex>/{rootfs,image.json,...}`, aliases,
//!   leases held by running actions, references from cached results.
//! - [`trust`]: [`trust::TrustRecord`] and its canonical bytes (the hook
//!   for signing and logging).
//! - [`configured`]: `[images]` of the config, imported at start-up.
//! - [`service`]: Import, List, Inspect, Remove, SetTrust.

pub mod configured;
pub mod reference;
pub mod service;
pub mod store;
pub mod trust;

pub use reference::ImageDigest;
pub use store::{ImageInfo, ImageLease, ImageStore};

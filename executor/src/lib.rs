//! `hermeticd`: a Remote Execution API v2 server that runs every action
//! through the `hermetic-sandbox` helper.
//!
//! # Layout
//! - [`config`]: the TOML configuration.
//! - [`auth`]: principals (SO_PEERCRED, mTLS), roles, the per-method check.
//! - [`digest`]: SHA-256 and BLAKE3 digests, [`digest::BlobKey`].
//! - [`error`]: the request-path error and its mapping to gRPC statuses.
//! - [`cas`]: the on-disk content-addressed store, its LRU index, Directory
//!   validation.
//! - [`action_cache`]: the on-disk action cache.
//! - [`exec`]: preparing, staging, running (through the helper) and
//!   collecting actions; the engine with its queue and operations.
//! - [`service`]: the gRPC services, thin wrappers over the above.
//! - [`images`]: the base-image store, digest references, trust, and the
//!   `hermetic.v1.Images` service.
//! - [`sched`]: fair scheduling between principals, quotas.
//! - [`server`]: start-up and [`server::serve`].
//! - [`local`]: daemonless execution on a private state directory.
//! - [`memo`]: bounded in-memory memos and file stamps (the cache-hit path).
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`provenance`]: signed provenance, SBOMs and the transparency log of
//!   every executed action; the `hermetic.v1.Provenance` service.
//! - [`systemd`]: readiness notification and socket activation.
//!
//! # Clients on the Unix socket
//! gRPC clients connecting over the Unix socket must send the authority
//! `localhost` (for example `grpc.default_authority=localhost`), since a
//! socket path is not a valid HTTP/2 authority.

pub mod action_cache;
pub mod alerts;
pub mod auth;
pub mod cas;
pub mod config;
pub mod digest;
pub mod error;
pub mod exec;
pub mod gc;
pub mod images;
pub mod local;
pub mod memo;
pub mod metrics;
pub mod provenance;
pub mod sched;
pub mod server;
pub mod service;
pub mod systemd;
pub mod telemetry;

pub use server::{Daemon, Listener, serve};

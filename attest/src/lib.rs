//! Signed provenance, SBOMs and a tamper-evident log for hermetic actions.
//!
//! Every executed action gets an in-toto Statement v1 with an SLSA
//! Provenance v1 predicate, signed in a DSSE envelope with an Ed25519 key
//! that only the daemon can read, appended to an RFC 6962 transparency log
//! whose checkpoints are signed notes. Verification needs nothing but the
//! artifact, its bundle and the exported public keyring.
//!
//! # For the daemon
//!
//! ```no_run
//! use hermetic_attest::{Attestor, ExecutionRecord, sbom};
//! # fn record() -> ExecutionRecord { unimplemented!() }
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once at start-up: opens <state>/keys and <state>/log, recomputes the
//! // tree and refuses a log that disagrees with its last signed checkpoint.
//! let (mut attestor, report) = Attestor::open("/var/lib/hermetic/attest".as_ref(), "hermetic.example.com/log")?;
//! // Per executed action (not per cache hit: store the bundle's log index
//! // with the action result and call `bundle_for(index)` on a hit).
//! let rec: ExecutionRecord = record();
//! let bundle = attestor.attest(&rec)?;                 // sign + log + prove
//! let index = bundle.log_entry.log_index;
//! std::fs::write("hello.provenance.json", bundle.to_json())?;
//! let image = sbom::dpkg::read_rootfs("/images/toolchain/rootfs".as_ref())?;
//! let cdx = sbom::cyclonedx(&rec, image.as_ref())?;    // serde_json::Value
//! let spdx = sbom::spdx(&rec, image.as_ref())?;
//! // Admin operations; each is a log entry.
//! let new_key = attestor.rotate()?;
//! let public = attestor.keyring().to_json();          // `hermetic keys export`
//! let proof = attestor.log().consistency_proof(1, attestor.log().size())?;
//! # let _ = (report, index, cdx, spdx, new_key, public, proof); Ok(()) }
//! ```
//!
//! [`Attestor`] takes `&mut self` for anything that appends and does file
//! I/O with fsync: the daemon keeps it behind a mutex and calls it from
//! `spawn_blocking`. Each append costs an fsync of the log and an atomic
//! replacement (two fsyncs) of the checkpoint.
//!
//! # For the client (`hermetic verify`)
//!
//! ```no_run
//! use hermetic_attest::{Bundle, Keyring, verify};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bundle = Bundle::from_json(&std::fs::read("hello.provenance.json")?)?;
//! let keyring = Keyring::from_json(&std::fs::read("keyring.json")?)?;
//! match verify::verify_artifact_file("hello".as_ref(), &bundle, &keyring) {
//!     Ok(v) => println!("ok: {} (log index {})", v.subject, v.bundle.log_index),
//!     Err(e) => { eprintln!("verification failed: {e}"); std::process::exit(1) }
//! }
//! # Ok(()) }
//! ```
//!
//! # Formats
//!
//! * Statement: `_type` [`provenance::STATEMENT_TYPE`], `predicateType`
//!   [`provenance::PREDICATE_TYPE`], buildType [`provenance::BUILD_TYPE`]
//!   (documented in `docs/provenance.md`). Subjects carry
//!   `{"sha256", "blake3"}`; `blake3` is our custom digest key (lowercase
//!   hex BLAKE3-256).
//! * Canonical JSON ([`canonical`]): sorted keys, no whitespace. The payload
//!   of every envelope and the data of every log leaf is in this form.
//! * Envelope: DSSE v1, payloadType `application/vnd.in-toto+json`, keyid =
//!   securesystemslib's default keyid ([`keys::keyid`]).
//! * Log leaves: canonical JSON of [`tlog::LogEntry`]; RFC 6962 hashing;
//!   checkpoints are C2SP signed notes named by the log origin.
//! * Bundle: [`Bundle`], media type [`bundle::BUNDLE_MEDIA_TYPE`].
//!
//! # Test strategy
//!
//! Known-answer vectors for RFC 6962 roots and proofs (transparency-dev's
//! test data), the signed-note reference example (golang.org/x/mod), DSSE
//! PAE and digests; tamper tests for every verification step; and
//! `tests/third_party.rs`, which has securesystemslib, in-toto-attestation,
//! spdx-tools, cyclonedx-python-lib and pymerkle check our output (a venv
//! made by `scripts/attest-venv`; SKIP locally without it, failure under
//! `CI=true`).

mod attestor;
pub mod bundle;
pub mod canonical;
pub mod dsse;
mod fsutil;
pub mod keys;
pub mod provenance;
pub mod record;
pub mod sbom;
mod timestamp;
pub mod tlog;
pub mod verify;

pub use attestor::{AttestError, Attestor};
pub use bundle::{Bundle, LogProof};
pub use dsse::Envelope;
pub use keys::store::{PendingKey, StoreError};
pub use keys::{KeyRecord, KeyStatus, Keyring};
pub use record::{ExecutionRecord, FileRecord, ImageRecord, ReapiDigest};
pub use timestamp::Timestamp;
pub use tlog::{Log, LogEntry, OpenReport};
pub use verify::{Verified, VerifyError};

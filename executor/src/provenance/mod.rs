//! Signed provenance for every executed action: the daemon's side of
//! `hermetic-attest`.
//!
//! At start-up [`Provenance::open`] opens `<state>/attest` (keys 0600 in a
//! 0700 directory, the transparency log), refusing a log that disagrees
//! with its last signed checkpoint. The state directory is never mounted
//! into a sandbox: a build step sees only its image, its input tree and
//! private scratch.
//!
//! After an action ran and its outputs and execution log are in the CAS,
//! [`Provenance::attest_action`] builds the [`ExecutionRecord`]
//! ([`record`]), signs and logs it (one action at a time, behind a mutex,
//! on a blocking thread), stores the bundle, both SBOMs and the keyring as
//! CAS blobs, and records a [`ProvenanceRef`] in the ActionResult
//! ([`pointers`]), which the action cache keeps: a cache hit names the
//! original attestation. Actions without output files produce nothing to
//! attest and get no provenance.

pub mod attest;
pub mod pointers;
pub mod record;
pub mod service;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hermetic_attest::sbom::dpkg::DpkgDb;
use hermetic_attest::{Attestor, Bundle, ExecutionRecord, ImageRecord, LogEntry, sbom};
use hermetic_proto::v1::{BlobDigest, ProvenanceRef};
use tracing::info;

use crate::cas::Store;
use crate::cas::store::Deferred;
use crate::config::ProvenanceConfig;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::images::{ImageDigest, ImageStore};

pub use pointers::{from_result, record_in_result, server_logs};

/// The name of the directory under the state directory.
pub const ATTEST_DIR: &str = "attest";

/// An image as provenance records it: computed once per image and rootfs.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// The record in every statement and SBOM.
    pub record: ImageRecord,
    /// The image's Debian packages, when it has a dpkg status file.
    pub packages: Option<Arc<DpkgDb>>,
}

/// The daemon's attestation state.
#[derive(Debug)]
pub struct Provenance {
    attestor: Mutex<Attestor>,
    dir: PathBuf,
    builder_id: String,
    record_inputs: bool,
    kernel: String,
    images: Arc<ImageStore>,
    /// Trust records (image hex, record SHA-256) known to be in the log.
    trust_logged: Mutex<HashSet<(String, String)>>,
    /// Each image's Debian packages (by BLAKE3 hex), read once.
    packages: Mutex<HashMap<String, Option<Arc<DpkgDb>>>>,
    /// The refs cache hits get (refreshed, or the stored one when no key
    /// changed since), by log index, valid while the log
    /// has the size recorded beside them (any append, key events
    /// included, makes a newer checkpoint): repeated hits between two
    /// appends neither re-prove nor re-store anything.
    refreshed: Mutex<(u64, HashMap<u64, ProvenanceRef>)>,
}

/// Refreshed refs kept at most between two log appends.
const MAX_REFRESHED: usize = 100_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kernel release (`uname -r`).
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

impl Provenance {
    /// Opens (or creates) the keys and the transparency log in
    /// `<state_dir>/attest`. A log that disagrees with its signed
    /// checkpoint is refused: the daemon must not start on it.
    pub fn open(
        state_dir: &Path,
        config: &ProvenanceConfig,
        host: &str,
        images: Arc<ImageStore>,
    ) -> Result<Self> {
        let dir = state_dir.join(ATTEST_DIR);
        let origin = config.log_origin(host);
        let (attestor, report) = Attestor::open(&dir, &origin).map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot open the attestation state in {}: {e}; a log that disagrees with its \
                 signed checkpoint was tampered with or damaged: keep it for investigation and \
                 move the directory aside to start a new log and keyring",
                dir.display()
            ))
        })?;
        let active = attestor
            .keyring()
            .active()
            .map(|k| k.keyid.clone())
            .unwrap_or_default();
        info!(
            dir = %dir.display(),
            origin = %origin,
            entries = attestor.log().size(),
            keyid = %active,
            truncated_bytes = report.truncated_bytes,
            unsigned_entries = report.unsigned_entries,
            "transparency log verified against its signed checkpoint"
        );
        Ok(Provenance {
            attestor: Mutex::new(attestor),
            dir,
            builder_id: config.builder_id(host),
            record_inputs: config.record_inputs,
            kernel: kernel_release(),
            images,
            trust_logged: Mutex::default(),
            packages: Mutex::default(),
            refreshed: Mutex::default(),
        })
    }

    /// `<state>/attest`: where keys and log live (never inside a sandbox).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// This host's builder identity (`runDetails.builder.id`).
    pub fn builder_id(&self) -> &str {
        &self.builder_id
    }

    /// Whether every input file is listed in `resolvedDependencies`.
    pub fn record_inputs(&self) -> bool {
        self.record_inputs
    }

    /// The kernel release recorded in `internalParameters`.
    pub fn kernel(&self) -> &str {
        &self.kernel
    }

    /// Runs `f` with the attestor locked (blocking: call it from a blocking
    /// thread).
    pub fn with<T>(&self, f: impl FnOnce(&mut Attestor) -> T) -> T {
        f(&mut lock(&self.attestor))
    }

    /// The image facts of the image `digest` (in the image store): its
    /// record (digests, trust record) and packages. The trust record is
    /// appended to the transparency log the first time an action relies on
    /// it. See [`record::image_record`].
    pub fn image(&self, digest: &ImageDigest) -> Result<ImageFacts> {
        let info = self.images.get(digest)?.ok_or_else(|| {
            Error::Internal(format!("image {digest} left the store while in use"))
        })?;
        let (rec, trust) = record::image_record(&info)?;
        self.ensure_logged(digest, &rec.trust_record_sha256, &trust)?;
        let cached = lock(&self.packages).get(&digest.hex).cloned();
        let packages = match cached {
            Some(p) => p,
            None => {
                let p = sbom::dpkg::read_rootfs(&info.rootfs)
                    .map_err(|e| {
                        Error::Internal(format!(
                            "cannot read the dpkg status of image {digest}: {e}"
                        ))
                    })?
                    .map(Arc::new);
                lock(&self.packages).insert(digest.hex.clone(), p.clone());
                p
            }
        };
        Ok(ImageFacts {
            record: rec,
            packages,
        })
    }

    /// Logs a trust decision as it is made (`hermetic image trust`,
    /// import with trust), so the log holds decisions no action used yet.
    /// Blocking.
    pub fn log_trust(&self, info: &crate::images::ImageInfo) -> Result<()> {
        let (rec, trust) = record::image_record(info)?;
        self.ensure_logged(&info.digest, &rec.trust_record_sha256, &trust)
    }

    /// Logs an administrative action by `principal` as an `admin` entry;
    /// returns its log index. Blocking.
    pub fn log_admin(
        &self,
        action: &str,
        principal: &str,
        details: &serde_json::Value,
    ) -> Result<u64> {
        let proof = self
            .with(|a| a.log_admin(action, principal, details))
            .map_err(|e| Error::Internal(format!("cannot log the admin action {action}: {e}")))?;
        Ok(proof.log_index)
    }

    fn ensure_logged(
        &self,
        digest: &ImageDigest,
        sha256: &str,
        trust: &serde_json::Value,
    ) -> Result<()> {
        let key = (digest.hex.clone(), sha256.to_owned());
        if !lock(&self.trust_logged).contains(&key) {
            self.with(|a| log_trust_once(a, trust))?;
            lock(&self.trust_logged).insert(key);
        }
        Ok(())
    }

    /// Signs and logs `rec`, stores the bundle, both SBOMs and the keyring
    /// in the CAS (as `function` blobs) and returns where they are.
    /// Blocking: file I/O with fsync.
    pub fn attest_action(
        &self,
        store: &Store,
        function: DigestFunction,
        rec: &ExecutionRecord,
        image: &ImageFacts,
    ) -> Result<ProvenanceRef> {
        let packages = image.packages.as_deref();
        let cdx = sbom::cyclonedx(rec, packages)
            .map_err(|e| Error::Internal(format!("cannot build the CycloneDX SBOM: {e}")))?;
        let spdx = sbom::spdx(rec, packages)
            .map_err(|e| Error::Internal(format!("cannot build the SPDX SBOM: {e}")))?;
        let (bundle, keyring) = self.with(|a| -> Result<(Bundle, Vec<u8>)> {
            let b = a
                .attest(rec)
                .map_err(|e| Error::Internal(format!("cannot attest the action: {e}")))?;
            Ok((b, a.keyring().to_json()))
        })?;
        let put = |data: &[u8]| -> Result<BlobKey> { store.put_new(function, data) };
        let json = |v: &serde_json::Value| {
            let mut d = serde_json::to_vec_pretty(v).expect("a JSON value serializes");
            d.push(b'\n');
            d
        };
        Ok(ProvenanceRef {
            log_index: bundle.log_entry.log_index,
            bundle: Some(pointers::blob(&put(&bundle.to_json())?)),
            sbom_cyclonedx: Some(pointers::blob(&put(&json(&cdx))?)),
            sbom_spdx: Some(pointers::blob(&put(&json(&spdx))?)),
            keyring: Some(pointers::blob(&put(&keyring)?)),
        })
    }
}

impl Provenance {
    /// A fresh bundle of the attestation at `index`: the original envelope
    /// with an inclusion proof against the latest checkpoint (which stays
    /// verifiable after the key that signed the original checkpoint was
    /// revoked).
    pub fn bundle_for(&self, index: u64) -> Result<Bundle> {
        self.with(|a| a.bundle_for(index)).map_err(|e| {
            Error::Internal(format!("cannot rebuild the bundle of entry {index}: {e}"))
        })
    }

    /// For a cache hit: replaces the ref in `result` by one naming a fresh
    /// bundle of the same attestation and the current keyring (stored in
    /// the CAS) when a key was rotated or revoked since it was attested;
    /// otherwise the stored bundle still verifies and the ref stays. A
    /// result without provenance is left alone. Blocking.
    ///
    /// The new blobs are readable at once but not yet durable: the caller
    /// makes the returned ones durable after the response
    /// ([`Store::make_durable`]). Nothing durable names them (the refreshed
    /// result goes to the client, never into the action cache), and either
    /// can be made again from the log, so a hit does not wait for the disk.
    pub fn refresh_in_result(
        &self,
        store: &Store,
        function: DigestFunction,
        result: &mut bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult,
    ) -> Result<Vec<Deferred>> {
        if self.refresh_recent(store, function, result) {
            return Ok(Vec::new());
        }
        let Some(mut r) = from_result(result) else {
            return Ok(Vec::new());
        };
        let keyring = self.with(|a| a.keyring().to_json());
        // No key rotated or revoked since the result was attested (its
        // keyring is today's): the bundle stored with it verifies as it
        // is, so none is made (a new file per hit otherwise, which on a
        // busy filesystem costs a hit more than everything else).
        let size = self.with(|a| a.log().size());
        let ring = crate::digest::key_of(function, &keyring);
        if r.keyring == Some(pointers::blob(&ring)) && stored(store, function, &r.bundle) {
            self.remember(size, r);
            return Ok(Vec::new());
        }
        let bundle = self.bundle_for(r.log_index)?.to_json();
        let mut pending = Vec::new();
        let mut put = |data: &[u8]| -> Result<BlobKey> {
            let (key, deferred) = store.put_deferred(function, data)?;
            pending.extend(deferred);
            Ok(key)
        };
        r.bundle = Some(pointers::blob(&put(&bundle)?));
        r.keyring = Some(pointers::blob(&put(&keyring)?));
        pointers::replace_in_result(result, &r);
        self.remember(size, r);
        Ok(pending)
    }

    /// Remembers the ref hits of entry `r.log_index` get while the log has
    /// `size` entries (see [`Provenance::refresh_recent`]).
    fn remember(&self, size: u64, r: ProvenanceRef) {
        let mut memo = lock(&self.refreshed);
        if memo.0 != size || memo.1.len() >= MAX_REFRESHED {
            *memo = (size, HashMap::new());
        }
        memo.1.insert(r.log_index, r);
    }
}

impl Provenance {
    /// [`Provenance::refresh_in_result`] from memory only, never waiting
    /// for the attestor (an attestation in progress holds it): true when
    /// `result` names no provenance or was refreshed from the memo of the
    /// current log; false when that needs the full refresh.
    pub fn refresh_recent(
        &self,
        store: &Store,
        function: DigestFunction,
        result: &mut bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult,
    ) -> bool {
        let Some(r) = from_result(result) else {
            return true;
        };
        let Ok(size) = self.attestor.try_lock().map(|a| a.log().size()) else {
            return false;
        };
        let stored = |b: &Option<BlobDigest>| stored(store, function, b);
        let fresh = {
            let memo = lock(&self.refreshed);
            (memo.0 == size)
                .then(|| memo.1.get(&r.log_index).cloned())
                .flatten()
        };
        match fresh {
            Some(fresh) if stored(&fresh.bundle) && stored(&fresh.keyring) => {
                pointers::replace_in_result(result, &fresh);
                true
            }
            _ => false,
        }
    }
}

/// Whether the blob `b` points at is in the CAS.
fn stored(store: &Store, function: DigestFunction, b: &Option<BlobDigest>) -> bool {
    b.as_ref().is_some_and(|b| {
        BlobKey::parse(function, &b.hash, b.size_bytes).is_ok_and(|k| store.contains(&k))
    })
}

/// Appends `trust` to the log unless an identical record is there already.
fn log_trust_once(a: &mut Attestor, trust: &serde_json::Value) -> Result<()> {
    let wanted = LogEntry::ImageTrust {
        record: trust.clone(),
    }
    .leaf_data();
    let log_err = |e: hermetic_attest::tlog::LogError| {
        Error::Internal(format!("cannot read the transparency log: {e}"))
    };
    for i in (0..a.log().size()).rev() {
        if a.log().entry(i).map_err(log_err)? == wanted {
            return Ok(());
        }
    }
    a.log_image_trust(trust)
        .map_err(|e| Error::Internal(format!("cannot log the image trust record: {e}")))?;
    Ok(())
}

//! Retention and garbage collection of the CAS and the action cache.
//!
//! A pass ([`Gc::run`]) has two phases:
//!
//! 1. **Mark**: the retained set, which no eviction may take (the store's
//!    inline LRU eviction included, see [`crate::cas::index`]):
//!    - every attestation in the transparency log younger than the
//!      retention period (by its `finishedOn`): its subjects (output files,
//!      by SHA-256 or BLAKE3), its input root (the whole Directory
//!      closure) and its byproducts (stdout, stderr, execution log);
//!    - every action-cache entry whose provenance is such an attestation:
//!      the Action, Command and input root, the result's outputs and output
//!      trees, logs, and the provenance bundle, SBOMs and keyring;
//!    - every admin pin ([`pins`]) with its closure ([`closure`]).
//!
//!    Blobs held by actions in flight are pinned in the index as before.
//! 2. **Sweep**: action-cache entries older than the period that nothing
//!    retains; then blobs last used before the period that nothing retains
//!    or holds; then least recently used unretained blobs while the store
//!    is over `cas.max_size_bytes`; then action-cache entries left naming a
//!    blob that is gone (they could no longer be served).
//!
//! A pass that changed something is logged in the transparency log as an
//! `admin` entry (`gc`) with its summary and the principal who ran it (the
//! periodic policy runs as `hermeticd`). Results of new actions join the
//! retained set as they are cached ([`Gc::retain_result`]).

pub mod closure;
pub mod pins;
pub mod service;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult;
use hermetic_attest::LogEntry;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::action_cache::ActionCache;
use crate::cas::Store;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::provenance::Provenance;
use closure::Closure;
use pins::{Pin, PinKind, PinStore};

/// The principal the periodic policy runs as, in log entries.
pub const DAEMON_PRINCIPAL: &str = "hermeticd";

/// How long past the period the log is still read back (attestations are
/// appended roughly, not strictly, in order of `finishedOn`).
const LOG_SLACK: Duration = Duration::from_secs(3600);

/// The `[retention]` section.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// How long provenance protects what it names, and how long unused
    /// blobs and action-cache entries stay: a duration such as `"30d"`,
    /// `"12h"`, `"90m"`. Default: `"30d"`.
    pub period: Option<String>,
    /// How often the daemon runs a garbage collection pass by itself
    /// (`"1h"`; `"0s"` disables the periodic policy, leaving
    /// `hermetic admin gc`). Default: `"1h"`.
    pub gc_interval: Option<String>,
}

fn duration(what: &str, text: Option<&str>, default: Duration) -> Result<Duration> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t.trim()).map_err(|e| {
            Error::InvalidArgument(format!(
                "retention.{what} {t:?}: {e} (expected e.g. \"30d\", \"1h\")"
            ))
        }),
    }
}

impl RetentionConfig {
    /// The retention period.
    pub fn period(&self) -> Result<Duration> {
        duration(
            "period",
            self.period.as_deref(),
            Duration::from_secs(30 * 86400),
        )
    }

    /// The periodic interval; zero: none.
    pub fn gc_interval(&self) -> Result<Duration> {
        duration(
            "gc_interval",
            self.gc_interval.as_deref(),
            Duration::from_secs(3600),
        )
    }
}

/// What a pass did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Nothing was changed.
    pub dry_run: bool,
    /// Blobs evicted.
    pub evicted_blobs: u64,
    /// Their bytes.
    pub evicted_bytes: u64,
    /// Action-cache entries removed.
    pub removed_action_results: u64,
    /// Blobs in the retained set.
    pub retained_blobs: u64,
    /// Pins in force.
    pub pins: u64,
    /// Attestations younger than the period.
    pub recent_attestations: u64,
    /// CAS bytes before.
    pub store_bytes_before: u64,
    /// CAS bytes after.
    pub store_bytes_after: u64,
    /// The period in seconds.
    pub retention_period_secs: u64,
    /// The log entry recording the pass.
    pub log_index: Option<u64>,
}

/// The collector.
#[derive(Debug)]
pub struct Gc {
    store: Arc<Store>,
    action_cache: Arc<ActionCache>,
    provenance: Arc<Provenance>,
    pins: Mutex<PinStore>,
    period: Duration,
    interval: Duration,
    /// One pass at a time.
    running: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The marked set.
#[derive(Debug, Default)]
struct Marked {
    retained: HashSet<BlobKey>,
    keep_ac: HashSet<(String, BlobKey)>,
    recent: u64,
}

fn secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Gc {
    /// Opens the pins in `state_dir` and marks once, so that the inline
    /// eviction respects pins and recent provenance from the start.
    pub fn open(
        state_dir: &Path,
        config: &RetentionConfig,
        store: Arc<Store>,
        action_cache: Arc<ActionCache>,
        provenance: Arc<Provenance>,
    ) -> Result<Self> {
        let invalid = |e: Error| Error::FailedPrecondition(format!("invalid config: {e}"));
        let gc = Gc {
            pins: Mutex::new(PinStore::open(state_dir)?),
            period: config.period().map_err(invalid)?,
            interval: config.gc_interval().map_err(invalid)?,
            store,
            action_cache,
            provenance,
            running: Mutex::new(()),
        };
        let marked = gc.mark(SystemTime::now());
        info!(
            retained = marked.retained.len(),
            recent_attestations = marked.recent,
            "retained set marked"
        );
        gc.store.set_retained(marked.retained);
        Ok(gc)
    }

    /// The retention period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The periodic interval (zero: none).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Attestations younger than `cutoff`, newest first: their log
    /// indices, and what their statements name.
    fn recent_log(&self, cutoff: SystemTime, c: &mut Closure) -> (HashSet<u64>, HashSet<[u8; 32]>) {
        let mut indices = HashSet::new();
        let mut subjects = HashSet::new();
        let size = self.provenance.with(|a| a.log().size());
        for i in (0..size).rev() {
            let entry = match self.provenance.with(|a| a.log().entry(i)) {
                Ok(e) => e,
                Err(e) => {
                    warn!(index = i, cause = %e, "cannot read a log entry");
                    continue;
                }
            };
            let Ok(LogEntry::Attestation { envelope }) = LogEntry::parse(&entry) else {
                continue;
            };
            let Some(statement) = envelope
                .payload_bytes()
                .ok()
                .and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok())
            else {
                continue;
            };
            let predicate = &statement["predicate"];
            let finished = predicate["runDetails"]["metadata"]["finishedOn"]
                .as_str()
                .and_then(|t| hermetic_attest::Timestamp::parse(t).ok())
                .map(|t| t.system_time());
            match finished {
                Some(t) if t < cutoff => {
                    if t + LOG_SLACK < cutoff {
                        break;
                    }
                    continue;
                }
                // Statements without a time (reproducibility reports) are
                // kept as recent: they are few and name baseline outputs.
                _ => {}
            }
            indices.insert(i);
            for s in statement["subject"].as_array().into_iter().flatten() {
                for hex in s["digest"].as_object().into_iter().flat_map(|m| m.values()) {
                    if let Some(h) = hex.as_str().and_then(unhex32) {
                        subjects.insert(h);
                    }
                }
            }
            let named = |v: &serde_json::Value, hash: &str, size: &str| {
                v[hash]
                    .as_str()
                    .zip(v[size].as_i64())
                    .map(|(h, s)| (h.to_owned(), s))
            };
            let params = &predicate["buildDefinition"]["externalParameters"];
            if let Some((h, s)) = named(&params["inputRootDigest"], "hash", "sizeBytes") {
                for f in DigestFunction::ALL {
                    if let Ok(k) = BlobKey::parse(f, &h, s)
                        && self.store.has(&k)
                    {
                        c.directory(&self.store, k);
                    }
                }
            }
            for b in predicate["runDetails"]["byproducts"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let h = b["digest"]["sha256"].as_str();
                let s = b["annotations"]["sizeBytes"].as_i64();
                if let (Some(h), Some(s)) = (h, s) {
                    for f in DigestFunction::ALL {
                        if let Ok(k) = BlobKey::parse(f, h, s) {
                            c.keys.insert(k);
                        }
                    }
                }
            }
        }
        (indices, subjects)
    }

    /// The mark phase.
    fn mark(&self, now: SystemTime) -> Marked {
        let cutoff = now
            .checked_sub(self.period)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut c = Closure::default();
        let (recent, subjects) = self.recent_log(cutoff, &mut c);
        if !subjects.is_empty() {
            for k in self.store.keys() {
                if subjects.contains(&k.hash) {
                    c.keys.insert(k);
                }
            }
        }
        let pins: Vec<Pin> = lock(&self.pins).list().to_vec();
        let mut action_pins: HashSet<(String, BlobKey)> = HashSet::new();
        for p in &pins {
            let Ok(key) = p.key() else { continue };
            match p.kind {
                PinKind::Blob => {
                    c.keys.insert(key);
                }
                PinKind::Directory => c.directory(&self.store, key),
                PinKind::Tree => c.tree(&self.store, key),
                PinKind::Action => {
                    c.action(&self.store, key);
                    action_pins.insert((p.instance.clone(), key));
                }
            }
        }
        let mut keep_ac = HashSet::new();
        for e in self.action_cache.entries() {
            let id = (e.instance.clone(), e.key);
            let result = match self.action_cache.get_raw_in(&e.instance, &e.key) {
                Ok(Some(r)) => r,
                _ => continue,
            };
            let young = crate::provenance::from_result(&result)
                .is_some_and(|r| recent.contains(&r.log_index));
            if young || action_pins.contains(&id) {
                c.action(&self.store, e.key);
                c.result(&self.store, e.key.function, &result);
                keep_ac.insert(id);
            }
        }
        Marked {
            retained: c.keys,
            keep_ac,
            recent: recent.len() as u64,
        }
    }

    /// One pass, as `principal`; with `dry_run`, nothing changes. Blocking.
    pub fn run(&self, principal: &str, dry_run: bool) -> Result<GcReport> {
        let _one = lock(&self.running);
        let now = SystemTime::now();
        let cutoff = now
            .checked_sub(self.period)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let before = self.store.total_bytes();
        let marked = self.mark(now);
        let mut report = GcReport {
            dry_run,
            retained_blobs: marked.retained.len() as u64,
            pins: lock(&self.pins).list().len() as u64,
            recent_attestations: marked.recent,
            store_bytes_before: before,
            retention_period_secs: self.period.as_secs(),
            ..Default::default()
        };
        if !dry_run {
            self.store.set_retained(marked.retained.clone());
        }
        // Old results nothing keeps.
        let mut removed: HashSet<(String, BlobKey)> = HashSet::new();
        let entries = self.action_cache.entries();
        for e in &entries {
            let id = (e.instance.clone(), e.key);
            if e.written < cutoff && !marked.keep_ac.contains(&id) {
                if !dry_run {
                    self.action_cache.remove(&e.instance, &e.key)?;
                }
                removed.insert(id);
            }
        }
        // A dry run plans against the set it just marked, without
        // replacing the one in force.
        let (victims, bytes) = self
            .store
            .collect(secs(cutoff), dry_run.then_some(&marked.retained));
        report.evicted_blobs = victims.len() as u64;
        report.evicted_bytes = bytes;
        // Results left naming a blob that is gone (or would be).
        let gone: HashSet<BlobKey> = victims.into_iter().collect();
        for e in &entries {
            let id = (e.instance.clone(), e.key);
            if removed.contains(&id) || marked.keep_ac.contains(&id) {
                continue;
            }
            let Ok(Some(result)) = self.action_cache.get_raw_in(&e.instance, &e.key) else {
                continue;
            };
            let mut c = Closure::default();
            c.result(&self.store, e.key.function, &result);
            if c.keys
                .iter()
                .any(|k| gone.contains(k) || !self.store.has(k))
            {
                if !dry_run {
                    self.action_cache.remove(&e.instance, &e.key)?;
                }
                removed.insert(id);
            }
        }
        report.removed_action_results = removed.len() as u64;
        report.store_bytes_after = if dry_run {
            before.saturating_sub(bytes)
        } else {
            self.store.total_bytes()
        };
        if report.store_bytes_after > self.store.max_size() {
            warn!(
                bytes = report.store_bytes_after,
                max_size = self.store.max_size(),
                retained = report.retained_blobs,
                "the store stays over cas.max_size_bytes: what is left is pinned, in use or \
                 named by provenance younger than the retention period"
            );
        }
        let changed = report.evicted_blobs > 0 || report.removed_action_results > 0;
        if !dry_run && (changed || principal != DAEMON_PRINCIPAL) {
            let details = serde_json::to_value(&report).expect("a report serializes");
            report.log_index = Some(self.provenance.log_admin("gc", principal, &details)?);
        }
        info!(
            dry_run,
            principal,
            evicted_blobs = report.evicted_blobs,
            evicted_bytes = report.evicted_bytes,
            removed_action_results = report.removed_action_results,
            retained_blobs = report.retained_blobs,
            "garbage collection"
        );
        Ok(report)
    }

    /// Pins `key` (in `instance`, for actions) as `principal`: records the
    /// pin, keeps its closure from now on and logs it. `kind` `None`: an
    /// action when the action cache has a result for it, else a blob.
    /// Blocking.
    pub fn pin(
        &self,
        principal: &str,
        instance: &str,
        key: BlobKey,
        kind: Option<PinKind>,
        note: &str,
    ) -> Result<(Pin, (u64, u64), u64)> {
        let has_result = self.action_cache.get_raw_in(instance, &key)?.is_some();
        let kind = match kind {
            Some(k) => k,
            None if has_result => PinKind::Action,
            None => PinKind::Blob,
        };
        if kind == PinKind::Action && !has_result && !self.store.has(&key) {
            return Err(Error::NotFound(format!(
                "no action {key:?} in the action cache or the CAS of instance {instance:?}"
            )));
        }
        if kind != PinKind::Action && !self.store.has(&key) {
            return Err(Error::NotFound(format!(
                "blob {key:?} is not in the CAS: there is nothing to pin"
            )));
        }
        let pin = Pin {
            instance: instance.to_owned(),
            function: key.function.name().to_owned(),
            hash: key.hex(),
            size: key.size,
            kind,
            note: note.to_owned(),
            principal: principal.to_owned(),
            created: secs(SystemTime::now()),
        };
        let c = self.closure_of(&pin);
        self.store.retain(c.keys.iter().copied());
        lock(&self.pins).add(pin.clone())?;
        let index = self
            .provenance
            .log_admin("pin", principal, &pin_details(&pin))?;
        info!(principal, pin = ?key, kind = ?kind, "pinned");
        Ok((pin, c.stored(&self.store), index))
    }

    /// Removes the pin of `key` in `instance`; its closure stays until a
    /// pass finds nothing else keeping it. Blocking.
    pub fn unpin(&self, principal: &str, instance: &str, key: BlobKey) -> Result<(Pin, u64)> {
        let pin = lock(&self.pins).remove(instance, &key)?.ok_or_else(|| {
            Error::NotFound(format!(
                "no pin for {key:?} in instance {instance:?} (`hermetic admin pins ls` lists them)"
            ))
        })?;
        let index = self
            .provenance
            .log_admin("unpin", principal, &pin_details(&pin))?;
        info!(principal, pin = ?key, "unpinned");
        Ok((pin, index))
    }

    /// Every pin with its closure's stored blobs and bytes. Blocking.
    pub fn pins(&self) -> Vec<(Pin, (u64, u64))> {
        let pins = lock(&self.pins).list().to_vec();
        pins.into_iter()
            .map(|p| {
                let stored = self.closure_of(&p).stored(&self.store);
                (p, stored)
            })
            .collect()
    }

    fn closure_of(&self, pin: &Pin) -> Closure {
        let mut c = Closure::default();
        let Ok(key) = pin.key() else { return c };
        match pin.kind {
            PinKind::Blob => {
                c.keys.insert(key);
            }
            PinKind::Directory => c.directory(&self.store, key),
            PinKind::Tree => c.tree(&self.store, key),
            PinKind::Action => {
                c.action(&self.store, key);
                if let Ok(Some(r)) = self.action_cache.get_raw_in(&pin.instance, &key) {
                    c.result(&self.store, key.function, &r);
                }
            }
        }
        c
    }

    /// Runs a pass every interval until `stop` turns true (nothing when
    /// the interval is zero).
    pub async fn periodic(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        if self.interval.is_zero() {
            return;
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            let gc = self.clone();
            let r = crate::cas::blocking(move || gc.run(DAEMON_PRINCIPAL, false)).await;
            if let Err(e) = r {
                warn!(cause = %e, "periodic garbage collection failed");
            }
        }
    }
}

/// Adds a freshly cached result with provenance (its action's closure
/// and the result's) to the store's retained set: provenance that young
/// protects it until a pass finds it older than the period.
pub fn retain_result(store: &Store, action: BlobKey, result: &ActionResult) {
    if crate::provenance::from_result(result).is_none() {
        return;
    }
    let mut c = Closure::default();
    c.action(store, action);
    c.result(store, action.function, result);
    store.retain(c.keys);
}

fn pin_details(p: &Pin) -> serde_json::Value {
    serde_json::json!({
        "instance": p.instance,
        "digest": format!("{}:{}/{}", p.function, p.hash, p.size),
        "kind": p.kind,
        "note": p.note,
    })
}

fn unhex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_defaults_and_named_errors() {
        let c = RetentionConfig::default();
        assert_eq!(c.period().unwrap(), Duration::from_secs(30 * 86400));
        assert_eq!(c.gc_interval().unwrap(), Duration::from_secs(3600));
        let c = RetentionConfig {
            period: Some("7d".into()),
            gc_interval: Some("0s".into()),
        };
        assert_eq!(c.period().unwrap(), Duration::from_secs(7 * 86400));
        assert!(c.gc_interval().unwrap().is_zero());
        let c = RetentionConfig {
            period: Some("soon".into()),
            gc_interval: None,
        };
        let e = c.period().unwrap_err().to_string();
        assert!(e.contains("retention.period") && e.contains("soon"), "{e}");
    }
}

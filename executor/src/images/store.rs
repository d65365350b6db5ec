//! The image store: `images/` in the daemon's state directory.
//!
//! ```text
//! images/
//!   <blake3 hex>/rootfs/       the normalized rootfs (read-only to actions)
//!   <blake3 hex>/image.json    hermetic_image::ImportedImage
//!   <blake3 hex>/origin.json   where it came from, when, by whom
//!   <blake3 hex>/trust.json    the latest TrustRecord, if any
//!   <blake3 hex>/refs/         one empty file per cached action result
//!                              that ran on the image
//!   aliases.json               alias -> blake3 hex
//!   configured.json            configured archives already imported
//!   .lock                      flock held by every change
//! ```
//!
//! An import is built under a dot-named directory (`.incoming-PID-UUID`,
//! which nothing lists) and renamed to its digest only when whole, so a
//! half-imported image is never visible; leftovers of a dead process are
//! removed at open. Every file written later (aliases, trust, origin) goes
//! through a temp file, fsync and rename. Changes take an in-process mutex
//! and an `flock` on `.lock`, so a daemon and `hermetic run --local` on the
//! same store do not collide; reads take no lock (every change is a
//! rename).
//!
//! The rootfs is materialized once and shared: the sandbox binds it
//! read-only as `/` of every action that names the image; the store never
//! modifies it after the rename.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use hermetic_image::{ImageError, ImportOptions, ImportedImage};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::action_cache::ActionCache;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::images::reference::{Algorithm, ImageDigest, check_alias};
use crate::images::trust::{TrustRecord, now_rfc3339};

const ALIASES: &str = "aliases.json";
const INCOMING: &str = ".incoming-";
const REMOVING: &str = ".removing-";

/// Where an image came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// What was imported: `cas blake3:HEX/SIZE` for an uploaded archive,
    /// the path for a configured image.
    pub source: String,
    /// Who imported it (as in [`TrustRecord::by`]).
    pub by: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// One stored image, as List and Inspect show it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// The BLAKE3 tree digest (the store key).
    pub digest: ImageDigest,
    /// The import record.
    pub record: ImportedImage,
    /// The rootfs in the store.
    pub rootfs: PathBuf,
    /// Aliases pointing at it, sorted.
    pub aliases: Vec<String>,
    /// The latest trust decision.
    pub trust: Option<TrustRecord>,
    /// Where it came from (absent for images stored by older versions).
    pub origin: Option<Origin>,
}

impl ImageInfo {
    /// Whether the latest trust record says trusted.
    pub fn trusted(&self) -> bool {
        self.trust.as_ref().is_some_and(|t| t.trusted)
    }
}

/// Counts of running actions per image (BLAKE3 hex).
type Leases = Arc<Mutex<HashMap<String, usize>>>;

/// A running action's hold on an image: while any exists, Remove refuses.
#[derive(Debug)]
pub struct ImageLease {
    leases: Leases,
    hex: String,
}

impl ImageLease {
    fn new(leases: Leases, hex: String) -> Self {
        *lock(&leases).entry(hex.clone()).or_default() += 1;
        ImageLease { leases, hex }
    }
}

impl Clone for ImageLease {
    fn clone(&self) -> Self {
        ImageLease::new(self.leases.clone(), self.hex.clone())
    }
}

impl Drop for ImageLease {
    fn drop(&mut self) {
        let mut map = lock(&self.leases);
        if let Some(n) = map.get_mut(&self.hex) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.hex);
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The image store.
#[derive(Debug)]
pub struct ImageStore {
    dir: PathBuf,
    fsync: bool,
    changes: Mutex<()>,
    leases: Leases,
    /// `trust.json` verdicts by BLAKE3 hex, valid while the file's stamp
    /// is unchanged (the cache-hit path, [`ImageStore::trusted_recent`]).
    trust_memo: Mutex<crate::memo::Bounded<String, (crate::memo::FileStamp, bool)>>,
}

/// Trust verdicts remembered at most.
const TRUST_MEMO: usize = 256;

/// What an import did.
#[derive(Debug)]
pub struct Imported {
    /// The image.
    pub info: ImageInfo,
    /// False when the store already held it (the new copy was discarded).
    pub new: bool,
}

/// Maps an import failure: bad input is INVALID_ARGUMENT naming the
/// problem, our own I/O is INTERNAL.
fn import_error(what: &str, e: ImageError) -> Error {
    match e {
        ImageError::Io { .. } | ImageError::DestExists(_) => {
            Error::Internal(format!("cannot import {what}: {e}"))
        }
        e => Error::InvalidArgument(format!("cannot import {what}: {e}")),
    }
}

/// Whether a process with this id runs.
fn pid_alive(pid: &str) -> bool {
    Path::new("/proc").join(pid).exists()
}

impl ImageStore {
    /// Opens (creating) the store at `dir` and removes what dead processes
    /// left half-done.
    pub fn open(dir: &Path, fsync: bool) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(Error::io("create", dir))?;
        let store = ImageStore {
            dir: dir.to_owned(),
            fsync,
            changes: Mutex::new(()),
            leases: Arc::default(),
            trust_memo: Mutex::new(crate::memo::Bounded::new(TRUST_MEMO)),
        };
        for entry in fs::read_dir(dir).map_err(Error::io("read", dir))?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rest = name
                .strip_prefix('.')
                .and_then(|n| n.strip_prefix('.').or(Some(n)))
                .and_then(|n| {
                    n.strip_prefix(&INCOMING[1..])
                        .or_else(|| n.strip_prefix(&REMOVING[1..]))
                });
            if let Some(pid) = rest.and_then(|r| r.split('-').next())
                && !pid_alive(pid)
            {
                let path = entry.path();
                let _ = if path.is_dir() {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
            }
        }
        Ok(store)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs `f` holding the change lock (in-process and `flock`).
    fn changing<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let _guard = lock(&self.changes);
        let path = self.dir.join(".lock");
        let file = File::create(&path).map_err(Error::io("create", &path))?;
        let _flock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| Error::io("lock", &path)(std::io::Error::from(e)))?;
        f()
    }

    /// Writes `dir/name` durably: temp file, fsync, rename, fsync of `dir`.
    pub(crate) fn write_file(&self, dir: &Path, name: &str, data: &[u8]) -> Result<()> {
        let tmp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4()));
        let path = dir.join(name);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(data)?;
            if self.fsync {
                f.sync_all()?;
            }
            fs::rename(&tmp, &path)?;
            if self.fsync {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            Error::io("write", &path)(e)
        })
    }

    fn aliases(&self) -> Result<BTreeMap<String, String>> {
        let path = self.dir.join(ALIASES);
        match fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::Internal(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io("read", path)(e)),
        }
    }

    fn write_aliases(&self, aliases: &BTreeMap<String, String>) -> Result<()> {
        let data = serde_json::to_vec_pretty(aliases).expect("aliases serialize");
        self.write_file(&self.dir, ALIASES, &data)
    }

    fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
        match fs::read(path) {
            Ok(data) => serde_json::from_slice(&data)
                .map(Some)
                .map_err(|e| Error::Internal(format!("{} is corrupt: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path)(e)),
        }
    }

    /// The image stored under a BLAKE3 hex, if any.
    fn load(&self, hex: &str, aliases: &BTreeMap<String, String>) -> Result<Option<ImageInfo>> {
        let dir = self.dir.join(hex);
        let Some(record) = Self::read_json::<ImportedImage>(&dir.join("image.json"))? else {
            return Ok(None);
        };
        Ok(Some(ImageInfo {
            digest: ImageDigest {
                algorithm: Algorithm::Blake3,
                hex: hex.to_owned(),
            },
            rootfs: dir.join("rootfs"),
            aliases: aliases
                .iter()
                .filter(|(_, h)| *h == hex)
                .map(|(a, _)| a.clone())
                .collect(),
            trust: Self::read_json(&dir.join("trust.json"))?,
            origin: Self::read_json(&dir.join("origin.json"))?,
            record,
        }))
    }

    fn hexes(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)
            .map_err(Error::io("read", &self.dir))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                out.push(name);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Every stored image, by digest.
    pub fn list(&self) -> Result<Vec<ImageInfo>> {
        let aliases = self.aliases()?;
        let mut out = Vec::new();
        for hex in self.hexes()? {
            if let Some(info) = self.load(&hex, &aliases)? {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// The image a digest names, if stored.
    pub fn get(&self, digest: &ImageDigest) -> Result<Option<ImageInfo>> {
        let aliases = self.aliases()?;
        match digest.algorithm {
            Algorithm::Blake3 => self.load(&digest.hex, &aliases),
            Algorithm::Sha256 => {
                for hex in self.hexes()? {
                    if let Some(info) = self.load(&hex, &aliases)?
                        && ImageDigest::from_formatted(
                            Algorithm::Sha256,
                            &info.record.digest_sha256,
                        )? == *digest
                    {
                        return Ok(Some(info));
                    }
                }
                Ok(None)
            }
        }
    }

    /// Whether the image's latest trust record says trusted (false when it
    /// has none or is not stored). One small read for the BLAKE3 form.
    pub fn trusted(&self, digest: &ImageDigest) -> Result<bool> {
        match digest.algorithm {
            Algorithm::Blake3 => {
                let path = self.dir.join(&digest.hex).join("trust.json");
                // The stamp before the read: a change after it is seen by
                // the next `trusted_recent` as a different stamp.
                let stamp = crate::memo::FileStamp::current(&path);
                let trusted = Self::read_json::<TrustRecord>(&path)?.is_some_and(|t| t.trusted);
                if let Some(stamp) = stamp {
                    crate::memo::lock(&self.trust_memo)
                        .insert(digest.hex.clone(), (stamp, trusted));
                }
                Ok(trusted)
            }
            Algorithm::Sha256 => Ok(self.get(digest)?.is_some_and(|i| i.trusted())),
        }
    }

    /// [`ImageStore::trusted`] from memory and one `stat`: the verdict of
    /// the last read of the image's `trust.json` while the file is
    /// unchanged; `None` when unknown (BLAKE3 form only).
    pub fn trusted_recent(&self, digest: &ImageDigest) -> Option<bool> {
        if digest.algorithm != Algorithm::Blake3 {
            return None;
        }
        let (stamp, trusted) = *crate::memo::lock(&self.trust_memo).get(&digest.hex)?;
        let path = self.dir.join(&digest.hex).join("trust.json");
        (crate::memo::FileStamp::current(&path) == Some(stamp)).then_some(trusted)
    }

    /// Resolves an alias or a digest form to a stored image; NOT_FOUND
    /// names what was asked for and what exists.
    pub fn resolve(&self, name: &str) -> Result<ImageInfo> {
        if let Some(digest) = ImageDigest::parse(name)? {
            return self.get(&digest)?.ok_or_else(|| {
                Error::NotFound(format!(
                    "image {digest} is not in this daemon's image store; import it with \
                     `hermetic image import ARCHIVE`"
                ))
            });
        }
        let aliases = self.aliases()?;
        let missing = || {
            let known: Vec<&str> = aliases.keys().map(String::as_str).collect();
            Error::NotFound(format!(
                "no image is called {name:?} (aliases: {}); import one with \
                 `hermetic image import ARCHIVE --name {name}`",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        };
        let hex = aliases.get(name).ok_or_else(missing)?;
        self.load(hex, &aliases)?.ok_or_else(missing)
    }

    /// Imports an image from `source` (an archive, an OCI layout directory
    /// or a rootfs tarball; see `hermetic_image::import`). `what` names the
    /// source in errors.
    pub fn import(
        &self,
        source: &Path,
        what: &str,
        opts: &ImportOptions,
        origin: Origin,
    ) -> Result<Imported> {
        let staging = self.staging_path(INCOMING);
        let record =
            hermetic_image::import(source, &staging, opts).map_err(|e| import_error(what, e))?;
        let cleanup = scopeguard(&staging);
        let digest = ImageDigest::from_formatted(Algorithm::Blake3, &record.digest_blake3)?;
        let origin_json = serde_json::to_vec_pretty(&origin).expect("origin serializes");
        self.write_file(&staging, "origin.json", &origin_json)?;
        let final_dir = self.dir.join(&digest.hex);
        let new = self.changing(|| {
            if final_dir.join("image.json").exists() {
                return Ok(false);
            }
            fs::rename(&staging, &final_dir).map_err(Error::io("rename", &staging))?;
            if self.fsync {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(Error::io("sync", &self.dir))?;
            }
            Ok(true)
        })?;
        drop(cleanup);
        let info = self
            .get(&digest)?
            .ok_or_else(|| Error::Internal(format!("imported image {digest} vanished")))?;
        Ok(Imported { info, new })
    }

    /// A fresh dot-named path in the store for this process.
    pub(crate) fn staging_path(&self, prefix: &str) -> PathBuf {
        self.dir.join(format!(
            "{prefix}{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ))
    }

    /// Points `alias` at `image` (replacing what it named before).
    pub fn set_alias(&self, alias: &str, image: &ImageDigest) -> Result<()> {
        check_alias(alias)?;
        self.changing(|| {
            if !self.dir.join(&image.hex).join("image.json").exists() {
                return Err(Error::NotFound(format!("image {image} is not stored")));
            }
            let mut aliases = self.aliases()?;
            if aliases.get(alias) == Some(&image.hex) {
                return Ok(());
            }
            aliases.insert(alias.to_owned(), image.hex.clone());
            self.write_aliases(&aliases)
        })
    }

    /// Records a trust decision about `info`.
    pub fn set_trust(&self, info: &ImageInfo, trusted: bool, by: &str) -> Result<TrustRecord> {
        let record = TrustRecord {
            version: 1,
            image: info.digest.to_string(),
            digest_sha256: info.record.digest_sha256.clone(),
            trusted,
            by: by.to_owned(),
            at: now_rfc3339(),
        };
        let dir = self.dir.join(&info.digest.hex);
        self.changing(|| {
            if !dir.join("image.json").exists() {
                return Err(Error::NotFound(format!(
                    "image {} is not stored",
                    info.digest
                )));
            }
            self.write_file(&dir, "trust.json", &record.trust_record_bytes())
        })?;
        Ok(record)
    }

    /// A hold on the image for a running action; FAILED_PRECONDITION when
    /// it was removed meanwhile.
    pub fn lease(&self, digest: &ImageDigest) -> Result<ImageLease> {
        // Checked and counted under one lock: Remove holds it from its own
        // check until the rename, so it never removes a leased image.
        let mut leases = lock(&self.leases);
        if !self.dir.join(&digest.hex).join("image.json").exists() {
            return Err(Error::FailedPrecondition(format!(
                "image {digest} was removed from this daemon"
            )));
        }
        *leases.entry(digest.hex.clone()).or_default() += 1;
        Ok(ImageLease {
            leases: self.leases.clone(),
            hex: digest.hex.clone(),
        })
    }

    /// Notes that the result of `action` (cached under `instance`) ran on
    /// the image, so that Remove refuses while that result is cached.
    pub fn record_use(&self, digest: &ImageDigest, instance: &str, action: &BlobKey) -> Result<()> {
        let refs = self.dir.join(&digest.hex).join("refs");
        fs::create_dir_all(&refs).map_err(Error::io("create", &refs))?;
        let inst: String = instance.bytes().map(|b| format!("{b:02x}")).collect();
        let name = format!(
            "{}-{}-{}@{inst}",
            action.function.name(),
            action.hex(),
            action.size
        );
        let path = refs.join(name);
        File::create(&path).map_err(Error::io("create", &path))?;
        if self.fsync {
            File::open(&refs)
                .and_then(|d| d.sync_all())
                .map_err(Error::io("sync", &refs))?;
        }
        Ok(())
    }

    /// Cached action results that ran on the image and are still in the
    /// action cache; references whose result is gone are dropped.
    pub fn references(&self, digest: &ImageDigest, ac: &ActionCache) -> Result<Vec<String>> {
        let refs = self.dir.join(&digest.hex).join("refs");
        let entries = match fs::read_dir(&refs) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read", &refs)(e)),
        };
        let mut live = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let parsed = parse_ref(&name);
            let cached = match &parsed {
                Some((instance, key)) => ac.get_raw_in(instance, key)?.is_some(),
                None => false,
            };
            match parsed {
                Some((instance, key)) if cached => {
                    live.push(if instance.is_empty() {
                        format!("{key:?}")
                    } else {
                        format!("{key:?} (instance {instance:?})")
                    });
                }
                _ => {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        live.sort();
        Ok(live)
    }

    /// Removes an image and the aliases naming it, refusing while a running
    /// action holds it, while `protected` (the daemon's default image) is
    /// it, or while a cached action result that ran on it remains (see
    /// [`ImageStore::references`]). Returns the aliases removed.
    pub fn remove(
        &self,
        info: &ImageInfo,
        ac: &ActionCache,
        protected: Option<&ImageDigest>,
    ) -> Result<Vec<String>> {
        let digest = &info.digest;
        if protected == Some(digest) {
            return Err(Error::FailedPrecondition(format!(
                "image {digest} is the daemon's default image (default_image in its config)"
            )));
        }
        let refs = self.references(digest, ac)?;
        if !refs.is_empty() {
            let shown: Vec<&str> = refs.iter().take(3).map(String::as_str).collect();
            return Err(Error::FailedPrecondition(format!(
                "image {digest} is referenced by {} cached action result(s), e.g. {}; \
                 it can be removed once they are gone from the action cache",
                refs.len(),
                shown.join(", ")
            )));
        }
        let graveyard = self.staging_path(REMOVING);
        let removed = self.changing(|| {
            let leases = lock(&self.leases);
            if let Some(n) = leases.get(&digest.hex) {
                return Err(Error::FailedPrecondition(format!(
                    "image {digest} is in use by {n} running action(s)"
                )));
            }
            let dir = self.dir.join(&digest.hex);
            fs::rename(&dir, &graveyard).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => {
                    Error::NotFound(format!("image {digest} is not stored"))
                }
                _ => Error::io("rename", &dir)(e),
            })?;
            drop(leases);
            let mut aliases = self.aliases()?;
            let removed: Vec<String> = aliases
                .iter()
                .filter(|(_, h)| **h == digest.hex)
                .map(|(a, _)| a.clone())
                .collect();
            if !removed.is_empty() {
                aliases.retain(|_, h| *h != digest.hex);
                self.write_aliases(&aliases)?;
            }
            if self.fsync {
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(Error::io("sync", &self.dir))?;
            }
            Ok(removed)
        })?;
        fs::remove_dir_all(&graveyard).map_err(Error::io("remove", &graveyard))?;
        Ok(removed)
    }
}

/// Parses a `refs/` entry: `FUNCTION-HEX-SIZE@INSTANCEHEX`.
fn parse_ref(name: &str) -> Option<(String, BlobKey)> {
    let (key, inst) = name.split_once('@')?;
    let mut parts = key.splitn(3, '-');
    let function = DigestFunction::from_segment(parts.next()?).ok()??;
    let hash = parts.next()?;
    let size = parts.next()?.parse().ok()?;
    let key = BlobKey::parse(function, hash, size).ok()?;
    let bytes: Option<Vec<u8>> = (0..inst.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(inst.get(i..i + 2)?, 16).ok())
        .collect();
    Some((String::from_utf8(bytes?).ok()?, key))
}

/// Removes a staging directory on drop unless it was renamed away.
struct StagingGuard<'a>(&'a Path);

impl Drop for StagingGuard<'_> {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = fs::remove_dir_all(self.0);
        }
    }
}

fn scopeguard(path: &Path) -> StagingGuard<'_> {
    StagingGuard(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leased_image_is_not_removed_and_refs_of_gone_results_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let rootfs = dir.path().join("src");
        fs::create_dir_all(&rootfs).unwrap();
        fs::write(rootfs.join("file"), b"x").unwrap();
        let store = ImageStore::open(&dir.path().join("images"), false).unwrap();
        crate::images::configured::import_all(&store, &[("a".to_owned(), rootfs)].into()).unwrap();
        let info = store.resolve("a").unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let ac = ActionCache::open(dir.path(), &tmp, false).unwrap();

        let lease = store.lease(&info.digest).unwrap();
        let second = lease.clone();
        drop(lease);
        let e = store.remove(&info, &ac, None).unwrap_err();
        assert!(e.to_string().contains("1 running action"), "{e}");
        drop(second);

        // A reference whose result is not in the action cache is stale.
        let action = crate::digest::key_of(DigestFunction::Blake3, b"action");
        store.record_use(&info.digest, "", &action).unwrap();
        assert!(store.references(&info.digest, &ac).unwrap().is_empty());
        store.record_use(&info.digest, "team/a", &action).unwrap();
        ac.put_in("team/a", &action, &Default::default()).unwrap();
        let refs = store.references(&info.digest, &ac).unwrap();
        assert_eq!(refs.len(), 1);
        assert!(refs[0].contains("team/a"), "{refs:?}");
        assert!(store.remove(&info, &ac, None).is_err());
        assert!(store.remove(&info, &ac, Some(&info.digest)).is_err());

        // Once the result is gone, the image goes, with its alias.
        let other = ActionCache::open(&dir.path().join("other"), &tmp, false).unwrap();
        assert_eq!(store.remove(&info, &other, None).unwrap(), ["a"]);
        assert!(store.list().unwrap().is_empty());
        assert!(store.lease(&info.digest).is_err());
        assert!(store.resolve("a").is_err());
    }
}

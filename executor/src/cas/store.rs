//! The on-disk content-addressed store.
//!
//! Layout under the state directory:
//! - `cas/{sha256|blake3}/{hh}/{hash}`: a blob, read-only (0444);
//! - `cas/{sha256|blake3}/{hh}/{hash}.x`: its executable copy (0555), made
//!   only when needed, since staging hardlinks blobs and the executable bit
//!   belongs to the inode;
//! - `tmp/`: uploads in progress, emptied at start-up;
//! - `journal/`: the write-ahead log of batched small blobs
//!   ([`crate::cas::journal`]), replayed and emptied at start-up;
//! - `cas.lock`: held (`flock`) by the one process that has the store open.
//!
//! Every blob is written to a temp file, verified against its digest,
//! fsynced, made read-only and renamed into place, so a crash never leaves a
//! torn or wrong blob under a blob's name; a batch in journal mode is made
//! durable in the journal instead, its files by a later checkpoint, and a
//! replay at start-up mends what a crash left. Large uploads are written around
//! the page cache ([`crate::cas::direct`]). All methods block: call them from
//! `spawn_blocking` (see [`crate::cas::blocking`]).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::{debug, info, warn};

use crate::cas::direct;
use crate::cas::index::Index;
use crate::cas::journal::{self, Journal};
use crate::digest::{BlobKey, DigestFunction, Hasher};
use crate::error::{Error, Result};

/// Read-only mode of a plain blob.
const PLAIN_MODE: u32 = 0o444;
/// Mode of an executable blob.
const EXEC_MODE: u32 = 0o555;
/// Read buffer size when hashing files.
const CHUNK: usize = 1 << 20;

/// The store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    /// How batches are made durable (see `crate::cas::batch`).
    batch_commit: crate::config::BatchCommit,
    max_size: u64,
    index: Mutex<Index>,
    /// Blobs written but not yet durable ([`Store::put_deferred`]),
    /// readable from their temp files. Lock order: `index`, then this.
    deferred: Mutex<HashMap<BlobKey, PathBuf>>,
    /// The journal, in a store that fsyncs with `batch_commit = "journal"`.
    journal: Option<Journal>,
    stats: StoreStats,
    /// The exclusive `flock` on `cas.lock`: one process per store, since
    /// opening one empties its `tmp/` and replays its journal. Declared
    /// last, so it is released after the journal's final checkpoint.
    _lock: nix::fcntl::Flock<File>,
}

/// Running totals since start-up (for metrics).
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Bytes of blobs newly installed.
    pub written_bytes: std::sync::atomic::AtomicU64,
    /// Bytes of blobs opened for reading.
    pub read_bytes: std::sync::atomic::AtomicU64,
    /// Blobs evicted.
    pub evicted_blobs: std::sync::atomic::AtomicU64,
}

impl Store {
    /// Opens (creating) the store under `state_dir`, empties `tmp/`,
    /// rebuilds the index from disk and replays the journal; batches are
    /// committed the default way ([`Store::open_with`] to choose).
    pub fn open(state_dir: &Path, max_size: u64, fsync: bool) -> Result<Self> {
        Self::open_with(
            state_dir,
            max_size,
            fsync,
            crate::config::BatchCommit::default(),
            journal::Limits::default(),
        )
    }

    /// [`Store::open`], with how batches are made durable and, for the
    /// journal, when it checkpoints. The journal is replayed whatever the
    /// mode: an earlier run may have used it.
    pub fn open_with(
        state_dir: &Path,
        max_size: u64,
        fsync: bool,
        batch_commit: crate::config::BatchCommit,
        limits: journal::Limits,
    ) -> Result<Self> {
        fs::create_dir_all(state_dir).map_err(Error::io("create", state_dir))?;
        let lock = lock(&state_dir.join("cas.lock"))?;
        let root = state_dir.join("cas");
        let tmp = state_dir.join("tmp");
        let journal_dir = state_dir.join("journal");
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(Error::io("clear", &tmp))?;
        }
        for dir in [&root, &tmp] {
            fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        }
        let mut store = Store {
            index: Mutex::new(scan(&root)?),
            deferred: Mutex::default(),
            journal: None,
            stats: StoreStats::default(),
            root,
            tmp,
            fsync,
            batch_commit,
            max_size,
            _lock: lock,
        };
        journal::replay(&store, &journal_dir)?;
        if fsync && batch_commit == crate::config::BatchCommit::Journal {
            store.journal = Some(Journal::open(&journal_dir, limits)?);
        }
        for f in DigestFunction::ALL {
            store.put_bytes(f.empty(), &[])?;
            store.lock().pin(f.empty());
        }
        let idx = store.lock();
        info!(blobs = idx.len(), bytes = idx.total_bytes(), "opened CAS");
        drop(idx);
        Ok(store)
    }

    /// The journal, when batches are committed through it.
    pub(super) fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    /// The journal's figures; all zero without a journal.
    pub fn journal_stats(&self) -> journal::Stats {
        self.journal
            .as_ref()
            .map(Journal::stats)
            .unwrap_or_default()
    }

    /// Makes every journaled blob's file durable and empties the journal
    /// (at shutdown, so that the next start has nothing to replay).
    pub fn checkpoint(&self) {
        if let Some(journal) = &self.journal {
            journal.checkpoint_now();
        }
    }

    /// Makes sure `key`'s plain file holds `data` (which hashes to `key`),
    /// writing it again when it is missing, short or wrong, without an
    /// fsync (journal replay flushes once at its end). Returns whether it
    /// was written.
    pub(super) fn restore(&self, key: BlobKey, data: &[u8]) -> Result<bool> {
        let path = self.path(&key, false);
        if let Ok(found) = fs::read(&path) {
            let found = crate::digest::key_of(key.function, &found);
            if found == key {
                self.lock().insert(key, false);
                return Ok(false);
            }
            // Indexed by the start-up scan under the size it has on disk.
            let scanned = BlobKey {
                size: found.size,
                ..key
            };
            if scanned != key {
                self.lock().remove(&scanned);
            }
        }
        let mut w = self.writer(key.function)?;
        w.write(data)?;
        w.verify(key)?;
        self.install_unsynced(w.path(), key, false)?;
        Ok(true)
    }

    /// How batches are made durable.
    pub fn batch_commit(&self) -> crate::config::BatchCommit {
        self.batch_commit
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory for temp files on the store's filesystem.
    pub fn tmp_dir(&self) -> &Path {
        &self.tmp
    }

    /// Bytes stored.
    pub fn total_bytes(&self) -> u64 {
        self.lock().total_bytes()
    }

    fn path(&self, key: &BlobKey, exec: bool) -> PathBuf {
        let hex = key.hex();
        let mut p = self.root.join(key.function.name()).join(&hex[..2]);
        p.push(if exec { format!("{hex}.x") } else { hex });
        p
    }

    fn lock_deferred(&self) -> std::sync::MutexGuard<'_, HashMap<BlobKey, PathBuf>> {
        self.deferred.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the blob is stored (touching it), or deferred.
    pub fn contains(&self, key: &BlobKey) -> bool {
        let mut idx = self.lock();
        idx.touch(key).is_some() || self.lock_deferred().contains_key(key)
    }

    /// The subset of `keys` neither stored nor deferred, in order.
    pub fn find_missing(&self, keys: &[BlobKey]) -> Vec<BlobKey> {
        let mut idx = self.lock();
        let mut missing: Vec<BlobKey> = keys
            .iter()
            .filter(|k| idx.touch(k).is_none())
            .copied()
            .collect();
        if !missing.is_empty() {
            let deferred = self.lock_deferred();
            if !deferred.is_empty() {
                missing.retain(|k| !deferred.contains_key(k));
            }
        }
        missing
    }

    /// Stores `data` under `key` after checking that it hashes to `key`.
    pub fn put_bytes(&self, key: BlobKey, data: &[u8]) -> Result<()> {
        let actual = crate::digest::key_of(key.function, data);
        if actual != key {
            return Err(Error::DigestMismatch {
                expected: key,
                actual,
            });
        }
        if self.contains(&key) {
            return Ok(());
        }
        let mut w = self.writer(key.function)?;
        w.write(data)?;
        self.commit(w, key)
    }

    /// Hashes and stores `data`, returning its key.
    pub fn put_new(&self, function: DigestFunction, data: &[u8]) -> Result<BlobKey> {
        let key = crate::digest::key_of(function, data);
        self.put_bytes(key, data)?;
        Ok(key)
    }

    /// Hashes `data` and writes it to a temp file without waiting for the
    /// disk: from now on the blob is found and read like a stored one, but
    /// a power cut may lose it. [`Store::make_durable`] then fsyncs it and
    /// moves it into place. For blobs on an action's response path (its
    /// execution log) whose durability can follow the response: nothing
    /// durable (an action cache entry) may name the blob before it is made
    /// durable. `None` when there is nothing to wait for (already stored,
    /// or the store does not fsync).
    pub fn put_deferred(
        &self,
        function: DigestFunction,
        data: &[u8],
    ) -> Result<(BlobKey, Option<Deferred>)> {
        let key = crate::digest::key_of(function, data);
        if !self.fsync || self.contains(&key) {
            self.put_bytes(key, data)?;
            return Ok((key, None));
        }
        let path = self.temp_path();
        let guard = TempGuard(path.clone());
        let mut file = File::create(&path).map_err(Error::io("create", &path))?;
        file.write_all(data).map_err(Error::io("write", &path))?;
        let mut deferred = self.lock_deferred();
        if deferred.contains_key(&key) {
            // Deferred by another writer meanwhile: its copy serves.
            return Ok((key, None));
        }
        deferred.insert(key, path.clone());
        std::mem::forget(guard);
        Ok((key, Some(Deferred { key, path, file })))
    }

    /// Makes a [`Store::put_deferred`] blob durable (fsync, rename into
    /// place, fsync of its directory). On failure the blob is gone.
    pub fn make_durable(&self, d: Deferred) -> Result<()> {
        let done = d
            .file
            .sync_all()
            .map_err(Error::io("fsync", &d.path))
            .and_then(|()| self.install(&d.path, d.key, false));
        // Installed (or failed): readers now find it in the index (or not
        // at all), never at the temp path.
        self.lock_deferred().remove(&d.key);
        if done.is_err() {
            let _ = fs::remove_file(&d.path);
        }
        done
    }

    /// A fresh name under `tmp/` (emptied at start-up).
    fn temp_path(&self) -> PathBuf {
        self.tmp.join(uuid::Uuid::new_v4().to_string())
    }

    /// Starts a streamed write into a temp file.
    pub fn writer(&self, function: DigestFunction) -> Result<BlobWriter> {
        let path = self.temp_path();
        let file = File::create(&path).map_err(Error::io("create", &path))?;
        Ok(self.blob_writer(file, path, function, None))
    }

    /// Starts a streamed write of `key`'s bytes: [`Store::writer`], but a
    /// large blob of a store that fsyncs is written around the page cache
    /// (see [`crate::cas::direct`]).
    pub fn writer_for(&self, key: BlobKey) -> Result<BlobWriter> {
        if !self.fsync || key.size < direct::DIRECT_MIN {
            return self.writer(key.function);
        }
        let path = self.temp_path();
        match direct::create(&path).map_err(Error::io("create", &path))? {
            Some(file) => {
                Ok(self.blob_writer(file, path, key.function, Some(direct::DirectBuf::default())))
            }
            None => self.writer(key.function),
        }
    }

    /// A writer of the new temp file `file` at `path`; early writeback
    /// only for buffered writes of a store that fsyncs.
    fn blob_writer(
        &self,
        file: File,
        path: PathBuf,
        function: DigestFunction,
        direct: Option<direct::DirectBuf>,
    ) -> BlobWriter {
        BlobWriter {
            file,
            path,
            hasher: function.hasher(),
            written: 0,
            early_writeback: self.fsync && direct.is_none(),
            direct,
        }
    }

    /// Verifies a finished write against `expected` and moves it into
    /// place; on a mismatch the temp file is removed and nothing is stored.
    pub fn commit(&self, writer: BlobWriter, expected: BlobKey) -> Result<()> {
        // Verified and fsynced first, so nothing torn is ever under a
        // blob's name; the writer's Drop removes the temp file unless it
        // was renamed.
        let writer = self.seal(writer, expected)?;
        let dir = self.install_unsynced(&writer.path, expected, false)?;
        if self.fsync {
            sync_dir(&dir)?;
        }
        self.evict();
        Ok(())
    }

    /// Checks a finished write against `expected` and makes its bytes
    /// durable (when the store fsyncs), ready to be renamed into place.
    /// On a mismatch the writer is dropped, which removes the temp file.
    pub(super) fn seal(&self, mut writer: BlobWriter, expected: BlobKey) -> Result<BlobWriter> {
        let actual = writer.hasher.clone().finish_sized(writer.written);
        if actual != expected {
            return Err(Error::DigestMismatch { expected, actual });
        }
        writer.finish_writes()?;
        if self.fsync {
            writer
                .file
                .sync_all()
                .map_err(Error::io("fsync", &writer.path))?;
        }
        Ok(writer)
    }

    /// Moves a verified file into place as `key`'s variant, setting its
    /// mode, and records it.
    fn install(&self, src: &Path, key: BlobKey, exec: bool) -> Result<()> {
        let dir = self.install_unsynced(src, key, exec)?;
        if self.fsync {
            sync_dir(&dir)?;
        }
        self.evict();
        Ok(())
    }

    /// [`Store::install`] without the directory's fsync or eviction (the
    /// caller does both, once for many blobs); returns the directory.
    pub(super) fn install_unsynced(&self, src: &Path, key: BlobKey, exec: bool) -> Result<PathBuf> {
        let mode = if exec { EXEC_MODE } else { PLAIN_MODE };
        fs::set_permissions(src, fs::Permissions::from_mode(mode))
            .map_err(Error::io("chmod", src))?;
        let dst = self.path(&key, exec);
        let dir = dst.parent().expect("blob paths have a parent");
        if !dir.exists() {
            fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        }
        {
            // Rename and index update under the lock, so eviction cannot
            // unlink the new file between the two.
            let mut idx = self.lock();
            fs::rename(src, &dst).map_err(Error::io("rename into the CAS", &dst))?;
            idx.insert(key, exec);
        }
        self.stats
            .written_bytes
            .fetch_add(key.size, std::sync::atomic::Ordering::Relaxed);
        Ok(dir.to_owned())
    }

    /// The temp directory, open (for `syncfs` of the store's filesystem).
    pub(super) fn open_tmp(&self) -> Result<File> {
        File::open(&self.tmp).map_err(Error::io("open", &self.tmp))
    }

    /// Whether blobs are fsynced before they are acknowledged.
    pub(super) fn fsyncs(&self) -> bool {
        self.fsync
    }

    /// Ingests a file produced by an action (on the same filesystem):
    /// hashes it and renames it into the store, or removes it when the blob
    /// is already there. Returns its key.
    pub fn ingest_file(&self, src: &Path, function: DigestFunction, exec: bool) -> Result<BlobKey> {
        let key = hash_file(src, function)?;
        let have = self.lock().touch(&key).unwrap_or_default();
        if (exec && have.exec) || (!exec && have.plain) {
            fs::remove_file(src).map_err(Error::io("remove", src))?;
            return Ok(key);
        }
        if self.fsync {
            File::open(src)
                .and_then(|f| f.sync_all())
                .map_err(Error::io("fsync", src))?;
        }
        self.install(src, key, exec)?;
        Ok(key)
    }

    /// The whole blob in memory (for protos and small blobs).
    pub fn read(&self, key: &BlobKey) -> Result<Vec<u8>> {
        let mut file = self.open_blob(key)?;
        let mut data = Vec::with_capacity(key.size as usize);
        file.read_to_end(&mut data)
            .map_err(Error::io("read", self.path(key, false)))?;
        Ok(data)
    }

    /// Opens the blob for reading.
    pub fn open_blob(&self, key: &BlobKey) -> Result<File> {
        let not_found = || Error::NotFound(format!("blob {} not found", key.missing_subject()));
        let v = {
            let mut idx = self.lock();
            match idx.touch(key) {
                Some(v) => v,
                None => {
                    let deferred = self.lock_deferred().get(key).cloned();
                    drop(idx);
                    let path = deferred.ok_or_else(not_found)?;
                    match File::open(&path) {
                        Ok(file) => return Ok(file),
                        // Made durable since: in its place now.
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                            self.lock().touch(key).ok_or_else(not_found)?
                        }
                        Err(e) => return Err(Error::io("open", path)(e)),
                    }
                }
            }
        };
        let path = self.path(key, !v.plain);
        let file = File::open(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(),
            _ => Error::io("open", path)(e),
        })?;
        self.stats
            .read_bytes
            .fetch_add(key.size, std::sync::atomic::Ordering::Relaxed);
        Ok(file)
    }

    /// Running totals since start-up.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// A file holding the blob with the given executable bit, for
    /// hardlinking into an input tree; the variant is made when missing.
    pub fn variant_path(&self, key: &BlobKey, exec: bool) -> Result<PathBuf> {
        let v = self
            .lock()
            .touch(key)
            .ok_or_else(|| Error::MissingBlobs(vec![*key]))?;
        let have = if exec { v.exec } else { v.plain };
        if !have {
            let src = self.path(key, !exec);
            let tmp = self.temp_path();
            let guard = TempGuard(tmp.clone());
            fs::copy(&src, &tmp).map_err(Error::io("copy", &src))?;
            self.install(&tmp, *key, exec)?;
            std::mem::forget(guard);
        }
        Ok(self.path(key, exec))
    }

    /// Pins blobs against eviction until the guard is dropped.
    pub fn pin(self: &std::sync::Arc<Self>, keys: Vec<BlobKey>) -> PinGuard {
        let mut idx = self.lock();
        for k in &keys {
            idx.pin(*k);
        }
        drop(idx);
        PinGuard {
            store: self.clone(),
            keys,
        }
    }

    /// Whether the blob is stored (or deferred), without touching it (the
    /// garbage collector's looks are not uses).
    pub fn has(&self, key: &BlobKey) -> bool {
        let idx = self.lock();
        idx.get(key).is_some() || self.lock_deferred().contains_key(key)
    }

    /// The whole blob, without touching it; `NotFound` when absent.
    pub fn peek(&self, key: &BlobKey) -> Result<Vec<u8>> {
        let v = self.lock().get(key);
        let not_found = || Error::NotFound(format!("blob {} not found", key.missing_subject()));
        let v = v.ok_or_else(not_found)?;
        let path = self.path(key, !v.plain);
        fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => not_found(),
            _ => Error::io("read", path)(e),
        })
    }

    /// The eviction threshold, in bytes.
    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    /// Replaces the set of blobs no eviction may take (see `crate::gc`).
    pub fn set_retained(&self, keys: std::collections::HashSet<BlobKey>) {
        self.lock().set_retained(keys);
    }

    /// Adds blobs to the retained set.
    pub fn retain(&self, keys: impl IntoIterator<Item = BlobKey>) {
        self.lock().retain(keys);
    }

    /// Every stored blob.
    pub fn keys(&self) -> Vec<BlobKey> {
        self.lock().keys().copied().collect()
    }

    /// One garbage collection sweep: evicts every blob neither pinned nor
    /// retained that was last used before `cutoff` (seconds since the
    /// epoch), then least recently used ones while over the size limit.
    /// A dry run (`dry_run`: the retained set to plan with, instead of the
    /// one in force) only says what it would evict. Returns the blobs and
    /// the bytes freed.
    pub fn collect(
        &self,
        cutoff: u64,
        dry_run: Option<&std::collections::HashSet<BlobKey>>,
    ) -> (Vec<BlobKey>, u64) {
        let mut idx = self.lock();
        let plan = idx.plan(self.max_size, cutoff, dry_run);
        let bytes = plan.iter().map(|k| idx.bytes_of(k)).sum();
        if dry_run.is_some() {
            return (plan, bytes);
        }
        for key in &plan {
            let Some(v) = idx.remove(key) else { continue };
            for (present, exec) in [(v.plain, false), (v.exec, true)] {
                if present && let Err(e) = fs::remove_file(self.path(key, exec)) {
                    warn!(blob = ?key, cause = %e, "cannot remove a collected blob");
                }
            }
        }
        drop(idx);
        self.stats
            .evicted_blobs
            .fetch_add(plan.len() as u64, std::sync::atomic::Ordering::Relaxed);
        (plan, bytes)
    }

    /// Evicts least-recently-used unpinned blobs while over the limit.
    pub fn evict(&self) {
        let victims = {
            let mut idx = self.lock();
            let victims = idx.evict_to(self.max_size);
            for (key, v) in &victims {
                for (present, exec) in [(v.plain, false), (v.exec, true)] {
                    if present && let Err(e) = fs::remove_file(self.path(key, exec)) {
                        warn!(blob = ?key, cause = %e, "cannot remove evicted blob");
                    }
                }
            }
            victims
        };
        if !victims.is_empty() {
            self.stats
                .evicted_blobs
                .fetch_add(victims.len() as u64, std::sync::atomic::Ordering::Relaxed);
            debug!(count = victims.len(), "evicted blobs");
        }
    }
}

/// A blob written by [`Store::put_deferred`], waiting for
/// [`Store::make_durable`]. Dropped without it, the blob stays readable
/// until the daemon restarts (its temp file is removed then).
#[derive(Debug)]
#[must_use = "a deferred blob is lost at restart unless made durable"]
pub struct Deferred {
    key: BlobKey,
    path: PathBuf,
    file: File,
}

/// Releases pins on drop.
#[derive(Debug)]
pub struct PinGuard {
    store: std::sync::Arc<Store>,
    keys: Vec<BlobKey>,
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut idx = self.store.lock();
        for k in &self.keys {
            idx.unpin(k);
        }
    }
}

/// A blob being written: a temp file and a running hash.
#[derive(Debug)]
pub struct BlobWriter {
    file: File,
    path: PathBuf,
    hasher: Hasher,
    written: u64,
    /// Start writing back each full [`WRITEBACK_STEP`] as it is written,
    /// so that the fsync at commit has little left to wait for.
    early_writeback: bool,
    /// Bytes gathered for the next direct write, when the file was opened
    /// with `O_DIRECT`; written out by [`BlobWriter::finish_writes`].
    direct: Option<direct::DirectBuf>,
}

/// Bytes between two early writeback requests of a large blob.
const WRITEBACK_STEP: u64 = 16 << 20;

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        self.hasher.update(data);
        self.write_unhashed(data)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// A copy of the running hash, for hashing on another thread while
    /// [`BlobWriter::write_unhashed`] writes; hand the result back with
    /// [`BlobWriter::set_hasher`] before committing or resuming.
    pub fn hasher(&self) -> Hasher {
        self.hasher.clone()
    }

    /// Appends bytes that the caller hashes itself (see
    /// [`BlobWriter::hasher`]).
    pub fn write_unhashed(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.direct {
            Some(d) => d.write(&mut self.file, data),
            None => self.file.write_all(data),
        }
        .map_err(Error::io("write", &self.path))?;
        let before = self.written;
        self.written += data.len() as u64;
        if self.early_writeback && before / WRITEBACK_STEP != self.written / WRITEBACK_STEP {
            let end = self.written / WRITEBACK_STEP * WRITEBACK_STEP;
            start_writeback(&self.file, end - WRITEBACK_STEP, WRITEBACK_STEP);
        }
        Ok(())
    }

    /// Writes out bytes still gathered for a direct write (before the
    /// file is fsynced, renamed or read).
    fn finish_writes(&mut self) -> Result<()> {
        match self.direct.take() {
            Some(d) => d
                .finish(&mut self.file)
                .map_err(Error::io("write", &self.path)),
            None => Ok(()),
        }
    }

    /// The temp file.
    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    /// Starts writing every byte written so far back to disk, without
    /// waiting (a head start for the fsync that follows).
    pub(super) fn start_writeback(&self) {
        start_writeback(&self.file, 0, self.written);
    }

    /// Checks that the bytes written hash to `expected`.
    pub(super) fn verify(&self, expected: BlobKey) -> Result<()> {
        let actual = self.hasher.clone().finish_sized(self.written);
        if actual != expected {
            return Err(Error::DigestMismatch { expected, actual });
        }
        Ok(())
    }

    /// Replaces the running hash with one fed every byte written.
    pub fn set_hasher(&mut self, hasher: Hasher) {
        self.hasher = hasher;
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a successful commit the file has been renamed away and this
        // fails harmlessly.
        let _ = fs::remove_file(&self.path);
    }
}

/// Asks the kernel to start writing `len` bytes at `offset` of `file` to
/// disk, without waiting (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). Only a
/// head start for the fsync that follows: errors are left to that fsync.
fn start_writeback(file: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor belongs to `file`, open for the whole call;
    // sync_file_range reads no memory of ours and only schedules I/O.
    let _ = unsafe {
        nix::libc::sync_file_range(
            file.as_raw_fd(),
            offset as i64,
            len as i64,
            nix::libc::SYNC_FILE_RANGE_WRITE,
        )
    };
}

/// Takes the store's exclusive lock, failing at once when another
/// process holds it.
fn lock(path: &Path) -> Result<nix::fcntl::Flock<File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io("open", path))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            Error::FailedPrecondition(format!(
                "the CAS in {} is in use by another process (its lock {} is held)",
                path.parent()
                    .map_or_else(String::new, |p| p.display().to_string()),
                path.display()
            ))
        } else {
            Error::io("lock", path)(std::io::Error::from(e))
        }
    })
}

/// fsyncs a directory (after renames into it).
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", dir))
}

/// Removes a temp file unless forgotten.
struct TempGuard(PathBuf);

impl Drop for TempGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Hashes a file.
pub fn hash_file(path: &Path, function: DigestFunction) -> Result<BlobKey> {
    let mut file = File::open(path).map_err(Error::io("open", path))?;
    let mut hasher = function.hasher();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(Error::io("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(hasher.finish_sized(size))
}

/// Rebuilds the index from the directory tree, oldest access first.
fn scan(root: &Path) -> Result<Index> {
    let mut found: Vec<(std::time::SystemTime, BlobKey, bool)> = Vec::new();
    for function in DigestFunction::ALL {
        let fdir = root.join(function.name());
        let Ok(shards) = fs::read_dir(&fdir) else {
            continue;
        };
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for file in files.flatten() {
                let name = file.file_name();
                let Some(name) = name.to_str() else { continue };
                let (hex, exec) = match name.strip_suffix(".x") {
                    Some(h) => (h, true),
                    None => (name, false),
                };
                let Ok(meta) = file.metadata() else { continue };
                let Ok(key) = BlobKey::parse(function, hex, meta.len() as i64) else {
                    warn!(path = %file.path().display(), "ignoring a stray file in the CAS");
                    continue;
                };
                let when = meta.accessed().or_else(|_| meta.modified());
                found.push((when.unwrap_or(std::time::UNIX_EPOCH), key, exec));
            }
        }
    }
    found.sort_by_key(|(t, _, _)| *t);
    let mut index = Index::default();
    for (when, key, exec) in found {
        let secs = when
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        index.insert_used(key, exec, secs);
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::key_of;

    #[test]
    fn put_read_mismatch_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30, true).unwrap();
        let key = key_of(DigestFunction::Blake3, b"hello");
        store.put_bytes(key, b"hello").unwrap();
        assert_eq!(store.read(&key).unwrap(), b"hello");
        let bad = key_of(DigestFunction::Sha256, b"other");
        assert!(matches!(
            store.put_bytes(bad, b"hello"),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.contains(&bad));
        let exec = store.variant_path(&key, true).unwrap();
        let mode = fs::metadata(&exec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o555);
        // One process (one open store) at a time: a second open would
        // empty tmp/ and replay the journal under the first one.
        let err = Store::open(dir.path(), 1 << 30, true).unwrap_err();
        assert!(matches!(err, Error::FailedPrecondition(_)), "{err}");
        assert!(
            err.to_string().contains("in use by another process"),
            "{err}"
        );
        drop(store);
        let store = Store::open(dir.path(), 1 << 30, true).unwrap();
        assert!(store.contains(&key));
        assert!(store.contains(&DigestFunction::Sha256.empty()));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }

    #[test]
    fn large_blobs_written_around_the_cache_come_back_whole() {
        // On disk (the crate's directory), not a tmpfs, so that the
        // direct path is the one taken.
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let store = Store::open(dir.path(), 1 << 30, true).unwrap();
        let data: Vec<u8> = (0..direct::DIRECT_MIN as usize + 12_345)
            .map(|i| (i % 251) as u8)
            .collect();
        let key = key_of(DigestFunction::Sha256, &data);
        let mut w = store.writer_for(key).unwrap();
        assert!(w.direct.is_some(), "a large blob of an fsyncing store");
        for piece in data.chunks(1 << 20) {
            w.write(piece).unwrap();
        }
        store.commit(w, key).unwrap();
        assert_eq!(store.read(&key).unwrap(), data);
        // A wrong digest stores nothing and leaves no temp file.
        let mut bad = key;
        bad.hash[0] ^= 1;
        let mut w = store.writer_for(bad).unwrap();
        w.write(&data).unwrap();
        assert!(matches!(
            store.commit(w, bad),
            Err(Error::DigestMismatch { .. })
        ));
        assert!(!store.contains(&bad));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // A store without fsync, and a small blob, take the page cache.
        assert!(
            store
                .writer_for(DigestFunction::Sha256.empty())
                .unwrap()
                .direct
                .is_none()
        );
        let quick = Store::open(&dir.path().join("quick"), 1 << 30, false).unwrap();
        assert!(quick.writer_for(key).unwrap().direct.is_none());
    }

    #[test]
    fn deferred_blobs_are_readable_then_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30, true).unwrap();
        let (key, d) = store.put_deferred(DigestFunction::Blake3, b"log").unwrap();
        let d = d.expect("a new blob is deferred");
        assert!(store.contains(&key));
        assert!(store.find_missing(&[key]).is_empty());
        assert_eq!(store.read(&key).unwrap(), b"log");
        assert!(
            !store.path(&key, false).exists(),
            "not in place before durable"
        );
        // A second writer of the same bytes defers nothing.
        let (again, none) = store.put_deferred(DigestFunction::Blake3, b"log").unwrap();
        assert_eq!((again, none.is_none()), (key, true));
        store.make_durable(d).unwrap();
        assert!(store.path(&key, false).exists());
        assert_eq!(store.read(&key).unwrap(), b"log");
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        // Never made durable: gone after a restart, no torn blob in place.
        let (lost, d) = store.put_deferred(DigestFunction::Blake3, b"lost").unwrap();
        drop(d);
        drop(store);
        let store = Store::open(dir.path(), 1 << 30, true).unwrap();
        assert!(!store.contains(&lost));
        assert!(store.contains(&key));
    }

    #[test]
    fn evicts_over_the_limit_but_not_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path(), 10, false).unwrap());
        let a = store.put_new(DigestFunction::Sha256, b"aaaaaa").unwrap();
        let _pin = store.pin(vec![a]);
        let b = store.put_new(DigestFunction::Sha256, b"bbbbbb").unwrap();
        let c = store.put_new(DigestFunction::Sha256, b"cccc").unwrap();
        assert!(store.contains(&a));
        assert!(!store.contains(&b));
        assert!(store.contains(&c));
        assert!(store.total_bytes() <= 10);
    }
}

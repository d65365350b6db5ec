//! The CAS journal: a write-ahead log that makes a batch of small blobs
//! durable with one flush (`[cas] batch_commit = "journal"`).
//!
//! A batch's blobs are written to temp files and verified, then appended
//! together to the active journal segment, which is flushed once
//! (`fdatasync`); only then are the temp files renamed into place, without
//! an fsync of their own, and the batch acknowledged. So an acknowledged
//! blob is always durable: in its file, or in the journal.
//!
//! A checkpoint makes the files durable and drops their records: when the
//! active segment's first record is [`Limits::age`] old (30 s by default,
//! the kernel's own writeback age, so by then little is left to flush) or
//! the segment has grown to [`Limits::segment`] bytes, it is sealed, and
//! once every batch that appended to it has renamed its files, the store's
//! filesystem is flushed once (`syncfs`, on a background thread) and the
//! segment removed. A failed flush leaves the segment on disk for the next
//! start-up's replay and is not retried: a second flush can succeed
//! although the first lost data (the kernel reports a writeback error
//! once).
//!
//! At start-up ([`replay`]) every record is checked against its blob's
//! file: a file that is missing, short or wrong (a crash between the
//! rename and the kernel's writeback leaves one empty) is written again
//! from the record, then the filesystem is flushed and the journal emptied.
//! Records are self-contained and replay is idempotent, so segments have
//! no order and a segment that reappears after a crash is harmless.
//!
//! Segment format: the magic [`MAGIC`], then records, each `function: u8`,
//! `size: u64` (little endian), `hash: [u8; 32]`, then `size` bytes. The
//! hash doubles as the record's checksum: a torn or corrupt record does
//! not hash to its key, and replay stops reading its segment there (a torn
//! record is only ever at a segment's end: a failed append seals it).

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tracing::{debug, error, info, warn};

use crate::cas::Store;
use crate::digest::{BlobKey, DigestFunction, key_of};
use crate::error::{Error, Result};

/// A segment's first bytes (format version 1).
pub const MAGIC: &[u8; 8] = b"HRMJRNL1";
/// A record's header: function, size, hash.
const HEADER: usize = 1 + 8 + 32;
/// A segment file's name ends so.
const SUFFIX: &str = ".log";

/// When a segment is checkpointed.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Age of the segment's first record.
    pub age: Duration,
    /// Size of the segment.
    pub segment: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            age: Duration::from_secs(30),
            segment: 256 << 20,
        }
    }
}

/// The journal of a store: appends, and a thread that checkpoints.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    worker: Option<std::thread::JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    limits: Limits,
    state: Mutex<State>,
    /// Signalled when a segment is sealed, a ticket released or the
    /// journal shut down.
    changed: Condvar,
    /// Checkpoints done, and failed (segments left for the replay).
    checkpoints: AtomicU64,
    failed_checkpoints: AtomicU64,
}

/// What the journal holds and has done (for metrics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes in segments not yet checkpointed.
    pub bytes: u64,
    /// Checkpoints done since start-up.
    pub checkpoints: u64,
    /// Checkpoints whose flush failed (their segments wait for the replay).
    pub failed_checkpoints: u64,
}

#[derive(Debug, Default)]
struct State {
    active: Option<Segment>,
    /// Sealed segments, waiting for their batches and then a checkpoint.
    sealed: Vec<Segment>,
    /// Bytes of the segments the checkpoint thread is flushing (0 when
    /// none; a segment always holds its magic).
    flushing: u64,
    next_id: u64,
    shutdown: bool,
}

#[derive(Debug)]
struct Segment {
    id: u64,
    path: PathBuf,
    file: Arc<File>,
    len: u64,
    /// When the first record was appended.
    first: Option<Instant>,
    /// Batches that appended here and have not yet renamed their files.
    inflight: usize,
}

/// Held by a batch from its append until its files are renamed into
/// place; the segment is not checkpointed before.
#[derive(Debug)]
pub struct Ticket {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        if let Some(seg) = st.segment_mut(self.id) {
            seg.inflight -= 1;
        }
        drop(st);
        self.shared.changed.notify_all();
    }
}

impl State {
    fn segment_mut(&mut self, id: u64) -> Option<&mut Segment> {
        self.active
            .iter_mut()
            .chain(self.sealed.iter_mut())
            .find(|s| s.id == id)
    }

    /// Seals the active segment (if it is `id`, or any when `None`).
    fn seal(&mut self, id: Option<u64>) {
        if let Some(seg) = self.active.take_if(|s| id.is_none_or(|id| s.id == id)) {
            self.sealed.push(seg);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new segment: its magic and its name made durable before any
    /// record relies on them.
    fn create_segment(&self, id: u64) -> Result<Segment> {
        let path = self
            .dir
            .join(format!("{}{SUFFIX}", uuid::Uuid::new_v4().simple()));
        let mut file = fs::OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(Error::io("create", &path))?;
        let made = file
            .write_all(MAGIC)
            .and_then(|()| file.sync_all())
            .map_err(Error::io("write", &path))
            .and_then(|()| crate::cas::store::sync_dir(&self.dir));
        if let Err(e) = made {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(Segment {
            id,
            path,
            file: Arc::new(file),
            len: MAGIC.len() as u64,
            first: None,
            inflight: 0,
        })
    }
}

impl Journal {
    /// Opens the journal in `dir` (which [`replay`] has emptied) and starts
    /// its checkpoint thread.
    pub fn open(dir: &Path, limits: Limits) -> Result<Self> {
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let sync_fd = File::open(dir).map_err(Error::io("open", dir))?;
        let shared = Arc::new(Shared {
            dir: dir.to_owned(),
            limits,
            state: Mutex::default(),
            changed: Condvar::new(),
            checkpoints: AtomicU64::new(0),
            failed_checkpoints: AtomicU64::new(0),
        });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("cas-journal".into())
                .spawn(move || checkpointer(&shared, &sync_fd))
                .map_err(|e| Error::Internal(format!("cannot start the CAS journal thread: {e}")))?
        };
        Ok(Journal {
            shared,
            worker: Some(worker),
        })
    }

    /// Appends the blobs' records and flushes them; each blob is durable
    /// once this returns. Hold the ticket until the blobs are renamed into
    /// place. On an error nothing may be acknowledged.
    pub fn append(&self, blobs: &[(BlobKey, &[u8])]) -> Result<Ticket> {
        let bytes: usize = blobs.iter().map(|(_, d)| HEADER + d.len()).sum();
        let mut buf = Vec::with_capacity(bytes);
        for (key, data) in blobs {
            buf.push(function_byte(key.function));
            buf.extend_from_slice(&(data.len() as u64).to_le_bytes());
            buf.extend_from_slice(&key.hash);
            buf.extend_from_slice(data);
        }
        let shared = &self.shared;
        let (file, path, ticket) = {
            let mut st = shared.lock();
            if st.active.is_none() {
                let id = st.next_id;
                st.next_id += 1;
                st.active = Some(shared.create_segment(id)?);
            }
            let seg = st.active.as_mut().expect("made above");
            if let Err(e) = (&*seg.file).write_all(&buf) {
                // Perhaps a torn record at its end: nothing more after it.
                let path = seg.path.clone();
                st.seal(None);
                drop(st);
                shared.changed.notify_all();
                return Err(Error::io("append to", path)(e));
            }
            seg.len += buf.len() as u64;
            if seg.first.is_none() {
                // The checkpoint thread times the segment's age from now.
                seg.first = Some(Instant::now());
                shared.changed.notify_all();
            }
            seg.inflight += 1;
            let id = seg.id;
            let out = (
                seg.file.clone(),
                seg.path.clone(),
                Ticket {
                    shared: shared.clone(),
                    id,
                },
            );
            if seg.len >= shared.limits.segment {
                st.seal(None);
                shared.changed.notify_all();
            }
            out
        };
        if let Err(e) = file.sync_data() {
            // What reached the disk is unknown: no more appends here.
            shared.lock().seal(Some(ticket.id));
            return Err(Error::io("flush", path)(e));
        }
        Ok(ticket)
    }

    /// What the journal holds and has done.
    pub fn stats(&self) -> Stats {
        let st = self.shared.lock();
        let bytes = st
            .active
            .iter()
            .chain(&st.sealed)
            .map(|s| s.len)
            .sum::<u64>()
            + st.flushing;
        Stats {
            bytes,
            checkpoints: self.shared.checkpoints.load(Ordering::Relaxed),
            failed_checkpoints: self.shared.failed_checkpoints.load(Ordering::Relaxed),
        }
    }

    /// Seals the active segment and waits until every sealed one is
    /// checkpointed and removed (dropping the journal does the same).
    pub fn checkpoint_now(&self) {
        let mut st = self.shared.lock();
        st.seal(None);
        self.shared.changed.notify_all();
        while (!st.sealed.is_empty() || st.flushing > 0) && !st.shutdown {
            st = self
                .shared
                .changed
                .wait(st)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        // No batch is in flight (each borrows the store): the thread
        // checkpoints what is left and ends.
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// The checkpoint thread: waits for sealed segments whose batches are
/// done (sealing the active one when it is old enough), flushes the
/// filesystem and removes them.
fn checkpointer(shared: &Shared, sync_fd: &File) {
    let mut st = shared.lock();
    loop {
        if st.shutdown {
            st.seal(None);
        }
        if let Some(first) = st.active.as_ref().and_then(|s| s.first)
            && first.elapsed() >= shared.limits.age
        {
            st.seal(None);
        }
        let ready = !st.sealed.is_empty() && st.sealed.iter().all(|s| s.inflight == 0);
        if !ready {
            if st.shutdown && st.sealed.is_empty() {
                return;
            }
            let wait = st
                .active
                .as_ref()
                .and_then(|s| s.first)
                .map_or(shared.limits.age, |f| {
                    shared.limits.age.saturating_sub(f.elapsed())
                });
            st = shared
                .changed
                .wait_timeout(st, wait.max(Duration::from_millis(1)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            continue;
        }
        let done: Vec<Segment> = std::mem::take(&mut st.sealed);
        st.flushing = done.iter().map(|s| s.len).sum();
        drop(st);
        let started = Instant::now();
        match nix::unistd::syncfs(sync_fd) {
            Ok(()) => {
                for seg in &done {
                    if let Err(e) = fs::remove_file(&seg.path) {
                        warn!(segment = %seg.path.display(), cause = %e, "cannot remove a checkpointed journal segment");
                    }
                }
                debug!(segments = done.len(), took = ?started.elapsed(), "CAS journal checkpointed");
                shared.checkpoints.fetch_add(1, Ordering::Relaxed);
                st = shared.lock();
                st.flushing = 0;
            }
            Err(e) => {
                let kept: Vec<_> = done.iter().map(|s| s.path.display().to_string()).collect();
                error!(cause = %e, ?kept, "cannot flush the CAS's filesystem: the journal segments stay for the next start-up to replay");
                shared.failed_checkpoints.fetch_add(1, Ordering::Relaxed);
                st = shared.lock();
                st.flushing = 0;
            }
        }
        shared.changed.notify_all();
    }
}

fn function_byte(f: DigestFunction) -> u8 {
    match f {
        DigestFunction::Sha256 => 1,
        DigestFunction::Blake3 => 2,
    }
}

fn function_of(b: u8) -> Option<DigestFunction> {
    match b {
        1 => Some(DigestFunction::Sha256),
        2 => Some(DigestFunction::Blake3),
        _ => None,
    }
}

/// What a replay found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Segments read.
    pub segments: usize,
    /// Records whose file was intact.
    pub intact: usize,
    /// Records whose file was written again.
    pub restored: usize,
    /// Segments that ended in a torn or corrupt record.
    pub torn: usize,
}

/// Replays every segment in `dir` into `store` (see the module
/// documentation), flushes the filesystem and removes the segments.
pub fn replay(store: &Store, dir: &Path) -> Result<Replayed> {
    let mut out = Replayed::default();
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(out);
    };
    let mut segments = Vec::new();
    for entry in entries {
        let path = entry.map_err(Error::io("list", dir))?.path();
        if path.extension().is_some_and(|e| e == &SUFFIX[1..]) {
            segments.push(path);
        }
    }
    if segments.is_empty() {
        return Ok(out);
    }
    for path in &segments {
        out.segments += 1;
        if !replay_segment(store, path, &mut out)? {
            out.torn += 1;
        }
    }
    // The files found intact may still be only in the page cache (when
    // the daemon, not the machine, stopped).
    let fd = File::open(dir).map_err(Error::io("open", dir))?;
    nix::unistd::syncfs(&fd)
        .map_err(|e| Error::Internal(format!("cannot flush the CAS's filesystem: {e}")))?;
    for path in &segments {
        fs::remove_file(path).map_err(Error::io("remove", path))?;
    }
    info!(?out, "replayed the CAS journal");
    Ok(out)
}

/// Replays one segment; `false` when it ends in a torn or corrupt record.
fn replay_segment(store: &Store, path: &Path, out: &mut Replayed) -> Result<bool> {
    let file = File::open(path).map_err(Error::io("open", path))?;
    let len = file.metadata().map_err(Error::io("stat", path))?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut magic = [0u8; MAGIC.len()];
    if r.read_exact(&mut magic).is_err() || &magic != MAGIC {
        warn!(segment = %path.display(), "a CAS journal segment without its header; ignored");
        return Ok(false);
    }
    let mut at = MAGIC.len() as u64;
    loop {
        let mut header = [0u8; HEADER];
        let got = read_full(&mut r, &mut header).map_err(Error::io("read", path))?;
        if got == 0 {
            return Ok(true);
        }
        let size = u64::from_le_bytes(header[1..9].try_into().expect("8 bytes"));
        let function = function_of(header[0]);
        // Checked: a corrupt size must not overflow or allocate wildly.
        let fits = (at + HEADER as u64)
            .checked_add(size)
            .is_some_and(|end| end <= len);
        let (Some(function), true, true) = (function, got == HEADER, fits) else {
            warn!(segment = %path.display(), offset = at, "a torn CAS journal record; the rest of its segment is ignored");
            return Ok(false);
        };
        let mut data = vec![0u8; size as usize];
        r.read_exact(&mut data).map_err(Error::io("read", path))?;
        let key = BlobKey {
            function,
            hash: header[9..].try_into().expect("32 bytes"),
            size,
        };
        if key_of(function, &data) != key {
            warn!(segment = %path.display(), offset = at, "a corrupt CAS journal record; the rest of its segment is ignored");
            return Ok(false);
        }
        if store.restore(key, &data)? {
            out.restored += 1;
        } else {
            out.intact += 1;
        }
        at += HEADER as u64 + size;
    }
}

/// Reads until `buf` is full or the end; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BatchCommit;

    /// On disk (the crate's directory), not a tmpfs: the flushes are real.
    fn disk_dir() -> tempfile::TempDir {
        tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap()
    }

    /// Checkpoints that never come by themselves.
    const NEVER: Limits = Limits {
        age: Duration::from_secs(3600),
        segment: u64::MAX,
    };

    fn blobs(n: usize, tag: &str) -> Vec<(BlobKey, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let data = format!("{tag} blob {i}").into_bytes();
                (key_of(DigestFunction::Blake3, &data), data)
            })
            .collect()
    }

    fn put(store: &Store, blobs: &[(BlobKey, Vec<u8>)]) {
        let refs: Vec<(BlobKey, &[u8])> = blobs.iter().map(|(k, d)| (*k, &d[..])).collect();
        for r in store.put_batch(&refs) {
            r.unwrap();
        }
    }

    fn segments(state: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = fs::read_dir(state.join("journal"))
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        out.sort();
        out
    }

    fn blob_path(state: &Path, key: &BlobKey) -> PathBuf {
        let hex = key.hex();
        state
            .join("cas")
            .join(key.function.name())
            .join(&hex[..2])
            .join(hex)
    }

    #[test]
    fn a_batch_is_journaled_then_checkpointed() {
        let dir = disk_dir();
        let store =
            Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Journal, NEVER).unwrap();
        assert_eq!(store.batch_commit(), BatchCommit::Journal);
        let b = blobs(100, "a");
        put(&store, &b);
        // Every record is in the one segment, after its magic.
        let segs = segments(dir.path());
        assert_eq!(segs.len(), 1);
        let want: u64 = b.iter().map(|(_, d)| (HEADER + d.len()) as u64).sum();
        assert_eq!(
            fs::metadata(&segs[0]).unwrap().len(),
            MAGIC.len() as u64 + want
        );
        for (k, d) in &b {
            assert_eq!(&store.read(k).unwrap(), d);
        }
        // Stored already: nothing more is journaled.
        put(&store, &b[..10]);
        assert_eq!(
            fs::metadata(&segs[0]).unwrap().len(),
            MAGIC.len() as u64 + want
        );
        let journal = store.journal().unwrap();
        assert_eq!(
            journal.stats(),
            Stats {
                bytes: MAGIC.len() as u64 + want,
                ..Stats::default()
            }
        );
        journal.checkpoint_now();
        assert!(segments(dir.path()).is_empty());
        assert_eq!(
            journal.stats(),
            Stats {
                checkpoints: 1,
                ..Stats::default()
            }
        );
        for (k, d) in &b {
            assert_eq!(&store.read(k).unwrap(), d);
        }
    }

    #[test]
    fn a_checkpoint_comes_by_itself_when_the_segment_is_old_or_full() {
        let dir = disk_dir();
        let limits = Limits {
            age: Duration::from_millis(50),
            segment: u64::MAX,
        };
        let store =
            Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Journal, limits).unwrap();
        put(&store, &blobs(10, "old"));
        wait_until_empty(dir.path());
        drop(store);

        let limits = Limits {
            age: Duration::from_secs(3600),
            segment: 1,
        };
        let store =
            Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Journal, limits).unwrap();
        put(&store, &blobs(10, "full"));
        wait_until_empty(dir.path());
    }

    /// Polls (for a minute at most: a functional wait, not a timing).
    fn wait_until_empty(state: &Path) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !segments(state).is_empty() {
            assert!(
                Instant::now() < deadline,
                "the journal was never checkpointed"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn concurrent_batches_survive_checkpoints_running_beside_them() {
        let dir = disk_dir();
        // A segment sealed every few batches and checkpointed at once.
        let limits = Limits {
            age: Duration::from_millis(1),
            segment: 4096,
        };
        let store =
            Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Journal, limits).unwrap();
        let all: Vec<Vec<(BlobKey, Vec<u8>)>> =
            (0..4).map(|t| blobs(400, &format!("thread {t}"))).collect();
        std::thread::scope(|s| {
            for mine in &all {
                let store = &store;
                s.spawn(move || {
                    for batch in mine.chunks(40) {
                        put(store, batch);
                    }
                });
            }
        });
        assert!(store.journal_stats().checkpoints > 1);
        drop(store);
        assert!(segments(dir.path()).is_empty());
        let store = Store::open(dir.path(), 1 << 30, true).unwrap();
        for (k, d) in all.iter().flatten() {
            assert_eq!(&fs::read(blob_path(dir.path(), k)).unwrap(), d);
            assert!(store.contains(k));
        }
    }

    #[test]
    fn no_checkpoint_before_the_batch_has_renamed_its_files() {
        let dir = disk_dir();
        let store =
            Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Journal, NEVER).unwrap();
        let journal = store.journal().unwrap();
        let b = blobs(3, "held");
        let refs: Vec<(BlobKey, &[u8])> = b.iter().map(|(k, d)| (*k, &d[..])).collect();
        let ticket = journal.append(&refs).unwrap();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| journal.checkpoint_now());
            // The segment is sealed but must stay while the ticket lives.
            std::thread::sleep(Duration::from_millis(200));
            assert!(!waiter.is_finished());
            assert_eq!(segments(dir.path()).len(), 1);
            drop(ticket);
            waiter.join().unwrap();
        });
        assert!(segments(dir.path()).is_empty());
    }

    /// A record as [`Journal::append`] writes it, claiming `size` bytes.
    fn record(key: &BlobKey, size: u64, data: &[u8]) -> Vec<u8> {
        let mut r = vec![function_byte(key.function)];
        r.extend_from_slice(&size.to_le_bytes());
        r.extend_from_slice(&key.hash);
        r.extend_from_slice(data);
        r
    }

    /// Stores `b` through the journal in a store under `state`, then
    /// leaves the journal as a crash before the checkpoint would: the store
    /// is dropped (its lock released, its segment checkpointed and
    /// removed) and the segment put back.
    fn stored_then_crashed(state: &Path, b: &[(BlobKey, Vec<u8>)]) {
        let store = Store::open_with(state, 1 << 30, true, BatchCommit::Journal, NEVER).unwrap();
        put(&store, b);
        let segment = segments(state)[0].clone();
        let bytes = fs::read(&segment).unwrap();
        drop(store);
        fs::write(&segment, bytes).unwrap();
    }

    #[test]
    fn replay_restores_what_a_crash_lost_and_stops_at_a_torn_record() {
        let dir = disk_dir();
        let b = blobs(6, "crash");
        stored_then_crashed(dir.path(), &b);
        // Blob 0 lost, blob 1 empty (renamed, never written back), blob 2
        // the right length but wrong bytes, the others intact.
        let lost = blob_path(dir.path(), &b[0].0);
        fs::remove_file(&lost).unwrap();
        let empty = blob_path(dir.path(), &b[1].0);
        fs::remove_file(&empty).unwrap();
        fs::write(&empty, b"").unwrap();
        let wrong = blob_path(dir.path(), &b[2].0);
        fs::remove_file(&wrong).unwrap();
        fs::write(&wrong, vec![0u8; b[2].1.len()]).unwrap();
        // A second segment whose last record is torn.
        let extra = blobs(2, "torn");
        let mut torn = MAGIC.to_vec();
        torn.extend(record(&extra[0].0, extra[0].1.len() as u64, &extra[0].1));
        torn.extend(record(
            &extra[1].0,
            extra[1].1.len() as u64,
            &extra[1].1[..3],
        ));
        fs::write(dir.path().join("journal").join("torn.log"), torn).unwrap();

        let store =
            Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Journal, NEVER).unwrap();
        assert!(segments(dir.path()).is_empty());
        for (k, d) in b.iter().chain(&extra[..1]) {
            assert_eq!(&store.read(k).unwrap(), d, "{k:?}");
        }
        assert!(!store.contains(&extra[1].0));
        // The empty file's scan entry (the hash with size 0) is gone, so
        // eviction cannot remove the restored file through it.
        let ghost = BlobKey { size: 0, ..b[1].0 };
        assert!(!store.has(&ghost));
        assert_eq!(
            store.total_bytes(),
            b.iter()
                .chain(&extra[..1])
                .map(|(k, _)| k.size)
                .sum::<u64>()
        );
    }

    #[test]
    fn replay_counts_what_it_found() {
        let dir = disk_dir();
        let b = blobs(4, "count");
        stored_then_crashed(dir.path(), &b);
        fs::remove_file(blob_path(dir.path(), &b[3].0)).unwrap();
        let store =
            Store::open_with(dir.path(), 1 << 30, false, BatchCommit::Journal, NEVER).unwrap();
        let again = replay(&store, &dir.path().join("journal")).unwrap();
        assert_eq!(
            again,
            Replayed::default(),
            "the open replayed and emptied it"
        );
        assert_eq!(&store.read(&b[3].0).unwrap(), &b[3].1);

        // A record claiming an impossible size, and a segment without its
        // header: each ends its segment (no overflow, no huge allocation),
        // neither is an error.
        let (k, d) = &b[0];
        let huge = [&MAGIC[..], &record(k, u64::MAX, d)].concat();
        for bad in [huge, b"HRM".to_vec()] {
            fs::write(dir.path().join("journal").join("bad.log"), bad).unwrap();
            let found = replay(&store, &dir.path().join("journal")).unwrap();
            assert_eq!(
                found,
                Replayed {
                    segments: 1,
                    torn: 1,
                    ..Replayed::default()
                }
            );
        }
    }

    #[test]
    fn other_modes_and_stores_without_fsync_have_no_journal() {
        let dir = disk_dir();
        let store = Store::open(dir.path(), 1 << 30, false).unwrap();
        assert!(store.journal().is_none());
        put(&store, &blobs(5, "nofsync"));
        assert!(segments(dir.path()).is_empty());
        drop(store);
        let store = Store::open_with(dir.path(), 1 << 30, true, BatchCommit::Fsync, NEVER).unwrap();
        assert!(store.journal().is_none());
        put(&store, &blobs(70, "fsync"));
        assert!(segments(dir.path()).is_empty());
    }
}

//! Many blobs stored at once (BatchUpdateBlobs) with a group commit.
//!
//! Three ways, chosen by `[cas] batch_commit`:
//! - `journal` (default, any batch): every blob is written to a temp file
//!   and verified, the new ones are appended to the journal, which is
//!   flushed once, and then renamed into place without an fsync of their
//!   own (see [`crate::cas::journal`] for the checkpoint and the replay).
//!
//! and for batches of [`GROUP_MIN`] blobs or more (smaller ones fsync each
//! blob's file and directory):
//! - `fsync`: every blob is written and verified with its
//!   writeback started (as many threads as CPUs), then each is fsynced on
//!   a few threads (the filesystem commits concurrent fsyncs together),
//!   then all are renamed, then each directory that received blobs is fsynced
//!   once (a batch touches at most the 256 shard directories of its digest
//!   function) instead of once per blob.
//! - `syncfs`: every blob is written to a temp file and verified, the
//!   store's filesystem is flushed once (`syncfs`), the blobs are renamed
//!   into place and the filesystem is flushed once more: two flushes per
//!   batch instead of two fsyncs per blob, but each flushes every writer's
//!   data on the filesystem (seconds on a busy shared one).
//!
//! Every way, no blob is acknowledged before it is durable. With `fsync`
//! and `syncfs` a blob is renamed under its name only once its bytes are
//! verified and durable, so a crash never leaves a torn blob there; with
//! `journal` a crash may, and the replay at start-up, before anything is
//! served, writes such a blob again from its record.

use std::collections::BTreeSet;
use std::path::PathBuf;

use crate::cas::Store;
use crate::cas::journal::Journal;
use crate::cas::store::{BlobWriter, sync_dir};
use crate::config::BatchCommit;
use crate::digest::{BlobKey, key_of};
use crate::error::{Error, Result};

/// Blobs handled by one thread at least.
const BLOBS_PER_THREAD: usize = 32;
/// Threads fsyncing one batch's files or directories at most (each mostly
/// waits in fsync, and the filesystem commits their fsyncs together).
const FSYNC_THREADS: usize = 16;
/// Threads writing or renaming at most, beyond the CPUs: that work needs
/// CPU, and more threads than CPUs only contend (for the index's lock
/// held across each rename, for the directories' locks) and, on a busy
/// machine, stall behind a preempted lock holder.
fn cpu_threads() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().min(8))
}
/// Batches this large or larger use `batch_commit`'s way.
pub const GROUP_MIN: usize = 64;

/// Runs `f` on each item on up to `max` scoped threads, keeping the
/// order; a panicked thread gives an error for each of its items.
fn parallel<T: Send, R: Send>(
    mut items: Vec<T>,
    max: usize,
    f: impl Fn(T) -> Result<R> + Sync,
) -> Vec<Result<R>> {
    let threads = items.len().div_ceil(BLOBS_PER_THREAD).clamp(1, max.max(1));
    if threads == 1 {
        return items.into_iter().map(&f).collect();
    }
    let per = items.len().div_ceil(threads);
    let mut parts = Vec::with_capacity(threads);
    while !items.is_empty() {
        let rest = items.split_off(per.min(items.len()));
        parts.push(std::mem::replace(&mut items, rest));
    }
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| {
                let n = part.len();
                (n, s.spawn(move || part.into_iter().map(f).collect()))
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|(n, h)| {
                h.join().unwrap_or_else(|_| {
                    (0..n)
                        .map(|_| Err(Error::Internal("a batch upload thread panicked".into())))
                        .collect::<Vec<_>>()
                })
            })
            .collect()
    })
}

impl Store {
    /// Stores each `(key, data)` after checking that `data` hashes to
    /// `key`; one outcome per blob, in order. Blocking, like every method.
    pub fn put_batch(&self, blobs: &[(BlobKey, &[u8])]) -> Vec<Result<()>> {
        if let Some(journal) = self.journal() {
            return self.put_batch_journal(journal, blobs);
        }
        if !self.fsyncs() || blobs.len() < GROUP_MIN {
            return self.put_batch_fsync(blobs);
        }
        match self.batch_commit() {
            BatchCommit::Syncfs => self.put_batch_syncfs(blobs),
            BatchCommit::Fsync | BatchCommit::Journal => self.put_batch_fsync(blobs),
        }
    }

    /// `journal`: see the module documentation.
    fn put_batch_journal(&self, journal: &Journal, blobs: &[(BlobKey, &[u8])]) -> Vec<Result<()>> {
        let written = parallel(blobs.to_vec(), cpu_threads(), |(key, data)| {
            self.write_verified(key, data)
        });
        let new: Vec<(BlobKey, &[u8])> = blobs
            .iter()
            .zip(&written)
            .filter(|(_, w)| matches!(w, Ok(Some(_))))
            .map(|(b, _)| *b)
            .collect();
        if new.is_empty() {
            return written.into_iter().map(|w| w.map(drop)).collect();
        }
        let ticket = match journal.append(&new) {
            Ok(t) => t,
            Err(e) => return fail_new(written, &e),
        };
        let installed = self.install_new(blobs, written);
        // Renamed: the segment may be checkpointed from now on.
        drop(ticket);
        self.evict();
        installed
    }

    /// `fsync`: see the module documentation.
    fn put_batch_fsync(&self, blobs: &[(BlobKey, &[u8])]) -> Vec<Result<()>> {
        // The directory to fsync when installed now, `None` when stored
        // already.
        // Written and verified first, with writeback started for each (the
        // disk sees the whole batch at once); then fsynced and renamed on
        // more threads, whose fsyncs the filesystem commits together.
        let written = parallel(blobs.to_vec(), cpu_threads(), |(key, data)| {
            let w = self.write_verified(key, data)?;
            if self.fsyncs()
                && let Some(w) = &w
            {
                w.start_writeback();
            }
            Ok(w)
        });
        let threads = if self.fsyncs() {
            FSYNC_THREADS
        } else {
            cpu_threads()
        };
        // Every file fsynced before any is renamed: renames between the
        // fsyncs would add directory updates to each journal commit the
        // fsyncs wait for (1 KiB files here: 3,400 fsyncs on 16 threads
        // took 109 ms alone, 178 ms with each followed by its rename).
        let pending: Vec<(BlobKey, Result<Option<BlobWriter>>)> =
            blobs.iter().map(|(k, _)| *k).zip(written).collect();
        let sealed = parallel(pending, threads, |(key, w)| match w? {
            None => Ok((key, None)),
            Some(w) => self.seal(w, key).map(|w| (key, Some(w))),
        });
        // The directory to fsync when installed now, `None` when stored
        // already (or the blob's error).
        let staged = parallel(sealed, cpu_threads(), |sealed| match sealed? {
            (_, None) => Ok(None),
            (key, Some(w)) => self.install_unsynced(w.path(), key, false).map(Some),
        });
        let dirs: Vec<&PathBuf> = staged
            .iter()
            .filter_map(|r| r.as_ref().ok().and_then(Option::as_ref))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let synced = if self.fsyncs() {
            parallel(dirs.clone(), FSYNC_THREADS, |d| sync_dir(d))
        } else {
            Vec::new()
        };
        let failed: Vec<(PathBuf, String)> = dirs
            .iter()
            .zip(&synced)
            .filter_map(|(d, r)| r.as_ref().err().map(|e| ((*d).clone(), e.to_string())))
            .collect();
        self.evict();
        staged
            .into_iter()
            .map(|r| match r? {
                Some(dir) => match failed.iter().find(|(d, _)| *d == dir) {
                    Some((_, e)) => Err(Error::Internal(e.clone())),
                    None => Ok(()),
                },
                None => Ok(()),
            })
            .collect()
    }

    /// `syncfs`: see the module documentation.
    fn put_batch_syncfs(&self, blobs: &[(BlobKey, &[u8])]) -> Vec<Result<()>> {
        let written = parallel(blobs.to_vec(), cpu_threads(), |(key, data)| {
            self.write_verified(key, data)
        });
        let flush = || {
            let dir = self.open_tmp()?;
            nix::unistd::syncfs(&dir)
                .map_err(|e| Error::Internal(format!("cannot flush the CAS's filesystem: {e}")))
        };
        if let Err(e) = flush() {
            return fail_new(written, &e);
        }
        let installed = self.install_new(blobs, written);
        let flushed = flush();
        self.evict();
        installed
            .into_iter()
            .map(|r| {
                r?;
                flushed
                    .as_ref()
                    .map_err(|e| Error::Internal(e.to_string()))?;
                Ok(())
            })
            .collect()
    }

    /// Renames each newly written blob into place (no fsync), on as many
    /// threads as CPUs; one outcome per blob, in order.
    fn install_new(
        &self,
        blobs: &[(BlobKey, &[u8])],
        written: Vec<Result<Option<BlobWriter>>>,
    ) -> Vec<Result<()>> {
        let pending: Vec<(BlobKey, Result<Option<BlobWriter>>)> =
            blobs.iter().map(|(k, _)| *k).zip(written).collect();
        parallel(pending, cpu_threads(), |(key, w)| match w? {
            Some(w) => self.install_unsynced(w.path(), key, false).map(drop),
            None => Ok(()),
        })
    }

    /// Writes and verifies one blob into a temp file (no fsync); `None`
    /// when it is stored already (the bytes still checked).
    fn write_verified(&self, key: BlobKey, data: &[u8]) -> Result<Option<BlobWriter>> {
        if self.contains(&key) {
            let actual = key_of(key.function, data);
            if actual != key {
                return Err(Error::DigestMismatch {
                    expected: key,
                    actual,
                });
            }
            return Ok(None);
        }
        let mut w = self.writer(key.function)?;
        w.write(data)?;
        w.verify(key)?;
        Ok(Some(w))
    }
}

/// The outcomes when a batch's flush failed: each new blob fails with
/// `e` (its temp file goes with its writer), one stored already succeeds.
fn fail_new(written: Vec<Result<Option<BlobWriter>>>, e: &Error) -> Vec<Result<()>> {
    written
        .into_iter()
        .map(|w| match w? {
            None => Ok(()),
            Some(_) => Err(Error::Internal(e.to_string())),
        })
        .collect()
}

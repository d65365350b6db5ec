//! Input directories already materialized, kept for the next action that
//! needs the same Directory digest.
//!
//! Staging hands over whole subtrees by `rename` (constant time, same
//! filesystem): an action takes a subtree out of the pool into its input
//! tree, and gives it back when the sandbox is gone. A subtree is used by
//! one action at a time; it is the sandbox's read-only overlay lower layer,
//! so nothing changes it while it is out. Its files are hardlinks of CAS
//! blobs (immutable, read-only): a pooled tree stays correct even after the
//! CAS evicts a blob it links.
//!
//! Trees are keyed by digest and owner (the host ids directories are given
//! to); at most [`MAX_POOLED`] are kept, the least recently returned going
//! first. The pool directory (`staged/` under the state directory) is
//! emptied when the daemon starts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::warn;

use crate::digest::BlobKey;
use crate::error::{Error, Result};

/// Trees kept at most.
pub const MAX_POOLED: usize = 4096;

/// What a pooled tree is: its digest and its directories' owner.
pub type PoolKey = (BlobKey, Option<(u32, u32)>);

#[derive(Debug, Default)]
struct Inner {
    /// Free trees by key, each with its return sequence number.
    free: HashMap<PoolKey, Vec<(u64, PathBuf)>>,
    /// Return order: sequence number to key.
    order: BTreeMap<u64, PoolKey>,
    next: u64,
}

/// The pool.
#[derive(Debug)]
pub struct DirPool {
    root: PathBuf,
    max: usize,
    inner: Mutex<Inner>,
}

impl DirPool {
    /// Opens the pool under `state_dir`, dropping what a previous run left.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("staged");
        if root.exists() {
            crate::exec::staging::remove_tree(&root);
        }
        std::fs::create_dir_all(&root).map_err(Error::io("create", &root))?;
        Ok(DirPool {
            root,
            max: MAX_POOLED,
            inner: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves a pooled tree of `key` to `dest` (which must not exist).
    /// `Ok(false)` when none is free.
    pub fn take(&self, key: &PoolKey, dest: &Path) -> Result<bool> {
        let path = {
            let mut inner = self.lock();
            let Some((seq, path)) = inner.free.get_mut(key).and_then(Vec::pop) else {
                return Ok(false);
            };
            inner.order.remove(&seq);
            path
        };
        match std::fs::rename(&path, dest) {
            Ok(()) => Ok(true),
            Err(e) => {
                warn!(path = %path.display(), cause = %e, "pooled input tree unusable");
                crate::exec::staging::remove_tree(&path);
                Ok(false)
            }
        }
    }

    /// Moves the tree at `path` (a materialized `key`) into the pool,
    /// evicting the least recently returned tree when full.
    pub fn give_back(&self, key: PoolKey, path: &Path) {
        let pooled = self.root.join(uuid::Uuid::new_v4().to_string());
        if let Err(e) = std::fs::rename(path, &pooled) {
            warn!(path = %path.display(), cause = %e, "cannot return an input tree to the pool");
            return;
        }
        let evicted = {
            let mut inner = self.lock();
            let seq = inner.next;
            inner.next += 1;
            inner.free.entry(key).or_default().push((seq, pooled));
            inner.order.insert(seq, key);
            let mut evicted = Vec::new();
            while inner.order.len() > self.max {
                let (old, old_key) = inner.order.pop_first().expect("not empty");
                if let Some(list) = inner.free.get_mut(&old_key) {
                    if let Some(i) = list.iter().position(|(s, _)| *s == old) {
                        evicted.push(list.swap_remove(i).1);
                    }
                    if list.is_empty() {
                        inner.free.remove(&old_key);
                    }
                }
            }
            evicted
        };
        for tree in evicted {
            crate::exec::staging::remove_tree(&tree);
        }
    }

    /// Trees free in the pool.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether the pool holds no tree.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{DigestFunction, key_of};

    #[test]
    fn takes_what_was_given_back_and_evicts_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let mut pool = DirPool::open(dir.path()).unwrap();
        pool.max = 2;
        let keys: Vec<PoolKey> = (0..3u8)
            .map(|i| (key_of(DigestFunction::Sha256, &[i]), None))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            let t = dir.path().join(format!("t{i}"));
            std::fs::create_dir(&t).unwrap();
            std::fs::write(t.join("f"), [i as u8]).unwrap();
            pool.give_back(*k, &t);
            assert!(!t.exists());
        }
        assert_eq!(pool.len(), 2);
        let dest = dir.path().join("dest");
        assert!(
            !pool.take(&keys[0], &dest).unwrap(),
            "the oldest was evicted"
        );
        assert!(pool.take(&keys[2], &dest).unwrap());
        assert_eq!(std::fs::read(dest.join("f")).unwrap(), [2]);
        assert!(!pool.take(&keys[2], &dir.path().join("again")).unwrap());
        assert_eq!(pool.len(), 1);
        let reopened = DirPool::open(dir.path()).unwrap();
        assert!(reopened.is_empty());
        assert_eq!(
            std::fs::read_dir(dir.path().join("staged"))
                .unwrap()
                .count(),
            0
        );
    }
}

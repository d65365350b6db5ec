//! The in-memory index of stored blobs: sizes, recency and pins.
//!
//! Every lookup touches the blob, so the order of ticks is the order of
//! use. Eviction takes the oldest unpinned blob first. The index is rebuilt
//! from the directory tree at start-up, ordered by access time.

use std::collections::{BTreeMap, HashMap};

use crate::digest::BlobKey;

/// Which files exist for a blob.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variants {
    /// The plain, read-only (0444) file.
    pub plain: bool,
    /// The executable (0555) copy, made when an executable input or output
    /// needs it: the executable bit belongs to an inode, not to a name.
    pub exec: bool,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    tick: u64,
    variants: Variants,
}

/// Blob sizes, recency and pins.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<BlobKey, Entry>,
    lru: BTreeMap<u64, BlobKey>,
    pins: HashMap<BlobKey, u32>,
    tick: u64,
    total: u64,
}

impl Index {
    /// Bytes on disk, every variant counted.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Number of blobs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The variants present, touching the blob.
    pub fn touch(&mut self, key: &BlobKey) -> Option<Variants> {
        let tick = self.next_tick();
        let entry = self.entries.get_mut(key)?;
        self.lru.remove(&entry.tick);
        entry.tick = tick;
        self.lru.insert(tick, *key);
        Some(entry.variants)
    }

    /// Records a variant as present (and the blob as just used).
    pub fn insert(&mut self, key: BlobKey, exec: bool) {
        let tick = self.next_tick();
        let entry = self.entries.entry(key).or_insert(Entry {
            tick,
            variants: Variants::default(),
        });
        self.lru.remove(&entry.tick);
        entry.tick = tick;
        self.lru.insert(tick, key);
        let slot = if exec {
            &mut entry.variants.exec
        } else {
            &mut entry.variants.plain
        };
        if !*slot {
            *slot = true;
            self.total += key.size;
        }
    }

    /// Forgets a blob entirely, returning the variants it had.
    pub fn remove(&mut self, key: &BlobKey) -> Option<Variants> {
        let entry = self.entries.remove(key)?;
        self.lru.remove(&entry.tick);
        let n = u64::from(entry.variants.plain) + u64::from(entry.variants.exec);
        self.total -= n * key.size;
        Some(entry.variants)
    }

    /// Pins a blob so eviction skips it.
    pub fn pin(&mut self, key: BlobKey) {
        *self.pins.entry(key).or_default() += 1;
    }

    /// Releases one pin.
    pub fn unpin(&mut self, key: &BlobKey) {
        if let Some(n) = self.pins.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.pins.remove(key);
            }
        }
    }

    /// Chooses blobs to evict, oldest first, skipping pinned ones, until the
    /// total would be at most `limit`; removes them from the index.
    pub fn evict_to(&mut self, limit: u64) -> Vec<(BlobKey, Variants)> {
        let mut victims = Vec::new();
        if self.total <= limit {
            return victims;
        }
        let candidates: Vec<BlobKey> = self
            .lru
            .values()
            .filter(|k| !self.pins.contains_key(k))
            .copied()
            .collect();
        for key in candidates {
            if self.total <= limit {
                break;
            }
            if let Some(v) = self.remove(&key) {
                victims.push((key, v));
            }
        }
        victims
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{DigestFunction, key_of};

    #[test]
    fn evicts_least_recently_used_unpinned_first() {
        let mut idx = Index::default();
        let a = key_of(DigestFunction::Sha256, b"aaaa");
        let b = key_of(DigestFunction::Sha256, b"bbbb");
        let c = key_of(DigestFunction::Sha256, b"cccc");
        idx.insert(a, false);
        idx.insert(b, false);
        idx.insert(c, true);
        assert_eq!(idx.total_bytes(), 12);
        idx.touch(&a);
        idx.pin(b);
        let victims = idx.evict_to(4);
        let keys: Vec<_> = victims.iter().map(|v| v.0).collect();
        assert_eq!(keys, vec![c, a]);
        assert_eq!(idx.total_bytes(), 4);
        idx.unpin(&b);
        assert_eq!(idx.evict_to(0).len(), 1);
        assert!(idx.is_empty());
    }
}

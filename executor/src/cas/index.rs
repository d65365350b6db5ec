//! The in-memory index of stored blobs: sizes, recency, pins and the
//! retained set.
//!
//! Every lookup touches the blob, so the order of ticks is the order of
//! use; each entry also keeps the time of its last use (seconds), which the
//! garbage collector compares with the retention period. Eviction takes the
//! oldest blob first that is neither pinned (in use by an action in flight)
//! nor retained (pinned by an admin or referenced by recent provenance, see
//! `crate::gc`). The index is rebuilt from the directory tree at start-up,
//! ordered by access time.

use std::collections::{BTreeMap, HashMap, HashSet};

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
    /// Last use, seconds since the Unix epoch.
    used: u64,
    variants: Variants,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Blob sizes, recency and pins.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<BlobKey, Entry>,
    lru: BTreeMap<u64, BlobKey>,
    pins: HashMap<BlobKey, u32>,
    retained: HashSet<BlobKey>,
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
        entry.used = now_secs();
        self.lru.insert(tick, *key);
        Some(entry.variants)
    }

    /// Records a variant as present (and the blob as just used).
    pub fn insert(&mut self, key: BlobKey, exec: bool) {
        self.insert_used(key, exec, now_secs());
    }

    /// Records a variant as present, last used at `used` (seconds since the
    /// epoch; the store's scan passes the file's access time).
    pub fn insert_used(&mut self, key: BlobKey, exec: bool, used: u64) {
        let tick = self.next_tick();
        let entry = self.entries.entry(key).or_insert(Entry {
            tick,
            used,
            variants: Variants::default(),
        });
        self.lru.remove(&entry.tick);
        entry.tick = tick;
        entry.used = entry.used.max(used);
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

    /// The variants present, without touching the blob.
    pub fn get(&self, key: &BlobKey) -> Option<Variants> {
        self.entries.get(key).map(|e| e.variants)
    }

    /// Whether an action in flight holds the blob.
    pub fn is_pinned(&self, key: &BlobKey) -> bool {
        self.pins.contains_key(key)
    }

    /// Replaces the retained set (computed by a garbage collection pass).
    pub fn set_retained(&mut self, keys: HashSet<BlobKey>) {
        self.retained = keys;
    }

    /// Adds blobs to the retained set.
    pub fn retain(&mut self, keys: impl IntoIterator<Item = BlobKey>) {
        self.retained.extend(keys);
    }

    /// Every stored blob.
    pub fn keys(&self) -> impl Iterator<Item = &BlobKey> {
        self.entries.keys()
    }

    /// Bytes on disk of the blob's variants.
    pub fn bytes_of(&self, key: &BlobKey) -> u64 {
        self.entries.get(key).map_or(0, |e| {
            (u64::from(e.variants.plain) + u64::from(e.variants.exec)) * key.size
        })
    }

    fn evictable(&self, key: &BlobKey) -> bool {
        !self.pins.contains_key(key) && !self.retained.contains(key)
    }

    fn evictable_with(&self, key: &BlobKey, retained: Option<&HashSet<BlobKey>>) -> bool {
        let retained = retained.unwrap_or(&self.retained);
        !self.pins.contains_key(key) && !retained.contains(key)
    }

    /// What a garbage collection would evict, without evicting it: every
    /// evictable blob last used before `cutoff` (seconds since the epoch),
    /// then least recently used evictable blobs until the total is at most
    /// `limit`. Least recently used first. `retained`: a set to spare
    /// instead of the one in force.
    pub fn plan(
        &self,
        limit: u64,
        cutoff: u64,
        retained: Option<&HashSet<BlobKey>>,
    ) -> Vec<BlobKey> {
        let mut total = self.total;
        let mut victims = Vec::new();
        for key in self
            .lru
            .values()
            .filter(|k| self.evictable_with(k, retained))
        {
            let expired = self.entries.get(key).is_some_and(|e| e.used < cutoff);
            if expired || total > limit {
                total -= self.bytes_of(key);
                victims.push(*key);
            }
        }
        victims
    }

    /// Chooses blobs to evict, oldest first, skipping pinned and retained
    /// ones, until the total would be at most `limit`; removes them from
    /// the index.
    pub fn evict_to(&mut self, limit: u64) -> Vec<(BlobKey, Variants)> {
        let mut victims = Vec::new();
        if self.total <= limit {
            return victims;
        }
        let candidates: Vec<BlobKey> = self
            .lru
            .values()
            .filter(|k| self.evictable(k))
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

    #[test]
    fn plans_expired_then_over_the_limit_sparing_retained() {
        let mut idx = Index::default();
        let old = key_of(DigestFunction::Sha256, b"old!");
        let kept = key_of(DigestFunction::Sha256, b"kept");
        let fresh = key_of(DigestFunction::Sha256, b"new!");
        let inflight = key_of(DigestFunction::Sha256, b"busy");
        idx.insert_used(old, false, 100);
        idx.insert_used(kept, false, 100);
        idx.insert_used(fresh, false, 1000);
        idx.insert_used(inflight, false, 100);
        idx.retain([kept]);
        idx.pin(inflight);
        // Only the expired, unretained, unpinned blob.
        assert_eq!(idx.plan(u64::MAX, 500, None), vec![old]);
        // Over the size limit: fresh blobs go too, never retained or pinned.
        assert_eq!(idx.plan(8, 500, None), vec![old, fresh]);
        // Against another retained set.
        let other: HashSet<BlobKey> = [old].into_iter().collect();
        assert_eq!(idx.plan(u64::MAX, 500, Some(&other)), vec![kept]);
        assert_eq!(idx.total_bytes(), 16, "planning evicts nothing");
        assert!(
            idx.evict_to(0)
                .iter()
                .all(|(k, _)| *k != kept && *k != inflight)
        );
    }
}

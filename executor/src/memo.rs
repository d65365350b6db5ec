//! Small in-memory memos for the cache-hit path, so that a hit is served
//! without a trip to a blocking thread: a bounded map and file stamps.
//!
//! A memo never decides on its own: what it remembers about a file is used
//! only while the file's [`FileStamp`] is unchanged (every file the daemon
//! rewrites is replaced by a rename, which gives it a new inode), and what
//! it remembers about a blob only while the CAS still holds the blob.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Identity and version of a file: device, inode, size, modification and
/// change times. A file replaced by a rename, rewritten or removed no
/// longer matches the stamp it had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of a file's metadata.
    pub fn of(meta: &std::fs::Metadata) -> Self {
        FileStamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp of the file at `path` now; `None` when it cannot be read
    /// (gone, or unreadable).
    pub fn current(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of(&m))
    }
}

/// A map holding at most `cap` entries; past that, the entry inserted
/// longest ago goes first.
#[derive(Debug)]
pub struct Bounded<K, V> {
    map: HashMap<K, V>,
    /// The keys of `map` in insertion order.
    order: VecDeque<K>,
    cap: usize,
}

impl<K: Eq + Hash + Clone, V> Bounded<K, V> {
    /// An empty map of at most `cap` entries (at least one).
    pub fn new(cap: usize) -> Self {
        Bounded {
            map: HashMap::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Sets `key`'s value, evicting the oldest entries beyond the bound.
    pub fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    /// Forgets `key` (in time proportional to the entries held).
    pub fn remove(&mut self, key: &K) {
        if self.map.remove(key).is_some() {
            self.order.retain(|k| k != key);
        }
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Locks a memo, ignoring poisoning (a memo holds no invariant a panic
/// could break halfway).
pub fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_evicts_the_oldest_insertion() {
        let mut m = Bounded::new(2);
        m.insert(1, "a");
        m.insert(2, "b");
        m.insert(1, "a2"); // an update keeps its place
        m.insert(3, "c");
        assert_eq!(m.get(&1), None);
        assert_eq!(m.get(&2), Some(&"b"));
        assert_eq!(m.get(&3), Some(&"c"));
        assert_eq!(m.len(), 2);
        m.remove(&2);
        m.insert(2, "b2");
        assert_eq!(m.get(&2), Some(&"b2"));
        m.insert(4, "d");
        assert_eq!(m.get(&3), None);
        assert_eq!(m.get(&2), Some(&"b2"));
        assert_eq!(m.get(&4), Some(&"d"));
    }

    #[test]
    fn stamp_changes_when_a_file_is_replaced() {
        let dir = std::env::temp_dir().join(format!("memo-stamp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f");
        std::fs::write(&path, b"one").unwrap();
        let first = FileStamp::current(&path).unwrap();
        assert_eq!(FileStamp::current(&path), Some(first));
        let tmp = dir.join("f.tmp");
        std::fs::write(&tmp, b"two").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(FileStamp::current(&path), Some(first));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(FileStamp::current(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

//! The action cache: `ActionResult`s keyed by instance name, digest
//! function and action digest, one file each, written by temp file, fsync
//! and rename: `ac/{function}/{hh}/{hash}-{size}` for the empty instance
//! name, `ac/instances/{hex of the name}/{function}/...` for the others (so
//! that one instance never serves another's results).
//!
//! A result is served only while every blob it refers to (outputs, the
//! files inside output trees, stdout and stderr) is still in the CAS.
//!
//! Results served recently are remembered, decoded, with the list of
//! blobs they refer to and the stamp of their file ([`crate::memo`]): a
//! hit on one of them costs a `stat` and an index lookup instead of a
//! read, a decode and a walk of its output trees. The stamp is checked on
//! every hit, so a result rewritten or removed (by this daemon, another
//! process or garbage collection) is never served from memory.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, Tree};
use prost::Message;

use crate::cas::Store;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::memo::{Bounded, FileStamp, lock};

/// Results remembered for the hit path at most.
pub const RECENT_RESULTS: usize = 4096;

/// A result served recently, as its file was when read.
#[derive(Debug)]
struct Recent {
    path: PathBuf,
    stamp: FileStamp,
    result: ActionResult,
    /// Every blob it refers to ([`referenced_blobs`]).
    blobs: Vec<BlobKey>,
}

/// The on-disk action cache.
#[derive(Debug)]
pub struct ActionCache {
    root: PathBuf,
    tmp: PathBuf,
    fsync: bool,
    recent: Mutex<Bounded<(String, BlobKey), Arc<Recent>>>,
}

impl ActionCache {
    /// Opens (creating) the cache under `state_dir`; `tmp` must be on the
    /// same filesystem.
    pub fn open(state_dir: &Path, tmp: &Path, fsync: bool) -> Result<Self> {
        let root = state_dir.join("ac");
        fs::create_dir_all(&root).map_err(Error::io("create", &root))?;
        Ok(ActionCache {
            root,
            tmp: tmp.to_owned(),
            fsync,
            recent: Mutex::new(Bounded::new(RECENT_RESULTS)),
        })
    }

    fn path(&self, instance: &str, key: &BlobKey) -> PathBuf {
        let hex = key.hex();
        let base = if instance.is_empty() {
            self.root.clone()
        } else {
            let name: String = instance.bytes().map(|b| format!("{b:02x}")).collect();
            self.root.join("instances").join(name)
        };
        base.join(key.function.name())
            .join(&hex[..2])
            .join(format!("{hex}-{}", key.size))
    }

    /// The stored result for the empty instance name, if any (whatever its
    /// blobs' state).
    pub fn get_raw(&self, key: &BlobKey) -> Result<Option<ActionResult>> {
        self.get_raw_in("", key)
    }

    /// The stored result of `instance`, if any (whatever its blobs' state).
    pub fn get_raw_in(&self, instance: &str, key: &BlobKey) -> Result<Option<ActionResult>> {
        let path = self.path(instance, key);
        let data = match fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", path)(e)),
        };
        ActionResult::decode(data.as_slice())
            .map(Some)
            .map_err(|source| Error::Corrupt {
                what: "action result",
                key: *key,
                source,
            })
    }

    /// The stored result for the empty instance name if every blob it
    /// refers to is still stored.
    pub fn get(&self, key: &BlobKey, store: &Store) -> Result<Option<ActionResult>> {
        self.get_in("", key, store)
    }

    /// The stored result of `instance` if every blob it refers to is still
    /// stored.
    pub fn get_in(
        &self,
        instance: &str,
        key: &BlobKey,
        store: &Store,
    ) -> Result<Option<ActionResult>> {
        if let Some(result) = self.get_recent_in(instance, key, store) {
            return Ok(Some(result));
        }
        let path = self.path(instance, key);
        // Stamp and bytes from one open file: files here are replaced by
        // rename, never rewritten in place.
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", path)(e)),
        };
        let mut data = Vec::new();
        let stamp = file
            .metadata()
            .map(|m| FileStamp::of(&m))
            .and_then(|stamp| file.read_to_end(&mut data).map(|_| stamp))
            .map_err(Error::io("read", &path))?;
        let result = ActionResult::decode(data.as_slice()).map_err(|source| Error::Corrupt {
            what: "action result",
            key: *key,
            source,
        })?;
        match referenced_blobs(&result, key.function, store) {
            Ok(blobs) if store.find_missing(&blobs).is_empty() => {
                lock(&self.recent).insert(
                    (instance.to_owned(), *key),
                    Arc::new(Recent {
                        path,
                        stamp,
                        result: result.clone(),
                        blobs,
                    }),
                );
                Ok(Some(result))
            }
            Ok(_) | Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`ActionCache::get_in`] from memory only: the result when it was
    /// served recently, its file is unchanged (one `stat`) and every blob
    /// it refers to is still stored; `None` when that is not known (ask
    /// [`ActionCache::get_in`]). Does not block on disk reads.
    pub fn get_recent_in(
        &self,
        instance: &str,
        key: &BlobKey,
        store: &Store,
    ) -> Option<ActionResult> {
        let entry = lock(&self.recent)
            .get(&(instance.to_owned(), *key))
            .cloned()?;
        if FileStamp::current(&entry.path) != Some(entry.stamp)
            || !store.find_missing(&entry.blobs).is_empty()
        {
            lock(&self.recent).remove(&(instance.to_owned(), *key));
            return None;
        }
        Some(entry.result.clone())
    }

    /// Stores a result for the empty instance name.
    pub fn put(&self, key: &BlobKey, result: &ActionResult) -> Result<()> {
        self.put_in("", key, result)
    }

    /// Stores a result for `instance`.
    pub fn put_in(&self, instance: &str, key: &BlobKey, result: &ActionResult) -> Result<()> {
        lock(&self.recent).remove(&(instance.to_owned(), *key));
        let path = self.path(instance, key);
        let dir = path.parent().expect("has a parent");
        fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let tmp = self.tmp.join(uuid::Uuid::new_v4().to_string());
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&result.encode_to_vec())?;
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
            Error::io("write action result", &path)(e)
        })
    }
}

/// One stored result, as [`ActionCache::entries`] lists it.
#[derive(Debug, Clone)]
pub struct AcEntry {
    /// Its instance name.
    pub instance: String,
    /// The action digest.
    pub key: BlobKey,
    /// When it was written (the file's modification time).
    pub written: std::time::SystemTime,
}

impl ActionCache {
    /// Every stored result (unreadable directories and stray files are
    /// skipped).
    pub fn entries(&self) -> Vec<AcEntry> {
        let mut out = Vec::new();
        self.entries_under(&self.root, "", &mut out);
        if let Ok(rd) = fs::read_dir(self.root.join("instances")) {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(instance) = name.to_str().and_then(unhex_name) else {
                    continue;
                };
                self.entries_under(&e.path(), &instance, &mut out);
            }
        }
        out
    }

    fn entries_under(&self, base: &Path, instance: &str, out: &mut Vec<AcEntry>) {
        for function in DigestFunction::ALL {
            let Ok(shards) = fs::read_dir(base.join(function.name())) else {
                continue;
            };
            for shard in shards.flatten() {
                let Ok(files) = fs::read_dir(shard.path()) else {
                    continue;
                };
                for file in files.flatten() {
                    let name = file.file_name();
                    let Some((hex, size)) = name.to_str().and_then(|n| n.split_once('-')) else {
                        continue;
                    };
                    let Ok(size) = size.parse::<i64>() else {
                        continue;
                    };
                    let Ok(key) = BlobKey::parse(function, hex, size) else {
                        continue;
                    };
                    let written = file
                        .metadata()
                        .and_then(|m| m.modified())
                        .unwrap_or(std::time::UNIX_EPOCH);
                    out.push(AcEntry {
                        instance: instance.to_owned(),
                        key,
                        written,
                    });
                }
            }
        }
    }

    /// Removes a stored result; true when there was one.
    pub fn remove(&self, instance: &str, key: &BlobKey) -> Result<bool> {
        lock(&self.recent).remove(&(instance.to_owned(), *key));
        let path = self.path(instance, key);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove", path)(e)),
        }
    }
}

/// The instance name a directory under `ac/instances` stands for.
fn unhex_name(hex: &str) -> Option<String> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Every CAS blob a result refers to, including the files inside output
/// trees (read from the store; a missing tree gives `NotFound`).
pub fn referenced_blobs(
    result: &ActionResult,
    function: DigestFunction,
    store: &Store,
) -> Result<Vec<BlobKey>> {
    let mut keys = Vec::new();
    for f in &result.output_files {
        keys.push(BlobKey::from_opt(
            function,
            f.digest.as_ref(),
            "output file digest",
        )?);
    }
    for d in [&result.stdout_digest, &result.stderr_digest]
        .into_iter()
        .flatten()
    {
        keys.push(BlobKey::from_proto(function, d)?);
    }
    for d in &result.output_directories {
        let tree_key = BlobKey::from_opt(function, d.tree_digest.as_ref(), "output tree digest")?;
        keys.push(tree_key);
        let data = store.read(&tree_key)?;
        let tree = Tree::decode(data.as_slice()).map_err(|source| Error::Corrupt {
            what: "tree",
            key: tree_key,
            source,
        })?;
        for dir in tree.root.iter().chain(tree.children.iter()) {
            for f in &dir.files {
                keys.push(BlobKey::from_opt(
                    function,
                    f.digest.as_ref(),
                    "file digest",
                )?);
            }
        }
    }
    Ok(keys)
}

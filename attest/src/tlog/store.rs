//! The durable log: `entries` (append-only records) and `checkpoint` (the
//! latest signed checkpoint) in one directory.
//!
//! A record is `u32 BE length || data || SHA-256(0x00 || data)`: the trailing
//! leaf hash lets [`Log::open`] tell a torn write (a crash mid-append) from
//! an intact record. Appends are fsynced before they return; the checkpoint
//! is replaced atomically (temporary file, fsync, rename, directory fsync).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::{SigningKey, VerifyingKey};

use super::checkpoint::{Checkpoint, CheckpointError};
use super::merkle::{Hash, MerkleTree, ProofError, leaf_hash};
use crate::fsutil;

const ENTRIES: &str = "entries";
const CHECKPOINT: &str = "checkpoint";
/// Largest entry accepted.
pub const MAX_ENTRY: usize = 64 << 20;

/// Errors of the durable log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file operation failed.
    #[error("transparency log: failed to {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// An entry covered by the signed checkpoint is damaged.
    #[error(
        "transparency log: entry {index} is corrupt ({reason}) but the signed checkpoint covers it"
    )]
    Corrupt {
        /// Its index.
        index: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// The log holds fewer entries than its signed checkpoint.
    #[error(
        "transparency log: {entries} entries on disk, but the signed checkpoint covers {checkpoint}"
    )]
    Truncated {
        /// Entries on disk.
        entries: u64,
        /// Checkpoint size.
        checkpoint: u64,
    },
    /// The recomputed root differs from the signed checkpoint's.
    #[error(
        "transparency log: recomputed root of the first {size} entries disagrees with the signed checkpoint"
    )]
    CheckpointMismatch {
        /// The checkpoint's size.
        size: u64,
    },
    /// The stored checkpoint does not verify.
    #[error("transparency log: stored checkpoint rejected: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// Entries exist beyond the genesis entry but no checkpoint does.
    #[error("transparency log: {0} entries but no signed checkpoint")]
    MissingCheckpoint(u64),
    /// A proof was asked for sizes the log does not have.
    #[error("transparency log: {0}")]
    Proof(#[from] ProofError),
    /// An entry larger than [`MAX_ENTRY`].
    #[error("transparency log: entry of {0} bytes is too large")]
    TooLarge(usize),
    /// An earlier append failed half-way and could not be undone.
    #[error("transparency log: refusing appends after an unrecoverable write failure")]
    Poisoned,
}

/// What [`Log::open`] repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of a torn last record (never acknowledged) that were cut off.
    pub truncated_bytes: u64,
    /// Intact entries beyond the signed checkpoint (a crash between append
    /// and checkpoint); the next signed checkpoint covers them.
    pub unsigned_entries: u64,
}

/// The append-only log.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    file: File,
    origin: String,
    tree: MerkleTree,
    offsets: Vec<u64>,
    end: u64,
    note: Option<String>,
    signer: Option<usize>,
    signed_size: u64,
    poisoned: bool,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Log {
    /// Opens (or creates) the log in `dir`: reads every entry, recomputes the
    /// tree, and checks it against the stored checkpoint, which must be
    /// signed under `origin` by one of `keys`. A torn last record beyond the
    /// checkpoint is truncated; any other disagreement is an error.
    pub fn open(
        dir: &Path,
        origin: &str,
        keys: &[VerifyingKey],
    ) -> Result<(Self, OpenReport), LogError> {
        fsutil::create_private_dir(dir).map_err(io_err("create", dir))?;
        let path = dir.join(ENTRIES);
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Ok(f) => {
                f.sync_all().map_err(io_err("sync", &path))?;
                fsutil::sync_dir(dir).map_err(io_err("sync", dir))?;
                f
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?,
            Err(e) => return Err(io_err("create", &path)(e)),
        };
        let mut log = Self {
            dir: dir.to_path_buf(),
            file,
            origin: origin.into(),
            tree: MerkleTree::new(),
            offsets: Vec::new(),
            end: 0,
            note: None,
            signer: None,
            signed_size: 0,
            poisoned: false,
        };
        let damage = log.scan().map_err(io_err("read", &path))?;
        let cp_path = dir.join(CHECKPOINT);
        let mut stored = None;
        let signed = match std::fs::read_to_string(&cp_path) {
            Ok(note) => {
                let (cp, signer) = Checkpoint::verify(&note, origin, keys)?;
                log.note = Some(note);
                log.signer = Some(signer);
                let size = cp.size;
                stored = Some(cp);
                size
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Only the genesis entry may precede the first checkpoint.
                if log.size() > 1 {
                    return Err(LogError::MissingCheckpoint(log.size()));
                }
                0
            }
            Err(e) => return Err(io_err("read", &cp_path)(e)),
        };
        let mut report = OpenReport::default();
        if let Some(reason) = damage {
            if log.size() < signed {
                return Err(LogError::Corrupt {
                    index: log.size(),
                    reason,
                });
            }
            let len = log.file.metadata().map_err(io_err("stat", &path))?.len();
            log.file
                .set_len(log.end)
                .map_err(io_err("truncate", &path))?;
            log.file.sync_all().map_err(io_err("sync", &path))?;
            report.truncated_bytes = len - log.end;
        }
        if log.size() < signed {
            return Err(LogError::Truncated {
                entries: log.size(),
                checkpoint: signed,
            });
        }
        if let Some(cp) = stored
            && log.tree.root(cp.size)? != cp.root
        {
            return Err(LogError::CheckpointMismatch { size: cp.size });
        }
        log.signed_size = signed;
        report.unsigned_entries = log.size() - signed;
        Ok((log, report))
    }

    /// Reads all records; returns why the tail is unusable, if it is.
    fn scan(&mut self) -> io::Result<Option<&'static str>> {
        let mut r = BufReader::new(&self.file);
        let mut pos = 0u64;
        loop {
            let mut len = [0u8; 4];
            match read_full(&mut r, &mut len)? {
                0 => return Ok(None),
                4 => {}
                _ => return Ok(Some("torn length")),
            }
            let n = u32::from_be_bytes(len) as usize;
            if n > MAX_ENTRY {
                return Ok(Some("impossible length"));
            }
            let mut data = vec![0u8; n + 32];
            if read_full(&mut r, &mut data)? != data.len() {
                return Ok(Some("torn record"));
            }
            let h = leaf_hash(&data[..n]);
            if h[..] != data[n..] {
                return Ok(Some("checksum mismatch"));
            }
            self.offsets.push(pos);
            self.tree.push(h);
            pos += 4 + n as u64 + 32;
            self.end = pos;
        }
    }

    /// The origin line.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// Appends `data` durably (fsynced before returning) and returns its
    /// index. The entry is covered by the next [`Self::sign_checkpoint`].
    pub fn append(&mut self, data: &[u8]) -> Result<u64, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        if data.len() > MAX_ENTRY {
            return Err(LogError::TooLarge(data.len()));
        }
        let h = leaf_hash(data);
        let mut rec = Vec::with_capacity(data.len() + 36);
        rec.extend_from_slice(&(data.len() as u32).to_be_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&h);
        let path = self.dir.join(ENTRIES);
        let written = self
            .file
            .write_all_at(&rec, self.end)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            // Undo the partial record so the file stays a sequence of records.
            if self
                .file
                .set_len(self.end)
                .and_then(|()| self.file.sync_all())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(io_err("append to", &path)(e));
        }
        self.offsets.push(self.end);
        self.end += rec.len() as u64;
        self.tree.push(h);
        Ok(self.size() - 1)
    }

    /// Signs a checkpoint of the current tree with `key`, stores it durably
    /// and returns the signed note.
    pub fn sign_checkpoint(&mut self, key: &SigningKey) -> Result<String, LogError> {
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size: self.size(),
            root: self.tree.root(self.size())?,
        };
        let note = cp.sign(key);
        let path = self.dir.join(CHECKPOINT);
        fsutil::replace_atomic(&path, note.as_bytes(), 0o644).map_err(io_err("write", &path))?;
        self.note = Some(note.clone());
        self.signer = None;
        self.signed_size = cp.size;
        Ok(note)
    }

    /// The latest signed checkpoint, if one was ever signed.
    pub fn checkpoint(&self) -> Option<&str> {
        self.note.as_deref()
    }

    /// Index (into the keys given to [`Self::open`]) of the key that signed
    /// the checkpoint found on open.
    pub fn opened_checkpoint_signer(&self) -> Option<usize> {
        self.signer
    }

    /// Size of the latest signed checkpoint (0 if none).
    pub fn checkpoint_size(&self) -> u64 {
        self.signed_size
    }

    /// The root of the first `size` entries.
    pub fn root(&self, size: u64) -> Result<Hash, LogError> {
        Ok(self.tree.root(size)?)
    }

    /// The audit path of entry `index` in the tree of `size` entries.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        Ok(self.tree.inclusion_proof(index, size)?)
    }

    /// The consistency proof from `old` to `new` entries.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        Ok(self.tree.consistency_proof(old, new)?)
    }

    /// The data of entry `index`.
    pub fn entry(&self, index: u64) -> Result<Vec<u8>, LogError> {
        let path = self.dir.join(ENTRIES);
        let off = *self
            .offsets
            .get(index as usize)
            .ok_or(ProofError::OutOfRange(index, index + 1, self.size()))?;
        let mut len = [0u8; 4];
        self.file
            .read_exact_at(&mut len, off)
            .map_err(io_err("read", &path))?;
        let mut data = vec![0u8; u32::from_be_bytes(len) as usize];
        self.file
            .read_exact_at(&mut data, off + 4)
            .map_err(io_err("read", &path))?;
        Ok(data)
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;

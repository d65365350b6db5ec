//! An output tree on disk, read into a listing of digests.
//!
//! The walk never follows a symlink: every entry is examined with
//! `symlink_metadata`, a symlink is recorded by its target, and a directory
//! is entered only when it is a real directory.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Error;

/// Most entries one tree may hold.
pub const MAX_ENTRIES: usize = 1_000_000;

/// One path of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// A regular file.
    File {
        /// `sha256:` and the hex SHA-256 of its content.
        digest: String,
        /// Size in bytes.
        size: u64,
        /// Permission bits (`mode & 0o7777`).
        mode: u32,
    },
    /// A directory.
    Directory {
        /// Permission bits.
        mode: u32,
    },
    /// A symbolic link, recorded by its target, never followed.
    Symlink {
        /// The target as stored (lossily decoded when not UTF-8).
        target: String,
    },
    /// A fifo, socket or device (outputs should hold none).
    Special {
        /// The whole `st_mode`, file type included.
        mode: u32,
    },
}

impl Entry {
    /// `file`, `directory`, `symlink` or `special`.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::File { .. } => "file",
            Entry::Directory { .. } => "directory",
            Entry::Symlink { .. } => "symlink",
            Entry::Special { .. } => "special",
        }
    }
}

/// A directory tree: its root on disk and every path below it.
#[derive(Debug, Clone)]
pub struct Tree {
    root: PathBuf,
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// Reads every path under `root` (which must be a directory, not a
    /// symlink to one), hashing each regular file.
    pub fn read(root: &Path) -> Result<Tree, Error> {
        let meta = fs::symlink_metadata(root).map_err(|e| Error::io(root, e))?;
        if !meta.is_dir() {
            return Err(Error::NotADirectory {
                path: root.to_owned(),
            });
        }
        let mut entries = BTreeMap::new();
        let mut stack = vec![String::new()];
        while let Some(rel) = stack.pop() {
            let dir = root.join(&rel);
            for item in fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
                let item = item.map_err(|e| Error::io(&dir, e))?;
                let name = item.file_name().to_string_lossy().into_owned();
                let path = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let abs = item.path();
                let meta = fs::symlink_metadata(&abs).map_err(|e| Error::io(&abs, e))?;
                let ty = meta.file_type();
                let entry = if ty.is_dir() {
                    stack.push(path.clone());
                    Entry::Directory {
                        mode: meta.mode() & 0o7777,
                    }
                } else if ty.is_symlink() {
                    let target = fs::read_link(&abs).map_err(|e| Error::io(&abs, e))?;
                    Entry::Symlink {
                        target: target.to_string_lossy().into_owned(),
                    }
                } else if ty.is_file() {
                    Entry::File {
                        digest: file_digest(&abs)?,
                        size: meta.len(),
                        mode: meta.mode() & 0o7777,
                    }
                } else {
                    debug_assert!(
                        ty.is_fifo()
                            || ty.is_socket()
                            || ty.is_block_device()
                            || ty.is_char_device()
                    );
                    Entry::Special { mode: meta.mode() }
                };
                entries.insert(path, entry);
                if entries.len() > MAX_ENTRIES {
                    return Err(Error::TooManyEntries {
                        path: root.to_owned(),
                        limit: MAX_ENTRIES,
                    });
                }
            }
        }
        Ok(Tree {
            root: root.to_owned(),
            entries,
        })
    }

    /// The directory the tree was read from.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every path (relative, `/`-separated) and its entry, sorted by path.
    pub fn entries(&self) -> &BTreeMap<String, Entry> {
        &self.entries
    }

    /// The on-disk path of a relative path of this tree.
    pub fn path_of(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// `sha256:` and the hex SHA-256 of the canonical listing (one line per
    /// path: path, kind, digest or target, mode; NUL-separated): equal
    /// trees have equal digests.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for (path, entry) in &self.entries {
            let line = match entry {
                Entry::File { digest, mode, .. } => format!("{path}\0file\0{digest}\0{mode:o}\n"),
                Entry::Directory { mode } => format!("{path}\0directory\0\0{mode:o}\n"),
                Entry::Symlink { target } => format!("{path}\0symlink\0{target}\0\n"),
                Entry::Special { mode } => format!("{path}\0special\0\0{mode:o}\n"),
            };
            h.update(line.as_bytes());
        }
        format!("sha256:{}", hex(&h.finalize()))
    }
}

/// `sha256:` and the hex SHA-256 of a file's content.
pub fn file_digest(path: &Path) -> Result<String, Error> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("sha256:{}", hex(&h.finalize())))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_files_dirs_and_symlinks_without_following() {
        let dir = crate::testutil::TempDir::new("tree");
        let root = dir.path();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/a"), b"hello").unwrap();
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        std::os::unix::fs::symlink("d", root.join("dirlink")).unwrap();
        let t = Tree::read(root).unwrap();
        let paths: Vec<&str> = t.entries().keys().map(String::as_str).collect();
        assert_eq!(paths, ["d", "d/a", "dirlink", "link"]);
        assert_eq!(
            t.entries()["link"],
            Entry::Symlink {
                target: "/etc".into()
            }
        );
        match &t.entries()["d/a"] {
            Entry::File { digest, size, .. } => {
                assert_eq!(*size, 5);
                assert!(digest.starts_with("sha256:2cf24dba"), "{digest}");
            }
            e => panic!("{e:?}"),
        }
        let again = Tree::read(root).unwrap();
        assert_eq!(t.digest(), again.digest());
        fs::write(root.join("d/a"), b"hellO").unwrap();
        assert_ne!(t.digest(), Tree::read(root).unwrap().digest());
        // The root itself must not be a symlink.
        let err = Tree::read(&root.join("dirlink")).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
    }
}

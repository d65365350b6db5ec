//! The REAPI Directory tree of a rootfs, and the image digest derived from it.
//!
//! Per the REAPI v2 spec (`Directory` in remote_execution.proto): each
//! directory lists its files, subdirectories and symlinks, each list sorted
//! by name (byte order of the UTF-8 name); a file carries the digest of its
//! content and `is_executable` (owner execute bit, `mode & 0o100`); a
//! subdirectory carries the digest of its own encoded `Directory` message.
//! No `node_properties` are set: times, owners and the other mode bits are
//! not part of the digest, so the same image gives the same digest on any
//! machine, whoever imported it. The image digest is the digest of the root
//! `Directory` message, written `FUNCTION:HEX/SIZE` (see [`format_digest`]).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2 as reapi;
use nix::fcntl::{OFlag, openat, readlinkat};
use nix::sys::stat::{Mode, SFlag};
use prost::Message;
use sha2::Digest as _;

use crate::error::ImageError;
use crate::fsops;

/// The REAPI digest message.
pub use reapi::Digest;

/// Directories nested deeper than this are refused (the walk is recursive).
const MAX_TREE_DEPTH: usize = 1024;

/// A digest function the image digest is computed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DigestFunction {
    /// SHA-256, the REAPI default.
    Sha256,
    /// BLAKE3 (256-bit output).
    Blake3,
}

impl DigestFunction {
    /// Lower-case name used in digest strings (`sha256`, `blake3`).
    pub fn name(self) -> &'static str {
        match self {
            DigestFunction::Sha256 => "sha256",
            DigestFunction::Blake3 => "blake3",
        }
    }

    /// The REAPI enum value for this function.
    pub fn to_reapi(self) -> reapi::digest_function::Value {
        match self {
            DigestFunction::Sha256 => reapi::digest_function::Value::Sha256,
            DigestFunction::Blake3 => reapi::digest_function::Value::Blake3,
        }
    }

    /// Digest of a byte string.
    pub fn digest_bytes(self, bytes: &[u8]) -> Digest {
        let hash = match self {
            DigestFunction::Sha256 => hex::encode(sha2::Sha256::digest(bytes)),
            DigestFunction::Blake3 => blake3::hash(bytes).to_hex().to_string(),
        };
        Digest {
            hash,
            size_bytes: bytes.len() as i64,
        }
    }

    /// Digest of everything a reader yields.
    pub fn digest_reader(self, mut r: impl Read) -> io::Result<Digest> {
        let mut buf = vec![0u8; 256 * 1024];
        let mut size = 0u64;
        let hash = match self {
            DigestFunction::Sha256 => {
                let mut h = sha2::Sha256::new();
                loop {
                    let n = read_some(&mut r, &mut buf)?;
                    if n == 0 {
                        break hex::encode(h.finalize());
                    }
                    size += n as u64;
                    h.update(&buf[..n]);
                }
            }
            DigestFunction::Blake3 => {
                let mut h = blake3::Hasher::new();
                loop {
                    let n = read_some(&mut r, &mut buf)?;
                    if n == 0 {
                        break h.finalize().to_hex().to_string();
                    }
                    size += n as u64;
                    h.update(&buf[..n]);
                }
            }
        };
        Ok(Digest {
            hash,
            size_bytes: size as i64,
        })
    }
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            other => return other,
        }
    }
}

/// `FUNCTION:HEX/SIZE`, e.g. `sha256:e3b0…b855/0`.
pub fn format_digest(f: DigestFunction, d: &Digest) -> String {
    format!("{}:{}/{}", f.name(), d.hash, d.size_bytes)
}

/// One `Directory` message of a tree, with where it sits.
#[derive(Clone, Debug, PartialEq)]
pub struct TreeDirectory {
    /// Path relative to the rootfs (`""` for the root).
    pub path: String,
    /// Digest of `encoded`.
    pub digest: Digest,
    /// The message.
    pub directory: reapi::Directory,
    /// Its canonical protobuf encoding (the bytes to store in the CAS).
    pub encoded: Vec<u8>,
}

/// One regular file of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeFile {
    /// Path relative to the rootfs.
    pub path: String,
    /// Digest of its content.
    pub digest: Digest,
    /// Owner execute bit.
    pub is_executable: bool,
}

/// The REAPI Directory tree of a rootfs.
#[derive(Clone, Debug, PartialEq)]
pub struct Tree {
    /// The function every digest in it uses.
    pub function: DigestFunction,
    /// Digest of the root `Directory` message: the image digest.
    pub root_digest: Digest,
    /// Every directory, root first, then depth first in name order (one
    /// entry per path; identical subtrees appear once per path).
    pub directories: Vec<TreeDirectory>,
    /// Every regular file, in the same order.
    pub files: Vec<TreeFile>,
}

impl Tree {
    /// Sum of file sizes.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.digest.size_bytes as u64).sum()
    }

    /// The REAPI `Tree` message: root plus each distinct child directory.
    pub fn to_reapi(&self) -> reapi::Tree {
        let mut seen = std::collections::HashSet::new();
        let children = self.directories[1..]
            .iter()
            .filter(|d| seen.insert(d.digest.hash.clone()))
            .map(|d| d.directory.clone())
            .collect();
        reapi::Tree {
            root: Some(self.directories[0].directory.clone()),
            children,
        }
    }

    /// [`format_digest`] of the root.
    pub fn digest_string(&self) -> String {
        format_digest(self.function, &self.root_digest)
    }
}

/// Computes the REAPI Directory tree of `rootfs` with digest function `f`.
///
/// The walk never follows a symlink (each directory is opened with
/// `O_NOFOLLOW` relative to its parent). Device nodes, FIFOs, sockets and
/// non-UTF-8 names cannot be expressed and are errors.
pub fn tree(rootfs: &Path, f: DigestFunction) -> Result<Tree, ImageError> {
    let root = fsops::open_dir_path(rootfs)
        .map_err(|e| ImageError::io(format!("open {}", rootfs.display()), e.into()))?;
    let mut walker = Walker {
        f,
        directories: Vec::new(),
        files: Vec::new(),
    };
    let root_digest = walker.dir(root.as_fd(), "", 0)?;
    Ok(Tree {
        function: f,
        root_digest,
        directories: walker.directories,
        files: walker.files,
    })
}

struct Walker {
    f: DigestFunction,
    directories: Vec<TreeDirectory>,
    files: Vec<TreeFile>,
}

impl Walker {
    fn dir(&mut self, fd: BorrowedFd<'_>, path: &str, depth: usize) -> Result<Digest, ImageError> {
        let err = |p: &str, reason: String| ImageError::Tree {
            path: if p.is_empty() {
                ".".into()
            } else {
                p.to_owned()
            },
            reason,
        };
        if depth > MAX_TREE_DEPTH {
            return Err(err(
                path,
                format!("nested deeper than {MAX_TREE_DEPTH} directories"),
            ));
        }
        let slot = self.directories.len();
        self.directories.push(TreeDirectory {
            path: path.to_owned(),
            digest: Digest::default(),
            directory: reapi::Directory::default(),
            encoded: Vec::new(),
        });
        let mut msg = reapi::Directory::default();
        let names = fsops::list_dir(fd).map_err(|e| err(path, format!("list: {e}")))?;
        for raw in names {
            let name = String::from_utf8(raw).map_err(|b| {
                err(
                    path,
                    format!(
                        "name {:?} is not UTF-8",
                        String::from_utf8_lossy(b.as_bytes())
                    ),
                )
            })?;
            let child = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            let st = fsops::lstat_at(fd, &name)
                .map_err(|e| err(&child, format!("stat: {e}")))?
                .ok_or_else(|| err(&child, "vanished during the walk".into()))?;
            match fsops::kind(&st) {
                SFlag::S_IFDIR => {
                    let sub = fsops::open_dir_at(fd, &name)
                        .map_err(|e| err(&child, format!("open: {e}")))?;
                    let digest = self.dir(sub.as_fd(), &child, depth + 1)?;
                    msg.directories.push(reapi::DirectoryNode {
                        name,
                        digest: Some(digest),
                    });
                }
                SFlag::S_IFREG => {
                    let file = openat(
                        fd,
                        name.as_str(),
                        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                        Mode::empty(),
                    )
                    .map_err(|e| err(&child, format!("open: {e}")))?;
                    let digest = self
                        .f
                        .digest_reader(File::from(file))
                        .map_err(|e| err(&child, format!("read: {e}")))?;
                    let is_executable = st.st_mode & 0o100 != 0;
                    self.files.push(TreeFile {
                        path: child,
                        digest: digest.clone(),
                        is_executable,
                    });
                    msg.files.push(reapi::FileNode {
                        name,
                        digest: Some(digest),
                        is_executable,
                        node_properties: None,
                    });
                }
                SFlag::S_IFLNK => {
                    let target = readlinkat(fd, name.as_str())
                        .map_err(|e| err(&child, format!("readlink: {e}")))?;
                    let target = target
                        .into_string()
                        .map_err(|_| err(&child, "symlink target is not UTF-8".into()))?;
                    msg.symlinks.push(reapi::SymlinkNode {
                        name,
                        target,
                        node_properties: None,
                    });
                }
                other => {
                    return Err(err(
                        &child,
                        format!("special file ({other:?}) has no REAPI node"),
                    ));
                }
            }
        }
        // `list_dir` sorted names by bytes and each list keeps that order,
        // which is the order REAPI requires.
        let encoded = msg.encode_to_vec();
        let digest = self.f.digest_bytes(&encoded);
        let entry = &mut self.directories[slot];
        entry.digest = digest.clone();
        entry.directory = msg;
        entry.encoded = encoded;
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_directory_digest_is_hash_of_empty_message() {
        let d = tempfile::tempdir().unwrap();
        let t = tree(d.path(), DigestFunction::Sha256).unwrap();
        assert_eq!(
            t.root_digest.hash,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(t.root_digest.size_bytes, 0);
        assert_eq!(
            t.digest_string(),
            format!("sha256:{}/0", t.root_digest.hash)
        );
    }

    #[test]
    fn tree_matches_hand_built_messages() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("b")).unwrap();
        std::fs::write(d.path().join("b/x"), b"hi").unwrap();
        std::fs::write(d.path().join("a"), b"").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(d.path().join("a"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("b/x", d.path().join("c")).unwrap();
        let f = DigestFunction::Blake3;
        let t = tree(d.path(), f).unwrap();
        let sub = reapi::Directory {
            files: vec![reapi::FileNode {
                name: "x".into(),
                digest: Some(f.digest_bytes(b"hi")),
                is_executable: false,
                node_properties: None,
            }],
            ..Default::default()
        };
        let root = reapi::Directory {
            files: vec![reapi::FileNode {
                name: "a".into(),
                digest: Some(f.digest_bytes(b"")),
                is_executable: true,
                node_properties: None,
            }],
            directories: vec![reapi::DirectoryNode {
                name: "b".into(),
                digest: Some(f.digest_bytes(&sub.encode_to_vec())),
            }],
            symlinks: vec![reapi::SymlinkNode {
                name: "c".into(),
                target: "b/x".into(),
                node_properties: None,
            }],
            node_properties: None,
        };
        assert_eq!(t.root_digest, f.digest_bytes(&root.encode_to_vec()));
        assert_eq!(t.directories.len(), 2);
        assert_eq!(t.directories[1].path, "b");
        assert_eq!(t.files.len(), 2);
        assert_eq!(t.to_reapi().children, vec![sub]);
    }
}

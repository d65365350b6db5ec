//! Output collection, after every process of the sandbox is dead.
//!
//! Every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`
//! relative to the sandbox's `/work`, so nothing the step planted (a symlink
//! to `/etc/shadow`, `..`, a magic link) can make the helper read outside
//! it. Symlinks are recorded as symlinks; fifos, sockets and devices are
//! rejected.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::dir::{Dir, Type};
use nix::fcntl::{OFlag, ResolveFlag};
use nix::sys::stat::{Mode, SFlag, fstat};

use crate::status::{OutputEntry, OutputKind};

/// What collection found.
#[derive(Debug, Default)]
pub struct Collected {
    /// Entries copied out.
    pub entries: Vec<OutputEntry>,
    /// Problems, each naming the path.
    pub errors: Vec<String>,
}

/// Most entries one collection may copy (a step cannot exhaust the helper).
const MAX_ENTRIES: usize = 1_000_000;

fn open_beneath(dir: BorrowedFd<'_>, path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = nix::fcntl::OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        );
    nix::fcntl::openat2(dir, path, how)
}

/// Lists every path the step wrote, from the overlay's upper layer: files,
/// symlinks and directories, skipping whiteouts (deleted inputs).
pub fn written_paths(upper: BorrowedFd<'_>) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let fd = if rel.is_empty() {
            open_beneath(upper, Path::new("."), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?
        } else {
            open_beneath(upper, Path::new(&rel), OFlag::O_RDONLY | OFlag::O_DIRECTORY)?
        };
        let mut dir = Dir::from_fd(fd)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = String::from_utf8_lossy(name).into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            names.push((path, entry.file_type()));
        }
        for (path, ty) in names {
            if ty == Some(Type::CharacterDevice) {
                continue; // a whiteout: the step deleted an input
            }
            if ty == Some(Type::Directory) {
                stack.push(path.clone());
            }
            out.push(path);
            if out.len() > MAX_ENTRIES {
                return Err(io::Error::other("more than a million paths written"));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Copies each of `paths` (relative to `work`) into `dest`, recursively for
/// directories. Missing declared outputs are not errors (REAPI reports them
/// as absent); invalid ones are.
pub fn collect(work: BorrowedFd<'_>, paths: &[String], dest: &Path) -> Collected {
    let mut c = Collected::default();
    std::fs::create_dir_all(dest).unwrap_or_else(|e| {
        c.errors
            .push(format!("cannot create {}: {e}", dest.display()))
    });
    let mut seen = std::collections::BTreeSet::new();
    let mut queue: Vec<String> = paths.iter().rev().cloned().collect();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        if c.entries.len() >= MAX_ENTRIES {
            c.errors.push("more than a million output entries".into());
            break;
        }
        match collect_one(work, &path, dest) {
            Ok(None) => {}
            Ok(Some((entry, children))) => {
                c.entries.push(entry);
                for child in children.into_iter().rev() {
                    queue.push(format!("{path}/{child}"));
                }
            }
            Err(e) => c.errors.push(e),
        }
    }
    c.entries.sort_by(|a, b| a.path.cmp(&b.path));
    c
}

type One = Option<(OutputEntry, Vec<String>)>;

fn collect_one(work: BorrowedFd<'_>, path: &str, dest: &Path) -> Result<One, String> {
    let rel = Path::new(path);
    let fd = match open_beneath(work, rel, OFlag::O_PATH) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(nix::Error::ELOOP) => {
            return Err(format!("output {path:?}: a parent directory is a symlink"));
        }
        Err(nix::Error::EXDEV) => {
            return Err(format!("output {path:?} escapes the work directory"));
        }
        Err(e) => return Err(format!("output {path:?}: {e}")),
    };
    let st = fstat(fd.as_fd()).map_err(|e| format!("output {path:?}: {e}"))?;
    let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
    let out = dest.join(rel);
    let err = |e: io::Error| format!("output {path:?}: cannot write {}: {e}", out.display());
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let mut entry = OutputEntry {
        path: path.to_owned(),
        kind: OutputKind::File,
        size: 0,
        executable: false,
        target: None,
    };
    match kind {
        SFlag::S_IFREG => {
            let src = open_beneath(work, rel, OFlag::O_RDONLY)
                .map_err(|e| format!("output {path:?}: {e}"))?;
            let executable = st.st_mode & 0o111 != 0;
            let mut dst = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if executable { 0o755 } else { 0o644 })
                .custom_flags(libc::O_NOFOLLOW)
                .open(&out)
                .map_err(err)?;
            let mut src = File::from(src);
            let size = io::copy(&mut src, &mut dst).map_err(err)?;
            entry.size = size;
            entry.executable = executable;
        }
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(fd.as_fd(), "")
                .map_err(|e| format!("output {path:?}: {e}"))?;
            std::os::unix::fs::symlink(&target, &out).map_err(err)?;
            entry.kind = OutputKind::Symlink;
            entry.target = Some(String::from_utf8_lossy(target.as_bytes()).into_owned());
        }
        SFlag::S_IFDIR => {
            match std::fs::create_dir(&out) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
            let dfd = open_beneath(work, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY)
                .map_err(|e| format!("output {path:?}: {e}"))?;
            let mut children = Vec::new();
            let mut dir = Dir::from_fd(dfd).map_err(|e| format!("output {path:?}: {e}"))?;
            for e in dir.iter() {
                let e = e.map_err(|e| format!("output {path:?}: {e}"))?;
                let name = e.file_name().to_bytes();
                if name != b"." && name != b".." {
                    children.push(String::from_utf8_lossy(name).into_owned());
                }
            }
            children.sort();
            entry.kind = OutputKind::Directory;
            return Ok(Some((entry, children)));
        }
        SFlag::S_IFIFO => {
            return Err(format!(
                "output {path:?} is a fifo; only files, directories and symlinks can be outputs"
            ));
        }
        SFlag::S_IFSOCK => {
            return Err(format!(
                "output {path:?} is a socket; only files, directories and symlinks can be outputs"
            ));
        }
        _ => {
            return Err(format!(
                "output {path:?} is a device node; only files, directories and symlinks can be outputs"
            ));
        }
    }
    Ok(Some((entry, vec![])))
}

/// Opens a directory of another process's mount namespace through procfs,
/// as a plain directory fd (used on the sandbox's init while it waits).
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?)
}

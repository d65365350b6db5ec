//! File-system operations relative to a directory fd that never follow a
//! symbolic link.
//!
//! Every path handled here is a list of validated components ([`RelPath`]):
//! no `..`, no `.`, no empty component, no `/` or NUL inside one. A walk
//! opens one component at a time with `O_NOFOLLOW | O_DIRECTORY`, so a
//! symlink anywhere on the way is refused instead of being followed, and the
//! final component is always handled with an `*at` call on its parent's fd
//! (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`, `O_EXCL`). Nothing in this module
//! builds an absolute path out of an archive's names.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// A validated relative path inside a rootfs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub(crate) struct RelPath(Vec<String>);

/// Why a name could not become a [`RelPath`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PathError {
    Absolute,
    DotDot,
    NotUtf8,
    Nul,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Absolute => "absolute path refused",
            PathError::DotDot => "`..` component refused",
            PathError::NotUtf8 => "path is not valid UTF-8 (REAPI names are strings)",
            PathError::Nul => "NUL byte in path",
        })
    }
}

impl RelPath {
    /// Parses an archive name: `./` prefixes, `.` and empty components are
    /// dropped; a leading `/` or any `..` is refused. The empty result is the
    /// root itself.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, PathError> {
        if raw.contains(&0) {
            return Err(PathError::Nul);
        }
        let text = std::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
        if text.starts_with('/') {
            return Err(PathError::Absolute);
        }
        let mut parts = Vec::new();
        for part in text.split('/') {
            match part {
                "" | "." => {}
                ".." => return Err(PathError::DotDot),
                p => parts.push(p.to_owned()),
            }
        }
        Ok(RelPath(parts))
    }

    /// The components, root first.
    pub(crate) fn components(&self) -> &[String] {
        &self.0
    }

    /// True for the rootfs itself.
    #[cfg(test)]
    pub(crate) fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent path and the final name, or `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(RelPath, &str)> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last))
    }

    /// This path with one more component.
    pub(crate) fn child(&self, name: &str) -> RelPath {
        let mut parts = self.0.clone();
        parts.push(name.to_owned());
        RelPath(parts)
    }

    /// True when `self` is `other` or lies beneath it.
    pub(crate) fn starts_with(&self, other: &RelPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str(".");
        }
        f.write_str(&self.0.join("/"))
    }
}

/// Why a walk to a parent directory stopped.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component on the way is a symbolic link (never followed).
    Symlink(RelPath),
    /// A component on the way exists but is not a directory.
    NotDir(RelPath),
    /// A component on the way does not exist and creation was not asked for.
    Missing(RelPath),
    /// Any other error, at the given prefix.
    Sys(RelPath, Errno),
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalkError::Symlink(p) => write!(
                f,
                "path traverses the symbolic link {p} (links are never followed while applying)"
            ),
            WalkError::NotDir(p) => write!(f, "parent {p} is not a directory"),
            WalkError::Missing(p) => write!(f, "{p} does not exist"),
            WalkError::Sys(p, e) => write!(f, "{p}: {e}"),
        }
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

/// Opens a trusted directory path (our own rootfs or layout dir).
pub(crate) fn open_dir_path(path: &Path) -> nix::Result<OwnedFd> {
    openat(AT_FDCWD, path, DIR_FLAGS, Mode::empty())
}

/// Opens the directory `name` inside `parent` without following a symlink.
pub(crate) fn open_dir_at(parent: BorrowedFd<'_>, name: &str) -> nix::Result<OwnedFd> {
    openat(parent, name, DIR_FLAGS, Mode::empty())
}

/// `lstat` of `name` inside `parent`; `None` when it does not exist.
pub(crate) fn lstat_at(parent: BorrowedFd<'_>, name: &str) -> nix::Result<Option<FileStat>> {
    match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The file type bits of a stat result.
pub(crate) fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT
}

/// Opens the directory at `path` below `root`, one component at a time.
///
/// With `create`, missing components are made (mode 0700 while the import
/// runs; the caller is told each one it made through `made`, so that it can
/// give it its final mode later).
pub(crate) fn walk(
    root: BorrowedFd<'_>,
    path: &RelPath,
    create: bool,
    made: &mut dyn FnMut(&RelPath),
) -> Result<OwnedFd, WalkError> {
    let mut cur = root
        .try_clone_to_owned()
        .map_err(|e| WalkError::Sys(RelPath::default(), io_errno(&e)))?;
    let mut prefix = RelPath::default();
    for name in path.components() {
        prefix = prefix.child(name);
        let next = match open_dir_at(cur.as_fd(), name) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create => {
                match nix::sys::stat::mkdirat(cur.as_fd(), name.as_str(), Mode::S_IRWXU) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WalkError::Sys(prefix, e)),
                }
                made(&prefix);
                open_dir_at(cur.as_fd(), name)
                    .map_err(|e| classify(cur.as_fd(), name, &prefix, e))?
            }
            Err(e) => return Err(classify(cur.as_fd(), name, &prefix, e)),
        };
        cur = next;
    }
    Ok(cur)
}

/// Turns an `openat` failure into a precise reason by looking at the entry.
fn classify(parent: BorrowedFd<'_>, name: &str, prefix: &RelPath, err: Errno) -> WalkError {
    match lstat_at(parent, name) {
        Ok(None) => WalkError::Missing(prefix.clone()),
        Ok(Some(st)) if kind(&st) == SFlag::S_IFLNK => WalkError::Symlink(prefix.clone()),
        Ok(Some(st)) if kind(&st) != SFlag::S_IFDIR => WalkError::NotDir(prefix.clone()),
        _ => WalkError::Sys(prefix.clone(), err),
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Lists a directory's entry names (without `.` and `..`), sorted by bytes.
pub(crate) fn list_dir(dir: BorrowedFd<'_>) -> nix::Result<Vec<Vec<u8>>> {
    let fd = openat(dir, ".", DIR_FLAGS, Mode::empty())?;
    let mut d = Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in d.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` inside `parent` and, for a directory, everything below it,
/// without following symlinks. A missing entry is not an error.
pub(crate) fn remove_all_at(parent: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    let Some(st) = lstat_at(parent, name)? else {
        return Ok(());
    };
    if kind(&st) == SFlag::S_IFDIR {
        let dir = open_dir_at(parent, name)?;
        for child in list_dir(dir.as_fd())? {
            // Names read back from the kernel contain no `/` or NUL; a
            // non-UTF-8 one cannot have been created by the applier, but
            // remove it anyway through its raw bytes.
            remove_all_os(dir.as_fd(), std::ffi::OsStr::from_bytes(&child))?;
        }
        unlinkat(parent, name, UnlinkatFlags::RemoveDir)
    } else {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
    }
}

fn remove_all_os(parent: BorrowedFd<'_>, name: &std::ffi::OsStr) -> nix::Result<()> {
    match name.to_str() {
        Some(s) => remove_all_at(parent, s),
        None => unlinkat(parent, name, UnlinkatFlags::NoRemoveDir),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_relative_forms() {
        assert_eq!(RelPath::parse(b"./a//b/./c/").unwrap().to_string(), "a/b/c");
        assert!(RelPath::parse(b"./").unwrap().is_root());
        assert!(RelPath::parse(b".").unwrap().is_root());
    }

    #[test]
    fn parse_refuses_escapes() {
        assert_eq!(RelPath::parse(b"/etc/passwd"), Err(PathError::Absolute));
        assert_eq!(RelPath::parse(b"a/../../x"), Err(PathError::DotDot));
        assert_eq!(RelPath::parse(b".."), Err(PathError::DotDot));
        assert_eq!(RelPath::parse(b"a\xffb"), Err(PathError::NotUtf8));
        assert_eq!(RelPath::parse(b"a\0b"), Err(PathError::Nul));
    }

    #[test]
    fn starts_with_is_by_component() {
        let a = RelPath::parse(b"usr/lib").unwrap();
        assert!(RelPath::parse(b"usr/lib/x").unwrap().starts_with(&a));
        assert!(!RelPath::parse(b"usr/lib64").unwrap().starts_with(&a));
    }
}

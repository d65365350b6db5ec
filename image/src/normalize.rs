//! What import changes about an image's files, and the final pass that fixes
//! times and directory modes.
//!
//! Rules (the digest does not depend on any of them, the rootfs on disk does):
//! - owner: every file belongs to whoever runs the import, which is root
//!   (0:0) for the daemon; archived owners are not applied and are counted in
//!   [`Normalization::ownership_reset`]. An unprivileged import records
//!   `owner_uid`/`owner_gid` so that the caller can tell.
//! - mtime and atime: [`NORMALIZED_MTIME`] (the Unix epoch) on every entry,
//!   symlinks included.
//! - modes: kept, except setuid and setgid, which are cleared and listed.
//!   The sticky bit is kept (`/tmp`).
//! - device nodes, FIFOs: not created, listed (sockets cannot be archived).
//! - hardlinks: kept as hardlinks inside the rootfs (`linkat`), counted; each
//!   name is a separate node in the REAPI tree.
//! - extended attributes (file capabilities, SELinux labels, ACLs): never
//!   applied, counted.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, fchmod, futimens, utimensat};
use nix::sys::time::TimeSpec;
use serde::{Deserialize, Serialize};

use crate::fsops::{self, RelPath};

/// The time every entry of an imported rootfs carries (seconds since the
/// Unix epoch).
pub const NORMALIZED_MTIME: i64 = 0;

/// How many sample paths a [`PathList`] keeps.
const SAMPLE: usize = 100;

/// A count with the first paths it counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathList {
    /// How many entries there were in all.
    pub count: u64,
    /// The first 100 of them, as archived (`layer: path`).
    pub paths: Vec<String>,
}

impl PathList {
    pub(crate) fn push(&mut self, layer: &str, path: &RelPath) {
        self.count += 1;
        if self.paths.len() < SAMPLE {
            self.paths.push(format!("{layer}: {path}"));
        }
    }
}

/// What the import changed relative to the archived metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Normalization {
    /// Files and directories whose setuid or setgid bit was cleared.
    pub setid_stripped: PathList,
    /// Character and block device nodes that were not created.
    pub devices_dropped: PathList,
    /// FIFOs that were not created.
    pub fifos_dropped: PathList,
    /// Hardlink entries, materialized as hardlinks within the rootfs.
    pub hardlinks: u64,
    /// Entries archived with an owner other than 0:0.
    pub ownership_reset: u64,
    /// Extended attributes in the archive that were not applied.
    pub xattrs_dropped: u64,
    /// Whiteout entries applied (`.wh.NAME`).
    pub whiteouts: u64,
    /// Opaque-directory markers applied (`.wh..wh..opq`).
    pub opaque_dirs: u64,
    /// Owner of the files on disk (0 when the import ran as root).
    pub owner_uid: u32,
    /// Group of the files on disk.
    pub owner_gid: u32,
    /// The mtime every entry was given.
    pub mtime: i64,
}

/// Final pass over the rootfs: depth first, give each directory its mode
/// (from `modes`, 0755 when none was archived) after its children are done,
/// and set every entry's times to [`NORMALIZED_MTIME`].
///
/// Modes are applied last because the applier keeps directories at 0700
/// while it works, so that an archived 0555 directory cannot stop an
/// unprivileged import from filling it.
pub(crate) fn finish(root: BorrowedFd<'_>, modes: &BTreeMap<RelPath, u32>) -> nix::Result<()> {
    finish_dir(root, &RelPath::default(), modes)?;
    let t = TimeSpec::new(NORMALIZED_MTIME, 0);
    futimens(root, &t, &t)
}

fn finish_dir(
    dir: BorrowedFd<'_>,
    path: &RelPath,
    modes: &BTreeMap<RelPath, u32>,
) -> nix::Result<()> {
    let t = TimeSpec::new(NORMALIZED_MTIME, 0);
    for raw in fsops::list_dir(dir)? {
        // The applier only creates UTF-8 names.
        let Ok(name) = String::from_utf8(raw) else {
            return Err(nix::errno::Errno::EILSEQ);
        };
        let Some(st) = fsops::lstat_at(dir, &name)? else {
            continue;
        };
        if fsops::kind(&st) == SFlag::S_IFDIR {
            let child = fsops::open_dir_at(dir, &name)?;
            finish_dir(child.as_fd(), &path.child(&name), modes)?;
        }
        utimensat(dir, name.as_str(), &t, &t, UtimensatFlags::NoFollowSymlink)?;
    }
    let mode = modes.get(path).copied().unwrap_or(0o755);
    fchmod(dir, Mode::from_bits_truncate(mode))
}

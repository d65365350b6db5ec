//! The layer applier: one tar stream at a time onto a rootfs directory fd.
//!
//! Threat model: every name, link target and size in a layer is chosen by
//! the image's author. The applier
//! - parses names into [`RelPath`]s (absolute paths and `..` are refused);
//! - reaches a parent directory by opening one component at a time with
//!   `O_NOFOLLOW`, so an entry under a symlink placed by an earlier entry or
//!   layer is refused, never followed ([`fsops::walk`]);
//! - creates the final component with `O_CREAT | O_EXCL | O_NOFOLLOW`,
//!   `mkdirat`, `symlinkat` or `linkat` on the parent fd after removing what
//!   was there, so it never writes through an existing link;
//! - resolves hardlink targets the same way: inside the rootfs, already
//!   present, not a directory;
//! - checks every size before writing: per file, in total, and the entry
//!   count (`ImportOptions`).
//!
//! OCI whiteouts: `.wh.NAME` removes NAME from the lower layers,
//! `.wh..wh..opq` removes everything the lower layers put in its directory.
//! Entries of the current layer are never removed by its own whiteouts,
//! whatever their order in the archive, as the image spec requires.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, SFlag, fchmod, mkdirat};
use nix::unistd::{linkat, symlinkat};
use tar::EntryType;

use crate::ImportOptions;
use crate::error::ImageError;
use crate::fsops::{self, RelPath, WalkError};
use crate::normalize::{self, Normalization};
use crate::tarstream::{TarEntry, TarError, TarInput, TarReader};

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";
/// AUFS bookkeeping names (`.wh..wh.plnk`, `.wh..wh.aufs`): skipped.
const AUFS_META_PREFIX: &str = ".wh..wh.";

/// Applies layers in order onto one rootfs and keeps the running totals.
#[derive(Debug)]
pub(crate) struct Applier<'o> {
    root: OwnedFd,
    opts: &'o ImportOptions,
    /// Final modes of directories, applied by [`Applier::finish`].
    dir_modes: BTreeMap<RelPath, u32>,
    entries: u64,
    bytes: u64,
    report: Normalization,
}

/// Per-layer state: the paths this layer created (its own whiteouts leave
/// them alone).
struct Layer<'a> {
    name: &'a str,
    created: BTreeSet<RelPath>,
}

impl<'a> Layer<'a> {
    fn created_under(&self, p: &RelPath) -> bool {
        self.created
            .range(p.clone()..)
            .next()
            .is_some_and(|q| q.starts_with(p))
    }
}

impl<'o> Applier<'o> {
    pub(crate) fn new(root: OwnedFd, opts: &'o ImportOptions) -> Self {
        let mut dir_modes = BTreeMap::new();
        dir_modes.insert(RelPath::default(), 0o755);
        Applier {
            root,
            opts,
            dir_modes,
            entries: 0,
            bytes: 0,
            report: Normalization::default(),
        }
    }

    /// Applies one layer. `name` identifies it in errors (a digest or an
    /// archive member). Returns the input after the end-of-archive block so
    /// that the caller can drain and verify the rest of the stream.
    pub(crate) fn apply_layer<R: TarInput>(
        &mut self,
        name: &str,
        input: R,
    ) -> Result<R, ImageError> {
        let mut tar = TarReader::new(input);
        let mut layer = Layer {
            name,
            created: BTreeSet::new(),
        };
        while let Some(entry) = tar.next_entry().map_err(|e| self.tar_error(name, e))? {
            self.entries += 1;
            if self.entries > self.opts.max_entries {
                return Err(ImageError::Limit {
                    layer: name.to_owned(),
                    what: "number of entries",
                    limit: self.opts.max_entries,
                    detail: format!("at {}", lossy(&entry.path)),
                });
            }
            self.apply_entry(&mut layer, &mut tar, &entry)?;
        }
        Ok(tar.into_inner())
    }

    /// Sets final directory modes and times; returns what was normalized.
    pub(crate) fn finish(mut self) -> Result<Normalization, ImageError> {
        normalize::finish(self.root.as_fd(), &self.dir_modes)
            .map_err(|e| ImageError::io("normalizing rootfs times and modes", e.into()))?;
        self.report.owner_uid = nix::unistd::geteuid().as_raw();
        self.report.owner_gid = nix::unistd::getegid().as_raw();
        self.report.mtime = normalize::NORMALIZED_MTIME;
        Ok(self.report)
    }

    fn apply_entry<R: TarInput>(
        &mut self,
        layer: &mut Layer<'_>,
        tar: &mut TarReader<R>,
        e: &TarEntry,
    ) -> Result<(), ImageError> {
        let bad = |reason: String| ImageError::BadEntry {
            layer: layer.name.to_owned(),
            entry: lossy(&e.path),
            reason,
        };
        let path = RelPath::parse(&e.path).map_err(|err| bad(err.to_string()))?;
        if path.components().len() > self.opts.max_depth as usize {
            return Err(bad(format!(
                "deeper than max_depth {}",
                self.opts.max_depth
            )));
        }
        if e.size > self.opts.max_file_bytes {
            return Err(ImageError::Limit {
                layer: layer.name.to_owned(),
                what: "entry size",
                limit: self.opts.max_file_bytes,
                detail: format!("{} claims {} bytes", lossy(&e.path), e.size),
            });
        }
        if let Some((parent, last)) = path.split_last() {
            if last == OPAQUE {
                self.report.opaque_dirs += 1;
                return self.opaque(layer, &parent).map_err(bad);
            }
            if last.starts_with(AUFS_META_PREFIX) {
                return Ok(());
            }
            if let Some(target) = last.strip_prefix(WHITEOUT_PREFIX) {
                if target.is_empty() || target == "." || target == ".." {
                    return Err(bad("whiteout names no file".to_owned()));
                }
                self.report.whiteouts += 1;
                return self.whiteout(layer, &parent.child(target)).map_err(bad);
            }
        }
        if e.uid != 0 || e.gid != 0 {
            self.report.ownership_reset += 1;
        }
        self.report.xattrs_dropped += u64::from(e.xattrs);
        let mut mode = e.mode;
        let is_tree_entry = matches!(
            e.kind,
            EntryType::Regular | EntryType::Continuous | EntryType::Directory
        );
        if is_tree_entry && mode & 0o6000 != 0 {
            mode &= !0o6000;
            self.report.setid_stripped.push(layer.name, &path);
        }
        match e.kind {
            EntryType::Regular | EntryType::Continuous => {
                self.regular(layer, tar, &path, e.size, mode).map_err(bad)?
            }
            EntryType::Directory => self.directory(&path, mode).map_err(bad)?,
            EntryType::Symlink => {
                let target = e.link.as_deref().unwrap_or_default();
                self.symlink(&path, target).map_err(bad)?
            }
            EntryType::Link => {
                let target = e.link.as_deref().unwrap_or_default();
                self.hardlink(&path, target).map_err(bad)?;
                self.report.hardlinks += 1;
            }
            EntryType::Char | EntryType::Block => {
                self.report.devices_dropped.push(layer.name, &path);
                self.dropped(&path).map_err(bad)?;
            }
            EntryType::Fifo => {
                self.report.fifos_dropped.push(layer.name, &path);
                self.dropped(&path).map_err(bad)?;
            }
            other => {
                return Err(bad(format!(
                    "unsupported tar entry type {:?} ({})",
                    other,
                    other.as_byte() as char
                )));
            }
        }
        layer.created.insert(path);
        Ok(())
    }

    /// A device node or FIFO is not created, but it still replaces what the
    /// lower layers had at its path, and its parents exist as for any entry.
    fn dropped(&mut self, path: &RelPath) -> Result<(), String> {
        let Some((parent_path, name)) = path.split_last() else {
            return Err("a special file cannot replace the root".to_owned());
        };
        let dir = self.parent(&parent_path)?;
        self.clear(dir.as_fd(), path, name)
    }

    /// Opens the parent directory of an entry, creating missing ones.
    fn parent(&mut self, parent: &RelPath) -> Result<OwnedFd, String> {
        let modes = &mut self.dir_modes;
        fsops::walk(self.root.as_fd(), parent, true, &mut |made| {
            modes.insert(made.clone(), 0o755);
        })
        .map_err(|e| e.to_string())
    }

    /// Removes whatever is at `name` in `dir` (and forgets modes below it).
    fn clear(&mut self, dir: BorrowedFd<'_>, path: &RelPath, name: &str) -> Result<(), String> {
        fsops::remove_all_at(dir, name)
            .map_err(|e| format!("cannot replace existing {path}: {e}"))?;
        self.forget(path);
        Ok(())
    }

    fn forget(&mut self, path: &RelPath) {
        let doomed: Vec<RelPath> = self
            .dir_modes
            .range(path.clone()..)
            .take_while(|(k, _)| k.starts_with(path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.dir_modes.remove(&k);
        }
    }

    fn regular<R: TarInput>(
        &mut self,
        layer: &Layer<'_>,
        tar: &mut TarReader<R>,
        path: &RelPath,
        size: u64,
        mode: u32,
    ) -> Result<(), String> {
        let (parent_path, name) = path.split_last().ok_or("a file cannot replace the root")?;
        if self.bytes.saturating_add(size) > self.opts.max_total_bytes {
            return Err(format!(
                "image exceeds max_total_bytes {} (this file: {size} bytes, {} already written in {})",
                self.opts.max_total_bytes, self.bytes, layer.name
            ));
        }
        let dir = self.parent(&parent_path)?;
        self.clear(dir.as_fd(), path, name)?;
        let fd = openat(
            dir.as_fd(),
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| format!("cannot create: {e}"))?;
        let mut file = File::from(fd);
        let copied = io::copy(&mut tar.data(), &mut file).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => format!("truncated archive: {e}"),
            _ => format!("cannot write: {e}"),
        })?;
        if copied != size {
            return Err(format!("truncated archive: {copied} of {size} bytes"));
        }
        self.bytes += size;
        fchmod(file.as_fd(), Mode::from_bits_truncate(mode)).map_err(|e| format!("chmod: {e}"))
    }

    fn directory(&mut self, path: &RelPath, mode: u32) -> Result<(), String> {
        let Some((parent_path, name)) = path.split_last() else {
            self.dir_modes.insert(RelPath::default(), mode);
            return Ok(());
        };
        let dir = self.parent(&parent_path)?;
        let existing = fsops::lstat_at(dir.as_fd(), name).map_err(|e| e.to_string())?;
        if existing.is_none_or(|st| fsops::kind(&st) != SFlag::S_IFDIR) {
            self.clear(dir.as_fd(), path, name)?;
            mkdirat(dir.as_fd(), name, Mode::S_IRWXU).map_err(|e| format!("mkdir: {e}"))?;
        }
        self.dir_modes.insert(path.clone(), mode);
        Ok(())
    }

    fn symlink(&mut self, path: &RelPath, target: &[u8]) -> Result<(), String> {
        let (parent_path, name) = path
            .split_last()
            .ok_or("a symlink cannot replace the root")?;
        if target.is_empty() {
            return Err("symlink with an empty target".to_owned());
        }
        let target = std::str::from_utf8(target).map_err(|_| {
            "symlink target is not valid UTF-8 (REAPI targets are strings)".to_owned()
        })?;
        if target.contains('\0') {
            return Err("NUL byte in symlink target".to_owned());
        }
        let dir = self.parent(&parent_path)?;
        self.clear(dir.as_fd(), path, name)?;
        // The target is stored as data; nothing here ever follows it.
        symlinkat(target, dir.as_fd(), name).map_err(|e| format!("symlink: {e}"))
    }

    fn hardlink(&mut self, path: &RelPath, target: &[u8]) -> Result<(), String> {
        let (parent_path, name) = path
            .split_last()
            .ok_or("a hardlink cannot replace the root")?;
        let tpath = RelPath::parse(target)
            .map_err(|e| format!("hardlink target {}: {e}", lossy(target)))?;
        let (tparent_path, tname) = tpath.split_last().ok_or("hardlink to the root directory")?;
        if tpath == *path {
            return Ok(());
        }
        let tdir = fsops::walk(self.root.as_fd(), &tparent_path, false, &mut |_| {}).map_err(
            |e| match e {
                WalkError::Missing(_) => format!("hardlink target {tpath} does not exist (yet)"),
                other => format!("hardlink target {tpath}: {other}"),
            },
        )?;
        match fsops::lstat_at(tdir.as_fd(), tname).map_err(|e| e.to_string())? {
            None => return Err(format!("hardlink target {tpath} does not exist (yet)")),
            Some(st) if fsops::kind(&st) == SFlag::S_IFDIR => {
                return Err(format!("hardlink target {tpath} is a directory"));
            }
            Some(_) => {}
        }
        if tpath.starts_with(path) {
            return Err(format!(
                "hardlink target {tpath} lies inside the entry it replaces"
            ));
        }
        let dir = self.parent(&parent_path)?;
        self.clear(dir.as_fd(), path, name)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        linkat(tdir.as_fd(), tname, dir.as_fd(), name, AtFlags::empty())
            .map_err(|e| format!("link to {tpath}: {e}"))
    }

    /// `.wh.NAME`: removes `path` as the lower layers left it.
    fn whiteout(&mut self, layer: &Layer<'_>, path: &RelPath) -> Result<(), String> {
        if layer.created.contains(path) {
            return Ok(());
        }
        let (parent_path, name) = path.split_last().ok_or("whiteout of the root")?;
        let dir = match fsops::walk(self.root.as_fd(), &parent_path, false, &mut |_| {}) {
            Ok(dir) => dir,
            // Nothing below a missing directory to hide.
            Err(WalkError::Missing(_)) => return Ok(()),
            Err(e) => return Err(format!("whiteout of {path}: {e}")),
        };
        if layer.created_under(path) {
            // The layer re-created things below a whited-out directory: keep
            // them, drop the rest (the directory behaves as opaque).
            return self.opaque_at(layer, dir.as_fd(), path, name);
        }
        self.clear(dir.as_fd(), path, name)
    }

    /// `.wh..wh..opq` in `dir`: removes every lower-layer entry below it.
    fn opaque(&mut self, layer: &Layer<'_>, dir: &RelPath) -> Result<(), String> {
        let fd = match fsops::walk(self.root.as_fd(), dir, false, &mut |_| {}) {
            Ok(fd) => fd,
            Err(WalkError::Missing(_)) => return Ok(()),
            Err(e) => return Err(format!("opaque directory {dir}: {e}")),
        };
        self.empty_lower(layer, fd.as_fd(), dir)
    }

    fn opaque_at(
        &mut self,
        layer: &Layer<'_>,
        parent: BorrowedFd<'_>,
        path: &RelPath,
        name: &str,
    ) -> Result<(), String> {
        match fsops::open_dir_at(parent, name) {
            Ok(fd) => self.empty_lower(layer, fd.as_fd(), path),
            Err(Errno::ENOTDIR) | Err(Errno::ELOOP) => Ok(()),
            Err(e) => Err(format!("{path}: {e}")),
        }
    }

    fn empty_lower(
        &mut self,
        layer: &Layer<'_>,
        dir: BorrowedFd<'_>,
        path: &RelPath,
    ) -> Result<(), String> {
        for raw in fsops::list_dir(dir).map_err(|e| format!("{path}: {e}"))? {
            let name = String::from_utf8(raw).map_err(|_| format!("non-UTF-8 name in {path}"))?;
            let child = path.child(&name);
            if layer.created_under(&child) {
                if !layer.created.contains(&child) || is_dir(dir, &name) {
                    self.opaque_at(layer, dir, &child, &name)?;
                }
            } else {
                self.clear(dir, &child, &name)?;
            }
        }
        Ok(())
    }

    fn tar_error(&self, layer: &str, e: TarError) -> ImageError {
        match e {
            TarError::TooBig {
                what,
                size,
                offset,
                limit,
            } => ImageError::Limit {
                layer: layer.to_owned(),
                what,
                limit,
                detail: format!("{size} bytes at offset {offset}"),
            },
            TarError::Io(e) if crate::archive::is_limit(&e) => ImageError::Limit {
                layer: layer.to_owned(),
                what: "decompressed layer size",
                limit: self.opts.max_total_bytes,
                detail: e.to_string(),
            },
            other => ImageError::CorruptLayer {
                layer: layer.to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

fn is_dir(dir: BorrowedFd<'_>, name: &str) -> bool {
    matches!(fsops::lstat_at(dir, name), Ok(Some(st)) if fsops::kind(&st) == SFlag::S_IFDIR)
}

/// An archived name for messages.
pub(crate) fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

//! Where an image's files come from: a layout directory or an uncompressed
//! tar archive of one, and which format it holds.
//!
//! Member names looked up here come from trusted code (`blobs/sha256/<hex>`
//! built from a validated digest) or from a docker-archive `manifest.json`;
//! both are parsed as [`RelPath`]s first, so `..` and absolute names are
//! refused. In a directory, files are opened with `openat2(RESOLVE_BENEATH)`
//! (symlinks inside the layout are allowed, none may leave it); in a tar,
//! symlink and hardlink members are resolved lexically inside the archive.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{SFlag, fstat};
use tar::EntryType;

use crate::error::ImageError;
use crate::fsops::{self, RelPath};
use crate::tarstream::{SeekFile, TarError, TarInput, TarReader};

/// The largest `manifest.json` read to tell a docker archive from a rootfs.
pub(crate) const MAX_SNIFF_BYTES: u64 = 4 << 20;
/// How many symlink members a tar lookup follows before giving up.
const MAX_MEMBER_LINKS: usize = 8;

/// The format found at the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// OCI image layout (`oci-layout`, `index.json`, `blobs/`), including
    /// `docker save` output since Docker 25.
    Oci,
    /// The older `docker save` form: `manifest.json` naming config and
    /// layer tars.
    DockerArchive,
    /// A plain root filesystem tarball.
    Rootfs,
}

#[derive(Debug, Clone)]
pub(crate) enum Member {
    File { offset: u64, size: u64 },
    Symlink(Vec<u8>),
    Hardlink(Vec<u8>),
}

/// A readable image layout.
#[derive(Debug)]
pub(crate) enum Source {
    /// A layout directory.
    Dir { path: PathBuf, fd: OwnedFd },
    /// An uncompressed tar holding a layout.
    Tar {
        path: PathBuf,
        file: File,
        members: HashMap<RelPath, Member>,
    },
}

impl Source {
    /// Opens a layout directory.
    pub(crate) fn dir(path: &Path) -> Result<Self, ImageError> {
        let fd = fsops::open_dir_path(path)
            .map_err(|e| ImageError::io(format!("open {}", path.display()), e.into()))?;
        Ok(Source::Dir {
            path: path.to_owned(),
            fd,
        })
    }

    /// Indexes an uncompressed tar (member names, offsets, links).
    /// `shown` is the path used in messages (the user's file, not a spool).
    pub(crate) fn tar(
        file_path: &Path,
        shown: &Path,
        max_entries: u64,
    ) -> Result<Self, ImageError> {
        let open = |p: &Path| {
            File::open(p).map_err(|e| ImageError::io(format!("open {}", shown.display()), e))
        };
        let file = open(file_path)?;
        let len = file
            .metadata()
            .map_err(|e| ImageError::io(format!("stat {}", shown.display()), e))?
            .len();
        let mut tar = TarReader::new(SeekFile {
            file: open(file_path)?,
            len,
            pos: 0,
        });
        let corrupt = |e: TarError| ImageError::CorruptLayer {
            layer: shown.display().to_string(),
            reason: e.to_string(),
        };
        let mut members = HashMap::new();
        let mut count = 0u64;
        while let Some(e) = tar.next_entry().map_err(corrupt)? {
            count += 1;
            if count > max_entries {
                return Err(ImageError::Limit {
                    layer: shown.display().to_string(),
                    what: "number of archive members",
                    limit: max_entries,
                    detail: String::new(),
                });
            }
            // Names that cannot be layout members are simply not indexed; a
            // rootfs tarball is applied (and checked) entry by entry later.
            let Ok(name) = RelPath::parse(&e.path) else {
                continue;
            };
            let member = match e.kind {
                EntryType::Regular | EntryType::Continuous => {
                    if e.data_offset.saturating_add(e.size) > len {
                        return Err(corrupt(TarError::Truncated(format!(
                            "member {name} extends past the end of the file"
                        ))));
                    }
                    Member::File {
                        offset: e.data_offset,
                        size: e.size,
                    }
                }
                EntryType::Symlink => Member::Symlink(e.link.unwrap_or_default()),
                EntryType::Link => Member::Hardlink(e.link.unwrap_or_default()),
                _ => continue,
            };
            members.insert(name, member);
        }
        Ok(Source::Tar {
            path: shown.to_owned(),
            file,
            members,
        })
    }

    /// The path given by the user, for messages.
    pub(crate) fn path(&self) -> &Path {
        match self {
            Source::Dir { path, .. } | Source::Tar { path, .. } => path,
        }
    }

    /// Which format the layout holds.
    pub(crate) fn detect(&self) -> Result<Format, ImageError> {
        match self {
            Source::Tar { members, .. } => {
                let manifest = self.read_small("manifest.json", MAX_SNIFF_BYTES);
                Ok(classify(members.keys(), manifest.as_deref()))
            }
            Source::Dir { .. } if self.exists("index.json") && self.exists("oci-layout") => {
                Ok(Format::Oci)
            }
            Source::Dir { .. } if self.exists("manifest.json") => Ok(Format::DockerArchive),
            Source::Dir { path, .. } => Err(ImageError::UnknownFormat {
                path: path.clone(),
                reason:
                    "directory has neither index.json + oci-layout (OCI layout) nor manifest.json \
                         (docker archive); a rootfs must be given as a tarball"
                        .into(),
            }),
        }
    }

    /// A small member's content, or `None` when absent or too large.
    fn read_small(&self, name: &str, limit: u64) -> Option<Vec<u8>> {
        let (r, len) = self.open(name).ok()?;
        if len > limit {
            return None;
        }
        let mut buf = Vec::new();
        r.take(limit).read_to_end(&mut buf).ok()?;
        Some(buf)
    }

    fn exists(&self, name: &str) -> bool {
        self.open(name).is_ok()
    }

    /// Opens a member; returns a reader and its length.
    pub(crate) fn open(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64), ImageError> {
        let missing = || ImageError::Missing {
            what: "file",
            name: name.to_owned(),
            source_path: self.path().to_owned(),
        };
        let rel = RelPath::parse(name.as_bytes()).map_err(|e| ImageError::Metadata {
            file: self.path().display().to_string(),
            reason: format!("member name {name:?}: {e}"),
        })?;
        match self {
            Source::Dir { fd, path } => {
                let how = OpenHow::new()
                    // O_NONBLOCK: a FIFO in the layout must not hang the
                    // open; it is refused by the type check below.
                    .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
                    .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
                let shown = rel.to_string();
                let file = match openat2(fd.as_fd(), shown.as_str(), how) {
                    Ok(f) => f,
                    Err(Errno::ENOENT) => return Err(missing()),
                    Err(Errno::EXDEV) => {
                        return Err(ImageError::Metadata {
                            file: path.display().to_string(),
                            reason: format!("{name} resolves outside the layout directory"),
                        });
                    }
                    Err(e) => {
                        return Err(ImageError::io(
                            format!("open {name} in {}", path.display()),
                            e.into(),
                        ));
                    }
                };
                let st =
                    fstat(&file).map_err(|e| ImageError::io(format!("stat {name}"), e.into()))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    return Err(missing());
                }
                Ok((Box::new(File::from(file)), st.st_size as u64))
            }
            Source::Tar { file, members, .. } => {
                let mut cur = rel;
                for _ in 0..=MAX_MEMBER_LINKS {
                    match members.get(&cur).ok_or_else(missing)? {
                        Member::File { offset, size } => {
                            let r = Slice {
                                file,
                                pos: *offset,
                                end: offset + size,
                            };
                            return Ok((Box::new(r), *size));
                        }
                        Member::Hardlink(t) => cur = RelPath::parse(t).map_err(|_| missing())?,
                        Member::Symlink(t) => cur = resolve_link(&cur, t).ok_or_else(missing)?,
                    }
                }
                Err(missing())
            }
        }
    }

    /// Opens a member as a tar input for the layer applier.
    pub(crate) fn open_input(&self, name: &str) -> Result<(impl TarInput + '_, u64), ImageError> {
        let (r, len) = self.open(name)?;
        Ok((crate::tarstream::Stream(r), len))
    }
}

/// Tells the format of a tar from its top-level members: `index.json` and
/// `oci-layout` make an OCI layout; a `manifest.json` that is a JSON array
/// of objects with `Config` and `Layers` makes a docker archive; anything
/// else is a rootfs.
pub(crate) fn classify<'a>(
    names: impl Iterator<Item = &'a RelPath> + Clone,
    manifest_json: Option<&[u8]>,
) -> Format {
    let top = |n: &str| names.clone().any(|k| k.components() == [n]);
    if top("index.json") && top("oci-layout") {
        return Format::Oci;
    }
    if let Some(bytes) = manifest_json
        && is_docker_manifest(bytes)
    {
        return Format::DockerArchive;
    }
    Format::Rootfs
}

/// True for a docker-archive `manifest.json`.
pub(crate) fn is_docker_manifest(bytes: &[u8]) -> bool {
    match serde_json::from_slice::<Vec<serde_json::Value>>(bytes) {
        Ok(entries) => {
            !entries.is_empty()
                && entries.iter().all(|e| {
                    e.get("Config").is_some() && e.get("Layers").is_some_and(|l| l.is_array())
                })
        }
        Err(_) => false,
    }
}

/// Resolves a symlink member's target relative to its directory, lexically,
/// refusing to leave the archive.
fn resolve_link(at: &RelPath, target: &[u8]) -> Option<RelPath> {
    if target.starts_with(b"/") {
        return None;
    }
    let mut parts: Vec<String> = at.split_last()?.0.components().to_vec();
    for part in std::str::from_utf8(target).ok()?.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p.to_owned()),
        }
    }
    RelPath::parse(parts.join("/").as_bytes()).ok()
}

/// A byte range of a file, read with `pread` (each reader has its own
/// position, so several can share the file).
#[derive(Debug)]
struct Slice<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        let cap = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        if cap == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..cap], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member cut short",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// Streams an uncompressed tar file from the start (rootfs tarballs).
pub(crate) fn file_input(path: &Path) -> Result<impl TarInput, ImageError> {
    let mut file =
        File::open(path).map_err(|e| ImageError::io(format!("open {}", path.display()), e))?;
    let len = file
        .seek(SeekFrom::End(0))
        .and_then(|l| file.seek(SeekFrom::Start(0)).map(|_| l))
        .map_err(|e| ImageError::io(format!("seek {}", path.display()), e))?;
    Ok(SeekFile { file, len, pos: 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_links_stay_inside() {
        let at = RelPath::parse(b"a/b/layer.tar").unwrap();
        assert_eq!(
            resolve_link(&at, b"../c/layer.tar").unwrap().to_string(),
            "a/c/layer.tar"
        );
        assert!(resolve_link(&at, b"../../../x").is_none());
        assert!(resolve_link(&at, b"/etc/passwd").is_none());
    }
}

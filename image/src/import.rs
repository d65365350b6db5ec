//! The import flow: stage beside `dest`, recognize the source, apply its
//! layers in order, normalize, digest, write the record, rename into place.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::sys::stat::{Mode, SFlag, fchmod};

use crate::apply::Applier;
use crate::archive::{self, BlobDigest, Compression, Hashing};
use crate::digest::{DigestFunction, tree};
use crate::error::ImageError;
use crate::fsops;
use crate::oci::{self, Plan};
use crate::source::{self, Format, Source};
use crate::tarstream::{Stream, TarReader};
use crate::{ImportOptions, ImportedImage};

/// Data allowed after a layer's end-of-archive block (tar record padding,
/// usually at most 10 KiB).
const MAX_TRAILING_BYTES: u64 = 16 << 20;

/// Imports the image at `path` into the new directory `dest`.
///
/// `dest` must not exist; its parent is created if needed. On success `dest`
/// holds `rootfs/` (the normalized, flattened root filesystem) and
/// `image.json` (the returned record). On error nothing is left behind.
pub fn import(path: &Path, dest: &Path, opts: &ImportOptions) -> Result<ImportedImage, ImageError> {
    if dest.symlink_metadata().is_ok() {
        return Err(ImageError::DestExists(dest.to_owned()));
    }
    let staging = Staging::create(dest)?;
    let rootfs = staging.path.join("rootfs");
    let scratch = staging.path.join("scratch");
    for dir in [&rootfs, &scratch] {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|e| ImageError::io(format!("create {}", dir.display()), e))?;
    }
    let root_fd = fsops::open_dir_path(&rootfs)
        .map_err(|e| ImageError::io(format!("open {}", rootfs.display()), e.into()))?;
    let mut applier = Applier::new(root_fd, opts);
    let manifest = load(path, &scratch, &mut applier, opts)?;
    let normalized = applier.finish()?;
    fs::remove_dir_all(&scratch)
        .map_err(|e| ImageError::io(format!("remove {}", scratch.display()), e))?;

    let sha = tree(&rootfs, DigestFunction::Sha256)?;
    let b3 = tree(&rootfs, DigestFunction::Blake3)?;
    let image = ImportedImage {
        rootfs: dest.join("rootfs"),
        digest_sha256: sha.digest_string(),
        digest_blake3: b3.digest_string(),
        source_manifest_digest: manifest,
        normalized,
        total_bytes: sha.total_bytes(),
        files: sha.files.len() as u64,
    };
    let record = serde_json::to_vec_pretty(&image).expect("ImportedImage serializes");
    let record_path = staging.path.join("image.json");
    fs::write(&record_path, record)
        .map_err(|e| ImageError::io(format!("write {}", record_path.display()), e))?;
    fs::set_permissions(
        &staging.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .map_err(|e| ImageError::io(format!("chmod {}", staging.path.display()), e))?;
    staging.commit(dest)?;
    Ok(image)
}

/// A temporary directory beside `dest`, removed on drop unless committed.
struct Staging {
    path: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(dest: &Path) -> Result<Self, ImageError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = dest.file_name().ok_or_else(|| {
            ImageError::io(
                format!("destination {}", dest.display()),
                io::ErrorKind::InvalidInput.into(),
            )
        })?;
        fs::create_dir_all(&parent)
            .map_err(|e| ImageError::io(format!("create {}", parent.display()), e))?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = parent.join(format!(
            ".{}.import-{}-{n}",
            name.to_string_lossy(),
            std::process::id()
        ));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(|e| ImageError::io(format!("create {}", path.display()), e))?;
        Ok(Staging {
            path,
            committed: false,
        })
    }

    fn commit(mut self, dest: &Path) -> Result<(), ImageError> {
        renameat2(
            AT_FDCWD,
            &self.path,
            AT_FDCWD,
            dest,
            RenameFlags::RENAME_NOREPLACE,
        )
        .map_err(|e| match e {
            nix::errno::Errno::EEXIST => ImageError::DestExists(dest.to_owned()),
            e => ImageError::io(
                format!("rename {} to {}", self.path.display(), dest.display()),
                e.into(),
            ),
        })?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        // Directories may already carry their final modes (0555 ...): give
        // the owner access back so that an unprivileged import can clean up.
        if let Ok(fd) = fsops::open_dir_path(&self.path) {
            unlock(fd.as_fd(), 0);
        }
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn unlock(dir: BorrowedFd<'_>, depth: usize) {
    let _ = fchmod(dir, Mode::S_IRWXU);
    if depth > 4096 {
        return;
    }
    for raw in fsops::list_dir(dir).unwrap_or_default() {
        let Ok(name) = String::from_utf8(raw) else {
            continue;
        };
        if let Ok(Some(st)) = fsops::lstat_at(dir, &name)
            && fsops::kind(&st) == SFlag::S_IFDIR
            && let Ok(fd) = fsops::open_dir_at(dir, &name)
        {
            unlock(fd.as_fd(), depth + 1);
        }
    }
}

/// Recognizes the source and applies its layers; returns the manifest digest.
fn load(
    path: &Path,
    scratch: &Path,
    applier: &mut Applier<'_>,
    opts: &ImportOptions,
) -> Result<Option<String>, ImageError> {
    let shown = path.display().to_string();
    let meta = fs::metadata(path).map_err(|e| ImageError::io(format!("stat {shown}"), e))?;
    if meta.is_dir() {
        let src = Source::dir(path)?;
        let format = src.detect()?;
        return apply_plan(&src, format, applier, opts);
    }
    if !meta.is_file() {
        return Err(ImageError::UnknownFormat {
            path: path.to_owned(),
            reason: "neither a regular file nor a directory".into(),
        });
    }
    let mut head = [0u8; 6];
    let got = File::open(path)
        .and_then(|mut f| read_up_to(&mut f, &mut head))
        .map_err(|e| ImageError::io(format!("read {shown}"), e))?;
    let compression = archive::sniff(&head[..got]).map_err(|reason| ImageError::UnknownFormat {
        path: path.to_owned(),
        reason,
    })?;
    if compression == Compression::None {
        // An archive that cannot even be indexed is no layout: applying it
        // as a rootfs reports the problem entry by entry.
        let src = Source::tar(path, path, opts.max_entries).ok();
        return match src.as_ref().map(Source::detect).transpose()? {
            Some(format @ (Format::Oci | Format::DockerArchive)) => {
                apply_plan(src.as_ref().expect("indexed"), format, applier, opts)
            }
            _ => {
                apply_stream(applier, &shown, source::file_input(path)?, None, opts)?;
                Ok(None)
            }
        };
    }
    // Compressed: look at the member names first; a layout inside needs
    // random access, so it is decompressed to the scratch directory.
    let open = || File::open(path).map_err(|e| ImageError::io(format!("open {shown}"), e));
    let (_, reader) = archive::decompress(open()?).map_err(|e| corrupt(&shown, e))?;
    match scan_format(reader, &shown, opts)? {
        Format::Rootfs => {
            apply_stream(applier, &shown, open()?, None, opts)?;
            Ok(None)
        }
        format => {
            let spool = scratch.join("source.tar");
            let (_, mut reader) = archive::decompress(open()?).map_err(|e| corrupt(&shown, e))?;
            let mut out = File::create(&spool)
                .map_err(|e| ImageError::io(format!("create {}", spool.display()), e))?;
            let n = io::copy(&mut (&mut reader).take(opts.max_total_bytes + 1), &mut out)
                .map_err(|e| corrupt(&shown, e))?;
            if n > opts.max_total_bytes {
                return Err(ImageError::Limit {
                    layer: shown,
                    what: "decompressed archive size",
                    limit: opts.max_total_bytes,
                    detail: String::new(),
                });
            }
            drop(out);
            let src = Source::tar(&spool, path, opts.max_entries)?;
            apply_plan(&src, format, applier, opts)
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

fn corrupt(layer: &str, e: io::Error) -> ImageError {
    ImageError::CorruptLayer {
        layer: layer.to_owned(),
        reason: e.to_string(),
    }
}

/// Reads only the member names of a (decompressed) tar stream to tell a
/// layout from a rootfs.
fn scan_format(reader: impl Read, shown: &str, opts: &ImportOptions) -> Result<Format, ImageError> {
    let mut tar = TarReader::new(Stream(reader));
    let mut names = Vec::new();
    let mut manifest = None;
    let mut count = 0u64;
    let bad = |e: String| ImageError::CorruptLayer {
        layer: shown.to_owned(),
        reason: e,
    };
    while let Some(e) = tar.next_entry().map_err(|e| bad(e.to_string()))? {
        count += 1;
        if count > opts.max_entries {
            return Err(ImageError::Limit {
                layer: shown.to_owned(),
                what: "number of entries",
                limit: opts.max_entries,
                detail: String::new(),
            });
        }
        if let Ok(p) = fsops::RelPath::parse(&e.path) {
            if p.components() == ["manifest.json"] && e.size <= source::MAX_SNIFF_BYTES {
                let mut buf = Vec::new();
                tar.data()
                    .read_to_end(&mut buf)
                    .map_err(|e| bad(e.to_string()))?;
                manifest = Some(buf);
            }
            names.push(p);
        }
    }
    Ok(source::classify(names.iter(), manifest.as_deref()))
}

/// Applies an OCI layout or docker archive.
fn apply_plan(
    src: &Source,
    format: Format,
    applier: &mut Applier<'_>,
    opts: &ImportOptions,
) -> Result<Option<String>, ImageError> {
    let plan: Plan = match format {
        Format::Oci => oci::plan_oci(src, opts)?,
        Format::DockerArchive => oci::plan_docker(src, opts)?,
        Format::Rootfs => {
            return Err(ImageError::UnknownFormat {
                path: src.path().to_owned(),
                reason: "a rootfs tarball has no layers to plan".into(),
            });
        }
    };
    for layer in &plan.layers {
        if let Some((digest, size)) = &layer.blob {
            oci::verify_blob(src, digest, *size)?;
        }
        let (input, _) = src.open_input(&layer.member)?;
        apply_stream(applier, &layer.name, input, layer.diff_id.as_ref(), opts)?;
    }
    Ok(plan.manifest_digest)
}

/// Decompresses (by magic bytes) and applies one layer, then checks the
/// uncompressed stream against `diff_id` and that only padding follows the
/// end-of-archive block.
fn apply_stream(
    applier: &mut Applier<'_>,
    name: &str,
    input: impl Read,
    diff_id: Option<&BlobDigest>,
    opts: &ImportOptions,
) -> Result<(), ImageError> {
    let (_, reader) = archive::decompress(input).map_err(|e| corrupt(name, e))?;
    let algorithm = diff_id.map_or(archive::Algorithm::Sha256, |d| d.algorithm);
    let limit = opts
        .max_total_bytes
        .saturating_mul(2)
        .saturating_add(64 << 20);
    let hashing = Hashing::new(reader, algorithm, limit);
    let rest = applier.apply_layer(name, Stream(hashing))?;
    let mut hashing = rest.0;
    hashing.extend_limit(MAX_TRAILING_BYTES);
    let (actual, _) = hashing.finish().map_err(|e| {
        if archive::is_limit(&e) {
            ImageError::CorruptLayer {
                layer: name.to_owned(),
                reason: format!(
                    "more than {MAX_TRAILING_BYTES} bytes after the end-of-archive block"
                ),
            }
        } else {
            corrupt(name, e)
        }
    })?;
    if let Some(expected) = diff_id
        && actual != *expected
    {
        return Err(ImageError::DigestMismatch {
            digest: format!("{expected} (uncompressed layer {name}, config diff_id)"),
            actual: actual.to_string(),
        });
    }
    Ok(())
}

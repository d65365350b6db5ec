//! Images named in the daemon's configuration (`[images]`, alias -> path):
//! imported into the store at start-up, so that they too are used by
//! digest. The configuration is trusted, so an image it names is marked
//! trusted (by `config`) unless an admin recorded a decision already.
//!
//! A path may be anything `hermetic_image::import` reads (an OCI layout
//! directory or archive, a docker archive, a rootfs tarball) or a plain
//! root filesystem directory, which is archived (without following
//! symlinks) into a temporary tarball in the store and imported as one.
//!
//! An archive file is not imported again at the next start while its
//! identity (device, inode, size, modification and change times) is
//! unchanged and the image it gave is still stored: `configured.json` in
//! the store remembers which digest each path gave. Directories are
//! imported at every start (a changed file deep inside does not show in
//! the directory's own times).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use hermetic_image::ImportOptions;
use tracing::info;

use crate::error::{Error, Result};
use crate::images::reference::ImageDigest;
use crate::images::store::{ImageStore, Origin};
use crate::images::trust::now_rfc3339;

/// Who configured images are recorded as imported and trusted by.
pub const CONFIG: &str = "config";

/// Imports every configured image and points its alias at it.
pub fn import_all(store: &ImageStore, images: &BTreeMap<String, std::path::PathBuf>) -> Result<()> {
    for (alias, path) in images {
        let digest = import_one(store, alias, path)?;
        store.set_alias(alias, &digest)?;
        let info = store
            .get(&digest)?
            .ok_or_else(|| Error::Internal(format!("image {digest} vanished")))?;
        if info.trust.is_none() {
            store.set_trust(&info, true, CONFIG)?;
        }
        info!(alias = %alias, image = %digest, path = %path.display(), "configured image");
    }
    Ok(())
}

/// What identifies an archive file's content cheaply.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn identity(path: &Path) -> Option<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
    Some(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
    })
}

/// Path -> (identity, BLAKE3 hex) of configured archives imported before.
type Remembered = BTreeMap<std::path::PathBuf, (FileIdentity, String)>;

const REMEMBERED: &str = "configured.json";

fn import_one(store: &ImageStore, alias: &str, path: &Path) -> Result<ImageDigest> {
    let remembered_path = store.dir().join(REMEMBERED);
    let mut remembered: Remembered = std::fs::read(&remembered_path)
        .ok()
        .and_then(|d| serde_json::from_slice(&d).ok())
        .unwrap_or_default();
    let id = identity(path);
    if let (Some(id), Some((known, hex))) = (&id, remembered.get(path)) {
        let digest = ImageDigest {
            algorithm: crate::images::reference::Algorithm::Blake3,
            hex: hex.clone(),
        };
        if id == known && store.get(&digest)?.is_some() {
            return Ok(digest);
        }
    }
    let digest = import_uncached(store, alias, path)?;
    if let Some(id) = id {
        remembered.insert(path.to_owned(), (id, digest.hex.clone()));
        let data = serde_json::to_vec_pretty(&remembered).expect("serializes");
        store.write_file(store.dir(), REMEMBERED, &data)?;
    }
    Ok(digest)
}

fn import_uncached(store: &ImageStore, alias: &str, path: &Path) -> Result<ImageDigest> {
    let what = format!("images.{alias} ({})", path.display());
    let origin = Origin {
        source: path.display().to_string(),
        by: CONFIG.into(),
        at: now_rfc3339(),
    };
    let opts = ImportOptions::default();
    let is_rootfs_dir = path.is_dir() && !path.join("oci-layout").exists();
    if !is_rootfs_dir {
        return Ok(store.import(path, &what, &opts, origin)?.info.digest);
    }
    let tarball = store.staging_path(".incoming-").with_extension("tar");
    let result = archive_dir(path, &tarball).and_then(|()| {
        store
            .import(&tarball, &what, &opts, origin)
            .map(|i| i.info.digest)
    });
    let _ = std::fs::remove_file(&tarball);
    result
}

/// Writes `dir` as a tarball (entries relative to it, symlinks as links).
fn archive_dir(dir: &Path, out: &Path) -> Result<()> {
    let file = File::create(out).map_err(Error::io("create", out))?;
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Deterministic);
    builder
        .append_dir_all(".", dir)
        .and_then(|()| builder.finish())
        .map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read image directory {}: {e}",
                dir.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs_tar(path: &Path, content: &[u8]) {
        let mut b = tar::Builder::new(File::create(path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(content.len() as u64);
        b.append_data(&mut h, "etc/motd", content).unwrap();
        b.finish().unwrap();
    }

    #[test]
    fn a_changed_archive_is_imported_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(&dir.path().join("images"), false).unwrap();
        let tar = dir.path().join("base.tar");
        rootfs_tar(&tar, b"one");
        let images: BTreeMap<_, _> = [("base".to_owned(), tar.clone())].into();
        import_all(&store, &images).unwrap();
        let first = store.resolve("base").unwrap();
        assert!(first.trusted());
        assert_eq!(first.trust.as_ref().unwrap().by, CONFIG);
        import_all(&store, &images).unwrap();
        assert_eq!(store.resolve("base").unwrap().digest, first.digest);

        // An admin's decision is kept across starts.
        store.set_trust(&first, false, "unix uid 0").unwrap();
        import_all(&store, &images).unwrap();
        assert!(!store.resolve("base").unwrap().trusted());

        // New content under the same path: a new image, the alias follows.
        rootfs_tar(&tar, b"two");
        import_all(&store, &images).unwrap();
        let second = store.resolve("base").unwrap();
        assert_ne!(second.digest, first.digest);
        assert!(second.rootfs.join("etc/motd").is_file());
        assert_eq!(
            std::fs::read(second.rootfs.join("etc/motd")).unwrap(),
            b"two"
        );
    }
}

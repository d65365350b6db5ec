//! Images named in the daemon's configuration (`[images]`, alias -> path):
//! imported into the store at start-up, so that they too are used by
//! digest. The configuration is trusted, so an image it names is marked
//! trusted (by `config`) unless an admin recorded a decision already.
//!
//! A path may be anything `hermetic_image::import` reads (an OCI layout
//! directory or archive, a docker archive, a rootfs tarball) or a plain
//! root filesystem directory, which is archived (without following
//! symlinks) into a temporary tarball in the store and imported as one.

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

fn import_one(store: &ImageStore, alias: &str, path: &Path) -> Result<ImageDigest> {
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

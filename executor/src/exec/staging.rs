//! Materializing an input tree from the CAS.
//!
//! Files are hardlinked from the store (never copied, except across
//! filesystems or past the link-count limit); the executable bit comes
//! from the store's executable variant, since it belongs to the inode.
//! The tree becomes the sandbox's read-only lower layer, so a step cannot
//! write through a link into the store.
//!
//! Directories (not files) are given to `owner` when one is set: the host
//! ids the sandbox maps its user to, so that the step can create files in
//! input directories and in the parents of its outputs (overlayfs copies a
//! lower directory up only when its owner is mapped in the sandbox).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2::Directory;

use crate::cas::Store;
use crate::digest::BlobKey;
use crate::error::{Error, Result};

/// What staging did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StageStats {
    /// Files hardlinked.
    pub linked: u64,
    /// Files copied (link impossible).
    pub copied: u64,
    /// Directories created.
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
}

/// Materializes the tree rooted at `root` into `dest` (which must not
/// exist). `dirs` holds every directory of the tree, already validated.
pub fn stage(
    store: &Store,
    dirs: &HashMap<BlobKey, &Directory>,
    root: BlobKey,
    dest: &Path,
    owner: Option<(u32, u32)>,
) -> Result<StageStats> {
    let mut stats = StageStats::default();
    stage_dir(store, dirs, root, dest, owner, &mut stats)?;
    Ok(stats)
}

fn stage_dir(
    store: &Store,
    dirs: &HashMap<BlobKey, &Directory>,
    key: BlobKey,
    dest: &Path,
    owner: Option<(u32, u32)>,
    stats: &mut StageStats,
) -> Result<()> {
    let dir = dirs
        .get(&key)
        .ok_or_else(|| Error::MissingBlobs(vec![key]))?;
    make_dir(dest, owner)?;
    stats.directories += 1;
    for f in &dir.files {
        let fk = BlobKey::from_opt(key.function, f.digest.as_ref(), "file digest")?;
        let src = store.variant_path(&fk, f.is_executable)?;
        let dst = dest.join(&f.name);
        match fs::hard_link(&src, &dst) {
            Ok(()) => stats.linked += 1,
            // EMLINK (too many links) or EXDEV (another filesystem).
            Err(e) if matches!(e.raw_os_error(), Some(31) | Some(18)) => {
                fs::copy(&src, &dst).map_err(Error::io("copy", &dst))?;
                stats.copied += 1;
            }
            Err(e) => return Err(Error::io("hardlink", dst)(e)),
        }
    }
    for l in &dir.symlinks {
        let dst = dest.join(&l.name);
        std::os::unix::fs::symlink(&l.target, &dst).map_err(Error::io("symlink", &dst))?;
        stats.symlinks += 1;
    }
    for d in &dir.directories {
        let dk = BlobKey::from_opt(key.function, d.digest.as_ref(), "directory digest")?;
        stage_dir(store, dirs, dk, &dest.join(&d.name), owner, stats)?;
    }
    Ok(())
}

/// Creates a directory, giving it to `owner`.
fn make_dir(path: &Path, owner: Option<(u32, u32)>) -> Result<()> {
    fs::create_dir(path).map_err(Error::io("create", path))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(Error::io("chown", path))?;
    }
    Ok(())
}

/// Creates `rel` (a `/`-separated relative path) and its parents under
/// `root` as directories, refusing to pass through a symlink or a file of
/// the input tree.
pub fn create_dirs(root: &Path, rel: &str, owner: Option<(u32, u32)>) -> Result<()> {
    let mut p = root.to_path_buf();
    for seg in rel.split('/').filter(|s| !s.is_empty()) {
        p.push(seg);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Error::InvalidArgument(format!(
                    "{rel:?}: {seg:?} is a file or symlink in the input tree, not a directory"
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => make_dir(&p, owner)?,
            Err(e) => return Err(Error::io("stat", p)(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::DigestFunction;
    use bazel_remote_apis::build::bazel::remote::execution::v2::{
        DirectoryNode, FileNode, SymlinkNode,
    };
    use prost::Message;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn stages_files_with_the_right_mode_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), 1 << 30, false).unwrap();
        let f = DigestFunction::Sha256;
        let blob = store.put_new(f, b"#!/bin/sh\n").unwrap();
        let sub = Directory {
            files: vec![FileNode {
                name: "plain".into(),
                digest: Some(blob.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let sub_key = store.put_new(f, &sub.encode_to_vec()).unwrap();
        let root = Directory {
            files: vec![FileNode {
                name: "run".into(),
                digest: Some(blob.to_proto()),
                is_executable: true,
                ..Default::default()
            }],
            directories: vec![DirectoryNode {
                name: "sub".into(),
                digest: Some(sub_key.to_proto()),
            }],
            symlinks: vec![SymlinkNode {
                name: "link".into(),
                target: "sub/plain".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let root_key = store.put_new(f, &root.encode_to_vec()).unwrap();
        let dirs: HashMap<BlobKey, &Directory> = [(root_key, &root), (sub_key, &sub)].into();
        let dest = dir.path().join("input");
        let stats = stage(&store, &dirs, root_key, &dest, None).unwrap();
        assert_eq!(stats.linked, 2);
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("run"), 0o555);
        assert_eq!(mode("sub/plain"), 0o444);
        assert_eq!(
            fs::read_link(dest.join("link")).unwrap(),
            Path::new("sub/plain")
        );
        create_dirs(&dest, "sub/out/deeper", None).unwrap();
        assert!(dest.join("sub/out/deeper").is_dir());
        assert!(create_dirs(&dest, "run/x", None).is_err());
    }
}

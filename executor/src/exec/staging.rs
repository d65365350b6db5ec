//! Materializing an input tree from the CAS.
//!
//! Files are hardlinked from the store (never copied, except across
//! filesystems or past the link-count limit); the executable bit comes
//! from the store's executable variant, since it belongs to the inode.
//! The tree becomes the sandbox's read-only lower layer, so a step cannot
//! write through a link into the store.
//!
//! [`stage_input`] reuses subtrees materialized for earlier actions (see
//! [`super::dirpool`]): only the directories on the way to the working
//! directory and to the outputs' parents (which the daemon adds to) are
//! made afresh; every other subtree is moved in whole from the pool, or
//! materialized once and given back to it after the action.
//!
//! Directories (not files) are given to `owner` when one is set: the host
//! ids the sandbox maps its user to, so that the step can create files in
//! input directories and in the parents of its outputs (overlayfs copies a
//! lower directory up only when its owner is mapped in the sandbox).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::Directory;

use crate::cas::Store;
use crate::digest::BlobKey;
use crate::error::{Error, Result};
use crate::exec::dirpool::{DirPool, PoolKey};

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
    /// Subtrees moved in whole from the pool.
    pub reused: u64,
}

/// An input tree staged by [`stage_input`]: its subtrees that go back to
/// the pool once the sandbox is gone.
#[derive(Debug, Default)]
pub struct StagedInput {
    /// Pool keys and where those subtrees are in the input tree.
    pub subtrees: Vec<(PoolKey, PathBuf)>,
    /// What staging did.
    pub stats: StageStats,
}

impl StagedInput {
    /// Gives every reusable subtree back to the pool (call only once no
    /// process uses the tree).
    pub fn give_back(self, pool: &DirPool) {
        for (key, path) in self.subtrees {
            pool.give_back(key, &path);
        }
    }
}

/// The directories an action adds to (`rel` paths: the working directory
/// and each output's parent), with every ancestor and the root (`""`).
pub fn touched_dirs<'a>(paths: impl IntoIterator<Item = &'a str>) -> HashSet<String> {
    let mut out = HashSet::new();
    for p in paths {
        out.insert(String::new());
        let mut prefix = String::new();
        for seg in p.split('/').filter(|s| !s.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            out.insert(prefix.clone());
        }
    }
    out
}

/// Materializes the tree rooted at `root` into `dest` (which must not
/// exist), making the `fresh` directories (relative paths, see
/// [`touched_dirs`]) afresh and taking every other subtree from `pool`
/// when it holds one.
pub fn stage_input(
    store: &Store,
    pool: &DirPool,
    dirs: &HashMap<BlobKey, &Directory>,
    root: BlobKey,
    dest: &Path,
    fresh: &HashSet<String>,
    owner: Option<(u32, u32)>,
) -> Result<StagedInput> {
    let mut staged = StagedInput::default();
    let ctx = Ctx {
        store,
        pool,
        dirs,
        fresh,
        owner,
    };
    ctx.place(root, dest, "", &mut staged)?;
    Ok(staged)
}

struct Ctx<'a> {
    store: &'a Store,
    pool: &'a DirPool,
    dirs: &'a HashMap<BlobKey, &'a Directory>,
    fresh: &'a HashSet<String>,
    owner: Option<(u32, u32)>,
}

impl Ctx<'_> {
    fn place(&self, key: BlobKey, dest: &Path, rel: &str, out: &mut StagedInput) -> Result<()> {
        if !self.fresh.contains(rel) {
            let pool_key = (key, self.owner);
            if self.pool.take(&pool_key, dest)? {
                out.stats.reused += 1;
            } else {
                stage_dir(self.store, self.dirs, key, dest, self.owner, &mut out.stats)?;
            }
            out.subtrees.push((pool_key, dest.to_owned()));
            return Ok(());
        }
        let dir = self
            .dirs
            .get(&key)
            .ok_or_else(|| Error::MissingBlobs(vec![key]))?;
        make_dir(dest, self.owner)?;
        out.stats.directories += 1;
        link_files(self.store, key, dir, dest, &mut out.stats)?;
        for d in &dir.directories {
            let dk = BlobKey::from_opt(key.function, d.digest.as_ref(), "directory digest")?;
            let child = if rel.is_empty() {
                d.name.clone()
            } else {
                format!("{rel}/{}", d.name)
            };
            self.place(dk, &dest.join(&d.name), &child, out)?;
        }
        Ok(())
    }
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
    link_files(store, key, dir, dest, stats)?;
    for d in &dir.directories {
        let dk = BlobKey::from_opt(key.function, d.digest.as_ref(), "directory digest")?;
        stage_dir(store, dirs, dk, &dest.join(&d.name), owner, stats)?;
    }
    Ok(())
}

/// Hardlinks the files and creates the symlinks of `dir` in `dest`.
fn link_files(
    store: &Store,
    key: BlobKey,
    dir: &Directory,
    dest: &Path,
    stats: &mut StageStats,
) -> Result<()> {
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
    Ok(())
}

/// Removes a tree, making read-only directories writable first (staged
/// trees and collected outputs may be read-only).
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    fn make_writable(p: &Path) {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = fs::symlink_metadata(p)
            && m.is_dir()
        {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
    make_writable(path);
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), cause = %e, "cannot remove a directory tree");
    }
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

    #[test]
    fn untouched_subtrees_are_reused_by_rename_never_copied() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), 1 << 30, false).unwrap();
        let pool = DirPool::open(&dir.path().join("state")).unwrap();
        let f = DigestFunction::Sha256;
        let blob = store.put_new(f, b"data").unwrap();
        let file = |name: &str| FileNode {
            name: name.into(),
            digest: Some(blob.to_proto()),
            ..Default::default()
        };
        let lib = Directory {
            files: vec![file("a"), file("b")],
            ..Default::default()
        };
        let lib_key = store.put_new(f, &lib.encode_to_vec()).unwrap();
        let out = Directory::default();
        let out_key = store.put_new(f, &out.encode_to_vec()).unwrap();
        let node = |name: &str, k: BlobKey| DirectoryNode {
            name: name.into(),
            digest: Some(k.to_proto()),
        };
        let root = Directory {
            files: vec![file("top")],
            directories: vec![node("lib", lib_key), node("out", out_key)],
            ..Default::default()
        };
        let root_key = store.put_new(f, &root.encode_to_vec()).unwrap();
        let dirs: HashMap<BlobKey, &Directory> =
            [(root_key, &root), (lib_key, &lib), (out_key, &out)].into();
        // The action writes under out/new: "", "out", "out/new" are fresh.
        let fresh = touched_dirs(["out/new"]);
        assert_eq!(fresh.len(), 3);
        let stage_once = |n: u32| {
            let dest = dir.path().join(format!("input{n}"));
            let staged = stage_input(&store, &pool, &dirs, root_key, &dest, &fresh, None).unwrap();
            create_dirs(&dest, "out/new", None).unwrap();
            let lib_ino = fs::metadata(dest.join("lib")).unwrap().ino();
            assert_eq!(fs::read(dest.join("lib/b")).unwrap(), b"data");
            assert_eq!(
                fs::metadata(dest.join("lib/a")).unwrap().ino(),
                fs::metadata(store.variant_path(&blob, false).unwrap())
                    .unwrap()
                    .ino(),
                "files are hardlinks of the store's blob"
            );
            (staged, lib_ino)
        };
        let (first, lib_ino) = stage_once(1);
        assert_eq!(first.stats.reused, 0);
        assert_eq!(first.subtrees.len(), 1, "only lib/ is reusable");
        first.give_back(&pool);
        assert_eq!(pool.len(), 1);
        let (second, again_ino) = stage_once(2);
        assert_eq!(second.stats.reused, 1);
        assert_eq!(
            second.stats.linked, 1,
            "only the root's own file is linked again"
        );
        assert_eq!(again_ino, lib_ino, "the same directory, moved, not rebuilt");
        assert!(pool.is_empty());
        // Nothing to create: the whole root is reusable.
        second.give_back(&pool);
        let staged = stage_input(
            &store,
            &pool,
            &dirs,
            root_key,
            &dir.path().join("input3"),
            &touched_dirs([]),
            None,
        )
        .unwrap();
        assert_eq!(staged.subtrees.len(), 1);
        assert_eq!(staged.subtrees[0].0.0, root_key);
    }
}

//! Writing an ActionResult's outputs into the out dir: files (verified
//! against their digest, both BLAKE3 and SHA-256 computed), directories
//! from their `Tree`, symlinks as symlinks (never followed).
//!
//! The client touches nothing outside the out dir: every output path is
//! checked relative, and no parent on the way may be a symlink (an earlier
//! output could otherwise redirect a later one).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Digest, Directory, Tree,
};
use prost::Message;
use serde::Serialize;

use crate::backend::Backend;
use crate::digests::{Both, Function, show};
use crate::error::{Error, Result};
use crate::job::check_relative;

/// One downloaded output (or a file inside an output directory).
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Relative to the out dir (and to /work).
    pub path: String,
    /// `file`, `directory` or `symlink`.
    pub kind: &'static str,
    /// Size in bytes (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// `blake3:HEX/SIZE` (files; directories: of their Tree under the
    /// job's function when it is BLAKE3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blake3: Option<String>,
    /// `sha256:HEX/SIZE` (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The executable bit (files).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub executable: bool,
    /// The target (symlinks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// `{function}:HEX/SIZE` of the directory's Tree blob.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tree: Option<String>,
}

/// Makes `rel`'s parents under `root` (never through a symlink) and removes
/// whatever is at `rel` already; returns the host path.
fn prepare(root: &Path, rel: &str) -> Result<PathBuf> {
    check_relative(rel).map_err(|why| {
        Error::Verification(format!("the daemon sent an output path {rel:?} that {why}"))
    })?;
    let mut p = root.to_path_buf();
    let segs: Vec<&str> = rel.split('/').collect();
    for seg in &segs[..segs.len() - 1] {
        p.push(seg);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(Error::Verification(format!(
                    "output {rel:?} would be written through the symlink {}",
                    p.display()
                )));
            }
            Ok(_) => std::fs::remove_file(&p).map_err(Error::io("remove", &p))?,
            Err(_) => {}
        }
        if !p.exists() {
            std::fs::create_dir(&p).map_err(Error::io("create", &p))?;
        }
    }
    p.push(segs[segs.len() - 1]);
    remove(&p)?;
    Ok(p)
}

/// Removes a file, symlink or directory tree (making directories writable
/// first); absent is fine.
fn remove(p: &Path) -> Result<()> {
    let Ok(m) = std::fs::symlink_metadata(p) else {
        return Ok(());
    };
    if m.file_type().is_dir() {
        fn writable(p: &Path) {
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755));
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        writable(&e.path());
                    }
                }
            }
        }
        writable(p);
        std::fs::remove_dir_all(p).map_err(Error::io("remove", p))
    } else {
        std::fs::remove_file(p).map_err(Error::io("remove", p))
    }
}

/// Downloads one file blob to `host` and verifies it.
async fn file(
    backend: &Backend,
    f: Function,
    digest: &Digest,
    host: &Path,
    executable: bool,
    rel: &str,
) -> Result<Entry> {
    backend.read_to_file(f, digest, host).await?;
    let both = {
        let h = host.to_owned();
        tokio::task::spawn_blocking(move || Both::of_file(&h))
            .await
            .map_err(|e| Error::Infra(format!("hashing task failed: {e}")))??
    };
    if both.get(f) != digest {
        let _ = std::fs::remove_file(host);
        return Err(Error::Verification(format!(
            "output {rel:?} should be {} but its content is {}",
            show(f, digest),
            show(f, both.get(f))
        )));
    }
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(host, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("chmod", host))?;
    Ok(Entry {
        path: rel.to_owned(),
        kind: "file",
        size: Some(digest.size_bytes as u64),
        blake3: Some(show(Function::Blake3, &both.blake3)),
        sha256: Some(show(Function::Sha256, &both.sha256)),
        executable,
        target: None,
        tree: None,
    })
}

fn symlink(host: &Path, rel: &str, target: &str) -> Result<Entry> {
    std::os::unix::fs::symlink(target, host).map_err(Error::io("create the symlink", host))?;
    Ok(Entry {
        path: rel.to_owned(),
        kind: "symlink",
        size: None,
        blake3: None,
        sha256: None,
        executable: false,
        target: Some(target.to_owned()),
        tree: None,
    })
}

fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(Error::Verification(format!(
            "an output directory has an entry named {name:?}"
        )));
    }
    Ok(())
}

/// What materializing a Tree needs.
struct TreeCtx<'a> {
    backend: &'a Backend,
    f: Function,
    children: &'a HashMap<String, Directory>,
}

/// Materializes a Directory (from a Tree) at `host`.
async fn directory(
    cx: &TreeCtx<'_>,
    dir: &Directory,
    host: &Path,
    rel: &str,
    entries: &mut Vec<Entry>,
    depth: usize,
) -> Result<()> {
    if depth > 256 {
        return Err(Error::Verification(format!(
            "output directory {rel:?} is too deep"
        )));
    }
    std::fs::create_dir(host).map_err(Error::io("create", host))?;
    for n in &dir.files {
        check_name(&n.name)?;
        let d = n.digest.clone().unwrap_or_default();
        let (h, r) = (host.join(&n.name), format!("{rel}/{}", n.name));
        entries.push(file(cx.backend, cx.f, &d, &h, n.is_executable, &r).await?);
    }
    for s in &dir.symlinks {
        check_name(&s.name)?;
        entries.push(symlink(
            &host.join(&s.name),
            &format!("{rel}/{}", s.name),
            &s.target,
        )?);
    }
    for d in &dir.directories {
        check_name(&d.name)?;
        let hash = d
            .digest
            .as_ref()
            .map(|d| d.hash.as_str())
            .unwrap_or_default();
        let child = cx.children.get(hash).ok_or_else(|| {
            Error::Verification(format!(
                "output directory {rel:?}: the Tree lacks {:?}",
                d.name
            ))
        })?;
        Box::pin(directory(
            cx,
            child,
            &host.join(&d.name),
            &format!("{rel}/{}", d.name),
            entries,
            depth + 1,
        ))
        .await?;
    }
    Ok(())
}

/// Downloads every output of `result` into `out_dir`.
#[allow(deprecated)]
pub async fn outputs(
    backend: &Backend,
    f: Function,
    result: &ActionResult,
    out_dir: &Path,
) -> Result<Vec<Entry>> {
    std::fs::create_dir_all(out_dir).map_err(Error::io("create", out_dir))?;
    let mut entries = Vec::new();
    for d in &result.output_directories {
        let tree_digest = d.tree_digest.clone().unwrap_or_default();
        let tree = Tree::decode(backend.read(f, &tree_digest).await?.as_slice()).map_err(|e| {
            Error::Verification(format!("the Tree of {:?} does not decode: {e}", d.path))
        })?;
        let children: HashMap<String, Directory> = tree
            .children
            .iter()
            .map(|c| (f.digest(&c.encode_to_vec()).hash, c.clone()))
            .collect();
        let host = prepare(out_dir, &d.path)?;
        entries.push(Entry {
            path: d.path.clone(),
            kind: "directory",
            size: None,
            blake3: None,
            sha256: None,
            executable: false,
            target: None,
            tree: Some(show(f, &tree_digest)),
        });
        let root = tree.root.unwrap_or_default();
        let cx = TreeCtx {
            backend,
            f,
            children: &children,
        };
        directory(&cx, &root, &host, &d.path, &mut entries, 0).await?;
    }
    for o in &result.output_files {
        let host = prepare(out_dir, &o.path)?;
        let d = o.digest.clone().unwrap_or_default();
        entries.push(file(backend, f, &d, &host, o.is_executable, &o.path).await?);
    }
    for s in result
        .output_symlinks
        .iter()
        .chain(&result.output_file_symlinks)
        .chain(&result.output_directory_symlinks)
    {
        let host = prepare(out_dir, &s.path)?;
        entries.push(symlink(&host, &s.path, &s.target)?);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_writes_through_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(dir.path(), out.join("escape")).unwrap();
        assert!(matches!(
            prepare(&out, "escape/x"),
            Err(Error::Verification(_))
        ));
        assert!(prepare(&out, "../x").is_err());
        assert!(prepare(&out, "/abs").is_err());
        let p = prepare(&out, "a/b/c").unwrap();
        assert_eq!(p, out.join("a/b/c"));
        assert!(out.join("a/b").is_dir());
        std::fs::write(&p, b"old").unwrap();
        assert_eq!(prepare(&out, "a/b/c").unwrap(), p);
        assert!(!p.exists());
    }
}

//! Ingesting what the helper collected into the CAS and describing it in an
//! `ActionResult`.
//!
//! The helper copies declared outputs into the action's output directory,
//! on the CAS's filesystem, preserving their paths relative to `/work`.
//! Files are hashed and renamed into the store; directories become `Tree`
//! blobs; symlinks are recorded, never followed, and refused when they are
//! absolute or climb out of `/work`.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Directory, DirectoryNode, FileNode, OutputDirectory, OutputFile, OutputSymlink,
    SymlinkNode, Tree, command::OutputDirectoryFormat,
};
use prost::Message;

use crate::cas::Store;
use crate::digest::{DigestFunction, key_of};
use crate::error::{Error, Result};
use crate::exec::action::{Declared, Output, under_workdir};

/// Checks that a symlink at `link` (relative to `/work`) pointing to
/// `target` stays inside `/work`.
pub fn check_symlink(link: &str, target: &str) -> Result<()> {
    let escape = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "output symlink {link:?} -> {target:?} {why}"
        )))
    };
    if target.starts_with('/') {
        return escape("is absolute (absolute symlinks are disallowed)");
    }
    if target.is_empty() {
        return escape("has an empty target");
    }
    let mut depth: Vec<&str> = link.split('/').filter(|s| !s.is_empty()).collect();
    depth.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return escape("points outside the working tree");
                }
            }
            s => depth.push(s),
        }
    }
    Ok(())
}

fn name_of(path: &Path) -> Result<String> {
    path.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "output {} has a name that is not UTF-8",
                path.display()
            ))
        })
}

fn is_exec(meta: &fs::Metadata) -> bool {
    meta.permissions().mode() & 0o100 != 0
}

/// Ingests a directory tree; returns its root `Directory` and every
/// descendant directory.
fn ingest_dir(
    store: &Store,
    function: DigestFunction,
    host: &Path,
    rel: &str,
    children: &mut Vec<Directory>,
    store_directories: bool,
) -> Result<Directory> {
    let mut entries: Vec<(String, fs::Metadata)> = Vec::new();
    for e in fs::read_dir(host).map_err(Error::io("read", host))? {
        let e = e.map_err(Error::io("read", host))?;
        let meta = fs::symlink_metadata(e.path()).map_err(Error::io("stat", e.path()))?;
        entries.push((name_of(&e.path())?, meta));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut dir = Directory::default();
    for (name, meta) in entries {
        let path = host.join(&name);
        let child_rel = format!("{rel}/{name}");
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = read_link(&path)?;
            check_symlink(&child_rel, &target)?;
            dir.symlinks.push(SymlinkNode {
                name,
                target,
                node_properties: None,
            });
        } else if ft.is_dir() {
            let sub = ingest_dir(
                store,
                function,
                &path,
                &child_rel,
                children,
                store_directories,
            )?;
            let data = sub.encode_to_vec();
            let key = key_of(function, &data);
            if store_directories {
                store.put_bytes(key, &data)?;
            }
            children.push(sub);
            dir.directories.push(DirectoryNode {
                name,
                digest: Some(key.to_proto()),
            });
        } else if ft.is_file() {
            let key = store.ingest_file(&path, function, is_exec(&meta))?;
            dir.files.push(FileNode {
                name,
                digest: Some(key.to_proto()),
                is_executable: is_exec(&meta),
                node_properties: None,
            });
        } else {
            return Err(Error::InvalidArgument(format!(
                "output {child_rel:?} is neither a file, a directory nor a symlink"
            )));
        }
    }
    Ok(dir)
}

fn read_link(path: &Path) -> Result<String> {
    let t = fs::read_link(path).map_err(Error::io("readlink", path))?;
    t.into_os_string().into_string().map_err(|t| {
        Error::InvalidArgument(format!(
            "symlink {} has a non-UTF-8 target {t:?}",
            path.display()
        ))
    })
}

/// Ingests every declared output found under `out_root` into the store and
/// fills the output fields of `result`. Absent outputs are skipped (the
/// spec allows it).
#[allow(deprecated)]
pub fn collect(
    store: &Store,
    function: DigestFunction,
    out_root: &Path,
    workdir: &str,
    outputs: &[Output],
    format: OutputDirectoryFormat,
    result: &mut ActionResult,
) -> Result<()> {
    for out in outputs {
        let rel = under_workdir(workdir, &out.path);
        let host = out_root.join(&rel);
        let meta = match fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("stat", host)(e)),
        };
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = read_link(&host)?;
            check_symlink(&rel, &target)?;
            let link = OutputSymlink {
                path: out.path.clone(),
                target,
                node_properties: None,
            };
            match out.declared {
                Declared::File => result.output_file_symlinks.push(link),
                Declared::Directory => result.output_directory_symlinks.push(link),
                Declared::Path => result.output_symlinks.push(link),
            }
        } else if ft.is_file() {
            if out.declared == Declared::Directory {
                return Err(Error::FailedPrecondition(format!(
                    "output directory {:?} is a file",
                    out.path
                )));
            }
            let key = store.ingest_file(&host, function, is_exec(&meta))?;
            result.output_files.push(OutputFile {
                path: out.path.clone(),
                digest: Some(key.to_proto()),
                is_executable: is_exec(&meta),
                contents: Vec::new(),
                node_properties: None,
            });
        } else if ft.is_dir() {
            if out.declared == Declared::File {
                return Err(Error::FailedPrecondition(format!(
                    "output file {:?} is a directory",
                    out.path
                )));
            }
            let store_dirs = format != OutputDirectoryFormat::TreeOnly;
            let mut children = Vec::new();
            let root = ingest_dir(store, function, &host, &rel, &mut children, store_dirs)?;
            let root_data = root.encode_to_vec();
            let root_key = key_of(function, &root_data);
            if store_dirs {
                store.put_bytes(root_key, &root_data)?;
            }
            let mut seen = HashSet::new();
            children.retain(|d| seen.insert(key_of(function, &d.encode_to_vec())));
            let tree = Tree {
                root: Some(root),
                children,
            };
            let tree_key = store.put_new(function, &tree.encode_to_vec())?;
            result.output_directories.push(OutputDirectory {
                path: out.path.clone(),
                tree_digest: Some(tree_key.to_proto()),
                is_topologically_sorted: false,
                root_directory_digest: store_dirs.then(|| root_key.to_proto()),
            });
        } else {
            return Err(Error::InvalidArgument(format!(
                "output {:?} is neither a file, a directory nor a symlink",
                out.path
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_must_stay_inside() {
        check_symlink("out/link", "target").unwrap();
        check_symlink("out/link", "../x").unwrap();
        check_symlink("a/b/link", "../../x").unwrap();
        assert!(check_symlink("out/link", "../../x").is_err());
        assert!(check_symlink("link", "/etc/passwd").is_err());
        assert!(check_symlink("link", "..").is_err());
    }

    #[test]
    fn collects_files_dirs_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state"), 1 << 30, false).unwrap();
        let out = dir.path().join("state/out");
        fs::create_dir_all(out.join("w/d/sub")).unwrap();
        fs::write(out.join("w/f"), b"file").unwrap();
        fs::write(out.join("w/d/sub/x"), b"x").unwrap();
        fs::set_permissions(out.join("w/d/sub/x"), fs::Permissions::from_mode(0o755)).unwrap();
        std::os::unix::fs::symlink("sub/x", out.join("w/d/l")).unwrap();
        std::os::unix::fs::symlink("f", out.join("w/s")).unwrap();
        let outputs: Vec<Output> = ["f", "d", "s", "absent"]
            .iter()
            .map(|p| Output {
                path: (*p).into(),
                declared: Declared::Path,
            })
            .collect();
        let mut result = ActionResult::default();
        collect(
            &store,
            DigestFunction::Sha256,
            &out,
            "w",
            &outputs,
            OutputDirectoryFormat::TreeOnly,
            &mut result,
        )
        .unwrap();
        assert_eq!(result.output_files.len(), 1);
        assert_eq!(result.output_directories.len(), 1);
        assert_eq!(result.output_symlinks.len(), 1);
        let tree_key = crate::digest::BlobKey::from_proto(
            DigestFunction::Sha256,
            result.output_directories[0].tree_digest.as_ref().unwrap(),
        )
        .unwrap();
        let tree = Tree::decode(store.read(&tree_key).unwrap().as_slice()).unwrap();
        let root = tree.root.unwrap();
        assert_eq!(root.symlinks[0].name, "l");
        assert_eq!(tree.children.len(), 1);
        assert!(tree.children[0].files[0].is_executable);
    }
}

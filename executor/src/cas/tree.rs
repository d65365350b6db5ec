//! Directory trees: validation of `Directory` protos and walks over a tree
//! stored in the CAS.
//!
//! A `Directory` is accepted only if every name is non-empty, not `.` or
//! `..`, free of `/` and NUL, each list is sorted, and no name appears
//! twice across files, directories and symlinks. A walk refuses trees
//! deeper than a limit and a directory that contains itself.

use std::collections::{HashMap, HashSet};

use bazel_remote_apis::build::bazel::remote::execution::v2::Directory;
use prost::Message;

use crate::cas::Store;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};

/// Checks one entry name.
fn check_name(name: &str, dir: &BlobKey) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::InvalidArgument(format!(
            "directory {dir}: entry name {name:?} {why}"
        )))
    };
    if name.is_empty() {
        return bad("is empty");
    }
    if name == "." || name == ".." {
        return bad("is not allowed");
    }
    if name.contains('/') || name.contains('\0') {
        return bad("contains `/` or NUL");
    }
    Ok(())
}

/// Checks that names are strictly increasing (sorted, no duplicates).
fn check_sorted<'a>(names: impl Iterator<Item = &'a str>, what: &str, dir: &BlobKey) -> Result<()> {
    let mut prev: Option<&str> = None;
    for n in names {
        if let Some(p) = prev {
            if p == n {
                return Err(Error::InvalidArgument(format!(
                    "directory {dir}: {what} {n:?} appears twice"
                )));
            }
            if p > n {
                return Err(Error::InvalidArgument(format!(
                    "directory {dir}: {what} are not sorted ({p:?} before {n:?})"
                )));
            }
        }
        prev = Some(n);
    }
    Ok(())
}

/// Validates one `Directory` proto (`key` names it in errors).
pub fn validate_directory(d: &Directory, key: &BlobKey) -> Result<()> {
    let files = d.files.iter().map(|f| f.name.as_str());
    let dirs = d.directories.iter().map(|f| f.name.as_str());
    let links = d.symlinks.iter().map(|f| f.name.as_str());
    check_sorted(files.clone(), "files", key)?;
    check_sorted(dirs.clone(), "directories", key)?;
    check_sorted(links.clone(), "symlinks", key)?;
    let mut seen = HashSet::new();
    for name in files.chain(dirs).chain(links) {
        check_name(name, key)?;
        if !seen.insert(name) {
            return Err(Error::InvalidArgument(format!(
                "directory {key}: name {name:?} is used by two entries"
            )));
        }
    }
    for l in &d.symlinks {
        if l.target.is_empty() || l.target.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "directory {key}: symlink {:?} has an empty or NUL target",
                l.name
            )));
        }
        if l.target.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "directory {key}: symlink {:?} has the absolute target {:?} (absolute symlinks are disallowed)",
                l.name, l.target
            )));
        }
    }
    Ok(())
}

/// Decodes a stored `Directory`.
pub fn decode_directory(data: &[u8], key: &BlobKey) -> Result<Directory> {
    Directory::decode(data)
        .map_err(|e| Error::InvalidArgument(format!("directory {key} does not decode: {e}")))
}

/// Everything a tree refers to.
#[derive(Debug, Default)]
pub struct TreeWalk {
    /// Each distinct directory, parents before children.
    pub directories: Vec<(BlobKey, Directory)>,
    /// Each distinct file blob.
    pub files: Vec<BlobKey>,
    /// Blobs referenced but not stored (directories and files).
    pub missing: Vec<BlobKey>,
    /// Total number of file entries (with repetitions).
    pub file_entries: usize,
}

impl TreeWalk {
    /// Every blob of the tree: directories and files.
    pub fn all_blobs(&self) -> Vec<BlobKey> {
        let mut v: Vec<BlobKey> = self.directories.iter().map(|(k, _)| *k).collect();
        v.extend(self.files.iter().copied());
        v
    }
}

/// Options of a walk.
#[derive(Debug, Clone, Copy)]
pub struct WalkOptions {
    /// Validate each directory (input roots) or not (GetTree).
    pub validate: bool,
    /// Deepest allowed nesting (the root is depth 1).
    pub max_depth: usize,
    /// Check file blobs' presence.
    pub check_files: bool,
}

/// Walks the tree rooted at `root`. A missing root is reported in
/// `missing` like any other blob.
pub fn walk(store: &Store, root: BlobKey, opts: WalkOptions) -> Result<TreeWalk> {
    let mut w = Walker {
        store,
        opts,
        out: TreeWalk::default(),
        seen_dirs: HashMap::new(),
        seen_files: HashSet::new(),
        path: Vec::new(),
    };
    w.visit(root, 1)?;
    Ok(w.out)
}

struct Walker<'a> {
    store: &'a Store,
    opts: WalkOptions,
    out: TreeWalk,
    seen_dirs: HashMap<BlobKey, ()>,
    seen_files: HashSet<BlobKey>,
    path: Vec<BlobKey>,
}

impl Walker<'_> {
    fn visit(&mut self, key: BlobKey, depth: usize) -> Result<()> {
        if depth > self.opts.max_depth {
            return Err(Error::InvalidArgument(format!(
                "directory tree is deeper than the limit of {} levels",
                self.opts.max_depth
            )));
        }
        if self.path.contains(&key) {
            return Err(Error::InvalidArgument(format!(
                "directory {key} contains itself (a cycle)"
            )));
        }
        if self.seen_dirs.contains_key(&key) {
            return Ok(());
        }
        self.seen_dirs.insert(key, ());
        let data = match self.store.read(&key) {
            Ok(d) => d,
            Err(Error::NotFound(_)) => {
                self.out.missing.push(key);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let dir = decode_directory(&data, &key)?;
        if self.opts.validate {
            validate_directory(&dir, &key)?;
        }
        let function: DigestFunction = key.function;
        for f in &dir.files {
            self.out.file_entries += 1;
            let fk = BlobKey::from_opt(function, f.digest.as_ref(), "a file node's digest")?;
            if self.seen_files.insert(fk) {
                self.out.files.push(fk);
                if self.opts.check_files && !self.store.contains(&fk) {
                    self.out.missing.push(fk);
                }
            }
        }
        let children: Vec<BlobKey> = dir
            .directories
            .iter()
            .map(|d| BlobKey::from_opt(function, d.digest.as_ref(), "a directory node's digest"))
            .collect::<Result<_>>()?;
        self.out.directories.push((key, dir));
        self.path.push(key);
        for child in children {
            self.visit(child, depth + 1)?;
        }
        self.path.pop();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazel_remote_apis::build::bazel::remote::execution::v2::{FileNode, SymlinkNode};

    fn key() -> BlobKey {
        DigestFunction::Sha256.empty()
    }

    fn file(name: &str) -> FileNode {
        FileNode {
            name: name.into(),
            digest: Some(key().to_proto()),
            ..Default::default()
        }
    }

    #[test]
    fn bad_names_are_rejected() {
        for names in [
            vec![""],
            vec!["."],
            vec![".."],
            vec!["a/b"],
            vec!["b", "a"],
            vec!["a", "a"],
        ] {
            let d = Directory {
                files: names.iter().map(|n| file(n)).collect(),
                ..Default::default()
            };
            assert!(validate_directory(&d, &key()).is_err(), "{names:?}");
        }
        let d = Directory {
            files: vec![file("a"), file("b")],
            symlinks: vec![SymlinkNode {
                name: "a".into(),
                target: "x".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(validate_directory(&d, &key()).is_err());
        let ok = Directory {
            files: vec![file("a"), file("b")],
            ..Default::default()
        };
        validate_directory(&ok, &key()).unwrap();
    }
}

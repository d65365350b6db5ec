//! What an artifact references: the blobs that must stay with it.
//!
//! Every walk reads the store with [`Store::peek`] (a look is not a use,
//! so it does not keep a blob young) and tolerates missing blobs: what is
//! gone cannot be kept, and the rest still is.

use std::collections::HashSet;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, ActionResult, Digest, Directory, LogFile, Tree,
};
use prost::Message;

use crate::cas::Store;
use crate::digest::{BlobKey, DigestFunction};

/// Upper bound on directories walked below one root (a hostile or
/// corrupt graph cannot make a pass run forever).
const MAX_DIRECTORIES: usize = 1_000_000;

/// A set of blobs being collected.
#[derive(Debug, Default)]
pub struct Closure {
    /// The blobs (present or not).
    pub keys: HashSet<BlobKey>,
    dirs_walked: usize,
}

impl Closure {
    fn add(&mut self, f: DigestFunction, d: Option<&Digest>) -> Option<BlobKey> {
        let key = BlobKey::from_proto(f, d?).ok()?;
        self.keys.insert(key);
        Some(key)
    }

    /// A Directory and everything below it.
    pub fn directory(&mut self, store: &Store, root: BlobKey) {
        let mut todo = vec![root];
        let mut seen = HashSet::new();
        while let Some(key) = todo.pop() {
            self.keys.insert(key);
            if !seen.insert(key) || self.dirs_walked >= MAX_DIRECTORIES {
                continue;
            }
            self.dirs_walked += 1;
            let Ok(data) = store.peek(&key) else { continue };
            let Ok(dir) = Directory::decode(data.as_slice()) else {
                continue;
            };
            self.directory_files(key.function, &dir);
            for d in &dir.directories {
                if let Some(k) = d
                    .digest
                    .as_ref()
                    .and_then(|d| BlobKey::from_proto(key.function, d).ok())
                {
                    todo.push(k);
                }
            }
        }
    }

    fn directory_files(&mut self, f: DigestFunction, dir: &Directory) {
        for file in &dir.files {
            self.add(f, file.digest.as_ref());
        }
    }

    /// A Tree blob and every file in it.
    pub fn tree(&mut self, store: &Store, key: BlobKey) {
        self.keys.insert(key);
        let Ok(data) = store.peek(&key) else { return };
        let Ok(tree) = Tree::decode(data.as_slice()) else {
            return;
        };
        for dir in tree.root.iter().chain(tree.children.iter()) {
            self.directory_files(key.function, dir);
        }
    }

    /// A result: outputs (files, trees and their files), stdout, stderr,
    /// the execution log and the provenance documents.
    pub fn result(&mut self, store: &Store, f: DigestFunction, result: &ActionResult) {
        for file in &result.output_files {
            self.add(f, file.digest.as_ref());
        }
        for d in &result.output_directories {
            if let Some(k) = d
                .tree_digest
                .as_ref()
                .and_then(|d| BlobKey::from_proto(f, d).ok())
            {
                self.tree(store, k);
            }
        }
        self.add(f, result.stdout_digest.as_ref());
        self.add(f, result.stderr_digest.as_ref());
        if let Some(m) = &result.execution_metadata {
            for any in &m.auxiliary_metadata {
                if any.type_url == crate::exec::log::LOG_FILE_TYPE_URL
                    && let Ok(log) = LogFile::decode(any.value.as_slice())
                {
                    self.add(f, log.digest.as_ref());
                }
            }
        }
        if let Some(r) = crate::provenance::from_result(result) {
            for b in [&r.bundle, &r.sbom_cyclonedx, &r.sbom_spdx, &r.keyring]
                .into_iter()
                .flatten()
            {
                if let Ok(k) = BlobKey::parse(f, &b.hash, b.size_bytes) {
                    self.keys.insert(k);
                }
            }
        }
    }

    /// An action: the Action blob, its Command and its input root.
    pub fn action(&mut self, store: &Store, key: BlobKey) {
        self.keys.insert(key);
        let Ok(data) = store.peek(&key) else { return };
        let Ok(action) = Action::decode(data.as_slice()) else {
            return;
        };
        self.add(key.function, action.command_digest.as_ref());
        if let Some(root) = action
            .input_root_digest
            .as_ref()
            .and_then(|d| BlobKey::from_proto(key.function, d).ok())
        {
            self.directory(store, root);
        }
    }

    /// The blobs of the closure now stored, and their bytes.
    pub fn stored(&self, store: &Store) -> (u64, u64) {
        self.keys
            .iter()
            .filter(|k| store.has(k))
            .fold((0, 0), |(n, b), k| (n + 1, b + k.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazel_remote_apis::build::bazel::remote::execution::v2::{DirectoryNode, FileNode};

    #[test]
    fn a_directory_closure_has_every_file_and_subdirectory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), 1 << 30, false).unwrap();
        let f = DigestFunction::Blake3;
        let a = store.put_new(f, b"file a").unwrap();
        let b = store.put_new(f, b"file b").unwrap();
        let sub = Directory {
            files: vec![FileNode {
                name: "b".into(),
                digest: Some(b.to_proto()),
                ..Default::default()
            }],
            ..Default::default()
        };
        let sub_key = store.put_new(f, &sub.encode_to_vec()).unwrap();
        let root = Directory {
            files: vec![FileNode {
                name: "a".into(),
                digest: Some(a.to_proto()),
                ..Default::default()
            }],
            directories: vec![DirectoryNode {
                name: "sub".into(),
                digest: Some(sub_key.to_proto()),
            }],
            ..Default::default()
        };
        let root_key = store.put_new(f, &root.encode_to_vec()).unwrap();
        let mut c = Closure::default();
        c.directory(&store, root_key);
        let want: HashSet<BlobKey> = [root_key, sub_key, a, b].into_iter().collect();
        assert_eq!(c.keys, want);
        assert_eq!(c.stored(&store).0, 4);
    }
}

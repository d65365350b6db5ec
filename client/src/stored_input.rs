//! An input root already in the store, named by digest instead of given as
//! a directory: what `hermetic reproduce` without `--input` runs on.
//!
//! An attestation names the input root by the SHA-256 of its root
//! `Directory` blob (and, from daemons that record it, by its BLAKE3 too),
//! so the root's CAS key is known under one digest function or the other,
//! not which. [`resolve`] asks the store for each candidate, then walks the
//! tree under the one it holds (one GetTree through a daemon; directory by
//! directory where GetTree left a directory out, and in the local store)
//! and asks FindMissingBlobs for every directory and file below it. Nothing
//! runs unless every blob is there: a missing one is an invalid job (exit
//! 64) naming each missing digest.

use std::collections::{BTreeMap, HashMap, HashSet};

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, Directory};
use prost::Message;

use crate::backend::Backend;
use crate::digests::{Function, show};
use crate::error::{Error, Result};

/// At most this many missing digests are listed in the error.
const LIST_AT_MOST: usize = 32;

/// The candidate keys of one input root: the same `Directory` blob under
/// each digest function that may have stored it.
pub type Candidates = Vec<(Function, Digest)>;

/// The candidate the store holds, after checking that it holds every blob
/// of the tree below it.
pub async fn resolve(backend: &Backend, candidates: &Candidates) -> Result<(Function, Digest)> {
    let store = match backend {
        Backend::Remote(_) => "the daemon's store",
        Backend::Local(_) => "the local store",
    };
    let mut found = None;
    for (f, d) in candidates {
        if backend.find_missing(*f, vec![d.clone()]).await?.is_empty() {
            found = Some((*f, d.clone()));
            break;
        }
    }
    let Some((f, root)) = found else {
        let names: Vec<String> = candidates.iter().map(|(f, d)| show(*f, d)).collect();
        return Err(Error::InvalidJob(format!(
            "{store} does not hold the attested input root under any of its digests \
             (missing {}); give the inputs with `--input DIR`",
            names.join(", ")
        )));
    };
    let (blobs, missing) = missing_below(backend, f, &root).await?;
    if missing.is_empty() {
        return Ok((f, root));
    }
    let mut list: Vec<String> = missing
        .iter()
        .take(LIST_AT_MOST)
        .map(|d| show(f, d))
        .collect();
    if missing.len() > LIST_AT_MOST {
        list.push(format!("and {} more", missing.len() - LIST_AT_MOST));
    }
    Err(Error::InvalidJob(format!(
        "{store} lacks {} of the {blobs} blobs of the attested input root {}: {}; \
         give the inputs with `--input DIR`",
        missing.len(),
        show(f, &root),
        list.join(", ")
    )))
}

/// How many distinct blobs the tree under `root` (held) has, and those of
/// them the store lacks, in the order met.
async fn missing_below(
    backend: &Backend,
    f: Function,
    root: &Digest,
) -> Result<(usize, Vec<Digest>)> {
    // What GetTree returned, by digest. A directory it left out (missing,
    // or not found under this key) is looked up on its own below.
    let mut known: HashMap<String, Directory> = backend
        .tree(f, root)
        .await?
        .into_iter()
        .map(|d| (f.digest(&d.encode_to_vec()).hash, d))
        .collect();
    let mut missing = Vec::new();
    let mut files = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        if !seen.insert(d.hash.clone()) {
            continue;
        }
        let dir = match known.remove(&d.hash) {
            Some(dir) => dir,
            None => {
                if !backend.find_missing(f, vec![d.clone()]).await?.is_empty() {
                    missing.push(d);
                    continue;
                }
                let data = backend.read(f, &d).await?;
                Directory::decode(data.as_slice()).map_err(|e| {
                    Error::InvalidJob(format!(
                        "blob {} of the input tree is not a Directory: {e}",
                        show(f, &d)
                    ))
                })?
            }
        };
        for file in dir.files {
            let digest = file.digest.ok_or_else(|| {
                Error::InvalidJob(format!(
                    "file {:?} of directory {} has no digest",
                    file.name,
                    show(f, &d)
                ))
            })?;
            files.entry(digest.hash.clone()).or_insert(digest);
        }
        for sub in dir.directories {
            let digest = sub.digest.ok_or_else(|| {
                Error::InvalidJob(format!(
                    "directory {:?} of directory {} has no digest",
                    sub.name,
                    show(f, &d)
                ))
            })?;
            stack.push(digest);
        }
    }
    let files: Vec<Digest> = files.into_values().collect();
    let blobs = seen.len() + files.len();
    missing.extend(backend.find_missing(f, files).await?);
    Ok((blobs, missing))
}

#[cfg(test)]
mod tests {
    use bazel_remote_apis::build::bazel::remote::execution::v2::{DirectoryNode, FileNode};

    use super::*;
    use crate::action::{Blob, Source};

    /// A local store in a temp dir (no daemon, no sandbox needed).
    async fn local(dir: &std::path::Path) -> Backend {
        let profiles = dir.join("profiles");
        std::fs::create_dir(&profiles).unwrap();
        let mut config = hermeticd::config::Config::default();
        config.cas.no_fsync = true;
        config.profiles_dir = Some(profiles);
        config.image_store = Some(dir.join("images"));
        let local = hermeticd::local::Local::open(config, &dir.join("state"))
            .await
            .unwrap();
        Backend::Local(Box::new(local))
    }

    async fn put(b: &Backend, f: Function, data: &[u8]) -> Digest {
        let digest = f.digest(data);
        let blob = Blob {
            digest: digest.clone(),
            source: Source::Bytes(data.to_vec()),
        };
        b.upload(f, vec![blob], &|_| {}).await.unwrap();
        digest
    }

    fn file(name: &str, digest: Digest) -> FileNode {
        FileNode {
            name: name.into(),
            digest: Some(digest),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_tree_is_found_under_its_function_and_each_missing_blob_named() {
        let tmp = tempfile::tempdir().unwrap();
        let b = local(tmp.path()).await;
        let f = Function::Blake3;
        // root/{a, sub/{b, c}}; `c` is never stored.
        let a = put(&b, f, b"a\n").await;
        let bb = put(&b, f, b"b\n").await;
        let c = f.digest(b"c, never stored\n");
        let sub = Directory {
            files: vec![file("b", bb), file("c", c.clone())],
            ..Default::default()
        };
        let sub_digest = put(&b, f, &sub.encode_to_vec()).await;
        let root = Directory {
            files: vec![file("a", a)],
            directories: vec![DirectoryNode {
                name: "sub".into(),
                digest: Some(sub_digest),
            }],
            ..Default::default()
        };
        let root_bytes = root.encode_to_vec();
        let root_digest = put(&b, f, &root_bytes).await;
        // The attestation's candidates: BLAKE3 first, then SHA-256 of the
        // same bytes (not stored under SHA-256).
        let candidates = vec![
            (Function::Blake3, root_digest.clone()),
            (Function::Sha256, Function::Sha256.digest(&root_bytes)),
        ];
        let e = resolve(&b, &candidates).await.unwrap_err();
        assert!(matches!(e, Error::InvalidJob(_)), "{e}");
        let text = e.to_string();
        assert!(text.contains("lacks 1 of the 5 blobs"), "{text}");
        assert!(text.contains(&show(f, &c)), "{text}");
        assert!(text.contains("--input DIR"), "{text}");
        // With `c` stored, the tree is whole.
        put(&b, f, b"c, never stored\n").await;
        assert_eq!(
            resolve(&b, &candidates).await.unwrap(),
            (Function::Blake3, root_digest)
        );
        // A root the store holds under no candidate: each is named.
        let other = Directory {
            files: vec![file("z", f.digest(b"z"))],
            ..Default::default()
        }
        .encode_to_vec();
        let absent = vec![
            (Function::Blake3, Function::Blake3.digest(&other)),
            (Function::Sha256, Function::Sha256.digest(&other)),
        ];
        let text = resolve(&b, &absent).await.unwrap_err().to_string();
        for (cf, d) in &absent {
            assert!(text.contains(&show(*cf, d)), "{text}");
        }
        b.close().await;
    }
}

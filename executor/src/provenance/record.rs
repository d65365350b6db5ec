//! The [`ExecutionRecord`] of a finished action, from what the engine knows:
//! the prepared action, the execution log, the ActionResult and the CAS.
//!
//! Every digest in a record is SHA-256 (in-toto's predefined algorithm)
//! whatever digest function the action used: blobs are read back from the
//! CAS and hashed, files with SHA-256, BLAKE3 and SHA-1 in one pass.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, UNIX_EPOCH};

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, Directory, Tree};
use hermetic_attest::{ExecutionRecord, FileRecord, ImageRecord, ReapiDigest, Timestamp};
use prost::Message;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::cas::Store;
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::exec::action::{Prepared, under_workdir};
use crate::exec::log::ExecutionLog;
use crate::images::ImageInfo;
use crate::images::trust::TrustRecord;

/// The trust record named when an image has none (it ran because the
/// daemon has `require_trusted_images = false`).
pub const NO_TRUST_RECORD: &str = "none: require_trusted_images = false";

/// The image an action ran on, as provenance records it, and the trust
/// record it ran under (the JSON logged in the transparency log).
///
/// The digest is the image's SHA-256 REAPI tree digest from its import
/// record; the source manifest digest is the OCI manifest's, or for a
/// source without one (a rootfs directory or tarball) the tree digest
/// itself; the trust record digest is the SHA-256 of the record
/// ([`TrustRecord`], or one saying there is none) in canonical JSON
/// (sorted keys, no whitespace): the bytes of the `record` of its
/// `image_trust` entry in the transparency log.
pub fn image_record(info: &ImageInfo) -> Result<(ImageRecord, Value)> {
    let bad = || {
        Error::Internal(format!(
            "image {} holds a malformed SHA-256 digest {:?}",
            info.digest, info.record.digest_sha256
        ))
    };
    let (hash, size) = info
        .record
        .digest_sha256
        .strip_prefix("sha256:")
        .and_then(|r| r.split_once('/'))
        .ok_or_else(bad)?;
    let digest = ReapiDigest {
        hash: hash.to_owned(),
        size_bytes: size.parse().map_err(|_| bad())?,
    };
    let bytes = match &info.trust {
        Some(t) => t.trust_record_bytes(),
        None => serde_json::to_vec(&TrustRecord {
            version: 1,
            image: info.digest.to_string(),
            digest_sha256: info.record.digest_sha256.clone(),
            trusted: false,
            by: NO_TRUST_RECORD.into(),
            at: String::new(),
        })
        .expect("a trust record serializes"),
    };
    let trust: Value = serde_json::from_slice(&bytes).expect("a trust record is JSON");
    // The digest of the record in its canonical JSON (sorted keys), the
    // form the transparency log holds it in.
    let canonical = hermetic_attest::canonical::to_vec(&trust)
        .map_err(|e| Error::Internal(format!("the trust record does not serialize: {e}")))?;
    let record = ImageRecord {
        // The statement's URI is `hermetic-image:{name}`: the pinned form.
        name: format!("{}:{}", info.digest.algorithm.name(), info.digest.hex),
        source_manifest_digest: info
            .record
            .source_manifest_digest
            .clone()
            .unwrap_or_else(|| format!("sha256:{}", digest.hash)),
        trust_record_sha256: hex(&Sha256::digest(&canonical)),
        digest,
    };
    Ok((record, trust))
}

/// Facts about the daemon that go into every record.
#[derive(Debug, Clone, Copy)]
pub struct Builder<'a> {
    /// `runDetails.builder.id`.
    pub id: &'a str,
    /// The kernel release.
    pub kernel: &'a str,
    /// Whether to list every input file.
    pub record_inputs: bool,
}

/// Builds the record of an action that ran: `log` is its execution log
/// (stored as `log_key`), `result` its ActionResult with outputs ingested.
pub fn execution_record(
    store: &Store,
    p: &Prepared,
    log: &ExecutionLog,
    log_key: &BlobKey,
    result: &ActionResult,
    image: ImageRecord,
    builder: Builder<'_>,
) -> Result<ExecutionRecord> {
    let f = p.function;
    let wd = &p.command.working_directory;
    let stream = |d: &Option<bazel_remote_apis::build::bazel::remote::execution::v2::Digest>| {
        let key = BlobKey::from_opt(f, d.as_ref(), "stdout/stderr digest")?;
        sha256_of_blob(store, &key)
    };
    // The input root by SHA-256 (in-toto's algorithm) and by BLAKE3: the
    // latter is its CAS key when the action used BLAKE3, so that the inputs
    // can be found in the store again from the statement alone.
    let root = file_record(store, &p.input_root, "input root", false)?;
    let restrictions = serde_json::to_value(&log.restrictions)
        .map_err(|e| Error::Internal(format!("restrictions do not serialize: {e}")))?;
    Ok(ExecutionRecord {
        argv: p.command.arguments.clone(),
        env: log.env.iter().cloned().collect::<BTreeMap<_, _>>(),
        cwd: clean(wd),
        declared_outputs: p.outputs.iter().map(|o| o.path.clone()).collect(),
        input_root: ReapiDigest {
            hash: root.sha256,
            size_bytes: root.size,
        },
        input_root_blake3: Some(root.blake3),
        image,
        profile_name: log.profile.clone(),
        profile_digest: log.profile_digest.clone(),
        timeout: p.timeout,
        restrictions,
        hermeticd_version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: builder.kernel.to_owned(),
        builder_id: builder.id.to_owned(),
        invocation_id: log.operation.clone(),
        started_on: micros_to_timestamp(log.timestamps.execution_start),
        finished_on: micros_to_timestamp(log.timestamps.execution_completed),
        stdout: stream(&result.stdout_digest)?,
        stderr: stream(&result.stderr_digest)?,
        execution_log: sha256_of_blob(store, log_key)?,
        outputs: unique(output_files(store, f, wd, result)?),
        inputs: if builder.record_inputs {
            Some(unique(input_files(store, p)?))
        } else {
            None
        },
    })
}

/// Paths cleaned (no empty or `.` components: `./out//a` is `out/a`) and
/// each listed once: an output file inside a declared output directory is
/// the same file.
fn unique(files: Vec<FileRecord>) -> Vec<FileRecord> {
    let mut seen = std::collections::HashSet::new();
    files
        .into_iter()
        .map(|mut f| {
            f.path = clean(&f.path);
            f
        })
        .filter(|f| seen.insert(f.path.clone()))
        .collect()
}

/// `path` without empty or `.` components.
fn clean(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

fn micros_to_timestamp(us: u64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_micros(us))
}

/// The SHA-256 REAPI digest of a stored blob, read back.
fn sha256_of_blob(store: &Store, key: &BlobKey) -> Result<ReapiDigest> {
    let rec = file_record(store, key, "blob", false)?;
    Ok(ReapiDigest {
        hash: rec.sha256,
        size_bytes: rec.size,
    })
}

/// A file record of a stored blob at `path`.
fn file_record(store: &Store, key: &BlobKey, path: &str, executable: bool) -> Result<FileRecord> {
    if key.size == 0 {
        // The empty blob need not be stored.
        return Ok(FileRecord::of(path, b"", executable));
    }
    let file = store.open_blob(key)?;
    FileRecord::from_reader(path, std::io::BufReader::new(file), executable).map_err(|e| {
        Error::Internal(format!(
            "cannot read {key:?} back from the CAS for provenance: {e}"
        ))
    })
}

/// Every output file, directories expanded, by path relative to the input
/// root.
fn output_files(
    store: &Store,
    f: DigestFunction,
    wd: &str,
    result: &ActionResult,
) -> Result<Vec<FileRecord>> {
    let mut files = Vec::new();
    for o in &result.output_files {
        let key = BlobKey::from_opt(f, o.digest.as_ref(), "output file digest")?;
        files.push(file_record(
            store,
            &key,
            &under_workdir(wd, &o.path),
            o.is_executable,
        )?);
    }
    for d in &result.output_directories {
        let key = BlobKey::from_opt(f, d.tree_digest.as_ref(), "output tree digest")?;
        let tree = Tree::decode(store.read(&key)?.as_slice()).map_err(|source| Error::Corrupt {
            what: "output tree",
            key,
            source,
        })?;
        let children: HashMap<BlobKey, &Directory> = tree
            .children
            .iter()
            .map(|c| (f.compute(&c.encode_to_vec()), c))
            .collect();
        let root = tree.root.as_ref().ok_or_else(|| {
            Error::Internal(format!("output tree {key:?} of {:?} has no root", d.path))
        })?;
        walk(
            store,
            f,
            root,
            &under_workdir(wd, &d.path),
            &|k| children.get(k).copied().cloned(),
            &mut files,
        )?;
    }
    Ok(files)
}

/// Every input file, by path relative to the input root.
fn input_files(store: &Store, p: &Prepared) -> Result<Vec<FileRecord>> {
    let dirs: HashMap<BlobKey, &Directory> =
        p.tree.directories.iter().map(|(k, d)| (*k, d)).collect();
    let root = dirs
        .get(&p.input_root)
        .ok_or_else(|| Error::Internal("the input root is not among its walked tree".into()))?;
    let mut files = Vec::new();
    walk(
        store,
        p.function,
        root,
        "",
        &|k| dirs.get(k).map(|d| (*d).clone()),
        &mut files,
    )?;
    Ok(files)
}

/// Appends a record of every file under `dir` (at `prefix`).
fn walk(
    store: &Store,
    f: DigestFunction,
    dir: &Directory,
    prefix: &str,
    lookup: &dyn Fn(&BlobKey) -> Option<Directory>,
    out: &mut Vec<FileRecord>,
) -> Result<()> {
    let join = |name: &str| {
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}/{name}")
        }
    };
    for file in &dir.files {
        let key = BlobKey::from_opt(f, file.digest.as_ref(), "file digest")?;
        out.push(file_record(
            store,
            &key,
            &join(&file.name),
            file.is_executable,
        )?);
    }
    for sub in &dir.directories {
        let key = BlobKey::from_opt(f, sub.digest.as_ref(), "directory digest")?;
        let child = lookup(&key).ok_or_else(|| {
            Error::Internal(format!(
                "directory {:?} ({key:?}) is missing from its tree",
                join(&sub.name)
            ))
        })?;
        walk(store, f, &child, &join(&sub.name), lookup, out)?;
    }
    Ok(())
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_listed_once() {
        let files = vec![
            FileRecord::of("./out//a", b"a", false),
            FileRecord::of("out/a", b"a", false),
            FileRecord::of("out/b", b"b", true),
        ];
        let got: Vec<String> = unique(files).into_iter().map(|f| f.path).collect();
        assert_eq!(got, ["out/a", "out/b"]);
        assert_eq!(clean("."), "");
        assert_eq!(clean("src/./x/"), "src/x");
    }
}

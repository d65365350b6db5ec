//! The plain record of one execution that provenance and SBOMs are built
//! from. The daemon fills it in from the action, the helper's status and the
//! collected outputs; nothing here reads the filesystem.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha1::Sha1;
use sha2::{Digest as _, Sha256};

use crate::timestamp::Timestamp;

/// A REAPI digest: the SHA-256 of a blob (hex) and its size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReapiDigest {
    /// Lowercase hex SHA-256.
    pub hash: String,
    /// Size of the blob in bytes.
    pub size_bytes: u64,
}

impl ReapiDigest {
    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self {
            hash: hex(&Sha256::digest(data)),
            size_bytes: data.len() as u64,
        }
    }
}

/// One regular file (an input or an output), by its path relative to the
/// input root, with the digests every document needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileRecord {
    /// Path relative to the input root, `/`-separated, no `..`.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Lowercase hex BLAKE3-256.
    pub blake3: String,
    /// Lowercase hex SHA-1: only the SPDX document needs it (SPDX 2.3
    /// requires a SHA1 checksum on every file); `None` makes SPDX fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha1: Option<String>,
    /// Whether the executable bit is set.
    #[serde(default)]
    pub executable: bool,
}

impl FileRecord {
    /// A record of `data` at `path` with all three digests computed.
    pub fn of(path: impl Into<String>, data: &[u8], executable: bool) -> Self {
        Self {
            path: path.into(),
            size: data.len() as u64,
            sha256: hex(&Sha256::digest(data)),
            blake3: blake3::hash(data).to_hex().to_string(),
            sha1: Some(hex(&Sha1::digest(data))),
            executable,
        }
    }
}

impl FileRecord {
    /// A record of everything `reader` yields, digested in one streaming
    /// pass (for outputs too large to hold in memory).
    pub fn from_reader(
        path: impl Into<String>,
        mut reader: impl std::io::Read,
        executable: bool,
    ) -> std::io::Result<Self> {
        let (mut s256, mut s1, mut b3) = (Sha256::new(), Sha1::new(), blake3::Hasher::new());
        let mut buf = vec![0u8; 1 << 16];
        let mut size = 0u64;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            s256.update(&buf[..n]);
            s1.update(&buf[..n]);
            b3.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Self {
            path: path.into(),
            size,
            sha256: hex(&s256.finalize()),
            blake3: b3.finalize().to_hex().to_string(),
            sha1: Some(hex(&s1.finalize())),
            executable,
        })
    }
}

/// The base image an action ran on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageRecord {
    /// The name the image was imported under (e.g. `toolchain`).
    pub name: String,
    /// REAPI tree digest of the normalized rootfs.
    pub digest: ReapiDigest,
    /// Digest of the source manifest it was imported from (`sha256:<hex>`).
    pub source_manifest_digest: String,
    /// Lowercase hex SHA-256 of the canonical image trust record.
    pub trust_record_sha256: String,
}

/// Everything known about one execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionRecord {
    /// The command line, `argv[0]` first.
    pub argv: Vec<String>,
    /// The environment exactly as the action declared it.
    pub env: BTreeMap<String, String>,
    /// Working directory relative to the input root (`""` for the root).
    pub cwd: String,
    /// Output paths the action declared (REAPI `output_paths`).
    pub declared_outputs: Vec<String>,
    /// REAPI digest of the input root `Directory`.
    pub input_root: ReapiDigest,
    /// Lowercase hex BLAKE3-256 of the same `Directory` blob: its key in a
    /// BLAKE3 CAS, so that `hermetic reproduce` can find the inputs in the
    /// daemon's store whichever digest function the action used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_root_blake3: Option<String>,
    /// The base image.
    pub image: ImageRecord,
    /// Sandbox profile name (e.g. `strict`).
    pub profile_name: String,
    /// Digest of the compiled profile (`sha256:<hex>`).
    pub profile_digest: String,
    /// The wall-clock limit the action ran under.
    pub timeout: Duration,
    /// The restrictions in force, as the sandbox helper reported them.
    pub restrictions: Value,
    /// `hermeticd` version.
    pub hermeticd_version: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
    /// This host's configured builder identity (a URI).
    pub builder_id: String,
    /// The operation name; the provenance `invocationId`.
    pub invocation_id: String,
    /// When the step started.
    pub started_on: Timestamp,
    /// When the step finished.
    pub finished_on: Timestamp,
    /// REAPI digest of stdout.
    pub stdout: ReapiDigest,
    /// REAPI digest of stderr.
    pub stderr: ReapiDigest,
    /// REAPI digest of the execution log.
    pub execution_log: ReapiDigest,
    /// Every output file (directories expanded), sorted or not: documents
    /// sort them by path.
    pub outputs: Vec<FileRecord>,
    /// Every input file, when the daemon is configured to list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Vec<FileRecord>>,
}

/// Why a record cannot be attested.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// A digest field is not lowercase hex of the right length.
    #[error("{field} is not a {len}-digit lowercase hex digest: {value:?}")]
    BadDigest {
        /// Which field.
        field: String,
        /// Expected number of hex digits.
        len: usize,
        /// The offending value.
        value: String,
    },
    /// A path is absolute, empty or climbs out of the input root.
    #[error("{field} is not a clean relative path: {value:?}")]
    BadPath {
        /// Which field.
        field: String,
        /// The offending value.
        value: String,
    },
    /// The same path is listed twice.
    #[error("{field} lists {path:?} twice")]
    Duplicate {
        /// Which list.
        field: String,
        /// The repeated path.
        path: String,
    },
    /// A required text field is empty.
    #[error("{0} is empty")]
    Empty(&'static str),
}

impl ExecutionRecord {
    /// Checks digests, paths and required fields.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.argv.is_empty() {
            return Err(RecordError::Empty("argv"));
        }
        for (name, v) in [
            ("builder_id", &self.builder_id),
            ("invocation_id", &self.invocation_id),
            ("profile_name", &self.profile_name),
        ] {
            if v.is_empty() {
                return Err(RecordError::Empty(name));
            }
        }
        check_hex("input_root.hash", &self.input_root.hash, 64)?;
        if let Some(b3) = &self.input_root_blake3 {
            check_hex("input_root_blake3", b3, 64)?;
        }
        check_hex("image.digest.hash", &self.image.digest.hash, 64)?;
        check_hex(
            "image.trust_record_sha256",
            &self.image.trust_record_sha256,
            64,
        )?;
        check_prefixed(
            "image.source_manifest_digest",
            &self.image.source_manifest_digest,
        )?;
        check_prefixed("profile_digest", &self.profile_digest)?;
        for (f, d) in [
            ("stdout", &self.stdout),
            ("stderr", &self.stderr),
            ("execution_log", &self.execution_log),
        ] {
            check_hex(f, &d.hash, 64)?;
        }
        check_files("outputs", &self.outputs)?;
        if let Some(inputs) = &self.inputs {
            check_files("inputs", inputs)?;
        }
        Ok(())
    }
}

fn check_files(field: &str, files: &[FileRecord]) -> Result<(), RecordError> {
    let mut seen = std::collections::BTreeSet::new();
    for f in files {
        if !clean_relative(&f.path) {
            return Err(RecordError::BadPath {
                field: field.into(),
                value: f.path.clone(),
            });
        }
        if !seen.insert(f.path.as_str()) {
            return Err(RecordError::Duplicate {
                field: field.into(),
                path: f.path.clone(),
            });
        }
        check_hex(&format!("{field}[{}].sha256", f.path), &f.sha256, 64)?;
        check_hex(&format!("{field}[{}].blake3", f.path), &f.blake3, 64)?;
        if let Some(s) = &f.sha1 {
            check_hex(&format!("{field}[{}].sha1", f.path), s, 40)?;
        }
    }
    Ok(())
}

fn clean_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

pub(crate) fn is_hex(v: &str, len: usize) -> bool {
    v.len() == len && v.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn check_hex(field: &str, v: &str, len: usize) -> Result<(), RecordError> {
    if is_hex(v, len) {
        Ok(())
    } else {
        Err(RecordError::BadDigest {
            field: field.into(),
            len,
            value: v.into(),
        })
    }
}

fn check_prefixed(field: &str, v: &str) -> Result<(), RecordError> {
    match v.strip_prefix("sha256:") {
        Some(h) if is_hex(h, 64) => Ok(()),
        _ => Err(RecordError::BadDigest {
            field: field.into(),
            len: 64,
            value: v.into(),
        }),
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Decodes lowercase or uppercase hex.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete, valid record for tests across the crate.
    pub(crate) fn sample() -> ExecutionRecord {
        let z = "0".repeat(64);
        ExecutionRecord {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "cc -o out/hello hello.c".into(),
            ],
            env: BTreeMap::from([("PATH".into(), "/usr/bin:/bin".into())]),
            cwd: String::new(),
            declared_outputs: vec!["out/hello".into()],
            input_root: ReapiDigest::of(b"input root"),
            input_root_blake3: Some(blake3::hash(b"input root").to_hex().to_string()),
            image: ImageRecord {
                name: "toolchain".into(),
                digest: ReapiDigest::of(b"image"),
                source_manifest_digest: format!("sha256:{}", "1".repeat(64)),
                trust_record_sha256: "2".repeat(64),
            },
            profile_name: "strict".into(),
            profile_digest: format!("sha256:{}", "3".repeat(64)),
            timeout: Duration::from_secs(600),
            restrictions: serde_json::json!({"landlock": {"abi": 6, "status": "full"}, "seccomp": true}),
            hermeticd_version: "0.1.0".into(),
            kernel: "6.1.0-test".into(),
            builder_id: "https://hermetic.dev/builders/test-host".into(),
            invocation_id: "operations/0b1c".into(),
            started_on: Timestamp::from_unix(1_700_000_000),
            finished_on: Timestamp::from_unix(1_700_000_002),
            stdout: ReapiDigest::of(b""),
            stderr: ReapiDigest::of(b"warning\n"),
            execution_log: ReapiDigest {
                hash: z,
                size_bytes: 0,
            },
            outputs: vec![FileRecord::of("out/hello", b"\x7fELF hello", true)],
            inputs: Some(vec![FileRecord::of("hello.c", b"int main(){}\n", false)]),
        }
    }

    #[test]
    fn sample_is_valid() {
        sample().validate().unwrap();
    }

    #[test]
    fn rejects_bad_paths_and_digests() {
        let mut r = sample();
        r.outputs[0].path = "../x".into();
        assert!(matches!(r.validate(), Err(RecordError::BadPath { .. })));
        let mut r = sample();
        r.outputs[0].blake3 = "ABC".into();
        assert!(matches!(r.validate(), Err(RecordError::BadDigest { .. })));
        let mut r = sample();
        r.outputs.push(r.outputs[0].clone());
        assert!(matches!(r.validate(), Err(RecordError::Duplicate { .. })));
    }

    #[test]
    fn known_digests() {
        let f = FileRecord::of("a", b"abc", false);
        assert_eq!(
            f.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            f.sha1.as_deref(),
            Some("a9993e364706816aba3e25717850c26c9cd0d89d")
        );
        assert_eq!(
            f.blake3,
            "6437b3ac38465133ffb63b75273a8db548c558465d79db03fd359c6cd5bd9d85"
        );
    }
}

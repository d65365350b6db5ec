//! Shared fixtures: a realistic execution record.

use std::collections::BTreeMap;
use std::time::Duration;

use hermetic_attest::{ExecutionRecord, FileRecord, ImageRecord, ReapiDigest, Timestamp};

pub const ORIGIN: &str = "hermetic.test/log";

/// A record with the given output files (path, content).
pub fn record(outputs: &[(&str, &[u8])]) -> ExecutionRecord {
    ExecutionRecord {
        argv: vec![
            "/usr/bin/cc".into(),
            "-o".into(),
            "out/hello".into(),
            "hello.c".into(),
        ],
        env: BTreeMap::from([
            ("PATH".into(), "/usr/bin:/bin".into()),
            ("LC_ALL".into(), "C".into()),
        ]),
        cwd: "src".into(),
        declared_outputs: outputs.iter().map(|(p, _)| p.to_string()).collect(),
        input_root: ReapiDigest::of(b"input root directory"),
        input_root_blake3: None,
        image: ImageRecord {
            name: "toolchain".into(),
            digest: ReapiDigest::of(b"image tree"),
            source_manifest_digest: format!("sha256:{}", "ab".repeat(32)),
            trust_record_sha256: "cd".repeat(32),
        },
        profile_name: "strict".into(),
        profile_digest: format!("sha256:{}", "ef".repeat(32)),
        timeout: Duration::from_millis(90_500),
        restrictions: serde_json::json!({
            "namespaces": ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"],
            "landlock": {"abi": 6, "status": "fully_enforced"},
            "seccomp": {"mode": "filter", "denied": 61},
            "cgroup": {"memory_max": 2147483648u64, "pids_max": 1024},
        }),
        hermeticd_version: "0.1.0".into(),
        kernel: "6.1.0-28-amd64".into(),
        builder_id: "https://hermetic.dev/builders/ci-host-1".into(),
        invocation_id: "operations/3f2a9c".into(),
        started_on: Timestamp::parse("2026-05-01T12:00:00.25Z").unwrap(),
        finished_on: Timestamp::parse("2026-05-01T12:00:03Z").unwrap(),
        stdout: ReapiDigest::of(b""),
        stderr: ReapiDigest::of(b"hello.c: warning\n"),
        execution_log: ReapiDigest::of(b"{\"log\":1}"),
        outputs: outputs
            .iter()
            .map(|(p, d)| FileRecord::of(*p, d, false))
            .collect(),
        inputs: Some(vec![
            FileRecord::of("src/hello.c", b"int main(void){return 0;}\n", false),
            FileRecord::of("src/include/hello.h", b"#pragma once\n", false),
        ]),
    }
}

//! Third-party verification: tools we did not write check what we produce.
//!
//! Each test writes artifacts to a temp dir and runs a script of `tests/py/`
//! with the venv of `scripts/attest-venv` (`$HERMETIC_ATTEST_VENV`, default
//! `~/.cache/hermetic/attest-venv`):
//!
//! * securesystemslib verifies the DSSE envelope and computes our keyid;
//! * in-toto-attestation parses the Statement and Provenance v1 strictly;
//! * spdx-tools (pyspdxtools) validates the SPDX 2.3 document;
//! * cyclonedx-python-lib validates the CycloneDX against the 1.6 schema;
//! * pymerkle and an RFC 9162 transcription check inclusion and consistency
//!   proofs; `cryptography` checks the signed-note checkpoint.
//!
//! Without the venv a test prints a loud SKIP and passes, except under
//! `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use hermetic_attest::sbom::{self, DpkgDb, dpkg};
use hermetic_attest::{Attestor, Bundle, ExecutionRecord};
use serde_json::{Value, json};

use common::{ORIGIN, record};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The venv's python, or `None` after a loud SKIP (a failure under CI).
fn python(test: &str) -> Option<PathBuf> {
    let venv = std::env::var_os("HERMETIC_ATTEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            Path::new(&home).join(".cache/hermetic/attest-venv")
        });
    let py = venv.join("bin/python");
    if py.exists() {
        return Some(py);
    }
    let why = format!("no venv at {} (run scripts/attest-venv)", venv.display());
    assert!(
        !ci(),
        "{test}: {why}; CI=true: a missing venv fails instead of skipping"
    );
    let bar = "*".repeat(72);
    let msg = format!("\n{bar}\n*** SKIP: {test}: {why}\n{bar}\n");
    let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
    None
}

/// Runs `tests/py/<script>` with `args`; panics with its output on failure.
fn run(py: &Path, script: &str, args: &[&Path]) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(py)
        .arg(&path)
        .args(args)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{script} failed:\n{text}");
    text
}

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

/// A log with attestations by two keys, an image trust record and a
/// rotation; returns the attestor and the bundles.
fn history(dir: &Path) -> (Attestor, Vec<Bundle>) {
    let (mut a, _) = Attestor::open(&dir.join("state"), ORIGIN).unwrap();
    let mut bundles = Vec::new();
    for i in 0..5u8 {
        let name = format!("out/part{i}.o");
        bundles.push(a.attest(&record(&[(&name, &[i; 100])])).unwrap());
    }
    a.log_image_trust(&json!({"image": "toolchain", "digest": "sha256:00"}))
        .unwrap();
    a.rotate().unwrap();
    bundles.push(a.attest(&record(&[("out/app", b"app")])).unwrap());
    (a, bundles)
}

fn image_packages() -> DpkgDb {
    let status = include_str!("fixtures/dpkg-status");
    DpkgDb {
        distro: "debian".into(),
        packages: dpkg::parse_status(status),
    }
}

fn statement(b: &Bundle) -> Value {
    serde_json::from_slice(&b.dsse_envelope.payload_bytes().unwrap()).unwrap()
}

#[test]
fn securesystemslib_verifies_the_envelope_and_keyid() {
    let Some(py) = python("securesystemslib") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (a, bundles) = history(dir.path());
    // One envelope by the first key and one by the rotated-in key.
    for b in [&bundles[0], &bundles[5]] {
        let keyid = &b.dsse_envelope.signatures[0].keyid;
        let public = &a.keyring().get(keyid).unwrap().keyval.public;
        let env = write_json(
            dir.path(),
            "envelope.json",
            &serde_json::to_value(&b.dsse_envelope).unwrap(),
        );
        print!(
            "{}",
            run(
                &py,
                "check_dsse.py",
                &[&env, Path::new(public), Path::new(keyid)]
            )
        );
    }
}

#[test]
fn in_toto_attestation_parses_statement_and_provenance() {
    let Some(py) = python("in-toto-attestation") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (_a, bundles) = history(dir.path());
    let mut r = record(&[("out/hello", b"hello"), ("out/lib/a.so", b"a")]);
    r.inputs = None;
    for (i, st) in [
        statement(&bundles[0]),
        hermetic_attest::provenance::statement(&r).unwrap(),
    ]
    .iter()
    .enumerate()
    {
        let p = write_json(dir.path(), &format!("statement{i}.json"), st);
        print!("{}", run(&py, "check_statement.py", &[&p]));
    }
}

/// Records with the fixture's packages, with none, and with this host's
/// own dpkg status file (when it has one).
fn sboms() -> Vec<(ExecutionRecord, Option<DpkgDb>)> {
    let host = dpkg::read_rootfs(Path::new("/")).unwrap();
    let mut no_inputs = record(&[("out/x", b"x")]);
    no_inputs.inputs = None;
    vec![
        (
            record(&[("out/hello", b"hello"), ("out/hello.map", b"map")]),
            Some(image_packages()),
        ),
        (no_inputs, None),
        (record(&[("bin/tool", b"tool")]), host),
    ]
}

#[test]
fn pyspdxtools_validates_spdx() {
    let Some(py) = python("spdx-tools") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (i, (r, db)) in sboms().iter().enumerate() {
        let doc = sbom::spdx(r, db.as_ref()).unwrap();
        let p = write_json(dir.path(), &format!("sbom{i}.spdx.json"), &doc);
        print!("{}", run(&py, "check_spdx.py", &[&p]));
    }
}

#[test]
fn cyclonedx_python_lib_validates_cyclonedx() {
    let Some(py) = python("cyclonedx-python-lib") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Not the host's package list: the strict 1.6 schema takes ~20 ms per
    // component to check, and SPDX already covers a real status file.
    for (i, (r, db)) in sboms().iter().take(2).enumerate() {
        let doc = sbom::cyclonedx(r, db.as_ref()).unwrap();
        let p = write_json(dir.path(), &format!("sbom{i}.cdx.json"), &doc);
        print!("{}", run(&py, "check_cyclonedx.py", &[&p]));
    }
}

#[test]
fn pymerkle_checks_inclusion_and_consistency_proofs() {
    let Some(py) = python("pymerkle") else { return };
    let dir = tempfile::tempdir().unwrap();
    let (a, bundles) = history(dir.path());
    let log = a.log();
    let n = log.size();
    let hexs = |v: Vec<[u8; 32]>| v.iter().map(hex).collect::<Vec<_>>();
    let leaves: Vec<String> = (0..n).map(|i| hex(log.entry(i).unwrap())).collect();
    let mut proofs = Vec::new();
    let mut consistency = Vec::new();
    for size in 1..=n {
        for i in 0..size {
            proofs.push(json!({"index": i, "size": size, "path": hexs(log.inclusion_proof(i, size).unwrap())}));
        }
        for old in 0..=size {
            consistency.push(json!({
                "old": old, "new": size,
                "oldRoot": hex(log.root(old).unwrap()),
                "path": hexs(log.consistency_proof(old, size).unwrap()),
            }));
        }
    }
    let envelopes: Vec<Value> = bundles
        .iter()
        .map(|b| json!({"index": b.log_entry.log_index, "envelope": b.dsse_envelope}))
        .collect();
    let active = &a.keyring().active().unwrap().keyval.public;
    let doc = json!({
        "leaves": leaves, "checkpoint": a.checkpoint(), "publicKey": active, "origin": ORIGIN,
        "proofs": proofs, "consistency": consistency, "envelopes": envelopes,
    });
    let p = write_json(dir.path(), "log.json", &doc);
    print!("{}", run(&py, "check_log.py", &[&p]));
}

fn hex(b: impl AsRef<[u8]>) -> String {
    b.as_ref().iter().map(|x| format!("{x:02x}")).collect()
}

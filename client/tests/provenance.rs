//! The real `hermetic` binary against a real hermeticd and the real
//! sandbox: `run` writes the provenance bundle, SBOMs and keyring beside
//! the outputs; `verify` accepts them offline and refuses (exit 65, with
//! the reason) a tampered artifact, a tampered bundle and a revoked key; a
//! cache hit carries the original attestation; `keys export`, `admin keys
//! rotate|revoke`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::RwLock;

use common::{Daemon, daemon, scratch, text};

/// Tests that change the daemon's keys hold this for writing; the others
/// for reading, so a rotation never lands in the middle of their checks.
static KEYS: RwLock<()> = RwLock::new(());

const VERIFICATION: i32 = 65;

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)))
}

/// Runs `sh -c SCRIPT` with `outputs` on an input holding `seed`; returns
/// the out dir and the `--json` report.
fn run(d: &Daemon, name: &str, seed: &str, script: &str, outputs: &[&str]) -> (PathBuf, Output) {
    let work = d.dir.join(name);
    let input = work.join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(input.join("seed"), seed).unwrap();
    let out = work.join("out");
    let mut c = d.hermetic();
    c.args(["run", "--json", "--input"]).arg(&input);
    for o in outputs {
        c.args(["--output", o]);
    }
    let o = c
        .arg("--out-dir")
        .arg(&out)
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    (out, o)
}

fn verify(d: &Daemon, args: &[&Path]) -> Output {
    d.hermetic().arg("verify").args(args).output().unwrap()
}

fn export_keyring(d: &Daemon, to: &Path) {
    let o = d
        .hermetic()
        .args(["keys", "export", "-o"])
        .arg(to)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

fn bundle(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join(".hermetic/provenance.json")).unwrap()).unwrap()
}

fn signer(b: &serde_json::Value) -> String {
    b["dsseEnvelope"]["signatures"][0]["keyid"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn run_writes_provenance_that_verifies_offline() {
    let Some(d) = daemon() else { return };
    let _keys = KEYS.read().unwrap();
    let (out, o) = run(
        d,
        "prov-verify",
        "verify",
        "mkdir -p out/d && cp seed out/a && echo b > out/d/b",
        &["out/a", "out/d"],
    );
    let report = json(&o);
    let meta = out.join(".hermetic");
    for f in [
        "provenance.json",
        "sbom.cdx.json",
        "sbom.spdx.json",
        "keyring.json",
    ] {
        assert!(meta.join(f).is_file(), "{f} missing: {report}");
    }
    assert_eq!(
        report["attestation"]["provenance"],
        meta.join("provenance.json").display().to_string()
    );
    let cdx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta.join("sbom.cdx.json")).unwrap()).unwrap();
    assert_eq!(cdx["specVersion"], "1.6");
    let spdx: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta.join("sbom.spdx.json")).unwrap()).unwrap();
    assert_eq!(spdx["spdxVersion"], "SPDX-2.3");

    // The keyring exported from the daemon, and the one that came along.
    let ring = d.dir.join("prov-verify/exported-keyring.json");
    export_keyring(d, &ring);
    let (a, b) = (out.join("out/a"), out.join("out/d/b"));
    let o = verify(d, &[Path::new("--keyring"), &ring, &a, &b]);
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("subject out/a"), "{stdout}");
    assert!(stdout.contains("subject out/d/b"), "{stdout}");
    let o = verify(d, &[&a]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // --json names the key and log position.
    let o = d
        .hermetic()
        .args(["--json", "verify", "--provenance"])
        .arg(meta.join("provenance.json"))
        .arg(&a)
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["keyid"].as_str().unwrap(), signer(&bundle(&out)));
    // The statement names the run's operation.
    let b = bundle(&out);
    let payload = base64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap());
    let st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        st["predicate"]["runDetails"]["metadata"]["invocationId"],
        report["operation"]
    );
}

#[test]
fn tampering_is_refused_with_the_reason() {
    let Some(d) = daemon() else { return };
    let _keys = KEYS.read().unwrap();
    let (out, _) = run(d, "prov-tamper", "tamper", "cp seed a", &["a"]);
    let dir = d.dir.join("prov-tamper");
    let bundle_path = out.join(".hermetic/provenance.json");

    // An artifact that is not the one built.
    let forged = dir.join("a");
    std::fs::write(&forged, "tamper!").unwrap();
    let o = verify(d, &[Path::new("--bundle"), &bundle_path, &forged]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(VERIFICATION), "{stderr}");
    assert!(stderr.contains("matches no subject"), "{stderr}");

    // A statement edited after signing.
    let mut b = bundle(&out);
    let payload = base64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap());
    let edited = String::from_utf8(payload)
        .unwrap()
        .replace("\"seed\"", "\"SEED\"")
        .replacen("cp seed a", "cp evil a", 1);
    b["dsseEnvelope"]["payload"] = base64_encode(edited.as_bytes()).into();
    let edited_bundle = dir.join("edited.json");
    std::fs::write(&edited_bundle, serde_json::to_vec(&b).unwrap()).unwrap();
    let ring = out.join(".hermetic/keyring.json");
    let o = verify(
        d,
        &[
            Path::new("--bundle"),
            &edited_bundle,
            Path::new("--keyring"),
            &ring,
            &out.join("a"),
        ],
    );
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(VERIFICATION), "{stderr}");
    assert!(stderr.contains("signature does not verify"), "{stderr}");

    // A keyring that does not hold the signer.
    let mut other: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ring).unwrap()).unwrap();
    other["keys"] = serde_json::json!([]);
    let empty_ring = dir.join("empty-keyring.json");
    std::fs::write(&empty_ring, serde_json::to_vec(&other).unwrap()).unwrap();
    let o = verify(
        d,
        &[
            Path::new("--bundle"),
            &bundle_path,
            Path::new("--keyring"),
            &empty_ring,
            &out.join("a"),
        ],
    );
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(VERIFICATION), "{stderr}");
    assert!(stderr.contains("no key in the keyring"), "{stderr}");

    // No bundle at all.
    let lonely = scratch(d, "prov-lonely").join("x");
    std::fs::write(&lonely, "x").unwrap();
    let o = verify(d, &[&lonely]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(VERIFICATION), "{stderr}");
    assert!(stderr.contains("--bundle"), "{stderr}");
}

#[test]
fn a_cache_hit_carries_the_original_attestation() {
    let Some(d) = daemon() else { return };
    let _keys = KEYS.read().unwrap();
    let script = "cp seed cached";
    let (out1, o1) = run(d, "prov-cache-1", "cache-hit", script, &["cached"]);
    let (out2, o2) = run(d, "prov-cache-2", "cache-hit", script, &["cached"]);
    assert_eq!(json(&o1)["cache_hit"], false);
    assert_eq!(json(&o2)["cache_hit"], true);
    let (b1, b2) = (bundle(&out1), bundle(&out2));
    assert_eq!(b1["dsseEnvelope"], b2["dsseEnvelope"]);
    assert_eq!(b1["logEntry"]["logIndex"], b2["logEntry"]["logIndex"]);
    let o = verify(d, &[&out2.join("cached")]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn rotation_keeps_old_bundles_valid_and_revocation_refuses_what_the_key_vouched_for() {
    let Some(d) = daemon() else { return };
    let _keys = KEYS.write().unwrap();
    let dir = scratch(d, "prov-keys");
    let ring = dir.join("keyring.json");
    let (old_out, _) = run(d, "prov-keys-old", "rotate-old", "cp seed o", &["o"]);
    let old_key = signer(&bundle(&old_out));
    let old_artifact = old_out.join("o");

    let o = d
        .hermetic()
        .args(["admin", "keys", "rotate"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("new signing key"), "{stderr}");
    export_keyring(d, &ring);
    let keyring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&ring).unwrap()).unwrap();
    let status = |id: &str| {
        keyring["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["keyid"] == id)
            .map(|k| k["status"].clone())
    };
    assert_eq!(status(&old_key), Some("retired".into()), "{keyring}");
    // What the old key signed still verifies with the rotated keyring.
    let o = verify(d, &[Path::new("--keyring"), &ring, &old_artifact]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // New actions are signed with the new key.
    let (new_out, _) = run(d, "prov-keys-new", "rotate-new", "cp seed n", &["n"]);
    let new_key = signer(&bundle(&new_out));
    assert_ne!(new_key, old_key);
    let o = verify(d, &[Path::new("--keyring"), &ring, &new_out.join("n")]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));

    // Revoking the old key: the bundle whose checkpoint it signed is refused.
    let o = d
        .hermetic()
        .args(["admin", "keys", "revoke", &old_key])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    export_keyring(d, &ring);
    let o = verify(d, &[Path::new("--keyring"), &ring, &old_artifact]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(VERIFICATION), "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    // Asking again (a cache hit) gives the same attestation, proven
    // against a checkpoint of a valid key: it verifies.
    let (again, o) = run(d, "prov-keys-again", "rotate-old", "cp seed o", &["o"]);
    assert_eq!(json(&o)["cache_hit"], true);
    assert_eq!(signer(&bundle(&again)), old_key);
    let o = verify(d, &[Path::new("--keyring"), &ring, &again.join("o")]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    // Revoking twice is refused with the reason.
    let o = d
        .hermetic()
        .args(["admin", "keys", "revoke", &old_key])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("revoked"), "{stderr}");
    let o = d
        .hermetic()
        .args(["admin", "keys", "revoke", "00ff"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_ne!(o.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("NotFound"), "{stderr}");
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

/// The venv of `scripts/attest-venv` (`$HERMETIC_ATTEST_VENV`, default
/// `~/.cache/hermetic/attest-venv`): its python, or `None` after a loud
/// SKIP (a failure under CI=true).
fn attest_python() -> Option<PathBuf> {
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
    common::skip_or_fail(&format!(
        "no third-party verifier venv at {} (run scripts/attest-venv)",
        venv.display()
    ));
    None
}

/// Runs one of the attest crate's third-party checks (`attest/tests/py`).
fn third_party(py: &Path, script: &str, args: &[&Path]) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../attest/tests/py")
        .join(script);
    let o = std::process::Command::new(py)
        .arg(path)
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{script}: {:?}", text(&o));
}

#[test]
fn third_party_verifiers_accept_what_a_run_wrote() {
    let Some(d) = daemon() else { return };
    let Some(py) = attest_python() else { return };
    let _keys = KEYS.read().unwrap();
    let (out, _) = run(
        d,
        "prov-third-party",
        "third party",
        "mkdir -p o && cp seed o/f && echo g > o/g",
        &["o"],
    );
    let meta = out.join(".hermetic");
    let dir = d.dir.join("prov-third-party");
    let b = bundle(&out);
    let keyid = signer(&b);
    let keyring: serde_json::Value =
        serde_json::from_slice(&std::fs::read(meta.join("keyring.json")).unwrap()).unwrap();
    let public = keyring["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyid"] == keyid.as_str())
        .map(|k| k["keyval"]["public"].as_str().unwrap().to_owned())
        .unwrap();
    // securesystemslib: the envelope's signature and our keyid.
    let envelope = dir.join("envelope.json");
    std::fs::write(&envelope, serde_json::to_vec(&b["dsseEnvelope"]).unwrap()).unwrap();
    third_party(
        &py,
        "check_dsse.py",
        &[&envelope, Path::new(&public), Path::new(&keyid)],
    );
    // in-toto-attestation: the Statement and SLSA Provenance v1, strictly.
    let statement = dir.join("statement.json");
    std::fs::write(
        &statement,
        base64_decode(b["dsseEnvelope"]["payload"].as_str().unwrap()),
    )
    .unwrap();
    third_party(&py, "check_statement.py", &[&statement]);
    // pyspdxtools and cyclonedx-python-lib: the SBOMs.
    third_party(&py, "check_spdx.py", &[&meta.join("sbom.spdx.json")]);
    third_party(&py, "check_cyclonedx.py", &[&meta.join("sbom.cdx.json")]);
}

//! `hermetic reproduce` against a real hermeticd: a deterministic build
//! rebuilt from its attestation and inputs says yes; a build that embeds
//! randomness says no and names the file; an input directory that is not
//! the attested one is refused before anything runs. Without `--input` the
//! same from the inputs in the store: yes, no naming the file, and a store
//! lacking the inputs (a second daemon; a local store missing one file's
//! blob) refused with the missing digests named.

mod common;

use std::path::Path;
use std::process::Output;

use common::{daemon, scratch, text};

fn build(d: &common::Daemon, work: &Path, script: &str) -> std::process::Output {
    d.hermetic()
        .args(["run", "--input"])
        .arg(work.join("in"))
        .args(["--output", "out.txt", "--env", "GREETING=hi"])
        .arg("--out-dir")
        .arg(work.join("first"))
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap()
}

fn reproduce(d: &common::Daemon, work: &Path, input: &Path) -> std::process::Output {
    let meta = work.join("first/.hermetic");
    d.hermetic()
        .arg("reproduce")
        .arg(meta.join("provenance.json"))
        .arg("--input")
        .arg(input)
        .arg("--keyring")
        .arg(meta.join("keyring.json"))
        .arg("--out-dir")
        .arg(work.join("again"))
        .output()
        .unwrap()
}

#[test]
fn a_deterministic_build_is_reproduced_from_its_attestation() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-yes");
    std::fs::create_dir_all(work.join("in")).unwrap();
    std::fs::write(work.join("in/src.txt"), "source\n").unwrap();
    let script = "cat src.txt > out.txt; echo $GREETING >> out.txt";
    let b = build(d, &work, script);
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    let r = reproduce(d, &work, &work.join("in"));
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reproduced     yes"), "{stderr}");
    // A fresh execution, not the cached result served again.
    assert!(stderr.contains("cache          miss"), "{stderr}");
    assert_eq!(
        std::fs::read(work.join("again/out.txt")).unwrap(),
        b"source\nhi\n"
    );
    // With --json: one document holding the rebuild's report and the verdict.
    let meta = work.join("first/.hermetic");
    let j = d
        .hermetic()
        .args(["--json", "reproduce"])
        .arg(meta.join("provenance.json"))
        .arg("--input")
        .arg(work.join("in"))
        .arg("--out-dir")
        .arg(work.join("again-json"))
        .output()
        .unwrap();
    assert_eq!(j.status.code(), Some(0), "{:?}", text(&j));
    let v: serde_json::Value = serde_json::from_slice(&j.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {:?}", text(&j)));
    assert_eq!(v["verdict"]["reproduced"], true, "{v}");
    assert_eq!(v["verdict"]["mismatches"], serde_json::json!([]), "{v}");
    assert_eq!(v["rebuild"]["cache_hit"], false, "{v}");
}

#[test]
fn a_build_with_randomness_is_not_reproduced_and_the_file_is_named() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-no");
    std::fs::create_dir_all(work.join("in")).unwrap();
    let b = build(d, &work, "cat /proc/sys/kernel/random/uuid > out.txt");
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    let r = reproduce(d, &work, &work.join("in"));
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(66), "{stderr}");
    assert!(stderr.contains("differs      out.txt"), "{stderr}");
}

#[test]
fn other_inputs_are_refused_before_anything_runs() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-wrong-input");
    std::fs::create_dir_all(work.join("in")).unwrap();
    std::fs::write(work.join("in/src.txt"), "source\n").unwrap();
    let b = build(d, &work, "cat src.txt > out.txt");
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    std::fs::create_dir_all(work.join("other")).unwrap();
    std::fs::write(work.join("other/src.txt"), "tampered\n").unwrap();
    let r = reproduce(d, &work, &work.join("other"));
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("is not the attested input root"),
        "{stderr}"
    );
    assert!(!work.join("again").exists(), "something ran");
}

/// `hermetic reproduce` of `work/first`'s provenance without `--input`:
/// the inputs come from the store.
fn reproduce_stored(d: &common::Daemon, work: &Path, out: &str, extra: &[&str]) -> Output {
    let meta = work.join("first/.hermetic");
    d.hermetic()
        .arg("reproduce")
        .arg(meta.join("provenance.json"))
        .arg("--keyring")
        .arg(meta.join("keyring.json"))
        .arg("--out-dir")
        .arg(work.join(out))
        .args(extra)
        .output()
        .unwrap()
}

/// The statement of `work/first`'s provenance.
fn statement(work: &Path) -> serde_json::Value {
    let bundle = hermetic_attest::Bundle::from_json(
        &std::fs::read(work.join("first/.hermetic/provenance.json")).unwrap(),
    )
    .unwrap();
    serde_json::from_slice(&bundle.dsse_envelope.payload_bytes().unwrap()).unwrap()
}

/// The attested input root as `blake3:HEX/SIZE`, its CAS key under BLAKE3.
fn blake3_root(work: &Path) -> String {
    let s = statement(work);
    let build = &s["predicate"]["buildDefinition"];
    let root = build["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "input-root")
        .unwrap();
    format!(
        "blake3:{}/{}",
        root["digest"]["blake3"]
            .as_str()
            .expect("the input root's BLAKE3"),
        build["externalParameters"]["inputRootDigest"]["sizeBytes"]
    )
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}): {:?}", text(o)))
}

fn nested_input(work: &Path) {
    std::fs::create_dir_all(work.join("in/sub")).unwrap();
    std::fs::write(work.join("in/src.txt"), "stored source\n").unwrap();
    std::fs::write(work.join("in/sub/more.txt"), "more, below\n").unwrap();
}

#[test]
fn a_deterministic_build_is_reproduced_from_the_daemons_store() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-stored-yes");
    nested_input(&work);
    let script = "cat src.txt sub/more.txt > out.txt; echo $GREETING >> out.txt";
    let b = build(d, &work, script);
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    // The input directory is gone: only the store has the inputs now.
    std::fs::remove_dir_all(work.join("in")).unwrap();
    let r = reproduce_stored(d, &work, "again", &[]);
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reproduced     yes"), "{stderr}");
    assert!(stderr.contains("cache          miss"), "{stderr}");
    assert_eq!(
        std::fs::read(work.join("again/out.txt")).unwrap(),
        b"stored source\nmore, below\nhi\n"
    );
    // The rebuild ran on the attested input root itself.
    let again = hermetic_attest::Bundle::from_json(
        &std::fs::read(work.join("again/.hermetic/provenance.json")).unwrap(),
    )
    .unwrap();
    let again: serde_json::Value =
        serde_json::from_slice(&again.dsse_envelope.payload_bytes().unwrap()).unwrap();
    let root = |s: &serde_json::Value| {
        s["predicate"]["buildDefinition"]["externalParameters"]["inputRootDigest"].clone()
    };
    assert_eq!(root(&again), root(&statement(&work)));
    // With --json: one document, a fresh execution, the verdict.
    let j = reproduce_stored(d, &work, "again-json", &["--json"]);
    assert_eq!(j.status.code(), Some(0), "{:?}", text(&j));
    let v = json(&j);
    assert_eq!(v["verdict"]["reproduced"], true, "{v}");
    assert_eq!(v["verdict"]["mismatches"], serde_json::json!([]), "{v}");
    assert_eq!(v["rebuild"]["cache_hit"], false, "{v}");
}

#[test]
fn a_sha256_build_is_found_in_the_store_under_sha256() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-stored-sha256");
    nested_input(&work);
    let b = d
        .hermetic()
        .args(["run", "--digest-function", "sha256", "--input"])
        .arg(work.join("in"))
        .args(["--output", "out.txt"])
        .arg("--out-dir")
        .arg(work.join("first"))
        .args(["--", "sh", "-c", "cat sub/more.txt src.txt > out.txt"])
        .output()
        .unwrap();
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    let j = reproduce_stored(d, &work, "again", &["--json"]);
    assert_eq!(j.status.code(), Some(0), "{:?}", text(&j));
    let v = json(&j);
    assert_eq!(v["verdict"]["reproduced"], true, "{v}");
    // The input root's key is its SHA-256: the rebuild ran under SHA-256.
    assert!(
        v["rebuild"]["action_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{v}"
    );
}

#[test]
fn randomness_is_not_reproduced_from_the_daemons_store_and_the_file_is_named() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-stored-no");
    nested_input(&work);
    let b = build(
        d,
        &work,
        "cat src.txt > out.txt; cat /proc/sys/kernel/random/uuid >> out.txt",
    );
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    let r = reproduce_stored(d, &work, "again", &[]);
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(66), "{stderr}");
    assert!(stderr.contains("reproduced     NO"), "{stderr}");
    assert!(stderr.contains("differs      out.txt"), "{stderr}");
    let j = reproduce_stored(d, &work, "again-json", &["--json"]);
    assert_eq!(j.status.code(), Some(66), "{:?}", text(&j));
    let v = json(&j);
    assert_eq!(v["verdict"]["reproduced"], false, "{v}");
    assert_eq!(v["verdict"]["mismatches"][0]["kind"], "differs", "{v}");
    assert_eq!(v["verdict"]["mismatches"][0]["name"], "out.txt", "{v}");
}

#[test]
fn a_store_without_the_inputs_is_refused_naming_the_missing_digest() {
    let Some(a) = daemon() else { return };
    let work = scratch(a, "reproduce-stored-elsewhere");
    nested_input(&work);
    let b = build(a, &work, "cat src.txt > out.txt");
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    // Daemon B never saw these inputs.
    let Some(other) = common::another_daemon() else {
        return;
    };
    let root = blake3_root(&work);
    let r = reproduce_stored(&other, &work, "again", &[]);
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(&root), "{root} not named: {stderr}");
    assert!(stderr.contains("--input DIR"), "{stderr}");
    assert!(!work.join("again").exists(), "something ran");
    let j = reproduce_stored(&other, &work, "again", &["--json"]);
    assert_eq!(j.status.code(), Some(64), "{:?}", text(&j));
    let v = json(&j);
    assert_eq!(v["hermetic_exit_code"], 64, "{v}");
    assert!(v["error"].as_str().unwrap().contains(&root), "{v}");
    // With the inputs given, daemon B rebuilds the same bytes.
    let meta = work.join("first/.hermetic");
    let given = other
        .hermetic()
        .arg("reproduce")
        .arg(meta.join("provenance.json"))
        .arg("--input")
        .arg(work.join("in"))
        .arg("--out-dir")
        .arg(work.join("again-given"))
        .output()
        .unwrap();
    assert_eq!(given.status.code(), Some(0), "{:?}", text(&given));
}

#[test]
fn a_provenance_without_its_input_root_digest_is_refused_naming_the_field() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-stored-no-root");
    nested_input(&work);
    let b = build(d, &work, "cat src.txt > out.txt");
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    // The statement without its input root digest, in an (unsigned)
    // envelope: read unverified, as without --keyring.
    let mut s = statement(&work);
    s["predicate"]["buildDefinition"]["externalParameters"]
        .as_object_mut()
        .unwrap()
        .remove("inputRootDigest");
    let mut bundle: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("first/.hermetic/provenance.json")).unwrap(),
    )
    .unwrap();
    use base64::Engine as _;
    bundle["dsseEnvelope"]["payload"] = base64::engine::general_purpose::STANDARD
        .encode(serde_json::to_vec(&s).unwrap())
        .into();
    let edited = work.join("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&bundle).unwrap()).unwrap();
    let r = d
        .hermetic()
        .arg("reproduce")
        .arg(&edited)
        .arg("--out-dir")
        .arg(work.join("again"))
        .output()
        .unwrap();
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(64), "{stderr}");
    assert!(
        stderr.contains("externalParameters.inputRootDigest.hash"),
        "{stderr}"
    );
    assert!(!work.join("again").exists(), "something ran");
}

#[test]
fn a_local_store_missing_one_input_blob_is_refused_naming_it() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "reproduce-stored-local");
    nested_input(&work);
    let gone = b"a blob the local store will lose (reproduce-stored-local)\n";
    std::fs::write(work.join("in/sub/gone.txt"), gone).unwrap();
    let b = d
        .hermetic()
        .args(["run", "--local", "--input"])
        .arg(work.join("in"))
        .args(["--output", "out.txt"])
        .arg("--out-dir")
        .arg(work.join("first"))
        .args(["--", "sh", "-c", "cat src.txt sub/*.txt > out.txt"])
        .output()
        .unwrap();
    assert_eq!(b.status.code(), Some(0), "{:?}", text(&b));
    let r = reproduce_stored(d, &work, "again", &["--local"]);
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reproduced     yes"), "{stderr}");
    // The local store loses one input file's blob.
    let (b3, _) = common::digests(gone);
    let hash = b3
        .strip_prefix("blake3:")
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let blob = d
        .dir
        .join("local-state/cas/blake3")
        .join(&hash[..2])
        .join(hash);
    std::fs::remove_file(&blob).unwrap_or_else(|e| panic!("{}: {e}", blob.display()));
    let r = reproduce_stored(d, &work, "again-lost", &["--local"]);
    let (_, stderr) = text(&r);
    assert_eq!(r.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains(&b3), "{b3} not named: {stderr}");
    assert!(stderr.contains("lacks 1 of the"), "{stderr}");
    assert!(stderr.contains("--input DIR"), "{stderr}");
}

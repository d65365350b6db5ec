//! `hermetic reproduce` against a real hermeticd: a deterministic build
//! rebuilt from its attestation and inputs says yes; a build that embeds
//! randomness says no and names the file; an input directory that is not
//! the attested one is refused before anything runs.

mod common;

use std::path::Path;

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

//! `hermetic run --check-repro` against a real hermeticd and the real
//! sandbox: a step that writes its pid is caught (exit 66, the file named,
//! bisection blaming the pid offset, the result not cached); one that reads
//! its inputs in readdir order is caught by the staging order; a
//! deterministic step passes and its result is cached; the corpus'
//! multi-file C build passes every variation in the toolchain image; bad
//! requests are refused as invalid jobs.

mod common;

use std::path::Path;

use common::{daemon, scratch, text};

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)))
}

/// Twenty input files, so that two creation orders almost surely differ.
fn input(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..20 {
        std::fs::write(dir.join(format!("f{i:02}")), format!("{i}\n")).unwrap();
    }
}

fn check(
    d: &common::Daemon,
    work: &Path,
    extra: &[&str],
    outputs: &[&str],
    script: &str,
) -> std::process::Output {
    let mut cmd = d.hermetic();
    cmd.args(["--json", "run", "--input"]).arg(work.join("in"));
    for o in outputs {
        cmd.args(["--output", o]);
    }
    cmd.args(extra)
        .arg("--out-dir")
        .arg(work.join("out"))
        .args(["--", "sh", "-c", script]);
    cmd.output().unwrap()
}

#[test]
fn a_pid_in_the_output_is_found_named_and_blamed_and_not_cached() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "repro-pid");
    input(&work.join("in"));
    let script = "echo $$ > pid; cat f00 > same";
    let o = check(
        d,
        &work,
        &["--check-repro=2", "--bisect"],
        &["pid", "same"],
        script,
    );
    assert_eq!(o.status.code(), Some(66), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(v["outcome"], "not_reproducible", "{v}");
    assert_eq!(v["repro"]["reproducible"], false, "{v}");
    assert_eq!(
        v["repro"]["differing_paths"],
        serde_json::json!(["pid"]),
        "{v}"
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("out/.hermetic/repro-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["verdict"], "not_reproducible", "{report}");
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);
    assert_eq!(
        report["bisection"]["responsible"],
        serde_json::json!(["pids"]),
        "{report}"
    );
    let text_report = std::fs::read_to_string(work.join("out/.hermetic/repro-report.txt")).unwrap();
    assert!(text_report.contains("pid"), "{text_report}");
    // Not cached: the same check runs again (no cache hit) and fails again.
    let again = check(
        d,
        &work,
        &["--check-repro=2", "--bisect"],
        &["pid", "same"],
        script,
    );
    assert_eq!(again.status.code(), Some(66), "{:?}", text(&again));
    assert_eq!(json(&again)["cache_hit"], false);
}

#[test]
fn readdir_order_is_varied_through_the_staged_inputs() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "repro-readdir");
    input(&work.join("in"));
    // `find`: directory order, unsorted.
    let o = check(
        d,
        &work,
        &["--check-repro=3"],
        &["listing"],
        "find . -type f > listing",
    );
    assert_eq!(o.status.code(), Some(66), "{:?}", text(&o));
    let v = json(&o);
    assert_eq!(
        v["repro"]["differing_paths"],
        serde_json::json!(["listing"]),
        "{v}"
    );
}

#[test]
fn a_deterministic_step_passes_and_is_cached() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "repro-pass");
    input(&work.join("in"));
    // (`ls | sort > listing` would race: the pipeline creates `listing`
    // while `ls` reads the directory; with one CPU the check catches that.)
    let script = "ls > /tmp/l; sort /tmp/l > listing; cat f* > all; echo \"$A $B $C\" > env";
    let args = [
        "--check-repro=3",
        "--env",
        "A=1",
        "--env",
        "B=2",
        "--env",
        "C=3",
    ];
    let o = check(d, &work, &args, &["listing", "all", "env"], script);
    let report_text =
        std::fs::read_to_string(work.join("out/.hermetic/repro-report.txt")).unwrap_or_default();
    assert_eq!(o.status.code(), Some(0), "{:?}\n{report_text}", text(&o));
    let v = json(&o);
    assert_eq!(v["outcome"], "completed", "{v}");
    assert_eq!(v["repro"]["reproducible"], true, "{v}");
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("out/.hermetic/repro-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["verdict"], "reproducible");
    // The report is signed and logged: it verifies against the daemon's
    // keyring as a reproducibility attestation over the baseline outputs.
    let meta = work.join("out/.hermetic");
    let bundle = hermetic_attest::Bundle::from_json(
        &std::fs::read(meta.join("repro-attestation.json")).unwrap(),
    )
    .unwrap();
    let keyring =
        hermetic_attest::Keyring::from_json(&std::fs::read(meta.join("keyring.json")).unwrap())
            .unwrap();
    let verified = hermetic_attest::verify::verify_bundle_of(
        &bundle,
        &keyring,
        hermetic_repro::PREDICATE_TYPE,
    )
    .unwrap();
    assert_eq!(verified.statement["predicate"]["verdict"], "reproducible");
    let names: Vec<&str> = verified.statement["subject"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["all", "env", "listing"]);
    // What is fixed on purpose is listed as fixed.
    let fixed: Vec<&str> = report["fixed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    for name in [
        "hostname",
        "user",
        "build_path",
        "locale",
        "tz",
        "source_date_epoch",
    ] {
        assert!(fixed.contains(&name), "{name} not in {fixed:?}");
    }
    // Runs 1 and 2 varied every aspect.
    let varied = &report["runs"][1]["varied"];
    for aspect in ["start_time", "pids", "staging_order", "env_order"] {
        assert!(
            varied.as_array().unwrap().iter().any(|a| a == aspect),
            "{aspect} not varied: {varied}"
        );
    }
    // A reproducible result is cached.
    let hit = check(d, &work, &args, &["listing", "all", "env"], script);
    assert_eq!(hit.status.code(), Some(0), "{:?}", text(&hit));
    let v = json(&hit);
    assert_eq!(v["cache_hit"], true, "{v}");
    assert!(v["repro"]["reproducible"].is_null(), "{v}");
}

#[test]
fn bad_check_requests_are_invalid_jobs() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "repro-bad");
    input(&work.join("in"));
    for extra in [
        &["--check-repro=1"][..],
        &["--check-repro=9"],
        &["--bisect"],
    ] {
        let o = check(d, &work, extra, &[], "true");
        assert_eq!(o.status.code(), Some(64), "{extra:?}: {:?}", text(&o));
    }
}

#[test]
fn the_multifile_c_build_passes_every_variation_in_the_toolchain_image() {
    let Some(d) = daemon() else { return };
    if common::toolchain_image(d).is_none() {
        return;
    }
    let work = scratch(d, "repro-c-toolchain");
    let inputs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../repro/corpus/c_multifile/inputs");
    let outputs = ["prog", "main.o", "add.o", "mul.o", "result.txt"];
    let mut cmd = d.hermetic();
    cmd.args([
        "--json",
        "run",
        "--image",
        "toolchain",
        "--check-repro=3",
        "--input",
    ])
    .arg(&inputs)
    .arg("--out-dir")
    .arg(work.join("out"));
    for o in outputs {
        cmd.args(["--output", o]);
    }
    let start = std::time::Instant::now();
    let o = cmd.args(["--", "make", "-j2"]).output().unwrap();
    eprintln!("checked in {:.1?}", start.elapsed());
    let report_text =
        std::fs::read_to_string(work.join("out/.hermetic/repro-report.txt")).unwrap_or_default();
    assert_eq!(o.status.code(), Some(0), "{:?}\n{report_text}", text(&o));
    let v = json(&o);
    assert_eq!(v["outcome"], "completed", "{v}");
    assert_eq!(v["repro"]["reproducible"], true, "{v}\n{report_text}");
    assert_eq!(v["repro"]["differing_paths"], serde_json::json!([]), "{v}");
    // The program was built by the image's gcc and ran.
    assert_eq!(
        std::fs::read_to_string(work.join("out/result.txt")).unwrap(),
        "5 20\n"
    );
    let report: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("out/.hermetic/repro-report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(report["verdict"], "reproducible", "{report}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 3);
    // Every run after the baseline varied every aspect the host can vary.
    for run in &runs[1..] {
        for aspect in ["start_time", "clock", "pids", "staging_order", "env_order"] {
            assert!(
                run["varied"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|a| a == aspect),
                "{aspect} not varied: {run}"
            );
        }
    }
    // Every output is one of the runs' identical outputs.
    assert!(
        runs.iter()
            .all(|r| r["outputs_digest"] == runs[0]["outputs_digest"])
    );
}

//! The real `hermetic` binary against a real hermeticd and the real
//! sandbox: outputs and digests, the cache, exit codes, timeouts, `log`,
//! `status`, and `--local` giving the daemon's digests.

mod common;

use std::path::Path;

use common::{daemon, digests, scratch, text};

/// An input tree: a file read by the step and a helper script.
fn input(dir: &Path) {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/in.txt"), b"hello from the input\n").unwrap();
}

const SCRIPT: &str = "mkdir -p out/d/e && cat src/in.txt > out/hello.txt \
     && echo deep > out/d/e/x && ln -s hello.txt out/link \
     && echo to-stdout && echo to-stderr >&2";

fn json(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", text(o)))
}

#[test]
fn run_downloads_outputs_prints_digests_and_hits_the_cache() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-outputs");
    input(&work.join("in"));
    let out_dir = work.join("out");
    let run = || {
        d.hermetic()
            .args(["run", "--input"])
            .arg(work.join("in"))
            .args(["--output", "out/hello.txt", "--output", "out/d"])
            .args(["--output", "out/link", "--env", "LANG=C", "--out-dir"])
            .arg(&out_dir)
            .args(["--", "sh", "-c", SCRIPT])
            .output()
            .unwrap()
    };
    let first = run();
    let (stdout, stderr) = text(&first);
    assert_eq!(first.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("to-stdout"), "{stdout}");
    assert!(stderr.contains("to-stderr"), "{stderr}");
    assert!(stderr.contains("cache          miss"), "{stderr}");
    let content = b"hello from the input\n";
    let (b3, sha) = digests(content);
    assert!(
        stderr.contains(&format!("output         out/hello.txt  {b3}  {sha}")),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(out_dir.join("out/hello.txt")).unwrap(),
        content
    );
    assert_eq!(std::fs::read(out_dir.join("out/d/e/x")).unwrap(), b"deep\n");
    assert_eq!(
        std::fs::read_link(out_dir.join("out/link")).unwrap(),
        Path::new("hello.txt")
    );
    assert!(stderr.contains("output         out/d/  (directory, tree blake3:"));
    let (b3x, _) = digests(b"deep\n");
    assert!(stderr.contains(&format!("out/d/e/x  {b3x}")), "{stderr}");
    let log_path = out_dir.join(".hermetic/execution-log.json");
    assert!(
        stderr.contains(&format!("execution log  {}", log_path.display())),
        "{stderr}"
    );
    let log: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&log_path).unwrap()).unwrap();
    assert_eq!(log["argv"][0], "sh");
    assert_eq!(log["exit_code"], 0);
    assert_eq!(
        std::fs::read(out_dir.join(".hermetic/stdout")).unwrap(),
        b"to-stdout\n"
    );
    let action = stderr
        .lines()
        .find_map(|l| l.strip_prefix("action         "))
        .unwrap()
        .to_owned();
    assert!(action.starts_with("blake3:"), "{action}");
    let operation = stderr
        .lines()
        .find_map(|l| l.strip_prefix("operation      "))
        .unwrap()
        .to_owned();

    // The same job again: a cache hit, same digests, log still found.
    let second = run();
    let (_, stderr2) = text(&second);
    assert_eq!(second.status.code(), Some(0), "{stderr2}");
    assert!(stderr2.contains("cache          hit"), "{stderr2}");
    assert!(stderr2.contains(&format!("action         {action}")));
    assert!(stderr2.contains(&format!("out/hello.txt  {b3}  {sha}")));
    assert!(stderr2.contains("execution log  "), "{stderr2}");

    // `hermetic log` by action digest and by operation.
    for target in [&action, &operation] {
        let o = d.hermetic().args(["log", target]).output().unwrap();
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{target}: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["argv"][2], SCRIPT, "{out}");
    }
}

#[test]
fn json_prints_only_the_result() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-json");
    let o = d
        .hermetic()
        .args(["run", "--json", "--digest-function", "sha256", "--out-dir"])
        .arg(work.join("out"))
        .args([
            "--output",
            "o",
            "--",
            "sh",
            "-c",
            "echo json > o; echo noise",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let v = json(&o);
    assert!(v["action_digest"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(v["exit_code"], 0);
    assert_eq!(v["outputs"][0]["path"], "o");
    let (b3, sha) = digests(b"json\n");
    assert_eq!(v["outputs"][0]["blake3"], b3.as_str());
    assert_eq!(v["outputs"][0]["sha256"], sha.as_str());
    assert!(o.stderr.is_empty(), "{:?}", text(&o));
}

#[test]
fn the_steps_exit_code_is_propagated() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-exit");
    let o = d
        .hermetic()
        .args(["run", "--out-dir"])
        .arg(work.join("out"))
        .args(["--output", "never/made"])
        .args(["--", "sh", "-c", "echo failing >&2; exit 3"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("failing"), "{stderr}");
    assert!(stderr.contains("exit code      3 (failed)"), "{stderr}");
    assert!(
        stderr.contains("missing        never/made  (declared, not produced)"),
        "{stderr}"
    );
}

#[test]
fn a_timeout_has_its_own_exit_code() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-timeout");
    let o = d
        .hermetic()
        .args(["run", "--timeout", "1s", "--out-dir"])
        .arg(work.join("out"))
        .args(["--", "sh", "-c", "echo started; sleep 60"])
        .output()
        .unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(124), "{stdout}\n{stderr}");
    assert!(stderr.contains("timed_out"), "{stderr}");
}

#[test]
fn a_job_file_runs_like_flags() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-jobfile");
    input(&work.join("in"));
    std::fs::write(
        work.join("job.toml"),
        "command = [\"sh\", \"-c\", \"cat src/in.txt > copy; echo $GREETING >> copy\"]\n\
         input = \"in\"\noutputs = [\"copy\"]\ntimeout = \"30s\"\nmemory = \"256M\"\n\
         profile = \"strict\"\nimage = \"busybox\"\nout_dir = \"out\"\n\
         [env]\nGREETING = \"hi\"\n",
    )
    .unwrap();
    let o = d
        .hermetic()
        .args(["run", "--json", "-f"])
        .arg(work.join("job.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(
        std::fs::read(work.join("out/copy")).unwrap(),
        b"hello from the input\nhi\n"
    );
    let log: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("out/.hermetic/execution-log.json")).unwrap(),
    )
    .unwrap();
    // The alias was resolved: the action pins the image by digest.
    assert!(
        log["image"]
            .as_str()
            .unwrap()
            .starts_with("hermetic-image:blake3:"),
        "{log}"
    );
    assert_eq!(log["image_defaulted"], false);
    assert_eq!(log["timeout_ms"], 30000);
}

#[test]
fn local_gives_the_daemons_digests() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-local");
    input(&work.join("in"));
    let run = |local: bool, out: &str| {
        let mut c = d.hermetic();
        c.args(["run", "--json", "--input"])
            .arg(work.join("in"))
            .args(["--output", "out/hello.txt", "--output", "out/d"])
            .args(["--output", "out/link", "--out-dir"])
            .arg(work.join(out));
        if local {
            c.arg("--local");
        }
        let o = c
            .args(["--", "sh", "-c", &format!("{SCRIPT}; echo local-test")])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "local={local}: {:?}", text(&o));
        json(&o)
    };
    let daemon_run = run(false, "daemon-out");
    let local_run = run(true, "local-out");
    assert_eq!(daemon_run["action_digest"], local_run["action_digest"]);
    assert_eq!(daemon_run["cache_hit"], false);
    assert_eq!(local_run["cache_hit"], false);
    assert_eq!(daemon_run["outputs"], local_run["outputs"]);
    // out/d, out/d/e/x, out/hello.txt, out/link.
    assert_eq!(daemon_run["outputs"].as_array().unwrap().len(), 4);
    // No socket was involved: the local run has its own store.
    assert!(d.dir.join("local-state/cas").is_dir());
}

#[test]
fn status_shows_the_sandbox_features() {
    let Some(d) = daemon() else { return };
    let o = d.hermetic().arg("status").output().unwrap();
    let (stdout, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{stderr}");
    for needle in [
        "landlock",
        "seccomp",
        "cgroup",
        "namespaces",
        "queue",
        "(default) busybox",
        "strict",
        "REAPI 2.0..2.3",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from:\n{stdout}");
    }
    let o = d.hermetic().args(["status", "--json"]).output().unwrap();
    let v = json(&o);
    assert_eq!(v["sandbox"]["detected"], true, "{v}");
    assert!(v["sandbox"]["landlock_abi"].is_number());
    assert_eq!(v["serving"], true);
}

#[test]
fn running_out_of_memory_has_its_own_exit_code() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-oom");
    let o = d
        .hermetic()
        .args(["run", "--json", "--memory", "32M", "--out-dir"])
        .arg(work.join("out"))
        .args([
            "--",
            "sh",
            "-c",
            "dd if=/dev/zero of=/dev/null bs=256M count=1",
        ])
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(o.status.code(), Some(71), "{v}");
    assert_eq!(v["outcome"], "oom_killed", "{v}");
    let log: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.join("out/.hermetic/execution-log.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(log["oom_killed"], true, "{log}");
}

#[test]
fn large_blobs_go_through_bytestream_both_ways() {
    let Some(d) = daemon() else { return };
    let work = scratch(d, "run-large");
    std::fs::create_dir_all(work.join("in")).unwrap();
    // Larger than a batch (4 MiB): ByteStream Write up, ByteStream Read down.
    let big: Vec<u8> = (0..6u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(work.join("in/big"), &big).unwrap();
    let o = d
        .hermetic()
        .args(["run", "--json", "--input"])
        .arg(work.join("in"))
        .args(["--output", "copy", "--out-dir"])
        .arg(work.join("out"))
        .args(["--", "cp", "big", "copy"])
        .output()
        .unwrap();
    let v = json(&o);
    assert_eq!(o.status.code(), Some(0), "{v}");
    let (b3, sha) = digests(&big);
    assert_eq!(v["outputs"][0]["blake3"], b3.as_str());
    assert_eq!(v["outputs"][0]["sha256"], sha.as_str());
    assert!(v["bytes_uploaded"].as_u64().unwrap() >= big.len() as u64);
    assert_eq!(std::fs::read(work.join("out/copy")).unwrap(), big);
}

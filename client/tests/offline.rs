//! What needs no daemon and no sandbox: invalid jobs, an absent daemon,
//! `--help`, completions and the man page.

mod common;

use std::process::Command;

use common::{hermetic_bin, text};

fn hermetic() -> Command {
    let mut c = Command::new(hermetic_bin());
    c.env_remove("HERMETIC_REMOTE")
        .env_remove("HERMETIC_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent");
    c
}

#[test]
fn an_invalid_job_file_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(&job, "comand = [\"true\"]\n").unwrap();
    let o = hermetic().args(["run", "-f"]).arg(&job).output().unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("comand"), "{stderr}");
    assert!(stderr.contains("invalid job"), "{stderr}");

    std::fs::write(&job, "command = [\"true\"]\ntimeout = \"soon\"\n").unwrap();
    let o = hermetic().args(["run", "-f"]).arg(&job).output().unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("timeout"), "{stderr}");
}

#[test]
fn invalid_flags_are_invalid_jobs() {
    for args in [
        &["run", "--env", "NOEQUALS", "--", "true"][..],
        &["run", "--output", "../escape", "--", "true"],
        &["run", "--memory", "lots", "--", "true"],
        &["run"],
        &["run", "--bogus"],
    ] {
        let o = hermetic().args(args).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{args:?}: {:?}", text(&o));
    }
}

#[test]
fn an_absent_daemon_says_how_to_start_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("hermeticd.sock");
    let remote = format!("unix://{}", sock.display());
    for args in [
        vec!["status", "--remote", &remote],
        vec!["--remote", &remote, "run", "--", "true"],
    ] {
        let o = hermetic()
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(70), "{stderr}");
        assert!(stderr.contains("Start it with `hermeticd"), "{stderr}");
        assert!(stderr.contains("--local"), "{stderr}");
    }
    // A socket file nobody listens on.
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(_listener);
    let o = hermetic()
        .args(["status", "--remote", &remote])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(70), "{:?}", text(&o));
    let o = hermetic()
        .args(["status", "--remote", "grpc://127.0.0.1:1"])
        .output()
        .unwrap();
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(70), "{stderr}");
    assert!(stderr.contains("hermeticd --listen"), "{stderr}");
}

#[test]
fn help_documents_the_exit_codes() {
    let o = hermetic().arg("--help").output().unwrap();
    let (stdout, _) = text(&o);
    assert_eq!(o.status.code(), Some(0));
    for code in ["64", "65", "70", "71", "124"] {
        assert!(stdout.contains(&format!("\n  {code} ")), "{code}: {stdout}");
    }
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let o = hermetic().args(["completions", shell]).output().unwrap();
        assert_eq!(o.status.code(), Some(0));
        let (stdout, _) = text(&o);
        assert!(stdout.contains("remote"), "{shell}: {stdout}");
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("hermetic.1");
    let o = hermetic()
        .args(["man", "--out"])
        .arg(&page)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let roff = std::fs::read_to_string(&page).unwrap();
    assert!(roff.contains(".TH hermetic"), "{roff}");
    assert!(roff.contains("completions"));
}

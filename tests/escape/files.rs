//! Outputs, inputs, descriptors and /proc links (issue 2, items 18 to 21):
//! what crosses the boundary between the sandbox and the host's files.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use hermetic_sandbox::status::{Outcome, OutputKind};

use crate::expect::Want::{Allowed, Denied};
use crate::expect::{self, Checks, common, table};
use crate::harness::{Report, Run};
use crate::{battery, host, simple, tables};
use libc::EPERM;

/// Contents of every regular file below `dir`.
fn file_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    host::snapshot(dir)
        .into_iter()
        .filter(|(_, e)| e.mode & libc::S_IFMT == libc::S_IFREG)
        .map(|(p, e)| (p, e.data))
        .collect()
}

/// Fails if any collected file holds a host secret file's contents.
fn no_host_secrets(c: &mut Checks, r: &Report) {
    for secret in ["/etc/shadow", "/etc/passwd"] {
        let Ok(data) = std::fs::read(secret) else {
            continue;
        };
        for (path, contents) in file_contents(&r.output_dir()) {
            c.check(r, data.is_empty() || contents != data, || {
                format!("output {} holds the host's {secret}", path.display())
            });
        }
    }
}

/// Item 18: Symlink outputs are recorded as symlinks, never followed.
#[test]
fn outputs_symlinks() {
    battery("outputs_symlinks", |c, x| {
        let r = x.run(&Run::attack("outputs").args(["symlinks"]).with_output());
        common(c, &r, "strict", 0, Outcome::Completed);
        let rows: Vec<expect::Row> = [
            "mkdir_out",
            "symlink_shadow",
            "symlink_up",
            "symlink_deep",
            "symlink_proc_root",
            "write_regular",
        ]
        .into_iter()
        .map(|a| expect::row(a, Allowed, "ordinary work"))
        .collect();
        table(c, &r, &rows, &[]);
        let links = [
            ("out/shadow", "/etc/shadow"),
            ("out/up", "../.."),
            ("out/deep", "../../../../../../etc/passwd"),
            ("out/proc_root", "/proc/1/root/etc/shadow"),
        ];
        let outputs = r
            .status
            .as_ref()
            .map(|s| s.outputs.clone())
            .unwrap_or_default();
        for (path, target) in links {
            let entry = outputs.iter().find(|o| o.path == path);
            c.check(
                &r,
                entry.is_some_and(|e| {
                    e.kind == OutputKind::Symlink && e.target.as_deref() == Some(target)
                }),
                || format!("status output {path}: {entry:?}, expected a symlink to {target}"),
            );
            let on_disk = r.output_dir().join(path);
            let link = std::fs::symlink_metadata(&on_disk)
                .map(|m| m.file_type().is_symlink())
                .unwrap_or(false);
            let t = std::fs::read_link(&on_disk).ok();
            c.check(&r, link && t.as_deref() == Some(Path::new(target)), || {
                format!(
                    "collected {path}: symlink {link}, target {t:?}, expected a symlink to {target}"
                )
            });
        }
        let regular = outputs.iter().find(|o| o.path == "out/regular");
        c.check(
            &r,
            regular.is_some_and(|e| e.kind == OutputKind::File && e.size == 8),
            || format!("status output out/regular: {regular:?}"),
        );
        no_host_secrets(c, &r);
    });
}

/// Item 18, 19: Hardlinks to inputs (see tables::HARDLINK): where a link can
/// be made, the step writes through it, the store's copy stays unchanged
/// and the output is a copy, not the input's inode.
#[test]
fn outputs_hardlink_to_input() {
    battery("outputs_hardlink_to_input", |c, x| {
        let run = Run::attack("outputs")
            .args(["hardlink"])
            .with_output()
            .input_mode("input.txt", "ORIGINAL\n", 0o666)
            .input("protected.txt", "PROTECTED\n");
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        table(c, &r, tables::HARDLINK, &[]);
        input_unchanged(c, &r);
        if r.one("link_input")["ok"] != true {
            return;
        }
        let out = r.output_dir().join("hard");
        let data = std::fs::read(&out).unwrap_or_default();
        c.check(&r, data == b"ORIGINAL\nMODIFIED\n", || {
            format!("collected hard: {:?}", String::from_utf8_lossy(&data))
        });
        let input = r.input_dir().join("input.txt");
        if let (Ok(a), Ok(b)) = (std::fs::metadata(&input), std::fs::metadata(&out)) {
            c.check(&r, (a.dev(), a.ino()) != (b.dev(), b.ino()), || {
                "the collected output is the input's inode".into()
            });
        }
    });
}

/// Item 11, 18: Files created with set-id modes (open(O_CREAT, 04755) needs no
/// chmod) must not come out of the sandbox set-id: the collector runs as
/// host root.
#[test]
fn outputs_setid_modes() {
    battery("outputs_setid_modes", |c, x| {
        let r = x.run(&Run::attack("outputs").args(["setuid"]).with_output());
        common(c, &r, "strict", 0, Outcome::Completed);
        let rows = [
            expect::row("creat_suid_output", Denied(EPERM), "seccomp: set-id create"),
            expect::row("creat_sgid_output", Denied(EPERM), "seccomp: set-id create"),
            expect::row(
                "mkdir_sgid_output",
                Allowed,
                "creating the directory is fine",
            ),
        ];
        table(c, &r, &rows, &[]);
        for name in ["suid-out", "sgid-out"] {
            let gone = std::fs::symlink_metadata(r.output_dir().join(name)).is_err();
            c.check(&r, gone, || format!("{name} was created and collected"));
        }
        {
            let name = "sgid-dir";
            let md = std::fs::symlink_metadata(r.output_dir().join(name));
            let mode = md.as_ref().map(|m| m.mode() & 0o7777).unwrap_or(0);
            c.check(&r, md.is_ok() && mode & 0o6000 == 0, || {
                format!("collected {name}: mode {mode:o} ({md:?}), expected no set-id bits")
            });
        }
    });
}

/// Item 18: A fifo or a socket output is rejected with a clear message.
#[test]
fn outputs_fifo_and_socket() {
    battery("outputs_fifo_and_socket", |c, x| {
        for (kind, attempt, name) in [
            ("fifo", "mkfifo_work", "fifo"),
            ("socket", "bind_socket_work", "sock"),
        ] {
            let r = x.run(&Run::attack("outputs").args([kind]).with_output());
            common(c, &r, "strict", 122, Outcome::OutputError);
            table(
                c,
                &r,
                &[expect::row(attempt, Allowed, "ordinary work")],
                &[],
            );
            let errors = r
                .status
                .as_ref()
                .map(|s| s.output_errors.clone())
                .unwrap_or_default();
            c.check(&r, errors.iter().any(|e| e.contains(name)), || {
                format!("{kind} output: output_errors {errors:?} do not name {name}")
            });
        }
    });
}

/// Item 18: Declared outputs that leave the work dir, directly or through a
/// symlinked directory, are rejected and nothing outside is read.
#[test]
fn outputs_escaping_paths() {
    battery("outputs_escaping_paths", |c, x| {
        let run = Run::attack("outputs")
            .args(["symlink_dir"])
            .with_output()
            .flags(["--collect", "linkdir/shadow", "--collect", "linkdir/passwd"]);
        let r = x.run(&run);
        common(c, &r, "strict", 122, Outcome::OutputError);
        table(
            c,
            &r,
            &[expect::row("symlink_etc_dir", Allowed, "ordinary work")],
            &[],
        );
        let errors = r
            .status
            .as_ref()
            .map(|s| s.output_errors.clone())
            .unwrap_or_default();
        c.check(&r, errors.len() == 2, || {
            format!("output_errors {errors:?}, expected one per escaping path")
        });
        no_host_secrets(c, &r);

        // Rejected before anything runs: exit 125, and a status, if any,
        // says setup_failed.
        let run = Run::attack("identity")
            .with_output()
            .flags(["--collect", "../etc/passwd"]);
        let r = x.run(&run);
        c.check(&r, r.exit_code == Some(125), || {
            format!(
                "--collect ../etc/passwd: exit {:?}, expected 125",
                r.exit_code
            )
        });
        c.check(&r, r.lines.is_empty(), || {
            "the step ran despite an output path outside /work".into()
        });
        match &r.status {
            Ok(s) => c.check(&r, s.outcome == Outcome::SetupFailed, || {
                format!("status outcome {:?}", s.outcome)
            }),
            Err(e) => c.note(
                &r,
                format!("--collect ../etc/passwd: {e}; stderr: {}", r.stderr.trim()),
            ),
        }
        no_host_secrets(c, &r);
    });
}

/// Fails unless the store's input tree is exactly as before the run.
fn input_unchanged(c: &mut Checks, r: &Report) {
    let after = host::snapshot(&r.input_dir());
    for (path, before) in &r.input_before {
        let now = after.get(path);
        c.check(r, now == Some(before), || {
            format!(
                "the store's input {} changed: {before:?} -> {now:?}",
                path.display()
            )
        });
    }
    for path in after.keys().filter(|p| !r.input_before.contains_key(*p)) {
        c.check(r, false, || {
            format!("the store's input tree gained {}", path.display())
        });
    }
}

/// Item 19: Writing to input files inside never changes the store's copy, even
/// when the store is world-writable.
#[test]
fn write_to_input() {
    battery("write_to_input", |c, x| {
        let run = Run::attack("write_input")
            .with_output()
            .input_mode("input.txt", "ORIGINAL\n", 0o666)
            .input_mode("input2.txt", "SECOND\n", 0o666)
            .input_mode("dir/nested.txt", "NESTED\n", 0o666)
            .input("readonly.txt", "READONLY\n")
            .input_dir("", 0o777)
            .input_dir("dir", 0o777);
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        table(c, &r, tables::WRITE_INPUT, &[]);
        input_unchanged(c, &r);
    });
}

/// Item 20: Only fds 0, 1 and 2 reach the step, even when the helper inherits more.
#[test]
fn inherited_fds() {
    battery("inherited_fds", |c, x| {
        let mut run = Run::attack("fds");
        run.leak_fds = true;
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        table(c, &r, tables::FDS, &["fds"]);
        let v = r.one("fds");
        c.check(&r, v["fds"] == "0,1,2", || {
            format!("the step's fds: {v}, expected 0,1,2")
        });
    });
}

/// Item 21: /proc/self/exe and /proc/1/root lead to nothing writable on the host.
#[test]
fn proc_links() {
    battery("proc_links", |c, x| {
        let extra = [
            "readlink_pid1_exe",
            "proc1_root_is_root",
            "self_root_is_root",
            "proc1_cwd",
        ];
        let r = simple(c, x, "proc_links", tables::PROC_LINKS, &extra);
        let v = r.one("self_root_is_root");
        c.check(&r, v["same"] == true, || {
            format!("/proc/self/root is not the sandbox's /: {v}")
        });
        let v = r.one("proc1_root_is_root");
        c.check(&r, v["same"] == true || v["ok"] == false, || {
            format!("/proc/1/root is another root: {v}")
        });
        c.note(
            &r,
            format!(
                "pid 1: {} {}",
                r.one("readlink_pid1_exe"),
                r.one("proc1_cwd")
            ),
        );
        let name = format!("escape-{}", r.token);
        let dirs = [
            PathBuf::from("/"),
            PathBuf::from("/etc"),
            PathBuf::from("/bin"),
            PathBuf::from("/tmp"),
            x.env.rootfs.clone(),
            x.env.rootfs.join("etc"),
            x.env.rootfs.join("bin"),
            x.env.rootfs.join("dev"),
            r.input_dir(),
            r.dir.clone(),
            std::env::current_dir().expect("cwd"),
        ];
        for d in dirs {
            let p = d.join(&name);
            c.check(&r, !p.exists(), || {
                format!("the step created {} on the host", p.display())
            });
        }
    });
}

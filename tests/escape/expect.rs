//! Expectations: what each attempt must give, and the checks every run
//! must pass. Failures are collected, not panicked at once, so that one test
//! reports every uncontained attempt of both modes together.

use std::fmt::Write as _;

use hermetic_sandbox::status::{Outcome, Status};
use serde_json::Value;

use crate::harness::{Mode, Report};

/// What one attempt must give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// It fails with exactly this errno.
    Denied(i32),
    /// It succeeds (a control: the sandbox must not break normal work).
    Allowed,
    /// It is not attempted (an earlier step of it failed as expected).
    Absent,
    /// The process making it is killed by this signal (seccomp's SIGSYS).
    Killed(i32),
}

/// One row of an attack table: the attempt's name as the probe prints it,
/// what it must give as root and rootless, and which layer stops it.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// The probe's `attack` field.
    pub attempt: &'static str,
    /// Expected as root.
    pub root: Want,
    /// Expected rootless.
    pub rootless: Want,
    /// The layer that must stop it as root (for the failure message).
    pub why: &'static str,
    /// The same, rootless.
    pub why_rootless: &'static str,
}

/// A row that is the same in both modes.
pub const fn row(attempt: &'static str, want: Want, why: &'static str) -> Row {
    Row {
        attempt,
        root: want,
        rootless: want,
        why,
        why_rootless: why,
    }
}

/// A row whose expectation differs between root and rootless runs.
pub const fn differs(
    attempt: &'static str,
    root: Want,
    rootless: Want,
    why_root: &'static str,
    why_rootless: &'static str,
) -> Row {
    Row {
        attempt,
        root,
        rootless,
        why: why_root,
        why_rootless,
    }
}

/// Collected failures of one test over both modes.
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
    notes: Vec<String>,
}

impl Checks {
    /// Records a failure unless `ok`.
    pub fn check(&mut self, r: &Report, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.failures
                .push(format!("[{}] {}", r.mode.name(), what()));
        }
    }

    /// Records a note (printed, never failing).
    pub fn note(&mut self, r: &Report, what: String) {
        self.notes.push(format!("[{}] {what}", r.mode.name()));
    }

    /// Panics with every failure, after printing the notes.
    pub fn finish(self, test: &str) {
        for n in &self.notes {
            eprintln!("note: {test}: {n}");
        }
        if !self.failures.is_empty() {
            let mut msg = format!("{test}: {} containment failure(s):\n", self.failures.len());
            for f in &self.failures {
                let _ = writeln!(msg, "  - {f}");
            }
            panic!("{msg}");
        }
    }
}

/// Name of an errno, for messages.
pub fn errname(e: i64) -> String {
    let name = match e as i32 {
        0 => "OK",
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EACCES => "EACCES",
        libc::EROFS => "EROFS",
        libc::EINVAL => "EINVAL",
        libc::ENOSYS => "ENOSYS",
        libc::EOPNOTSUPP => "ENOTSUP",
        libc::EBADF => "EBADF",
        libc::ENXIO => "ENXIO",
        libc::ETXTBSY => "ETXTBSY",
        libc::EAGAIN => "EAGAIN",
        libc::ENOSPC => "ENOSPC",
        libc::EFBIG => "EFBIG",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ENOTTY => "ENOTTY",
        libc::EXDEV => "EXDEV",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => return format!("errno {e}"),
    };
    name.to_owned()
}

fn describe(v: &Value) -> String {
    if v.is_null() {
        return "no report line".into();
    }
    if v["ok"] == true {
        return format!("SUCCEEDED ({v})");
    }
    let e = v["errno"].as_i64().unwrap_or(-1);
    format!("failed with {} ({v})", errname(e))
}

/// Asserts every row of `table` against the report, and that the probe
/// printed no attempt the table does not know (except `extra` names, which
/// the caller checks itself).
pub fn table(c: &mut Checks, r: &Report, rows: &[Row], extra: &[&str]) {
    for row in rows {
        let (want, why) = match r.mode {
            Mode::Root => (row.root, row.why),
            Mode::Rootless => (row.rootless, row.why_rootless),
        };
        let lines = r.attempts(row.attempt);
        if want == Want::Absent {
            c.check(r, lines.is_empty(), || {
                format!("{}: expected no attempt, got {lines:?}", row.attempt)
            });
            continue;
        }
        if lines.len() != 1 {
            c.check(r, false, || {
                format!(
                    "{}: expected one report line, got {}",
                    row.attempt,
                    lines.len()
                )
            });
            continue;
        }
        let v = lines[0];
        match want {
            Want::Denied(errno) => c.check(r, v["ok"] == false && v["errno"] == errno, || {
                format!(
                    "{}: expected {} ({}), but it {}",
                    row.attempt,
                    errname(errno.into()),
                    why,
                    describe(v)
                )
            }),
            Want::Allowed => c.check(r, v["ok"] == true, || {
                format!(
                    "{}: expected to succeed ({}), but it {}",
                    row.attempt,
                    why,
                    describe(v)
                )
            }),
            Want::Killed(sig) => c.check(r, v["ok"] == false && v["signal"] == sig, || {
                format!(
                    "{}: expected to be killed by signal {sig} ({why}), but it {}",
                    row.attempt,
                    describe(v)
                )
            }),
            Want::Absent => {}
        }
    }
    for line in &r.lines {
        let name = line["attack"].as_str().unwrap_or("?");
        if !rows.iter().any(|row| row.attempt == name) && !extra.contains(&name) {
            c.check(r, false, || format!("unexpected report line {line}"));
        }
    }
}

/// The namespaces the strict profile requires.
pub const NAMESPACES: [&str; 7] = ["user", "mnt", "pid", "net", "ipc", "uts", "cgroup"];

/// Checks every run must pass: the helper returned, the probe ran inside a
/// sandbox, nothing survived, and the status reports every restriction of
/// `profile` in force. `exit` and `outcome` are what the run must end with.
pub fn common(c: &mut Checks, r: &Report, profile: &str, exit: i32, outcome: Outcome) {
    c.check(r, !r.hung, || {
        format!(
            "the helper did not return within the hang limit and was killed; stderr:\n{}",
            r.stderr_tail()
        )
    });
    c.check(
        r,
        !r.stdout.lines().any(|l| l.starts_with("REFUSED")),
        || "the probe REFUSED to run: its mount or uts namespace is the host's".into(),
    );
    c.check(r, r.exit_code == Some(exit), || {
        format!(
            "helper exit code {:?}, expected {exit}; stderr:\n{}",
            r.exit_code,
            r.stderr_tail()
        )
    });
    c.check(r, r.survivors.is_empty(), || {
        format!(
            "processes of the step survived the helper's return: pids {:?}",
            r.survivors
        )
    });
    c.check(r, !r.pipes_held, || {
        "the helper's stdout/stderr stayed open after it returned (a survivor holds them)".into()
    });
    let s = match &r.status {
        Ok(s) => s,
        Err(e) => {
            c.check(r, false, || format!("status: {e}"));
            return;
        }
    };
    c.check(r, s.outcome == outcome, || {
        format!(
            "status outcome {:?}, expected {outcome:?} (error: {:?})",
            s.outcome, s.error
        )
    });
    if s.outcome == Outcome::SetupFailed {
        return;
    }
    restrictions(c, r, s, profile);
}

fn restrictions(c: &mut Checks, r: &Report, s: &Status, profile: &str) {
    let x = &s.restrictions;
    c.check(r, x.profile == profile, || {
        format!(
            "status restrictions.profile {:?}, expected {profile:?}",
            x.profile
        )
    });
    for ns in NAMESPACES {
        c.check(r, x.namespaces.iter().any(|n| n == ns), || {
            format!(
                "status: namespace {ns} not reported in force (got {:?})",
                x.namespaces
            )
        });
    }
    c.check(r, x.host_uid_base != 0, || {
        "status: sandbox uids map to host uid 0".into()
    });
    c.check(r, x.uid == 1000 && x.gid == 1000, || {
        format!("status: uid/gid {}/{}, expected 1000/1000", x.uid, x.gid)
    });
    c.check(r, x.landlock.enforced == "full", || {
        format!("status: landlock {:?}, expected full", x.landlock)
    });
    c.check(r, x.seccomp && x.seccomp_rules > 0, || {
        format!(
            "status: seccomp {} with {} rules",
            x.seccomp, x.seccomp_rules
        )
    });
    c.check(r, x.no_new_privs, || {
        "status: no_new_privs not verified".into()
    });
    c.check(r, x.capabilities_dropped, || {
        "status: capabilities not verified dropped".into()
    });
    c.check(r, x.network == ["lo(up)"], || {
        format!("status: network {:?}, expected [\"lo(up)\"]", x.network)
    });
    c.check(r, x.weaker.is_empty(), || {
        format!("status: weaker restrictions {:?}", x.weaker)
    });
    c.check(r, x.limits.enforcement.starts_with("cgroup"), || {
        format!(
            "status: limits enforced by {:?}, expected a cgroup",
            x.limits.enforcement
        )
    });
}

//! Resource exhaustion and processes that try to outlive the step (issue
//! 2, items 14 to 17).

use hermetic_sandbox::spec::LimitOverrides;
use hermetic_sandbox::status::Outcome;

use crate::expect::common;
use crate::harness::Run;
use crate::{MIB, battery, int};

/// Item 14: A fork bomb stops at the pids limit.
#[test]
fn fork_bomb() {
    battery("fork_bomb", |c, x| {
        let r = x.run(
            &Run::attack("fork_bomb")
                .args(["4096"])
                .flags(["--pids", "64"]),
        );
        common(c, &r, "strict", 0, Outcome::Completed);
        let v = r.one("fork_bomb");
        let forks = int(v, "forks");
        c.check(
            &r,
            v["errno"] == libc::EAGAIN && (48..64).contains(&forks),
            || format!("fork bomb under --pids 64: {v}, expected EAGAIN after 48..63 forks"),
        );
        if let Ok(s) = &r.status {
            c.check(&r, s.restrictions.limits.pids == Some(64), || {
                format!("status limits.pids {:?}", s.restrictions.limits.pids)
            });
        }
    });
}

/// Item 14: Allocating past the memory limit: OOM kill, reported as such.
#[test]
fn memory_limit() {
    battery("memory_limit", |c, x| {
        let limit = 64 * MIB;
        let r = x.run(
            &Run::attack("memory_hog")
                .args(["2048"])
                .flags(["--memory".into(), limit.to_string()]),
        );
        common(c, &r, "strict", 123, Outcome::OomKilled);
        let v = r.one("memory_hog");
        c.check(&r, v.is_null(), || {
            format!("the memory hog was not killed: {v}")
        });
        if let Ok(s) = &r.status {
            c.check(&r, s.oom_killed, || "status oom_killed is false".into());
            c.check(
                &r,
                s.restrictions.limits.memory_bytes == Some(limit),
                || {
                    format!(
                        "status limits.memory_bytes {:?}",
                        s.restrictions.limits.memory_bytes
                    )
                },
            );
        }
    });
}

/// Item 15: Filling /tmp gives ENOSPC at its size.
#[test]
fn tmp_full() {
    battery("tmp_full", |c, x| {
        let r = x.run(&Run::attack("fill_tmp").flags(["--tmp-size".into(), (4 * MIB).to_string()]));
        common(c, &r, "strict", 0, Outcome::Completed);
        let v = r.one("fill_tmp");
        let bytes = int(v, "bytes");
        c.check(
            &r,
            v["errno"] == libc::ENOSPC && (3 * MIB as i64..=4 * MIB as i64).contains(&bytes),
            || format!("filling a 4 MiB /tmp: {v}, expected ENOSPC after 3..4 MiB"),
        );
    });
}

/// Item 15: Filling /work gives ENOSPC at the scratch size (set through a
/// spec: the CLI has no option for it).
#[test]
fn scratch_full() {
    battery("scratch_full", |c, x| {
        let mut run = Run::attack("fill_work");
        run.spec_limits = Some(LimitOverrides {
            scratch_bytes: Some(4 * MIB),
            ..Default::default()
        });
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        let v = r.one("fill_work");
        let bytes = int(v, "bytes");
        let range = 3 * MIB as i64..=4 * MIB as i64;
        c.check(
            &r,
            v["errno"] == libc::ENOSPC && range.contains(&bytes),
            || format!("filling a 4 MiB scratch: {v}, expected ENOSPC after 3..4 MiB"),
        );
        if let Ok(s) = &r.status {
            let got = s.restrictions.limits.scratch_bytes;
            c.check(&r, got == 4 * MIB, || {
                format!("status limits.scratch_bytes {got}")
            });
        }
    });
}

/// Item 15: A huge file stops at RLIMIT_FSIZE: EFBIG when SIGXFSZ is ignored,
/// killed by SIGXFSZ otherwise.
#[test]
fn huge_file() {
    battery("huge_file", |c, x| {
        let mut run = Run::attack("huge_file");
        run.spec_limits = Some(LimitOverrides {
            fsize_bytes: Some(MIB),
            ..Default::default()
        });
        let r = x.run(&run);
        common(c, &r, "strict", 0, Outcome::Completed);
        let v = r.one("huge_file");
        c.check(
            &r,
            v["errno"] == libc::EFBIG && int(v, "bytes") == MIB as i64,
            || format!("writing past a 1 MiB RLIMIT_FSIZE: {v}, expected EFBIG at exactly 1 MiB"),
        );
        if let Ok(s) = &r.status {
            c.check(&r, s.restrictions.limits.fsize_bytes == Some(MIB), || {
                format!(
                    "status limits.fsize_bytes {:?}",
                    s.restrictions.limits.fsize_bytes
                )
            });
        }
        let mut run = Run::attack("huge_file_signal");
        run.spec_limits = Some(LimitOverrides {
            fsize_bytes: Some(MIB),
            ..Default::default()
        });
        let r = x.run(&run);
        common(c, &r, "strict", 128 + libc::SIGXFSZ, Outcome::Completed);
        if let Ok(s) = &r.status {
            c.check(&r, s.signal == Some(libc::SIGXFSZ), || {
                format!("status signal {:?}, expected SIGXFSZ", s.signal)
            });
        }
    });
}

/// Item 16: Processes that try to outlive the step are all gone when the helper
/// returns, and it returns promptly (common() checks survivors and pipes).
#[test]
fn orphans() {
    battery("orphans", |c, x| {
        for kind in [
            "daemon",
            "setsid_child",
            "sigterm_child",
            "stdout_grandchild",
        ] {
            let r = x.run(&Run::attack(kind));
            common(c, &r, "strict", 0, Outcome::Completed);
            c.check(&r, r.one(kind)["ok"] == true, || {
                format!("{kind}: no report line")
            });
            c.note(
                &r,
                format!("{kind}: the helper returned after {:?}", r.elapsed),
            );
        }
    });
}

/// Item 17: A step past its timeout is killed and reported as timed out, even
/// when it ignores SIGTERM.
#[test]
fn timeout() {
    battery("timeout", |c, x| {
        for attack in ["sleep_forever", "sleep_ignoring_term"] {
            let mut run = Run::attack(attack);
            run.timeout_s = 1;
            let r = x.run(&run);
            common(c, &r, "strict", 124, Outcome::TimedOut);
            if let Ok(s) = &r.status {
                c.check(&r, s.timed_out, || {
                    format!("{attack}: status timed_out is false")
                });
            }
        }
    });
}

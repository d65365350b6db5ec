//! What the benchmark ran on, for the report.

use std::process::Command;

/// The machine and the software measured.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// CPUs available to the harness.
    pub nproc: usize,
    /// `MemTotal` from `/proc/meminfo`, in MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// cgroup layout.
    pub cgroup: String,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu: String,
    /// UTC date and time of the run.
    pub date: String,
    /// The commit the helper was built from.
    pub commit: String,
    /// `bwrap --version`.
    pub bwrap: String,
    /// `crun --version`, first line.
    pub crun: String,
}

/// Collects the machine's description. Call it before changing the mount
/// namespace, so the cgroup layout is the host's.
pub fn describe() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    let dirty = !output(
        "git",
        &["status", "--porcelain", "--", "sandbox", "sandbox-profiles"],
    )
    .is_empty();
    let commit = output("git", &["rev-parse", "--short", "HEAD"]);
    Machine {
        nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_mib: memory_kib / 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned(),
        cgroup: cgroup_layout(),
        cpu: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            .unwrap_or_else(|| "unknown".into()),
        date: output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        commit: if dirty {
            format!("{commit} + uncommitted changes in sandbox/")
        } else {
            commit
        },
        bwrap: output("bwrap", &["--version"]),
        crun: output("crun", &["--version"])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn loadavg() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split(' ').take(3).collect::<Vec<_>>().join(" ")
}

/// `v2`, `v1`, or `v1 hybrid` with the cgroup2 mount's controllers, from
/// `/proc/self/mountinfo`.
fn cgroup_layout() -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (mut v1, mut v2) = (0, Vec::new());
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let point = left.split(' ').nth(4).unwrap_or("");
        match right.split(' ').next() {
            Some("cgroup") => v1 += 1,
            Some("cgroup2") => v2.push(point.to_owned()),
            _ => {}
        }
    }
    match (v1, v2.first()) {
        (0, Some(p)) => format!("v2 (unified at {p})"),
        (0, None) => "none".into(),
        (n, None) => format!("v1 ({n} hierarchies)"),
        (n, Some(p)) => {
            let ctl =
                std::fs::read_to_string(format!("{p}/cgroup.controllers")).unwrap_or_default();
            let ctl = if ctl.trim().is_empty() {
                "none"
            } else {
                ctl.trim()
            };
            format!("v1 hybrid ({n} v1 hierarchies; cgroup2 at {p}, controllers: {ctl})")
        }
    }
}

/// A command's trimmed stdout, empty when it fails.
pub fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

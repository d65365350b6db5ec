//! Anomaly indicators: what a step tried that a build step has no reason
//! to try, recorded for the execution log, metrics and alerts.
//!
//! - **Network attempts** ([`notify`]): `connect`, `sendto`, `sendmsg` and
//!   `sendmmsg` to an IPv4/IPv6 address other than loopback. A seccomp
//!   user-notification filter (installed by init, inherited by the step)
//!   stops the call; the helper reads the address from the caller's memory,
//!   records it and answers ENETUNREACH. Loopback and every other family
//!   (AF_UNIX, netlink) continue unrecorded.
//! - **Foreign executables** ([`notify`]): `execve`/`execveat` of a file the
//!   step created: in the `/work` upper layer, on `/tmp` or `/dev/shm`, or a
//!   memfd. Recorded, not denied.
//! - **Writes outside the declared outputs** ([`writes_outside`]): after the
//!   step, what the `/work` upper layer holds that is not at or under a
//!   declared output.
//!
//! Each list holds at most the profile's `anomalies.max_records` entries;
//! the rest are counted in `dropped`.

use serde::{Deserialize, Serialize};

pub mod notify;
mod sockaddr;

pub use sockaddr::{Destination, parse_sockaddr};

/// The anomalies of one execution (the status's `anomalies`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Anomalies {
    /// Whether outbound network attempts were watched (seccomp user
    /// notification in force).
    pub network_watched: bool,
    /// Whether executions were watched for foreign executables.
    pub exec_watched: bool,
    /// Whether writes outside the declared outputs were checked (false
    /// also when the spec declares no outputs: then everything written is
    /// an output).
    pub writes_checked: bool,
    /// Why a watch was off, when one was (the profile, seccomp disabled).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub off: Vec<String>,
    /// Denied outbound network attempts, in order.
    pub network: Vec<NetworkAttempt>,
    /// Executions of files the step created, in order.
    pub foreign_exec: Vec<ForeignExec>,
    /// Paths under `/work` (relative to it) written outside the declared
    /// outputs, sorted.
    pub writes_outside_outputs: Vec<String>,
    /// Records left out of each list once it was full.
    pub dropped: Dropped,
}

/// Counts of records beyond the cap.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Dropped {
    /// Network attempts not listed.
    pub network: u64,
    /// Foreign executions not listed.
    pub foreign_exec: u64,
    /// Written paths not listed.
    pub writes_outside_outputs: u64,
}

impl Anomalies {
    /// Whether anything was recorded (the alert hook fires on this).
    pub fn any(&self) -> bool {
        self.network_total() + self.foreign_exec_total() + self.writes_total() > 0
    }

    /// Network attempts, listed or dropped.
    pub fn network_total(&self) -> u64 {
        self.network.len() as u64 + self.dropped.network
    }

    /// Foreign executions, listed or dropped.
    pub fn foreign_exec_total(&self) -> u64 {
        self.foreign_exec.len() as u64 + self.dropped.foreign_exec
    }

    /// Written paths outside the outputs, listed or dropped.
    pub fn writes_total(&self) -> u64 {
        self.writes_outside_outputs.len() as u64 + self.dropped.writes_outside_outputs
    }
}

/// One denied outbound network attempt.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NetworkAttempt {
    /// `connect`, `sendto`, `sendmsg` or `sendmmsg`.
    pub syscall: String,
    /// `inet` or `inet6`.
    pub family: String,
    /// The destination address.
    pub address: String,
    /// The destination port.
    pub port: u16,
    /// The caller's pid inside the sandbox (0: it was gone).
    pub pid: i32,
    /// When, in microseconds since the Unix epoch.
    pub time_us: u64,
    /// The errno the call failed with (ENETUNREACH).
    pub errno: i32,
}

/// One execution of a file the step created.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForeignExec {
    /// `execve` or `execveat`.
    pub syscall: String,
    /// The file, as the sandbox sees it (symlinks resolved).
    pub path: String,
    /// Where it lives: `work` (the step wrote it under `/work`), `tmp`,
    /// `dev-shm` or `memfd`.
    pub origin: String,
    /// The caller's pid inside the sandbox (0: it was gone).
    pub pid: i32,
    /// When, in microseconds since the Unix epoch.
    pub time_us: u64,
}

/// Pushes `item` unless `list` holds `cap` entries already; then counts it.
pub fn push_capped<T>(list: &mut Vec<T>, dropped: &mut u64, cap: u32, item: T) {
    if list.len() < cap as usize {
        list.push(item);
    } else {
        *dropped += 1;
    }
}

/// What the step wrote under `/work` (`written`, relative paths as
/// [`crate::outputs::written_paths`] lists them) that is neither at or under
/// a declared output nor a directory leading to one; a directory is left
/// out when something under it is listed. Returns the paths (at most `cap`)
/// and how many more there were.
pub fn writes_outside(written: &[String], outputs: &[String], cap: u32) -> (Vec<String>, u64) {
    let outputs: Vec<&str> = outputs
        .iter()
        .map(|o| o.trim_matches('/'))
        .filter(|o| !o.is_empty())
        .collect();
    let under = |p: &str, dir: &str| {
        p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
    };
    let mut sorted: Vec<&str> = written.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut out = Vec::new();
    let mut dropped = 0;
    for (i, p) in sorted.iter().enumerate() {
        let declared = outputs.iter().any(|o| *p == *o || under(p, o));
        let leads_to_output = outputs.iter().any(|o| under(o, p));
        // Sorted: a path's descendants follow it directly.
        let has_child = sorted.get(i + 1).is_some_and(|n| under(n, p));
        if !declared && !leads_to_output && !has_child {
            push_capped(&mut out, &mut dropped, cap, (*p).to_owned());
        }
    }
    (out, dropped)
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn writes_outside_skips_outputs_their_parents_and_implied_dirs() {
        let written = v(&[
            "out",
            "out/a.o",
            "out/sub",
            "out/sub/b",
            "junk",
            "src",
            "src/gen.c",
            "empty",
            "outer",
        ]);
        let (got, dropped) = writes_outside(&written, &v(&["out/a.o", "out/sub/"]), 100);
        assert_eq!(got, v(&["empty", "junk", "outer", "src/gen.c"]));
        assert_eq!(dropped, 0);
    }

    #[test]
    fn writes_outside_caps_and_counts() {
        let written = v(&["a", "b", "c", "d"]);
        let (got, dropped) = writes_outside(&written, &v(&["z"]), 2);
        assert_eq!(got, v(&["a", "b"]));
        assert_eq!(dropped, 2);
    }

    #[test]
    fn totals_count_dropped_records() {
        let mut a = Anomalies::default();
        assert!(!a.any());
        a.dropped.network = 3;
        assert!(a.any());
        assert_eq!(a.network_total(), 3);
    }
}

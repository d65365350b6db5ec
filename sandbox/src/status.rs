//! The versioned report the helper writes after an execution.

use serde::{Deserialize, Serialize};

use crate::spec::SPEC_VERSION;

/// What happened, and exactly which restrictions were in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Status {
    /// The spec version this report answers.
    pub version: u32,
    /// How the step ended.
    pub outcome: Outcome,
    /// Exit code when the step exited.
    pub exit_code: Option<i32>,
    /// Signal number when the step was killed by a signal.
    pub signal: Option<i32>,
    /// The step exceeded its memory limit and was killed by the OOM killer.
    pub oom_killed: bool,
    /// The step ran past its timeout.
    pub timed_out: bool,
    /// Phase durations.
    pub timings: Timings,
    /// Resource usage of everything that ran in the sandbox.
    pub usage: Usage,
    /// What was in force, as verified after it was applied.
    pub restrictions: Restrictions,
    /// Outputs collected (empty when nothing was collected).
    pub outputs: Vec<OutputEntry>,
    /// Problems with outputs (a fifo, a device, a path that escapes): each
    /// makes the execution fail with [`Outcome::OutputError`].
    pub output_errors: Vec<String>,
    /// When the outcome is an error of the sandbox itself, what failed.
    pub error: Option<String>,
    /// The non-semantic variations applied (reproducibility checks).
    #[serde(default)]
    pub variation: crate::spec::Variation,
    /// Anomaly indicators: denied network attempts, executables the step
    /// created, writes outside the declared outputs (added compatibly:
    /// absent in older reports).
    #[serde(default)]
    pub anomalies: crate::anomaly::Anomalies,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The step ran and exited (with any code) or was killed by a signal.
    #[default]
    Completed,
    /// The step ran past its timeout and was killed.
    TimedOut,
    /// The step was killed by the OOM killer.
    OomKilled,
    /// The sandbox could not be set up as the profile requires; the step
    /// never ran.
    SetupFailed,
    /// The command could not be executed (not found, not executable).
    ExecFailed,
    /// The step ran but an output is invalid.
    OutputError,
    /// The execution was cancelled by the caller.
    Cancelled,
}

/// Phase durations in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Timings {
    /// From the helper's start of work to the step's `execve`.
    pub setup_us: u64,
    /// From `execve` to the step's exit.
    pub run_us: u64,
    /// From the step's exit to every process dead and outputs collected
    /// (the cgroup and scratch are removed after the status is reported).
    pub teardown_us: u64,
    /// Set-up in detail: policy, cgroup and mount plan prepared (start to
    /// the creator's fork).
    #[serde(default)]
    pub prepare_us: u64,
    /// Set-up in detail: the creator made the namespaces and cloned init
    /// (fork to init's pid reported).
    #[serde(default)]
    pub namespaces_us: u64,
    /// Set-up in detail: init built and verified the root filesystem (up to
    /// its report, as seen after the namespaces).
    #[serde(default)]
    pub root_us: u64,
    /// Set-up in detail: the step confined itself and called `execve`
    /// (init's report to the execve).
    #[serde(default)]
    pub confine_us: u64,
    /// The sandbox came from the supervisor's pool: its namespaces, cgroup
    /// and every mount but `/work` were made before the request
    /// (`namespaces_us` is then 0, `root_us` is the action's part: `/work`,
    /// `pivot_root` and the verifications, which run for every action).
    #[serde(default)]
    pub pooled: bool,
    /// A pooled sandbox: how long making it ahead of the request took
    /// (not part of `setup_us`).
    #[serde(default)]
    pub warm_us: u64,
}

/// Resource usage.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// User CPU time in microseconds.
    pub user_cpu_us: u64,
    /// System CPU time in microseconds.
    pub sys_cpu_us: u64,
    /// Peak memory in bytes: the cgroup's peak when a cgroup was in force,
    /// otherwise the largest process's maximum RSS.
    pub peak_memory_bytes: u64,
    /// Where `peak_memory_bytes` comes from: `cgroup` or `rusage`.
    pub peak_memory_source: String,
}

/// Restrictions in force, each as verified after being applied.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Restrictions {
    /// The profile's name.
    pub profile: String,
    /// The profile's digest.
    pub profile_digest: String,
    /// Namespaces verified to differ from the helper's own.
    pub namespaces: Vec<String>,
    /// Host uid that sandbox uids start at (never 0).
    pub host_uid_base: u32,
    /// The step's uid and gid inside the sandbox.
    pub uid: u32,
    /// The step's gid inside the sandbox.
    pub gid: u32,
    /// `"full"`, `"partial"` or `"none"`, with the ABI the kernel offered.
    pub landlock: LandlockStatus,
    /// Seccomp filter mode verified via PR_GET_SECCOMP (2: filter).
    pub seccomp: bool,
    /// Number of syscall rules in the filter.
    pub seccomp_rules: usize,
    /// `no_new_privs` verified set.
    pub no_new_privs: bool,
    /// Every capability set verified empty.
    pub capabilities_dropped: bool,
    /// Network interfaces present (expected: only `lo`, up).
    pub network: Vec<String>,
    /// Limits and how they are enforced.
    pub limits: LimitsInForce,
    /// Restrictions weaker than the profile asked, which it allowed.
    pub weaker: Vec<String>,
}

/// Landlock as granted by the kernel.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LandlockStatus {
    /// `full`, `partial` or `none`.
    pub enforced: String,
    /// The ABI the profile pinned.
    pub abi_requested: u8,
    /// The ABI the kernel offers.
    pub abi_kernel: i32,
}

/// Limits in force.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitsInForce {
    /// `cgroup-v2`, `cgroup-v1` or `rlimit`.
    pub enforcement: String,
    /// Timeout in milliseconds.
    pub timeout_ms: u64,
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// Pids limit.
    pub pids: Option<u64>,
    /// CPU quota in milli-CPUs.
    pub cpu_millis: Option<u64>,
    /// `/tmp` size.
    pub tmp_bytes: u64,
    /// Scratch size.
    pub scratch_bytes: u64,
    /// RLIMIT_FSIZE.
    pub fsize_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: u64,
}

/// One collected output.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutputEntry {
    /// Path relative to `/work`.
    pub path: String,
    /// What it is.
    pub kind: OutputKind,
    /// Size in bytes (files).
    pub size: u64,
    /// Executable bit (files).
    pub executable: bool,
    /// Link target (symlinks), recorded, never followed.
    pub target: Option<String>,
}

/// The kind of an output entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum OutputKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// A symbolic link.
    Symlink,
}

impl Status {
    /// A report for a sandbox that could not be set up.
    pub fn setup_failed(message: String) -> Self {
        Status {
            version: SPEC_VERSION,
            outcome: Outcome::SetupFailed,
            error: Some(message),
            ..Default::default()
        }
    }
}

//! The versioned request the helper executes: one command, sealed.
//!
//! A [`Spec`] is what the daemon (or a developer, through `--spec`) hands
//! the helper. It is plain data: every path is a host path the helper
//! opens itself, every limit is a number, and the policy is an already
//! validated [`Profile`]. Unknown fields are rejected so that a daemon and
//! a helper of different versions fail loudly instead of dropping a
//! restriction on the floor.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::profile::Profile;

/// The spec version this helper speaks. Bumped on any incompatible change.
pub const SPEC_VERSION: u32 = 1;

/// One sealed execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Must equal [`SPEC_VERSION`].
    pub version: u32,
    /// Base image root directory on the host, mounted read-only at `/`.
    pub rootfs: PathBuf,
    /// Input tree on the host: the read-only lower layer of `/work`.
    /// `None` gives an empty `/work`.
    #[serde(default)]
    pub input: Option<PathBuf>,
    /// A directory the helper owns for this execution (created if missing,
    /// must be empty). Holds nothing the step can reach directly.
    pub scratch: PathBuf,
    /// Where collected outputs are written on the host (created if missing).
    /// `None`: nothing is collected.
    #[serde(default)]
    pub output_dir: Option<PathBuf>,
    /// Declared outputs, relative to `/work`. Empty with an `output_dir`:
    /// every path the step created or changed under `/work` is collected.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The command: `argv[0]` is resolved against `PATH` inside the sandbox
    /// when it has no `/`.
    pub argv: Vec<String>,
    /// The environment, in order, exactly; the profile's defaults (PATH,
    /// HOME, USER, LOGNAME, TZ, LANG, SOURCE_DATE_EPOCH) fill in names not
    /// given, after the spec's.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// Working directory relative to `/work` (empty: `/work`).
    #[serde(default)]
    pub cwd: String,
    /// The policy, already loaded and validated.
    pub profile: Profile,
    /// Per-execution limits; `None` fields take the profile's value.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Where the step's stdout goes.
    #[serde(default)]
    pub stdout: Stdio,
    /// Where the step's stderr goes.
    #[serde(default)]
    pub stderr: Stdio,
    /// A delegated cgroup (v2 directory, or v1 relative path present in each
    /// controller hierarchy) under which the helper creates the action's
    /// cgroup. `None`: the helper's own cgroup.
    #[serde(default)]
    pub cgroup_parent: Option<PathBuf>,
    /// Non-semantic variations applied on purpose (reproducibility checks).
    #[serde(default)]
    pub variation: Variation,
}

/// Limits a single execution may tighten or loosen relative to its profile.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    /// Wall-clock timeout in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Memory limit in bytes (cgroup).
    pub memory_bytes: Option<u64>,
    /// Maximum number of processes and threads (cgroup).
    pub pids: Option<u64>,
    /// CPU quota in milli-CPUs (1000 = one core).
    pub cpu_millis: Option<u64>,
    /// Size of the `/tmp` tmpfs in bytes.
    pub tmp_bytes: Option<u64>,
    /// Size of the scratch tmpfs holding what the step writes under `/work`.
    pub scratch_bytes: Option<u64>,
    /// RLIMIT_FSIZE in bytes.
    pub fsize_bytes: Option<u64>,
    /// RLIMIT_NOFILE.
    pub nofile: Option<u64>,
}

/// Where a standard stream goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Stdio {
    /// The helper's own stream (the CLI's default).
    #[default]
    Inherit,
    /// `/dev/null`.
    Null,
    /// A host file, created or truncated, written by the step directly.
    File(PathBuf),
}

/// Variations of non-semantic conditions, used to check reproducibility.
/// The default is no variation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Variation {
    /// Restrict the step to this many CPUs (affinity); `None`: all.
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Shift `CLOCK_MONOTONIC` and `CLOCK_BOOTTIME` by this many seconds
    /// (time namespace offsets; non-negative).
    #[serde(default)]
    pub clock_offset_secs: u32,
    /// Start the step's pid at this number plus one (the pid namespace's
    /// last pid is set before the step is forked); 0: the step is pid 2.
    #[serde(default)]
    pub pid_offset: u32,
    /// Disable address-space layout randomization for the step.
    #[serde(default)]
    pub no_aslr: bool,
}

/// Errors in a spec found before anything is set up.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The version does not match this helper.
    #[error("spec version {found} is not supported (this helper speaks version {SPEC_VERSION})")]
    Version {
        /// The version found in the spec.
        found: u32,
    },
    /// A field holds a value the helper cannot honour.
    #[error("invalid spec field `{field}`: {reason}")]
    Field {
        /// The field's name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The JSON does not parse.
    #[error("spec is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Spec {
    /// Parses and validates a spec from JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, SpecError> {
        let spec: Spec = serde_json::from_slice(bytes)?;
        spec.validate()?;
        Ok(spec)
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<(), SpecError> {
        let field = |field, reason: &str| SpecError::Field {
            field,
            reason: reason.to_owned(),
        };
        if self.version != SPEC_VERSION {
            return Err(SpecError::Version {
                found: self.version,
            });
        }
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(field("argv", "the command is empty"));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            return Err(field("argv", "an argument contains a NUL byte"));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return Err(SpecError::Field {
                    field: "env",
                    reason: format!("invalid variable name or value: {k:?}"),
                });
            }
        }
        for p in [&self.rootfs, &self.scratch] {
            if !p.is_absolute() {
                return Err(SpecError::Field {
                    field: "rootfs/scratch",
                    reason: format!("{} is not an absolute path", p.display()),
                });
            }
        }
        if !self.cwd.is_empty() {
            check_relative(&self.cwd).map_err(|reason| SpecError::Field {
                field: "cwd",
                reason,
            })?;
        }
        for o in &self.outputs {
            check_relative(o).map_err(|reason| SpecError::Field {
                field: "outputs",
                reason,
            })?;
        }
        if self.limits.timeout_ms == Some(0) {
            return Err(field("limits.timeout_ms", "must be positive"));
        }
        Ok(())
    }

    /// Resolves each limit against the profile.
    pub fn effective_limits(&self) -> crate::profile::Limits {
        let p = &self.profile.limits;
        let o = &self.limits;
        crate::profile::Limits {
            timeout_ms: o.timeout_ms.unwrap_or(p.timeout_ms),
            grace_ms: p.grace_ms,
            memory_bytes: o.memory_bytes.or(p.memory_bytes),
            pids: o.pids.or(p.pids),
            cpu_millis: o.cpu_millis.or(p.cpu_millis),
            tmp_bytes: o.tmp_bytes.unwrap_or(p.tmp_bytes),
            scratch_bytes: o.scratch_bytes.unwrap_or(p.scratch_bytes),
            fsize_bytes: o.fsize_bytes.or(p.fsize_bytes),
            nofile: o.nofile.unwrap_or(p.nofile),
        }
    }
}

/// A path relative to `/work`: no leading `/`, no `.` or `..` components, no
/// empty components, no NUL.
pub fn check_relative(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} must be relative to /work"));
    }
    if path.contains('\0') {
        return Err(format!("{path:?} contains a NUL byte"));
    }
    for c in path.trim_end_matches('/').split('/') {
        if c.is_empty() || c == "." || c == ".." {
            return Err(format!("{path:?} has an empty, `.` or `..` component"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
        Spec {
            version: SPEC_VERSION,
            rootfs: "/img".into(),
            input: None,
            scratch: "/scratch".into(),
            output_dir: None,
            outputs: vec![],
            argv: vec!["/bin/true".into()],
            env: vec![],
            cwd: String::new(),
            profile: Profile::load(&dir, "strict").unwrap(),
            limits: LimitOverrides::default(),
            stdout: Stdio::Inherit,
            stderr: Stdio::Inherit,
            cgroup_parent: None,
            variation: Variation::default(),
        }
    }

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let s = spec();
        let json = serde_json::to_vec(&s).unwrap();
        let back = Spec::from_json(&json).unwrap();
        assert_eq!(back.argv, s.argv);
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["surprise"] = serde_json::json!(1);
        let err = Spec::from_json(&serde_json::to_vec(&v).unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("surprise"), "{err}");
    }

    #[test]
    fn rejects_bad_fields_with_their_names() {
        type Mutation = Box<dyn Fn(&mut Spec)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (Box::new(|s| s.version = 99), "version 99"),
            (Box::new(|s| s.argv.clear()), "argv"),
            (Box::new(|s| s.argv = vec!["a\0b".into()]), "NUL"),
            (
                Box::new(|s| s.env = vec![("A=B".into(), "c".into())]),
                "env",
            ),
            (Box::new(|s| s.rootfs = "relative".into()), "absolute"),
            (
                Box::new(|s| s.outputs = vec!["../escape".into()]),
                "outputs",
            ),
            (Box::new(|s| s.outputs = vec!["/abs".into()]), "outputs"),
            (Box::new(|s| s.outputs = vec!["a//b".into()]), "outputs"),
            (Box::new(|s| s.cwd = "a/../..".into()), "cwd"),
            (Box::new(|s| s.limits.timeout_ms = Some(0)), "timeout"),
        ];
        for (mutate, needle) in cases {
            let mut s = spec();
            mutate(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
    }

    #[test]
    fn limits_take_overrides_then_profile() {
        let mut s = spec();
        assert_eq!(s.effective_limits(), s.profile.limits);
        s.limits.memory_bytes = Some(1 << 20);
        s.limits.timeout_ms = Some(5);
        let l = s.effective_limits();
        assert_eq!(
            (l.memory_bytes, l.timeout_ms, l.pids),
            (Some(1 << 20), 5, s.profile.limits.pids)
        );
    }
}

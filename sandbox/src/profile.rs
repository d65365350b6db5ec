//! Sandbox profiles: the policy half of the sandbox.
//!
//! A profile is a TOML file in `sandbox-profiles/`. It is parsed with unknown
//! keys rejected (the error names the key and the file), validated, and given
//! a digest over its canonical JSON form so that the daemon can put it in the
//! action key and in provenance. The helper only ever receives validated
//! profiles.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A validated sandbox policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The profile's name (its file stem).
    pub name: String,
    /// One line saying what the profile is for.
    pub description: String,
    /// Who the step runs as.
    #[serde(default)]
    pub user: User,
    /// Resource limits (defaults; a spec may override each).
    #[serde(default)]
    pub limits: Limits,
    /// Landlock policy.
    #[serde(default)]
    pub landlock: Landlock,
    /// Seccomp policy.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// The fixed parts of the environment.
    #[serde(default)]
    pub environment: Environment,
    /// Restrictions that may be recorded as weaker instead of failing the
    /// action when the kernel or the host cannot apply them. Empty (the
    /// strict default): every restriction is required.
    #[serde(default)]
    pub allow_weaker: Vec<Weakening>,
    /// Anomaly indicators (`[anomalies]`): what the helper watches and
    /// records. Left out of the digest while it is the default, so adding
    /// the section changed no existing profile's digest.
    #[serde(default, skip_serializing_if = "AnomalyWatch::is_default")]
    pub anomalies: AnomalyWatch,
}

/// Anomaly indicators a profile turns on (all on by default). The network
/// and exec watches need seccomp (they are seccomp user notifications);
/// with seccomp disabled the status says they were off and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AnomalyWatch {
    /// Record (and deny with ENETUNREACH) every `connect`, `sendto`,
    /// `sendmsg` and `sendmmsg` to an IPv4/IPv6 address other than
    /// loopback (default true).
    #[serde(default = "yes")]
    pub network: bool,
    /// Record every `execve`/`execveat` of a file the step created (in the
    /// `/work` upper layer, `/tmp`, `/dev/shm`, a memfd); it still runs
    /// (default true).
    #[serde(default = "yes")]
    pub foreign_exec: bool,
    /// Record paths written under `/work` outside the declared outputs
    /// (default true; nothing to record when no outputs are declared).
    #[serde(default = "yes")]
    pub writes_outside_outputs: bool,
    /// At most this many records of each kind; further ones are only
    /// counted (default 100).
    #[serde(default = "default_max_records")]
    pub max_records: u32,
}

fn default_max_records() -> u32 {
    100
}

impl Default for AnomalyWatch {
    fn default() -> Self {
        AnomalyWatch {
            network: true,
            foreign_exec: true,
            writes_outside_outputs: true,
            max_records: default_max_records(),
        }
    }
}

impl AnomalyWatch {
    /// Whether every field has its default.
    pub fn is_default(&self) -> bool {
        *self == AnomalyWatch::default()
    }
}

/// A restriction a profile may allow to be weaker than asked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Weakening {
    /// Landlock missing or only partly enforced.
    Landlock,
    /// No cgroup could be created: memory, pids and CPU limits fall back to
    /// rlimits (RLIMIT_AS, RLIMIT_NPROC, RLIMIT_CPU).
    Cgroup,
}

/// The identity of the step inside the sandbox.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    /// Uid inside the sandbox (default 1000).
    #[serde(default = "default_uid")]
    pub uid: u32,
    /// Gid inside the sandbox (default 1000).
    #[serde(default = "default_uid")]
    pub gid: u32,
    /// User name, in `USER` and the generated `/etc/passwd` entry (default `builder`).
    #[serde(default = "default_user_name")]
    pub name: String,
    /// Home directory (default `/tmp`, the sandbox's private tmpfs).
    #[serde(default = "default_home")]
    pub home: String,
}

fn default_uid() -> u32 {
    1000
}
fn default_user_name() -> String {
    "builder".into()
}
fn default_home() -> String {
    "/tmp".into()
}

impl Default for User {
    fn default() -> Self {
        User {
            uid: default_uid(),
            gid: default_uid(),
            name: default_user_name(),
            home: default_home(),
        }
    }
}

/// Resource limits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Wall-clock timeout in milliseconds (default 600000: ten minutes).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// After SIGTERM at the timeout, how long before SIGKILL (default 2000).
    #[serde(default = "default_grace")]
    pub grace_ms: u64,
    /// Memory limit in bytes (default none).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Process and thread limit (default 1024).
    #[serde(default = "default_pids")]
    pub pids: Option<u64>,
    /// CPU quota in milli-CPUs (default none).
    #[serde(default)]
    pub cpu_millis: Option<u64>,
    /// `/tmp` size in bytes (default 256 MiB).
    #[serde(default = "default_tmp")]
    pub tmp_bytes: u64,
    /// Scratch (everything written under `/work`) in bytes (default 4 GiB).
    #[serde(default = "default_scratch")]
    pub scratch_bytes: u64,
    /// RLIMIT_FSIZE in bytes (default 4 GiB).
    #[serde(default = "default_fsize")]
    pub fsize_bytes: Option<u64>,
    /// RLIMIT_NOFILE (default 1024).
    #[serde(default = "default_nofile")]
    pub nofile: u64,
}

fn default_timeout() -> u64 {
    600_000
}
fn default_grace() -> u64 {
    2_000
}
fn default_pids() -> Option<u64> {
    Some(1024)
}
fn default_tmp() -> u64 {
    256 << 20
}
fn default_scratch() -> u64 {
    4 << 30
}
fn default_fsize() -> Option<u64> {
    Some(4 << 30)
}
fn default_nofile() -> u64 {
    1024
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout_ms: default_timeout(),
            grace_ms: default_grace(),
            memory_bytes: None,
            pids: default_pids(),
            cpu_millis: None,
            tmp_bytes: default_tmp(),
            scratch_bytes: default_scratch(),
            fsize_bytes: default_fsize(),
            nofile: default_nofile(),
        }
    }
}

/// Landlock policy. The ABI is pinned: a kernel older than `abi` gives a
/// partly enforced ruleset, which fails the action unless the profile allows
/// a weaker Landlock.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Landlock {
    /// Apply Landlock at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The pinned ABI (default 6: filesystem, TCP and scoping; 7 adds only logging).
    #[serde(default = "default_abi")]
    pub abi: u8,
    /// TCP ports the step may bind (default none: every bind is denied).
    #[serde(default)]
    pub tcp_bind: Vec<u16>,
    /// TCP ports the step may connect to (default none).
    #[serde(default)]
    pub tcp_connect: Vec<u16>,
    /// Extra read-only paths inside the sandbox beyond the image.
    #[serde(default)]
    pub extra_read: Vec<String>,
}

fn yes() -> bool {
    true
}
fn default_abi() -> u8 {
    6
}

impl Default for Landlock {
    fn default() -> Self {
        Landlock {
            enabled: true,
            abi: default_abi(),
            tcp_bind: vec![],
            tcp_connect: vec![],
            extra_read: vec![],
        }
    }
}

/// Seccomp policy: a deny list over an allow-by-default filter, compiled
/// before the step starts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    /// Apply the filter at all (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Allow ptrace and process_vm_readv/writev (default false; `debug` sets it).
    #[serde(default)]
    pub allow_ptrace: bool,
    /// Allow perf_event_open (default false).
    #[serde(default)]
    pub allow_perf: bool,
    /// Further syscalls to deny with EPERM, by name.
    #[serde(default)]
    pub extra_deny: Vec<String>,
}

impl Default for Seccomp {
    fn default() -> Self {
        Seccomp {
            enabled: true,
            allow_ptrace: false,
            allow_perf: false,
            extra_deny: vec![],
        }
    }
}

/// The fixed parts of the environment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    /// Hostname (default `localhost`). The NIS domain name is always `(none)`.
    #[serde(default = "default_hostname")]
    pub hostname: String,
    /// `PATH` when the spec gives none.
    #[serde(default = "default_path")]
    pub path: String,
    /// `TZ` (default `UTC`).
    #[serde(default = "default_tz")]
    pub tz: String,
    /// `LANG` (default `C.UTF-8`).
    #[serde(default = "default_lang")]
    pub lang: String,
    /// `SOURCE_DATE_EPOCH` when the spec gives none (default 0).
    #[serde(default)]
    pub source_date_epoch: u64,
    /// The umask (default 0o022).
    #[serde(default = "default_umask")]
    pub umask: u32,
}

fn default_hostname() -> String {
    "localhost".into()
}
fn default_path() -> String {
    "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin".into()
}
fn default_tz() -> String {
    "UTC".into()
}
fn default_lang() -> String {
    "C.UTF-8".into()
}
fn default_umask() -> u32 {
    0o022
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            hostname: default_hostname(),
            path: default_path(),
            tz: default_tz(),
            lang: default_lang(),
            source_date_epoch: 0,
            umask: default_umask(),
        }
    }
}

/// A profile that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key (toml names the key).
    #[error("invalid profile {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message, naming the key and line.
        message: String,
    },
    /// A value is out of range.
    #[error("invalid profile {path}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// No profile of that name.
    #[error("no sandbox profile named {name:?} in {dir}")]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where it was looked for.
        dir: String,
    },
}

impl Profile {
    /// Parses and validates a profile from TOML text; `origin` names the
    /// file in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let profile: Profile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        profile
            .validate()
            .map_err(|message| ProfileError::Invalid {
                path: origin.to_owned(),
                message,
            })?;
        Ok(profile)
    }

    /// Loads `DIR/NAME.toml`. The file stem must equal the `name` key.
    pub fn load(dir: &Path, name: &str) -> Result<Self, ProfileError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(ProfileError::NotFound {
                name: name.to_owned(),
                dir: dir.display().to_string(),
            });
        }
        let path = dir.join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ProfileError::NotFound {
                    name: name.to_owned(),
                    dir: dir.display().to_string(),
                }
            } else {
                ProfileError::Read {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
        let profile = Self::from_toml(&text, &path.display().to_string())?;
        if profile.name != name {
            return Err(ProfileError::Invalid {
                path: path.display().to_string(),
                message: format!("name {:?} does not match the file name", profile.name),
            });
        }
        Ok(profile)
    }

    /// Every profile in a directory, by name.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, ProfileError> {
        let read_err = |source| ProfileError::Read {
            path: dir.display().to_string(),
            source,
        };
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().is_some_and(|e| e == "toml")
                && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
            {
                names.push(stem.to_owned());
            }
        }
        names.sort();
        names.iter().map(|n| Self::load(dir, n)).collect()
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "name {:?} must be non-empty [A-Za-z0-9_-]",
                self.name
            ));
        }
        if self.user.uid == 0 && !self.seccomp.enabled {
            return Err("a step running as uid 0 must keep seccomp enabled".into());
        }
        if !(1..=7).contains(&self.landlock.abi) {
            return Err(format!(
                "landlock.abi {} is not between 1 and 7",
                self.landlock.abi
            ));
        }
        if self.limits.timeout_ms == 0 {
            return Err("limits.timeout_ms must be positive".into());
        }
        if self.limits.tmp_bytes < 4096 || self.limits.scratch_bytes < 4096 {
            return Err("limits.tmp_bytes and limits.scratch_bytes must be at least 4096".into());
        }
        if self.environment.umask > 0o777 {
            return Err(format!(
                "environment.umask {:o} is not a mode",
                self.environment.umask
            ));
        }
        for p in &self.landlock.extra_read {
            if !p.starts_with('/') {
                return Err(format!("landlock.extra_read {p:?} must be absolute"));
            }
        }
        let host = &self.environment.hostname;
        if host.is_empty() || host.len() > 64 {
            return Err(format!(
                "environment.hostname {host:?} must be 1 to 64 bytes"
            ));
        }
        for name in &self.seccomp.extra_deny {
            if crate::seccomp::syscall_number(name).is_none() {
                return Err(format!("seccomp.extra_deny: unknown syscall {name:?}"));
            }
        }
        Ok(())
    }

    /// `sha256:HEX` over the canonical (sorted-key, compact) JSON form.
    pub fn digest(&self) -> String {
        let value = serde_json::to_value(self).expect("profile serializes");
        let canonical = serde_json::to_vec(&value).expect("value serializes");
        format!("sha256:{}", hex(&Sha256::digest(&canonical)))
    }
}

/// Lower-case hex of a byte slice.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_profiles() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles")
    }

    #[test]
    fn shipped_profiles_load_and_differ() {
        let all = Profile::load_dir(&repo_profiles()).unwrap();
        let names: Vec<_> = all.iter().map(|p| p.name.as_str()).collect();
        assert!(
            names.contains(&"strict") && names.contains(&"debug"),
            "{names:?}"
        );
        let strict = Profile::load(&repo_profiles(), "strict").unwrap();
        let debug = Profile::load(&repo_profiles(), "debug").unwrap();
        assert!(
            strict.allow_weaker.is_empty(),
            "strict allows nothing weaker"
        );
        assert!(!strict.seccomp.allow_ptrace && debug.seccomp.allow_ptrace);
        assert_ne!(strict.digest(), debug.digest());
        assert!(strict.digest().starts_with("sha256:") && strict.digest().len() == 7 + 64);
    }

    #[test]
    fn digest_is_stable_and_covers_every_field() {
        let a = Profile::load(&repo_profiles(), "strict").unwrap();
        let b = Profile::from_toml(
            &std::fs::read_to_string(repo_profiles().join("strict.toml")).unwrap(),
            "x",
        )
        .unwrap();
        assert_eq!(a.digest(), b.digest());
        let mut c = a.clone();
        c.limits.nofile += 1;
        assert_ne!(a.digest(), c.digest());
    }

    #[test]
    fn anomalies_at_their_defaults_leave_the_digest_alone() {
        let text = std::fs::read_to_string(repo_profiles().join("strict.toml")).unwrap();
        let at = text
            .find("[anomalies]")
            .expect("strict.toml documents [anomalies]");
        let with = Profile::from_toml(&text, "strict.toml").unwrap();
        let without = Profile::from_toml(&text[..at], "strict.toml").unwrap();
        assert_eq!(with, without);
        assert_eq!(with.digest(), without.digest());
        let mut quiet = with.clone();
        quiet.anomalies.network = false;
        assert_ne!(quiet.digest(), with.digest());
        let bad = format!("{}[anomalies]\nnetwrok = false\n", &text[..at]);
        let err = Profile::from_toml(&bad, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("netwrok"), "{err}");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let text = "name = \"x\"\ndescription = \"d\"\n[limits]\ntimeout_secs = 5\n";
        let err = Profile::from_toml(text, "bad.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad.toml") && err.contains("timeout_secs"),
            "{err}"
        );
    }

    #[test]
    fn invalid_values_are_rejected() {
        let base = "name = \"x\"\ndescription = \"d\"\n";
        for (extra, needle) in [
            ("[landlock]\nabi = 9\n", "landlock.abi"),
            ("[limits]\ntimeout_ms = 0\n", "timeout_ms"),
            ("[seccomp]\nextra_deny = [\"nosuchcall\"]\n", "nosuchcall"),
            ("[environment]\nhostname = \"\"\n", "hostname"),
            ("[user]\nuid = 0\n[seccomp]\nenabled = false\n", "uid 0"),
        ] {
            let err = Profile::from_toml(&format!("{base}{extra}"), "p.toml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{extra:?}: {err}");
        }
    }

    #[test]
    fn names_that_escape_the_directory_are_not_found() {
        for name in ["../strict", "", ".hidden", "a/b"] {
            assert!(
                matches!(
                    Profile::load(&repo_profiles(), name),
                    Err(ProfileError::NotFound { .. })
                ),
                "{name}"
            );
        }
        let err = Profile::load(&repo_profiles(), "nope")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope"), "{err}");
    }
}

//! The daemon's configuration: a TOML file whose every field has a default.
//!
//! Unknown keys are rejected with the key named (serde's
//! `deny_unknown_fields`); command-line flags override the file (see
//! `main.rs`). `executor/hermeticd.example.toml` shows every field and is
//! loaded by a test so that it cannot drift.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A configuration that failed to load or resolve.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TOML is malformed or has an unknown key (the message names it).
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// toml's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory holding the CAS, the action cache and per-action work
    /// directories. Default: `/var/lib/hermetic` when run as root, otherwise
    /// `$XDG_STATE_HOME/hermetic` (`~/.local/state/hermetic`).
    pub state_dir: Option<PathBuf>,
    /// Addresses to serve on, each `unix:///absolute/path` or
    /// `tcp://host:port`. Default (empty list): the Unix socket
    /// `/run/hermetic/hermeticd.sock` as root, otherwise
    /// `$XDG_RUNTIME_DIR/hermetic/hermeticd.sock`, and `tcp://127.0.0.1:8980`.
    /// gRPC clients on a Unix socket must send the authority `localhost`.
    pub listen: Vec<String>,
    /// Instance names served. Default: `[""]` (only the empty name). A name
    /// may have several `/`-separated segments; none may be a reserved word
    /// (`blobs`, `uploads`, `operations`, ...).
    pub instance_names: Option<Vec<String>>,
    /// Actions run at once. Default 0: the number of cores.
    pub jobs: usize,
    /// Actions waiting for a slot before Execute answers RESOURCE_EXHAUSTED.
    /// Default 0: 256.
    pub max_queued: usize,
    /// The sandbox helper binary. Default: `hermetic-sandbox` next to the
    /// `hermeticd` executable, then on `PATH`.
    pub sandbox_helper: Option<PathBuf>,
    /// How actions reach the helper: `"supervisor"` (one long-lived
    /// `hermetic-sandbox --supervisor` per daemon that forks a runner per
    /// action; restarted if it dies, failing the actions then in flight as
    /// UNAVAILABLE) or `"exec"` (one helper process per action, with its
    /// spec and status as files). Default: `"supervisor"`.
    pub sandbox_mode: SandboxMode,
    /// A delegated cgroup under which the helper creates each action's
    /// cgroup: a cgroup v2 directory (`/sys/fs/cgroup/hermetic.slice`), or
    /// on cgroup v1 a path relative to each controller's hierarchy. It must
    /// exist and be writable by the helper. Default: none (the helper's
    /// own cgroup).
    pub cgroup_parent: Option<PathBuf>,
    /// Directory of sandbox profiles (`*.toml`), all loaded at start-up.
    /// Default: the source tree's `sandbox-profiles/` when it exists, then
    /// `/usr/share/hermetic/sandbox-profiles`.
    pub profiles_dir: Option<PathBuf>,
    /// Profile used when an action names none with `hermetic-profile`.
    /// Default: `strict`.
    pub default_profile: Option<String>,
    /// Images imported into the image store at start-up, alias -> path:
    /// an OCI layout (directory or tar), a docker archive, a rootfs tarball
    /// or a root filesystem directory. Each is imported (an image already
    /// stored is not duplicated), its alias pointed at it and, unless an
    /// admin already recorded a decision, marked trusted by `config`.
    /// Actions still name them by digest. Default: none.
    pub images: BTreeMap<String, PathBuf>,
    /// Image used when an action names none (older clients send an empty
    /// platform): an alias or a digest, resolved to a digest at start-up.
    /// Default: none (such actions fail with FAILED_PRECONDITION).
    pub default_image: Option<String>,
    /// Run actions only on images an admin marked trusted
    /// (`hermetic image trust`). Default: true.
    pub require_trusted_images: Option<bool>,
    /// The image store (imported base images, aliases, trust records).
    /// Default: `images` in the state directory. `hermetic run --local`
    /// uses the daemon's.
    pub image_store: Option<PathBuf>,
    /// Upper bound on an action's timeout in seconds; longer requests are
    /// capped. Default 0: 3600.
    pub max_action_timeout_secs: u64,
    /// On SIGTERM, how long running actions may take to finish before they
    /// are killed and reported as failed, in seconds. Default 0: 30.
    pub shutdown_grace_secs: u64,
    /// How long a finished operation stays visible to WaitExecution and
    /// GetOperation, in seconds. Default 0: 600.
    pub operation_retention_secs: u64,
    /// Content-addressed storage.
    pub cas: CasConfig,
    /// Action cache.
    pub action_cache: ActionCacheConfig,
    /// Authentication and roles (see `auth`). Default: root and the
    /// daemon's own user hold every role; nobody else holds any.
    pub auth: crate::auth::AuthConfig,
    /// The Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Per-principal quotas (see `sched`). Default: none.
    pub quotas: crate::sched::QuotaConfig,
    /// Retention and garbage collection (see `gc`): `period` (default
    /// `"30d"`), `gc_interval` (default `"1h"`, `"0s"`: no periodic pass).
    pub retention: crate::gc::RetentionConfig,
    /// Log lines: `"text"` (default) or `"json"` (one object per line).
    pub log_format: LogFormat,
    /// Signed provenance, SBOMs and the transparency log.
    pub provenance: ProvenanceConfig,
    /// The alert hook (`[alerts]`: `command`, `webhook`, `timeout_secs`),
    /// fired on anomalies and verification failures. Default: none.
    pub alerts: crate::alerts::AlertConfig,
    /// Span export (`[tracing]`: `otlp_endpoint`, default none = no
    /// export; `service_name`, default `"hermeticd"`); see `telemetry`.
    pub tracing: crate::telemetry::TracingConfig,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable.
    #[default]
    Text,
    /// JSON objects, one per line, with the span fields.
    Json,
}

/// The Prometheus endpoint (`GET /metrics`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` to serve on. Default: `127.0.0.1:9464` (loopback).
    pub listen: Option<String>,
    /// Serve no metrics. Default false.
    pub disabled: bool,
}

impl MetricsConfig {
    /// The address, when enabled.
    pub fn address(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if self.disabled {
            return Ok(None);
        }
        let text = self.listen.as_deref().unwrap_or("127.0.0.1:9464");
        use std::net::ToSocketAddrs;
        text.to_socket_addrs()
            .map_err(|e| ConfigError::Invalid(format!("metrics.listen {text:?}: {e}")))?
            .next()
            .map(Some)
            .ok_or_else(|| ConfigError::Invalid(format!("metrics.listen {text:?}: no address")))
    }
}

/// Provenance settings. Keys and log live in `<state_dir>/attest`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ProvenanceConfig {
    /// This host's builder identity, a URI (SLSA `runDetails.builder.id`).
    /// Default: `https://HOSTNAME/hermeticd`.
    pub builder_id: Option<String>,
    /// The transparency log's origin (the first line of its checkpoints),
    /// a schema-less URL. It is fixed when the log is created: the daemon
    /// refuses to open a log under another origin. Default:
    /// `HOSTNAME/hermeticd/log`.
    pub log_origin: Option<String>,
    /// List every input file (path, SHA-256, BLAKE3) in the provenance's
    /// `resolvedDependencies`. Default false: the input root's digest only.
    pub record_inputs: bool,
}

impl ProvenanceConfig {
    /// The builder id on `host`.
    pub fn builder_id(&self, host: &str) -> String {
        self.builder_id
            .clone()
            .unwrap_or_else(|| format!("https://{host}/hermeticd"))
    }

    /// The log origin on `host`.
    pub fn log_origin(&self, host: &str) -> String {
        self.log_origin
            .clone()
            .unwrap_or_else(|| format!("{host}/hermeticd/log"))
    }
}

/// How the daemon drives the sandbox helper.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// One long-lived `hermetic-sandbox --supervisor`; specs and statuses
    /// as JSON lines over its stdin and stdout.
    #[default]
    Supervisor,
    /// `hermetic-sandbox --spec FILE --status FILE` per action.
    Exec,
}

/// CAS settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CasConfig {
    /// Total size of stored blobs above which least-recently-used blobs are
    /// evicted. Default 0: 20 GiB.
    pub max_size_bytes: u64,
    /// Largest blob accepted, in bytes. Default 0: no limit beyond
    /// `max_size_bytes`.
    pub max_blob_size_bytes: u64,
    /// Largest total of a BatchUpdateBlobs or BatchReadBlobs request, in
    /// bytes. Default 0: 4 MiB less 64 KiB for framing.
    pub max_batch_total_size_bytes: u64,
    /// Deepest Directory tree accepted as an input root. Default 0: 128.
    pub max_tree_depth: usize,
    /// Skip fsync of blob files and their directories (faster, unsafe on
    /// power loss; a killed daemon still never shows a torn blob). Default
    /// false.
    pub no_fsync: bool,
    /// How a BatchUpdateBlobs request is made durable before it is
    /// acknowledged: `"journal"` (default) writes every blob to a temp
    /// file, appends them all to the CAS journal and flushes it once
    /// (`fdatasync`), then renames the files into place; a checkpoint
    /// flushes the files later (30 s on, on a background thread) and drops
    /// the records, and a start-up after a crash restores any file the
    /// crash lost from the journal. `"fsync"` (for batches of 64 blobs or
    /// more; smaller ones fsync each blob) writes and fsyncs each blob's
    /// file on a few threads (the filesystem commits their fsyncs
    /// together), renames it into place, then fsyncs each directory
    /// renamed into once; `"syncfs"` writes every blob, flushes the store's
    /// filesystem once (`syncfs`), renames them into place and flushes once
    /// more: it also flushes every other writer's data on that filesystem,
    /// so on a shared one it can take seconds. Ignored with `no_fsync`.
    pub batch_commit: BatchCommit,
}

/// See [`CasConfig::batch_commit`].
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum BatchCommit {
    /// One flush of the journal per batch; the files are flushed later.
    #[default]
    Journal,
    /// An fsync per blob and one per directory.
    Fsync,
    /// Two `syncfs` of the store's filesystem per batch.
    Syncfs,
}

/// Action cache settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ActionCacheConfig {
    /// Let clients write results with UpdateActionResult. Default false:
    /// only results of actions this daemon ran are cached, so no client can
    /// poison the cache; UpdateActionResult answers PERMISSION_DENIED.
    pub allow_client_updates: bool,
}

/// Where to listen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// A Unix socket path.
    Unix(PathBuf),
    /// A TCP address.
    Tcp(SocketAddr),
}

impl ListenAddr {
    /// Parses `unix:///path` or `tcp://host:port`.
    pub fn parse(uri: &str) -> Result<Self, ConfigError> {
        if let Some(path) = uri.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(ConfigError::Invalid(format!(
                    "listen {uri:?}: a unix socket path must be absolute (unix:///path)"
                )));
            }
            Ok(ListenAddr::Unix(PathBuf::from(path)))
        } else if let Some(addr) = uri.strip_prefix("tcp://") {
            use std::net::ToSocketAddrs;
            let resolved = addr
                .to_socket_addrs()
                .map_err(|e| ConfigError::Invalid(format!("listen {uri:?}: {e}")))?
                .next()
                .ok_or_else(|| ConfigError::Invalid(format!("listen {uri:?}: no address")))?;
            Ok(ListenAddr::Tcp(resolved))
        } else {
            Err(ConfigError::Invalid(format!(
                "listen {uri:?}: expected unix:///path or tcp://host:port"
            )))
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix://{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

/// Words an instance-name segment may not be.
pub const RESERVED_SEGMENTS: [&str; 8] = [
    "blobs",
    "uploads",
    "actions",
    "actionResults",
    "operations",
    "capabilities",
    "compressed-blobs",
    "compressed",
];

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

impl Config {
    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what can be checked without touching the system.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for name in self.instance_names() {
            if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
                return Err(ConfigError::Invalid(format!(
                    "instance name {name:?} has an empty segment"
                )));
            }
            if !name.is_empty()
                && let Some(seg) = name.split('/').find(|s| RESERVED_SEGMENTS.contains(s))
            {
                return Err(ConfigError::Invalid(format!(
                    "instance name {name:?} uses the reserved segment {seg:?}"
                )));
            }
        }
        for uri in &self.listen {
            if let ListenAddr::Tcp(a) = ListenAddr::parse(uri)?
                && !a.ip().is_loopback()
                && self.auth.tls.is_none()
            {
                return Err(ConfigError::Invalid(format!(
                    "listen {uri:?}: TCP beyond loopback needs mutual TLS ([auth.tls])"
                )));
            }
        }
        self.retention
            .period()
            .and(self.retention.gc_interval())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.metrics.address()?;
        self.alerts.validate()?;
        self.tracing.validate()?;
        for (name, root) in &self.images {
            if !root.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "images.{name}: {} is not an absolute path",
                    root.display()
                )));
            }
        }
        Ok(())
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        if let Some(d) = &self.state_dir {
            return d.clone();
        }
        if running_as_root() {
            return PathBuf::from("/var/lib/hermetic");
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
            .unwrap_or_else(|| PathBuf::from("/tmp"));
        base.join("hermetic")
    }

    /// The image store directory.
    pub fn image_store(&self) -> PathBuf {
        self.image_store
            .clone()
            .unwrap_or_else(|| self.state_dir().join("images"))
    }

    /// Whether actions need trusted images.
    pub fn require_trusted_images(&self) -> bool {
        self.require_trusted_images.unwrap_or(true)
    }

    /// The addresses to serve on.
    pub fn listen_addrs(&self) -> Result<Vec<ListenAddr>, ConfigError> {
        if !self.listen.is_empty() {
            return self.listen.iter().map(|u| ListenAddr::parse(u)).collect();
        }
        let socket = if running_as_root() {
            PathBuf::from("/run/hermetic/hermeticd.sock")
        } else {
            let runtime = std::env::var_os("XDG_RUNTIME_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(std::env::temp_dir);
            runtime.join("hermetic/hermeticd.sock")
        };
        Ok(vec![
            ListenAddr::Unix(socket),
            ListenAddr::Tcp(SocketAddr::from(([127, 0, 0, 1], 8980))),
        ])
    }

    /// The served instance names.
    pub fn instance_names(&self) -> Vec<String> {
        self.instance_names
            .clone()
            .unwrap_or_else(|| vec![String::new()])
    }

    /// Concurrent actions.
    pub fn jobs(&self) -> usize {
        if self.jobs > 0 {
            self.jobs
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// Queue capacity.
    pub fn max_queued(&self) -> usize {
        if self.max_queued > 0 {
            self.max_queued
        } else {
            256
        }
    }

    /// The profile used when an action names none.
    pub fn default_profile(&self) -> &str {
        self.default_profile.as_deref().unwrap_or("strict")
    }

    /// The cap on action timeouts.
    pub fn max_action_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(nonzero_or(self.max_action_timeout_secs, 3600))
    }

    /// The shutdown grace period.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(nonzero_or(self.shutdown_grace_secs, 30))
    }

    /// How long finished operations are kept.
    pub fn operation_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(nonzero_or(self.operation_retention_secs, 600))
    }

    /// The sandbox helper: configured, else next to this executable, else
    /// on `PATH` (as a bare name, resolved when spawned).
    pub fn sandbox_helper(&self) -> PathBuf {
        if let Some(p) = &self.sandbox_helper {
            return p.clone();
        }
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            let sibling = dir.join("hermetic-sandbox");
            if sibling.is_file() {
                return sibling;
            }
        }
        PathBuf::from("hermetic-sandbox")
    }

    /// The profiles directory: configured, else the source tree's, else the
    /// installed one. `None` when none exists.
    pub fn profiles_dir(&self) -> Option<PathBuf> {
        if let Some(p) = &self.profiles_dir {
            return Some(p.clone());
        }
        let source_tree = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../sandbox-profiles"));
        [
            source_tree.to_path_buf(),
            PathBuf::from("/usr/share/hermetic/sandbox-profiles"),
        ]
        .into_iter()
        .find(|p| p.is_dir())
    }
}

impl CasConfig {
    /// The eviction threshold.
    pub fn max_size(&self) -> u64 {
        nonzero_or(self.max_size_bytes, 20 << 30)
    }

    /// The largest single blob.
    pub fn max_blob_size(&self) -> u64 {
        nonzero_or(self.max_blob_size_bytes, self.max_size())
    }

    /// The batch limit advertised in capabilities.
    pub fn max_batch_total_size(&self) -> u64 {
        nonzero_or(self.max_batch_total_size_bytes, (4 << 20) - (64 << 10))
    }

    /// The input tree depth limit.
    pub fn max_tree_depth(&self) -> usize {
        if self.max_tree_depth > 0 {
            self.max_tree_depth
        } else {
            128
        }
    }
}

fn nonzero_or(value: u64, default: u64) -> u64 {
    if value > 0 { value } else { default }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = Config::parse("jobz = 3\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jobz"), "{err}");
        let err = Config::parse("[cas]\nmax_size = 3\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_size"), "{err}");
    }

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("hermeticd.example.toml");
        let config = Config::load(&path).unwrap();
        assert_eq!(config.default_profile(), "strict");
        assert!(!config.action_cache.allow_client_updates);
        assert_eq!(config.listen_addrs().unwrap().len(), 2);
        assert_eq!(config.sandbox_mode, SandboxMode::Supervisor);
        assert_eq!(config.cas.batch_commit, BatchCommit::Journal);
        assert_eq!(BatchCommit::default(), BatchCommit::Journal);
        assert_eq!(
            config.retention.period().unwrap(),
            std::time::Duration::from_secs(30 * 86400)
        );
        let err = Config::parse("[retention]\ngc_interval = \"often\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("retention.gc_interval"), "{err}");
        let exec = Config::parse("sandbox_mode = \"exec\"\n", "t").unwrap();
        assert_eq!(exec.sandbox_mode, SandboxMode::Exec);
        let err = Config::parse("sandbox_mode = \"fork\"\n", "t").unwrap_err();
        assert!(err.to_string().contains("fork"), "{err}");
    }

    #[test]
    fn listen_uris() {
        assert_eq!(
            ListenAddr::parse("unix:///run/x.sock").unwrap(),
            ListenAddr::Unix("/run/x.sock".into())
        );
        assert!(matches!(
            ListenAddr::parse("tcp://127.0.0.1:0").unwrap(),
            ListenAddr::Tcp(_)
        ));
        assert!(ListenAddr::parse("unix://rel").is_err());
        assert!(ListenAddr::parse("http://x").is_err());
    }

    #[test]
    fn reserved_instance_segments_are_refused() {
        assert!(Config::parse("instance_names = [\"a/blobs\"]", "t").is_err());
        assert!(Config::parse("instance_names = [\"a/b\", \"\"]", "t").is_ok());
    }
}

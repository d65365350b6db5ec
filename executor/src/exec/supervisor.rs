//! Supervisor mode: ONE long-lived `hermetic-sandbox --supervisor` per
//! daemon, which forks a runner per action instead of paying the helper's
//! `execve` (and, as root, sets `favordynmods` on the cgroup2 mount so
//! that moving each action into its cgroup is cheap).
//!
//! Protocol (the helper's `supervisor.rs`), one JSON object per line:
//! the daemon writes `{"id":N,"spec":SPEC}` and `{"id":N,"cancel":true}`;
//! the helper answers `{"id":N,"status":STATUS}` once per spec, in
//! completion order. A reader task hands each status to the waiting
//! action through a oneshot channel.
//!
//! The process is started lazily, in its own process group, and restarted
//! for the next action when it dies. Its death fails every action then in
//! flight as UNAVAILABLE (the client may retry); runners it leaves behind
//! get SIGTERM (so each tears its sandbox down), then SIGKILL.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hermetic_sandbox::spec::Spec;
use hermetic_sandbox::status::Status;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::{oneshot, watch};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::error::{Error, Result};
use crate::exec::helper::HelperRun;
use crate::systemd::StripSystemdEnv as _;

/// What the reader task hands an action: its status, or why the
/// supervisor can no longer give one.
type Reply = std::result::Result<Status, String>;

/// Actions waiting for a status, or why none will come.
#[derive(Debug)]
enum Pending {
    /// The supervisor runs; these ids wait.
    Alive(HashMap<u64, oneshot::Sender<Reply>>),
    /// The supervisor is gone, for this reason.
    Dead(String),
}

/// `{"id":N,"spec":SPEC}`.
#[derive(Serialize)]
struct RunLine<'a> {
    id: u64,
    spec: &'a Spec,
}

/// `{"id":N,"cancel":true}`.
#[derive(Serialize)]
struct CancelLine {
    id: u64,
    cancel: bool,
}

/// `{"id":N,"status":STATUS}`.
#[derive(Deserialize)]
struct StatusLine {
    id: u64,
    status: Status,
}

/// One started supervisor process.
#[derive(Debug)]
struct Process {
    pid: u32,
    /// Dropping it (with the [`Supervisor`]) closes the supervisor's
    /// input, which ends it once its running actions finish.
    stdin: tokio::sync::Mutex<ChildStdin>,
    pending: Arc<Mutex<Pending>>,
}

fn lock(m: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Process {
    fn is_alive(&self) -> bool {
        matches!(*lock(&self.pending), Pending::Alive(_))
    }

    /// Registers `id`; fails when the process is already dead.
    fn register(&self, id: u64) -> std::result::Result<oneshot::Receiver<Reply>, String> {
        match &mut *lock(&self.pending) {
            Pending::Alive(waiting) => {
                let (tx, rx) = oneshot::channel();
                waiting.insert(id, tx);
                Ok(rx)
            }
            Pending::Dead(why) => Err(why.clone()),
        }
    }

    fn forget(&self, id: u64) {
        if let Pending::Alive(waiting) = &mut *lock(&self.pending) {
            waiting.remove(&id);
        }
    }

    async fn write_line(&self, line: &[u8]) -> std::io::Result<()> {
        let mut stdin = self.stdin.lock().await;
        stdin.write_all(line).await?;
        stdin.flush().await
    }
}

/// The daemon's supervisor: started on first use, restarted after a death.
#[derive(Debug)]
pub struct Supervisor {
    helper: PathBuf,
    grace: Duration,
    next_id: AtomicU64,
    current: tokio::sync::Mutex<Option<Arc<Process>>>,
}

impl Supervisor {
    /// A supervisor for `helper`, not started yet. `grace` is how long a
    /// cancelled action, and runners left by a dead supervisor, get to
    /// stop before being given up on (or killed).
    pub fn new(helper: PathBuf, grace: Duration) -> Self {
        Supervisor {
            helper,
            grace,
            // Id 0 is what the helper answers malformed lines with.
            next_id: AtomicU64::new(1),
            current: tokio::sync::Mutex::new(None),
        }
    }

    /// The running supervisor's pid, if one runs.
    pub async fn pid(&self) -> Option<u32> {
        let current = self.current.lock().await;
        current.as_ref().filter(|p| p.is_alive()).map(|p| p.pid)
    }

    /// The running process, started when there is none (or it died).
    async fn process(&self) -> Result<Arc<Process>> {
        let mut current = self.current.lock().await;
        if let Some(p) = current.as_ref().filter(|p| p.is_alive()) {
            return Ok(p.clone());
        }
        let p = self.spawn()?;
        *current = Some(p.clone());
        Ok(p)
    }

    fn spawn(&self) -> Result<Arc<Process>> {
        let mut child = tokio::process::Command::new(&self.helper)
            .arg("--supervisor")
            .strip_systemd_env()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own group: a Ctrl-C meant for the daemon does not cancel
            // every action behind the daemon's back, and the runners a dead
            // supervisor leaves can be found and stopped.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "cannot start the sandbox supervisor {} --supervisor: {e}",
                    self.helper.display()
                ))
            })?;
        let pid = child.id().unwrap_or(0);
        let take = |what: &str| Error::Internal(format!("the supervisor's {what} is not piped"));
        let stdin = child.stdin.take().ok_or_else(|| take("stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| take("stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| take("stderr"))?;
        info!(pid, helper = %self.helper.display(), "sandbox supervisor started");
        let pending = Arc::new(Mutex::new(Pending::Alive(HashMap::new())));
        // A root span: the supervisor outlives the action that started it, and
        // a child would keep that action's span open (never exported).
        let span = info_span!(parent: None, "sandbox_supervisor", pid);
        tokio::spawn(forward_stderr(stderr).instrument(span.clone()));
        tokio::spawn(
            read_statuses(stdout, child, pending.clone(), pid, self.grace).instrument(span),
        );
        Ok(Arc::new(Process {
            pid,
            stdin: tokio::sync::Mutex::new(stdin),
            pending,
        }))
    }

    /// Sends `line` for `id`; on a process that died meanwhile, tries once
    /// more with a fresh one.
    async fn submit(
        &self,
        id: u64,
        line: &[u8],
    ) -> Result<(Arc<Process>, oneshot::Receiver<Reply>)> {
        let mut last = String::new();
        for _ in 0..2 {
            let process = self.process().await?;
            let rx = match process.register(id) {
                Ok(rx) => rx,
                Err(why) => {
                    last = why;
                    continue;
                }
            };
            match process.write_line(line).await {
                Ok(()) => return Ok((process, rx)),
                Err(e) => {
                    process.forget(id);
                    last = format!("cannot write to the sandbox supervisor: {e}");
                }
            }
        }
        Err(Error::Unavailable(format!(
            "the sandbox supervisor is not available: {last}"
        )))
    }

    /// Runs one spec to its status. A supervisor death while the action
    /// runs is UNAVAILABLE; cancellation and the backstop send a cancel
    /// line and wait `grace` for the runner's report.
    pub async fn run(
        &self,
        spec: &Spec,
        cancel: &mut watch::Receiver<bool>,
        backstop: Duration,
    ) -> Result<HelperRun> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut line = serde_json::to_vec(&RunLine { id, spec })
            .map_err(|e| Error::Internal(format!("spec does not serialize: {e}")))?;
        line.push(b'\n');
        let (process, mut rx) = self.submit(id, &line).await?;
        debug!(id, pid = process.pid, "spec sent to the sandbox supervisor");
        let mut cancelled = *cancel.borrow();
        let mut overran = false;
        let reply = if cancelled {
            None
        } else {
            tokio::select! {
                r = &mut rx => Some(r),
                _ = cancel.wait_for(|c| *c) => { cancelled = true; None }
                _ = tokio::time::sleep(backstop) => { overran = true; None }
            }
        };
        let reply = match reply {
            Some(r) => r,
            None => {
                let mut cancel_line =
                    serde_json::to_vec(&CancelLine { id, cancel: true }).expect("serializes");
                cancel_line.push(b'\n');
                if let Err(e) = process.write_line(&cancel_line).await {
                    warn!(id, cause = %e, "cannot send a cancel to the sandbox supervisor");
                }
                match tokio::time::timeout(self.grace, &mut rx).await {
                    Ok(r) => r,
                    Err(_) => {
                        process.forget(id);
                        warn!(
                            id,
                            "the sandbox supervisor did not report a cancelled action"
                        );
                        return Ok(HelperRun {
                            status: None,
                            problem: Some(format!(
                                "the sandbox supervisor did not report the cancelled action \
                                 within {:?}",
                                self.grace
                            )),
                            cancelled,
                            overran,
                        });
                    }
                }
            }
        };
        let died = match reply {
            Ok(Ok(status)) => {
                return Ok(HelperRun {
                    status: Some(status),
                    problem: None,
                    cancelled,
                    overran,
                });
            }
            Ok(Err(why)) => why,
            Err(_) => "the sandbox supervisor's reader stopped".to_owned(),
        };
        if cancelled || overran {
            return Ok(HelperRun {
                status: None,
                problem: Some(died),
                cancelled,
                overran,
            });
        }
        Err(Error::Unavailable(format!(
            "{died} while the action ran; it was not completed and may be retried"
        )))
    }
}

/// Copies the supervisor's stderr into the daemon's log, line by line.
async fn forward_stderr(stderr: ChildStderr) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.contains("warning") || line.contains("error") {
            warn!(target: "hermetic_sandbox", "{line}");
        } else {
            info!(target: "hermetic_sandbox", "{line}");
        }
    }
}

/// Dispatches status lines until the supervisor exits (or closes its
/// output), then stops the runners it left and fails every waiting action.
///
/// Death is seen through `wait`, not end of output: forked runners hold
/// the output pipe open until they finish.
async fn read_statuses(
    stdout: ChildStdout,
    mut child: Child,
    pending: Arc<Mutex<Pending>>,
    pid: u32,
    grace: Duration,
) {
    let mut lines = BufReader::new(stdout).lines();
    let exit = loop {
        tokio::select! {
            line = lines.next_line() => match line {
                Ok(Some(line)) => dispatch(&pending, &line),
                Ok(None) => break reap(&mut child).await,
                Err(e) => {
                    warn!(cause = %e, "cannot read the sandbox supervisor's output");
                    break reap(&mut child).await;
                }
            },
            status = child.wait() => {
                // Statuses written just before it died are still in the pipe.
                while let Ok(Ok(Some(line))) =
                    tokio::time::timeout(Duration::from_millis(50), lines.next_line()).await
                {
                    dispatch(&pending, &line);
                }
                break match status {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
            }
        }
    };
    let why = format!("the sandbox supervisor (pid {pid}) died ({exit})");
    let waiting = match std::mem::replace(&mut *lock(&pending), Pending::Dead(why.clone())) {
        Pending::Alive(w) => w,
        Pending::Dead(_) => HashMap::new(),
    };
    if waiting.is_empty() {
        info!("{why}");
    } else {
        warn!(in_flight = waiting.len(), "{why}");
        stop_group(pid, grace).await;
    }
    for (_, tx) in waiting {
        let _ = tx.send(Err(why.clone()));
    }
}

/// Waits for a supervisor that closed its output to exit; kills it when
/// it does not.
async fn reap(child: &mut Child) -> String {
    match tokio::time::timeout(Duration::from_secs(2), child.wait()).await {
        Ok(Ok(status)) => status.to_string(),
        Ok(Err(e)) => format!("wait failed: {e}"),
        Err(_) => {
            let _ = child.kill().await;
            "killed: it closed its output but did not exit".to_owned()
        }
    }
}

/// Hands one status line to its action.
fn dispatch(pending: &Mutex<Pending>, line: &str) {
    let parsed = match serde_json::from_str::<StatusLine>(line) {
        Ok(p) => p,
        Err(e) => {
            let shown: String = line.chars().take(200).collect();
            warn!(cause = %e, line = %shown, "unreadable line from the sandbox supervisor");
            return;
        }
    };
    let tx = match &mut *lock(pending) {
        Pending::Alive(waiting) => waiting.remove(&parsed.id),
        Pending::Dead(_) => None,
    };
    match tx {
        Some(tx) => {
            let _ = tx.send(Ok(parsed.status));
        }
        None => warn!(
            id = parsed.id,
            error = ?parsed.status.error,
            "status for an action nobody waits for"
        ),
    }
}

/// SIGTERM to what is left of the supervisor's process group (its
/// runners, which then tear their sandboxes down), SIGKILL after `grace`.
async fn stop_group(pgid: u32, grace: Duration) {
    use nix::sys::signal::{Signal, killpg};
    let group = nix::unistd::Pid::from_raw(pgid as i32);
    if pgid == 0 || killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if !group_has_live_members(pgid) {
            return;
        }
    }
    warn!("runners of the dead sandbox supervisor ignored SIGTERM; killing them");
    let _ = killpg(group, Signal::SIGKILL);
}

/// Whether a process of group `pgid` is still running (zombies, which
/// whoever inherited them may be slow to reap, do not count).
fn group_has_live_members(pgid: u32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // `pid (comm) state ppid pgrp ...`; comm may hold spaces.
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|f| f.parse::<u32>().ok());
            pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
        })
}

//! The two ways of running a step through `hermetic-sandbox`: one helper
//! exec per run (the developer's CLI), and one request per run to a
//! long-lived supervisor (the daemon's mode).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

use crate::variants::{CLI, SUPERVISOR, SUPERVISOR_COLD, Sample, Timings, Variant};

/// The part of the helper's status report the benchmark reads. Unknown
/// fields are ignored on purpose: the report grows, the benchmark need not.
#[derive(Debug, Deserialize)]
struct Report {
    outcome: String,
    exit_code: Option<i32>,
    error: Option<String>,
    timings: Timings,
}

impl Report {
    /// The timings of a successful run of `/bin/true`, or why it failed.
    fn timings(self, who: &str) -> Result<Timings> {
        if self.outcome != "completed" || self.exit_code != Some(0) {
            bail!(
                "{who}: outcome {} exit code {:?}: {}",
                self.outcome,
                self.exit_code,
                self.error.unwrap_or_default()
            );
        }
        Ok(self.timings)
    }
}

/// `hermetic-sandbox --rootfs ROOTFS --profile strict -- /bin/true`: one
/// helper exec per run, spawned and waited for by the harness.
#[derive(Debug)]
pub struct OneShot {
    sandbox: PathBuf,
    rootfs: PathBuf,
    scratch_root: PathBuf,
    status_file: PathBuf,
}

impl OneShot {
    /// The helper's default scratch goes under `scratch_root` (its TMPDIR),
    /// where the supervisor's scratch dirs go too.
    pub fn new(sandbox: &Path, rootfs: &Path, scratch_root: &Path) -> Self {
        OneShot {
            sandbox: sandbox.to_path_buf(),
            rootfs: rootfs.to_path_buf(),
            scratch_root: scratch_root.to_path_buf(),
            status_file: scratch_root.join("oneshot-status.json"),
        }
    }

    fn command(&self) -> Command {
        let mut c = Command::new(&self.sandbox);
        c.arg("--rootfs")
            .arg(&self.rootfs)
            .args(["--profile", "strict", "--status"])
            .arg(&self.status_file)
            .args(["--", "/bin/true"])
            .env("TMPDIR", &self.scratch_root)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        c
    }

    fn read_status(&self) -> Result<Timings> {
        let bytes = std::fs::read(&self.status_file)
            .with_context(|| format!("sandbox CLI: no status in {}", self.status_file.display()))?;
        std::fs::remove_file(&self.status_file)?;
        let report: Report = serde_json::from_slice(&bytes).context("sandbox CLI: bad status")?;
        report.timings("sandbox CLI")
    }
}

impl Variant for OneShot {
    fn name(&self) -> &'static str {
        CLI
    }

    fn run_once(&mut self) -> Result<Sample> {
        let mut cmd = self.command();
        cmd.stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd.status().context("cannot spawn hermetic-sandbox")?;
        let wall = start.elapsed();
        let timings = self.read_status()?;
        if !status.success() {
            bail!("sandbox CLI: exited with {status}");
        }
        Ok(Sample {
            wall,
            timings: Some(timings),
        })
    }

    fn check(&mut self) -> Result<()> {
        let out = self
            .command()
            .output()
            .context("cannot spawn hermetic-sandbox")?;
        if !out.status.success() {
            bail!(
                "sandbox CLI: {} ({})",
                String::from_utf8_lossy(&out.stderr).trim(),
                out.status
            );
        }
        self.read_status().map(|_| ())
    }
}

/// One `hermetic-sandbox --supervisor` for the whole benchmark; a run is
/// one request line written and its status line read back.
#[derive(Debug)]
pub struct Supervisor {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    spec: serde_json::Value,
    scratch_root: PathBuf,
    next_id: u64,
    pooled: bool,
}

/// A status line from the supervisor.
#[derive(Debug, Deserialize)]
struct Response {
    id: u64,
    status: Report,
}

impl Supervisor {
    /// Starts the supervisor. The spec is the one the helper's own CLI makes
    /// for `--rootfs ROOTFS -- /bin/true` (strict profile), with a fresh
    /// scratch dir under `scratch_root` per request and the step's output
    /// streams sent to `/dev/null`.
    ///
    /// `pooled`: the supervisor's default pool (each request after the
    /// first finds a sandbox made for it, which `run_once` checks); else
    /// `--pool 0`.
    pub fn start(sandbox: &Path, rootfs: &Path, scratch_root: &Path, pooled: bool) -> Result<Self> {
        let out = Command::new(sandbox)
            .arg("--rootfs")
            .arg(rootfs)
            .args(["--profile", "strict", "--print-spec", "--", "/bin/true"])
            .output()
            .context("cannot run hermetic-sandbox --print-spec")?;
        if !out.status.success() {
            bail!(
                "--print-spec failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let mut spec: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("bad --print-spec output")?;
        spec["stdout"] = "null".into();
        spec["stderr"] = "null".into();
        let mut child = Command::new(sandbox)
            .arg("--supervisor")
            .args(if pooled {
                &[][..]
            } else {
                &["--pool", "0"][..]
            })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start hermetic-sandbox --supervisor")?;
        let stdin = child.stdin.take().context("no supervisor stdin")?;
        let stdout = BufReader::new(child.stdout.take().context("no supervisor stdout")?);
        Ok(Supervisor {
            child,
            stdin: Some(stdin),
            stdout,
            spec,
            scratch_root: scratch_root.to_path_buf(),
            next_id: 0,
            pooled,
        })
    }
}

impl Variant for Supervisor {
    fn name(&self) -> &'static str {
        if self.pooled {
            SUPERVISOR
        } else {
            SUPERVISOR_COLD
        }
    }

    fn run_once(&mut self) -> Result<Sample> {
        self.next_id += 1;
        let id = self.next_id;
        self.spec["scratch"] = self
            .scratch_root
            .join(format!("supervisor-{}-{id}", u8::from(self.pooled)))
            .to_string_lossy()
            .into();
        let mut request = serde_json::to_vec(&serde_json::json!({ "id": id, "spec": &self.spec }))?;
        request.push(b'\n');
        let mut line = String::new();
        let stdin = self.stdin.as_mut().context("supervisor stdin closed")?;

        let start = Instant::now();
        stdin
            .write_all(&request)
            .context("cannot write to the supervisor")?;
        stdin.flush()?;
        let n = self
            .stdout
            .read_line(&mut line)
            .context("cannot read from the supervisor")?;
        let wall = start.elapsed();

        if n == 0 {
            bail!("the supervisor closed its output");
        }
        let response: Response = serde_json::from_str(&line)
            .with_context(|| format!("bad supervisor line {:?}", line.trim()))?;
        if response.id != id {
            bail!("supervisor answered id {} to request {id}", response.id);
        }
        let timings = response.status.timings(self.name())?;
        // The pooled variant measures the pool: every request but the first
        // must have found its sandbox made (the harness waits between
        // rounds while other variants run); the cold one never.
        if timings.pooled != (self.pooled && id > 1) {
            bail!(
                "{}: request {id} pooled: {}, expected {}",
                self.name(),
                timings.pooled,
                self.pooled && id > 1
            );
        }
        Ok(Sample {
            wall,
            timings: Some(timings),
        })
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // End of input stops the supervisor once its actions are done.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

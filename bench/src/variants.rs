//! The ways of running `/bin/true` that the sandbox-start benchmark compares,
//! behind one small trait so the round-robin loop treats them alike.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Variant names, as tables show them.
pub const BARE: &str = "bare exec";
/// bubblewrap.
pub const BWRAP: &str = "bwrap";
/// crun.
pub const CRUN: &str = "crun";
/// The helper's supervisor mode (the daemon's path), with its pool.
pub const SUPERVISOR: &str = "sandbox supervisor";
/// The supervisor without a pool (`--pool 0`): every sandbox made at its
/// request, as on a pool miss.
pub const SUPERVISOR_COLD: &str = "sandbox supervisor, cold";
/// The helper's one-shot CLI.
pub const CLI: &str = "sandbox CLI";

/// The helper's own phase durations, from its status report.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
pub struct Timings {
    /// From the helper's start of work to the step's `execve`.
    pub setup_us: u64,
    /// From `execve` to the step's exit.
    pub run_us: u64,
    /// From the step's exit to everything cleaned up.
    pub teardown_us: u64,
    /// Whether the sandbox came from the supervisor's pool.
    #[serde(default)]
    pub pooled: bool,
}

/// One measured run.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Wall-clock latency as the harness saw it.
    pub wall: Duration,
    /// The helper's phase timings, when the variant is the helper.
    pub timings: Option<Timings>,
}

/// One way of running the workload.
pub trait Variant {
    /// Short name used in tables.
    fn name(&self) -> &'static str;
    /// Runs the workload once and times it; an error means the run did not
    /// succeed (and the benchmark is void).
    fn run_once(&mut self) -> Result<Sample>;
    /// Runs the workload once untimed, explaining a failure as well as it
    /// can (for example with the command's stderr).
    fn check(&mut self) -> Result<()> {
        self.run_once().map(|_| ())
    }
}

/// A variant that spawns one process per run and waits for it: bare exec,
/// bwrap, crun. Standard streams are `/dev/null`, as for every variant.
pub struct External {
    name: &'static str,
    make: Box<dyn FnMut() -> Command>,
}

impl std::fmt::Debug for External {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("External")
            .field("name", &self.name)
            .finish()
    }
}

impl External {
    /// `make` builds the command for each run (it may differ per run, for
    /// example a fresh container id).
    pub fn new(name: &'static str, make: impl FnMut() -> Command + 'static) -> Self {
        External {
            name,
            make: Box::new(make),
        }
    }

    /// The binary itself, spawned and waited for by the harness.
    pub fn bare(rootfs: &Path) -> Self {
        let exe = rootfs.join("bin/true");
        External::new(BARE, move || Command::new(&exe))
    }

    /// `bwrap --unshare-all --die-with-parent --ro-bind ROOTFS / --proc /proc --dev /dev /bin/true`.
    pub fn bwrap(rootfs: &Path) -> Self {
        let rootfs = rootfs.to_path_buf();
        External::new(BWRAP, move || {
            let mut c = Command::new("bwrap");
            c.args(["--unshare-all", "--die-with-parent", "--ro-bind"])
                .arg(&rootfs)
                .args(["/", "--proc", "/proc", "--dev", "/dev", "/bin/true"]);
            c
        })
    }

    /// `crun run --bundle DIR ID` with a fresh id per run.
    pub fn crun(bundle: &Path) -> Self {
        let bundle: PathBuf = bundle.to_path_buf();
        let prefix = format!("hermetic-bench-{}", std::process::id());
        let mut n = 0u64;
        External::new(CRUN, move || {
            n += 1;
            let mut c = Command::new("crun");
            c.arg("run")
                .arg("--bundle")
                .arg(&bundle)
                .arg(format!("{prefix}-{n}"));
            c
        })
    }
}

impl Variant for External {
    fn name(&self) -> &'static str {
        self.name
    }

    fn run_once(&mut self) -> Result<Sample> {
        let mut cmd = (self.make)();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let start = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("{}: cannot spawn {:?}", self.name, cmd))?;
        let wall = start.elapsed();
        if !status.success() {
            bail!("{}: {:?} failed: {status}", self.name, cmd);
        }
        Ok(Sample {
            wall,
            timings: None,
        })
    }

    fn check(&mut self) -> Result<()> {
        let mut cmd = (self.make)();
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("{}: cannot spawn {cmd:?}", self.name))?;
        if !out.status.success() {
            bail!(
                "{}: {cmd:?} failed ({}): {}",
                self.name,
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }
}

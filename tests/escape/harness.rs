//! Running the helper around one attack.
//!
//! A [`Run`] describes one execution of the helper around one attack;
//! [`Env::run`] executes it as root or as an unprivileged user ([`Mode`])
//! and returns a [`Report`] with everything observed from the host.

use std::collections::BTreeMap;
use std::fs;
use std::os::fd::{AsRawFd as _, RawFd};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hermetic_sandbox::spec::LimitOverrides;
use hermetic_sandbox::status::Status;
use serde_json::Value;

use crate::host;
use crate::setup::Env;

static RUN_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The unprivileged host user of the rootless runs (`nobody`).
pub const ROOTLESS_UID: u32 = 65534;

/// How long a helper may run before the harness declares it hung.
pub const HANG_LIMIT: Duration = Duration::from_secs(60);

/// Who runs the helper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Host root.
    Root,
    /// Uid/gid 65534 with no supplementary groups, through user namespaces.
    Rootless,
}

impl Mode {
    /// Both modes, in the order the battery runs them.
    pub const ALL: [Mode; 2] = [Mode::Root, Mode::Rootless];

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::Rootless => "rootless",
        }
    }
}

/// What the step's stdin is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// /dev/null.
    Null,
    /// The slave of a fresh host pty (see [`Report::pty_pending`]).
    Pty,
}

/// One execution of the helper around one attack.
#[derive(Debug, Clone)]
pub struct Run {
    /// The probe's ATTACK argument.
    pub attack: String,
    /// The probe's further arguments (the run's token is appended last).
    pub args: Vec<String>,
    /// Extra helper options before `--`.
    pub flags: Vec<String>,
    /// Pass `--output DIR`.
    pub output: bool,
    /// Files of the input tree besides `probe`: relative path, contents,
    /// mode. Directories are created 0755 unless listed in `input_dirs`.
    pub inputs: Vec<(String, String, u32)>,
    /// Directories of the input tree with their mode ("" is the root).
    pub input_dirs: Vec<(String, u32)>,
    /// The step's stdin.
    pub stdin: Stdin,
    /// Leak host fds 7 and 8 (not close-on-exec) into the helper.
    pub leak_fds: bool,
    /// Run through `--spec` with these limits (for the ones the CLI has no
    /// option for: RLIMIT_FSIZE, scratch size).
    pub spec_limits: Option<LimitOverrides>,
    /// The helper's `--timeout`, in seconds.
    pub timeout_s: u64,
    /// With `spec_limits`: the strict profile's `[anomalies]` replaced.
    pub anomalies: Option<hermetic_sandbox::profile::AnomalyWatch>,
}

impl Run {
    /// An attack with the probe's default arguments.
    pub fn attack(attack: &str) -> Self {
        Run {
            attack: attack.to_owned(),
            args: Vec::new(),
            flags: Vec::new(),
            output: false,
            inputs: Vec::new(),
            input_dirs: Vec::new(),
            stdin: Stdin::Null,
            leak_fds: false,
            spec_limits: None,
            timeout_s: 30,
            anomalies: None,
        }
    }

    /// Adds probe arguments.
    pub fn args<I: IntoIterator<Item = S>, S: Into<String>>(mut self, args: I) -> Self {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds helper options.
    pub fn flags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, flags: I) -> Self {
        self.flags.extend(flags.into_iter().map(Into::into));
        self
    }

    /// Collects outputs into `RUN/output`.
    pub fn with_output(mut self) -> Self {
        self.output = true;
        self
    }

    /// Adds an input file, mode 0644.
    pub fn input(self, path: &str, contents: &str) -> Self {
        self.input_mode(path, contents, 0o644)
    }

    /// Adds an input file with a mode.
    pub fn input_mode(mut self, path: &str, contents: &str, mode: u32) -> Self {
        self.inputs
            .push((path.to_owned(), contents.to_owned(), mode));
        self
    }

    /// Gives an input directory ("" is the root) a mode.
    pub fn input_dir(mut self, path: &str, mode: u32) -> Self {
        self.input_dirs.push((path.to_owned(), mode));
        self
    }
}

/// Everything observed about one run, from the host.
#[derive(Debug)]
pub struct Report {
    /// Who ran it.
    pub mode: Mode,
    /// The run's unique token (in the probe's argv).
    pub token: String,
    /// The run's directory: input/, output/, scratch/, status.json.
    pub dir: PathBuf,
    /// The input tree as it was before the run.
    pub input_before: BTreeMap<PathBuf, host::Entry>,
    /// The helper's exit code (None: killed by a signal, e.g. the hang kill).
    pub exit_code: Option<i32>,
    /// The helper did not exit within [`HANG_LIMIT`] and was killed.
    pub hung: bool,
    /// How long the helper ran.
    pub elapsed: Duration,
    /// stdout or stderr was still held open 5 s after the helper exited.
    pub pipes_held: bool,
    /// The step's (and helper's) stdout.
    pub stdout: String,
    /// The helper's and step's stderr.
    pub stderr: String,
    /// The probe's JSON lines.
    pub lines: Vec<Value>,
    /// The parsed status file, or why it could not be had.
    pub status: Result<Status, String>,
    /// Processes carrying the token alive when the helper had returned
    /// (killed by the harness afterwards).
    pub survivors: Vec<i32>,
    /// Bytes a TIOCSTI left in the host pty's input queue ([`Stdin::Pty`]).
    pub pty_pending: i32,
}

impl Report {
    /// The attempt lines named `attack`.
    pub fn attempts(&self, attack: &str) -> Vec<&Value> {
        self.lines
            .iter()
            .filter(|l| l["attack"] == attack)
            .collect()
    }

    /// The single attempt line named `attack`, or Null.
    pub fn one(&self, attack: &str) -> &Value {
        static NULL: Value = Value::Null;
        match self.attempts(attack).as_slice() {
            [one] => one,
            _ => &NULL,
        }
    }

    /// The input directory on the host.
    pub fn input_dir(&self) -> PathBuf {
        self.dir.join("input")
    }

    /// The output directory on the host.
    pub fn output_dir(&self) -> PathBuf {
        self.dir.join("output")
    }

    /// The last lines of stderr, for messages.
    pub fn stderr_tail(&self) -> String {
        let lines: Vec<&str> = self.stderr.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Env {
    /// Runs the helper around one attack and observes everything.
    pub fn run(&self, mode: Mode, run: &Run, cgroup_parent: Option<&Path>) -> Report {
        let n = RUN_COUNTER.fetch_add(1, Ordering::SeqCst);
        let token = format!("hx{}x{n}x{}", std::process::id(), mode.name());
        let dir = self
            .runs_dir
            .join(format!("{n:03}-{}-{}", run.attack, mode.name()));
        let owner = match mode {
            Mode::Root => 0,
            Mode::Rootless => ROOTLESS_UID,
        };
        host::make_dir(&dir, 0o755, owner);
        // The input tree belongs to whoever runs the helper: as root it
        // stands for the daemon's store, rootless for a developer's own
        // checkout.
        let input = dir.join("input");
        host::make_dir(&input, 0o755, owner);
        let probe = fs::read(&self.probe).expect("read probe");
        host::write_file(&input.join("probe"), &probe, 0o755, owner);
        for (path, contents, mode) in &run.inputs {
            let p = input.join(path);
            if let Some(parent) = p.parent() {
                host::make_dir(parent, 0o755, owner);
            }
            host::write_file(&p, contents.as_bytes(), *mode, owner);
        }
        for (path, mode) in &run.input_dirs {
            host::make_dir(&input.join(path), *mode, owner);
        }
        let input_before = host::snapshot(&input);

        let mut probe_argv = vec![
            "/work/probe".to_owned(),
            self.host_mnt.to_string(),
            self.host_uts.to_string(),
            run.attack.clone(),
        ];
        probe_argv.extend(run.args.iter().map(|a| a.replace("{TOKEN}", &token)));
        probe_argv.push(token.clone());

        let status_path = dir.join("status.json");
        let mut cmd = Command::new(&self.helper);
        if let Some(limits) = &run.spec_limits {
            let spec = self.spec_json(run, &dir, &probe_argv, limits, cgroup_parent);
            let spec_path = dir.join("spec.json");
            host::write_file(&spec_path, spec.as_bytes(), 0o644, 0);
            cmd.arg("--spec").arg(&spec_path);
            cmd.arg("--status").arg(&status_path);
        } else {
            cmd.arg("--rootfs").arg(&self.rootfs);
            cmd.arg("--input").arg(&input);
            if run.output {
                cmd.arg("--output").arg(dir.join("output"));
            }
            cmd.arg("--scratch").arg(dir.join("scratch"));
            cmd.arg("--status").arg(&status_path);
            cmd.arg("--profile-dir").arg(&self.profile_dir);
            cmd.arg("--timeout").arg(run.timeout_s.to_string());
            if let Some(parent) = cgroup_parent {
                cmd.arg("--cgroup-parent").arg(parent);
            }
            cmd.args(&run.flags);
            cmd.arg("--");
            cmd.args(&probe_argv);
        }
        // Nothing of the caller's environment may reach the step.
        cmd.env("HERMETIC_ESCAPE_CANARY", "leaked-from-the-host");
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());

        let pty = (run.stdin == Stdin::Pty).then(|| host::Pty::open().expect("open a host pty"));
        match &pty {
            Some(p) => {
                let slave = p.slave.try_clone().expect("dup pty slave");
                cmd.stdin(Stdio::from(slave));
            }
            None => {
                cmd.stdin(Stdio::null());
            }
        }
        let leaked = run.leak_fds.then(|| {
            let a = fs::File::open(dir.join("input")).expect("open a dir to leak");
            let b = fs::File::open("/etc/hostname")
                .or_else(|_| fs::File::open("/etc/passwd"))
                .expect("open a file to leak");
            (a, b)
        });
        let leak_raw: Option<(RawFd, RawFd)> =
            leaked.as_ref().map(|(a, b)| (a.as_raw_fd(), b.as_raw_fd()));
        let rootless = mode == Mode::Rootless;
        let hook = move || {
            if let Some((a, b)) = leak_raw {
                host::dup_to(a, 7)?;
                host::dup_to(b, 8)?;
            }
            if rootless {
                host::become_user(ROOTLESS_UID)?;
            }
            Ok(())
        };
        // SAFETY: the hook runs between fork and exec and makes only
        // async-signal-safe calls (dup2, setgroups, setresgid, setresuid)
        // on integers; it allocates nothing.
        unsafe { cmd.pre_exec(hook) };

        let start = Instant::now();
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.helper.display()));
        drop(leaked);
        let stdout_rx = reader(child.stdout.take().expect("stdout"));
        let stderr_rx = reader(child.stderr.take().expect("stderr"));
        let mut hung = false;
        let exit = loop {
            if let Some(st) = child.try_wait().expect("wait for the helper") {
                break st;
            }
            if start.elapsed() > HANG_LIMIT {
                hung = true;
                let _ = child.kill();
                break child.wait().expect("wait for the killed helper");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let elapsed = start.elapsed();
        let survivors = host::processes_with(&token);
        let grace = Duration::from_secs(5);
        let (stdout, out_held) = match stdout_rx.recv_timeout(grace) {
            Ok(s) => (s, false),
            Err(_) => (String::new(), true),
        };
        let (stderr, err_held) = match stderr_rx.recv_timeout(grace) {
            Ok(s) => (s, false),
            Err(_) => (String::new(), true),
        };
        // Whatever survived was started by this run: end it.
        host::kill_pids(&host::processes_with(&token));
        let pty_pending = pty.as_ref().map_or(0, host::Pty::pending_input);

        let lines = stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let status = fs::read_to_string(&status_path)
            .map_err(|e| format!("no status file {}: {e}", status_path.display()))
            .and_then(|s| {
                serde_json::from_str::<Status>(&s)
                    .map_err(|e| format!("status does not parse: {e}: {s}"))
            });
        Report {
            mode,
            token,
            dir,
            input_before,
            exit_code: exit.code().or_else(|| exit.signal().map(|s| -s)),
            hung,
            elapsed,
            pipes_held: out_held || err_held,
            stdout,
            stderr,
            lines,
            status,
            survivors,
            pty_pending,
        }
    }

    /// The `--spec` form of a run (used where the CLI lacks an option).
    fn spec_json(
        &self,
        run: &Run,
        dir: &Path,
        argv: &[String],
        limits: &LimitOverrides,
        cgroup_parent: Option<&Path>,
    ) -> String {
        use hermetic_sandbox::profile::Profile;
        use hermetic_sandbox::spec::{SPEC_VERSION, Spec};
        let mut profile =
            Profile::load(&self.profile_dir, "strict").expect("load the strict profile");
        if let Some(a) = &run.anomalies {
            profile.anomalies = a.clone();
        }
        let spec = Spec {
            version: SPEC_VERSION,
            rootfs: self.rootfs.clone(),
            input: Some(dir.join("input")),
            scratch: dir.join("scratch"),
            output_dir: run.output.then(|| dir.join("output")),
            outputs: Vec::new(),
            argv: argv.to_vec(),
            env: Vec::new(),
            cwd: String::new(),
            profile,
            limits: LimitOverrides {
                timeout_ms: Some(run.timeout_s * 1000),
                ..limits.clone()
            },
            stdout: Default::default(),
            stderr: Default::default(),
            cgroup_parent: cgroup_parent.map(Path::to_path_buf),
            variation: Default::default(),
        };
        serde_json::to_string_pretty(&spec).expect("serialize spec")
    }
}

/// Reads a pipe to its end on a thread; the text arrives on the channel.
fn reader<R: std::io::Read + Send + 'static>(mut r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
    });
    rx
}

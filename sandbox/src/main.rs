//! `hermetic-sandbox`: run one build step sealed, from a spec or from flags.
//!
//! ```text
//! hermetic-sandbox --spec spec.json [--status status.json]
//! hermetic-sandbox --rootfs DIR [--input DIR] [--output DIR] [--profile NAME] -- CMD ARGS...
//! hermetic-sandbox --supervisor      # daemon mode: specs in, statuses out
//! hermetic-sandbox --features        # what this host supports, as JSON
//! ```

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::Parser;
use hermetic_sandbox::profile::Profile;
use hermetic_sandbox::spec::{LimitOverrides, SPEC_VERSION, Spec, Stdio, Variation};
use hermetic_sandbox::status::{Outcome, Status};

/// Run one build step sealed in Linux namespaces.
///
/// Exit status: the step's own exit code; 128+N when it was killed by
/// signal N; 124 timeout; 123 out of memory; 122 invalid output; 125 the
/// sandbox could not be set up; 126 the command cannot be executed; 127 the
/// command was not found.
#[derive(Debug, Parser)]
#[command(name = "hermetic-sandbox", version)]
struct Cli {
    /// Read the spec (JSON) from FILE (`-`: standard input).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rootfs", "command"])]
    spec: Option<PathBuf>,
    /// Serve specs from standard input, one JSON line each, and answer with
    /// one status line each (the daemon's mode).
    #[arg(long, conflicts_with_all = ["spec", "rootfs", "command"])]
    supervisor: bool,
    /// With --supervisor: how many keys (profile, rootfs, limits) keep a
    /// sandbox made ahead of the next request; 0 makes every sandbox at its
    /// request.
    #[arg(long, value_name = "N", default_value_t = hermetic_sandbox::supervisor::POOL_CAPACITY, requires = "supervisor")]
    pool: usize,
    /// Print what this host supports, as JSON, and exit.
    #[arg(long, conflicts_with_all = ["spec", "rootfs", "command", "supervisor"])]
    features: bool,
    /// Write the status (JSON) to FILE.
    #[arg(long, value_name = "FILE")]
    status: Option<PathBuf>,
    /// Print the spec the flags make, instead of running it.
    #[arg(long)]
    print_spec: bool,
    /// Base image root directory, mounted read-only at `/`.
    #[arg(long, value_name = "DIR")]
    rootfs: Option<PathBuf>,
    /// Input tree: the read-only lower layer of `/work`.
    #[arg(long, value_name = "DIR")]
    input: Option<PathBuf>,
    /// Collect what the step writes under `/work` into DIR.
    #[arg(long, value_name = "DIR")]
    output: Option<PathBuf>,
    /// Collect only this path (relative to `/work`); repeatable.
    #[arg(long, value_name = "PATH")]
    collect: Vec<String>,
    /// Sandbox profile name.
    #[arg(long, default_value = "strict")]
    profile: String,
    /// Directory holding the profiles (default: $HERMETIC_PROFILE_DIR, the
    /// source tree's sandbox-profiles, /usr/share/hermetic/sandbox-profiles).
    #[arg(long, value_name = "DIR")]
    profile_dir: Option<PathBuf>,
    /// Wall-clock timeout in seconds (fractions allowed).
    #[arg(long, value_name = "SECS")]
    timeout: Option<f64>,
    /// Memory limit in bytes.
    #[arg(long, value_name = "BYTES")]
    memory: Option<u64>,
    /// Process and thread limit.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU quota in milli-CPUs (1000 = one core).
    #[arg(long, value_name = "MILLIS")]
    cpu: Option<u64>,
    /// `/tmp` size in bytes.
    #[arg(long, value_name = "BYTES")]
    tmp_size: Option<u64>,
    /// Environment variable for the step; repeatable, kept in order.
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory relative to `/work`.
    #[arg(long, value_name = "DIR", default_value = "")]
    cwd: String,
    /// Scratch directory (default: a new one under $TMPDIR, removed after).
    #[arg(long, value_name = "DIR")]
    scratch: Option<PathBuf>,
    /// A delegated cgroup to create the action's cgroup under.
    #[arg(long, value_name = "PATH")]
    cgroup_parent: Option<PathBuf>,
    /// The command and its arguments.
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("hermetic-sandbox: {e:#}");
            ExitCode::from(125)
        }
    }
}

fn real_main() -> Result<u8> {
    let cli = Cli::parse();
    if cli.features {
        println!(
            "{}",
            serde_json::to_string_pretty(&hermetic_sandbox::features::detect())?
        );
        return Ok(0);
    }
    if cli.supervisor {
        let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
        hermetic_sandbox::supervisor::serve_with_pool(
            stdin.into(),
            std::io::stdout().lock(),
            cli.pool,
        )?;
        return Ok(0);
    }
    let spec = match &cli.spec {
        Some(path) => {
            let bytes = if path.as_os_str() == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                std::fs::read(path)
                    .with_context(|| format!("cannot read spec {}", path.display()))?
            };
            Spec::from_json(&bytes).map_err(anyhow::Error::from)
        }
        None => spec_from_flags(&cli),
    };
    // A spec that cannot be built still gets a status, so callers that read
    // only the status file see why.
    let spec = match spec {
        Ok(spec) => spec,
        Err(e) => {
            if let Some(path) = &cli.status {
                let status = Status::setup_failed(format!("{e:#}"));
                let _ = std::fs::write(path, serde_json::to_vec_pretty(&status)?);
            }
            return Err(e);
        }
    };
    if cli.print_spec {
        println!("{}", serde_json::to_string_pretty(&spec)?);
        return Ok(0);
    }
    let temp_scratch = cli.spec.is_none() && cli.scratch.is_none();
    hermetic_sandbox::run::install_cancel_handler();
    let status = hermetic_sandbox::run::run(&spec);
    if temp_scratch {
        let _ = std::fs::remove_dir(&spec.scratch);
    }
    if let Some(path) = &cli.status {
        std::fs::write(path, serde_json::to_vec_pretty(&status)?)
            .with_context(|| format!("cannot write status {}", path.display()))?;
    }
    report(&status);
    Ok(exit_code(&status))
}

fn spec_from_flags(cli: &Cli) -> Result<Spec> {
    let Some(rootfs) = &cli.rootfs else {
        bail!("give --spec FILE, or --rootfs DIR and a command after `--`");
    };
    if cli.command.is_empty() {
        bail!("no command given: put it after `--`");
    }
    let dir = profile_dir(cli.profile_dir.as_deref())?;
    let profile = Profile::load(&dir, &cli.profile)?;
    let mut env = Vec::new();
    for kv in &cli.env {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--env {kv:?} is not K=V");
        };
        env.push((k.to_owned(), v.to_owned()));
    }
    let timeout_ms = match cli.timeout {
        Some(t) if !(t.is_finite() && t > 0.0) => {
            bail!("--timeout {t} is not a positive number of seconds")
        }
        Some(t) => Some((t * 1000.0).ceil() as u64),
        None => None,
    };
    let scratch = match &cli.scratch {
        Some(s) => absolute(s)?,
        None => std::env::temp_dir().join(format!("hermetic-sandbox-{}", std::process::id())),
    };
    let spec = Spec {
        version: SPEC_VERSION,
        rootfs: absolute(rootfs)?,
        input: cli.input.as_deref().map(absolute).transpose()?,
        scratch,
        output_dir: cli.output.as_deref().map(absolute).transpose()?,
        outputs: cli.collect.clone(),
        argv: cli.command.clone(),
        env,
        cwd: cli.cwd.clone(),
        profile,
        limits: LimitOverrides {
            timeout_ms,
            memory_bytes: cli.memory,
            pids: cli.pids,
            cpu_millis: cli.cpu,
            tmp_bytes: cli.tmp_size,
            ..Default::default()
        },
        stdout: Stdio::Inherit,
        stderr: Stdio::Inherit,
        cgroup_parent: cli.cgroup_parent.clone(),
        variation: Variation::default(),
    };
    spec.validate()?;
    Ok(spec)
}

fn absolute(p: &std::path::Path) -> Result<PathBuf> {
    std::path::absolute(p).with_context(|| format!("bad path {}", p.display()))
}

/// Where profiles are found when no `--profile-dir` is given.
fn profile_dir(flag: Option<&std::path::Path>) -> Result<PathBuf> {
    if let Some(d) = flag {
        return Ok(d.to_path_buf());
    }
    if let Some(d) = std::env::var_os("HERMETIC_PROFILE_DIR") {
        return Ok(d.into());
    }
    let candidates = [
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../sandbox-profiles")),
        PathBuf::from("/usr/share/hermetic/sandbox-profiles"),
    ];
    candidates
        .into_iter()
        .find(|d| d.join("strict.toml").is_file())
        .context(
            "no sandbox-profiles directory found: pass --profile-dir or set HERMETIC_PROFILE_DIR",
        )
}

fn report(status: &Status) {
    match status.outcome {
        Outcome::Completed => {}
        Outcome::TimedOut => eprintln!(
            "hermetic-sandbox: timed out after {} ms",
            status.restrictions.limits.timeout_ms
        ),
        Outcome::OomKilled => eprintln!("hermetic-sandbox: killed: out of memory"),
        _ => eprintln!(
            "hermetic-sandbox: {:?}: {}",
            status.outcome,
            status.error.as_deref().unwrap_or("")
        ),
    }
    for e in &status.output_errors {
        eprintln!("hermetic-sandbox: {e}");
    }
}

fn exit_code(status: &Status) -> u8 {
    match status.outcome {
        Outcome::Completed => match (status.exit_code, status.signal) {
            (Some(c), _) => c as u8,
            (None, Some(s)) => 128u8.saturating_add(s as u8),
            _ => 125,
        },
        Outcome::TimedOut => 124,
        Outcome::OomKilled => 123,
        Outcome::OutputError => 122,
        Outcome::SetupFailed | Outcome::Cancelled => 125,
        Outcome::ExecFailed => {
            if status
                .error
                .as_deref()
                .is_some_and(|e| e.contains("ENOENT"))
            {
                127
            } else {
                126
            }
        }
    }
}

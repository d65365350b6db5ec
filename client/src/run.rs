//! `hermetic run`: build the action, upload what the store lacks, execute,
//! follow the operation, download stdout, stderr, the outputs and the
//! execution log, print the result and choose the exit code.

use std::io::Write;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, ExecuteResponse};
use serde::Serialize;

use crate::action::{self, Prepared};
use crate::backend::Backend;
use crate::cli::RunArgs;
use crate::config::Settings;
use crate::connect::Remote as RemoteAddr;
use crate::digests::{Function, show};
use crate::download::{self, Entry};
use crate::error::{Error, Result, code};
use crate::job::Job;
use crate::operation;
use crate::progress::{Mode, Progress};
use crate::remote::Remote;

/// The directory under the out dir holding stdout, stderr and the log.
pub const META_DIR: &str = ".hermetic";

/// Global options every subcommand shares.
#[derive(Debug, Clone)]
pub struct Globals {
    /// `--remote`, else the settings', else the local socket.
    pub remote: Option<String>,
    /// The instance name.
    pub instance: String,
    /// `--json`.
    pub json: bool,
    /// The settings file.
    pub settings: Settings,
}

impl Globals {
    /// Connects to the daemon.
    pub async fn connect(&self, f: Option<Function>) -> Result<Remote> {
        let addr = match self.remote.as_ref().or(self.settings.remote.as_ref()) {
            Some(uri) => RemoteAddr::parse(uri)?,
            None => RemoteAddr::Unix(crate::config::default_socket()),
        };
        let channel = addr.connect().await?;
        let mut remote = Remote::new(channel, self.instance.clone());
        remote.capabilities(f).await.map_err(|e| match e {
            Error::Rpc {
                status_code: tonic::Code::Unavailable | tonic::Code::Unknown,
                message,
                ..
            } => Error::Unreachable {
                address: addr.describe(),
                cause: message,
                hint: "is hermeticd running there?".into(),
            },
            e => e,
        })?;
        Ok(remote)
    }
}

/// What a run produced, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct RunReport {
    /// `{function}:HEX/SIZE`.
    pub action_digest: String,
    /// The operation's name.
    pub operation: String,
    /// The result came from the action cache.
    pub cache_hit: bool,
    /// `completed`, `not_reproducible`, `timed_out`, `oom_killed`, `failed` or `error`.
    pub outcome: String,
    /// The step's exit code, when it ran.
    pub exit_code: Option<i32>,
    /// This process's exit code.
    pub hermetic_exit_code: u8,
    /// The daemon's status code and message when not OK.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The out dir.
    pub out_dir: PathBuf,
    /// Outputs.
    pub outputs: Vec<Entry>,
    /// Declared outputs the step did not produce.
    pub missing_outputs: Vec<String>,
    /// Where the step's stdout was written.
    pub stdout: Option<PathBuf>,
    /// Where the step's stderr was written.
    pub stderr: Option<PathBuf>,
    /// Where the execution log was written.
    pub execution_log: Option<PathBuf>,
    /// The reproducibility check, when `--check-repro` asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repro: Option<crate::repro::ReproSummary>,
    /// Where the provenance bundle, SBOMs and keyring were written.
    pub attestation: crate::provenance::Written,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Wall-clock milliseconds.
    pub elapsed_ms: u64,
}

/// Runs `hermetic run`; returns the exit code.
pub async fn run(g: &Globals, args: &RunArgs) -> Result<u8> {
    let (report, streams) = execute_and_collect(g, args).await?;
    print_run(g, &report, &streams)?;
    Ok(report.hermetic_exit_code)
}

/// `hermetic run` without printing anything but progress: the report and
/// the step's stdout and stderr, for callers that print them their way.
pub async fn execute_and_collect(g: &Globals, args: &RunArgs) -> Result<(RunReport, Streams)> {
    execute_job(g, job_of_args(g, args)?, args.local, args.no_cache).await
}

/// The validated job of `hermetic run`'s flags (and job file), the
/// settings' digest function applied.
pub fn job_of_args(g: &Globals, args: &RunArgs) -> Result<Job> {
    let mut file = args.merged()?;
    if file.digest_function.is_none() {
        file.digest_function.clone_from(&g.settings.digest_function);
    }
    Job::validate(file)
}

/// Prints what [`execute_and_collect`] or [`execute_job`] returned as
/// `hermetic run` does: the step's output, then the report.
pub fn print_run(g: &Globals, report: &RunReport, streams: &Streams) -> Result<()> {
    if !g.json {
        if let Some(data) = &streams[0] {
            let _ = std::io::stdout().write_all(data);
            let _ = std::io::stdout().flush();
        }
        if let Some(data) = &streams[1] {
            let _ = std::io::stderr().write_all(data);
        }
    }
    print(g.json, report)
}

/// Runs `job` through the daemon (or in this process with `local`), the
/// action cache skipped with `no_cache`; returns the report and the step's
/// stdout and stderr. A job on a stored input root runs only when the
/// store holds every blob of it (`stored_input::resolve`).
pub async fn execute_job(
    g: &Globals,
    mut job: Job,
    local: bool,
    no_cache: bool,
) -> Result<(RunReport, Streams)> {
    let f = job.digest_function;
    let progress = Progress::new(Mode::detect(g.json));
    let backend = if local {
        progress.stage("opening the local executor");
        let config = g.settings.local_daemon_config()?;
        let state_dir = g.settings.local_state_dir();
        let local = hermeticd::local::Local::open(config, &state_dir)
            .await
            .map_err(|e| {
                Error::Infra(format!(
                    "cannot open the local executor in {}: {e}",
                    state_dir.display()
                ))
            })?;
        Backend::Local(Box::new(local))
    } else {
        progress.stage("connecting");
        Backend::Remote(g.connect(Some(f)).await?)
    };
    let outcome = async {
        if let Some(candidates) = job.stored_input.take() {
            progress.stage("checking the stored inputs");
            let (f, root) = crate::stored_input::resolve(&backend, &candidates).await?;
            job.digest_function = f;
            job.stored_input = Some(vec![(f, root)]);
        }
        // The image is pinned by digest before the action is built: an
        // alias is never part of an action key.
        if let Some(name) = job.image.take() {
            progress.stage("resolving the image");
            job.image = Some(backend.resolve_image(&name).await?);
        }
        progress.stage("hashing inputs");
        let prepared = {
            let j = job.clone();
            tokio::task::spawn_blocking(move || action::prepare(&j))
                .await
                .map_err(|e| Error::Infra(format!("hashing task failed: {e}")))??
        };
        let job = &job;
        let prepared = &prepared;
        let (name, resp) = execute(&backend, job, prepared, no_cache, &progress).await?;
        progress.stage("downloading outputs");
        collect(&backend, job, prepared, name, resp, &progress).await
    }
    .await;
    backend.close().await;
    progress.finish();
    let (report, streams) = outcome.map_err(|e| match e {
        Error::Rpc {
            what,
            status_code: tonic::Code::FailedPrecondition,
            message,
        } if local => Error::Rpc {
            what,
            status_code: tonic::Code::FailedPrecondition,
            message: format!(
                "{message} (--local takes profiles and the helper from the hermeticd \
                 config named by `local.daemon_config` in the client settings, default \
                 /etc/hermetic/hermeticd.toml, and images from that daemon's image store)"
            ),
        },
        e => e,
    })?;
    Ok((report, streams))
}

/// Uploads what is missing and executes; returns the operation's name and
/// its response.
async fn execute(
    backend: &Backend,
    job: &Job,
    prepared: &Prepared,
    no_cache: bool,
    progress: &Progress,
) -> Result<(String, ExecuteResponse)> {
    let f = job.digest_function;
    progress.stage("checking the store");
    let all: Vec<_> = prepared.blobs.values().map(|b| b.digest.clone()).collect();
    let missing = backend.find_missing(f, all).await?;
    let blobs: Vec<_> = missing
        .iter()
        .filter_map(|d| prepared.blobs.get(&d.hash).cloned())
        .collect();
    let bytes: u64 = blobs.iter().map(|b| b.digest.size_bytes as u64).sum();
    progress.upload_start(blobs.len(), bytes, prepared.blobs.len() - blobs.len());
    backend.upload(f, blobs, &|n| progress.uploaded(n)).await?;
    progress.upload_done();
    progress.stage("submitting");
    let stream = backend
        .execute(f, prepared.action_digest.clone(), no_cache)
        .await?;
    operation::follow(backend, stream, progress).await
}

/// What the execution log says about how the step ended.
#[derive(Debug, Default, serde::Deserialize)]
struct LogFlags {
    #[serde(default)]
    oom_killed: bool,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    outcome: String,
}

/// The step's stdout and stderr, when the result names them.
pub type Streams = [Option<Vec<u8>>; 2];

/// Downloads everything and decides the exit code.
async fn collect(
    backend: &Backend,
    job: &Job,
    prepared: &Prepared,
    name: String,
    resp: ExecuteResponse,
    progress: &Progress,
) -> Result<(RunReport, Streams)> {
    let f = job.digest_function;
    let out_dir = job.out_dir.clone();
    let meta = out_dir.join(META_DIR);
    std::fs::create_dir_all(&meta).map_err(Error::io("create", &meta))?;
    let status = resp.status.clone().unwrap_or_default();
    let code = tonic::Code::from_i32(status.code);
    let result: Option<&ActionResult> = resp.result.as_ref();
    // The log first: it says whether the step timed out or ran out of memory.
    let mut flags = LogFlags::default();
    let mut execution_log = None;
    if let Some(d) = operation::log_digest(&resp) {
        match backend.read(f, &d).await {
            Ok(data) => {
                flags = serde_json::from_slice(&data).unwrap_or_default();
                let path = meta.join("execution-log.json");
                std::fs::write(&path, &data).map_err(Error::io("write", &path))?;
                execution_log = Some(path);
            }
            Err(e @ Error::Verification(_)) => return Err(e),
            // Evicted since, say: the run itself is still good.
            Err(e) if progress.mode() != Mode::Quiet => {
                eprintln!("hermetic: warning: cannot fetch the execution log: {e}");
            }
            Err(_) => {}
        }
    }
    let mut streams = [None, None];
    let mut outputs = Vec::new();
    if let Some(r) = result {
        for (i, (digest, file)) in [(&r.stdout_digest, "stdout"), (&r.stderr_digest, "stderr")]
            .into_iter()
            .enumerate()
        {
            let Some(d) = digest else { continue };
            let data = backend.read(f, d).await?;
            let path = meta.join(file);
            std::fs::write(&path, &data).map_err(Error::io("write", &path))?;
            streams[i] = Some((path, data));
        }
        outputs = download::outputs(backend, f, r, &out_dir).await?;
    }
    let repro = match job.check_repro {
        Some(_) => Some(crate::repro::fetch(backend, f, &resp, &meta).await?),
        None => None,
    };
    let attestation = crate::provenance::download(backend, f, &resp, &meta).await?;
    let ran =
        result.is_some() && (code == tonic::Code::Ok || code == tonic::Code::DeadlineExceeded);
    let (outcome, exit) = if flags.timed_out || code == tonic::Code::DeadlineExceeded {
        ("timed_out", code::TIMEOUT)
    } else if flags.oom_killed {
        ("oom_killed", code::OOM)
    } else if code != tonic::Code::Ok {
        let e = Error::Rpc {
            what: "execution".into(),
            status_code: code,
            message: status.message.clone(),
        };
        ("error", e.exit_code())
    } else {
        let step = result.map_or(-1, |r| r.exit_code);
        let not_reproducible = repro
            .as_ref()
            .is_some_and(|r| r.reproducible == Some(false));
        match u8::try_from(step) {
            Ok(0) if not_reproducible => ("not_reproducible", code::NOT_REPRODUCIBLE),
            Ok(c) => (if c == 0 { "completed" } else { "failed" }, c),
            Err(_) => ("error", code::INFRA),
        }
    };
    let outcome = if outcome == "error" && !flags.outcome.is_empty() && flags.outcome != "completed"
    {
        flags.outcome.clone()
    } else {
        outcome.to_owned()
    };
    let error = (code != tonic::Code::Ok).then(|| format!("{code:?}: {}", status.message));
    let error = match (error, resp.message.is_empty()) {
        (Some(e), _) => Some(e),
        (None, false) => Some(resp.message.clone()),
        (None, true) => None,
    };
    let missing_outputs = job
        .outputs
        .iter()
        .filter(|o| !outputs.iter().any(|e| &e.path == *o))
        .cloned()
        .collect();
    let [out, err] = streams;
    let ((stdout, out_data), (stderr, err_data)) = (out.unzip(), err.unzip());
    let report = RunReport {
        action_digest: show(f, &prepared.action_digest),
        operation: name,
        cache_hit: resp.cached_result,
        outcome,
        exit_code: ran.then(|| result.map_or(-1, |r| r.exit_code)),
        hermetic_exit_code: exit,
        error,
        out_dir,
        outputs,
        missing_outputs,
        stdout,
        stderr,
        execution_log,
        repro,
        attestation,
        bytes_uploaded: progress.bytes_uploaded(),
        elapsed_ms: progress.elapsed().as_millis() as u64,
    };
    Ok((report, [out_data, err_data]))
}

/// Prints the report: JSON on stdout, or lines on stderr.
fn print(json: bool, r: &RunReport) -> Result<()> {
    if json {
        let text = serde_json::to_string_pretty(r)
            .map_err(|e| Error::Infra(format!("the report does not serialize: {e}")))?;
        println!("{text}");
        return Ok(());
    }
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "action         {}", r.action_digest);
    if !r.operation.is_empty() {
        let _ = writeln!(e, "operation      {}", r.operation);
    }
    let _ = writeln!(
        e,
        "cache          {}",
        if r.cache_hit { "hit" } else { "miss" }
    );
    match r.exit_code {
        Some(c) => {
            let _ = writeln!(e, "exit code      {c} ({})", r.outcome);
        }
        None => {
            let _ = writeln!(e, "outcome        {}", r.outcome);
        }
    }
    if let Some(err) = &r.error {
        let _ = writeln!(e, "message        {err}");
    }
    for o in &r.outputs {
        let _ = match o.kind {
            "file" => writeln!(
                e,
                "output         {}  {}  {}{}",
                o.path,
                o.blake3.as_deref().unwrap_or_default(),
                o.sha256.as_deref().unwrap_or_default(),
                if o.executable { "  (executable)" } else { "" }
            ),
            "directory" => writeln!(
                e,
                "output         {}/  (directory, tree {})",
                o.path,
                o.tree.as_deref().unwrap_or_default()
            ),
            _ => writeln!(
                e,
                "output         {} -> {}  (symlink)",
                o.path,
                o.target.as_deref().unwrap_or_default()
            ),
        };
    }
    if let Some(c) = &r.repro {
        let verdict = match c.reproducible {
            Some(true) => "reproducible (every run gave the same outputs)".to_owned(),
            Some(false) => format!(
                "NOT reproducible: {} path(s) differ: {}",
                c.differing_paths.len(),
                c.differing_paths.join(", ")
            ),
            None if r.cache_hit => {
                "cached result: the check is not re-run (--no-cache to re-check)".to_owned()
            }
            None => "not checked (the runs did not complete)".to_owned(),
        };
        let _ = writeln!(e, "reproducibility {verdict}");
        if c.reproducible == Some(false) {
            let _ = writeln!(e, "{}", c.text.trim_end());
        }
        if let Some(p) = &c.report_text {
            let _ = writeln!(e, "repro report   {}", p.display());
        }
    }
    for m in &r.missing_outputs {
        let _ = writeln!(e, "missing        {m}  (declared, not produced)");
    }
    let show_path = |p: &Option<PathBuf>| p.as_deref().map(Path::display).map(|d| d.to_string());
    for (label, p) in [
        ("stdout", &r.stdout),
        ("stderr", &r.stderr),
        ("execution log", &r.execution_log),
        ("provenance", &r.attestation.provenance),
        ("sbom", &r.attestation.sbom_cyclonedx),
        ("sbom", &r.attestation.sbom_spdx),
        ("keyring", &r.attestation.keyring),
    ] {
        if let Some(p) = show_path(p) {
            let _ = writeln!(e, "{label:<15}{p}");
        }
    }
    Ok(())
}

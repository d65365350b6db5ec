//! One action, start to finish: stage the inputs, run the sandbox helper,
//! ingest the outputs, write the execution log, build the ExecuteResponse.
//!
//! Per-action files live in `actions/{id}/` under the state directory (the
//! CAS's filesystem): `input/` (the staged tree), `sandbox/` (the helper's
//! scratch), `out/` (collected outputs), `stdout`, `stderr`, `spec.json`,
//! `status.json` and `helper.log`. The directory is removed afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Directory, ExecuteResponse, ExecutedActionMetadata, LogFile,
};
use bazel_remote_apis::google::protobuf::Timestamp;
use bazel_remote_apis::google::rpc::Status as RpcStatus;
use hermetic_sandbox::spec::{LimitOverrides, SPEC_VERSION, Spec, Stdio};
use hermetic_sandbox::status::Outcome;
use tokio::sync::watch;
use tracing::{Instrument as _, info, info_span, warn};

use crate::cas::{Store, blocking};
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result, ok_status};
use crate::exec::action::{Prepared, under_workdir};
use crate::exec::dirpool::DirPool;
use crate::exec::helper::{HelperFiles, Sandbox};
use crate::exec::log::{ExecutionLog, LOG_NAME, LOG_VERSION, Stamps, micros};
use crate::exec::{outputs, staging};
use crate::service::ac_service::inline_result;

/// What the runner needs from the daemon.
#[derive(Debug, Clone)]
pub struct RunEnv {
    /// The CAS.
    pub store: Arc<Store>,
    /// Where per-action directories are made.
    pub actions_dir: PathBuf,
    /// The sandbox helper and how it is driven.
    pub sandbox: Sandbox,
    /// The worker name reported in metadata.
    pub worker: String,
    /// SIGTERM-to-SIGKILL grace for the helper.
    pub kill_grace: Duration,
    /// Input subtrees materialized before, for reuse.
    pub pool: Arc<DirPool>,
    /// The delegated cgroup under which the helper makes each action's.
    pub cgroup_parent: Option<PathBuf>,
    /// Stage durations and outcomes are recorded here.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Keys and transparency log: every executed action is attested.
    pub provenance: Arc<crate::provenance::Provenance>,
    /// The alert hook, when configured: fired on a step's anomalies.
    pub alerts: Option<Arc<crate::alerts::Alerter>>,
}

/// The response and whether it may be cached.
#[derive(Debug)]
pub struct RunOutcome {
    /// The response to send.
    pub response: ExecuteResponse,
    /// Whether the result goes into the action cache.
    pub cacheable: bool,
    /// What is left to do once the response is out.
    pub leftovers: Leftovers,
}

/// Work the client need not wait for: making the execution log durable
/// (an fsync of the file and of its directory) and removing the
/// per-action directory (a tree of hardlinks and overlay scratch), which
/// together cost about as much as running a no-op action.
#[derive(Debug, Default)]
pub struct Leftovers {
    log: Option<crate::cas::store::Deferred>,
    dir: Option<PathBuf>,
}

impl Leftovers {
    /// Makes the execution log durable. Call it before the result goes
    /// into the action cache, which must never name a blob a power cut
    /// could lose; on failure the result must not be cached.
    pub async fn make_durable(&mut self, store: &Arc<Store>) -> Result<()> {
        match self.log.take() {
            Some(d) => {
                let store = store.clone();
                blocking(move || store.make_durable(d)).await
            }
            None => Ok(()),
        }
    }

    /// Removes the per-action directory.
    pub async fn remove_dir(&mut self) {
        if let Some(dir) = self.dir.take() {
            let _ = tokio::task::spawn_blocking(move || staging::remove_tree(&dir)).await;
        }
    }

    /// Both, in order; logs a failure.
    pub async fn settle(&mut self, store: &Arc<Store>) {
        if let Err(e) = self.make_durable(store).await {
            warn!(cause = %e, "cannot make the execution log durable");
        }
        self.remove_dir().await;
    }
}

fn timestamp(us: u64) -> Option<Timestamp> {
    (us > 0).then(|| Timestamp {
        seconds: (us / 1_000_000) as i64,
        nanos: ((us % 1_000_000) * 1000) as i32,
    })
}

fn now() -> u64 {
    micros(SystemTime::now())
}

/// Runs a prepared action (a reproducibility check when its platform asks
/// for one, see [`crate::exec::repro`]). Never fails: every problem becomes
/// the response's status.
pub async fn run(
    env: &RunEnv,
    op_name: &str,
    p: Arc<Prepared>,
    cancel: watch::Receiver<bool>,
    queued_at: SystemTime,
) -> RunOutcome {
    match p.selection.repro {
        Some(request) => {
            crate::exec::repro::check(env, op_name, p, cancel, queued_at, request).await
        }
        None => run_once(env, op_name, p, cancel, queued_at, None).await,
    }
}

/// How one run of a reproducibility check differs from a plain execution.
#[derive(Debug, Clone)]
pub struct VariedRun {
    /// The variation to apply.
    pub variation: hermetic_repro::RunVariation,
    /// Where (on tmpfs, not existing yet) the input tree is copied with its
    /// entries created in the variation's order.
    pub staging: PathBuf,
    /// Where a copy of the collected outputs is kept (not existing yet),
    /// for the comparison: ingestion moves the originals into the CAS.
    pub keep_outputs: PathBuf,
    /// Whether this run gets provenance: the check's baseline, whose result
    /// is the action's, does; the other runs, compared and discarded, do
    /// not (the signed report covers them).
    pub attest: bool,
}

/// Runs a prepared action once, varied as `varied` says when given. A
/// varied run settles its [`Leftovers`] before it returns (a check
/// compares its runs first); a plain run leaves them to the caller.
pub async fn run_once(
    env: &RunEnv,
    op_name: &str,
    p: Arc<Prepared>,
    cancel: watch::Receiver<bool>,
    queued_at: SystemTime,
    varied: Option<&VariedRun>,
) -> RunOutcome {
    let id = op_name.rsplit('/').next().unwrap_or(op_name).to_owned();
    let work = env.actions_dir.join(&id);
    let mut log = ExecutionLog {
        version: LOG_VERSION,
        operation: op_name.to_owned(),
        action: format!("{:?}", p.action_key),
        argv: p.command.arguments.clone(),
        env: p
            .command
            .environment_variables
            .iter()
            .map(|v| (v.name.clone(), v.value.clone()))
            .collect(),
        working_directory: p.command.working_directory.clone(),
        image: p.selection.image.clone(),
        image_rootfs: p.selection.rootfs.clone(),
        image_defaulted: p.selection.image_defaulted,
        profile: p.selection.profile.name.clone(),
        profile_digest: p.selection.profile_digest.clone(),
        timeout_ms: p.timeout.as_millis() as u64,
        timestamps: Stamps {
            queued: micros(queued_at),
            worker_start: now(),
            ..Default::default()
        },
        ..Default::default()
    };
    let mut result = ActionResult::default();
    let steps = run_steps(env, &work, &p, cancel, &mut log, &mut result, varied).await;
    let (status, message) = match steps {
        Ok(s) => s,
        Err(e) => {
            log.outcome = "error".into();
            log.error = Some(e.to_string());
            (e.to_rpc_status(), String::new())
        }
    };
    log.timestamps.worker_completed = now();
    result.execution_metadata = Some(metadata(&env.worker, &log.timestamps));
    let (m, t) = (&env.metrics, &log.timestamps);
    m.stage_between("queue_wait", t.queued, t.worker_start);
    m.stage_between("staging", t.input_fetch_start, t.input_fetch_completed);
    m.stage_between(
        "output_ingest",
        t.output_upload_start,
        t.output_upload_completed,
    );
    let outcome = if log.cancelled {
        "cancelled"
    } else {
        &log.outcome
    };
    m.action_finished(outcome, log.oom_killed, log.timed_out);
    // The engine's `action` span (issue 8: exported over OTLP when set).
    let span = tracing::Span::current();
    span.record("outcome", outcome);
    if let Some(code) = log.exit_code {
        span.record("exit_code", code);
    }
    let mut status = status;
    let mut server_logs = HashMap::new();
    let mut log_key = None;
    let mut leftovers = Leftovers {
        log: None,
        dir: Some(work),
    };
    match serde_json::to_vec_pretty(&log) {
        Ok(json) => match env.store.put_deferred(p.function, &json) {
            Ok((key, deferred)) => {
                leftovers.log = deferred;
                crate::exec::log::record_in_result(&mut result, &key);
                server_logs.insert(
                    LOG_NAME.to_owned(),
                    LogFile {
                        digest: Some(key.to_proto()),
                        human_readable: true,
                    },
                );
                log_key = Some(key);
            }
            Err(e) => warn!(cause = %e, "cannot store the execution log"),
        },
        Err(e) => warn!(cause = %e, "execution log does not serialize"),
    }
    // Provenance of what ran: a result without it is never returned.
    if status.code == 0 && varied.is_none_or(|v| v.attest) {
        match crate::provenance::attest::run(env, &p, &log, log_key, &result).await {
            Ok(Some(r)) => {
                server_logs.extend(crate::provenance::server_logs(&r));
                crate::provenance::record_in_result(&mut result, &r);
            }
            Ok(None) => {}
            Err(e) => {
                warn!(cause = %e, "cannot attest the action");
                status = e.to_rpc_status();
            }
        }
    }
    let cacheable = status.code == 0 && result.exit_code == 0 && !p.action.do_not_cache;
    info!(
        operation = op_name,
        action = ?p.action_key,
        outcome = %log.outcome,
        exit_code = result.exit_code,
        profile = %log.profile,
        profile_digest = %log.profile_digest,
        "action finished"
    );
    if varied.is_some() {
        leftovers.settle(&env.store).await;
    }
    RunOutcome {
        response: ExecuteResponse {
            result: Some(result),
            cached_result: false,
            status: Some(status),
            server_logs,
            message,
        },
        cacheable,
        leftovers,
    }
}

/// The step's anomalies: into the log, the metrics and, when there are
/// any, the alert hook (in the background).
fn record_anomalies(
    env: &RunEnv,
    log: &mut ExecutionLog,
    anomalies: &hermetic_sandbox::anomaly::Anomalies,
) {
    log.anomalies = Some(anomalies.clone());
    env.metrics.anomalies(anomalies);
    if !anomalies.any() {
        return;
    }
    warn!(
        operation = %log.operation,
        action = %log.action,
        network = anomalies.network_total(),
        foreign_exec = anomalies.foreign_exec_total(),
        writes_outside_outputs = anomalies.writes_total(),
        "anomalies in the step"
    );
    if let Some(alerts) = env.alerts.as_ref().filter(|a| a.fires_on(anomalies)) {
        let mut alert = crate::alerts::Alert::new(
            crate::alerts::AlertKind::Anomaly,
            format!(
                "action {}: {} network attempt(s), {} foreign executable(s), {} write(s) outside the outputs",
                log.action,
                anomalies.network_total(),
                anomalies.foreign_exec_total(),
                anomalies.writes_total()
            ),
        );
        alert.operation = Some(log.operation.clone());
        alert.action = Some(log.action.clone());
        alert.anomalies = Some(anomalies.clone());
        alerts.fire(alert);
    }
}

fn metadata(worker: &str, s: &Stamps) -> ExecutedActionMetadata {
    ExecutedActionMetadata {
        worker: worker.to_owned(),
        queued_timestamp: timestamp(s.queued),
        worker_start_timestamp: timestamp(s.worker_start),
        worker_completed_timestamp: timestamp(s.worker_completed),
        input_fetch_start_timestamp: timestamp(s.input_fetch_start),
        input_fetch_completed_timestamp: timestamp(s.input_fetch_completed),
        execution_start_timestamp: timestamp(s.execution_start),
        execution_completed_timestamp: timestamp(s.execution_completed),
        output_upload_start_timestamp: timestamp(s.output_upload_start),
        output_upload_completed_timestamp: timestamp(s.output_upload_completed),
        ..Default::default()
    }
}

fn rpc(code: tonic::Code, message: String) -> RpcStatus {
    RpcStatus {
        code: code as i32,
        message,
        details: Vec::new(),
    }
}

/// The steps; returns the response status and message.
async fn run_steps(
    env: &RunEnv,
    work: &Path,
    p: &Arc<Prepared>,
    mut cancel: watch::Receiver<bool>,
    log: &mut ExecutionLog,
    result: &mut ActionResult,
    varied: Option<&VariedRun>,
) -> Result<(RpcStatus, String)> {
    // 1. Stage the input tree and the parents of every output.
    log.timestamps.input_fetch_start = now();
    let input = work.join("input");
    let staged = {
        let (store, pool, p2, input2, work2) = (
            env.store.clone(),
            env.pool.clone(),
            p.clone(),
            input.clone(),
            work.to_owned(),
        );
        blocking(move || {
            std::fs::create_dir_all(&work2).map_err(Error::io("create", &work2))?;
            let dirs: HashMap<BlobKey, &Directory> =
                p2.tree.directories.iter().map(|(k, d)| (*k, d)).collect();
            let owner = sandbox_owner(&p2.selection.profile);
            let wd = &p2.command.working_directory;
            let parents: Vec<String> = p2
                .outputs
                .iter()
                .filter_map(|o| Some(under_workdir(wd, &o.path).rsplit_once('/')?.0.to_owned()))
                .collect();
            let made = std::iter::once(wd.as_str()).chain(parents.iter().map(String::as_str));
            let fresh = staging::touched_dirs(made.filter(|d| !d.is_empty()));
            let staged =
                staging::stage_input(&store, &pool, &dirs, p2.input_root, &input2, &fresh, owner)?;
            staging::create_dirs(&input2, wd, owner)?;
            for parent in &parents {
                staging::create_dirs(&input2, parent, owner)?;
            }
            Ok(staged)
        })
        .instrument(info_span!("staging"))
        .await?
    };
    // A check's run: the tree again, on tmpfs, its entries created in the
    // variation's order (readdir follows creation order there).
    let input = match varied {
        None => input,
        Some(v) => {
            let (from, to, seed) = (
                input.clone(),
                v.staging.clone(),
                v.variation.staging_order_seed,
            );
            let owner = sandbox_owner(&p.selection.profile);
            blocking(move || {
                hermetic_repro::staging::copy_tree(&from, &to, seed, owner)
                    .map_err(|e| Error::Internal(format!("cannot stage a check run: {e}")))
            })
            .await?;
            v.staging.clone()
        }
    };
    log.timestamps.input_fetch_completed = now();

    // 2. Run the helper.
    let wd = p.command.working_directory.clone();
    let mut step_env = log.env.clone();
    if let Some(v) = varied {
        hermetic_repro::plan::permute(&mut step_env, v.variation.env_order_seed);
    }
    let spec = Spec {
        version: SPEC_VERSION,
        rootfs: p.selection.rootfs.clone(),
        input: Some(input),
        scratch: work.join("sandbox"),
        output_dir: Some(work.join("out")),
        outputs: p
            .outputs
            .iter()
            .map(|o| under_workdir(&wd, &o.path))
            .collect(),
        argv: p.command.arguments.clone(),
        env: step_env,
        cwd: wd.clone(),
        profile: (*p.selection.profile).clone(),
        limits: LimitOverrides {
            timeout_ms: Some(p.timeout.as_millis().max(1) as u64),
            ..Default::default()
        },
        stdout: Stdio::File(work.join("stdout")),
        stderr: Stdio::File(work.join("stderr")),
        cgroup_parent: env.cgroup_parent.clone(),
        variation: varied
            .map(|v| v.variation.sandbox.clone())
            .unwrap_or_default(),
    };
    let files = HelperFiles {
        spec: work.join("spec.json"),
        status: work.join("status.json"),
        log: work.join("helper.log"),
    };
    // The helper enforces the timeout; this backstop only catches a helper
    // that hangs.
    let backstop = p.timeout
        + Duration::from_millis(p.selection.profile.limits.grace_ms)
        + Duration::from_secs(30);
    log.timestamps.execution_start = now();
    let run = env
        .sandbox
        .run(&spec, &files, &mut cancel, backstop, env.kill_grace)
        .instrument(info_span!("sandbox"))
        .await?;
    log.timestamps.execution_completed = now();
    if let Some(v) = varied
        && run.status.is_some()
    {
        let (from, to) = (work.join("out"), v.keep_outputs.clone());
        blocking(move || {
            if !from.exists() {
                return Ok(());
            }
            let order = hermetic_repro::plan::ORDER_AS_GIVEN;
            hermetic_repro::staging::copy_tree(&from, &to, order, None)
                .map_err(|e| Error::Internal(format!("cannot keep a check run's outputs: {e}")))
        })
        .await?;
    }

    // 3. Ingest stdout, stderr and the outputs, in one trip to a blocking
    // thread: each trip costs a thread wake-up, which for a small action is
    // as much as the work itself.
    log.timestamps.output_upload_start = now();
    let function = p.function;
    let collect = run.status.as_ref().is_some_and(|s| {
        matches!(
            s.outcome,
            Outcome::Completed | Outcome::TimedOut | Outcome::OomKilled
        ) && s.output_errors.is_empty()
    });
    let (stdout, stderr, collected) = {
        let (store, w, pool, p2) = (
            env.store.clone(),
            work.to_owned(),
            env.pool.clone(),
            p.clone(),
        );
        let reusable = run.status.is_some().then_some(staged);
        blocking(move || {
            if let Some(staged) = reusable {
                // The sandbox is gone: its input subtrees serve the next action.
                staged.give_back(&pool);
            }
            let stdout = ingest_stream(&store, function, &w.join("stdout"))?;
            let stderr = ingest_stream(&store, function, &w.join("stderr"))?;
            let mut result = ActionResult {
                stdout_digest: Some(stdout.to_proto()),
                stderr_digest: Some(stderr.to_proto()),
                ..Default::default()
            };
            let collected = if collect {
                outputs::collect(
                    &store,
                    function,
                    &w.join("out"),
                    &p2.command.working_directory,
                    &p2.outputs,
                    p2.directory_format,
                    &mut result,
                )
                .and_then(|()| inline_result(&store, function, &mut result, &p2.inline))
                .map(|()| result)
            } else {
                Ok(result)
            };
            Ok((stdout, stderr, collected))
        })
        .instrument(info_span!("output_ingest"))
        .await?
    };
    let collected = collected.map(|c| *result = c);
    result.stdout_digest = Some(stdout.to_proto());
    result.stderr_digest = Some(stderr.to_proto());
    log.stdout_digest = Some(format!("{stdout:?}"));
    log.stderr_digest = Some(format!("{stderr:?}"));
    log.cancelled = run.cancelled;

    let Some(status) = run.status else {
        log.outcome = "error".into();
        let problem = run.problem.unwrap_or_default();
        log.error = Some(problem.clone());
        log.timestamps.output_upload_completed = now();
        return Ok(if run.cancelled {
            (
                rpc(tonic::Code::Cancelled, "the execution was cancelled".into()),
                problem,
            )
        } else if run.overran {
            (
                rpc(
                    tonic::Code::DeadlineExceeded,
                    format!(
                        "the sandbox helper overran the timeout of {:?} and was killed",
                        p.timeout
                    ),
                ),
                problem,
            )
        } else {
            (
                rpc(
                    tonic::Code::Internal,
                    format!("sandbox helper failed: {problem}"),
                ),
                String::new(),
            )
        });
    };
    log.outcome = serde_json::to_value(status.outcome)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    log.exit_code = status.exit_code;
    log.signal = status.signal;
    log.oom_killed = status.oom_killed;
    log.timed_out = status.timed_out;
    env.metrics.stage("sandbox_setup", status.timings.setup_us);
    env.metrics.stage("execution", status.timings.run_us);
    log.usage = Some(status.usage.clone());
    log.restrictions = Some(status.restrictions.clone());
    record_anomalies(env, log, &status.anomalies);
    log.error = status.error.clone();
    result.exit_code = match (status.exit_code, status.signal) {
        (Some(c), _) => c,
        (None, Some(s)) => 128 + s,
        (None, None) => -1,
    };
    let outcome = status.outcome;
    if let Err(e) = collected {
        log.error = Some(e.to_string());
        log.timestamps.output_upload_completed = now();
        return Ok((e.to_rpc_status(), String::new()));
    }
    log.timestamps.output_upload_completed = now();
    if !status.output_errors.is_empty() {
        let why = status.output_errors.join("; ");
        return Ok((
            rpc(
                tonic::Code::InvalidArgument,
                format!("invalid outputs: {why}"),
            ),
            String::new(),
        ));
    }
    let detail = status.error.clone().unwrap_or_default();
    Ok(match outcome {
        Outcome::Completed => (ok_status(), String::new()),
        Outcome::OomKilled => (
            ok_status(),
            format!("the action was killed by the OOM killer {detail}"),
        ),
        Outcome::TimedOut => (
            rpc(
                tonic::Code::DeadlineExceeded,
                format!("the action timed out after {:?}", p.timeout),
            ),
            String::new(),
        ),
        Outcome::ExecFailed => {
            result.exit_code = 127;
            (
                ok_status(),
                format!("the command could not be executed: {detail}"),
            )
        }
        Outcome::SetupFailed => (
            rpc(
                tonic::Code::Internal,
                format!("sandbox setup failed: {detail}"),
            ),
            String::new(),
        ),
        Outcome::OutputError => (
            rpc(
                tonic::Code::InvalidArgument,
                format!("invalid outputs: {}", status.output_errors.join("; ")),
            ),
            String::new(),
        ),
        Outcome::Cancelled => (
            rpc(tonic::Code::Cancelled, "the execution was cancelled".into()),
            String::new(),
        ),
    })
}

/// The host ids the sandbox maps the step's user to, when they differ from
/// ours (root: an unprivileged range; rootless: our own ids, which own the
/// staged tree already).
fn sandbox_owner(profile: &hermetic_sandbox::profile::Profile) -> Option<(u32, u32)> {
    let ids = hermetic_sandbox::run::host_ids(&profile.user);
    (ids != (
        nix::unistd::geteuid().as_raw(),
        nix::unistd::getegid().as_raw(),
    ))
        .then_some(ids)
}

/// Ingests a stdout or stderr file; absent means empty.
fn ingest_stream(store: &Store, function: DigestFunction, path: &Path) -> Result<BlobKey> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > 0 => store.ingest_file(path, function, false),
        _ => Ok(function.empty()),
    }
}

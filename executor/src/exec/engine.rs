//! The execution engine: operations, the bounded queue, the concurrency
//! limit, de-duplication of identical in-flight actions, cancellation and
//! graceful shutdown.
//!
//! Each accepted action becomes an [`Operation`] whose current
//! `google.longrunning.Operation` is published on a watch channel: Execute
//! and WaitExecution streams subscribe to it, so a client disconnecting
//! does not cancel anything. Only CancelOperation (or shutdown) does.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, ExecuteOperationMetadata, ExecuteResponse, execution_stage,
};
use bazel_remote_apis::google::longrunning::{Operation as LroOperation, operation};
use bazel_remote_apis::google::protobuf::Any;
use prost::Message;
use tokio::sync::watch;
use tracing::{Instrument, info, info_span, warn};

use crate::action_cache::ActionCache;
use crate::auth::Caller;
use crate::cas::store::Deferred;
use crate::cas::{Store, blocking};
use crate::digest::BlobKey;
use crate::error::{Error, Result};
use crate::exec::action::{self, Limits, Prepared};
use crate::exec::platform::Choices;
use crate::exec::runner::{self, RunEnv};
use crate::sched::{Admission, Scheduler};
use crate::service::ac_service::{Inline, inline_result};

const METADATA_URL: &str =
    "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteOperationMetadata";
const RESPONSE_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.ExecuteResponse";
/// Finished operations kept at most (a flood of cache hits, each an
/// operation, must not grow memory for the whole retention period).
pub const MAX_FINISHED_OPS: usize = 100_000;
/// Actions whose cache-relevant fields are remembered at most.
const RECENT_ACTIONS: usize = 4096;

/// What a cache hit needs of an Action, remembered by digest (an Action is
/// content-addressed: only the blob's presence can change).
#[derive(Debug)]
struct ActionFacts {
    do_not_cache: bool,
    platform: Option<bazel_remote_apis::build::bazel::remote::execution::v2::Platform>,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// How actions are run.
    pub run_env: RunEnv,
    /// Images and profiles.
    pub choices: Choices,
    /// Preparation limits.
    pub limits: Limits,
    /// Actions run at once.
    pub jobs: usize,
    /// Actions waiting at most.
    pub max_queued: usize,
    /// How long finished operations stay visible.
    pub retention: Duration,
    /// Per-principal limits on queued and running actions.
    pub quotas: crate::sched::QuotaConfig,
}

/// One execution and its published state.
#[derive(Debug)]
pub struct Operation {
    /// `operations/{uuid}`.
    pub name: String,
    /// The action.
    pub action_key: BlobKey,
    state: watch::Sender<Arc<LroOperation>>,
    cancel: watch::Sender<bool>,
    /// Set once the result is in the action cache (or will not be).
    settled: watch::Sender<bool>,
    /// Principals who asked for it (an identical in-flight action is
    /// shared): only they, and admins, see the operation.
    owners: Mutex<BTreeSet<String>>,
}

impl Operation {
    fn new(action_key: BlobKey) -> Arc<Self> {
        Self::with_state(action_key, execution_stage::Value::Queued, None)
    }

    /// An operation born in `stage`, done when `response` is given.
    fn with_state(
        action_key: BlobKey,
        stage: execution_stage::Value,
        response: Option<ExecuteResponse>,
    ) -> Arc<Self> {
        let name = format!("operations/{}", uuid::Uuid::new_v4());
        let initial = Arc::new(lro(&name, &action_key, stage, response));
        Arc::new(Operation {
            name,
            action_key,
            state: watch::Sender::new(initial),
            cancel: watch::Sender::new(false),
            settled: watch::Sender::new(false),
            owners: Mutex::default(),
        })
    }

    /// Whether `caller` may see this operation (see [`Caller::may_see`]).
    pub fn visible_to(&self, caller: Option<&Caller>) -> bool {
        Caller::may_see(caller, &lock(&self.owners))
    }

    /// Follows the operation's state.
    pub fn subscribe(&self) -> watch::Receiver<Arc<LroOperation>> {
        self.state.subscribe()
    }

    /// The current state.
    pub fn current(&self) -> Arc<LroOperation> {
        self.state.borrow().clone()
    }

    /// Asks the execution to stop.
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
    }

    fn is_done(&self) -> bool {
        self.state.borrow().done
    }

    fn set_stage(&self, stage: execution_stage::Value) {
        self.state
            .send_replace(Arc::new(lro(&self.name, &self.action_key, stage, None)));
    }

    fn finish(&self, response: ExecuteResponse) {
        self.state.send_replace(Arc::new(lro(
            &self.name,
            &self.action_key,
            execution_stage::Value::Completed,
            Some(response),
        )));
    }
}

/// A `google.longrunning.Operation` for a stage.
fn lro(
    name: &str,
    key: &BlobKey,
    stage: execution_stage::Value,
    response: Option<ExecuteResponse>,
) -> LroOperation {
    let metadata = ExecuteOperationMetadata {
        stage: stage as i32,
        action_digest: Some(key.to_proto()),
        digest_function: key.function.to_proto(),
        ..Default::default()
    };
    LroOperation {
        name: name.to_owned(),
        metadata: Some(Any {
            type_url: METADATA_URL.into(),
            value: metadata.encode_to_vec(),
        }),
        done: response.is_some(),
        result: response.map(|r| {
            operation::Result::Response(Any {
                type_url: RESPONSE_URL.into(),
                value: r.encode_to_vec(),
            })
        }),
    }
}

/// What the cache lookup found.
enum Looked {
    /// A cached result, inlined as asked, and the blobs its refreshed
    /// provenance put in the CAS, to make durable after the response.
    Hit(Box<ActionResult>, Vec<Deferred>),
    /// No usable result: the action, prepared to run.
    Miss(Box<Prepared>),
}

/// The engine.
#[derive(Debug)]
pub struct Engine {
    settings: EngineSettings,
    store: Arc<Store>,
    action_cache: Arc<ActionCache>,
    ops: Mutex<HashMap<String, Arc<Operation>>>,
    /// Names of finished operations, oldest first, for pruning `ops`.
    finished: Mutex<VecDeque<(Instant, String)>>,
    /// In-flight operations by instance name and action.
    inflight: Mutex<HashMap<(String, BlobKey), Arc<Operation>>>,
    queued: AtomicUsize,
    active: watch::Sender<usize>,
    sched: Arc<Scheduler>,
    accepting: AtomicBool,
    shutting_down: AtomicBool,
    /// Actions read recently, for hits served without a blocking trip.
    actions: Arc<Mutex<crate::memo::Bounded<BlobKey, Arc<ActionFacts>>>>,
}

/// A request, parsed.
#[derive(Debug)]
pub struct ExecuteParams {
    /// The action.
    pub action_key: BlobKey,
    /// Skip the action cache.
    pub skip_cache_lookup: bool,
    /// What to inline.
    pub inline: Inline,
    /// Who asked (quotas and fair scheduling); `None`: the daemon's local
    /// user (`hermetic run --local`).
    pub principal: Option<crate::auth::Principal>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Engine {
    /// A new engine.
    pub fn new(
        settings: EngineSettings,
        store: Arc<Store>,
        action_cache: Arc<ActionCache>,
    ) -> Self {
        Engine {
            sched: Scheduler::new(settings.jobs, &settings.quotas),
            settings,
            store,
            action_cache,
            ops: Mutex::default(),
            finished: Mutex::default(),
            inflight: Mutex::default(),
            queued: AtomicUsize::new(0),
            active: watch::Sender::new(0),
            accepting: AtomicBool::new(true),
            shutting_down: AtomicBool::new(false),
            actions: Arc::new(Mutex::new(crate::memo::Bounded::new(RECENT_ACTIONS))),
        }
    }

    /// How actions reach the sandbox helper.
    pub fn sandbox(&self) -> &crate::exec::helper::Sandbox {
        &self.settings.run_env.sandbox
    }

    /// Images and profiles actions may choose from (for `hermetic.v1.Status`).
    pub fn choices(&self) -> &Choices {
        &self.settings.choices
    }

    /// Actions waiting for a slot, and actions accepted and not finished.
    pub fn queue_load(&self) -> (usize, usize) {
        (self.queued.load(Ordering::SeqCst), *self.active.borrow())
    }

    /// Whether new executions are accepted (false once shutdown began).
    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::SeqCst)
    }

    /// The operation named `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Operation>> {
        lock(&self.ops)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("no operation named {name:?}")))
    }

    /// Every known operation (running, and finished within the retention
    /// period), ordered by name.
    pub fn list(&self) -> Vec<Arc<Operation>> {
        let mut ops: Vec<Arc<Operation>> = lock(&self.ops).values().cloned().collect();
        ops.sort_by(|a, b| a.name.cmp(&b.name));
        ops
    }

    /// Forgets a finished operation.
    pub fn delete(&self, name: &str) -> Result<()> {
        lock(&self.ops)
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| Error::NotFound(format!("no operation named {name:?}")))
    }

    /// Makes `op` visible to GetOperation and WaitExecution, forgetting
    /// finished operations past the retention period or beyond
    /// [`MAX_FINISHED_OPS`] (oldest first), in time proportional to what
    /// is forgotten.
    fn register(&self, op: &Arc<Operation>) {
        let retention = self.settings.retention;
        let expired: Vec<String> = {
            let mut finished = lock(&self.finished);
            let mut expired = Vec::new();
            while let Some((at, _)) = finished.front() {
                if at.elapsed() < retention && finished.len() <= MAX_FINISHED_OPS {
                    break;
                }
                expired.extend(finished.pop_front().map(|(_, name)| name));
            }
            expired
        };
        let mut ops = lock(&self.ops);
        for name in &expired {
            ops.remove(name);
        }
        ops.insert(op.name.clone(), op.clone());
    }

    /// Publishes `op`'s response and queues it for pruning.
    fn finish(&self, op: &Operation, response: ExecuteResponse) {
        op.finish(response);
        lock(&self.finished).push_back((Instant::now(), op.name.clone()));
    }

    /// [`Engine::execute_in`] the empty instance name.
    pub async fn execute(self: &Arc<Self>, params: ExecuteParams) -> Result<Arc<Operation>> {
        self.execute_in("", params).await
    }

    /// Accepts an execution for `instance` (whose action cache it reads and
    /// writes): a cached result, an identical action already in flight, or
    /// a new queued operation.
    pub async fn execute_in(
        self: &Arc<Self>,
        instance: &str,
        params: ExecuteParams,
    ) -> Result<Arc<Operation>> {
        let owner = params
            .principal
            .as_ref()
            .map_or_else(|| "local".to_owned(), ToString::to_string);
        let op = self.accept(instance, params).await?;
        lock(&op.owners).insert(owner);
        Ok(op)
    }

    async fn accept(
        self: &Arc<Self>,
        instance: &str,
        params: ExecuteParams,
    ) -> Result<Arc<Operation>> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("the executor is shutting down".into()));
        }
        let key = params.action_key;
        let who = params
            .principal
            .as_ref()
            .map_or_else(|| "local".to_owned(), ToString::to_string);
        let flight = (instance.to_owned(), key);
        let pending = lock(&self.inflight).get(&flight).cloned();
        if let Some(op) = pending {
            if !op.is_done() {
                return Ok(op);
            }
            // Finished, its result being written to the cache: wait for it.
            let mut settled = op.settled.subscribe();
            let _ = settled.wait_for(|s| *s).await;
        }
        if !params.skip_cache_lookup
            && params.inline.is_empty()
            && let Some(result) = self.recent_hit(instance, &key)
        {
            return Ok(self.cached(key, result));
        }
        // One trip to a blocking thread: the Action, the cache, preparation.
        let prov = self.provenance().clone();
        let (store, ac, choices, limits, name, skip) = (
            self.store.clone(),
            self.action_cache.clone(),
            self.settings.choices.clone(),
            self.settings.limits,
            instance.to_owned(),
            params.skip_cache_lookup,
        );
        let inline = params.inline;
        let metrics = self.settings.run_env.metrics.clone();
        let actions = self.actions.clone();
        let looked = blocking(move || {
            let action = action::load_action(&store, &key)?;
            lock(&actions).insert(
                key,
                Arc::new(ActionFacts {
                    do_not_cache: action.do_not_cache,
                    platform: action.platform.clone(),
                }),
            );
            if !skip && !action.do_not_cache {
                let found = ac.get_in(&name, &key, &store)?;
                metrics.cache_lookup(found.is_some());
                if let Some(mut r) = found {
                    choices.recheck_trust(action.platform.as_ref())?;
                    inline_result(&store, key.function, &mut r, &inline)?;
                    let pending = prov
                        .refresh_in_result(&store, key.function, &mut r)
                        .unwrap_or_else(|e| {
                            warn!(cause = %e, "cannot refresh the provenance of a cached result");
                            Vec::new()
                        });
                    return Ok(Looked::Hit(Box::new(r), pending));
                }
            }
            action::prepare(&store, &choices, limits, key, action, inline)
                .map(|p| Looked::Miss(Box::new(p)))
        })
        .await?;
        let prepared = match looked {
            Looked::Hit(result, pending) => {
                let op = self.cached(key, *result);
                if !pending.is_empty() {
                    let store = self.store.clone();
                    tokio::spawn(blocking(move || {
                        for d in pending {
                            if let Err(e) = store.make_durable(d) {
                                warn!(cause = %e, "cannot make a refreshed provenance bundle durable");
                            }
                        }
                        Ok(())
                    }));
                }
                return Ok(op);
            }
            Looked::Miss(p) => *p,
        };
        let (op, admission) = {
            let mut inflight = lock(&self.inflight);
            if let Some(op) = inflight.get(&flight).filter(|o| !o.is_done()) {
                return Ok(op.clone());
            }
            if self.queued.load(Ordering::SeqCst) >= self.settings.max_queued {
                return Err(Error::ResourceExhausted {
                    message: format!(
                        "the execution queue is full ({} actions waiting); retry later",
                        self.settings.max_queued
                    ),
                    retry_after: Duration::from_secs(1),
                });
            }
            let admission = self
                .sched
                .admit(&who)
                .map_err(|e| Error::ResourceExhausted {
                    message: e.0,
                    retry_after: Duration::from_secs(1),
                })?;
            let op = Operation::new(key);
            inflight.insert(flight.clone(), op.clone());
            self.queued.fetch_add(1, Ordering::SeqCst);
            self.active.send_modify(|n| *n += 1);
            (op, admission)
        };
        self.register(&op);
        let mut pins = prepared.tree.all_blobs();
        pins.extend([prepared.action_key, prepared.command_key]);
        let pin = self.store.pin(pins);
        let engine = self.clone();
        let op2 = op.clone();
        let span = info_span!(
            "action",
            operation = %op.name,
            action = ?key,
            outcome = tracing::field::Empty,
            exit_code = tracing::field::Empty,
        );
        tokio::spawn(async move {
            // The span ends before the action stops counting as running:
            // a shutdown that drained the action then exports it whole.
            let mut leftovers = engine
                .clone()
                .run(op2, flight, Arc::new(prepared), admission)
                .instrument(span)
                .await;
            engine.active.send_modify(|n| *n -= 1);
            // Off the client's path, and no longer counted as running: a
            // removal cut short by the daemon's exit is finished at its next
            // start-up, which empties the actions directory.
            leftovers.remove_dir().await;
            drop(pin);
        });
        Ok(op)
    }

    /// A cache hit served from memory, without a trip to a blocking
    /// thread: the same checks as the full lookup (the Action is stored
    /// and cacheable, the result's file unchanged and every blob it names
    /// stored, its image still trusted, its provenance refreshed) each
    /// answered from a memo and at most a `stat`. `None` when any of them
    /// is not known that way: the full lookup then decides (and reports).
    fn recent_hit(&self, instance: &str, key: &BlobKey) -> Option<ActionResult> {
        let facts = lock(&self.actions).get(key).cloned()?;
        if facts.do_not_cache || !self.store.contains(key) {
            return None;
        }
        let mut result = self
            .action_cache
            .get_recent_in(instance, key, &self.store)?;
        if !self
            .settings
            .choices
            .recheck_trust_recent(facts.platform.as_ref())
            || !self
                .provenance()
                .refresh_recent(&self.store, key.function, &mut result)
        {
            return None;
        }
        self.settings.run_env.metrics.cache_lookup(true);
        Some(result)
    }

    /// Keys and transparency log.
    pub fn provenance(&self) -> &Arc<crate::provenance::Provenance> {
        &self.settings.run_env.provenance
    }

    fn cached(&self, key: BlobKey, result: ActionResult) -> Arc<Operation> {
        // The original execution's provenance documents.
        let server_logs = crate::provenance::from_result(&result)
            .map(|r| crate::provenance::server_logs(&r))
            .unwrap_or_default();
        // Born completed: a hit has no earlier state to publish.
        let op = Operation::with_state(
            key,
            execution_stage::Value::Completed,
            Some(ExecuteResponse {
                result: Some(result),
                cached_result: true,
                server_logs,
                status: Some(crate::error::ok_status()),
                ..Default::default()
            }),
        );
        lock(&self.finished).push_back((Instant::now(), op.name.clone()));
        self.register(&op);
        op
    }

    async fn run(
        self: Arc<Self>,
        op: Arc<Operation>,
        flight: (String, BlobKey),
        prepared: Arc<Prepared>,
        admission: Admission,
    ) -> runner::Leftovers {
        let queued_at = SystemTime::now();
        let mut cancel = op.cancel.subscribe();
        let permit = tokio::select! {
            p = Scheduler::acquire(admission) => Some(p),
            _ = cancel.wait_for(|c| *c) => None,
        };
        self.queued.fetch_sub(1, Ordering::SeqCst);
        let (response, to_cache, mut leftovers) = match permit {
            None => {
                tracing::Span::current().record("outcome", "cancelled");
                self.settings
                    .run_env
                    .metrics
                    .action_finished("cancelled", false, false);
                (
                    ExecuteResponse {
                        status: Some(
                            Error::Cancelled("cancelled while queued".into()).to_rpc_status(),
                        ),
                        ..Default::default()
                    },
                    None,
                    runner::Leftovers::default(),
                )
            }
            Some(_permit) => {
                op.set_stage(execution_stage::Value::Executing);
                let outcome = runner::run(
                    &self.settings.run_env,
                    &op.name,
                    prepared.clone(),
                    cancel,
                    queued_at,
                )
                .await;
                let to_cache = outcome
                    .cacheable
                    .then(|| outcome.response.result.clone())
                    .flatten();
                (outcome.response, to_cache, outcome.leftovers)
            }
        };
        let response = if self.shutting_down.load(Ordering::SeqCst)
            && response
                .status
                .as_ref()
                .is_some_and(|s| s.code == tonic::Code::Cancelled as i32)
        {
            ExecuteResponse {
                status: Some(
                    Error::Unavailable("the executor shut down before the action finished".into())
                        .to_rpc_status(),
                ),
                ..response
            }
        } else {
            response
        };
        self.finish(&op, response);
        // The client has its answer; the cache write follows. Until it is
        // done the operation stays in `inflight`, where an identical
        // Execute waits for it (see `execute_in`) instead of missing.
        let durable = leftovers.make_durable(&self.store).await;
        if let Err(e) = &durable {
            warn!(cause = %e, "cannot make the execution log durable; not caching the result");
        }
        if let Some(result) = to_cache.filter(|_| durable.is_ok()) {
            let (ac, (instance, key)) = (self.action_cache.clone(), flight.clone());
            let (images, image) = (
                self.settings.choices.images.clone(),
                prepared.selection.image_digest.clone(),
            );
            // The image's reference first, so that Remove never misses a
            // cached result that ran on it.
            let store = self.store.clone();
            let write = blocking(move || {
                images.record_use(&image, &instance, &key)?;
                ac.put_in(&instance, &key, &result)?;
                // Recent provenance keeps what it names (see `crate::gc`).
                crate::gc::retain_result(&store, key, &result);
                Ok(())
            });
            if let Err(e) = write.await {
                warn!(cause = %e, "cannot write the action cache");
            }
        }
        op.settled.send_replace(true);
        {
            let mut inflight = lock(&self.inflight);
            if inflight.get(&flight).is_some_and(|o| Arc::ptr_eq(o, &op)) {
                inflight.remove(&flight);
            }
        }
        leftovers
    }

    /// Stops accepting work, lets running actions finish within `grace`,
    /// then cancels the rest (their helpers get SIGTERM, then SIGKILL) and
    /// waits for them to report.
    pub async fn shutdown(&self, grace: Duration) {
        self.accepting.store(false, Ordering::SeqCst);
        let mut active = self.active.subscribe();
        let n = *active.borrow();
        info!(active = n, ?grace, "draining actions");
        if tokio::time::timeout(grace, active.wait_for(|n| *n == 0))
            .await
            .is_ok()
        {
            return;
        }
        self.shutting_down.store(true, Ordering::SeqCst);
        let ops: Vec<Arc<Operation>> = lock(&self.inflight).values().cloned().collect();
        warn!(
            count = ops.len(),
            "grace period over; cancelling running actions"
        );
        for op in ops {
            op.cancel();
        }
        let wait = self.settings.run_env.kill_grace + Duration::from_secs(10);
        if tokio::time::timeout(wait, active.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            warn!("some actions did not stop in time");
        }
    }
}

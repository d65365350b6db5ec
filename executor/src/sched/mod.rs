//! Fair scheduling and per-principal quotas.
//!
//! [`Scheduler`] hands out the daemon's execution slots (`jobs`). Each
//! principal has its own FIFO queue; when a slot frees, the principals
//! with waiting actions are served round-robin, so one principal with a
//! thousand queued actions delays another's next action by at most one
//! action per principal ahead of it, never by its whole backlog. A
//! principal at its concurrency quota is skipped until one of its actions
//! ends. [`Scheduler::admit`] enforces the queued-actions quota when an
//! action is accepted; [`upload::UploadQuota`] the uploaded bytes.

pub mod upload;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// The `[quotas]` section. Every limit applies to each principal alone;
/// 0 means no limit of its own.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// Actions of one principal running at once. Default 0: up to `jobs`.
    pub max_concurrent_actions: usize,
    /// Actions of one principal waiting for a slot. Default 0: up to
    /// `max_queued`.
    pub max_queued_actions: usize,
    /// Request bytes one principal may upload (BatchUpdateBlobs and
    /// ByteStream Write) per period. Default 0: no limit.
    pub upload_bytes_per_period: u64,
    /// The period, in seconds. Default 0: 3600.
    pub upload_period_secs: u64,
}

/// A refused admission.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded(pub String);

impl std::fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug)]
struct Waiter {
    grant: oneshot::Sender<Slot>,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    running_by: HashMap<String, usize>,
    queued_by: HashMap<String, usize>,
    waiting: HashMap<String, VecDeque<Waiter>>,
    /// Principals with waiters, in the order they are next served.
    turn: VecDeque<String>,
}

/// The fair scheduler.
#[derive(Debug)]
pub struct Scheduler {
    jobs: usize,
    max_concurrent: usize,
    max_queued: usize,
    state: Mutex<State>,
}

/// A running action's slot; dropping it frees the slot for the next
/// principal in turn.
#[derive(Debug)]
pub struct Slot {
    /// `None` once released.
    held: Option<(Arc<Scheduler>, String)>,
}

/// An accepted action's place in its principal's queue (in the order
/// actions were accepted) and in its queued count, until it gets a slot
/// or is dropped (abandoned).
#[derive(Debug)]
pub struct Admission {
    sched: Arc<Scheduler>,
    principal: String,
    grant: Option<oneshot::Receiver<Slot>>,
}

impl Scheduler {
    /// `jobs` slots; per-principal limits from `quotas`.
    pub fn new(jobs: usize, quotas: &QuotaConfig) -> Arc<Self> {
        Arc::new(Scheduler {
            jobs: jobs.max(1),
            max_concurrent: quotas.max_concurrent_actions,
            max_queued: quotas.max_queued_actions,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an accepted action at the end of `principal`'s queue,
    /// within its queued-actions quota.
    pub fn admit(self: &Arc<Self>, principal: &str) -> Result<Admission, QuotaExceeded> {
        let mut st = self.lock();
        let n = st.queued_by.entry(principal.to_owned()).or_default();
        if self.max_queued > 0 && *n >= self.max_queued {
            return Err(QuotaExceeded(format!(
                "{principal} already has {n} actions queued (quota: {} per principal); retry when some have started",
                self.max_queued
            )));
        }
        *n += 1;
        let (tx, rx) = oneshot::channel();
        let q = st.waiting.entry(principal.to_owned()).or_default();
        q.push_back(Waiter { grant: tx });
        if q.len() == 1 && !st.turn.iter().any(|p| p == principal) {
            st.turn.push_back(principal.to_owned());
        }
        self.dispatch(&mut st);
        Ok(Admission {
            sched: self.clone(),
            principal: principal.to_owned(),
            grant: Some(rx),
        })
    }

    /// Waits for the admitted action's slot. Dropping the future (a
    /// cancelled action) gives up its place.
    pub async fn acquire(mut admission: Admission) -> Slot {
        let rx = admission
            .grant
            .take()
            .expect("an admission is awaited once");
        let granted = rx.await;
        // Queued until now: dropping the admission uncounts it.
        drop(admission);
        match granted {
            Ok(slot) => slot,
            // Unreachable: a waiter's sender is used, or dropped only after
            // its receiver was (a failed send).
            Err(_) => panic!("the scheduler dropped a waiter"),
        }
    }

    /// Actions running for `principal`, and queued.
    pub fn load_of(&self, principal: &str) -> (usize, usize) {
        let st = self.lock();
        (
            st.running_by.get(principal).copied().unwrap_or(0),
            st.queued_by.get(principal).copied().unwrap_or(0),
        )
    }

    /// Gives free slots to waiters, principals in turn.
    fn dispatch(self: &Arc<Self>, st: &mut State) {
        let mut skipped = 0;
        while st.running < self.jobs && skipped < st.turn.len() {
            let Some(principal) = st.turn.pop_front() else {
                break;
            };
            let busy = st.running_by.get(&principal).copied().unwrap_or(0);
            if self.max_concurrent > 0 && busy >= self.max_concurrent {
                // At its quota: keep its place in the rotation.
                st.turn.push_back(principal);
                skipped += 1;
                continue;
            }
            let Some(q) = st.waiting.get_mut(&principal) else {
                continue;
            };
            let Some(w) = q.pop_front() else {
                st.waiting.remove(&principal);
                continue;
            };
            if q.is_empty() {
                st.waiting.remove(&principal);
            } else {
                st.turn.push_back(principal.clone());
            }
            skipped = 0;
            st.running += 1;
            *st.running_by.entry(principal.clone()).or_default() += 1;
            let slot = Slot {
                held: Some((self.clone(), principal)),
            };
            if let Err(mut slot) = w.grant.send(slot) {
                // The waiter gave up (cancelled). Dropping the slot would
                // take the lock we hold: release it here instead.
                if let Some((_, p)) = slot.held.take() {
                    release(st, &p);
                }
            }
        }
    }
}

fn release(st: &mut State, principal: &str) {
    st.running -= 1;
    if let Some(n) = st.running_by.get_mut(principal) {
        *n -= 1;
        if *n == 0 {
            st.running_by.remove(principal);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((sched, principal)) = self.held.take() {
            let mut st = sched.lock();
            release(&mut st, &principal);
            sched.dispatch(&mut st);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut st = self.sched.lock();
        if let Some(n) = st.queued_by.get_mut(&self.principal) {
            *n -= 1;
            if *n == 0 {
                st.queued_by.remove(&self.principal);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The order in which queued actions of two principals get one slot.
    #[tokio::test]
    async fn principals_take_turns() {
        let s = Scheduler::new(1, &QuotaConfig::default());
        let first = Scheduler::acquire(s.admit("a").unwrap()).await;
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut tasks = Vec::new();
        // a queues five, then b queues two.
        for who in ["a", "a", "a", "a", "a", "b", "b"] {
            let admission = s.admit(who).unwrap();
            let tx = tx.clone();
            tasks.push(tokio::spawn(async move {
                let slot = Scheduler::acquire(admission).await;
                tx.send(who).unwrap();
                drop(slot);
            }));
        }
        assert_eq!(s.load_of("a"), (1, 5));
        assert_eq!(s.load_of("b"), (0, 2));
        drop(first);
        let mut order = Vec::new();
        for _ in 0..7 {
            order.push(rx.recv().await.unwrap());
        }
        // b is served after a's next action, not after all five.
        assert_eq!(order, ["a", "b", "a", "b", "a", "a", "a"]);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(s.load_of("a"), (0, 0));
    }

    #[tokio::test]
    async fn quotas_bound_queued_and_running_actions() {
        let s = Scheduler::new(
            4,
            &QuotaConfig {
                max_concurrent_actions: 1,
                max_queued_actions: 2,
                ..Default::default()
            },
        );
        let a1 = s.admit("a").unwrap();
        let a2 = s.admit("a").unwrap();
        let err = s.admit("a").unwrap_err();
        assert!(err.0.contains("a already has 2 actions queued"), "{err}");
        let b = s.admit("b").unwrap();
        let running = Scheduler::acquire(a1).await;
        // a's second action waits although three slots are free.
        let waiting = tokio::spawn(Scheduler::acquire(a2));
        tokio::task::yield_now().await;
        assert_eq!(s.load_of("a"), (1, 1));
        assert!(!waiting.is_finished());
        let b_slot = Scheduler::acquire(b).await;
        drop(running);
        let second = waiting.await.unwrap();
        assert_eq!(s.load_of("a"), (1, 0));
        drop((second, b_slot));
        assert_eq!(s.load_of("a"), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_waiter_gives_its_turn_away() {
        let s = Scheduler::new(1, &QuotaConfig::default());
        let held = Scheduler::acquire(s.admit("a").unwrap()).await;
        let cancelled = tokio::spawn(Scheduler::acquire(s.admit("a").unwrap()));
        tokio::task::yield_now().await;
        cancelled.abort();
        let _ = cancelled.await;
        let next = tokio::spawn(Scheduler::acquire(s.admit("b").unwrap()));
        drop(held);
        let slot = next.await.unwrap();
        assert_eq!(s.load_of("b"), (1, 0));
        assert_eq!(s.load_of("a"), (0, 0));
        drop(slot);
    }
}

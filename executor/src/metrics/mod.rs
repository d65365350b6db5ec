//! Prometheus metrics: the counters and histograms the engine, the runner
//! and the authorization layer update ([`Metrics`]), values read from the
//! engine and the CAS when scraped ([`Live`]), and the HTTP endpoint
//! ([`serve`]) on a loopback address by default.
//!
//! Names follow Prometheus conventions: a `hermeticd_` prefix, base units
//! (`_seconds`, `_bytes`), `_total` on counters.

mod http;

pub use http::serve;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::cas::Store;
use crate::exec::engine::Engine;

/// `outcome`: the helper's outcome (`completed`, `timed_out`,
/// `oom_killed`, ...), `error`, or `cancelled`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome.
    pub outcome: String,
}

/// `result`: `hit` or `miss`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// Hit or miss.
    pub result: &'static str,
}

/// `stage`: `queue_wait`, `staging`, `sandbox_setup`, `execution`,
/// `output_ingest`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StageLabel {
    /// The stage.
    pub stage: &'static str,
}

/// `method`: the gRPC method's path.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabel {
    /// The method.
    pub method: String,
}

/// `kind`: `network`, `foreign_exec`, `write_outside_outputs`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The anomaly's kind.
    pub kind: &'static str,
}

/// `channel` (`command`, `webhook`, `dropped`) and `result` (`sent`,
/// `failed`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AlertLabel {
    /// How the alert went out.
    pub channel: &'static str,
    /// Whether it was delivered.
    pub result: &'static str,
}

/// What the daemon counts as it works.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `hermeticd_actions_total{outcome}`: actions run to an end.
    pub actions: Family<OutcomeLabel, Counter>,
    /// `hermeticd_action_cache_lookups_total{result}`: Execute's lookups.
    pub cache_lookups: Family<CacheLabel, Counter>,
    /// `hermeticd_action_stage_duration_seconds{stage}`.
    pub stages: Family<StageLabel, Histogram>,
    /// `hermeticd_oom_kills_total`: steps killed by the OOM killer.
    pub oom_kills: Counter,
    /// `hermeticd_timeouts_total`: steps that ran past their timeout.
    pub timeouts: Counter,
    /// `hermeticd_auth_denials_total{method}`: calls refused.
    pub auth_denials: Family<MethodLabel, Counter>,
    /// `hermeticd_anomalies_total{kind}`: anomaly records (listed or
    /// beyond the cap) of executed steps.
    pub anomalies: Family<KindLabel, Counter>,
    /// `hermeticd_network_denied_total`: outbound network attempts of
    /// steps, denied.
    pub network_denied: Counter,
    /// `hermeticd_alerts_total{channel,result}`: alert deliveries.
    pub alerts: Family<AlertLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            actions: Family::default(),
            cache_lookups: Family::default(),
            // 1 ms .. ~9 h in 24 factor-2 steps.
            stages: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 25))
            }),
            oom_kills: Counter::default(),
            timeouts: Counter::default(),
            auth_denials: Family::default(),
            anomalies: Family::default(),
            network_denied: Counter::default(),
            alerts: Family::default(),
        }
    }
}

impl Metrics {
    /// Records how long `stage` took, from microseconds.
    pub fn stage(&self, stage: &'static str, micros: u64) {
        self.stages
            .get_or_create(&StageLabel { stage })
            .observe(micros as f64 / 1e6);
    }

    /// Records a stage between two microsecond timestamps (when both were
    /// reached).
    pub fn stage_between(&self, stage: &'static str, start: u64, end: u64) {
        if start > 0 && end >= start {
            self.stage(stage, end - start);
        }
    }

    /// Records an action's end.
    pub fn action_finished(&self, outcome: &str, oom_killed: bool, timed_out: bool) {
        self.actions
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
        if oom_killed {
            self.oom_kills.inc();
        }
        if timed_out {
            self.timeouts.inc();
        }
    }

    /// Records an action cache lookup by Execute.
    pub fn cache_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.cache_lookups
            .get_or_create(&CacheLabel { result })
            .inc();
    }

    /// Records an executed step's anomalies.
    pub fn anomalies(&self, a: &hermetic_sandbox::anomaly::Anomalies) {
        for (kind, n) in [
            ("network", a.network_total()),
            ("foreign_exec", a.foreign_exec_total()),
            ("write_outside_outputs", a.writes_total()),
        ] {
            if n > 0 {
                self.anomalies.get_or_create(&KindLabel { kind }).inc_by(n);
            }
        }
        self.network_denied.inc_by(a.network_total());
    }

    /// Records an alert delivery (`channel` `dropped`: never attempted).
    pub fn alert(&self, channel: &'static str, delivered: bool) {
        let result = if delivered { "sent" } else { "failed" };
        self.alerts
            .get_or_create(&AlertLabel { channel, result })
            .inc();
    }

    /// Records a refused call.
    pub fn auth_denied(&self, method: &str) {
        self.auth_denials
            .get_or_create(&MethodLabel {
                method: method.to_owned(),
            })
            .inc();
    }

    /// A registry with every metric, the [`Live`] values of `engine` and
    /// `store`, and the build information.
    pub fn registry(&self, engine: Arc<Engine>, store: Arc<Store>) -> Registry {
        let mut r = Registry::with_prefix("hermeticd");
        r.register(
            "actions",
            "Actions run to an end, by outcome",
            self.actions.clone(),
        );
        r.register(
            "action_cache_lookups",
            "Action cache lookups by Execute, by result",
            self.cache_lookups.clone(),
        );
        r.register_with_unit(
            "action_stage_duration",
            "Time actions spent in each stage",
            Unit::Seconds,
            self.stages.clone(),
        );
        r.register(
            "oom_kills",
            "Build steps killed by the OOM killer",
            self.oom_kills.clone(),
        );
        r.register(
            "timeouts",
            "Build steps killed at their timeout",
            self.timeouts.clone(),
        );
        r.register(
            "auth_denials",
            "Calls refused by authorization, by method",
            self.auth_denials.clone(),
        );
        r.register(
            "anomalies",
            "Anomalies of executed steps (network attempts, foreign executables, writes outside the outputs), by kind",
            self.anomalies.clone(),
        );
        r.register(
            "network_denied",
            "Outbound network attempts of build steps, denied",
            self.network_denied.clone(),
        );
        r.register(
            "alerts",
            "Alert hook deliveries, by channel and result",
            self.alerts.clone(),
        );
        r.register(
            "build",
            "The daemon's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        r.register_collector(Box::new(Live { engine, store }));
        r
    }
}

/// Values read when scraped: queue depth, running actions, CAS size,
/// bytes in and out, evictions.
#[derive(Debug)]
pub struct Live {
    engine: Arc<Engine>,
    store: Arc<Store>,
}

impl prometheus_client::collector::Collector for Live {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (queued, active) = self.engine.queue_load();
        let running = active.saturating_sub(queued);
        let stats = self.store.stats();
        let journal = self.store.journal_stats();
        let gauges: [(&str, &str, Option<Unit>, i64); 4] = [
            (
                "queued_actions",
                "Actions waiting for a slot",
                None,
                queued as i64,
            ),
            ("running_actions", "Actions running", None, running as i64),
            (
                "cas_size",
                "Bytes stored in the CAS",
                Some(Unit::Bytes),
                self.store.total_bytes() as i64,
            ),
            (
                "cas_journal_size",
                "Bytes in CAS journal segments not yet checkpointed",
                Some(Unit::Bytes),
                journal.bytes as i64,
            ),
        ];
        for (name, help, unit, value) in gauges {
            let g = ConstGauge::new(value);
            let m = enc.encode_descriptor(name, help, unit.as_ref(), g.metric_type())?;
            g.encode(m)?;
        }
        let counters: [(&str, &str, Option<Unit>, u64); 5] = [
            (
                "cas_written",
                "Bytes of new blobs written into the CAS",
                Some(Unit::Bytes),
                stats.written_bytes.load(Ordering::Relaxed),
            ),
            (
                "cas_read",
                "Bytes of blobs opened for reading (clients and the daemon)",
                Some(Unit::Bytes),
                stats.read_bytes.load(Ordering::Relaxed),
            ),
            (
                "cas_evictions",
                "Blobs evicted from the CAS",
                None,
                stats.evicted_blobs.load(Ordering::Relaxed),
            ),
            (
                "cas_journal_checkpoints",
                "CAS journal checkpoints done",
                None,
                journal.checkpoints,
            ),
            (
                "cas_journal_checkpoint_failures",
                "CAS journal checkpoints whose flush failed (segments left for the next start's replay)",
                None,
                journal.failed_checkpoints,
            ),
        ];
        for (name, help, unit, value) in counters {
            let c = ConstCounter::new(value);
            let m = enc.encode_descriptor(name, help, unit.as_ref(), c.metric_type())?;
            c.encode(m)?;
        }
        Ok(())
    }
}

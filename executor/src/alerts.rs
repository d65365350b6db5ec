//! The alert hook: a command and/or a webhook told about anomalies and
//! verification failures.
//!
//! Every alert is one JSON document ([`Alert`]). The command gets it on its
//! standard input (run directly, never through a shell, with the
//! configured timeout, then killed); the webhook gets it as the body of an
//! HTTP/1.1 `POST` (plain `http://`, for a local relay). Alerts never hold
//! up the action that raised them: [`Alerter::fire`] spawns the delivery
//! and returns, and at most [`MAX_IN_FLIGHT`] deliveries run at once
//! (further alerts are dropped with a warning and counted as failed).
//! Only [`Alerter::fire_and_wait`] (for a start-up failure, just before the
//! daemon exits) waits for the delivery.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use crate::config::ConfigError;

/// Deliveries running at once; more are dropped.
pub const MAX_IN_FLIGHT: usize = 16;

/// `[alerts]` in the configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AlertConfig {
    /// A program and its arguments, run with the alert (JSON) on stdin:
    /// `command = ["/usr/local/bin/page-oncall", "--team", "build"]`. Not
    /// run through a shell. Default: none.
    pub command: Vec<String>,
    /// An `http://host:port/path` URL the alert is POSTed to as
    /// `application/json`. Default: none.
    pub webhook: Option<String>,
    /// How long one delivery may take before the command is killed or the
    /// request abandoned, in seconds. Default 0: 10.
    pub timeout_secs: u64,
    /// Which of a step's anomalies fire the hook: any of `network`,
    /// `foreign_exec`, `write_outside_outputs`. Default: all three. Builds
    /// that leave intermediates in the work directory (make's `.o` files)
    /// record writes outside their outputs on every run; leave
    /// `write_outside_outputs` out to keep those in the log and the
    /// metrics without paging anyone. Verification failures always fire.
    pub anomalies: Option<Vec<String>>,
}

/// The anomaly kinds `[alerts] anomalies` may name.
const ANOMALY_KINDS: [&str; 3] = ["network", "foreign_exec", "write_outside_outputs"];

impl AlertConfig {
    /// Checks the command and the URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(first) = self.command.first()
            && first.is_empty()
        {
            return Err(ConfigError::Invalid(
                "alerts.command: the program name is empty".into(),
            ));
        }
        if let Some(url) = &self.webhook {
            parse_webhook(url).map_err(ConfigError::Invalid)?;
        }
        for kind in self.anomalies.iter().flatten() {
            if !ANOMALY_KINDS.contains(&kind.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "alerts.anomalies: unknown kind {kind:?} (known: {})",
                    ANOMALY_KINDS.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Whether a step with these anomalies fires the hook.
    pub fn fires_on(&self, a: &hermetic_sandbox::anomaly::Anomalies) -> bool {
        let wanted = |kind: &str| {
            self.anomalies
                .as_ref()
                .is_none_or(|kinds| kinds.iter().any(|k| k == kind))
        };
        (wanted("network") && a.network_total() > 0)
            || (wanted("foreign_exec") && a.foreign_exec_total() > 0)
            || (wanted("write_outside_outputs") && a.writes_total() > 0)
    }

    /// The delivery timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(if self.timeout_secs == 0 {
            10
        } else {
            self.timeout_secs
        })
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// An action's step did something a build step has no reason to do
    /// (`anomalies` says what).
    Anomaly,
    /// Something the daemon verifies did not verify (an untrusted image,
    /// a transparency log that disagrees with its checkpoint).
    VerificationFailure,
}

/// The JSON document an alert delivers.
#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// What it is about.
    pub kind: AlertKind,
    /// When, in microseconds since the Unix epoch.
    pub time_us: u64,
    /// The daemon's host.
    pub host: String,
    /// The operation, when an action raised it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    /// The action digest, when an action raised it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// One line saying what happened.
    pub message: String,
    /// The step's anomalies (for [`AlertKind::Anomaly`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anomalies: Option<hermetic_sandbox::anomaly::Anomalies>,
}

impl Alert {
    /// An alert of `kind` saying `message`, stamped now.
    pub fn new(kind: AlertKind, message: String) -> Self {
        Alert {
            kind,
            time_us: crate::exec::log::micros(std::time::SystemTime::now()),
            host: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_owned())
                .unwrap_or_default(),
            operation: None,
            action: None,
            message,
            anomalies: None,
        }
    }
}

/// Delivers alerts as configured.
#[derive(Debug, Clone)]
pub struct Alerter {
    config: AlertConfig,
    command: Vec<String>,
    webhook: Option<Webhook>,
    timeout: Duration,
    slots: Arc<tokio::sync::Semaphore>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

#[derive(Debug, Clone)]
struct Webhook {
    authority: String,
    path: String,
}

fn parse_webhook(url: &str) -> Result<Webhook, String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("alerts.webhook {url:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!(
            "alerts.webhook {url:?}: only http:// is supported (point it at a local relay for https)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("alerts.webhook {url:?} names no host"))?;
    let authority = match authority.port_u16() {
        Some(_) => authority.as_str().to_owned(),
        None => format!("{}:80", authority.host()),
    };
    let path = uri
        .path_and_query()
        .map_or("/".to_owned(), |p| p.as_str().to_owned());
    Ok(Webhook { authority, path })
}

impl Alerter {
    /// An alerter for `config` (validated first); `None` when neither a
    /// command nor a webhook is configured.
    pub fn new(
        config: &AlertConfig,
        metrics: Option<Arc<crate::metrics::Metrics>>,
    ) -> Result<Option<Arc<Self>>, ConfigError> {
        config.validate()?;
        if config.command.is_empty() && config.webhook.is_none() {
            return Ok(None);
        }
        let webhook = match &config.webhook {
            Some(url) => Some(parse_webhook(url).map_err(ConfigError::Invalid)?),
            None => None,
        };
        Ok(Some(Arc::new(Alerter {
            config: config.clone(),
            command: config.command.clone(),
            webhook,
            timeout: config.timeout(),
            slots: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            metrics,
        })))
    }

    /// Whether a step with these anomalies fires the hook
    /// ([`AlertConfig::anomalies`]).
    pub fn fires_on(&self, a: &hermetic_sandbox::anomaly::Anomalies) -> bool {
        self.config.fires_on(a)
    }

    /// Delivers `alert` in the background (needs a tokio runtime); returns
    /// at once.
    pub fn fire(self: &Arc<Self>, alert: Alert) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            warn!(kind = ?alert.kind, "too many alerts in flight; this one is dropped");
            self.count("dropped", false);
            return;
        };
        let this = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    this.deliver(&alert).await;
                    drop(permit);
                });
            }
            // Outside a runtime: a thread of its own, not waited for.
            Err(_) => {
                std::thread::spawn(move || {
                    this.fire_and_wait(alert);
                    drop(permit);
                });
            }
        }
    }

    /// Delivers `alert` and waits (at most the timeout per channel): for a
    /// failure the daemon is about to exit on. Runs on a thread of its own,
    /// so it works inside and outside a runtime.
    pub fn fire_and_wait(self: &Arc<Self>, alert: Alert) {
        let this = self.clone();
        let joined =
            std::thread::spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt.block_on(this.deliver(&alert)),
                    Err(e) => warn!(cause = %e, "cannot deliver the alert"),
                }
            })
            .join();
        if joined.is_err() {
            warn!("the alert delivery thread panicked");
        }
    }

    async fn deliver(&self, alert: &Alert) {
        let body = match serde_json::to_vec(alert) {
            Ok(b) => b,
            Err(e) => {
                warn!(cause = %e, "alert does not serialize");
                return;
            }
        };
        if !self.command.is_empty() {
            let r = tokio::time::timeout(self.timeout, self.run_command(&body)).await;
            let r = r.unwrap_or_else(|_| Err(format!("timed out after {:?}", self.timeout)));
            self.report("command", r);
        }
        if let Some(hook) = &self.webhook {
            let r = tokio::time::timeout(self.timeout, post(hook, body)).await;
            let r = r.unwrap_or_else(|_| Err(format!("timed out after {:?}", self.timeout)));
            self.report("webhook", r);
        }
    }

    fn report(&self, channel: &'static str, r: Result<(), String>) {
        match r {
            Ok(()) => {
                info!(channel, "alert delivered");
                self.count(channel, true);
            }
            Err(e) => {
                warn!(channel, cause = %e, "alert not delivered");
                self.count(channel, false);
            }
        }
    }

    fn count(&self, channel: &'static str, ok: bool) {
        if let Some(m) = &self.metrics {
            m.alert(channel, ok);
        }
    }

    async fn run_command(&self, body: &[u8]) -> Result<(), String> {
        let mut child = tokio::process::Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot run {:?}: {e}", self.command[0]))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A command that does not read its input is not an error.
            let _ = stdin.write_all(body).await;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| format!("waiting for {:?}: {e}", self.command[0]))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("{:?} exited with {status}", self.command[0]))
        }
    }
}

/// POSTs `body` to the webhook over HTTP/1.1.
async fn post(hook: &Webhook, body: Vec<u8>) -> Result<(), String> {
    let stream = tokio::net::TcpStream::connect(&hook.authority)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", hook.authority))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake with {}: {e}", hook.authority))?;
    let conn = tokio::spawn(conn);
    let request = http::Request::post(&hook.path)
        .header(http::header::HOST, &hook.authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("POST to {}{}: {e}", hook.authority, hook.path))?;
    conn.abort();
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!(
            "POST to {}{} answered {}",
            hook.authority,
            hook.path,
            response.status()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_are_checked() {
        let w = parse_webhook("http://127.0.0.1:9000/hook?x=1").unwrap();
        assert_eq!(w.authority, "127.0.0.1:9000");
        assert_eq!(w.path, "/hook?x=1");
        assert_eq!(
            parse_webhook("http://alerts.example").unwrap().authority,
            "alerts.example:80"
        );
        for bad in ["https://x/", "ftp://x/", "not a url", "/just/a/path"] {
            assert!(parse_webhook(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_anomaly_kinds_that_fire_are_chosen() {
        let writes_only = hermetic_sandbox::anomaly::Anomalies {
            writes_outside_outputs: vec!["main.o".into()],
            ..Default::default()
        };
        assert!(AlertConfig::default().fires_on(&writes_only));
        let quiet_about_writes = AlertConfig {
            anomalies: Some(vec!["network".into(), "foreign_exec".into()]),
            ..Default::default()
        };
        assert!(quiet_about_writes.validate().is_ok());
        assert!(!quiet_about_writes.fires_on(&writes_only));
        assert!(!quiet_about_writes.fires_on(&Default::default()));
        let exec = hermetic_sandbox::anomaly::Anomalies {
            foreign_exec: writes_only_exec(),
            ..writes_only.clone()
        };
        assert!(quiet_about_writes.fires_on(&exec));
        let bad = AlertConfig {
            anomalies: Some(vec!["writes".into()]),
            ..Default::default()
        };
        let err = bad.validate().unwrap_err().to_string();
        assert!(
            err.contains("alerts.anomalies") && err.contains("\"writes\""),
            "{err}"
        );
    }

    fn writes_only_exec() -> Vec<hermetic_sandbox::anomaly::ForeignExec> {
        vec![hermetic_sandbox::anomaly::ForeignExec {
            syscall: "execve".into(),
            path: "/tmp/x".into(),
            origin: "tmp".into(),
            pid: 7,
            time_us: 1,
        }]
    }

    #[test]
    fn the_command_gets_the_alert_and_a_slow_one_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alert.json");
        let metrics = Arc::new(crate::metrics::Metrics::default());
        // `$(...)` reaches the program as text (tee writes a second copy to
        // a file of that name): no shell in between.
        let literal = dir.path().join("$(touch expanded)");
        let config = AlertConfig {
            command: vec![
                "/usr/bin/tee".into(),
                out.display().to_string(),
                literal.display().to_string(),
            ],
            ..Default::default()
        };
        let alerter = Alerter::new(&config, Some(metrics.clone()))
            .unwrap()
            .unwrap();
        alerter.fire_and_wait(Alert::new(AlertKind::VerificationFailure, "m".into()));
        let got: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
        assert_eq!(got["kind"], "verification_failure");
        assert_eq!(got["message"], "m");
        assert!(literal.exists() && !dir.path().join("expanded").exists());
        let count = |result: &'static str| {
            metrics
                .alerts
                .get_or_create(&crate::metrics::AlertLabel {
                    channel: "command",
                    result,
                })
                .get()
        };
        assert_eq!(count("sent"), 1);

        let slow = AlertConfig {
            command: vec!["/bin/sleep".into(), "600".into()],
            timeout_secs: 1,
            ..Default::default()
        };
        let alerter = Alerter::new(&slow, Some(metrics.clone())).unwrap().unwrap();
        alerter.fire_and_wait(Alert::new(AlertKind::Anomaly, "slow".into()));
        assert_eq!(count("failed"), 1, "the timeout fails the delivery");
    }

    #[test]
    fn empty_program_is_refused() {
        let c = AlertConfig {
            command: vec![String::new()],
            ..Default::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("alerts.command")
        );
        assert!(
            Alerter::new(&AlertConfig::default(), None)
                .unwrap()
                .is_none()
        );
    }
}

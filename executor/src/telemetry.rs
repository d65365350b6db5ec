//! Log lines and, when configured, OTLP export of the tracing spans.
//!
//! `init` installs the process's one tracing subscriber: an `EnvFilter`
//! (`RUST_LOG`, default `info`), the log lines on stderr (text or JSON) and,
//! when `[tracing] otlp_endpoint` is set, an OpenTelemetry layer whose spans
//! go through the SDK's batch processor to an OTLP/gRPC collector. The batch
//! processor runs on its own thread with a bounded queue: recording a span
//! never waits for the network, spans that do not fit are dropped, and an
//! export that fails is logged (once, until exports succeed again) without
//! stopping anything. [`Telemetry::shutdown`] flushes what is queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde::{Deserialize, Serialize};
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config::{ConfigError, LogFormat};

/// How long one export (one batch, retries included) may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// `[tracing]`: export of the tracing spans (one `action` span per
/// executed action, carrying its digest, operation name and outcome).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// An OTLP/gRPC collector, `http://host:port` (e.g.
    /// `http://127.0.0.1:4317`). Default: none (spans are not exported).
    pub otlp_endpoint: Option<String>,
    /// The `service.name` resource attribute of exported spans. Default:
    /// `"hermeticd"`.
    pub service_name: Option<String>,
}

impl TracingConfig {
    /// The checked endpoint, when export is enabled.
    pub fn endpoint(&self) -> Result<Option<http::Uri>, ConfigError> {
        let Some(text) = self.otlp_endpoint.as_deref() else {
            return Ok(None);
        };
        let bad =
            |why: &str| ConfigError::Invalid(format!("tracing.otlp_endpoint {text:?}: {why}"));
        let uri: http::Uri = text.parse().map_err(|e| bad(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(bad(
                    "https is not supported; use http:// to a collector on this host or network",
                ));
            }
            _ => return Err(bad("expected http://host:port")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(bad(
                "expected no path (the OTLP/gRPC service path is fixed)",
            ));
        }
        Ok(Some(uri))
    }

    /// The `service.name` of exported spans.
    pub fn service_name(&self) -> &str {
        self.service_name.as_deref().unwrap_or("hermeticd")
    }

    /// Checks the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.endpoint()?;
        if self.service_name().trim().is_empty() {
            return Err(ConfigError::Invalid(
                "tracing.service_name: must not be empty".into(),
            ));
        }
        Ok(())
    }
}

/// The installed subscriber's exporter, to flush on shutdown.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

/// Installs the global tracing subscriber. Must run inside a Tokio runtime
/// when export is enabled (the gRPC channel's tasks run on it).
pub fn init(log_format: LogFormat, config: &TracingConfig) -> Result<Telemetry, ConfigError> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match log_format {
        LogFormat::Text => logs.boxed(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
    };
    let provider = match config.endpoint()? {
        None => None,
        Some(endpoint) => Some(provider(&endpoint, config.service_name())?),
    };
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("hermeticd"))
            // The exporter's own transport must not feed spans back.
            .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
                let t = meta.target();
                !["h2", "hyper", "tonic", "tower", "opentelemetry"]
                    .iter()
                    .any(|p| t.starts_with(p))
            }))
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(otel)
        .with(filter)
        .init();
    if let Some(e) = &config.otlp_endpoint {
        tracing::info!(endpoint = %e, service = config.service_name(), "exporting spans over OTLP/gRPC");
    }
    Ok(Telemetry { provider })
}

fn provider(endpoint: &http::Uri, service: &str) -> Result<SdkTracerProvider, ConfigError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.to_string())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| ConfigError::Invalid(format!("tracing.otlp_endpoint {endpoint}: {e}")))?;
    Ok(SdkTracerProvider::builder()
        .with_resource(
            Resource::builder()
                .with_service_name(service.to_owned())
                .build(),
        )
        .with_batch_exporter(Logged {
            inner: exporter,
            endpoint: endpoint.to_string(),
            failing: AtomicBool::new(false),
        })
        .build())
}

impl Telemetry {
    /// Exports the spans still queued and stops the exporter (waits at most
    /// a few seconds when the collector does not answer).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(cause = %e, "OTLP exporter shutdown"),
            Err(e) => tracing::warn!(cause = %e, "OTLP exporter shutdown task"),
        }
    }
}

/// An exporter that logs failures: the first of a run as a warning, then
/// the recovery.
#[derive(Debug)]
struct Logged<E> {
    inner: E,
    endpoint: String,
    failing: AtomicBool,
}

impl<E: SpanExporter> SpanExporter for Logged<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        match &result {
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(endpoint = %self.endpoint, spans, cause = %e,
                    "OTLP export failed; spans are dropped until the collector answers");
            }
            Err(e) => {
                tracing::debug!(endpoint = %self.endpoint, spans, cause = %e, "OTLP export failed")
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(endpoint = %self.endpoint, "OTLP export recovered");
            }
            Ok(()) => {}
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_malformed_endpoint_is_refused_with_the_key_named() {
        for bad in [
            "127.0.0.1:4317",
            "http://",
            "grpc://127.0.0.1:4317",
            "https://collector:4317",
            "http://127.0.0.1:4317/v1/traces",
            "http://[::1",
        ] {
            let text = format!("[tracing]\notlp_endpoint = {bad:?}\n");
            let err = Config::parse(&text, "t.toml").unwrap_err().to_string();
            assert!(err.contains("tracing.otlp_endpoint"), "{bad}: {err}");
            assert!(err.contains(bad), "{bad}: {err}");
        }
        let err = Config::parse("[tracing]\notlp_endpont = \"x\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("otlp_endpont"), "{err}");
        let err = Config::parse("[tracing]\nservice_name = \" \"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("tracing.service_name"), "{err}");
    }

    #[test]
    fn export_is_off_by_default_and_a_good_endpoint_loads() {
        let off = Config::parse("", "t").unwrap();
        assert_eq!(off.tracing.endpoint().unwrap(), None);
        assert_eq!(off.tracing.service_name(), "hermeticd");
        let on = Config::parse(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4317\"\nservice_name = \"b1\"\n",
            "t",
        )
        .unwrap();
        let uri = on.tracing.endpoint().unwrap().unwrap();
        assert_eq!(uri.host(), Some("127.0.0.1"));
        assert_eq!(uri.port_u16(), Some(4317));
        assert_eq!(on.tracing.service_name(), "b1");
    }
}

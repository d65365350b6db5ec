//! The client's half of `--check-repro`: the daemon runs the check (see
//! `hermeticd::exec::repro`) and names its report in the response's
//! `server_logs`; this fetches it into the out dir and reads the verdict.

use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteResponse;
use hermeticd::exec::repro::{REPORT_JSON, REPORT_TEXT};
use serde::Serialize;

use crate::backend::Backend;
use crate::digests::Function;
use crate::error::{Error, Result};

/// What the check found, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ReproSummary {
    /// Whether every run gave the same outputs and exit code; `None` for a
    /// cache hit, whose check ran earlier and whose report is not re-sent.
    pub reproducible: Option<bool>,
    /// Paths that differ between runs.
    pub differing_paths: Vec<String>,
    /// The report, JSON.
    pub report: Option<PathBuf>,
    /// The report, text.
    pub report_text: Option<PathBuf>,
    /// The text, for printing.
    #[serde(skip)]
    pub text: String,
}

/// Fetches the check's report into `meta` (`repro-report.json` and
/// `.txt`). A response without one (a cache hit, or a failure before the
/// runs were compared) gives a summary with no verdict.
pub async fn fetch(
    backend: &Backend,
    f: Function,
    resp: &ExecuteResponse,
    meta: &Path,
) -> Result<ReproSummary> {
    let mut summary = ReproSummary {
        reproducible: None,
        differing_paths: Vec::new(),
        report: None,
        report_text: None,
        text: String::new(),
    };
    let digest = |name: &str| resp.server_logs.get(name).and_then(|l| l.digest.clone());
    if let Some(d) = digest(REPORT_JSON) {
        let data = backend.read(f, &d).await?;
        let report: hermetic_repro::Report = serde_json::from_slice(&data).map_err(|e| {
            Error::Infra(format!(
                "the daemon's reproducibility report does not parse: {e}"
            ))
        })?;
        let path = meta.join(REPORT_JSON);
        std::fs::write(&path, &data).map_err(Error::io("write", &path))?;
        summary.reproducible = Some(report.is_reproducible());
        summary.differing_paths = report.differing_paths;
        summary.report = Some(path);
    }
    if let Some(d) = digest(REPORT_TEXT) {
        let data = backend.read(f, &d).await?;
        let path = meta.join(REPORT_TEXT);
        std::fs::write(&path, &data).map_err(Error::io("write", &path))?;
        summary.text = String::from_utf8_lossy(&data).into_owned();
        summary.report_text = Some(path);
    }
    Ok(summary)
}

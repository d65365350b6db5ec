//! The runner's one call: attest an action that ran.

use std::sync::Arc;

use bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult;
use hermetic_proto::v1::ProvenanceRef;
use tracing::debug;

use crate::cas::blocking;
use crate::digest::BlobKey;
use crate::error::{Error, Result};
use crate::exec::action::Prepared;
use crate::exec::log::ExecutionLog;
use crate::exec::runner::RunEnv;
use crate::provenance::record::{Builder, execution_record};

/// Builds the record of the action that ran (`log` stored as `log_key`,
/// `result` with its outputs), signs it, logs it and stores the documents.
/// `None` when the action produced no output files: nothing to attest.
pub async fn run(
    env: &RunEnv,
    p: &Arc<Prepared>,
    log: &ExecutionLog,
    log_key: Option<BlobKey>,
    result: &ActionResult,
) -> Result<Option<ProvenanceRef>> {
    if result.output_files.is_empty() && result.output_directories.is_empty() {
        debug!("no output files: no provenance");
        return Ok(None);
    }
    let log_key = log_key.ok_or_else(|| {
        Error::Internal("the execution log was not stored, so it cannot be attested".into())
    })?;
    let (store, prov, p, log, result) = (
        env.store.clone(),
        env.provenance.clone(),
        p.clone(),
        log.clone(),
        result.clone(),
    );
    blocking(move || {
        let image = prov.image(&p.selection.image, &p.selection.rootfs)?;
        let builder = Builder {
            id: prov.builder_id(),
            kernel: prov.kernel(),
            record_inputs: prov.record_inputs(),
        };
        let rec = execution_record(
            &store,
            &p,
            &log,
            &log_key,
            &result,
            image.record.clone(),
            builder,
        )?;
        if rec.outputs.is_empty() {
            // Only empty output directories.
            return Ok(None);
        }
        prov.attest_action(&store, p.function, &rec, &image)
            .map(Some)
    })
    .await
}

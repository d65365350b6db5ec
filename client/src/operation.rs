//! Reading `google.longrunning.Operation`s of executions: their stage, the
//! final `ExecuteResponse`, and where the execution log is.

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, Digest, ExecuteOperationMetadata, ExecuteResponse, LogFile, execution_stage,
};
use bazel_remote_apis::google::longrunning::{Operation, operation};
use prost::Message;
use tokio_stream::StreamExt;

use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::remote::OpStream;

/// The `server_logs` key of hermeticd's execution log.
pub const LOG_NAME: &str = hermeticd::exec::log::LOG_NAME;
/// The type of a `LogFile` in `ExecutedActionMetadata.auxiliary_metadata`.
const LOG_FILE_TYPE: &str = "build.bazel.remote.execution.v2.LogFile";
/// How often a broken Execute stream is resumed with WaitExecution.
const RESUMES: usize = 3;

/// The stage in an operation's metadata.
pub fn stage(op: &Operation) -> Option<execution_stage::Value> {
    let any = op.metadata.as_ref()?;
    let meta = ExecuteOperationMetadata::decode(any.value.as_slice()).ok()?;
    execution_stage::Value::try_from(meta.stage).ok()
}

/// The ExecuteResponse of a finished operation; `None` while running.
pub fn response(op: &Operation) -> Result<Option<ExecuteResponse>> {
    if !op.done {
        return Ok(None);
    }
    match &op.result {
        Some(operation::Result::Response(any)) => ExecuteResponse::decode(any.value.as_slice())
            .map(Some)
            .map_err(|e| {
                Error::Infra(format!(
                    "{}: the ExecuteResponse does not decode: {e}",
                    op.name
                ))
            }),
        Some(operation::Result::Error(s)) => Err(Error::Rpc {
            what: format!("execution {}", op.name),
            status_code: tonic::Code::from_i32(s.code),
            message: s.message.clone(),
        }),
        None => Err(Error::Infra(format!("{} finished with no result", op.name))),
    }
}

/// The execution log's digest: `server_logs`, else the `LogFile` the
/// daemon records in the result's metadata (present on cache hits too).
pub fn log_digest(resp: &ExecuteResponse) -> Option<Digest> {
    resp.server_logs
        .get(LOG_NAME)
        .and_then(|l| l.digest.clone())
        .or_else(|| resp.result.as_ref().and_then(log_digest_in_result))
}

/// The `LogFile` in an ActionResult's `auxiliary_metadata`.
pub fn log_digest_in_result(r: &ActionResult) -> Option<Digest> {
    r.execution_metadata
        .as_ref()?
        .auxiliary_metadata
        .iter()
        .filter(|a| a.type_url.ends_with(LOG_FILE_TYPE))
        .find_map(|a| LogFile::decode(a.value.as_slice()).ok()?.digest)
}

fn stage_text(s: execution_stage::Value) -> &'static str {
    match s {
        execution_stage::Value::Unknown => "submitted",
        execution_stage::Value::CacheCheck => "checking the action cache",
        execution_stage::Value::Queued => "queued",
        execution_stage::Value::Executing => "executing",
        execution_stage::Value::Completed => "completed",
    }
}

/// Follows an operation stream to its end, resuming with WaitExecution
/// when the stream breaks; returns the operation's name and response.
pub async fn follow(
    backend: &Backend,
    mut stream: OpStream,
    progress: &Progress,
) -> Result<(String, ExecuteResponse)> {
    let mut name = String::new();
    let mut resumes = 0;
    loop {
        match stream.next().await {
            Some(Ok(op)) => {
                if !op.name.is_empty() {
                    name.clone_from(&op.name);
                }
                if let Some(s) = stage(&op) {
                    progress.stage(stage_text(s));
                }
                if let Some(resp) = response(&op)? {
                    return Ok((name, resp));
                }
            }
            Some(Err(status)) if name.is_empty() || resumes >= RESUMES => {
                return Err(Error::rpc("Execute")(status));
            }
            None if name.is_empty() || resumes >= RESUMES => {
                return Err(Error::Infra(
                    "the Execute stream ended before the operation finished".into(),
                ));
            }
            Some(Err(_)) | None => {
                resumes += 1;
                progress.stage(&format!("reconnecting to {name}"));
                match backend.wait_execution(&name).await? {
                    Some(s) => stream = s,
                    None => {
                        return Err(Error::Infra(format!("{name} ended before it finished")));
                    }
                }
            }
        }
    }
}

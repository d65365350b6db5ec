//! `hermetic log ACTION|OPERATION`: prints an execution log (JSON).
//!
//! - An operation (`operations/UUID`, as `hermetic run` prints it): its
//!   ExecuteResponse names the log in `server_logs`; a running operation is
//!   waited for. Finished operations stay visible for the daemon's
//!   `operation_retention_secs` (default ten minutes).
//! - An action digest: the cached ActionResult carries the log's digest in
//!   its execution metadata. Only successful results are cached, so a
//!   failed action's log is reached through its operation (or the copy
//!   `hermetic run` wrote into the out dir).

use std::io::Write;

use crate::cli::LogArgs;
use crate::digests::{self, Function};
use crate::error::{Error, Result};
use crate::operation;
use crate::progress::{Mode, Progress};
use crate::run::Globals;

/// Whether `target` names an operation rather than an action.
fn is_operation(target: &str) -> bool {
    target.starts_with("operations/") || uuid::Uuid::parse_str(target).is_ok()
}

/// Runs `hermetic log`.
pub async fn log(g: &Globals, args: &LogArgs) -> Result<u8> {
    let remote = g.connect(None).await?;
    let backend = crate::backend::Backend::Remote(remote.clone());
    let (f, digest) = if is_operation(&args.target) {
        let name = if args.target.starts_with("operations/") {
            args.target.clone()
        } else {
            format!("operations/{}", args.target)
        };
        let op = remote.get_operation(&name).await.map_err(|e| match e {
            Error::Rpc {
                status_code: tonic::Code::NotFound,
                message,
                ..
            } => Error::InvalidJob(format!(
                "{message} (finished operations are kept for a limited time; \
                 try the action digest)"
            )),
            e => e,
        })?;
        let resp = match operation::response(&op)? {
            Some(r) => r,
            None => {
                let progress = Progress::new(Mode::detect(g.json));
                let stream = remote.wait_execution(&name).await?;
                let (_, r) = operation::follow(&backend, stream, &progress).await?;
                progress.finish();
                r
            }
        };
        let f = op
            .metadata
            .as_ref()
            .and_then(|m| {
                prost::Message::decode(m.value.as_slice())
                    .ok()
                    .map(|x: bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteOperationMetadata| x.digest_function)
            })
            .map(|df| {
                if df == Function::Sha256.to_proto() {
                    Function::Sha256
                } else {
                    Function::Blake3
                }
            })
            .unwrap_or_default();
        let d = operation::log_digest(&resp)
            .ok_or_else(|| Error::Infra(format!("{name} has no execution log")))?;
        (f, d)
    } else {
        let default = Function::parse(&args.digest_function)?;
        let (f, action) = digests::parse(&args.target, default)?;
        let result = remote.action_result(f, action).await?.ok_or_else(|| {
            Error::InvalidJob(format!(
                "no cached result for action {}: only successful results are cached; \
                 use the operation name `hermetic run` printed",
                args.target
            ))
        })?;
        let d = operation::log_digest_in_result(&result).ok_or_else(|| {
            Error::Infra(format!(
                "the cached result of {} names no execution log",
                args.target
            ))
        })?;
        (f, d)
    };
    let data = backend.read(f, &digest).await?;
    let mut out = std::io::stdout().lock();
    out.write_all(&data)
        .and_then(|()| {
            if data.ends_with(b"\n") {
                Ok(())
            } else {
                out.write_all(b"\n")
            }
        })
        .map_err(Error::io("write", "stdout"))?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_operations_from_actions() {
        assert!(is_operation(
            "operations/0e3c6f5e-6d4c-4b7f-9b1a-0f0e0d0c0b0a"
        ));
        assert!(is_operation("0e3c6f5e-6d4c-4b7f-9b1a-0f0e0d0c0b0a"));
        assert!(!is_operation(&format!("blake3:{}/10", "a".repeat(64))));
    }
}

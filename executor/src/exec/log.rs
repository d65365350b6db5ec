//! The execution log: one structured JSON record per executed action,
//! stored in the CAS and referenced from `ExecuteResponse.server_logs`
//! under [`LOG_NAME`].

use std::path::PathBuf;
use std::time::SystemTime;

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, LogFile};
use bazel_remote_apis::google::protobuf::Any;
use hermetic_sandbox::anomaly::Anomalies;
use hermetic_sandbox::status::{Restrictions, Usage};
use prost::Message;
use serde::Serialize;

use crate::digest::BlobKey;

/// The `server_logs` key.
pub const LOG_NAME: &str = "execution_log";
/// The `type_url` of the log's `LogFile` in the result's
/// `ExecutedActionMetadata.auxiliary_metadata`.
pub const LOG_FILE_TYPE_URL: &str = "type.googleapis.com/build.bazel.remote.execution.v2.LogFile";
/// The record's format version.
pub const LOG_VERSION: u32 = 1;

/// Names the log in the result's metadata as well as in `server_logs`: a
/// cache hit carries no `server_logs`, but its ActionResult then still
/// names the log of the run behind it (`hermetic log ACTION` reads it).
pub fn record_in_result(result: &mut ActionResult, key: &BlobKey) {
    let file = LogFile {
        digest: Some(key.to_proto()),
        human_readable: true,
    };
    let metadata = result
        .execution_metadata
        .get_or_insert_with(Default::default);
    metadata.auxiliary_metadata.push(Any {
        type_url: LOG_FILE_TYPE_URL.into(),
        value: file.encode_to_vec(),
    });
}

/// Microseconds since the Unix epoch.
pub fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Stage timestamps, microseconds since the epoch (0: not reached).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stamps {
    /// Accepted into the queue.
    pub queued: u64,
    /// Got a slot.
    pub worker_start: u64,
    /// Staging began.
    pub input_fetch_start: u64,
    /// Staging ended.
    pub input_fetch_completed: u64,
    /// The helper was started.
    pub execution_start: u64,
    /// The helper ended.
    pub execution_completed: u64,
    /// Output ingestion began.
    pub output_upload_start: u64,
    /// Output ingestion ended.
    pub output_upload_completed: u64,
    /// All done.
    pub worker_completed: u64,
}

/// The record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ExecutionLog {
    /// [`LOG_VERSION`].
    pub version: u32,
    /// The operation's name.
    pub operation: String,
    /// `{function}:{hash}/{size}` of the action.
    pub action: String,
    /// The command line.
    pub argv: Vec<String>,
    /// The environment the client asked for.
    pub env: Vec<(String, String)>,
    /// The working directory relative to `/work`.
    pub working_directory: String,
    /// The base image's name.
    pub image: String,
    /// Its root filesystem on the host.
    pub image_rootfs: PathBuf,
    /// The daemon's default image was used (the client named none).
    pub image_defaulted: bool,
    /// The sandbox profile's name.
    pub profile: String,
    /// The profile's digest.
    pub profile_digest: String,
    /// The effective timeout in milliseconds.
    pub timeout_ms: u64,
    /// Restrictions in force, as the helper verified them.
    pub restrictions: Option<Restrictions>,
    /// Anomaly indicators the helper recorded: denied network attempts,
    /// executables the step created, writes outside the declared outputs.
    pub anomalies: Option<Anomalies>,
    /// Stage timestamps.
    pub timestamps: Stamps,
    /// Resource usage.
    pub usage: Option<Usage>,
    /// The helper's outcome (`completed`, `timed_out`, ...) or `error`.
    pub outcome: String,
    /// Exit code when the step exited.
    pub exit_code: Option<i32>,
    /// Signal when the step was killed by one.
    pub signal: Option<i32>,
    /// Killed by the OOM killer.
    pub oom_killed: bool,
    /// Ran past its timeout.
    pub timed_out: bool,
    /// Cancelled by a client or by shutdown.
    pub cancelled: bool,
    /// stdout's digest.
    pub stdout_digest: Option<String>,
    /// stderr's digest.
    pub stderr_digest: Option<String>,
    /// What went wrong, when something did.
    pub error: Option<String>,
}

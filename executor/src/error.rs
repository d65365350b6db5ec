//! The one error type of the request path, and the one place it becomes a
//! gRPC status.
//!
//! Handlers parse, call an inner function returning [`Error`], and convert
//! with `?` (through `From<Error> for tonic::Status`). The same mapping gives
//! the `google.rpc.Status` put in batch responses and in `ExecuteResponse`.

use std::path::PathBuf;
use std::time::Duration;

use bazel_remote_apis::google::protobuf::{Any, Duration as ProtoDuration};
use bazel_remote_apis::google::rpc::Status as RpcStatus;
use prost::Message;
use tonic::Code;

use crate::digest::BlobKey;

/// Everything that can go wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A digest is malformed (hash length, characters, negative size).
    #[error("invalid digest {0}")]
    InvalidDigest(String),
    /// A request field holds a value we cannot accept.
    #[error("{0}")]
    InvalidArgument(String),
    /// The request names a digest function this server does not offer.
    #[error("unsupported digest function {0}; this server offers sha256 and blake3")]
    UnsupportedDigestFunction(String),
    /// The request names an instance this server does not serve.
    #[error("unknown instance name {name:?}; this server serves {known}")]
    UnknownInstance {
        /// The name asked for.
        name: String,
        /// The configured names, quoted and joined.
        known: String,
    },
    /// Uploaded bytes do not hash to the digest they were sent under.
    #[error("uploaded data does not match its digest: expected {expected:?}, got {actual:?}")]
    DigestMismatch {
        /// The digest the client claimed.
        expected: BlobKey,
        /// What the bytes hash to.
        actual: BlobKey,
    },
    /// Something looked up does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Blobs the request depends on are not in the CAS.
    #[error("{} blob(s) missing from the CAS: {}", .0.len(), list_blobs(.0))]
    MissingBlobs(Vec<BlobKey>),
    /// The request cannot be served in the server's current state.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Policy forbids the request.
    #[error("{0}")]
    PermissionDenied(String),
    /// A bounded resource is full; the client should retry later.
    #[error("{message}")]
    ResourceExhausted {
        /// What is full.
        message: String,
        /// When to retry.
        retry_after: Duration,
    },
    /// A read offset or write offset lies outside the blob.
    #[error("{0}")]
    OutOfRange(String),
    /// The server is shutting down.
    #[error("{0}")]
    Unavailable(String),
    /// The operation was cancelled.
    #[error("{0}")]
    Cancelled(String),
    /// The action ran past its timeout.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The request uses a feature this server does not implement.
    #[error("{0}")]
    Unimplemented(String),
    /// A filesystem operation failed.
    #[error("failed to {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`write`, `rename`, `hardlink` ...).
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A stored proto does not decode.
    #[error("stored {what} {key:?} does not decode: {source}")]
    Corrupt {
        /// What kind of blob it is.
        what: &'static str,
        /// Which blob.
        key: BlobKey,
        /// The decoder's complaint.
        source: prost::DecodeError,
    },
    /// Anything else that is our fault.
    #[error("{0}")]
    Internal(String),
}

fn list_blobs(keys: &[BlobKey]) -> String {
    let shown: Vec<String> = keys.iter().take(5).map(|k| k.missing_subject()).collect();
    let more = keys.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}

/// The result type of the request path.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Io`] builder for `map_err`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }

    /// The gRPC code.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidDigest(_)
            | Error::InvalidArgument(_)
            | Error::UnsupportedDigestFunction(_)
            | Error::UnknownInstance { .. }
            | Error::DigestMismatch { .. } => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::MissingBlobs(_) | Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::ResourceExhausted { .. } => Code::ResourceExhausted,
            Error::OutOfRange(_) => Code::OutOfRange,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Cancelled(_) => Code::Cancelled,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Io { .. } | Error::Corrupt { .. } | Error::Internal(_) => Code::Internal,
        }
    }

    /// Error details as `google.protobuf.Any` messages: a
    /// `PreconditionFailure` listing each missing blob, or a `RetryInfo`.
    fn details(&self) -> Vec<Any> {
        match self {
            Error::MissingBlobs(keys) => {
                let failure = PreconditionFailure {
                    violations: keys
                        .iter()
                        .map(|k| Violation {
                            r#type: "MISSING".into(),
                            subject: k.missing_subject(),
                            description: String::new(),
                        })
                        .collect(),
                };
                vec![Any {
                    type_url: PRECONDITION_FAILURE_URL.into(),
                    value: failure.encode_to_vec(),
                }]
            }
            Error::ResourceExhausted { retry_after, .. } => {
                let info = RetryInfo {
                    retry_delay: Some(ProtoDuration {
                        seconds: retry_after.as_secs() as i64,
                        nanos: retry_after.subsec_nanos() as i32,
                    }),
                };
                vec![Any {
                    type_url: RETRY_INFO_URL.into(),
                    value: info.encode_to_vec(),
                }]
            }
            _ => Vec::new(),
        }
    }

    /// The `google.rpc.Status` for batch responses and `ExecuteResponse`.
    pub fn to_rpc_status(&self) -> RpcStatus {
        RpcStatus {
            code: self.code() as i32,
            message: self.to_string(),
            details: self.details(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        if err.code() == Code::Internal {
            tracing::error!(cause = %err, "internal error");
        }
        let details = err.details();
        if details.is_empty() {
            tonic::Status::new(err.code(), err.to_string())
        } else {
            let rpc = err.to_rpc_status();
            tonic::Status::with_details(err.code(), rpc.message.clone(), rpc.encode_to_vec().into())
        }
    }
}

/// An OK `google.rpc.Status`.
pub fn ok_status() -> RpcStatus {
    RpcStatus {
        code: Code::Ok as i32,
        message: String::new(),
        details: Vec::new(),
    }
}

/// The type URL of [`PreconditionFailure`].
pub const PRECONDITION_FAILURE_URL: &str = "type.googleapis.com/google.rpc.PreconditionFailure";
/// The type URL of [`RetryInfo`].
pub const RETRY_INFO_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// `google.rpc.PreconditionFailure` (not generated by `bazel-remote-apis`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PreconditionFailure {
    /// What failed.
    #[prost(message, repeated, tag = "1")]
    pub violations: Vec<Violation>,
}

/// `google.rpc.PreconditionFailure.Violation`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Violation {
    /// `MISSING` for a blob absent from the CAS.
    #[prost(string, tag = "1")]
    pub r#type: String,
    /// `blobs/{hash}/{size}` (with a `{digest_function}/` segment when not SHA-256).
    #[prost(string, tag = "2")]
    pub subject: String,
    /// Free text.
    #[prost(string, tag = "3")]
    pub description: String,
}

/// `google.rpc.RetryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RetryInfo {
    /// How long the client should wait before retrying.
    #[prost(message, optional, tag = "1")]
    pub retry_delay: Option<ProtoDuration>,
}

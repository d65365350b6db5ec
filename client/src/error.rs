//! The client's error and its exit code: the one place a failure becomes a
//! process status.

use std::path::PathBuf;

/// Exit codes other than the step's own. Each is documented in
/// `hermetic --help` and the README; [`EXIT_CODES_HELP`] is that table.
pub mod code {
    /// The job is invalid: a flag, the job file, an environment variable,
    /// a duration or size, a missing input, or an action the daemon
    /// refused as invalid (unknown image or profile, bad property); for
    /// `reproduce`, inputs the store lacks or a bundle lacking a field.
    pub const INVALID_JOB: u8 = 64;
    /// A downloaded blob does not hash to its digest, or `hermetic verify`
    /// refused an artifact.
    pub const VERIFICATION: u8 = 65;
    /// A reproducibility check (`--check-repro`) found runs that differ.
    pub const NOT_REPRODUCIBLE: u8 = 66;
    /// The daemon or the infrastructure failed: unreachable, an RPC error,
    /// the sandbox could not be set up, output collection failed.
    pub const INFRA: u8 = 70;
    /// The step was killed by the out-of-memory killer.
    pub const OOM: u8 = 71;
    /// The step ran past its timeout and was killed.
    pub const TIMEOUT: u8 = 124;
}

/// The exit code table, for `--help`.
pub const EXIT_CODES_HELP: &str = "\
Exit status:
  N    the step's own exit code when it ran (killed by signal S: 128+S)
  64   invalid job: flags, job file, environment, or refused by the daemon;
       for `reproduce`, also inputs missing from the store or a bundle
       lacking a field the rebuild needs (both named)
  65   verification failure: a downloaded output does not match its digest,
       or `hermetic verify` refused an artifact (the reason is printed)
  66   not reproducible: the runs of --check-repro differ (the step itself succeeded)
  70   daemon or infrastructure error (unreachable, RPC error, sandbox set-up)
  71   the step was killed by the out-of-memory killer
  124  the step timed out
A step exiting with one of these codes itself is indistinguishable by
status alone; `--json` reports the step's exit code and the outcome.";

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The job cannot be run as given.
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// The daemon cannot be reached.
    #[error("cannot reach hermeticd at {address}: {cause}\n{hint}")]
    Unreachable {
        /// Where we tried.
        address: String,
        /// Why it failed.
        cause: String,
        /// How to start it.
        hint: String,
    },
    /// An RPC failed.
    #[error("{what}: {status_code:?}: {message}")]
    Rpc {
        /// What we were doing.
        what: String,
        /// The gRPC status code.
        status_code: tonic::Code,
        /// The server's message.
        message: String,
    },
    /// A blob did not match its digest.
    #[error("verification failed: {0}")]
    Verification(String),
    /// Infrastructure failure reported by the daemon or found locally.
    #[error("{0}")]
    Infra(String),
    /// A local file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        /// What we tried.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// The crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::InvalidJob(_) => code::INVALID_JOB,
            Error::Verification(_) => code::VERIFICATION,
            Error::Rpc {
                status_code: tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition,
                ..
            } => code::INVALID_JOB,
            Error::Unreachable { .. } | Error::Rpc { .. } | Error::Infra(_) | Error::Io { .. } => {
                code::INFRA
            }
        }
    }

    /// A closure making an [`Error::Io`], for `map_err`.
    pub fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }

    /// Writing our own stdout failed because the reader went away (`| head`):
    /// not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
    }

    /// A closure making an [`Error::Rpc`] from a status, for `map_err`.
    pub fn rpc(what: impl Into<String>) -> impl FnOnce(tonic::Status) -> Self {
        let what = what.into();
        move |s| Error::Rpc {
            what,
            status_code: s.code(),
            message: s.message().to_owned(),
        }
    }
}

impl From<hermeticd::error::Error> for Error {
    fn from(e: hermeticd::error::Error) -> Self {
        let status = tonic::Status::from(e);
        Error::rpc("local execution")(status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented() {
        let all = [
            code::INVALID_JOB,
            code::VERIFICATION,
            code::INFRA,
            code::OOM,
            code::TIMEOUT,
        ];
        let mut seen = std::collections::HashSet::new();
        for c in all {
            assert!(seen.insert(c), "{c} twice");
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {c} ")),
                "{c} undocumented"
            );
        }
    }

    #[test]
    fn refusals_are_invalid_jobs() {
        let e = Error::rpc("execute")(tonic::Status::failed_precondition("no such image"));
        assert_eq!(e.exit_code(), code::INVALID_JOB);
        let e = Error::rpc("execute")(tonic::Status::internal("boom"));
        assert_eq!(e.exit_code(), code::INFRA);
    }
}

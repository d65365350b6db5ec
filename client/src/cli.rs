//! The command line, defined once: parsing, `--help`, shell completions
//! and the man page all come from these types.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::{EXIT_CODES_HELP, Error, Result};
use crate::job::JobFile;

/// Run build steps sealed, through hermeticd or locally.
#[derive(Debug, Parser)]
#[command(
    name = "hermetic",
    version,
    about = "Run build steps in the hermetic sandbox, through hermeticd (REAPI v2) or locally",
    after_help = EXIT_CODES_HELP,
    after_long_help = EXIT_CODES_HELP
)]
pub struct Cli {
    /// The daemon: unix:///path, grpc://HOST:PORT or grpcs://HOST:PORT
    /// [default: the local daemon's Unix socket; config: `remote`]
    #[arg(long, global = true, value_name = "URI", env = "HERMETIC_REMOTE")]
    pub remote: Option<String>,
    /// REAPI instance name [default: "" ; config: `instance`]
    #[arg(long, global = true, value_name = "NAME")]
    pub instance: Option<String>,
    /// Client settings file [default: $XDG_CONFIG_HOME/hermetic/config.toml]
    #[arg(long, global = true, value_name = "FILE", env = "HERMETIC_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print only a JSON result on stdout (no progress, no step output)
    #[arg(long, global = true)]
    pub json: bool,
    /// grpcs:// only: CA certificates (PEM) the daemon's certificate must
    /// chain to [default: the system's roots; config: `tls_ca`]
    #[arg(long, global = true, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// grpcs:// only: client certificate (PEM) for a daemon that requires
    /// mutual TLS; its subject is your principal [config: `tls_cert`]
    #[arg(long, global = true, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// grpcs:// only: the client certificate's private key (PEM)
    /// [config: `tls_key`]
    #[arg(long, global = true, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command as a sealed build step and download its outputs
    Run(Box<RunArgs>),
    /// Show the execution log of an action or an operation
    Log(LogArgs),
    /// Show daemon health, capabilities, sandbox features and the queue
    Status,
    /// Manage base images: import, ls, inspect, rm, trust, untrust
    Image {
        /// What to do.
        #[command(subcommand)]
        command: crate::image_cmd::ImageCommand,
    },
    /// Verify artifacts against their signed provenance, offline
    Verify(crate::verify_cmd::VerifyArgs),
    /// Rebuild from the inputs a provenance attestation names and compare
    Reproduce(crate::reproduce_cmd::ReproduceArgs),
    /// The daemon's public signing keys
    Keys(crate::keys_cmd::KeysArgs),
    /// Administration: garbage collection, pins, signing keys
    Admin(crate::admin_cmd::AdminArgs),
    /// Print a shell completion script
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), or write it to a file
    Man {
        /// Write here instead of stdout (for example docs/hermetic.1).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

/// Shells with completions.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// `hermetic run`.
#[derive(Debug, Args)]
#[command(
    after_help = "Example:\n  hermetic run --input src --output hello -- sh -c 'cc -o hello hello.c'"
)]
pub struct RunArgs {
    /// Job file (TOML; see the README); flags override its values
    #[arg(short = 'f', long = "file", value_name = "JOB.toml")]
    pub file: Option<PathBuf>,
    /// Base image: an alias or digest (hermetic-image:blake3:HEX) in the
    /// daemon's image store; resolved to the digest the action pins
    #[arg(long, value_name = "DIGEST|ALIAS")]
    pub image: Option<String>,
    /// Directory uploaded as the step's /work
    #[arg(long, value_name = "DIR")]
    pub input: Option<PathBuf>,
    /// An output path relative to /work (repeatable)
    #[arg(long = "output", value_name = "PATH")]
    pub outputs: Vec<String>,
    /// An environment variable of the step (repeatable)
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Action timeout, e.g. 90s, 10m, 1h
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Memory limit, bytes or K/M/G/T (powers of 1024)
    #[arg(long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Sandbox profile (e.g. strict, debug)
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Where outputs, stdout, stderr and the execution log are written
    /// [default: hermetic-out]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Digest function [default: blake3]
    #[arg(long, value_name = "FUNCTION", value_parser = ["blake3", "sha256"])]
    pub digest_function: Option<String>,
    /// Run without a daemon, in this process, on a private state directory
    #[arg(long)]
    pub local: bool,
    /// Do not look the action up in the action cache
    #[arg(long)]
    pub no_cache: bool,
    /// Check reproducibility: run N times (2..=8) in sandboxes varied in
    /// time, clocks, pids, CPUs, ASLR, env and input order; compare outputs
    /// (exit 66 when they differ)
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "2", require_equals = true)]
    pub check_repro: Option<u32>,
    /// With --check-repro: on a difference, find the responsible variation
    #[arg(long)]
    pub bisect: bool,
    /// The command and its arguments (after `--`)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

impl RunArgs {
    /// The job file (if any) with the flags applied on top.
    pub fn merged(&self) -> Result<JobFile> {
        let mut job = match &self.file {
            Some(p) => JobFile::load(p)?,
            None => JobFile::default(),
        };
        if !self.command.is_empty() {
            job.command = Some(self.command.clone());
        }
        let set = |dst: &mut Option<String>, src: &Option<String>| {
            if src.is_some() {
                dst.clone_from(src);
            }
        };
        set(&mut job.image, &self.image);
        set(&mut job.timeout, &self.timeout);
        set(&mut job.memory, &self.memory);
        set(&mut job.profile, &self.profile);
        set(&mut job.digest_function, &self.digest_function);
        if self.input.is_some() {
            job.input.clone_from(&self.input);
        }
        if self.out_dir.is_some() {
            job.out_dir.clone_from(&self.out_dir);
        }
        if self.check_repro.is_some() {
            job.check_repro = self.check_repro;
        }
        if self.bisect {
            job.repro_bisect = Some(true);
        }
        job.outputs.extend(self.outputs.iter().cloned());
        for kv in &self.env {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| Error::InvalidJob(format!("--env {kv:?}: expected NAME=VALUE")))?;
            job.env.insert(k.to_owned(), v.to_owned());
        }
        Ok(job)
    }
}

/// `hermetic log`.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// An action digest ([FUNCTION:]HEX/SIZE, as `hermetic run` prints it)
    /// or an operation name (operations/UUID)
    #[arg(value_name = "ACTION|OPERATION")]
    pub target: String,
    /// Digest function of an action digest given without a prefix
    #[arg(long, value_name = "FUNCTION", value_parser = ["blake3", "sha256"], default_value = "blake3")]
    pub digest_function: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn remote_is_global_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["hermetic", "--remote", "grpc://h:1", "status"]).unwrap();
        let b = Cli::try_parse_from(["hermetic", "status", "--remote", "grpc://h:1"]).unwrap();
        assert_eq!(a.remote, b.remote);
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "hermetic",
            "run",
            "--env",
            "A=1",
            "--output",
            "o",
            "--timeout",
            "5s",
            "--",
            "echo",
            "hi",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!()
        };
        let job = run.merged().unwrap();
        assert_eq!(job.command.unwrap(), ["echo", "hi"]);
        assert_eq!(job.env["A"], "1");
        assert_eq!(job.outputs, ["o"]);
        assert_eq!(job.timeout.as_deref(), Some("5s"));
    }
}

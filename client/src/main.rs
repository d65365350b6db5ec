//! `hermetic`: the client of hermeticd.
//!
//! - `hermetic run` builds a REAPI Action from a job (flags or a job
//!   file), uploads only the blobs the store lacks, executes it through the
//!   daemon (or `--local`, with the daemon's own engine in this process),
//!   and downloads stdout, stderr, the outputs and the execution log.
//! - `hermetic image`: import, list, inspect, remove, (un)trust base images.
//! - `hermetic log`, `hermetic status`: an execution log; the daemon's
//!   health, sandbox features and queue.
//! - `hermetic verify`: artifacts against their signed provenance,
//!   offline; `hermetic keys export`, `hermetic admin keys rotate|revoke`.
//! - `hermetic completions SHELL`, `hermetic man`: generated from the CLI
//!   definition in [`cli`].
//!
//! Exit codes are in [`error::code`] and `hermetic --help`.

mod action;
mod backend;
mod cli;
mod config;
mod connect;
mod digests;
mod download;
mod error;
mod image_cmd;
mod job;
mod keys_cmd;
mod log_cmd;
mod operation;
mod progress;
mod provenance;
mod remote;
mod repro;
mod reproduce_cmd;
mod run;
mod status_cmd;
mod stored_input;
mod verify_cmd;

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command, Shell};
use crate::config::Settings;
use crate::error::code;
use crate::run::Globals;

fn completions(shell: Shell) {
    let mut cmd = Cli::command();
    let out = &mut std::io::stdout();
    match shell {
        Shell::Bash => {
            clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "hermetic", out)
        }
        Shell::Zsh => clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "hermetic", out),
        Shell::Fish => {
            clap_complete::generate(clap_complete::Shell::Fish, &mut cmd, "hermetic", out)
        }
    }
}

fn man(out: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut page)?;
    match out {
        Some(path) => std::fs::write(path, page)?,
        None => std::io::stdout().write_all(&page)?,
    }
    Ok(())
}

async fn dispatch(cli: &Cli) -> Result<u8, error::Error> {
    let settings = Settings::load(cli.config.as_deref())?;
    let globals = Globals {
        remote: cli.remote.clone(),
        instance: cli
            .instance
            .clone()
            .or_else(|| settings.instance.clone())
            .unwrap_or_default(),
        json: cli.json,
        settings,
    };
    match &cli.command {
        Command::Run(args) => run::run(&globals, args).await,
        Command::Log(args) => log_cmd::log(&globals, args).await,
        Command::Status => status_cmd::status(&globals).await,
        Command::Image { command } => image_cmd::image(&globals, command).await,
        Command::Verify(args) => verify_cmd::verify(&globals, args),
        Command::Reproduce(args) => reproduce_cmd::reproduce(&globals, args).await,
        Command::Keys(args) => keys_cmd::keys(&globals, args).await,
        Command::Admin(args) => keys_cmd::admin(&globals, args).await,
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled in main"),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { code::INVALID_JOB } else { 0 });
        }
    };
    match &cli.command {
        Command::Completions { shell } => {
            completions(*shell);
            return ExitCode::SUCCESS;
        }
        Command::Man { out } => {
            return match man(out.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("hermetic: cannot write the man page: {e:#}");
                    ExitCode::from(code::INFRA)
                }
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hermetic: cannot start the async runtime: {e}");
            return ExitCode::from(code::INFRA);
        }
    };
    match runtime.block_on(dispatch(&cli)) {
        Ok(c) => ExitCode::from(c),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            let c = e.exit_code();
            if cli.json {
                let v = serde_json::json!({"error": e.to_string(), "hermetic_exit_code": c});
                println!("{v}");
            } else {
                eprintln!("hermetic: {e}");
            }
            ExitCode::from(c)
        }
    }
}

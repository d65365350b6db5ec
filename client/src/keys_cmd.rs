//! `hermetic keys export [-o F]` and `hermetic admin keys rotate|revoke`:
//! the daemon's signing keys through `hermetic.v1.Provenance`.
//!
//! The exported keyring holds public keys only (with their ids, creation
//! times, status and log positions): it is what `hermetic verify
//! --keyring` and third-party verifiers need.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use hermetic_proto::v1::{GetKeyringRequest, RevokeKeyRequest, RotateKeyRequest};

use crate::error::{Error, Result};
use crate::run::Globals;

/// `hermetic keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `hermetic keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Write the daemon's public keyring (JSON) for offline verification
    Export {
        /// Write here instead of stdout
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// `hermetic admin keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminKeysCommand {
    /// Make a new signing key; the old one is retired and still verifies
    /// what it signed
    Rotate,
    /// Revoke a key (rotating first if it is the active one); what it
    /// signed before the revocation stays verifiable
    Revoke {
        /// The key's id (hex, as the keyring lists it)
        #[arg(value_name = "KEYID")]
        keyid: String,
    },
}

/// Runs `hermetic keys`.
pub async fn keys(g: &Globals, args: &KeysArgs) -> Result<u8> {
    let KeysCommand::Export { output } = &args.command;
    let remote = g.connect(None).await?;
    let keyring = remote
        .provenance()
        .get_keyring(GetKeyringRequest {})
        .await
        .map_err(Error::rpc("hermetic.v1.Provenance/GetKeyring"))?
        .into_inner()
        .keyring;
    match output {
        Some(path) => {
            crate::provenance::write_file(path, &keyring)?;
            if !g.json {
                eprintln!("keyring        {}", path.display());
            }
        }
        None => std::io::stdout()
            .write_all(&keyring)
            .map_err(Error::io("write", "stdout"))?,
    }
    Ok(0)
}

/// Runs `hermetic admin keys`.
pub async fn admin_keys(g: &Globals, command: &AdminKeysCommand) -> Result<u8> {
    let remote = g.connect(None).await?;
    let mut client = remote.provenance();
    let (message, keyring) = match command {
        AdminKeysCommand::Rotate => {
            let r = client
                .rotate_key(RotateKeyRequest {})
                .await
                .map_err(Error::rpc("hermetic.v1.Provenance/RotateKey"))?
                .into_inner();
            (format!("new signing key {}", r.keyid), r.keyring)
        }
        AdminKeysCommand::Revoke { keyid } => {
            let r = client
                .revoke_key(RevokeKeyRequest {
                    keyid: keyid.clone(),
                })
                .await
                .map_err(Error::rpc("hermetic.v1.Provenance/RevokeKey"))?
                .into_inner();
            (
                format!("revoked key {keyid} at log index {}", r.log_index),
                r.keyring,
            )
        }
    };
    if g.json {
        let keyring: serde_json::Value = serde_json::from_slice(&keyring).map_err(|e| {
            Error::Infra(format!("the daemon sent a keyring that is not JSON: {e}"))
        })?;
        println!(
            "{}",
            serde_json::json!({"message": message, "keyring": keyring})
        );
    } else {
        eprintln!("{message}");
    }
    Ok(0)
}

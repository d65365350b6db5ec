//! `hermetic admin`: garbage collection, pins and signing keys, through
//! `hermetic.v1.Admin` and `hermetic.v1.Provenance` (admin role).
//!
//! ```text
//! hermetic admin gc [--dry-run]
//! hermetic admin pin [FUNCTION:]HEX/SIZE [--note TEXT] [--kind auto|blob|directory|tree|action]
//! hermetic admin unpin [FUNCTION:]HEX/SIZE
//! hermetic admin pins ls [--json]
//! hermetic admin keys rotate|revoke KEYID
//! ```

use clap::{Args, Subcommand, ValueEnum};
use hermetic_proto::AdminClient;
use hermetic_proto::v1::{
    BlobDigest, ListPinsRequest, PinInfo, PinKind, PinRequest, RunGcRequest, UnpinRequest,
};
use serde_json::json;

use crate::digests::Function;
use crate::error::{Error, Result};
use crate::keys_cmd::AdminKeysCommand;
use crate::run::Globals;

/// `hermetic admin`.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// What to administer.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// `hermetic admin` subcommands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Run a garbage collection pass of the CAS and the action cache now
    Gc {
        /// Only report what would be freed
        #[arg(long)]
        dry_run: bool,
    },
    /// Keep an artifact and everything it references from garbage collection
    Pin {
        /// The digest, [FUNCTION:]HEX/SIZE (FUNCTION: sha256 or blake3;
        /// default: the settings' digest_function, else blake3)
        #[arg(value_name = "DIGEST")]
        digest: String,
        /// A note kept with the pin (a release name, a ticket)
        #[arg(long, default_value = "")]
        note: String,
        /// What the digest names [auto: an action when the action cache
        /// has a result for it, else a blob]
        #[arg(long, value_enum, default_value_t = Kind::Auto)]
        kind: Kind,
    },
    /// Remove a pin (what it kept goes at a later pass if nothing else keeps it)
    Unpin {
        /// The digest, [FUNCTION:]HEX/SIZE
        #[arg(value_name = "DIGEST")]
        digest: String,
    },
    /// Pins
    Pins {
        /// What to do.
        #[command(subcommand)]
        command: PinsCommand,
    },
    /// Signing keys
    Keys {
        /// What to do.
        #[command(subcommand)]
        command: AdminKeysCommand,
    },
}

/// `hermetic admin pins` subcommands.
#[derive(Debug, Subcommand)]
pub enum PinsCommand {
    /// List every pin (a table, or --json)
    Ls,
}

/// What a pinned digest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// An action if the action cache has it, else a blob
    Auto,
    /// One blob
    Blob,
    /// A REAPI Directory and everything below it
    Directory,
    /// A REAPI Tree (an output directory) and its files
    Tree,
    /// An action: Action, Command, input root, result, outputs, provenance
    Action,
}

impl Kind {
    fn to_proto(self) -> PinKind {
        match self {
            Kind::Auto => PinKind::Auto,
            Kind::Blob => PinKind::Blob,
            Kind::Directory => PinKind::Directory,
            Kind::Tree => PinKind::Tree,
            Kind::Action => PinKind::Action,
        }
    }
}

fn kind_name(k: i32) -> &'static str {
    match PinKind::try_from(k) {
        Ok(PinKind::Blob) => "blob",
        Ok(PinKind::Directory) => "directory",
        Ok(PinKind::Tree) => "tree",
        Ok(PinKind::Action) => "action",
        _ => "?",
    }
}

/// Bytes for people: `1.5 MiB`.
fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

/// A period for people: `30d`, `12h`, `90s`.
fn period(secs: u64) -> String {
    match secs {
        s if s > 0 && s % 86400 == 0 => format!("{}d", s / 86400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s => format!("{s}s"),
    }
}

fn pin_json(p: &PinInfo) -> serde_json::Value {
    let d = p.digest.clone().unwrap_or_default();
    json!({
        "digest": format!("{}:{}/{}", p.digest_function, d.hash, d.size_bytes),
        "instance": p.instance_name,
        "kind": kind_name(p.kind),
        "note": p.note,
        "principal": p.principal,
        "created_unix": p.created_unix,
        "closure_blobs": p.closure_blobs,
        "closure_bytes": p.closure_bytes,
    })
}

fn digest_arg(g: &Globals, text: &str) -> Result<(Function, BlobDigest)> {
    let default = Function::parse(g.settings.digest_function.as_deref().unwrap_or("blake3"))?;
    let (f, d) = crate::digests::parse(text, default)?;
    Ok((
        f,
        BlobDigest {
            hash: d.hash,
            size_bytes: d.size_bytes,
        },
    ))
}

/// Runs `hermetic admin`.
pub async fn admin(g: &Globals, args: &AdminArgs) -> Result<u8> {
    if let AdminCommand::Keys { command } = &args.command {
        return crate::keys_cmd::admin_keys(g, command).await;
    }
    let remote = g.connect(None).await?;
    let mut client = AdminClient::new(remote.channel());
    match &args.command {
        AdminCommand::Gc { dry_run } => {
            let r = client
                .run_gc(RunGcRequest { dry_run: *dry_run })
                .await
                .map_err(Error::rpc("hermetic.v1.Admin/RunGc"))?
                .into_inner();
            if g.json {
                println!(
                    "{}",
                    json!({
                        "dry_run": r.dry_run,
                        "evicted_blobs": r.evicted_blobs,
                        "evicted_bytes": r.evicted_bytes,
                        "removed_action_results": r.removed_action_results,
                        "retained_blobs": r.retained_blobs,
                        "pins": r.pins,
                        "recent_attestations": r.recent_attestations,
                        "store_bytes_before": r.store_bytes_before,
                        "store_bytes_after": r.store_bytes_after,
                        "retention_period_secs": r.retention_period_secs,
                        "log_index": r.log_index,
                    })
                );
            } else {
                let verb = if r.dry_run { "would free" } else { "freed" };
                println!(
                    "{verb} {} blobs ({}) and {} action-cache entries",
                    r.evicted_blobs,
                    human(r.evicted_bytes),
                    r.removed_action_results
                );
                println!(
                    "kept {} blobs (pins: {}, attestations younger than {}: {}); store {} -> {}",
                    r.retained_blobs,
                    r.pins,
                    period(r.retention_period_secs),
                    r.recent_attestations,
                    human(r.store_bytes_before),
                    human(r.store_bytes_after)
                );
                if let Some(i) = r.log_index {
                    println!("logged at transparency-log index {i}");
                }
            }
        }
        AdminCommand::Pin { digest, note, kind } => {
            let (f, d) = digest_arg(g, digest)?;
            let r = client
                .pin(PinRequest {
                    instance_name: g.instance.clone(),
                    digest: Some(d),
                    digest_function: f.to_proto(),
                    kind: kind.to_proto().into(),
                    note: note.clone(),
                })
                .await
                .map_err(Error::rpc("hermetic.v1.Admin/Pin"))?
                .into_inner();
            let pin = r.pin.unwrap_or_default();
            if g.json {
                println!(
                    "{}",
                    json!({"pin": pin_json(&pin), "log_index": r.log_index})
                );
            } else {
                println!(
                    "pinned {} ({}): {} blobs, {} (log index {})",
                    pin_json(&pin)["digest"].as_str().unwrap_or_default(),
                    kind_name(pin.kind),
                    pin.closure_blobs,
                    human(pin.closure_bytes),
                    r.log_index
                );
            }
        }
        AdminCommand::Unpin { digest } => {
            let (f, d) = digest_arg(g, digest)?;
            let r = client
                .unpin(UnpinRequest {
                    instance_name: g.instance.clone(),
                    digest: Some(d),
                    digest_function: f.to_proto(),
                })
                .await
                .map_err(Error::rpc("hermetic.v1.Admin/Unpin"))?
                .into_inner();
            let pin = r.pin.unwrap_or_default();
            if g.json {
                println!(
                    "{}",
                    json!({"unpinned": pin_json(&pin), "log_index": r.log_index})
                );
            } else {
                println!(
                    "unpinned {} (log index {})",
                    pin_json(&pin)["digest"].as_str().unwrap_or_default(),
                    r.log_index
                );
            }
        }
        AdminCommand::Pins {
            command: PinsCommand::Ls,
        } => {
            let pins = client
                .list_pins(ListPinsRequest {})
                .await
                .map_err(Error::rpc("hermetic.v1.Admin/ListPins"))?
                .into_inner()
                .pins;
            if g.json {
                let list: Vec<_> = pins.iter().map(pin_json).collect();
                println!("{}", json!({ "pins": list }));
            } else {
                println!(
                    "{:<80} {:<9} {:>7} {:>10}  {:<20} NOTE",
                    "DIGEST", "KIND", "BLOBS", "SIZE", "BY"
                );
                for p in &pins {
                    let j = pin_json(p);
                    println!(
                        "{:<80} {:<9} {:>7} {:>10}  {:<20} {}",
                        j["digest"].as_str().unwrap_or_default(),
                        kind_name(p.kind),
                        p.closure_blobs,
                        human(p.closure_bytes),
                        p.principal,
                        p.note
                    );
                }
            }
        }
        AdminCommand::Keys { .. } => unreachable!("handled above"),
    }
    Ok(0)
}

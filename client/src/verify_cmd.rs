//! `hermetic verify [--keyring F] [--bundle F] ARTIFACT...`: offline
//! verification of artifacts against their provenance bundle.
//!
//! For each artifact: the envelope's signature by a keyring key, the
//! checkpoint's signature, the envelope's inclusion in the log at its index
//! under that checkpoint, the signing key's validity at that log position,
//! the statement's types, and the artifact's SHA-256 and BLAKE3 against a
//! subject. Any failure exits 65 with the reason.
//!
//! Without `--bundle`, the bundle is the `.hermetic/provenance.json` of the
//! nearest directory above the artifact that has one (where `hermetic run`
//! writes it); without `--keyring`, the keyring is the `keyring.json`
//! beside the bundle. Pass a keyring exported from a daemon you trust
//! (`hermetic keys export`) to not trust the one that came with the bundle.

use std::path::{Path, PathBuf};

use clap::Args;
use hermetic_attest::{Bundle, Keyring, verify};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::provenance::{BUNDLE_FILE, KEYRING_FILE};
use crate::run::{Globals, META_DIR};

/// `hermetic verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The provenance bundle [default: OUT/.hermetic/provenance.json above
    /// the artifact]
    #[arg(long, visible_alias = "provenance", value_name = "FILE")]
    pub bundle: Option<PathBuf>,
    /// The public keyring (`hermetic keys export`) [default: keyring.json
    /// beside the bundle]
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Files to verify
    #[arg(required = true, value_name = "ARTIFACT")]
    pub artifacts: Vec<PathBuf>,
}

/// One artifact's verdict, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Verdict {
    artifact: PathBuf,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    keyid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    log_index: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tree_size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bundle: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The `.hermetic/provenance.json` of the nearest ancestor that has one.
fn find_bundle(artifact: &Path) -> Option<PathBuf> {
    let abs = std::path::absolute(artifact).ok()?;
    abs.ancestors()
        .skip(1)
        .map(|d| d.join(META_DIR).join(BUNDLE_FILE))
        .find(|p| p.is_file())
}

fn read(path: &Path, what: &str) -> std::result::Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read the {what} {}: {e}", path.display()))
}

/// Verifies one artifact; the error is the reason.
fn verify_one(
    artifact: &Path,
    args: &VerifyArgs,
) -> std::result::Result<(PathBuf, verify::Verified), String> {
    let bundle_path = match &args.bundle {
        Some(p) => p.clone(),
        None => find_bundle(artifact).ok_or_else(|| {
            format!(
                "no {META_DIR}/{BUNDLE_FILE} above {}; name one with --bundle",
                artifact.display()
            )
        })?,
    };
    let keyring_path = match &args.keyring {
        Some(p) => p.clone(),
        None => bundle_path.with_file_name(KEYRING_FILE),
    };
    let bundle = Bundle::from_json(&read(&bundle_path, "bundle")?)
        .map_err(|e| format!("{} is not a provenance bundle: {e}", bundle_path.display()))?;
    let keyring = Keyring::from_json(&read(&keyring_path, "keyring")?)
        .map_err(|e| format!("{} is not a keyring: {e}", keyring_path.display()))?;
    let v = verify::verify_artifact_file(artifact, &bundle, &keyring).map_err(|e| e.to_string())?;
    Ok((bundle_path, v))
}

/// Runs `hermetic verify`; 0 when every artifact verified.
pub fn verify(g: &Globals, args: &VerifyArgs) -> Result<u8> {
    let mut verdicts = Vec::new();
    for artifact in &args.artifacts {
        verdicts.push(match verify_one(artifact, args) {
            Ok((bundle, v)) => Verdict {
                artifact: artifact.clone(),
                ok: true,
                subject: Some(v.subject),
                keyid: Some(v.bundle.keyid),
                log_index: Some(v.bundle.log_index),
                tree_size: Some(v.bundle.tree_size),
                bundle: Some(bundle),
                error: None,
            },
            Err(reason) => Verdict {
                artifact: artifact.clone(),
                ok: false,
                subject: None,
                keyid: None,
                log_index: None,
                tree_size: None,
                bundle: None,
                error: Some(reason),
            },
        });
    }
    let failed: Vec<&Verdict> = verdicts.iter().filter(|v| !v.ok).collect();
    if g.json {
        let text = serde_json::to_string_pretty(&verdicts)
            .map_err(|e| Error::Infra(format!("the report does not serialize: {e}")))?;
        println!("{text}");
        return Ok(if failed.is_empty() {
            0
        } else {
            crate::error::code::VERIFICATION
        });
    }
    for v in verdicts.iter().filter(|v| v.ok) {
        println!(
            "verified {}: subject {} signed by {} at log index {} (checkpoint of {} entries)",
            v.artifact.display(),
            v.subject.as_deref().unwrap_or_default(),
            v.keyid.as_deref().unwrap_or_default(),
            v.log_index.unwrap_or_default(),
            v.tree_size.unwrap_or_default(),
        );
    }
    match failed.as_slice() {
        [] => Ok(0),
        [one] => Err(Error::Verification(format!(
            "{}: {}",
            one.artifact.display(),
            one.error.as_deref().unwrap_or_default()
        ))),
        many => Err(Error::Verification(
            many.iter()
                .map(|v| {
                    format!(
                        "\n  {}: {}",
                        v.artifact.display(),
                        v.error.as_deref().unwrap_or_default()
                    )
                })
                .collect(),
        )),
    }
}

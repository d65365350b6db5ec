//! Offline verification, as `hermetic verify ARTIFACT --provenance FILE
//! [--keyring FILE]` runs it. Every check has its own error, so the reason
//! for a refusal is plain.
//!
//! Order: the envelope's signature by a keyring key; the checkpoint's
//! signature (and its key's window); the inclusion of the envelope at its
//! index under the checkpoint's root; the signing key's window at that
//! index; the statement's types; the artifact's digests against a subject.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::bundle::{BUNDLE_MEDIA_TYPE, Bundle};
use crate::dsse::DsseError;
use crate::keys::{KeyError, Keyring};
use crate::provenance::{BLAKE3_DIGEST_KEY, PAYLOAD_TYPE, PREDICATE_TYPE, STATEMENT_TYPE};
use crate::record::hex;
use crate::tlog::{Checkpoint, CheckpointError, LogEntry, ProofError, leaf_hash, verify_inclusion};

/// Why verification failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    /// Not a bundle of a version we know.
    #[error("not a hermetic provenance bundle (mediaType {0:?})")]
    MediaType(String),
    /// No envelope signature is by a key in the keyring.
    #[error("the envelope is signed by no key in the keyring (keyids: {0})")]
    UnknownKey(String),
    /// The envelope signature does not verify (edited payload, wrong key).
    #[error("the envelope signature does not verify: {0}")]
    Signature(DsseError),
    /// The checkpoint is malformed, for another log, or not signed by a
    /// keyring key.
    #[error("the log checkpoint is not trusted: {0}")]
    Checkpoint(CheckpointError),
    /// The checkpoint's key was not valid at that tree size.
    #[error("the log checkpoint was signed by a key not valid at its size: {0}")]
    CheckpointKey(KeyError),
    /// The proof's tree size differs from the checkpoint's.
    #[error("the inclusion proof is for {proof} entries but the checkpoint covers {checkpoint}")]
    TreeSize {
        /// Size the proof claims.
        proof: u64,
        /// Size of the checkpoint.
        checkpoint: u64,
    },
    /// The envelope is not in the log at the claimed index.
    #[error("the envelope is not in the log at index {index}: {reason}")]
    NotInLog {
        /// The claimed index.
        index: u64,
        /// Why the proof failed.
        reason: ProofError,
    },
    /// The signing key was not valid at the entry's log position.
    #[error("the signing key was not valid at log index {index}: {reason}")]
    KeyNotValid {
        /// The entry's index.
        index: u64,
        /// Why.
        reason: KeyError,
    },
    /// The payload is not an in-toto statement with SLSA provenance v1.
    #[error("the payload is not an in-toto SLSA provenance v1 statement: {0}")]
    Statement(String),
    /// No subject has the artifact's digests.
    #[error("the artifact (sha256 {sha256}) matches no subject of the provenance")]
    ArtifactMismatch {
        /// The artifact's SHA-256.
        sha256: String,
    },
    /// Two checkpoints are not consistent (the log was rewritten or forked).
    #[error("the checkpoints are not consistent: {0}")]
    Inconsistent(ProofError),
    /// The artifact could not be read.
    #[error("cannot read the artifact: {0}")]
    Artifact(String),
}

/// A bundle that verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedBundle {
    /// keyid of the signing key.
    pub keyid: String,
    /// Index of the entry in the log.
    pub log_index: u64,
    /// Size of the checkpoint it was proven against.
    pub tree_size: u64,
    /// The in-toto statement.
    pub statement: Value,
}

/// An artifact that verified against a bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The subject it matched.
    pub subject: String,
    /// The bundle's facts.
    pub bundle: VerifiedBundle,
}

/// Verifies everything about a provenance `bundle` that does not involve
/// the artifact.
pub fn verify_bundle(bundle: &Bundle, keyring: &Keyring) -> Result<VerifiedBundle, VerifyError> {
    verify_bundle_of(bundle, keyring, PREDICATE_TYPE)
}

/// [`verify_bundle`] for a statement whose `predicateType` is
/// `predicate_type` (a reproducibility attestation, say).
pub fn verify_bundle_of(
    bundle: &Bundle,
    keyring: &Keyring,
    predicate_type: &str,
) -> Result<VerifiedBundle, VerifyError> {
    if bundle.media_type != BUNDLE_MEDIA_TYPE {
        return Err(VerifyError::MediaType(bundle.media_type.clone()));
    }
    let env = &bundle.dsse_envelope;
    // 1. The envelope signature, by a key the keyring knows.
    let Some((sig, key)) = env
        .signatures
        .iter()
        .find_map(|s| keyring.get(&s.keyid).ok().map(|k| (s, k)))
    else {
        let ids: Vec<&str> = env.signatures.iter().map(|s| s.keyid.as_str()).collect();
        return Err(VerifyError::UnknownKey(ids.join(", ")));
    };
    let vk = key.verifying_key().map_err(|e| VerifyError::KeyNotValid {
        index: bundle.log_entry.log_index,
        reason: e,
    })?;
    env.verify(&sig.keyid, &vk)
        .map_err(VerifyError::Signature)?;

    // 2. The checkpoint, signed under the keyring's origin by a valid key.
    let keys = keyring
        .keys
        .iter()
        .map(|k| k.verifying_key())
        .collect::<Result<Vec<_>, _>>()
        .map_err(VerifyError::CheckpointKey)?;
    let proof = &bundle.log_entry;
    let (cp, signer) = Checkpoint::verify(&proof.checkpoint, &keyring.origin, &keys)
        .map_err(VerifyError::Checkpoint)?;
    keyring.keys[signer]
        .check_checkpoint(cp.size)
        .map_err(VerifyError::CheckpointKey)?;
    if proof.tree_size != cp.size {
        return Err(VerifyError::TreeSize {
            proof: proof.tree_size,
            checkpoint: cp.size,
        });
    }

    // 3. The envelope is the leaf at its index under the checkpoint's root.
    let leaf = LogEntry::Attestation {
        envelope: env.clone(),
    }
    .leaf_data();
    let hashes = proof.hashes().ok_or(VerifyError::NotInLog {
        index: proof.log_index,
        reason: ProofError::WrongLength,
    })?;
    verify_inclusion(
        &leaf_hash(&leaf),
        proof.log_index,
        cp.size,
        &hashes,
        &cp.root,
    )
    .map_err(|reason| VerifyError::NotInLog {
        index: proof.log_index,
        reason,
    })?;

    // 4. The key was valid at that position.
    key.check_entry(proof.log_index)
        .map_err(|reason| VerifyError::KeyNotValid {
            index: proof.log_index,
            reason,
        })?;

    // 5. The statement.
    if env.payload_type != PAYLOAD_TYPE {
        return Err(VerifyError::Statement(format!(
            "payloadType {:?}",
            env.payload_type
        )));
    }
    let payload = env.payload_bytes().map_err(VerifyError::Signature)?;
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| VerifyError::Statement(e.to_string()))?;
    if statement["_type"] != STATEMENT_TYPE || statement["predicateType"] != predicate_type {
        return Err(VerifyError::Statement(
            "unexpected _type or predicateType".into(),
        ));
    }
    Ok(VerifiedBundle {
        keyid: key.keyid.clone(),
        log_index: proof.log_index,
        tree_size: cp.size,
        statement,
    })
}

/// Verifies that the checkpoint `new` extends the checkpoint `old` (both
/// signed notes, each trusted as in [`verify_bundle`]) with the hex
/// consistency `proof` the daemon served; returns the two sizes.
pub fn verify_consistency(
    old: &str,
    new: &str,
    proof: &[String],
    keyring: &Keyring,
) -> Result<(u64, u64), VerifyError> {
    let keys = keyring
        .keys
        .iter()
        .map(|k| k.verifying_key())
        .collect::<Result<Vec<_>, _>>()
        .map_err(VerifyError::CheckpointKey)?;
    let mut cps = Vec::with_capacity(2);
    for note in [old, new] {
        let (cp, signer) =
            Checkpoint::verify(note, &keyring.origin, &keys).map_err(VerifyError::Checkpoint)?;
        keyring.keys[signer]
            .check_checkpoint(cp.size)
            .map_err(VerifyError::CheckpointKey)?;
        cps.push(cp);
    }
    let hashes: Option<Vec<[u8; 32]>> = proof
        .iter()
        .map(|s| crate::record::unhex(s).and_then(|v| v.try_into().ok()))
        .collect();
    let hashes = hashes.ok_or(VerifyError::Inconsistent(ProofError::WrongLength))?;
    crate::tlog::verify_consistency(
        cps[0].size,
        cps[1].size,
        &hashes,
        &cps[0].root,
        &cps[1].root,
    )
    .map_err(VerifyError::Inconsistent)?;
    Ok((cps[0].size, cps[1].size))
}

/// Verifies `bundle` and that `artifact` (its bytes) is one of its subjects:
/// its SHA-256 and, where the subject lists one, its BLAKE3 must match.
pub fn verify_artifact(
    artifact: &[u8],
    bundle: &Bundle,
    keyring: &Keyring,
) -> Result<Verified, VerifyError> {
    let sha256 = hex(&Sha256::digest(artifact));
    let blake3 = blake3::hash(artifact).to_hex().to_string();
    match_subject(&sha256, &blake3, verify_bundle(bundle, keyring)?)
}

/// [`verify_artifact`] for a file, read in streaming fashion.
pub fn verify_artifact_file(
    path: &Path,
    bundle: &Bundle,
    keyring: &Keyring,
) -> Result<Verified, VerifyError> {
    let verified = verify_bundle(bundle, keyring)?;
    let (sha256, blake3) =
        digest_file(path).map_err(|e| VerifyError::Artifact(format!("{}: {e}", path.display())))?;
    match_subject(&sha256, &blake3, verified)
}

fn digest_file(path: &Path) -> io::Result<(String, String)> {
    let mut f = File::open(path)?;
    let mut s = Sha256::new();
    let mut b = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        s.update(&buf[..n]);
        b.update(&buf[..n]);
    }
    Ok((hex(&s.finalize()), b.finalize().to_hex().to_string()))
}

fn match_subject(
    sha256: &str,
    blake3: &str,
    bundle: VerifiedBundle,
) -> Result<Verified, VerifyError> {
    let subjects = bundle.statement["subject"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for s in &subjects {
        let d = &s["digest"];
        let sha_ok = d["sha256"].as_str() == Some(sha256);
        let b3_ok = d
            .get(BLAKE3_DIGEST_KEY)
            .is_none_or(|v| v.as_str() == Some(blake3));
        if sha_ok && b3_ok {
            let subject = s["name"].as_str().unwrap_or_default().to_string();
            return Ok(Verified { subject, bundle });
        }
    }
    Err(VerifyError::ArtifactMismatch {
        sha256: sha256.into(),
    })
}

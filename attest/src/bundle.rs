//! The provenance bundle: what the client writes beside each output and
//! `hermetic verify --provenance` reads. One JSON file holding the signed
//! envelope and the evidence that it is in the log.

use serde::{Deserialize, Serialize};

use crate::dsse::Envelope;
use crate::record::{hex, unhex};
use crate::tlog::Hash;

/// `mediaType` of a bundle.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.hermetic.provenance-bundle.v1+json";

/// Where an entry sits in the log and the proof of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogProof {
    /// Leaf index of the entry.
    pub log_index: u64,
    /// Size of the tree the proof and checkpoint are for.
    pub tree_size: u64,
    /// RFC 6962 audit path, leaf-most first, lowercase hex.
    pub inclusion_proof: Vec<String>,
    /// The signed checkpoint (C2SP signed note) of `tree_size` entries.
    pub checkpoint: String,
}

impl LogProof {
    /// Builds a proof from raw hashes.
    pub fn new(log_index: u64, tree_size: u64, proof: &[Hash], checkpoint: String) -> Self {
        Self {
            log_index,
            tree_size,
            inclusion_proof: proof.iter().map(|h| hex(h)).collect(),
            checkpoint,
        }
    }

    /// The audit path as hashes, if every element is 32 bytes of hex.
    pub fn hashes(&self) -> Option<Vec<Hash>> {
        self.inclusion_proof
            .iter()
            .map(|s| unhex(s).and_then(|v| v.try_into().ok()))
            .collect()
    }
}

/// A provenance bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Bundle {
    /// Always [`BUNDLE_MEDIA_TYPE`].
    pub media_type: String,
    /// The signed in-toto statement.
    pub dsse_envelope: Envelope,
    /// Its place in the transparency log.
    pub log_entry: LogProof,
}

impl Bundle {
    /// A bundle of `envelope` with `proof`.
    pub fn new(envelope: Envelope, proof: LogProof) -> Self {
        Self {
            media_type: BUNDLE_MEDIA_TYPE.into(),
            dsse_envelope: envelope,
            log_entry: proof,
        }
    }

    /// Pretty JSON, newline-terminated.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("bundle serializes");
        v.push(b'\n');
        v
    }

    /// Parses a bundle file.
    pub fn from_json(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

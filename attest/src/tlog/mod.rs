//! The transparency log: an append-only RFC 6962 Merkle log of every
//! attestation, image trust record and key event, with signed checkpoints.

pub mod checkpoint;
pub mod merkle;
mod store;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::canonical;
use crate::dsse::Envelope;
use crate::keys::KeyEvent;

pub use checkpoint::{Checkpoint, CheckpointError, note_key_id};
pub use merkle::{Hash, MerkleTree, ProofError, leaf_hash, verify_consistency, verify_inclusion};
pub use store::{Log, LogError, MAX_ENTRY, OpenReport};

/// One log entry. Its leaf data is the canonical JSON of this enum, tagged by
/// `type`: `{"envelope":{...},"type":"attestation"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum LogEntry {
    /// A signed provenance envelope.
    Attestation {
        /// The DSSE envelope.
        envelope: Envelope,
    },
    /// An image trust record, as the image importer wrote it.
    ImageTrust {
        /// The record (any JSON; canonicalized when logged).
        record: Value,
    },
    /// A key creation, rotation or revocation.
    Key {
        /// The event.
        event: KeyEvent,
    },
}

impl LogEntry {
    /// The leaf data: canonical JSON bytes.
    pub fn leaf_data(&self) -> Vec<u8> {
        canonical::to_vec(self).expect("log entries serialize")
    }

    /// Parses leaf data.
    pub fn parse(data: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_data_is_tagged_canonical_json() {
        let e = LogEntry::ImageTrust {
            record: serde_json::json!({"b": 1, "a": [true]}),
        };
        assert_eq!(
            e.leaf_data(),
            br#"{"record":{"a":[true],"b":1},"type":"imageTrust"}"#.to_vec()
        );
        assert_eq!(LogEntry::parse(&e.leaf_data()).unwrap(), e);
    }
}

//! The transparency log: an append-only RFC 6962 Merkle log of every
//! attestation, image trust record, key event and administrative action
//! (naming its principal), with signed checkpoints.

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
    /// An administrative action on the daemon (image import or removal,
    /// pins, garbage collection, key rotation and revocation), naming who
    /// did it.
    Admin {
        /// What was done, e.g. `image.import`, `pin`, `unpin`, `gc`,
        /// `key.rotate`, `key.revoke`.
        action: String,
        /// The authenticated principal, e.g. `unix:uid=0,gid=0`.
        principal: String,
        /// When.
        time: crate::Timestamp,
        /// What it concerned (any JSON; canonicalized when logged).
        details: Value,
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

    #[test]
    fn admin_entries_name_the_principal() {
        let e = LogEntry::Admin {
            action: "pin".into(),
            principal: "unix:uid=0,gid=0".into(),
            time: crate::Timestamp::from_unix(1_700_000_000),
            details: serde_json::json!({"digest": "blake3:ab/1"}),
        };
        let data = String::from_utf8(e.leaf_data()).unwrap();
        assert!(data.contains(r#""principal":"unix:uid=0,gid=0""#), "{data}");
        assert!(data.contains(r#""type":"admin""#), "{data}");
        assert_eq!(LogEntry::parse(data.as_bytes()).unwrap(), e);
    }
}

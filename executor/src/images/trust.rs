//! Trust records: who marked an image trusted (or untrusted), when, and
//! which image, exactly.
//!
//! With `require_trusted_images = true` (the default) an action may only
//! run on an image whose latest record says `trusted`. Each record is
//! stored as `images/<blake3 hex>/trust.json` (temp file, fsync, rename).
//!
//! # In the transparency log
//!
//! [`TrustRecord::trust_record_bytes`] gives the bytes of a record (compact
//! JSON, fields in declaration order, no optional fields, UTF-8). The
//! daemon's `provenance` module appends each record to the transparency
//! log (an `image_trust` entry, canonical JSON with sorted keys, covered by
//! the next signed checkpoint) when the decision is made and, at the
//! latest, when an action first runs on the image, and names the SHA-256
//! of that canonical JSON in the provenance of every action that ran on
//! it. [`TRUST_RECORD_PAYLOAD_TYPE`] is reserved for a record signed on its
//! own in a DSSE envelope.

use serde::{Deserialize, Serialize};

/// The DSSE payload type a signed trust record will carry.
pub const TRUST_RECORD_PAYLOAD_TYPE: &str = "application/vnd.hermetic.trust-record.v1+json";

/// One decision about one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustRecord {
    /// Format version, 1.
    pub version: u32,
    /// The image, pinned form (`hermetic-image:blake3:HEX`).
    pub image: String,
    /// Its SHA-256 tree digest (`sha256:HEX/SIZE`).
    pub digest_sha256: String,
    /// Trusted (true) or explicitly untrusted (false).
    pub trusted: bool,
    /// Who decided: `unix uid N` for a Unix-socket peer, `tcp ADDR` for a
    /// TCP peer, `config` for an image imported from the daemon's
    /// configuration.
    pub by: String,
    /// When, RFC 3339 UTC, seconds.
    pub at: String,
}

impl TrustRecord {
    /// The canonical bytes to sign and log (see the module docs).
    pub fn trust_record_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a trust record serializes")
    }
}

/// Now, RFC 3339 UTC, seconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_bytes_are_stable() {
        let r = TrustRecord {
            version: 1,
            image: "hermetic-image:blake3:ab".into(),
            digest_sha256: "sha256:cd/1".into(),
            trusted: true,
            by: "unix uid 0".into(),
            at: "2026-01-01T00:00:00Z".into(),
        };
        assert_eq!(
            String::from_utf8(r.trust_record_bytes()).unwrap(),
            "{\"version\":1,\"image\":\"hermetic-image:blake3:ab\",\"digest_sha256\":\"sha256:cd/1\",\
             \"trusted\":true,\"by\":\"unix uid 0\",\"at\":\"2026-01-01T00:00:00Z\"}"
        );
        let back: TrustRecord = serde_json::from_slice(&r.trust_record_bytes()).unwrap();
        assert_eq!(back, r);
    }
}

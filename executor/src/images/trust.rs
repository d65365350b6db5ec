//! Trust records: who marked an image trusted (or untrusted), when, and
//! which image, exactly.
//!
//! With `require_trusted_images = true` (the default) an action may only
//! run on an image whose latest record says `trusted`. Each record is
//! stored as `images/<blake3 hex>/trust.json` (temp file, fsync, rename).
//!
//! # Signing hook
//!
//! [`TrustRecord::trust_record_bytes`] gives the canonical bytes of a record
//! (compact JSON, fields in declaration order, no optional fields, UTF-8).
//! The provenance work signs exactly these bytes with the daemon's key
//! (DSSE, payload type [`TRUST_RECORD_PAYLOAD_TYPE`]), appends them to the
//! transparency log and names the record's digest in the provenance of
//! every action that ran on the image. Nothing here signs yet.

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

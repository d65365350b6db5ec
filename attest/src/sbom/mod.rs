//! SBOMs of what went into (and came out of) one action: CycloneDX 1.6 JSON
//! and SPDX 2.3 JSON, with the base image's Debian packages when it has a
//! dpkg status file.

mod cyclonedx;
pub mod dpkg;
mod spdx;

use sha1::Sha1;
use sha2::Digest as _;

pub use cyclonedx::cyclonedx;
pub use dpkg::{DebPackage, DpkgDb};
pub use spdx::spdx;

/// Why an SBOM cannot be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SbomError {
    /// The record is invalid.
    #[error("cannot build an SBOM: {0}")]
    Record(#[from] crate::record::RecordError),
    /// SPDX requires a SHA1 per file and the record lacks one.
    #[error("cannot build SPDX: file {0} has no SHA-1 (SPDX 2.3 requires one per file)")]
    MissingSha1(String),
}

/// A name-based UUID (version 5, SHA-1) in the URL namespace, as
/// `8-4-4-4-12` lowercase hex.
pub(crate) fn uuid_v5_url(name: &str) -> String {
    // RFC 9562 namespace ID for URLs: 6ba7b811-9dad-11d1-80b4-00c04fd430c8.
    const NS_URL: [u8; 16] = [
        0x6b, 0xa7, 0xb8, 0x11, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30,
        0xc8,
    ];
    let mut h = Sha1::new();
    h.update(NS_URL);
    h.update(name.as_bytes());
    let d = h.finalize();
    let mut u = [0u8; 16];
    u.copy_from_slice(&d[..16]);
    u[6] = (u[6] & 0x0f) | 0x50;
    u[8] = (u[8] & 0x3f) | 0x80;
    let x = crate::record::hex(&u);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// A stable identity of the record for document names and namespaces: the
/// SHA-256 of its canonical JSON.
pub(crate) fn record_id(record: &crate::ExecutionRecord) -> String {
    let bytes = crate::canonical::to_vec(record).expect("record serializes");
    crate::record::hex(&sha2::Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_v5_known_answer() {
        // Python: uuid.uuid5(uuid.NAMESPACE_URL, "https://example.com/")
        assert_eq!(
            uuid_v5_url("https://example.com/"),
            "dd2c1780-811a-5296-81c5-178a0ef488bc"
        );
    }
}

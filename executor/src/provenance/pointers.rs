//! Where an action's provenance is recorded, in ways a REAPI client can
//! ignore:
//!
//! - the ActionResult's `execution_metadata.auxiliary_metadata` holds a
//!   `hermetic.v1.ProvenanceRef`, wrapped in a well-known
//!   `google.protobuf.StringValue` ([`REF_TYPE_URL`]) as [`REF_PREFIX`] and
//!   the hex of its encoding: clients that decode every `Any` (BuildGrid's
//!   `bgd` turns results into JSON and fails on a type it has no
//!   descriptor for) can, and others ignore it. The action cache stores it
//!   with the result, so a cache hit names the original attestation;
//! - `ExecuteResponse.server_logs` names the documents as CAS blobs:
//!   [`PROVENANCE_LOG`], [`SBOM_CDX_LOG`], [`SBOM_SPDX_LOG`], [`KEYRING_LOG`].

use std::collections::HashMap;

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, Digest, LogFile};
use bazel_remote_apis::google::protobuf::Any;
use hermetic_proto::v1::{BlobDigest, ProvenanceRef};
use prost::Message;

use crate::digest::BlobKey;

/// The `type_url` of the ref in `auxiliary_metadata`: a well-known type
/// every protobuf runtime knows.
pub const REF_TYPE_URL: &str = "type.googleapis.com/google.protobuf.StringValue";
/// How results cached by earlier builds of hermeticd carry the ref (the
/// message itself); still read, never written.
const LEGACY_REF_TYPE_URL: &str = "type.googleapis.com/hermetic.v1.ProvenanceRef";
/// What the string value starts with; the hex encoding of the
/// `hermetic.v1.ProvenanceRef` follows.
pub const REF_PREFIX: &str = "hermetic.v1.ProvenanceRef:";
/// `server_logs` key of the provenance bundle.
pub const PROVENANCE_LOG: &str = "provenance";
/// `server_logs` key of the CycloneDX SBOM.
pub const SBOM_CDX_LOG: &str = "sbom.cdx";
/// `server_logs` key of the SPDX SBOM.
pub const SBOM_SPDX_LOG: &str = "sbom.spdx";
/// `server_logs` key of the public keyring at signing time.
pub const KEYRING_LOG: &str = "keyring";

/// A CAS blob as the proto names it.
pub fn blob(key: &BlobKey) -> BlobDigest {
    BlobDigest {
        hash: key.hex(),
        size_bytes: key.size as i64,
    }
}

fn digest(b: &Option<BlobDigest>) -> Option<Digest> {
    b.as_ref().map(|b| Digest {
        hash: b.hash.clone(),
        size_bytes: b.size_bytes,
    })
}

/// Adds `r` to the result's auxiliary metadata.
pub fn record_in_result(result: &mut ActionResult, r: &ProvenanceRef) {
    let metadata = result
        .execution_metadata
        .get_or_insert_with(Default::default);
    let text: String = REF_PREFIX
        .chars()
        .chain(r.encode_to_vec().iter().flat_map(|b| {
            let hex = b"0123456789abcdef";
            [
                hex[usize::from(b >> 4)] as char,
                hex[usize::from(b & 15)] as char,
            ]
        }))
        .collect();
    metadata.auxiliary_metadata.push(Any {
        type_url: REF_TYPE_URL.into(),
        // prost encodes a `String` as `google.protobuf.StringValue`.
        value: text.encode_to_vec(),
    });
}

/// The ref in one `auxiliary_metadata` entry, if it is one.
fn decode_ref(a: &Any) -> Option<ProvenanceRef> {
    if a.type_url == LEGACY_REF_TYPE_URL {
        return ProvenanceRef::decode(a.value.as_slice()).ok();
    }
    if a.type_url != REF_TYPE_URL {
        return None;
    }
    let text = String::decode(a.value.as_slice()).ok()?;
    let hex = text.strip_prefix(REF_PREFIX)?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    let bytes = hex
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).ok()?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    ProvenanceRef::decode(bytes.as_slice()).ok()
}

/// Replaces the ref in `result` (or adds it).
pub fn replace_in_result(result: &mut ActionResult, r: &ProvenanceRef) {
    if let Some(m) = result.execution_metadata.as_mut() {
        m.auxiliary_metadata.retain(|a| decode_ref(a).is_none());
    }
    record_in_result(result, r);
}

/// The ref recorded in `result`, if any (a malformed one counts as none).
pub fn from_result(result: &ActionResult) -> Option<ProvenanceRef> {
    result
        .execution_metadata
        .as_ref()?
        .auxiliary_metadata
        .iter()
        .find_map(decode_ref)
}

/// The `server_logs` entries naming `r`'s documents.
pub fn server_logs(r: &ProvenanceRef) -> HashMap<String, LogFile> {
    [
        (PROVENANCE_LOG, &r.bundle),
        (SBOM_CDX_LOG, &r.sbom_cyclonedx),
        (SBOM_SPDX_LOG, &r.sbom_spdx),
        (KEYRING_LOG, &r.keyring),
    ]
    .into_iter()
    .filter_map(|(name, b)| {
        Some((
            name.to_owned(),
            LogFile {
                digest: Some(digest(b)?),
                human_readable: true,
            },
        ))
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(index: u64) -> ProvenanceRef {
        let b = |h: &str| {
            Some(BlobDigest {
                hash: h.repeat(64),
                size_bytes: 1,
            })
        };
        ProvenanceRef {
            log_index: index,
            bundle: b("a"),
            sbom_cyclonedx: b("b"),
            sbom_spdx: b("c"),
            keyring: None,
        }
    }

    #[test]
    fn a_ref_survives_the_result_and_is_replaced_not_repeated() {
        let mut result = ActionResult::default();
        assert_eq!(from_result(&result), None);
        record_in_result(&mut result, &r(3));
        assert_eq!(from_result(&result), Some(r(3)));
        replace_in_result(&mut result, &r(7));
        assert_eq!(from_result(&result), Some(r(7)));
        let aux = &result
            .execution_metadata
            .as_ref()
            .unwrap()
            .auxiliary_metadata;
        assert_eq!(aux.len(), 1);
        // A plain StringValue any client can decode, and nothing else.
        let text = String::decode(aux[0].value.as_slice()).unwrap();
        assert!(text.starts_with(REF_PREFIX), "{text}");
        let other = Any {
            type_url: REF_TYPE_URL.into(),
            value: "something else".to_owned().encode_to_vec(),
        };
        assert_eq!(decode_ref(&other), None);
        let legacy = Any {
            type_url: LEGACY_REF_TYPE_URL.into(),
            value: r(5).encode_to_vec(),
        };
        assert_eq!(decode_ref(&legacy), Some(r(5)));
        // Only the documents present are named; the keyring is absent here.
        let logs = server_logs(&r(7));
        let mut names: Vec<&str> = logs.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, [PROVENANCE_LOG, SBOM_CDX_LOG, SBOM_SPDX_LOG]);
        assert_eq!(
            logs[PROVENANCE_LOG].digest.as_ref().unwrap().hash,
            "a".repeat(64)
        );
    }
}

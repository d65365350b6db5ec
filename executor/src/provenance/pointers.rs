//! Where an action's provenance is recorded, in ways a REAPI client can
//! ignore:
//!
//! - the ActionResult's `execution_metadata.auxiliary_metadata` holds a
//!   `hermetic.v1.ProvenanceRef` (type URL [`REF_TYPE_URL`]); the action
//!   cache stores it with the result, so a cache hit names the original
//!   attestation;
//! - `ExecuteResponse.server_logs` names the documents as CAS blobs:
//!   [`PROVENANCE_LOG`], [`SBOM_CDX_LOG`], [`SBOM_SPDX_LOG`], [`KEYRING_LOG`].

use std::collections::HashMap;

use bazel_remote_apis::build::bazel::remote::execution::v2::{ActionResult, Digest, LogFile};
use bazel_remote_apis::google::protobuf::Any;
use hermetic_proto::v1::{BlobDigest, ProvenanceRef};
use prost::Message;

use crate::digest::BlobKey;

/// The `type_url` of the ref in `auxiliary_metadata`.
pub const REF_TYPE_URL: &str = "type.googleapis.com/hermetic.v1.ProvenanceRef";
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
    metadata.auxiliary_metadata.push(Any {
        type_url: REF_TYPE_URL.into(),
        value: r.encode_to_vec(),
    });
}

/// Replaces the ref in `result` (or adds it).
pub fn replace_in_result(result: &mut ActionResult, r: &ProvenanceRef) {
    if let Some(m) = result.execution_metadata.as_mut() {
        m.auxiliary_metadata.retain(|a| a.type_url != REF_TYPE_URL);
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
        .find(|a| a.type_url == REF_TYPE_URL)
        .and_then(|a| ProvenanceRef::decode(a.value.as_slice()).ok())
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

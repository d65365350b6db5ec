//! End-to-end through the Attestor, and every tampering the verifier must
//! reject with its own reason.

mod common;

use std::fs;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::SigningKey;
use hermetic_attest::keys::{KeyError, KeyStatus};
use hermetic_attest::tlog::{Checkpoint, LogEntry, MerkleTree, leaf_hash};
use hermetic_attest::verify::{verify_artifact, verify_artifact_file};
use hermetic_attest::{
    AttestError, Attestor, Bundle, Envelope, LogProof, VerifyError, canonical, dsse,
};
use serde_json::Value;

use common::{ORIGIN, record};

const HELLO: &[u8] = b"\x7fELF hello binary";

fn setup() -> (tempfile::TempDir, Attestor, Bundle) {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Attestor::open(dir.path(), ORIGIN).unwrap();
    let b = a
        .attest(&record(&[("out/hello", HELLO), ("out/hello.map", b"map")]))
        .unwrap();
    (dir, a, b)
}

#[test]
fn attested_artifact_verifies() {
    let (dir, a, b) = setup();
    let v = verify_artifact(HELLO, &b, a.keyring()).unwrap();
    assert_eq!(v.subject, "out/hello");
    assert_eq!((v.bundle.log_index, v.bundle.tree_size), (1, 2));
    // Round trip through files, as client and `hermetic verify` do.
    let art = dir.path().join("hello");
    fs::write(&art, HELLO).unwrap();
    let bundle = Bundle::from_json(&b.to_json()).unwrap();
    let keyring = hermetic_attest::Keyring::from_json(&a.keyring().to_json()).unwrap();
    verify_artifact_file(&art, &bundle, &keyring).unwrap();
}

#[test]
fn other_artifact_is_rejected() {
    let (_d, a, b) = setup();
    assert!(matches!(
        verify_artifact(b"something else", &b, a.keyring()),
        Err(VerifyError::ArtifactMismatch { .. })
    ));
}

#[test]
fn edited_payload_is_rejected() {
    let (_d, a, mut b) = setup();
    let mut st: Value = serde_json::from_slice(&b.dsse_envelope.payload_bytes().unwrap()).unwrap();
    st["subject"][0]["digest"]["sha256"] = "00".repeat(32).into();
    b.dsse_envelope.payload = B64.encode(canonical::to_vec(&st).unwrap());
    let err = verify_artifact(HELLO, &b, a.keyring()).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyError::Signature(dsse::DsseError::BadSignature(_))
        ),
        "{err}"
    );
}

#[test]
fn wrong_key_is_rejected() {
    let (_d, a, b) = setup();
    // An envelope signed by a stranger claiming our keyid.
    let keyid = b.dsse_envelope.signatures[0].keyid.clone();
    let stranger = SigningKey::from_bytes(&[42; 32]);
    let payload = b.dsse_envelope.payload_bytes().unwrap();
    let forged = Envelope::sign(&b.dsse_envelope.payload_type, &payload, &keyid, &stranger);
    let mut fb = b.clone();
    fb.dsse_envelope = forged;
    assert!(matches!(
        verify_artifact(HELLO, &fb, a.keyring()),
        Err(VerifyError::Signature(_))
    ));
    // Our envelope against a keyring that does not hold our key.
    let other_dir = tempfile::tempdir().unwrap();
    let (other, _) = Attestor::open(other_dir.path(), ORIGIN).unwrap();
    assert!(matches!(
        verify_artifact(HELLO, &b, other.keyring()),
        Err(VerifyError::UnknownKey(_))
    ));
}

#[test]
fn forged_checkpoint_and_proof_are_rejected() {
    let (_d, a, b) = setup();
    let mut fb = b.clone();
    fb.log_entry.checkpoint = b.log_entry.checkpoint.replacen("\n2\n", "\n3\n", 1);
    assert!(matches!(
        verify_artifact(HELLO, &fb, a.keyring()),
        Err(VerifyError::Checkpoint(_))
    ));
    let mut fb = b.clone();
    fb.log_entry.log_index = 0;
    assert!(matches!(
        verify_artifact(HELLO, &fb, a.keyring()),
        Err(VerifyError::NotInLog { .. })
    ));
    let mut fb = b.clone();
    fb.log_entry.inclusion_proof[0] = "11".repeat(32);
    assert!(matches!(
        verify_artifact(HELLO, &fb, a.keyring()),
        Err(VerifyError::NotInLog { .. })
    ));
    let mut fb = b;
    fb.log_entry.tree_size = 5;
    assert!(matches!(
        verify_artifact(HELLO, &fb, a.keyring()),
        Err(VerifyError::TreeSize { .. })
    ));
}

#[test]
fn rotation_keeps_old_attestations_valid() {
    let (_d, mut a, old) = setup();
    let old_key = old.dsse_envelope.signatures[0].keyid.clone();
    let new_key = a.rotate().unwrap();
    assert_ne!(old_key, new_key);
    assert_eq!(
        a.keyring().get(&old_key).unwrap().status,
        KeyStatus::Retired
    );
    // The old bundle (checkpoint by the retired key) and a refreshed one.
    verify_artifact(HELLO, &old, a.keyring()).unwrap();
    verify_artifact(HELLO, &a.bundle_for(1).unwrap(), a.keyring()).unwrap();
    let b2 = a.attest(&record(&[("out/b", b"b")])).unwrap();
    assert_eq!(b2.dsse_envelope.signatures[0].keyid, new_key);
    verify_artifact(b"b", &b2, a.keyring()).unwrap();
}

#[test]
fn revoked_key_is_rejected_where_it_must_be() {
    let (dir, mut a, old) = setup();
    let key_a = old.dsse_envelope.signatures[0].keyid.clone();
    let seed_file = dir.path().join(format!("keys/{key_a}.key"));
    let stolen: Value = serde_json::from_slice(&fs::read(&seed_file).unwrap()).unwrap();
    let proof = a.revoke(&key_a).unwrap();
    assert!(
        !seed_file.exists(),
        "a revoked key's private file is removed"
    );
    let rec = a.keyring().get(&key_a).unwrap().clone();
    assert_eq!(
        (rec.status, rec.revoked_log_index),
        (KeyStatus::Revoked, Some(proof.log_index))
    );

    // What A signed before its revocation still verifies, with a fresh proof.
    verify_artifact(HELLO, &a.bundle_for(1).unwrap(), a.keyring()).unwrap();
    // The old bundle's checkpoint was signed by A: refused, refresh needed.
    assert!(matches!(
        verify_artifact(HELLO, &old, a.keyring()),
        Err(VerifyError::CheckpointKey(KeyError::Revoked { .. }))
    ));

    // Whoever stole A forges a statement, a log and a checkpoint.
    let seed = hex32(stolen["keyval"]["private"].as_str().unwrap());
    let sk = SigningKey::from_bytes(&seed);
    let payload = old.dsse_envelope.payload_bytes().unwrap();
    let env = Envelope::sign(&old.dsse_envelope.payload_type, &payload, &key_a, &sk);
    let mut tree = MerkleTree::new();
    tree.push(leaf_hash(b"genesis"));
    tree.push(leaf_hash(
        &LogEntry::Attestation {
            envelope: env.clone(),
        }
        .leaf_data(),
    ));
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 2,
        root: tree.root(2).unwrap(),
    }
    .sign(&sk);
    let forged = Bundle::new(
        env,
        LogProof::new(1, 2, &tree.inclusion_proof(1, 2).unwrap(), cp),
    );
    assert!(matches!(
        verify_artifact(HELLO, &forged, a.keyring()),
        Err(VerifyError::CheckpointKey(KeyError::Revoked { .. }))
    ));
    // Revoking twice is refused; a revoked key never signs again.
    assert!(matches!(
        a.revoke(&key_a),
        Err(AttestError::Key(KeyError::Revoked { .. }))
    ));
    let b3 = a.attest(&record(&[("out/c", b"c")])).unwrap();
    assert_ne!(b3.dsse_envelope.signatures[0].keyid, key_a);
}

#[test]
fn attestation_after_revocation_index_is_rejected() {
    let (_d, mut a, b) = setup();
    let key_a = b.dsse_envelope.signatures[0].keyid.clone();
    a.revoke(&key_a).unwrap();
    // A keyring that claims A was revoked at index 1 (where it signed).
    let mut ring = a.keyring().clone();
    ring.keys
        .iter_mut()
        .find(|k| k.keyid == key_a)
        .unwrap()
        .revoked_log_index = Some(1);
    ring.keys
        .iter_mut()
        .find(|k| k.keyid == key_a)
        .unwrap()
        .retired_log_index = None;
    let fresh = a.bundle_for(1).unwrap();
    assert!(matches!(
        verify_artifact(HELLO, &fresh, &ring),
        Err(VerifyError::KeyNotValid {
            index: 1,
            reason: KeyError::Revoked {
                revoked_index: 1,
                ..
            }
        })
    ));
}

#[test]
fn state_survives_reopen_and_edited_log_is_refused() {
    let (dir, mut a, _) = setup();
    a.rotate().unwrap();
    let img = serde_json::json!({"image": "toolchain", "trusted_by": "admin"});
    let p = a.log_image_trust(&img).unwrap();
    let ring = a.keyring().clone();
    let size = a.log().size();
    drop(a);
    let (a, report) = Attestor::open(dir.path(), ORIGIN).unwrap();
    assert_eq!((report.truncated_bytes, report.unsigned_entries), (0, 0));
    assert_eq!((a.keyring(), a.log().size()), (&ring, size));
    assert_eq!(
        LogEntry::parse(&a.log().entry(p.log_index).unwrap()).unwrap(),
        LogEntry::ImageTrust { record: img }
    );
    drop(a);

    // Edit the attestation entry on disk (fixing its record checksum).
    let path = dir.path().join("log/entries");
    let mut bytes = fs::read(&path).unwrap();
    let first = u32::from_be_bytes(bytes[..4].try_into().unwrap()) as usize;
    let off = 4 + first + 32;
    let len = u32::from_be_bytes(bytes[off..off + 4].try_into().unwrap()) as usize;
    let data = &mut bytes[off + 4..off + 4 + len];
    let at = data.len() / 2;
    data[at] = if data[at] == b'A' { b'B' } else { b'A' };
    let h = leaf_hash(&bytes[off + 4..off + 4 + len]);
    bytes[off + 4 + len..off + 4 + len + 32].copy_from_slice(&h);
    fs::write(&path, &bytes).unwrap();
    let err = Attestor::open(dir.path(), ORIGIN).unwrap_err();
    assert!(
        err.to_string()
            .contains("disagrees with the signed checkpoint"),
        "{err}"
    );
}

fn hex32(s: &str) -> [u8; 32] {
    let v: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

#[test]
fn consistency_between_checkpoints() {
    let (_d, mut a, first) = setup();
    let old = first.log_entry.checkpoint.clone();
    a.attest(&record(&[("out/z", b"z")])).unwrap();
    a.rotate().unwrap();
    let new = a.checkpoint().to_string();
    let hex = |p: Vec<[u8; 32]>| {
        p.iter()
            .map(|h| h.iter().map(|b| format!("{b:02x}")).collect())
            .collect::<Vec<String>>()
    };
    let proof = hex(a.log().consistency_proof(2, a.log().size()).unwrap());
    let sizes =
        hermetic_attest::verify::verify_consistency(&old, &new, &proof, a.keyring()).unwrap();
    assert_eq!(sizes, (2, 4));
    // A proof for other sizes, or swapped checkpoints, does not verify.
    let wrong = hex(a.log().consistency_proof(1, a.log().size()).unwrap());
    assert!(matches!(
        hermetic_attest::verify::verify_consistency(&old, &new, &wrong, a.keyring()),
        Err(VerifyError::Inconsistent(_))
    ));
    assert!(hermetic_attest::verify::verify_consistency(&new, &old, &proof, a.keyring()).is_err());
}

#[test]
fn statements_of_other_predicates_are_signed_logged_and_verified_by_type() {
    use hermetic_attest::verify::{verify_bundle, verify_bundle_of};
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Attestor::open(dir.path(), ORIGIN).unwrap();
    let predicate_type = "https://hermetic.dev/attestations/reproducibility/v1";
    let statement = serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "out/hello", "digest": {"sha256": "00".repeat(32)}}],
        "predicateType": predicate_type,
        "predicate": {"verdict": "reproducible"},
    });
    let b = a.attest_statement(&statement).unwrap();
    let size = a.log().size();
    let v = verify_bundle_of(&b, a.keyring(), predicate_type).unwrap();
    assert_eq!(v.statement["predicate"]["verdict"], "reproducible");
    assert_eq!(v.tree_size, size);
    // Not mistaken for provenance, nor provenance for it.
    assert!(matches!(
        verify_bundle(&b, a.keyring()),
        Err(VerifyError::Statement(_))
    ));
    // What is not a statement is refused before anything is signed.
    for bad in [
        serde_json::json!({"_type": "x", "subject": [{}], "predicateType": "p", "predicate": {}}),
        serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [], "predicateType": "p", "predicate": {}}),
        serde_json::json!({"_type": "https://in-toto.io/Statement/v1", "subject": [{}], "predicate": {}}),
    ] {
        assert!(matches!(
            a.attest_statement(&bad),
            Err(AttestError::NotAStatement(_))
        ));
    }
    assert_eq!(a.log().size(), size, "a refused statement was logged");
}

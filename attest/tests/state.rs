//! The state directory: private key files, crash recovery of the keyring.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use hermetic_attest::keys::KeyStatus;
use hermetic_attest::verify::verify_artifact;
use hermetic_attest::{Attestor, Keyring};

use common::{ORIGIN, record};

fn mode(p: &std::path::Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn private_keys_are_0600_in_a_0700_dir() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Attestor::open(dir.path(), ORIGIN).unwrap();
    a.rotate().unwrap();
    let keys = dir.path().join("keys");
    assert_eq!(mode(&keys), 0o700);
    let mut n = 0;
    for e in fs::read_dir(&keys).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "key") {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
            n += 1;
        }
    }
    assert_eq!(n, 2);
    // The exported keyring holds no private material.
    let exported = String::from_utf8(a.keyring().to_json()).unwrap();
    assert!(!exported.contains("private"));
}

#[test]
fn crash_between_log_append_and_keyring_update_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut a, _) = Attestor::open(dir.path(), ORIGIN).unwrap();
    let b = a.attest(&record(&[("out/x", b"x")])).unwrap();
    let ring_before = fs::read(dir.path().join("keys/keyring.json")).unwrap();
    let cp_before = fs::read(dir.path().join("log/checkpoint")).unwrap();
    let new_key = a.rotate().unwrap();
    let ring_after = a.keyring().clone();
    drop(a);
    // The state a crash right after the rotation's append leaves behind.
    fs::write(dir.path().join("keys/keyring.json"), ring_before).unwrap();
    fs::write(dir.path().join("log/checkpoint"), cp_before).unwrap();
    let (a, report) = Attestor::open(dir.path(), ORIGIN).unwrap();
    assert_eq!(report.unsigned_entries, 1);
    assert_eq!(a.keyring(), &ring_after);
    assert_eq!(a.keyring().active().unwrap().keyid, new_key);
    assert_eq!(
        a.keyring()
            .get(&b.dsse_envelope.signatures[0].keyid)
            .unwrap()
            .status,
        KeyStatus::Retired
    );
    let on_disk = Keyring::from_json(&fs::read(dir.path().join("keys/keyring.json")).unwrap());
    assert_eq!(on_disk.unwrap(), ring_after);
    // The new checkpoint covers the rotation and old bundles still verify.
    assert_eq!(a.log().checkpoint_size(), a.log().size());
    verify_artifact(
        b"x",
        &a.bundle_for(b.log_entry.log_index).unwrap(),
        a.keyring(),
    )
    .unwrap();
}

#[test]
fn keyring_of_another_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(Attestor::open(dir.path(), ORIGIN).unwrap());
    let err = Attestor::open(dir.path(), "other.example/log").unwrap_err();
    assert!(err.to_string().contains("keyring is for log"), "{err}");
}

#[test]
fn replay_of_a_history_with_a_revoked_key() {
    use hermetic_attest::keys::{KeyEvent, KeyStore};
    let dir = tempfile::tempdir().unwrap();
    let mut ks = KeyStore::open(dir.path(), ORIGIN).unwrap();
    let a = ks.generate().unwrap();
    let b = ks.generate().unwrap();
    let events = [
        KeyEvent::Created {
            keyid: a.keyid.clone(),
            public: a.public,
            created: a.created,
        },
        KeyEvent::Rotated {
            keyid: b.keyid.clone(),
            public: b.public,
            created: b.created,
            previous: a.keyid.clone(),
        },
        KeyEvent::Revoked {
            keyid: a.keyid.clone(),
            revoked: b.created,
        },
    ];
    fs::remove_file(dir.path().join(format!("{}.key", a.keyid))).ok();
    for (i, e) in events.iter().enumerate() {
        ks.replay(e, i as u64).unwrap();
    }
    ks.reload().unwrap();
    assert_eq!(ks.active().unwrap().0, b.keyid);
    assert_eq!(
        ks.keyring().get(&a.keyid).unwrap().status,
        KeyStatus::Revoked
    );
    // Replaying again changes nothing.
    let ring = ks.keyring().clone();
    for (i, e) in events.iter().enumerate() {
        ks.replay(e, i as u64).unwrap();
    }
    assert_eq!(ks.keyring(), &ring);
}

use super::*;
use crate::tlog::merkle::{empty_root, verify_consistency, verify_inclusion};
use std::fs;

const ORIGIN: &str = "hermetic.test/log";

fn key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

fn open(dir: &Path) -> Result<(Log, OpenReport), LogError> {
    Log::open(dir, ORIGIN, &[key().verifying_key()])
}

fn filled(dir: &Path, n: usize) -> Log {
    let (mut log, _) = open(dir).unwrap();
    for i in 0..n {
        log.append(format!("entry {i}").as_bytes()).unwrap();
    }
    log.sign_checkpoint(&key()).unwrap();
    log
}

#[test]
fn reopen_recomputes_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled(dir.path(), 11);
    let root = log.root(11).unwrap();
    drop(log);
    let (log, report) = open(dir.path()).unwrap();
    assert_eq!(report, OpenReport::default());
    assert_eq!((log.size(), log.root(11).unwrap()), (11, root));
    assert_eq!(log.entry(3).unwrap(), b"entry 3");
    let p = log.inclusion_proof(3, 11).unwrap();
    verify_inclusion(&leaf_hash(b"entry 3"), 3, 11, &p, &root).unwrap();
    let c = log.consistency_proof(4, 11).unwrap();
    verify_consistency(4, 11, &c, &log.root(4).unwrap(), &root).unwrap();
    assert_eq!(log.root(0).unwrap(), empty_root());
}

#[test]
fn torn_tail_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled(dir.path(), 3));
    let path = dir.path().join(ENTRIES);
    let good = fs::metadata(&path).unwrap().len();
    // A crash mid-append: length and part of the data of a 4th record.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    std::io::Write::write_all(&mut f, &[0, 0, 0, 9, b'p', b'a']).unwrap();
    drop(f);
    let (mut log, report) = open(dir.path()).unwrap();
    assert_eq!(report.truncated_bytes, 6);
    assert_eq!(log.size(), 3);
    assert_eq!(fs::metadata(&path).unwrap().len(), good);
    assert_eq!(log.append(b"next").unwrap(), 3);
}

#[test]
fn unsigned_intact_entry_survives() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = filled(dir.path(), 2);
    log.append(b"after checkpoint").unwrap();
    drop(log);
    let (log, report) = open(dir.path()).unwrap();
    assert_eq!((log.size(), report.unsigned_entries), (3, 1));
}

#[test]
fn edited_entry_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled(dir.path(), 4));
    let path = dir.path().join(ENTRIES);
    let mut bytes = fs::read(&path).unwrap();
    // Edit entry 1 and fix up its stored leaf hash, as a careful attacker would.
    let off = 4 + 7 + 32;
    bytes[off + 4 + 6] = b'X';
    let h = leaf_hash(&bytes[off + 4..off + 4 + 7]);
    bytes[off + 4 + 7..off + 4 + 7 + 32].copy_from_slice(&h);
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::CheckpointMismatch { size: 4 })
    ));
    // Without fixing the hash it is corruption under the checkpoint.
    bytes[off + 4 + 7] ^= 1;
    fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::Corrupt { index: 1, .. })
    ));
}

#[test]
fn truncated_or_unsigned_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled(dir.path(), 4));
    let path = dir.path().join(ENTRIES);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() - 43]).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::Truncated {
            entries: 3,
            checkpoint: 4
        })
    ));
    fs::write(&path, &bytes).unwrap();
    fs::remove_file(dir.path().join(CHECKPOINT)).unwrap();
    assert!(matches!(
        open(dir.path()),
        Err(LogError::MissingCheckpoint(4))
    ));
}

#[test]
fn checkpoint_by_unknown_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(filled(dir.path(), 2));
    let other = SigningKey::from_bytes(&[6; 32]).verifying_key();
    assert!(matches!(
        Log::open(dir.path(), ORIGIN, &[other]),
        Err(LogError::Checkpoint(CheckpointError::NoTrustedSignature))
    ));
}

//! Checkpoints in the C2SP `tlog-checkpoint` format, signed as C2SP signed
//! notes with Ed25519:
//!
//! ```text
//! <origin>
//! <tree size, decimal>
//! <base64 root hash>
//!
//! — <key name> <base64(key id (4 bytes) || Ed25519 signature)>
//! ```
//!
//! The key id is `SHA-256(name || "\n" || 0x01 || public key)[:4]`, and the
//! signature covers the note text (the three lines, final newline included).
//! The key name is the log origin.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use sha2::{Digest as _, Sha256};

use super::merkle::Hash;

const EM_DASH: &str = "\u{2014}";

/// The signed-note key id of an Ed25519 key under `name`.
pub fn note_key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n\x01");
    h.update(key.as_bytes());
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

/// The body of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line.
    pub origin: String,
    /// Number of entries.
    pub size: u64,
    /// RFC 6962 root of those entries.
    pub root: Hash,
}

/// Why a checkpoint is rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckpointError {
    /// The note or its body is malformed.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by a trusted key was found.
    #[error("checkpoint carries no signature by a trusted key")]
    NoTrustedSignature,
    /// A signature from a trusted key failed to verify.
    #[error("checkpoint signature by {0} does not verify")]
    BadSignature(String),
    /// The origin line is not the expected one.
    #[error("checkpoint is for log {found:?}, expected {expected:?}")]
    WrongOrigin {
        /// Expected origin.
        expected: String,
        /// Origin found.
        found: String,
    },
}

impl Checkpoint {
    /// The note text: origin, size, base64 root, each newline-terminated.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        )
    }

    /// The signed note, signed by `key` under the origin as key name.
    pub fn sign(&self, key: &SigningKey) -> String {
        let body = self.body();
        let sig = key.sign(body.as_bytes());
        let mut blob = note_key_id(&self.origin, &key.verifying_key()).to_vec();
        blob.extend_from_slice(&sig.to_bytes());
        format!("{body}\n{EM_DASH} {} {}\n", self.origin, B64.encode(blob))
    }

    /// Parses a signed checkpoint for `origin` and verifies it with the first
    /// of `keys` whose name and key id match a signature line. Returns the
    /// checkpoint and the index in `keys` of the key that verified it.
    /// Signatures by unknown keys are ignored, as the signed-note spec says.
    pub fn verify(
        note: &str,
        origin: &str,
        keys: &[VerifyingKey],
    ) -> Result<(Checkpoint, usize), CheckpointError> {
        let (body, sigs) = split_note(note)?;
        let cp = parse_body(body)?;
        if cp.origin != origin {
            return Err(CheckpointError::WrongOrigin {
                expected: origin.into(),
                found: cp.origin,
            });
        }
        let ids: Vec<[u8; 4]> = keys.iter().map(|k| note_key_id(origin, k)).collect();
        for line in sigs.lines() {
            let rest = line
                .strip_prefix(EM_DASH)
                .and_then(|r| r.strip_prefix(' '))
                .ok_or(CheckpointError::Malformed("signature line"))?;
            let (name, b64) = rest
                .split_once(' ')
                .ok_or(CheckpointError::Malformed("signature line"))?;
            let blob = B64
                .decode(b64)
                .map_err(|_| CheckpointError::Malformed("signature encoding"))?;
            if name != origin || blob.len() < 4 {
                continue;
            }
            let Some(i) = ids.iter().position(|id| id[..] == blob[..4]) else {
                continue;
            };
            let bad = || CheckpointError::BadSignature(format!("{name}+{}", hex4(&ids[i])));
            let sig = Signature::from_slice(&blob[4..]).map_err(|_| bad())?;
            keys[i].verify(body.as_bytes(), &sig).map_err(|_| bad())?;
            return Ok((cp, i));
        }
        Err(CheckpointError::NoTrustedSignature)
    }
}

fn hex4(id: &[u8; 4]) -> String {
    crate::record::hex(id)
}

/// Splits a signed note into its text (final newline included) and its
/// signature lines.
fn split_note(note: &str) -> Result<(&str, &str), CheckpointError> {
    if note.bytes().any(|b| b < 0x20 && b != b'\n') {
        return Err(CheckpointError::Malformed("control character"));
    }
    let at = note
        .rfind("\n\n")
        .ok_or(CheckpointError::Malformed("no signature block"))?;
    let (body, sigs) = (&note[..=at], &note[at + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(CheckpointError::Malformed("signature block"));
    }
    Ok((body, sigs))
}

fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
    let mut lines = body.lines();
    let origin = lines.next().filter(|l| !l.is_empty());
    let size = lines.next();
    let root = lines.next();
    let (Some(origin), Some(size), Some(root)) = (origin, size, root) else {
        return Err(CheckpointError::Malformed(
            "body needs origin, size and root",
        ));
    };
    let size: u64 = match size.parse() {
        Ok(n) if !size.starts_with('+') && (size == "0" || !size.starts_with('0')) => n,
        _ => return Err(CheckpointError::Malformed("tree size")),
    };
    let root: Hash = B64
        .decode(root)
        .ok()
        .and_then(|r| r.try_into().ok())
        .ok_or(CheckpointError::Malformed("root hash"))?;
    Ok(Checkpoint {
        origin: origin.into(),
        size,
        root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example key and note of golang.org/x/mod/sumdb/note (the
    /// reference signed-note implementation): key name `PeterNeumann`, key id
    /// c74f20a3, and its published signature line.
    #[test]
    fn signed_note_known_answer() {
        let seed = B64
            .decode("AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz")
            .unwrap();
        let public = B64
            .decode("ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
            .unwrap();
        assert_eq!((seed[0], public[0]), (1, 1));
        let sk = SigningKey::from_bytes(&seed[1..].try_into().unwrap());
        assert_eq!(sk.verifying_key().as_bytes()[..], public[1..]);
        assert_eq!(
            note_key_id("PeterNeumann", &sk.verifying_key()),
            [0xc7, 0x4f, 0x20, 0xa3]
        );
        let text = "If you think cryptography is the answer to your problem,\n\
                    then you don't know what your problem is.\n";
        let mut blob = note_key_id("PeterNeumann", &sk.verifying_key()).to_vec();
        blob.extend_from_slice(&sk.sign(text.as_bytes()).to_bytes());
        assert_eq!(
            B64.encode(blob),
            "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
        );
    }

    #[test]
    fn sign_and_verify() {
        let sk = SigningKey::from_bytes(&[9; 32]);
        let other = SigningKey::from_bytes(&[10; 32]);
        let cp = Checkpoint {
            origin: "example.com/log".into(),
            size: 7,
            root: [3; 32],
        };
        let note = cp.sign(&sk);
        assert!(note.starts_with("example.com/log\n7\nAwMD"));
        assert!(note.contains("\n\n\u{2014} example.com/log "));
        let keys = [other.verifying_key(), sk.verifying_key()];
        assert_eq!(
            Checkpoint::verify(&note, "example.com/log", &keys).unwrap(),
            (cp.clone(), 1)
        );
        assert_eq!(
            Checkpoint::verify(&note, "example.com/log", &keys[..1]),
            Err(CheckpointError::NoTrustedSignature)
        );
        assert!(matches!(
            Checkpoint::verify(&note, "other", &keys),
            Err(CheckpointError::WrongOrigin { .. })
        ));
        let forged = note.replacen("\n7\n", "\n8\n", 1);
        assert!(matches!(
            Checkpoint::verify(&forged, "example.com/log", &keys),
            Err(CheckpointError::BadSignature(_))
        ));
        // An extra signature by an unknown key is ignored.
        let cosigned = format!("{note}{}", other_line(&cp));
        Checkpoint::verify(&cosigned, "example.com/log", &keys[1..]).unwrap();
    }

    fn other_line(cp: &Checkpoint) -> String {
        let s = cp.sign(&SigningKey::from_bytes(&[11; 32]));
        s[s.rfind("\n\n").unwrap() + 2..].to_string()
    }
}

//! Signing keys: the public keyring (ids, creation, status) and the private
//! key store behind it.
//!
//! A key's *validity window* is a range of log positions: it opens after the
//! log entry that created it and closes at the entry that retired (rotated
//! out) or revoked it. An attestation signed by a key is accepted only if its
//! log index lies inside that window; a checkpoint signed by it only if its
//! tree size does (it covers the creation entry and not the closing one) and
//! the key is not revoked.

pub(crate) mod store;

use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::canonical;
use crate::record::{hex, is_hex, unhex};
use crate::timestamp::Timestamp;

pub use store::KeyStore;

/// Format version of the keyring file.
pub const KEYRING_VERSION: u32 = 1;

/// The securesystemslib default keyid of an Ed25519 public key: hex SHA-256
/// of the canonical JSON of
/// `{"keytype":"ed25519","keyval":{"public":HEX},"scheme":"ed25519"}`.
pub fn keyid(public: &VerifyingKey) -> String {
    let doc = serde_json::json!({
        "keytype": "ed25519",
        "keyval": {"public": hex(public.as_bytes())},
        "scheme": "ed25519",
    });
    let bytes = canonical::to_vec(&doc).expect("key document serializes");
    hex(&Sha256::digest(bytes))
}

/// Where a key stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    /// Signs new attestations and checkpoints. Exactly one key is active.
    Active,
    /// Rotated out: still verifies what it signed before its retirement.
    Retired,
    /// Revoked: verifies only what it signed before its revocation.
    Revoked,
}

/// The public half of a key record: securesystemslib's `keyval`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyVal {
    /// Lowercase hex of the 32-byte Ed25519 public key.
    pub public: String,
}

/// One key in the keyring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeyRecord {
    /// securesystemslib keyid (see [`keyid`]).
    pub keyid: String,
    /// Always `ed25519`.
    pub keytype: String,
    /// Always `ed25519`.
    pub scheme: String,
    /// The public key.
    pub keyval: KeyVal,
    /// When the key was generated.
    pub created: Timestamp,
    /// Log index of the entry that introduced the key (`None` until logged).
    pub created_log_index: Option<u64>,
    /// Current status.
    pub status: KeyStatus,
    /// When it was rotated out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired: Option<Timestamp>,
    /// Log index of the rotation entry that retired it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_log_index: Option<u64>,
    /// When it was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Timestamp>,
    /// Log index of the revocation entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_log_index: Option<u64>,
}

impl KeyRecord {
    /// A new, not yet logged, active record for `public`.
    pub fn new(public: &VerifyingKey, created: Timestamp) -> Self {
        Self {
            keyid: keyid(public),
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: KeyVal {
                public: hex(public.as_bytes()),
            },
            created,
            created_log_index: None,
            status: KeyStatus::Active,
            retired: None,
            retired_log_index: None,
            revoked: None,
            revoked_log_index: None,
        }
    }

    /// The decoded public key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, KeyError> {
        let bad = || KeyError::Malformed(self.keyid.clone());
        let raw: [u8; 32] = unhex(&self.keyval.public)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?;
        VerifyingKey::from_bytes(&raw).map_err(|_| bad())
    }

    /// The first log position after the window closes, if it has closed.
    fn window_end(&self) -> Option<u64> {
        match (self.retired_log_index, self.revoked_log_index) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Checks that an entry at `index` may carry this key's signature.
    pub fn check_entry(&self, index: u64) -> Result<(), KeyError> {
        let created = self
            .created_log_index
            .ok_or_else(|| KeyError::NotLogged(self.keyid.clone()))?;
        if index <= created {
            return Err(KeyError::NotYetValid {
                keyid: self.keyid.clone(),
                created_index: created,
                index,
            });
        }
        self.check_end(index + 1)
    }

    /// Checks that a checkpoint of `size` entries may carry this key's
    /// signature. A revoked key's checkpoints are refused whatever their
    /// size: whoever holds a compromised key could sign a checkpoint of a
    /// forged tree of any size below the revocation. (A bundle whose
    /// checkpoint was signed by a since-revoked key is refreshed from the
    /// daemon, whose current checkpoint is signed by its active key.)
    pub fn check_checkpoint(&self, size: u64) -> Result<(), KeyError> {
        if let Some(revoked_index) = self.revoked_log_index {
            return Err(KeyError::Revoked {
                keyid: self.keyid.clone(),
                revoked_index,
            });
        }
        let created = self
            .created_log_index
            .ok_or_else(|| KeyError::NotLogged(self.keyid.clone()))?;
        if size <= created {
            return Err(KeyError::NotYetValid {
                keyid: self.keyid.clone(),
                created_index: created,
                index: size,
            });
        }
        self.check_end(size)
    }

    /// `size` = number of entries the signed object covers.
    fn check_end(&self, size: u64) -> Result<(), KeyError> {
        match self.window_end() {
            Some(end) if size > end => Err(if self.revoked_log_index == Some(end) {
                KeyError::Revoked {
                    keyid: self.keyid.clone(),
                    revoked_index: end,
                }
            } else {
                KeyError::Retired {
                    keyid: self.keyid.clone(),
                    retired_index: end,
                }
            }),
            _ => Ok(()),
        }
    }
}

/// A key event: what rotations and revocations write to the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum KeyEvent {
    /// The first key of a new log.
    #[serde(rename_all = "camelCase")]
    Created {
        /// keyid of the new key.
        keyid: String,
        /// Hex public key.
        public: String,
        /// Generation time.
        created: Timestamp,
    },
    /// A new active key replacing `previous`.
    #[serde(rename_all = "camelCase")]
    Rotated {
        /// keyid of the new key.
        keyid: String,
        /// Hex public key.
        public: String,
        /// Generation time.
        created: Timestamp,
        /// keyid of the key retired by this rotation.
        previous: String,
    },
    /// A key revoked.
    #[serde(rename_all = "camelCase")]
    Revoked {
        /// keyid of the revoked key.
        keyid: String,
        /// Revocation time.
        revoked: Timestamp,
    },
}

/// Errors about keys and the keyring.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// No key with this id in the keyring.
    #[error("key {0} is not in the keyring")]
    Unknown(String),
    /// The key's record is malformed.
    #[error("key {0} has a malformed public key")]
    Malformed(String),
    /// The key was never recorded in the log.
    #[error("key {0} was never recorded in the log")]
    NotLogged(String),
    /// The key signed something placed before its own creation.
    #[error("key {keyid} was created at log index {created_index}, after position {index}")]
    NotYetValid {
        /// The key.
        keyid: String,
        /// Log index of its creation entry.
        created_index: u64,
        /// The position checked.
        index: u64,
    },
    /// The key was revoked before the position checked.
    #[error("key {keyid} was revoked at log index {revoked_index}")]
    Revoked {
        /// The key.
        keyid: String,
        /// Log index of its revocation.
        revoked_index: u64,
    },
    /// The key was retired before the position checked.
    #[error("key {keyid} was retired at log index {retired_index}")]
    Retired {
        /// The key.
        keyid: String,
        /// Log index of the rotation that retired it.
        retired_index: u64,
    },
    /// The keyring is inconsistent.
    #[error("invalid keyring: {0}")]
    Invalid(String),
    /// A key event does not apply to the keyring.
    #[error("key event does not apply: {0}")]
    BadEvent(String),
}

/// The public keyring: what `hermetic keys export` writes and what offline
/// verification trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Keyring {
    /// Always [`KEYRING_VERSION`].
    pub version: u32,
    /// The transparency log's origin line, also the key name its checkpoints
    /// are signed under.
    pub origin: String,
    /// Every key, in creation order.
    pub keys: Vec<KeyRecord>,
}

impl Keyring {
    /// Parses and checks a keyring file.
    pub fn from_json(data: &[u8]) -> Result<Self, KeyError> {
        let k: Keyring =
            serde_json::from_slice(data).map_err(|e| KeyError::Invalid(e.to_string()))?;
        k.validate()?;
        Ok(k)
    }

    /// The keyring as pretty JSON (keys sorted), newline-terminated.
    pub fn to_json(&self) -> Vec<u8> {
        let v = serde_json::to_value(self).expect("keyring serializes");
        let mut out = serde_json::to_vec_pretty(&v).expect("keyring serializes");
        out.push(b'\n');
        out
    }

    /// Checks ids, key encodings and status fields.
    pub fn validate(&self) -> Result<(), KeyError> {
        let bad = |m: String| Err(KeyError::Invalid(m));
        if self.version != KEYRING_VERSION {
            return bad(format!("unsupported version {}", self.version));
        }
        let mut active = 0;
        for k in &self.keys {
            if k.keytype != "ed25519" || k.scheme != "ed25519" {
                return bad(format!("key {} is not ed25519", k.keyid));
            }
            if !is_hex(&k.keyid, 64) || keyid(&k.verifying_key()?) != k.keyid {
                return bad(format!("key {} does not match its public key", k.keyid));
            }
            let consistent = match k.status {
                KeyStatus::Active => k.revoked_log_index.is_none() && k.retired_log_index.is_none(),
                KeyStatus::Retired => {
                    k.retired_log_index.is_some() && k.revoked_log_index.is_none()
                }
                KeyStatus::Revoked => k.revoked_log_index.is_some(),
            };
            if !consistent {
                return bad(format!(
                    "key {} has a status that contradicts its fields",
                    k.keyid
                ));
            }
            active += usize::from(k.status == KeyStatus::Active);
        }
        if active > 1 {
            return bad("more than one active key".into());
        }
        Ok(())
    }

    /// The key with `keyid`.
    pub fn get(&self, keyid: &str) -> Result<&KeyRecord, KeyError> {
        self.keys
            .iter()
            .find(|k| k.keyid == keyid)
            .ok_or_else(|| KeyError::Unknown(keyid.into()))
    }

    /// The active key, if any.
    pub fn active(&self) -> Option<&KeyRecord> {
        self.keys.iter().find(|k| k.status == KeyStatus::Active)
    }

    fn get_mut(&mut self, keyid: &str) -> Result<&mut KeyRecord, KeyError> {
        self.keys
            .iter_mut()
            .find(|k| k.keyid == keyid)
            .ok_or_else(|| KeyError::Unknown(keyid.into()))
    }

    /// Whether the event at `index` is already reflected here.
    pub fn reflects(&self, event: &KeyEvent, index: u64) -> bool {
        match event {
            KeyEvent::Created { keyid, .. } | KeyEvent::Rotated { keyid, .. } => self
                .get(keyid)
                .is_ok_and(|k| k.created_log_index == Some(index)),
            KeyEvent::Revoked { keyid, .. } => self
                .get(keyid)
                .is_ok_and(|k| k.revoked_log_index == Some(index)),
        }
    }

    /// Applies a key event that the log holds at `index`.
    pub fn apply(&mut self, event: &KeyEvent, index: u64) -> Result<(), KeyError> {
        match event {
            KeyEvent::Created {
                keyid,
                public,
                created,
            } => {
                self.introduce(keyid, public, *created, index)?;
            }
            KeyEvent::Rotated {
                keyid,
                public,
                created,
                previous,
            } => {
                let prev = self.get_mut(previous)?;
                if prev.status == KeyStatus::Active {
                    prev.status = KeyStatus::Retired;
                }
                prev.retired.get_or_insert(*created);
                prev.retired_log_index.get_or_insert(index);
                self.introduce(keyid, public, *created, index)?;
            }
            KeyEvent::Revoked { keyid, revoked } => {
                let k = self.get_mut(keyid)?;
                k.status = KeyStatus::Revoked;
                k.revoked = Some(*revoked);
                k.revoked_log_index = Some(index);
            }
        }
        self.validate()
    }

    fn introduce(
        &mut self,
        id: &str,
        public: &str,
        created: Timestamp,
        index: u64,
    ) -> Result<(), KeyError> {
        if let Ok(k) = self.get_mut(id) {
            if k.keyval.public != public {
                return Err(KeyError::BadEvent(format!(
                    "key {id} logged with another public key"
                )));
            }
            k.created_log_index = Some(index);
            return Ok(());
        }
        let raw: [u8; 32] = unhex(public)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| KeyError::Malformed(id.into()))?;
        let vk = VerifyingKey::from_bytes(&raw).map_err(|_| KeyError::Malformed(id.into()))?;
        let mut rec = KeyRecord::new(&vk, created);
        if rec.keyid != id {
            return Err(KeyError::BadEvent(format!(
                "key {id} does not match its public key"
            )));
        }
        rec.created_log_index = Some(index);
        for other in &mut self.keys {
            if other.status == KeyStatus::Active {
                return Err(KeyError::BadEvent(format!(
                    "key {id} introduced while {} is active",
                    other.keyid
                )));
            }
        }
        self.keys.push(rec);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn keyid_known_answer() {
        // Cross-checked with securesystemslib's compute_default_keyid
        // (tests/third_party.rs repeats the check against the library).
        let vk = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let doc = format!(
            r#"{{"keytype":"ed25519","keyval":{{"public":"{}"}},"scheme":"ed25519"}}"#,
            hex(vk.as_bytes())
        );
        assert_eq!(keyid(&vk), hex(&Sha256::digest(doc.as_bytes())));
    }

    fn ring() -> (Keyring, String, String) {
        let a = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let b = SigningKey::from_bytes(&[2; 32]).verifying_key();
        let t = Timestamp::from_unix(1);
        let mut r = Keyring {
            version: 1,
            origin: "o".into(),
            keys: vec![],
        };
        r.apply(
            &KeyEvent::Created {
                keyid: keyid(&a),
                public: hex(a.as_bytes()),
                created: t,
            },
            0,
        )
        .unwrap();
        r.apply(
            &KeyEvent::Rotated {
                keyid: keyid(&b),
                public: hex(b.as_bytes()),
                created: t,
                previous: keyid(&a),
            },
            5,
        )
        .unwrap();
        (r, keyid(&a), keyid(&b))
    }

    #[test]
    fn windows_follow_events() {
        let (mut r, a, b) = ring();
        let ka = r.get(&a).unwrap();
        assert_eq!(ka.status, KeyStatus::Retired);
        ka.check_entry(4).unwrap();
        assert!(matches!(ka.check_entry(5), Err(KeyError::Retired { .. })));
        assert!(matches!(
            ka.check_entry(0),
            Err(KeyError::NotYetValid { .. })
        ));
        ka.check_checkpoint(5).unwrap();
        assert!(ka.check_checkpoint(6).is_err());
        r.get(&b).unwrap().check_entry(100).unwrap();
        r.apply(
            &KeyEvent::Revoked {
                keyid: b.clone(),
                revoked: Timestamp::from_unix(2),
            },
            9,
        )
        .unwrap();
        let kb = r.get(&b).unwrap();
        kb.check_entry(8).unwrap();
        assert!(matches!(
            kb.check_checkpoint(8),
            Err(KeyError::Revoked { .. })
        ));
        assert_eq!(
            kb.check_entry(9),
            Err(KeyError::Revoked {
                keyid: b.clone(),
                revoked_index: 9
            })
        );
        let round = Keyring::from_json(&r.to_json()).unwrap();
        assert_eq!(round, r);
    }

    #[test]
    fn rejects_second_active_key_and_mismatched_ids() {
        let (mut r, a, _) = ring();
        let c = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let ev = KeyEvent::Created {
            keyid: keyid(&c),
            public: hex(c.as_bytes()),
            created: Timestamp::from_unix(3),
        };
        assert!(matches!(r.apply(&ev, 10), Err(KeyError::BadEvent(_))));
        let mut bad = r.clone();
        bad.keys[0].keyid = a.replace('a', "b").replace('0', "1");
        assert!(bad.validate().is_err());
    }
}

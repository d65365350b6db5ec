//! The daemon's one handle on attestation: keys, log and signing together.
//!
//! Every operation that changes state appends to the log (fsynced), then
//! signs and stores a new checkpoint, and only then returns; the returned
//! proof and checkpoint cover the new entry.

use std::path::Path;

use serde_json::Value;

use crate::bundle::{Bundle, LogProof};
use crate::canonical;
use crate::dsse::Envelope;
use crate::keys::store::StoreError;
use crate::keys::{KeyError, KeyEvent, KeyStatus, KeyStore, Keyring};
use crate::provenance::{self, PAYLOAD_TYPE};
use crate::record::{ExecutionRecord, RecordError};
use crate::tlog::{Log, LogEntry, LogError, OpenReport};

/// Errors of the [`Attestor`].
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The record cannot be attested.
    #[error("cannot attest: {0}")]
    Record(#[from] RecordError),
    /// Key store failure.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Key validity failure.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Log failure (including a log that disagrees with its checkpoint).
    #[error(transparent)]
    Log(#[from] LogError),
    /// A key event in the log does not parse.
    #[error("transparency log entry {0} is not a valid entry: {1}")]
    BadEntry(u64, String),
    /// There is no active signing key.
    #[error("no active signing key")]
    NoActiveKey,
    /// A statement given to [`Attestor::attest_statement`] is not one.
    #[error("not an in-toto Statement v1 with subjects and a predicate: {0}")]
    NotAStatement(String),
    /// The log has no signed checkpoint yet.
    #[error("the transparency log has no signed checkpoint yet")]
    NoCheckpoint,
}

/// Keys + log + signing, rooted in one state directory:
/// `<state>/keys/` (keyring.json, `<keyid>.key` 0600) and `<state>/log/`.
/// One process per state directory: nothing locks it against a second.
#[derive(Debug)]
pub struct Attestor {
    keys: KeyStore,
    log: Log,
}

impl Attestor {
    /// Opens the state in `state_dir` for the log named `origin` (a
    /// schema-less URL such as `hermetic.example.com/log`), creating keys and
    /// log on first use. Refuses a log that disagrees with its last signed
    /// checkpoint or whose checkpoint was signed outside its key's window.
    pub fn open(state_dir: &Path, origin: &str) -> Result<(Self, OpenReport), AttestError> {
        let mut keys = KeyStore::open(&state_dir.join("keys"), origin)?;
        let verifiers = keys
            .keyring()
            .keys
            .iter()
            .map(|k| k.verifying_key())
            .collect::<Result<Vec<_>, _>>()?;
        let (log, report) = Log::open(&state_dir.join("log"), origin, &verifiers)?;
        // The log is the source of truth for key events: replay any the
        // keyring missed (a crash between append and keyring update).
        for i in 0..log.size() {
            let data = log.entry(i)?;
            if !data.starts_with(br#"{"event":"#) {
                continue;
            }
            match LogEntry::parse(&data) {
                Ok(LogEntry::Key { event }) => keys.replay(&event, i)?,
                Ok(_) => {}
                Err(e) => return Err(AttestError::BadEntry(i, e.to_string())),
            }
        }
        keys.reload()?;
        if let Some(i) = log.opened_checkpoint_signer() {
            keys.keyring().keys[i].check_checkpoint(log.checkpoint_size())?;
        }
        let mut me = Self { keys, log };
        if me.keys.active().is_none() {
            let pending = me.keys.generate()?;
            let event = KeyEvent::Created {
                keyid: pending.keyid,
                public: pending.public,
                created: pending.created,
            };
            me.append_key_event(&event)?;
        } else if report.unsigned_entries > 0 || me.log.checkpoint().is_none() {
            me.sign()?;
        }
        Ok((me, report))
    }

    fn sign(&mut self) -> Result<String, AttestError> {
        let (_, key) = self.keys.active().ok_or(AttestError::NoActiveKey)?;
        Ok(self.log.sign_checkpoint(key)?)
    }

    fn append(&mut self, entry: &LogEntry) -> Result<LogProof, AttestError> {
        let index = self.log.append(&entry.leaf_data())?;
        if let LogEntry::Key { event } = entry {
            self.keys.apply(event, index)?;
        }
        let note = self.sign()?;
        let size = self.log.size();
        let proof = self.log.inclusion_proof(index, size)?;
        Ok(LogProof::new(index, size, &proof, note))
    }

    fn append_key_event(&mut self, event: &KeyEvent) -> Result<LogProof, AttestError> {
        self.append(&LogEntry::Key {
            event: event.clone(),
        })
    }

    /// Builds, signs and logs the provenance of `record`; the bundle is what
    /// the client writes beside the outputs.
    pub fn attest(&mut self, record: &ExecutionRecord) -> Result<Bundle, AttestError> {
        let statement = provenance::statement(record)?;
        let payload = canonical::to_vec(&statement).expect("statement serializes");
        let (keyid, key) = self.keys.active().ok_or(AttestError::NoActiveKey)?;
        let envelope = Envelope::sign(PAYLOAD_TYPE, &payload, keyid, key);
        let proof = self.append(&LogEntry::Attestation {
            envelope: envelope.clone(),
        })?;
        Ok(Bundle::new(envelope, proof))
    }

    /// Signs and logs an in-toto Statement v1 of another predicate type
    /// than provenance (a reproducibility report, say), exactly as
    /// [`Attestor::attest`] does provenance. The statement must have
    /// `_type`, a non-empty `subject` list, `predicateType` and
    /// `predicate`.
    pub fn attest_statement(
        &mut self,
        statement: &serde_json::Value,
    ) -> Result<Bundle, AttestError> {
        let bad = |why: &str| Err(AttestError::NotAStatement(why.to_owned()));
        if statement["_type"] != provenance::STATEMENT_TYPE {
            return bad("_type is not https://in-toto.io/Statement/v1");
        }
        if statement["subject"].as_array().is_none_or(Vec::is_empty) {
            return bad("no subjects");
        }
        if !statement["predicateType"].is_string() || statement["predicate"].is_null() {
            return bad("no predicateType or predicate");
        }
        let payload =
            canonical::to_vec(statement).map_err(|e| AttestError::NotAStatement(e.to_string()))?;
        let (keyid, key) = self.keys.active().ok_or(AttestError::NoActiveKey)?;
        let envelope = Envelope::sign(PAYLOAD_TYPE, &payload, keyid, key);
        let proof = self.append(&LogEntry::Attestation {
            envelope: envelope.clone(),
        })?;
        Ok(Bundle::new(envelope, proof))
    }

    /// A fresh bundle for the attestation at `index` against the current
    /// checkpoint (for a cache hit, which points to the original).
    pub fn bundle_for(&self, index: u64) -> Result<Bundle, AttestError> {
        let data = self.log.entry(index)?;
        let Ok(LogEntry::Attestation { envelope }) = LogEntry::parse(&data) else {
            return Err(AttestError::BadEntry(index, "not an attestation".into()));
        };
        Ok(Bundle::new(envelope, self.proof(index)?))
    }

    /// The inclusion proof of entry `index` against the latest checkpoint.
    pub fn proof(&self, index: u64) -> Result<LogProof, AttestError> {
        let size = self.log.checkpoint_size();
        let note = self
            .log
            .checkpoint()
            .ok_or(AttestError::NoActiveKey)?
            .to_string();
        let proof = self.log.inclusion_proof(index, size)?;
        Ok(LogProof::new(index, size, &proof, note))
    }

    /// Logs an image trust record (any JSON, canonicalized).
    pub fn log_image_trust(&mut self, record: &Value) -> Result<LogProof, AttestError> {
        self.append(&LogEntry::ImageTrust {
            record: record.clone(),
        })
    }

    /// Logs an administrative action by `principal` (`details`: any JSON,
    /// canonicalized).
    pub fn log_admin(
        &mut self,
        action: &str,
        principal: &str,
        details: &Value,
    ) -> Result<LogProof, AttestError> {
        self.append(&LogEntry::Admin {
            action: action.into(),
            principal: principal.into(),
            time: crate::Timestamp::now(),
            details: details.clone(),
        })
    }

    /// Makes a new active key; the old one is retired and still verifies
    /// what it signed. Returns the new keyid.
    pub fn rotate(&mut self) -> Result<String, AttestError> {
        let previous = self
            .keys
            .active()
            .ok_or(AttestError::NoActiveKey)?
            .0
            .to_string();
        let pending = self.keys.generate()?;
        let keyid = pending.keyid.clone();
        let event = KeyEvent::Rotated {
            keyid: pending.keyid,
            public: pending.public,
            created: pending.created,
            previous,
        };
        self.append_key_event(&event)?;
        Ok(keyid)
    }

    /// Revokes `keyid` (rotating first if it is the active key). What it
    /// signed before the revocation entry stays verifiable; nothing after.
    pub fn revoke(&mut self, keyid: &str) -> Result<LogProof, AttestError> {
        let status = self.keys.keyring().get(keyid)?.status;
        if status == KeyStatus::Revoked {
            return Err(KeyError::Revoked {
                keyid: keyid.into(),
                revoked_index: self
                    .keys
                    .keyring()
                    .get(keyid)?
                    .revoked_log_index
                    .unwrap_or(0),
            }
            .into());
        }
        if status == KeyStatus::Active {
            self.rotate()?;
        }
        let event = KeyEvent::Revoked {
            keyid: keyid.into(),
            revoked: crate::Timestamp::now(),
        };
        self.append_key_event(&event)
    }

    /// The public keyring (`hermetic keys export` writes `to_json()` of it).
    pub fn keyring(&self) -> &Keyring {
        self.keys.keyring()
    }

    /// The latest signed checkpoint.
    pub fn checkpoint(&self) -> &str {
        self.log.checkpoint().unwrap_or_default()
    }

    /// The log, for proofs between any sizes and for reading entries.
    pub fn log(&self) -> &Log {
        &self.log
    }
}

//! The key store: `keyring.json` (public) and one private key file per key,
//! `<keyid>.key`, in a 0700 directory inside the daemon's state dir.
//!
//! Private key files are created with `O_CREAT|O_EXCL` and mode 0600 in one
//! `open` and never rewritten. A new key enters the keyring only once its
//! creation has been appended to the log (the caller does that and then
//! calls [`KeyStore::apply`]), so the keyring never names a key the log
//! does not know.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use super::{KEYRING_VERSION, KeyError, KeyEvent, KeyStatus, KeyVal, Keyring, keyid};
use crate::fsutil;
use crate::record::{hex, unhex};
use crate::timestamp::Timestamp;

const KEYRING_FILE: &str = "keyring.json";

/// Errors of the key store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("key store: failed to {what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The keyring or a key is invalid.
    #[error("key store: {0}")]
    Key(#[from] KeyError),
    /// A private key file is malformed or does not match the keyring.
    #[error("key store: private key file {0} is malformed or does not match its keyid")]
    BadPrivateKey(PathBuf),
    /// The keyring belongs to another log.
    #[error("key store: keyring is for log {found:?}, not {expected:?}")]
    OriginMismatch {
        /// The configured origin.
        expected: String,
        /// The keyring's origin.
        found: String,
    },
    /// Entropy for a new key could not be had.
    #[error("key store: no randomness for a new key: {0}")]
    Random(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateFile {
    keyid: String,
    keytype: String,
    scheme: String,
    keyval: PrivateVal,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateVal {
    public: String,
    private: String,
}

/// A freshly generated key whose creation is not yet in the log.
#[derive(Debug)]
pub struct PendingKey {
    /// Its keyid.
    pub keyid: String,
    /// Its public key, hex.
    pub public: String,
    /// Generation time.
    pub created: Timestamp,
}

/// The keyring plus access to the active private key.
#[derive(Debug)]
pub struct KeyStore {
    dir: PathBuf,
    keyring: Keyring,
    active: Option<SigningKey>,
}

impl KeyStore {
    /// Opens (or creates) the store in `dir` for the log named `origin`.
    pub fn open(dir: &Path, origin: &str) -> Result<Self, StoreError> {
        fsutil::create_private_dir(dir).map_err(io_err("create", dir))?;
        let path = dir.join(KEYRING_FILE);
        let keyring = match fs::read(&path) {
            Ok(data) => Keyring::from_json(&data)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let k = Keyring {
                    version: KEYRING_VERSION,
                    origin: origin.into(),
                    keys: vec![],
                };
                fsutil::write_new(&path, &k.to_json(), 0o644).map_err(io_err("create", &path))?;
                k
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        if keyring.origin != origin {
            return Err(StoreError::OriginMismatch {
                expected: origin.into(),
                found: keyring.origin,
            });
        }
        let mut store = Self {
            dir: dir.to_path_buf(),
            keyring,
            active: None,
        };
        store.load_active()?;
        Ok(store)
    }

    /// The public keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The active key and its id, if there is one.
    pub fn active(&self) -> Option<(&str, &SigningKey)> {
        let rec = self.keyring.active()?;
        Some((rec.keyid.as_str(), self.active.as_ref()?))
    }

    /// Generates a key and stores its private half (0600, `O_EXCL`). The key
    /// is not in the keyring until its event is logged and [`Self::apply`]d.
    pub fn generate(&self) -> Result<PendingKey, StoreError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| StoreError::Random(e.to_string()))?;
        let sk = SigningKey::from_bytes(&seed);
        let vk = sk.verifying_key();
        let id = keyid(&vk);
        let file = PrivateFile {
            keyid: id.clone(),
            keytype: "ed25519".into(),
            scheme: "ed25519".into(),
            keyval: PrivateVal {
                public: hex(vk.as_bytes()),
                private: hex(&seed),
            },
        };
        let mut data = serde_json::to_vec_pretty(&file).expect("key file serializes");
        data.push(b'\n');
        let path = self.private_path(&id);
        fsutil::write_new(&path, &data, 0o600).map_err(io_err("create", &path))?;
        Ok(PendingKey {
            keyid: id,
            public: hex(vk.as_bytes()),
            created: Timestamp::now(),
        })
    }

    /// Records a key event that the log now holds at `index`, saves the
    /// keyring, and switches the signing key if the event made a new one
    /// active. A revoked key's private file is removed.
    pub fn apply(&mut self, event: &KeyEvent, index: u64) -> Result<(), StoreError> {
        self.replay(event, index)?;
        self.load_active()
    }

    /// Like [`Self::apply`] but without loading the signing key, for
    /// replaying a history whose intermediate active keys may have been
    /// revoked (and their private files removed) since. Call
    /// [`Self::reload`] after the last event.
    pub fn replay(&mut self, event: &KeyEvent, index: u64) -> Result<(), StoreError> {
        if self.keyring.reflects(event, index) {
            return Ok(());
        }
        let mut next = self.keyring.clone();
        next.apply(event, index)?;
        let path = self.dir.join(KEYRING_FILE);
        fsutil::replace_atomic(&path, &next.to_json(), 0o644).map_err(io_err("write", &path))?;
        self.keyring = next;
        self.active = None;
        if let KeyEvent::Revoked { keyid, .. } = event {
            let p = self.private_path(keyid);
            match fs::remove_file(&p) {
                Ok(()) => fsutil::sync_dir(&self.dir).map_err(io_err("sync", &self.dir))?,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p)(e)),
            }
        }
        Ok(())
    }

    /// Whether `keyid` is a known key that is not revoked.
    pub fn is_usable(&self, keyid: &str) -> bool {
        self.keyring
            .get(keyid)
            .is_ok_and(|k| k.status != KeyStatus::Revoked)
    }

    fn private_path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.key"))
    }

    /// Loads the active key's private half after [`Self::replay`].
    pub fn reload(&mut self) -> Result<(), StoreError> {
        self.load_active()
    }

    fn load_active(&mut self) -> Result<(), StoreError> {
        let Some(rec) = self.keyring.active() else {
            self.active = None;
            return Ok(());
        };
        let path = self.private_path(&rec.keyid);
        let data = fs::read(&path).map_err(io_err("read", &path))?;
        let bad = || StoreError::BadPrivateKey(path.clone());
        let file: PrivateFile = serde_json::from_slice(&data).map_err(|_| bad())?;
        let seed: [u8; 32] = unhex(&file.keyval.private)
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        let sk = SigningKey::from_bytes(&seed);
        let expected = KeyVal {
            public: hex(sk.verifying_key().as_bytes()),
        };
        if file.keyid != rec.keyid || rec.keyval != expected {
            return Err(bad());
        }
        self.active = Some(sk);
        Ok(())
    }
}

//! Admin pins: artifacts kept against garbage collection, with a note and
//! who pinned them, in `<state>/gc/pins.json` (temp file, fsync, rename).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};

/// What a pin's digest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PinKind {
    /// One blob.
    Blob,
    /// A REAPI Directory and everything below it.
    Directory,
    /// A REAPI Tree and every file in it.
    Tree,
    /// An action: Action, Command, input root, cached result and what it
    /// references.
    Action,
}

/// One pin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// The REAPI instance name (action pins look the result up there).
    pub instance: String,
    /// `sha256` or `blake3`.
    pub function: String,
    /// Lowercase hex hash.
    pub hash: String,
    /// Size in bytes.
    pub size: u64,
    /// What the digest names.
    pub kind: PinKind,
    /// Free text.
    pub note: String,
    /// Who pinned it.
    pub principal: String,
    /// When, seconds since the Unix epoch.
    pub created: u64,
}

impl Pin {
    /// The pinned digest.
    pub fn key(&self) -> Result<BlobKey> {
        let f = function_named(&self.function)?;
        BlobKey::parse(f, &self.hash, self.size as i64)
    }

    /// Whether this pin is for `key` in `instance`.
    pub fn is_for(&self, instance: &str, key: &BlobKey) -> bool {
        self.instance == instance
            && self.function == key.function.name()
            && self.hash == key.hex()
            && self.size == key.size
    }
}

/// A digest function by its name.
pub fn function_named(name: &str) -> Result<DigestFunction> {
    DigestFunction::ALL
        .into_iter()
        .find(|f| f.name() == name)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown digest function {name:?}")))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsFile {
    version: u32,
    pins: Vec<Pin>,
}

/// The pins, on disk and in memory.
#[derive(Debug)]
pub struct PinStore {
    path: PathBuf,
    pins: Vec<Pin>,
}

impl PinStore {
    /// Opens `<state_dir>/gc/pins.json` (none yet: no pins).
    pub fn open(state_dir: &Path) -> Result<Self> {
        let dir = state_dir.join("gc");
        fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
        let path = dir.join("pins.json");
        let pins = match fs::read(&path) {
            Ok(data) => {
                let f: PinsFile = serde_json::from_slice(&data).map_err(|e| {
                    Error::FailedPrecondition(format!("{} is not a pins file: {e}", path.display()))
                })?;
                for p in &f.pins {
                    p.key().map_err(|e| {
                        Error::FailedPrecondition(format!("{}: bad pin: {e}", path.display()))
                    })?;
                }
                f.pins
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io("read", &path)(e)),
        };
        Ok(PinStore { path, pins })
    }

    /// Every pin.
    pub fn list(&self) -> &[Pin] {
        &self.pins
    }

    /// Adds a pin, replacing one for the same digest and instance.
    pub fn add(&mut self, pin: Pin) -> Result<()> {
        let key = pin.key()?;
        let mut next = self.pins.clone();
        next.retain(|p| !p.is_for(&pin.instance, &key));
        next.push(pin);
        self.save(next)
    }

    /// Removes the pin of `key` in `instance`, returning it.
    pub fn remove(&mut self, instance: &str, key: &BlobKey) -> Result<Option<Pin>> {
        let Some(i) = self.pins.iter().position(|p| p.is_for(instance, key)) else {
            return Ok(None);
        };
        let mut next = self.pins.clone();
        let removed = next.remove(i);
        self.save(next)?;
        Ok(Some(removed))
    }

    fn save(&mut self, pins: Vec<Pin>) -> Result<()> {
        let file = PinsFile { version: 1, pins };
        let mut data = serde_json::to_vec_pretty(&file).expect("pins serialize");
        data.push(b'\n');
        let tmp = self.path.with_extension("json.tmp");
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent() {
                File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(Error::io("write", &self.path))?;
        self.pins = file.pins;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::key_of;

    #[test]
    fn pins_survive_reopening_and_replace_by_digest() {
        let dir = tempfile::tempdir().unwrap();
        let key = key_of(DigestFunction::Blake3, b"release");
        let pin = |note: &str| Pin {
            instance: String::new(),
            function: key.function.name().into(),
            hash: key.hex(),
            size: key.size,
            kind: PinKind::Blob,
            note: note.into(),
            principal: "unix:uid=0".into(),
            created: 1,
        };
        let mut store = PinStore::open(dir.path()).unwrap();
        store.add(pin("v1")).unwrap();
        store.add(pin("v1.0.1")).unwrap();
        let mut store = PinStore::open(dir.path()).unwrap();
        assert_eq!(store.list(), &[pin("v1.0.1")]);
        assert!(store.remove("other", &key).unwrap().is_none());
        assert_eq!(store.remove("", &key).unwrap(), Some(pin("v1.0.1")));
        assert!(PinStore::open(dir.path()).unwrap().list().is_empty());
    }
}

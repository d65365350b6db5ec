//! Daemonless execution: the daemon's own engine, store and action cache in
//! the caller's process, on a state directory of its own, with no socket.
//!
//! `hermetic run --local` uses this so that a developer reproducing a build
//! gets the same staging, the same sandbox helper and the same output
//! ingestion as through `hermeticd` — one implementation, hence the same
//! action digest and the same output digests. The caller uploads blobs,
//! executes an action and follows its operation exactly as a gRPC client
//! would (the operation stream carries the same
//! `google.longrunning.Operation` values), then reads the outputs back.
//!
//! Images come from the daemon's image store (its `image_store`, by default
//! `images` in the daemon's state directory), so a local run pins the same
//! image digests as the daemon and gives the same action digest.
//!
//! The state directory must not be a running daemon's: opening it clears
//! per-action work directories. [`Local::open`] takes an exclusive lock on
//! it (`local.lock`), so concurrent local runs queue rather than collide.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use std::pin::Pin;

use bazel_remote_apis::build::bazel::remote::execution::v2::ActionResult;
use bazel_remote_apis::google::longrunning::Operation as LroOperation;
use nix::fcntl::{Flock, FlockArg};
use tokio_stream::Stream;
use tonic::Status;

use crate::config::Config;
use crate::digest::BlobKey;
use crate::error::{Error, Result};
use crate::exec::engine::ExecuteParams;
use crate::server::Daemon;
use crate::service::ac_service::Inline;
use crate::service::execution_service::follow;

/// An operation's states until it is done, as an Execute stream carries them.
pub type OpStream = Pin<Box<dyn Stream<Item = std::result::Result<LroOperation, Status>> + Send>>;

/// Copy buffer size for file uploads.
const CHUNK: usize = 1 << 20;

/// An open local executor.
#[derive(Debug)]
pub struct Local {
    daemon: Daemon,
    state_dir: PathBuf,
    _lock: Flock<File>,
}

/// The default state directory of local runs:
/// `$XDG_CACHE_HOME/hermetic/local` (`~/.cache/hermetic/local`).
pub fn default_state_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("hermetic/local")
}

/// Takes an exclusive `flock` on `state_dir/local.lock`, waiting for
/// another local run to finish; released when the returned value drops.
fn lock_state_dir(state_dir: &Path) -> Result<Flock<File>> {
    std::fs::create_dir_all(state_dir).map_err(Error::io("create", state_dir))?;
    let path = state_dir.join("local.lock");
    let file = File::create(&path).map_err(Error::io("create", &path))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::io("lock", &path)(std::io::Error::from(e)))
}

impl Local {
    /// Opens the daemon's components from `config` on `state_dir` (the
    /// config's own `state_dir` and `listen` are ignored). Blocks while
    /// another local run holds the directory.
    pub async fn open(mut config: Config, state_dir: &Path) -> Result<Local> {
        // The daemon's image store, not a private one: local runs use the
        // images (and digests) the daemon has.
        config.image_store = Some(config.image_store());
        config.state_dir = Some(state_dir.to_owned());
        config.listen = Vec::new();
        config
            .validate()
            .map_err(|e| Error::FailedPrecondition(e.to_string()))?;
        let dir = state_dir.to_owned();
        let lock = tokio::task::spawn_blocking(move || lock_state_dir(&dir))
            .await
            .map_err(|e| Error::Internal(format!("lock task failed: {e}")))??;
        let daemon = Daemon::open(config)?;
        Ok(Local {
            daemon,
            state_dir: state_dir.to_owned(),
            _lock: lock,
        })
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The image an alias or digest form names, from the image store the
    /// local run shares with the daemon.
    pub async fn resolve_image(&self, name: &str) -> Result<crate::images::ImageInfo> {
        let (images, name) = (
            self.daemon.ctx.engine.choices().images.clone(),
            name.to_owned(),
        );
        crate::cas::blocking(move || images.resolve(&name)).await
    }

    /// The subset of `keys` not stored.
    pub fn find_missing(&self, keys: &[BlobKey]) -> Vec<BlobKey> {
        self.daemon.ctx.store.find_missing(keys)
    }

    /// Stores `data` under `key`, verified.
    pub async fn put_bytes(&self, key: BlobKey, data: Vec<u8>) -> Result<()> {
        let store = self.daemon.ctx.store.clone();
        crate::cas::blocking(move || store.put_bytes(key, &data)).await
    }

    /// Stores a file's content under `key`, verified. The file is copied,
    /// never moved.
    pub async fn put_file(&self, key: BlobKey, path: PathBuf) -> Result<()> {
        let store = self.daemon.ctx.store.clone();
        crate::cas::blocking(move || {
            if store.contains(&key) {
                return Ok(());
            }
            let mut file = File::open(&path).map_err(Error::io("open", &path))?;
            let mut writer = store.writer_for(key)?;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf).map_err(Error::io("read", &path))?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n])?;
            }
            store.commit(writer, key)
        })
        .await
    }

    /// A whole blob.
    pub async fn read(&self, key: BlobKey) -> Result<Vec<u8>> {
        let store = self.daemon.ctx.store.clone();
        crate::cas::blocking(move || store.read(&key)).await
    }

    /// Opens a blob for reading (for large outputs).
    pub async fn open_blob(&self, key: BlobKey) -> Result<File> {
        let store = self.daemon.ctx.store.clone();
        crate::cas::blocking(move || store.open_blob(&key)).await
    }

    /// The cached result of an action, if any (and if its blobs remain).
    pub async fn action_result(&self, key: BlobKey) -> Result<Option<ActionResult>> {
        let (ac, store) = (
            self.daemon.ctx.action_cache.clone(),
            self.daemon.ctx.store.clone(),
        );
        crate::cas::blocking(move || ac.get(&key, &store)).await
    }

    /// Executes an action as the Execution service would and streams its
    /// operation until done. Errors are the gRPC statuses the daemon would
    /// answer with.
    pub async fn execute(
        &self,
        action_key: BlobKey,
        skip_cache_lookup: bool,
    ) -> std::result::Result<OpStream, Status> {
        let op = self
            .daemon
            .ctx
            .engine
            .execute(ExecuteParams {
                action_key,
                skip_cache_lookup,
                inline: Inline::default(),
                principal: None,
            })
            .await?;
        Ok(follow(op))
    }

    /// Lets running actions finish (within `grace`) and stops the helper.
    pub async fn close(self, grace: std::time::Duration) {
        self.daemon.ctx.engine.shutdown(grace).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::{DigestFunction, key_of};

    #[tokio::test]
    async fn stores_copies_and_locks() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let mut config = Config::default();
        config.cas.no_fsync = true;
        config.profiles_dir = Some(dir.path().join("no-profiles"));
        config.image_store = Some(dir.path().join("images"));
        std::fs::create_dir(dir.path().join("no-profiles")).unwrap();
        let local = Local::open(config.clone(), &state).await.unwrap();
        let f = DigestFunction::Blake3;
        let a = key_of(f, b"a");
        local.put_bytes(a, b"a".to_vec()).await.unwrap();
        let file = dir.path().join("input");
        std::fs::write(&file, b"from a file").unwrap();
        let b = key_of(f, b"from a file");
        local.put_file(b, file.clone()).await.unwrap();
        assert!(file.exists(), "uploads copy, never move");
        let c = key_of(f, b"absent");
        assert_eq!(local.find_missing(&[a, b, c]), vec![c]);
        assert_eq!(local.read(b).await.unwrap(), b"from a file");
        assert!(local.put_bytes(c, b"wrong".to_vec()).await.is_err());
        assert!(local.action_result(a).await.unwrap().is_none());

        // A second local run waits for the first to finish.
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let state2 = state.clone();
        let second = tokio::spawn(async move {
            let l = Local::open(config, &state2).await.unwrap();
            let _ = tx.send(());
            l.close(std::time::Duration::from_secs(1)).await;
        });
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(rx.try_recv().is_err(), "the state dir is locked");
        local.close(std::time::Duration::from_secs(1)).await;
        second.await.unwrap();
    }
}

//! Where a job runs: a daemon over gRPC, or `--local` (the daemon's own
//! engine in this process, see `hermeticd::local`). Both take the same
//! blobs, run the same action and stream the same operations, so the rest
//! of the client does not care which.

use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Digest, Directory};
use hermeticd::digest::{BlobKey, DigestFunction};
use hermeticd::local::Local;
use tokio::io::AsyncWriteExt;
use tokio_stream::StreamExt;

use crate::action::{Blob, Source};
use crate::digests::Function;
use crate::error::{Error, Result};
use crate::remote::{OpStream, Remote};

/// A place to run jobs.
#[derive(Debug)]
pub enum Backend {
    /// A daemon.
    Remote(Remote),
    /// This process.
    Local(Box<Local>),
}

fn key(f: Function, d: &Digest) -> Result<BlobKey> {
    let function = match f {
        Function::Blake3 => DigestFunction::Blake3,
        Function::Sha256 => DigestFunction::Sha256,
    };
    BlobKey::from_proto(function, d).map_err(Error::from)
}

impl Backend {
    /// The digests among `digests` not stored.
    pub async fn find_missing(&self, f: Function, digests: Vec<Digest>) -> Result<Vec<Digest>> {
        match self {
            Backend::Remote(r) => r.find_missing(f, digests).await,
            Backend::Local(l) => {
                let keys = digests
                    .iter()
                    .map(|d| key(f, d))
                    .collect::<Result<Vec<_>>>()?;
                Ok(l.find_missing(&keys)
                    .iter()
                    .map(BlobKey::to_proto)
                    .collect())
            }
        }
    }

    /// The `Directory` protos of the tree under `root` that the store
    /// holds, as a daemon's GetTree gives them; the local store gives none
    /// (its directories are read one by one, see `stored_input`).
    pub async fn tree(&self, f: Function, root: &Digest) -> Result<Vec<Directory>> {
        match self {
            Backend::Remote(r) => r.get_tree(f, root).await,
            Backend::Local(_) => Ok(Vec::new()),
        }
    }

    /// Stores blobs, reporting bytes as they go.
    pub async fn upload(
        &self,
        f: Function,
        blobs: Vec<Blob>,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        match self {
            Backend::Remote(r) => r.upload(f, blobs, progress).await,
            Backend::Local(l) => {
                for b in blobs {
                    let k = key(f, &b.digest)?;
                    match b.source {
                        Source::Bytes(data) => l.put_bytes(k, data).await?,
                        Source::File(path) => l.put_file(k, path).await?,
                    }
                    progress(b.digest.size_bytes as u64);
                }
                Ok(())
            }
        }
    }

    /// The pinned digest (`hermetic-image:blake3:HEX`) of an image alias or
    /// digest form: the daemon's Images service, or (local) the image
    /// store the local run shares with the daemon.
    pub async fn resolve_image(&self, name: &str) -> Result<String> {
        match self {
            Backend::Remote(r) => crate::image_cmd::resolve(r, name).await,
            Backend::Local(l) => match l.resolve_image(name).await {
                Ok(info) => Ok(info.digest.to_string()),
                Err(
                    e @ (hermeticd::error::Error::NotFound(_)
                    | hermeticd::error::Error::InvalidArgument(_)),
                ) => Err(Error::InvalidJob(format!("image {name:?}: {e}"))),
                Err(e) => Err(e.into()),
            },
        }
    }

    /// Executes an action, streaming its operation.
    pub async fn execute(&self, f: Function, action: Digest, skip_cache: bool) -> Result<OpStream> {
        match self {
            Backend::Remote(r) => r.execute(f, action, skip_cache).await,
            Backend::Local(l) => l
                .execute(key(f, &action)?, skip_cache)
                .await
                .map_err(Error::rpc("local execution")),
        }
    }

    /// Follows an operation again after its stream broke (daemon only).
    pub async fn wait_execution(&self, name: &str) -> Result<Option<OpStream>> {
        match self {
            Backend::Remote(r) => r.wait_execution(name).await.map(Some),
            Backend::Local(_) => Ok(None),
        }
    }

    /// A whole blob, verified against its digest.
    pub async fn read(&self, f: Function, d: &Digest) -> Result<Vec<u8>> {
        let data = match self {
            Backend::Remote(r) => r.read(f, d).await?,
            Backend::Local(l) => l.read(key(f, d)?).await?,
        };
        let actual = f.digest(&data);
        if actual != *d {
            return Err(Error::Verification(format!(
                "blob {}:{}/{} arrived as {}/{}",
                f.name(),
                d.hash,
                d.size_bytes,
                actual.hash,
                actual.size_bytes
            )));
        }
        Ok(data)
    }

    /// Writes a blob to `path` (created, not existing), streaming it;
    /// verified by the caller hashing the file.
    pub async fn read_to_file(&self, f: Function, d: &Digest, path: &Path) -> Result<()> {
        let mut out = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .await
            .map_err(Error::io("create", path))?;
        match self {
            Backend::Remote(r) if d.size_bytes > (4 << 20) => {
                let mut stream = r.read_stream(f, d).await?;
                while let Some(chunk) = stream.next().await {
                    out.write_all(&chunk?)
                        .await
                        .map_err(Error::io("write", path))?;
                }
            }
            Backend::Remote(r) => {
                let data = r.read(f, d).await?;
                out.write_all(&data)
                    .await
                    .map_err(Error::io("write", path))?;
            }
            Backend::Local(l) => {
                let src = l.open_blob(key(f, d)?).await?;
                let mut src = tokio::fs::File::from_std(src);
                tokio::io::copy(&mut src, &mut out)
                    .await
                    .map_err(Error::io("write", path))?;
            }
        }
        out.flush().await.map_err(Error::io("write", path))?;
        Ok(())
    }

    /// Lets a local engine wind down; nothing for a daemon.
    pub async fn close(self) {
        if let Backend::Local(l) = self {
            l.close(std::time::Duration::from_secs(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;

    #[tokio::test]
    async fn a_corrupted_blob_is_a_verification_failure() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = dir.path().join("profiles");
        std::fs::create_dir(&profiles).unwrap();
        let mut config = hermeticd::config::Config::default();
        config.cas.no_fsync = true;
        config.profiles_dir = Some(profiles);
        config.image_store = Some(dir.path().join("images"));
        let state = dir.path().join("state");
        let local = Local::open(config, &state).await.unwrap();
        let backend = Backend::Local(Box::new(local));
        let f = Function::Blake3;
        let data = b"the real content".to_vec();
        let digest = f.digest(&data);
        let blob = Blob {
            digest: digest.clone(),
            source: Source::Bytes(data.clone()),
        };
        backend.upload(f, vec![blob], &|_| {}).await.unwrap();
        assert_eq!(backend.read(f, &digest).await.unwrap(), data);
        // Tamper with the stored file behind the store's back.
        let path = state
            .join("cas/blake3")
            .join(&digest.hash[..2])
            .join(&digest.hash);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        std::fs::write(&path, b"the fake content").unwrap();
        let e = backend.read(f, &digest).await.unwrap_err();
        assert!(matches!(e, Error::Verification(_)), "{e}");
        assert_eq!(e.exit_code(), code::VERIFICATION);
        backend.close().await;
    }
}

//! Uploading a directory of this machine to a CAS as a REAPI tree, and
//! blobs of any size: BatchUpdateBlobs for small ones, ByteStream Write
//! for those over 1 MiB. The same code serves hermeticd and buildbox-casd.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Directory, DirectoryNode, FileNode, FindMissingBlobsRequest, SymlinkNode,
    content_addressable_storage_client::ContentAddressableStorageClient,
};
use bazel_remote_apis::google::bytestream::{WriteRequest, byte_stream_client::ByteStreamClient};
use hermeticd::digest::{BlobKey, key_of};
use prost::Message;
use tonic::transport::Channel;

use crate::reapi::client::{F, upload};

/// Blobs over this size go through ByteStream.
const LARGE: usize = 1 << 20;

/// A directory tree walked and digested, not yet uploaded.
#[derive(Debug, Default)]
pub struct LocalTree {
    /// The root Directory's digest.
    pub root: Option<BlobKey>,
    /// Directory protos, encoded.
    pub directories: Vec<Vec<u8>>,
    /// File blobs by digest: where to read them.
    pub files: BTreeMap<BlobKey, PathBuf>,
}

impl LocalTree {
    /// Walks `dir` (regular files, directories and symlinks; anything
    /// else is skipped) and digests every file.
    pub fn walk(dir: &Path) -> Result<Self> {
        let mut t = LocalTree::default();
        let root = t.walk_dir(dir)?;
        t.root = Some(root);
        Ok(t)
    }

    fn walk_dir(&mut self, dir: &Path) -> Result<BlobKey> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|e| e.file_name());
        let mut d = Directory::default();
        for e in entries {
            let name = e
                .file_name()
                .into_string()
                .map_err(|n| anyhow::anyhow!("{n:?} in {} is not UTF-8", dir.display()))?;
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            let ft = meta.file_type();
            if ft.is_dir() {
                let digest = self.walk_dir(&path)?;
                d.directories.push(DirectoryNode {
                    name,
                    digest: Some(digest.to_proto()),
                });
            } else if ft.is_symlink() {
                let target = std::fs::read_link(&path)?;
                d.symlinks.push(SymlinkNode {
                    name,
                    target: target.to_string_lossy().into_owned(),
                    ..Default::default()
                });
            } else if ft.is_file() {
                let data = std::fs::read(&path)
                    .with_context(|| format!("cannot read {}", path.display()))?;
                let key = key_of(F, &data);
                self.files.entry(key).or_insert(path);
                d.files.push(FileNode {
                    name,
                    digest: Some(key.to_proto()),
                    is_executable: meta.permissions().mode() & 0o111 != 0,
                    ..Default::default()
                });
            }
        }
        let bytes = d.encode_to_vec();
        let key = key_of(F, &bytes);
        self.directories.push(bytes);
        Ok(key)
    }

    /// Uploads what the server lacks of the tree; returns the root.
    pub async fn upload(&self, channel: &Channel) -> Result<BlobKey> {
        let root = self.root.context("tree not walked")?;
        let mut cas = ContentAddressableStorageClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let keys: Vec<BlobKey> = self.files.keys().copied().collect();
        let mut missing = std::collections::BTreeSet::new();
        for chunk in keys.chunks(10_000) {
            let resp = cas
                .find_missing_blobs(FindMissingBlobsRequest {
                    blob_digests: chunk.iter().map(BlobKey::to_proto).collect(),
                    digest_function: F.to_proto(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            for d in resp.missing_blob_digests {
                missing.insert(BlobKey::from_proto(F, &d)?);
            }
        }
        let mut batch: Vec<(BlobKey, Vec<u8>)> = Vec::new();
        let mut bytes = 0;
        for key in &missing {
            let path = &self.files[key];
            let data =
                std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
            bytes += data.len();
            batch.push((*key, data));
            if bytes > 32 << 20 {
                put_blobs(channel, std::mem::take(&mut batch)).await?;
                bytes = 0;
            }
        }
        put_blobs(channel, batch).await?;
        let dirs: Vec<(BlobKey, Vec<u8>)> = self
            .directories
            .iter()
            .map(|d| (key_of(F, d), d.clone()))
            .collect();
        put_blobs(channel, dirs).await?;
        Ok(root)
    }
}

/// Uploads blobs: the large ones one ByteStream Write each (1 MiB
/// messages), the rest by BatchUpdateBlobs.
pub async fn put_blobs(channel: &Channel, blobs: Vec<(BlobKey, Vec<u8>)>) -> Result<()> {
    let (large, small): (Vec<_>, Vec<_>) = blobs.into_iter().partition(|(_, b)| b.len() > LARGE);
    let small: Vec<Vec<u8>> = small.into_iter().map(|(_, b)| b).collect();
    upload(channel, &small).await?;
    for (key, data) in large {
        write_stream(channel, key, data, LARGE).await?;
    }
    Ok(())
}

/// One ByteStream Write of `data` (digest `key`) in `chunk`-byte messages.
pub async fn write_stream(
    channel: &Channel,
    key: BlobKey,
    data: Vec<u8>,
    chunk: usize,
) -> Result<()> {
    let chunks: Vec<Vec<u8>> = data.chunks(chunk).map(<[u8]>::to_vec).collect();
    write_chunks(channel, key, chunks).await
}

/// One ByteStream Write of the blob `key` made of `chunks`, in order.
pub async fn write_chunks(channel: &Channel, key: BlobKey, chunks: Vec<Vec<u8>>) -> Result<()> {
    let mut bs = ByteStreamClient::new(channel.clone());
    let name = format!(
        "uploads/{}/blobs/{}/{}",
        uuid_v4_like(),
        key.hex(),
        key.size
    );
    let count = chunks.len().max(1);
    let chunks = if chunks.is_empty() {
        vec![Vec::new()]
    } else {
        chunks
    };
    let mut offset = 0i64;
    let requests: Vec<WriteRequest> = chunks
        .into_iter()
        .enumerate()
        .map(|(i, data)| {
            let r = WriteRequest {
                resource_name: if i == 0 { name.clone() } else { String::new() },
                write_offset: offset,
                finish_write: i + 1 == count,
                data,
            };
            offset += r.data.len() as i64;
            r
        })
        .collect();
    let resp = bs
        .write(tokio_stream::iter(requests))
        .await
        .with_context(|| format!("ByteStream Write of {}", key.hex()))?
        .into_inner();
    anyhow::ensure!(
        resp.committed_size == key.size as i64,
        "short write: {} of {} bytes committed",
        resp.committed_size,
        key.size
    );
    Ok(())
}

/// A random-enough version-4 UUID for an upload's resource name.
fn uuid_v4_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        (t >> 32) as u32,
        (t >> 16) as u16,
        t as u16 & 0xfff,
        (n >> 48) as u16 & 0xfff,
        n & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_records_files_modes_links_and_subdirectories() {
        let dir =
            std::env::temp_dir().join(format!("hermetic-bench-tree-{}", crate::peer::nonce()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("b.txt"), b"plain").unwrap();
        std::fs::write(dir.join("a.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(dir.join("a.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join("sub/c"), b"plain").unwrap();
        std::os::unix::fs::symlink("b.txt", dir.join("link")).unwrap();
        let t = LocalTree::walk(&dir).unwrap();
        // Two distinct contents: "plain" twice is one blob.
        assert_eq!(t.files.len(), 2);
        let root_bytes = t.directories.last().unwrap();
        assert_eq!(key_of(F, root_bytes), t.root.unwrap());
        let root = Directory::decode(root_bytes.as_slice()).unwrap();
        let files: Vec<_> = root
            .files
            .iter()
            .map(|f| (f.name.as_str(), f.is_executable))
            .collect();
        assert_eq!(files, [("a.sh", true), ("b.txt", false)]);
        assert_eq!(root.symlinks[0].target, "b.txt");
        assert_eq!(root.directories[0].name, "sub");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

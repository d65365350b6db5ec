//! BatchUpdateBlobs with fsync on, in every `[cas] batch_commit` way
//! (`hermeticd::cas::batch`): concurrent batches from several clients,
//! overlapping blobs, bad digests among good ones; every good blob is
//! stored read-only under its name, readable, and still there after a
//! restart; nothing is left in the temp directory.

mod common;

use std::os::unix::fs::PermissionsExt;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    BatchReadBlobsRequest, BatchUpdateBlobsRequest, batch_update_blobs_request,
    content_addressable_storage_client::ContentAddressableStorageClient,
};
use common::{TestServer, digest};
use hermeticd::config::{BatchCommit, Config};
use hermeticd::digest::{BlobKey, DigestFunction, key_of};
use tonic::Code;

const F: DigestFunction = DigestFunction::Sha256;
const CLIENTS: usize = 4;
const PER_CLIENT: usize = 300;

/// Client `c`'s blobs: half its own, half shared with every client.
fn blobs_of(c: usize) -> Vec<Vec<u8>> {
    (0..PER_CLIENT)
        .map(|i| {
            if i % 2 == 0 {
                format!("shared blob {i}").into_bytes()
            } else {
                format!("blob {i} of client {c}").into_bytes()
            }
        })
        .collect()
}

/// Every 50th blob of a batch claims another blob's digest.
fn bad(i: usize) -> bool {
    i % 50 == 7
}

fn configure(mode: BatchCommit) -> impl FnOnce(&mut Config, &std::path::Path) {
    move |c, _| {
        c.cas.no_fsync = false;
        c.cas.batch_commit = mode;
    }
}

async fn read_all(server: &TestServer, keys: &[BlobKey]) -> Vec<Vec<u8>> {
    let resp = ContentAddressableStorageClient::new(server.unix_channel().await)
        .batch_read_blobs(BatchReadBlobsRequest {
            digests: keys.iter().map(|k| k.to_proto()).collect(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    resp.responses
        .into_iter()
        .map(|r| {
            assert_eq!(r.status.unwrap().code, 0, "{:?}", r.digest);
            r.data
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commits_store_every_good_blob_in_every_way() {
    for mode in [
        BatchCommit::Journal,
        BatchCommit::Fsync,
        BatchCommit::Syncfs,
    ] {
        let server = TestServer::start(configure(mode)).await;
        // The option reaches the store.
        assert_eq!(server.daemon.ctx.store.batch_commit(), mode);
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let channel = server.unix_channel().await;
            tasks.push(tokio::spawn(async move {
                let blobs = blobs_of(c);
                let requests = blobs
                    .iter()
                    .enumerate()
                    .map(|(i, b)| batch_update_blobs_request::Request {
                        digest: digest(&key_of(F, if bad(i) { b"not this" } else { b })),
                        data: b.clone(),
                        compressor: 0,
                    })
                    .collect();
                ContentAddressableStorageClient::new(channel)
                    .batch_update_blobs(BatchUpdateBlobsRequest {
                        requests,
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
            }));
        }
        let mut good = Vec::new();
        for (c, task) in tasks.into_iter().enumerate() {
            let resp = task.await.unwrap();
            let blobs = blobs_of(c);
            assert_eq!(resp.responses.len(), PER_CLIENT);
            for (i, r) in resp.responses.iter().enumerate() {
                let code = r.status.as_ref().unwrap().code;
                if bad(i) {
                    assert_eq!(code, Code::InvalidArgument as i32, "{mode:?} blob {i}");
                } else {
                    assert_eq!(code, 0, "{mode:?} client {c} blob {i}: {r:?}");
                    assert_eq!(r.digest, digest(&key_of(F, &blobs[i])));
                    good.push(blobs[i].clone());
                }
            }
        }
        good.sort();
        good.dedup();
        let keys: Vec<BlobKey> = good.iter().map(|b| key_of(F, b)).collect();
        assert_eq!(read_all(&server, &keys).await, good, "{mode:?}");
        let state = server.dir.path().join("state");
        for k in &keys {
            let hex = k.hex();
            let path = state.join("cas").join(F.name()).join(&hex[..2]).join(&hex);
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(
                meta.permissions().mode() & 0o777,
                0o444,
                "{}",
                path.display()
            );
        }
        // No bad blob was stored under the digest it claimed.
        let claimed = key_of(F, b"not this").hex();
        assert!(
            !state
                .join("cas")
                .join(F.name())
                .join(&claimed[..2])
                .join(&claimed)
                .exists()
        );
        let left: Vec<_> = std::fs::read_dir(state.join("tmp"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(left.is_empty(), "{mode:?}: temp files left: {left:?}");
        // Journaled (not yet checkpointed) only in journal mode.
        let segments = std::fs::read_dir(state.join("journal"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(segments > 0, mode == BatchCommit::Journal, "{mode:?}");

        // After a restart the index, rebuilt from disk, has them all.
        let dir = server.stop().await;
        let mut config = Config {
            state_dir: Some(dir.path().join("state")),
            ..Default::default()
        };
        configure(mode)(&mut config, dir.path());
        let server = TestServer::start_in(dir, config).await;
        assert_eq!(
            read_all(&server, &keys).await,
            good,
            "{mode:?} after restart"
        );
        server.stop().await;
    }
}

//! The real `hermeticd` binary: kill -9 keeps every committed blob and
//! result (replaying the CAS journal at the next start); SIGTERM stops it
//! cleanly.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, FindMissingBlobsRequest, GetActionResultRequest, OutputFile,
    UpdateActionResultRequest, action_cache_client::ActionCacheClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
};
use bazel_remote_apis::google::bytestream::{
    ReadRequest, WriteRequest, byte_stream_client::ByteStreamClient,
};
use hermeticd::digest::{DigestFunction, key_of};
use hyper_util::rt::TokioIo;
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint, Uri};

fn spawn(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_hermeticd"))
        .arg("--config")
        .arg(dir.join("hermeticd.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--listen")
        .arg(format!("unix://{}", dir.join("sock").display()))
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap()
}

async fn connect(dir: &Path) -> Channel {
    let path = dir.join("sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = path.clone();
        let attempt = Endpoint::try_from("http://localhost")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let p = p.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
                }
            }))
            .await;
        match attempt {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("hermeticd did not come up: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Journal segments in `dir`.
fn segments(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "log"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_keeps_committed_blobs_and_results() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("hermeticd.toml"),
        "[action_cache]\nallow_client_updates = true\n",
    )
    .unwrap();
    let mut child = spawn(dir.path());
    let channel = connect(dir.path()).await;
    let f = DigestFunction::Blake3;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let small = common::upload(&mut cas, f, &[b"small blob"]).await[0];
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i * 7 % 256) as u8).collect();
    let big_key = key_of(f, &big);
    let name = format!("uploads/u/blobs/blake3/{}/{}", big_key.hex(), big_key.size);
    ByteStreamClient::new(channel.clone())
        .write(tokio_stream::iter(vec![WriteRequest {
            resource_name: name,
            write_offset: 0,
            finish_write: true,
            data: big.clone(),
        }]))
        .await
        .unwrap();
    let action = key_of(f, b"an action");
    ActionCacheClient::new(channel.clone())
        .update_action_result(UpdateActionResultRequest {
            action_digest: Some(action.to_proto()),
            action_result: Some(ActionResult {
                output_files: vec![OutputFile {
                    path: "out".into(),
                    digest: Some(small.to_proto()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The small blob came by BatchUpdateBlobs: durable in the CAS journal,
    // its file not yet checkpointed (30 s on) when the daemon was killed.
    let journal = dir.path().join("state/journal");
    assert_eq!(segments(&journal), 1, "the batch was not journaled");

    let mut child = spawn(dir.path());
    let channel = connect(dir.path()).await;
    assert_eq!(
        segments(&journal),
        0,
        "the start-up did not replay the journal"
    );
    let missing = ContentAddressableStorageClient::new(channel.clone())
        .find_missing_blobs(FindMissingBlobsRequest {
            blob_digests: vec![small.to_proto(), big_key.to_proto()],
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(missing.missing_blob_digests.is_empty());
    let mut stream = ByteStreamClient::new(channel.clone())
        .read(ReadRequest {
            resource_name: format!("blobs/blake3/{}/{}", big_key.hex(), big_key.size),
            read_offset: 0,
            read_limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(c) = stream.next().await {
        got.extend(c.unwrap().data);
    }
    assert!(got == big, "blob differs after restart");
    let result = ActionCacheClient::new(channel.clone())
        .get_action_result(GetActionResultRequest {
            action_digest: Some(action.to_proto()),
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(result.output_files[0].path, "out");
    common::upload(
        &mut ContentAddressableStorageClient::new(channel.clone()),
        f,
        &[b"later"],
    )
    .await;
    assert_eq!(segments(&journal), 1);

    // SIGTERM: a clean, prompt exit, with the journal checkpointed.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "hermeticd exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "hermeticd ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        segments(&journal),
        0,
        "the journal was not checkpointed at shutdown"
    );
}

//! Cache hits served from memory (`hermeticd::memo`): what a memoized hit
//! must still notice. A result replaced through UpdateActionResult, or
//! rewritten or removed on disk behind the daemon's back (another process,
//! garbage collection), and an image no longer trusted, all change the
//! answer at once. Real daemon, real gRPC; actions run through the fake
//! helper (`tests/support/fake-sandbox.py`).

mod common;

use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, ExecuteRequest, ExecuteResponse, GetActionResultRequest,
    UpdateActionResultRequest, action_cache_client::ActionCacheClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::actions::{follow, put_action, put_tree, sh};
use common::fake::{configure, python_available};
use hermetic_proto::ImagesClient;
use hermetic_proto::v1::{InspectImageRequest, SetTrustRequest};
use hermeticd::digest::{BlobKey, DigestFunction};
use prost::Message;
use tonic::transport::Channel;

const F: DigestFunction = DigestFunction::Sha256;

/// Execute with nothing inlined (the memoized path serves only those).
async fn execute(channel: &Channel, action: BlobKey) -> Result<ExecuteResponse, tonic::Status> {
    let request = ExecuteRequest {
        action_digest: Some(action.to_proto()),
        digest_function: F.to_proto(),
        ..Default::default()
    };
    follow(&mut ExecutionClient::new(channel.clone()), request)
        .await
        .map(|(_, response)| response)
}

async fn get_result(channel: &Channel, action: BlobKey) -> Result<ActionResult, tonic::Status> {
    ActionCacheClient::new(channel.clone())
        .get_action_result(GetActionResultRequest {
            action_digest: Some(action.to_proto()),
            digest_function: F.to_proto(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The action cache's file for `action` (empty instance name).
fn ac_file(state: &Path, action: BlobKey) -> PathBuf {
    let hex = action.hex();
    state
        .join("ac")
        .join(F.name())
        .join(&hex[..2])
        .join(format!("{hex}-{}", action.size))
}

/// Replaces the file by a rename, as another process would.
fn replace(path: &Path, result: &ActionResult) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, result.encode_to_vec()).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memoized_hits_follow_the_action_cache() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(|c, dir| {
        configure(c, dir);
        c.action_cache.allow_client_updates = true;
    })
    .await;
    let state = server.dir.path().join("state");
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let root = put_tree(&mut cas, F, &[]).await;
    let action = put_action(&mut cas, F, &sh("echo hi"), root).await;

    let first = execute(&channel, action).await.unwrap();
    assert!(!first.cached_result);
    let ran = first.result.unwrap();
    assert_eq!(ran.exit_code, 0);
    // The first hit reads the file; the next ones are served from memory.
    for _ in 0..3 {
        let hit = execute(&channel, action).await.unwrap();
        assert!(hit.cached_result);
        assert_eq!(
            hit.result.as_ref().unwrap().stdout_digest,
            ran.stdout_digest
        );
        assert_eq!(hit.status.unwrap().code, 0);
        assert_eq!(
            get_result(&channel, action).await.unwrap().stdout_digest,
            ran.stdout_digest
        );
    }

    // Replaced through the API: the next hit says so.
    let updated = ActionResult {
        exit_code: 3,
        ..Default::default()
    };
    ActionCacheClient::new(channel.clone())
        .update_action_result(UpdateActionResultRequest {
            action_digest: Some(action.to_proto()),
            action_result: Some(updated.clone()),
            digest_function: F.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap();
    let hit = execute(&channel, action).await.unwrap();
    assert!(hit.cached_result);
    assert_eq!(hit.result.unwrap().exit_code, 3);
    assert_eq!(get_result(&channel, action).await.unwrap().exit_code, 3);

    // Rewritten on disk by someone else (a rename, like every writer).
    let file = ac_file(&state, action);
    assert!(file.is_file(), "{} is missing", file.display());
    replace(
        &file,
        &ActionResult {
            exit_code: 5,
            ..Default::default()
        },
    );
    let hit = execute(&channel, action).await.unwrap();
    assert!(hit.cached_result);
    assert_eq!(hit.result.unwrap().exit_code, 5);
    assert_eq!(get_result(&channel, action).await.unwrap().exit_code, 5);

    // Removed on disk (garbage collection, another process): a miss at
    // once, from GetActionResult and from Execute (which runs it again).
    std::fs::remove_file(&file).unwrap();
    let e = get_result(&channel, action).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let again = execute(&channel, action).await.unwrap();
    assert!(!again.cached_result);
    assert_eq!(again.result.unwrap().exit_code, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memoized_hit_still_needs_a_trusted_image() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut images = ImagesClient::new(channel.clone());
    let root = put_tree(&mut cas, F, &[]).await;
    // On the default image (the configured `busybox`, trusted by config).
    let action = put_action(&mut cas, F, &sh("echo trusted"), root).await;
    assert!(!execute(&channel, action).await.unwrap().cached_result);
    for _ in 0..3 {
        assert!(execute(&channel, action).await.unwrap().cached_result);
    }
    let image = images
        .inspect(InspectImageRequest {
            image: "busybox".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let trust = |trusted: bool| SetTrustRequest {
        image: image.digest.clone(),
        trusted,
    };
    images.set_trust(trust(false)).await.unwrap();
    let e = execute(&channel, action).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("not trusted"), "{e:?}");
    images.set_trust(trust(true)).await.unwrap();
    assert!(execute(&channel, action).await.unwrap().cached_result);
    assert!(execute(&channel, action).await.unwrap().cached_result);
    server.stop().await;
}

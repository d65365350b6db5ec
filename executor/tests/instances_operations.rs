//! The action cache per instance name, ListOperations paging, and
//! QueryWriteStatus while a Write is still streaming. Executions go
//! through the fake helper.

mod common;

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, ExecuteRequest, GetActionResultRequest, UpdateActionResultRequest,
    action_cache_client::ActionCacheClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::bytestream::{
    QueryWriteStatusRequest, WriteRequest, byte_stream_client::ByteStreamClient,
};
use bazel_remote_apis::google::longrunning::{
    ListOperationsRequest, operations_client::OperationsClient,
};
use common::TestServer;
use common::actions::{execute, put_action, put_tree, response_of, sh};
use common::fake::{configure, python_available};
use hermeticd::digest::{DigestFunction, key_of};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;

const TEAM: &str = "team/a";

async fn execute_in(
    channel: &Channel,
    instance: &str,
    action: hermeticd::digest::BlobKey,
) -> bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteResponse {
    let mut stream = ExecutionClient::new(channel.clone())
        .execute(ExecuteRequest {
            instance_name: instance.into(),
            action_digest: Some(action.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(op) = stream.next().await {
        last = Some(op.unwrap());
    }
    response_of(&last.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_instance_has_its_own_action_cache() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(|c, d| {
        configure(c, d);
        c.instance_names = Some(vec![String::new(), TEAM.into()]);
        c.action_cache.allow_client_updates = true;
    })
    .await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Sha256;

    // A client update lands in its instance only.
    let out = common::upload(&mut cas, f, &[b"stdout"]).await[0];
    let action = key_of(f, b"some action");
    let mut ac = ActionCacheClient::new(channel.clone());
    ac.update_action_result(UpdateActionResultRequest {
        instance_name: TEAM.into(),
        action_digest: Some(action.to_proto()),
        action_result: Some(ActionResult {
            stdout_digest: Some(out.to_proto()),
            ..Default::default()
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let get = |instance: &str| GetActionResultRequest {
        instance_name: instance.into(),
        action_digest: Some(action.to_proto()),
        ..Default::default()
    };
    let hit = ac.get_action_result(get(TEAM)).await.unwrap().into_inner();
    assert_eq!(hit.stdout_digest, Some(out.to_proto()));
    let miss = ac.get_action_result(get("")).await.unwrap_err();
    assert_eq!(miss.code(), Code::NotFound);

    // An executed result is cached for the instance that ran it.
    let empty = put_tree(&mut cas, f, &[]).await;
    let run = put_action(&mut cas, f, &sh("echo ran"), empty).await;
    let first = execute_in(&channel, TEAM, run).await;
    assert_eq!(first.status.unwrap().code, 0);
    assert!(!first.cached_result);
    assert!(execute_in(&channel, TEAM, run).await.cached_result);
    let other = execute_in(&channel, "", run).await;
    assert!(!other.cached_result, "another instance's result was served");
    assert!(execute_in(&channel, "", run).await.cached_result);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_operations_pages_by_name() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.unix_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Blake3;
    let empty = put_tree(&mut cas, f, &[]).await;
    let mut names = Vec::new();
    for i in 0..3 {
        let action = put_action(&mut cas, f, &sh(&format!("echo {i}")), empty).await;
        let (ops, _) = execute(&mut exec, f, action, false).await.unwrap();
        names.push(ops[0].name.clone());
    }
    names.sort();
    let mut ops = OperationsClient::new(channel.clone());
    let page = |token: &str| ListOperationsRequest {
        page_size: 2,
        page_token: token.into(),
        ..Default::default()
    };
    let first = ops.list_operations(page("")).await.unwrap().into_inner();
    assert_eq!(first.operations.len(), 2);
    assert_eq!(first.next_page_token, first.operations[1].name);
    let second = ops
        .list_operations(page(&first.next_page_token))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.operations.len(), 1);
    assert!(second.next_page_token.is_empty());
    let listed: Vec<String> = first
        .operations
        .iter()
        .chain(&second.operations)
        .map(|o| o.name.clone())
        .collect();
    assert_eq!(listed, names);
    assert!(listed.iter().all(|n| n.starts_with("operations/")));
    let err = ops
        .list_operations(ListOperationsRequest {
            filter: "done=true".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_write_status_reports_progress_during_a_write() {
    let server = TestServer::start(|_, _| {}).await;
    let channel = server.tcp_channel().await;
    let data: Vec<u8> = (0..3u32 << 20).map(|i| (i % 251) as u8).collect();
    let key = key_of(DigestFunction::Sha256, &data);
    let name = format!("uploads/q/blobs/{}/{}", key.hex(), key.size);
    let half = data.len() / 2;
    let (tx, rx) = tokio::sync::mpsc::channel::<WriteRequest>(4);
    let mut bs = ByteStreamClient::new(channel.clone());
    let writer = tokio::spawn(async move {
        bs.write(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    tx.send(WriteRequest {
        resource_name: name.clone(),
        write_offset: 0,
        finish_write: false,
        data: data[..half].to_vec(),
    })
    .await
    .unwrap();
    // The Write holds the upload; the query still sees what it committed.
    let mut query = ByteStreamClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let status = query
            .query_write_status(QueryWriteStatusRequest {
                resource_name: name.clone(),
            })
            .await
            .map(|r| r.into_inner());
        if let Ok(s) = &status
            && s.committed_size == half as i64
        {
            assert!(!s.complete);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw the half: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tx.send(WriteRequest {
        resource_name: String::new(),
        write_offset: half as i64,
        finish_write: true,
        data: data[half..].to_vec(),
    })
    .await
    .unwrap();
    drop(tx);
    let done = writer.await.unwrap().unwrap();
    assert_eq!(done.committed_size, data.len() as i64);
    let status = query
        .query_write_status(QueryWriteStatusRequest {
            resource_name: name,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(status.complete);
    server.stop().await;
}

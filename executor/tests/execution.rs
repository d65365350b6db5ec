//! Execute, WaitExecution and Operations over real sockets.
//!
//! Request validation needs no sandbox. The engine tests (outputs, cache,
//! dedup, cancel, queue, timeout, shutdown) run through
//! `tests/support/fake-sandbox.py`, a stand-in that honours the helper's
//! spec/status contract without isolation; `sandbox_execution.rs` runs
//! actions through the real helper.

mod common;

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Directory, ExecuteRequest, FileNode, Tree, WaitExecutionRequest,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient, execution_stage,
};
use bazel_remote_apis::google::longrunning::{
    CancelOperationRequest, GetOperationRequest, operations_client::OperationsClient,
};
use bazel_remote_apis::google::rpc::Status as RpcStatus;
use common::TestServer;
use common::actions::{execute, put_action, put_tree, read_blob, response_of, sh, stage_of};
use common::fake::{configure, python_available};
use hermeticd::digest::{DigestFunction, key_of};
use hermeticd::error::PreconditionFailure;
use prost::Message;
use tokio_stream::StreamExt;
use tonic::Code;

fn rpc_details(status: &tonic::Status) -> RpcStatus {
    RpcStatus::decode(status.details()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_inputs_are_listed_each() {
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Blake3;
    let a = key_of(f, b"never uploaded a");
    let b = key_of(f, b"never uploaded b");
    let root = Directory {
        files: [("a", a), ("b", b)]
            .iter()
            .map(|(n, k)| FileNode {
                name: (*n).into(),
                digest: Some(k.to_proto()),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let root_key = common::upload(&mut cas, f, &[&root.encode_to_vec()]).await[0];
    let action = put_action(&mut cas, f, &sh("true"), root_key).await;
    let err = execute(&mut ExecutionClient::new(channel.clone()), f, action, false)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let details = rpc_details(&err);
    let failure = PreconditionFailure::decode(details.details[0].value.as_slice()).unwrap();
    let subjects: Vec<&str> = failure
        .violations
        .iter()
        .map(|v| v.subject.as_str())
        .collect();
    assert_eq!(failure.violations.len(), 2);
    assert!(failure.violations.iter().all(|v| v.r#type == "MISSING"));
    assert!(subjects.contains(&format!("blobs/blake3/{}/{}", a.hex(), a.size).as_str()));
    assert!(subjects.contains(&format!("blobs/blake3/{}/{}", b.hex(), b.size).as_str()));

    // A missing Action is listed too (SHA-256: no function segment).
    let absent = key_of(DigestFunction::Sha256, b"no such action");
    let err = execute(
        &mut ExecutionClient::new(channel),
        DigestFunction::Sha256,
        absent,
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let failure =
        PreconditionFailure::decode(rpc_details(&err).details[0].value.as_slice()).unwrap();
    assert_eq!(
        failure.violations[0].subject,
        format!("blobs/{}/{}", absent.hex(), absent.size)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_directories_are_invalid_arguments() {
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel);
    let f = DigestFunction::Sha256;
    let file = |name: &str| FileNode {
        name: name.into(),
        digest: Some(f.empty().to_proto()),
        ..Default::default()
    };
    let cases: Vec<(&str, Directory)> = vec![
        (
            "dot",
            Directory {
                files: vec![file(".")],
                ..Default::default()
            },
        ),
        (
            "dotdot",
            Directory {
                files: vec![file("..")],
                ..Default::default()
            },
        ),
        (
            "slash",
            Directory {
                files: vec![file("a/b")],
                ..Default::default()
            },
        ),
        (
            "empty",
            Directory {
                files: vec![file("")],
                ..Default::default()
            },
        ),
        (
            "duplicate",
            Directory {
                files: vec![file("a"), file("a")],
                ..Default::default()
            },
        ),
        (
            "unsorted",
            Directory {
                files: vec![file("b"), file("a")],
                ..Default::default()
            },
        ),
    ];
    for (what, dir) in cases {
        let root = common::upload(&mut cas, f, &[&dir.encode_to_vec()]).await[0];
        let action = put_action(&mut cas, f, &sh("true"), root).await;
        let err = execute(&mut exec, f, action, false).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    }
    // Deeper than the limit (128).
    let mut key = put_tree(&mut cas, f, &[]).await;
    for i in 0..130 {
        let d = Directory {
            directories: vec![
                bazel_remote_apis::build::bazel::remote::execution::v2::DirectoryNode {
                    name: format!("d{i}"),
                    digest: Some(key.to_proto()),
                },
            ],
            ..Default::default()
        };
        key = common::upload(&mut cas, f, &[&d.encode_to_vec()]).await[0];
    }
    let action = put_action(&mut cas, f, &sh("true"), key).await;
    let err = execute(&mut exec, f, action, false).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("deeper"), "{}", err.message());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_properties_are_checked() {
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel);
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;
    for (props, code, needle) in [
        (vec![("gpu", "1")], Code::InvalidArgument, "gpu"),
        (
            vec![("container-image", "docker://busybox:latest")],
            Code::FailedPrecondition,
            "busybox",
        ),
        (
            vec![("hermetic-profile", "lenient")],
            Code::FailedPrecondition,
            "strict",
        ),
        (
            vec![("OSFamily", "Windows")],
            Code::FailedPrecondition,
            "Linux",
        ),
    ] {
        let mut spec = sh("true");
        spec.platform = props
            .iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect();
        let action = put_action(&mut cas, f, &spec, root).await;
        let err = execute(&mut exec, f, action, false).await.unwrap_err();
        assert_eq!(err.code(), code, "{props:?}: {err:?}");
        assert!(err.message().contains(needle), "{}", err.message());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_collects_outputs_and_caches() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.unix_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    for f in DigestFunction::ALL {
        let root = put_tree(
            &mut cas,
            f,
            &[
                ("wd/in.txt", b"input\n", false),
                ("wd/tool", b"#!/bin/sh\necho tool\n", true),
            ],
        )
        .await;
        let mut spec = sh(
            "cat in.txt > out/f && ./tool >> out/f && mkdir -p out/d/sub && echo x > out/d/sub/x \
             && ln -s f out/l && echo to-stdout && echo to-stderr >&2",
        );
        spec.workdir = "wd".into();
        spec.output_paths = vec![
            "out/f".into(),
            "out/d".into(),
            "out/l".into(),
            "out/absent".into(),
        ];
        let action = put_action(&mut cas, f, &spec, root).await;
        let (ops, resp) = execute(&mut exec, f, action, false).await.unwrap();
        assert_eq!(
            stage_of(ops.last().unwrap()),
            execution_stage::Value::Completed as i32
        );
        assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
        assert!(!resp.cached_result);
        let result = resp.result.unwrap();
        assert_eq!(result.exit_code, 0);
        assert_eq!(result.stdout_raw, b"to-stdout\n");
        assert_eq!(result.stderr_raw, b"to-stderr\n");
        assert_eq!(result.output_files.len(), 1);
        let content = read_blob(&channel, f, result.output_files[0].digest.as_ref().unwrap()).await;
        assert_eq!(content, b"input\ntool\n");
        assert_eq!(result.output_symlinks[0].target, "f");
        let tree = Tree::decode(
            read_blob(
                &channel,
                f,
                result.output_directories[0].tree_digest.as_ref().unwrap(),
            )
            .await
            .as_slice(),
        )
        .unwrap();
        assert_eq!(tree.root.unwrap().directories[0].name, "sub");
        let meta = result.execution_metadata.unwrap();
        for (name, t) in [
            ("queued", &meta.queued_timestamp),
            ("worker start", &meta.worker_start_timestamp),
            ("input fetch start", &meta.input_fetch_start_timestamp),
            (
                "input fetch completed",
                &meta.input_fetch_completed_timestamp,
            ),
            ("execution start", &meta.execution_start_timestamp),
            ("execution completed", &meta.execution_completed_timestamp),
            ("output upload start", &meta.output_upload_start_timestamp),
            (
                "output upload completed",
                &meta.output_upload_completed_timestamp,
            ),
            ("worker completed", &meta.worker_completed_timestamp),
        ] {
            assert!(t.is_some(), "{name} timestamp missing");
        }
        let log = resp
            .server_logs
            .get("execution_log")
            .expect("execution log");
        let log: serde_json::Value =
            serde_json::from_slice(&read_blob(&channel, f, log.digest.as_ref().unwrap()).await)
                .unwrap();
        assert_eq!(log["profile"], "strict");
        assert!(
            log["profile_digest"]
                .as_str()
                .unwrap()
                .starts_with("sha256:")
        );
        // The default image, pinned by digest.
        assert!(
            log["image"]
                .as_str()
                .unwrap()
                .starts_with("hermetic-image:blake3:"),
            "{log}"
        );
        assert_eq!(log["image_defaulted"], true);
        assert_eq!(log["exit_code"], 0);

        // The same action again is a cache hit; skip_cache_lookup runs it.
        let (_, again) = execute(&mut exec, f, action, false).await.unwrap();
        assert!(again.cached_result);
        assert_eq!(again.result.unwrap().stdout_raw, b"to-stdout\n");
        let (_, rerun) = execute(&mut exec, f, action, true).await.unwrap();
        assert!(!rerun.cached_result);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(deprecated)]
async fn v2_0_clients_get_the_deprecated_fields() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel);
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;
    let mut spec =
        sh("echo hi > a/file && ln -s file a/flink && mkdir b/dir && ln -s dir b/dlink; exit 3");
    spec.output_files = vec!["a/file".into(), "a/flink".into()];
    spec.output_dirs = vec!["b/dir".into(), "b/dlink".into()];
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
    let result = resp.result.unwrap();
    assert_eq!(result.exit_code, 3);
    assert_eq!(result.output_files.len(), 1);
    assert_eq!(result.output_file_symlinks[0].path, "a/flink");
    assert_eq!(result.output_directory_symlinks[0].path, "b/dlink");
    assert_eq!(result.output_directories[0].path, "b/dir");
    // A failing action is not cached.
    let (_, again) = execute(&mut exec, f, action, false).await.unwrap();
    assert!(!again.cached_result);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_output_pointing_outside_is_refused() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel);
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;
    for target in ["/etc/passwd", "../../outside"] {
        let mut spec = sh(&format!("ln -s {target} out/link"));
        spec.output_paths = vec!["out/link".into()];
        let action = put_action(&mut cas, f, &spec, root).await;
        let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
        assert_eq!(
            resp.status.unwrap().code,
            Code::InvalidArgument as i32,
            "{target}"
        );
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_actions_run_once_and_cancel_kills() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;
    let action = put_action(&mut cas, f, &sh("sleep 30"), root).await;
    let request = ExecuteRequest {
        action_digest: Some(action.to_proto()),
        ..Default::default()
    };
    let mut exec = ExecutionClient::new(channel.clone());
    let mut first = exec.execute(request.clone()).await.unwrap().into_inner();
    let mut second = exec.execute(request).await.unwrap().into_inner();
    let name = first.next().await.unwrap().unwrap().name;
    let name2 = second.next().await.unwrap().unwrap().name;
    assert_eq!(
        name, name2,
        "identical in-flight actions share one operation"
    );
    drop(second); // a client going away cancels nothing
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut ops = OperationsClient::new(channel.clone());
    let op = ops
        .get_operation(GetOperationRequest { name: name.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(!op.done);
    let started = std::time::Instant::now();
    ops.cancel_operation(CancelOperationRequest { name: name.clone() })
        .await
        .unwrap();
    let mut waited = ExecutionClient::new(channel)
        .wait_execution(WaitExecutionRequest { name })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    while let Some(op) = waited.next().await {
        last = Some(op.unwrap());
    }
    let resp = response_of(&last.unwrap());
    assert_eq!(resp.status.unwrap().code, Code::Cancelled as i32);
    assert!(started.elapsed() < Duration::from_secs(10));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_resource_exhausted_and_timeouts_are_deadlines() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(|c, d| {
        configure(c, d);
        c.jobs = 1;
        c.max_queued = 1;
    })
    .await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;
    let mut names = Vec::new();
    for i in 0..2 {
        let action = put_action(&mut cas, f, &sh(&format!("sleep 30; echo {i}")), root).await;
        let mut s = exec
            .execute(ExecuteRequest {
                action_digest: Some(action.to_proto()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        names.push(s.next().await.unwrap().unwrap().name);
        // Let the first one leave the queue.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let action = put_action(&mut cas, f, &sh("echo third"), root).await;
    let err = execute(&mut exec, f, action, false).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let mut ops = OperationsClient::new(channel.clone());
    for name in names {
        ops.cancel_operation(CancelOperationRequest { name })
            .await
            .unwrap();
    }
    // Timeout: the action asks for one second.
    let mut spec = sh("sleep 20");
    spec.timeout_secs = 1;
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
    assert_eq!(resp.status.unwrap().code, Code::DeadlineExceeded as i32);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reports_unfinished_actions_as_unavailable() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(|c, d| {
        configure(c, d);
        c.shutdown_grace_secs = 1;
    })
    .await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[]).await;
    let action = put_action(&mut cas, f, &sh("sleep 60"), root).await;
    let mut stream = ExecutionClient::new(channel)
        .execute(ExecuteRequest {
            action_digest: Some(action.to_proto()),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    stream.next().await.unwrap().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stopping = tokio::spawn(server.stop());
    let mut last = None;
    while let Some(op) = stream.next().await {
        last = Some(op.unwrap());
    }
    let resp = response_of(&last.unwrap());
    assert_eq!(resp.status.unwrap().code, Code::Unavailable as i32);
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .unwrap()
        .unwrap();
}

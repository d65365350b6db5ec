//! The two ways of driving the helper, through the fake helper (which
//! speaks both the spec/status files and the `--supervisor` JSON lines):
//! concurrent actions through one supervisor, a supervisor that dies
//! mid-action (UNAVAILABLE, then a fresh one), and exec mode.
//! `sandbox_execution.rs` does the same with the real helper.

mod common;

use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::actions::{execute, put_action, put_tree, sh};
use common::fake::{configure, python_available};
use hermeticd::config::SandboxMode;
use hermeticd::digest::DigestFunction;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_actions_share_one_supervisor_and_get_their_own_status() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(|c, d| {
        configure(c, d);
        c.jobs = 4;
    })
    .await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let empty = put_tree(&mut cas, f, &[]).await;
    // Finishing in the reverse of the start order: statuses come back in
    // completion order and must reach the right action.
    let mut tasks = Vec::new();
    for i in 0..4u32 {
        let script = format!("sleep 0.{}; echo action {i}; exit {i}", 8 - 2 * i);
        let action = put_action(&mut cas, f, &sh(&script), empty).await;
        let mut exec = ExecutionClient::new(channel.clone());
        tasks.push(tokio::spawn(async move {
            execute(&mut exec, f, action, false).await.unwrap().1
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let resp = t.await.unwrap();
        assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
        let result = resp.result.unwrap();
        assert_eq!(result.exit_code, i as i32);
        assert_eq!(result.stdout_raw, format!("action {i}\n").into_bytes());
    }
    let sandbox = server.daemon.ctx.engine.sandbox();
    assert!(sandbox.supervisor_pid().await.is_some());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_supervisor_fails_its_actions_as_unavailable_and_is_replaced() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(configure).await;
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let empty = put_tree(&mut cas, f, &[]).await;

    let warm = put_action(&mut cas, f, &sh("echo warm"), empty).await;
    let (_, resp) = execute(&mut exec, f, warm, false).await.unwrap();
    assert_eq!(resp.result.unwrap().exit_code, 0);
    let sandbox = server.daemon.ctx.engine.sandbox();
    let first = sandbox.supervisor_pid().await.expect("a supervisor runs");

    // The step kills the supervisor under itself, then would sleep long.
    let started = Instant::now();
    let doomed = put_action(
        &mut cas,
        f,
        &sh("kill -9 $FAKE_SUPERVISOR_PID; sleep 30"),
        empty,
    )
    .await;
    let (_, resp) = execute(&mut exec, f, doomed, false).await.unwrap();
    let status = resp.status.unwrap();
    assert_eq!(status.code, Code::Unavailable as i32, "{status:?}");
    assert!(
        status.message.contains("sandbox supervisor") && status.message.contains("died"),
        "{status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the orphaned runner was not stopped"
    );

    // Not cached, and the next action gets a fresh supervisor.
    let (_, resp) = execute(&mut exec, f, doomed, false).await.unwrap();
    assert_eq!(resp.status.unwrap().code, Code::Unavailable as i32);
    let after = put_action(&mut cas, f, &sh("echo after"), empty).await;
    let (_, resp) = execute(&mut exec, f, after, false).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    assert_eq!(resp.result.unwrap().stdout_raw, b"after\n");
    let second = sandbox.supervisor_pid().await.expect("a supervisor runs");
    assert_ne!(first, second);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_runs_and_cancels_without_a_supervisor() {
    if !python_available() {
        return;
    }
    let server = TestServer::start(|c, d| {
        configure(c, d);
        c.sandbox_mode = SandboxMode::Exec;
    })
    .await;
    let channel = server.unix_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Blake3;
    let root = put_tree(&mut cas, f, &[("in.txt", b"input\n", false)]).await;
    let mut spec = sh("cat in.txt > out/copy; echo ok");
    spec.output_paths = vec!["out/copy".into()];
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    let result = resp.result.unwrap();
    assert_eq!(result.stdout_raw, b"ok\n");
    assert_eq!(result.output_files[0].path, "out/copy");
    assert_eq!(
        server.daemon.ctx.engine.sandbox().supervisor_pid().await,
        None
    );
    server.stop().await;
}

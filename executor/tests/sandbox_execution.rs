//! Actions through the real `hermetic-sandbox` helper on a busybox rootfs.
//!
//! On a machine without the helper binary, a static busybox, or a kernel
//! that lets the sandbox run, these tests print a loud SKIP; with CI=true
//! they fail instead.

mod common;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Tree, content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::actions::{execute, put_action, put_tree, read_blob, sh};
use common::real::{probe, start, start_with};
use hermeticd::config::SandboxMode;
use hermeticd::digest::DigestFunction;
use prost::Message;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_real_action_in_the_sandbox() {
    let Some(server) = start(SandboxMode::Supervisor).await else {
        return;
    };
    let channel = server.unix_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Sha256;

    if !probe(&channel).await {
        return;
    }

    let root = put_tree(
        &mut cas,
        f,
        &[
            ("src/in.txt", b"hello from the input\n", false),
            ("src/tool.sh", b"#!/bin/sh\necho tool ran\n", true),
        ],
    )
    .await;
    // The step writes into an input directory (src/) and into out/, the
    // parent the daemon creates for the declared outputs.
    let spec = sh(
        "cd src && cat in.txt > ../out/greeting && mkdir ../out/dir \
         && ./tool.sh > ../out/dir/tool && id -u > ../out/dir/uid \
         && echo scratch > new-in-input-dir && ln -s greeting ../out/link && echo done",
    );
    let mut spec = spec;
    spec.output_paths = vec!["out/greeting".into(), "out/dir".into(), "out/link".into()];
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    let result = resp.result.unwrap();
    assert_eq!(
        result.exit_code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&result.stderr_raw)
    );
    assert_eq!(result.stdout_raw, b"done\n");
    let greeting = read_blob(&channel, f, result.output_files[0].digest.as_ref().unwrap()).await;
    assert_eq!(greeting, b"hello from the input\n");
    assert_eq!(result.output_symlinks[0].target, "greeting");
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
    let root_dir = tree.root.unwrap();
    let names: Vec<&str> = root_dir.files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["tool", "uid"]);
    let uid = read_blob(&channel, f, root_dir.files[1].digest.as_ref().unwrap()).await;
    assert_eq!(uid, b"1000\n");
    let log = resp.server_logs.get("execution_log").unwrap();
    let log: serde_json::Value =
        serde_json::from_slice(&read_blob(&channel, f, log.digest.as_ref().unwrap()).await)
            .unwrap();
    assert_eq!(log["profile"], "strict");
    let namespaces = log["restrictions"]["namespaces"].as_array().unwrap();
    assert!(namespaces.iter().any(|n| n == "user"), "{log}");

    // The same input again: src/ comes back from the pool of materialized
    // directories, untouched by what the first step wrote into it.
    let again = sh("ls src && cat src/in.txt && echo x > src/in.txt.new");
    let action = put_action(&mut cas, f, &again, root).await;
    let (_, resp) = execute(&mut exec, f, action, false).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    let result = resp.result.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&result.stdout_raw),
        "in.txt\ntool.sh\nhello from the input\n",
        "stderr: {}",
        String::from_utf8_lossy(&result.stderr_raw)
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_mode_runs_a_real_action() {
    let Some(server) = start(SandboxMode::Exec).await else {
        return;
    };
    let channel = server.tcp_channel().await;
    if !probe(&channel).await {
        return;
    }
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Blake3;
    let root = put_tree(&mut cas, f, &[("a", b"x", false)]).await;
    let action = put_action(&mut cas, f, &sh("cat a; echo y"), root).await;
    let (_, resp) = execute(&mut ExecutionClient::new(channel), f, action, false)
        .await
        .unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    assert_eq!(resp.result.unwrap().stdout_raw, b"xy\n");
    assert_eq!(
        server.daemon.ctx.engine.sandbox().supervisor_pid().await,
        None
    );
    server.stop().await;
}

/// Processes whose command line is exactly `argv`.
fn processes_running(argv: &[&str]) -> Vec<u32> {
    let want: Vec<u8> = argv
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_supervisor_fails_its_action_tears_it_down_and_is_replaced() {
    let Some(server) = start(SandboxMode::Supervisor).await else {
        return;
    };
    let channel = server.unix_channel().await;
    if !probe(&channel).await {
        return;
    }
    let sandbox = server.daemon.ctx.engine.sandbox();
    let first = sandbox.supervisor_pid().await.expect("a supervisor runs");
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let empty = put_tree(&mut cas, f, &[]).await;
    let long = put_action(&mut cas, f, &sh("exec sleep 37"), empty).await;
    let mut exec = ExecutionClient::new(channel.clone());
    let running = tokio::spawn(async move { execute(&mut exec, f, long, false).await });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while processes_running(&["sleep", "37"]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the step never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let (_, resp) = running.await.unwrap().unwrap();
    let status = resp.status.unwrap();
    assert_eq!(status.code, Code::Unavailable as i32, "{status:?}");
    assert!(status.message.contains("died"), "{status:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // The orphaned runner got SIGTERM and tore its sandbox down.
    assert_eq!(processes_running(&["sleep", "37"]), Vec::<u32>::new());

    let again = put_action(&mut cas, f, &sh("echo again"), empty).await;
    let (_, resp) = execute(&mut ExecutionClient::new(channel.clone()), f, again, false)
        .await
        .unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    assert_eq!(resp.result.unwrap().stdout_raw, b"again\n");
    assert_ne!(sandbox.supervisor_pid().await, Some(first));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_configured_cgroup_parent_reaches_the_helper() {
    let missing = format!("hermetic-test-missing-parent-{}", std::process::id());
    let parent = missing.clone();
    let Some(server) = start_with(SandboxMode::Supervisor, move |c| {
        c.cgroup_parent = Some(parent.into());
    })
    .await
    else {
        return;
    };
    let channel = server.tcp_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let empty = put_tree(&mut cas, f, &[]).await;
    let action = put_action(&mut cas, f, &sh("true"), empty).await;
    let (_, resp) = execute(&mut ExecutionClient::new(channel), f, action, false)
        .await
        .unwrap();
    let status = resp.status.unwrap();
    // The helper looked for exactly that parent and refused to run without
    // it (whether or not cgroups work here at all).
    assert_eq!(status.code, Code::Internal as i32, "{status:?}");
    assert!(status.message.contains(&missing), "{status:?}");
    server.stop().await;
}

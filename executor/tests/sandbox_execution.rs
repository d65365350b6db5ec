//! Actions through the real `hermetic-sandbox` helper on a busybox rootfs.
//!
//! On a machine without the helper binary, a static busybox, or a kernel
//! that lets the sandbox run, these tests print a loud SKIP; with CI=true
//! they fail instead.

mod common;

use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    BatchReadBlobsRequest, Digest, Tree,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::actions::{execute, put_action, put_tree, sh};
use hermeticd::digest::DigestFunction;
use prost::Message;
use tonic::Code;
use tonic::transport::Channel;

fn skip_or_fail(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("the real sandbox must work in CI: {why}");
    }
    eprintln!("\n==== SKIP: {why} ====\n");
}

/// The helper binary: $HERMETIC_SANDBOX_HELPER, else `hermetic-sandbox`
/// in the target directory this test was built into.
fn helper() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("HERMETIC_SANDBOX_HELPER") {
        return Some(p.into());
    }
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.parent()?.join("hermetic-sandbox");
    p.is_file().then_some(p)
}

/// A busybox rootfs built by `scripts/busybox-rootfs.sh`.
fn busybox_rootfs(dir: &Path) -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/busybox-rootfs.sh");
    let dest = dir.join("busybox");
    let out = std::process::Command::new("sh")
        .arg(&script)
        .arg(&dest)
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    Some(dest)
}

async fn start() -> Option<TestServer> {
    let Some(helper) = helper() else {
        skip_or_fail("the hermetic-sandbox binary is not built (cargo build --workspace --bins)");
        return None;
    };
    let images = tempfile::tempdir().unwrap();
    let Some(rootfs) = busybox_rootfs(images.path()) else {
        skip_or_fail("no static busybox for the test rootfs (apt-get install busybox-static)");
        return None;
    };
    let server = TestServer::start(move |c, dir| {
        let moved = dir.join("busybox");
        std::fs::rename(&rootfs, &moved).unwrap();
        c.images.insert("busybox".into(), moved);
        c.default_image = Some("busybox".into());
        c.sandbox_helper = Some(helper);
        c.profiles_dir = Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles"));
    })
    .await;
    drop(images);
    Some(server)
}

async fn read_blob(channel: &Channel, f: DigestFunction, d: &Digest) -> Vec<u8> {
    let mut r = ContentAddressableStorageClient::new(channel.clone())
        .batch_read_blobs(BatchReadBlobsRequest {
            digests: vec![d.clone()],
            digest_function: f.to_proto(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .responses;
    std::mem::take(&mut r[0].data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_real_action_in_the_sandbox() {
    let Some(server) = start().await else { return };
    let channel = server.unix_channel().await;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Sha256;

    // Probe: can the sandbox run at all here?
    let empty = put_tree(&mut cas, f, &[]).await;
    let probe = put_action(&mut cas, f, &sh("true"), empty).await;
    let (_, resp) = execute(&mut exec, f, probe, false).await.unwrap();
    let status = resp.status.clone().unwrap();
    if status.code == Code::Internal as i32 && status.message.contains("sandbox") {
        skip_or_fail(&format!("the sandbox cannot run here: {}", status.message));
        return;
    }
    assert_eq!(status.code, 0, "{resp:?}");

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
    server.stop().await;
}

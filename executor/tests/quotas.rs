//! Quotas and fairness between two principals (two mTLS client
//! certificates, so no second uid is needed), on a real daemon with one
//! execution slot and the fake helper (which runs commands on the host,
//! so they can record their order in a file and wait for a gate the test
//! opens).

mod common;

use std::path::Path;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ExecuteRequest, content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::longrunning::Operation;
use common::TestServer;
use common::actions::{put_action, put_tree, sh};
use common::pki::{Pki, tls_channel};
use hermeticd::digest::{BlobKey, DigestFunction};
use tonic::Code;
use tonic::transport::Channel;

const F: DigestFunction = DigestFunction::Sha256;

/// Starts an execution and returns once the daemon accepted it.
async fn submit(
    channel: &Channel,
    action: BlobKey,
) -> Result<tonic::Streaming<Operation>, tonic::Status> {
    let mut stream = ExecutionClient::new(channel.clone())
        .execute(ExecuteRequest {
            action_digest: Some(action.to_proto()),
            skip_cache_lookup: true,
            digest_function: F.to_proto(),
            ..Default::default()
        })
        .await?
        .into_inner();
    stream.message().await?.expect("a first operation");
    Ok(stream)
}

/// Follows an accepted execution to its end; asserts success.
async fn finish(mut stream: tonic::Streaming<Operation>) {
    let mut last = None;
    while let Some(op) = stream.message().await.unwrap() {
        last = Some(op);
    }
    let resp = common::actions::response_of(&last.unwrap());
    assert_eq!(resp.status.unwrap().code, 0, "{:?}", resp.result);
}

/// An action appending `name` to `log` once `gate` exists (after
/// touching `started`).
async fn step(channel: &Channel, dir: &Path, name: &str) -> BlobKey {
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let root = put_tree(&mut cas, F, &[]).await;
    let d = dir.display();
    let script = format!(
        "touch {d}/started-{name}; while [ ! -e {d}/gate ]; do sleep 0.02; done; echo {name} >> {d}/order"
    );
    put_action(&mut cas, F, &sh(&script), root).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn principals_are_served_in_turn_within_their_quotas() {
    if !common::fake::python_available() {
        return;
    }
    let pki = Pki::new("hermetic test CA");
    let (alice, bob) = (pki.issue("alice"), pki.issue("bob"));
    let server = TestServer::start(|c, dir| {
        common::fake::configure(c, dir);
        pki.configure(c, dir);
        c.jobs = 1;
        c.quotas.max_queued_actions = 2;
        c.auth.roles.submit = vec![
            "cert:CN=alice, O=hermetic tests".into(),
            "cert:CN=bob, O=hermetic tests".into(),
        ];
    })
    .await;
    let ca = pki.ca.pem();
    let a = tls_channel(server.tcp, &ca, Some(&alice)).await.unwrap();
    let b = tls_channel(server.tcp, &ca, Some(&bob)).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();

    // alice's first action takes the only slot and holds it.
    let a1 = submit(&a, step(&a, dir, "alice-1").await).await.unwrap();
    while !dir.join("started-alice-1").exists() {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // alice queues two more, her quota; a third is refused.
    let a2 = submit(&a, step(&a, dir, "alice-2").await).await.unwrap();
    let a3 = submit(&a, step(&a, dir, "alice-3").await).await.unwrap();
    let refused = submit(&a, step(&a, dir, "alice-4").await)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused
            .message()
            .contains("x509:CN=alice, O=hermetic tests already has 2 actions queued"),
        "{}",
        refused.message()
    );
    // bob's quota is his own; he queues after alice's backlog.
    let b1 = submit(&b, step(&b, dir, "bob-1").await).await.unwrap();

    std::fs::write(dir.join("gate"), b"").unwrap();
    for s in [a1, a2, a3, b1] {
        finish(s).await;
    }
    let order = std::fs::read_to_string(dir.join("order")).unwrap();
    // Round-robin: bob runs after alice's next action, not after all of
    // hers (FIFO would give alice-1, alice-2, alice-3, bob-1).
    assert_eq!(
        order.lines().collect::<Vec<_>>(),
        ["alice-1", "alice-2", "bob-1", "alice-3"]
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_stop_at_the_principals_quota() {
    let pki = Pki::new("hermetic test CA");
    let (alice, bob) = (pki.issue("alice"), pki.issue("bob"));
    let server = TestServer::start(|c, dir| {
        pki.configure(c, dir);
        c.quotas.upload_bytes_per_period = 100_000;
        c.auth.roles.submit = vec![
            "cert:CN=alice, O=hermetic tests".into(),
            "cert:CN=bob, O=hermetic tests".into(),
        ];
    })
    .await;
    let ca = pki.ca.pem();
    let mut a = ContentAddressableStorageClient::new(
        tls_channel(server.tcp, &ca, Some(&alice)).await.unwrap(),
    );
    let mut b = ContentAddressableStorageClient::new(
        tls_channel(server.tcp, &ca, Some(&bob)).await.unwrap(),
    );
    let blob = |seed: u8| vec![seed; 60_000];
    common::try_upload(&mut a, F, &[&blob(1)]).await.unwrap();
    let err = common::try_upload(&mut a, F, &[&blob(2)])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("quota of 100000 bytes per 3600 s"),
        "{}",
        err.message()
    );
    assert!(
        !server
            .daemon
            .ctx
            .store
            .contains(&hermeticd::digest::key_of(F, &blob(2)))
    );
    // bob has his own allowance.
    common::try_upload(&mut b, F, &[&blob(3)]).await.unwrap();
    server.stop().await;
}

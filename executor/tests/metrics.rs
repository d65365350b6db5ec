//! The Prometheus endpoint scraped after real work: an action run through
//! the fake helper, the same action again (a cache hit), a call refused by
//! authorization, and blobs uploaded.

mod common;

use std::io::{Read, Write};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ActionResult, UpdateActionResultRequest, action_cache_client::ActionCacheClient,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::TestServer;
use common::actions::{execute, put_action, put_tree, sh};
use hermeticd::digest::DigestFunction;
use tonic::Code;

/// `GET path` over HTTP/1.1; (status line, body).
fn get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the sample `name` (with its labels, exactly as exposed).
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {name} in\n{body}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_move_after_real_work() {
    if !common::fake::python_available() {
        return;
    }
    let server = TestServer::start(|c, dir| {
        common::fake::configure(c, dir);
        // fsync on, so BatchUpdateBlobs goes through the CAS journal.
        c.cas.no_fsync = false;
        c.action_cache.allow_client_updates = true;
        // Our own user only submits here, so UpdateActionResult is refused.
        c.auth.roles.admin = vec![];
        c.auth.roles.submit = vec!["self".into()];
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let scraper = tokio::spawn(hermeticd::metrics::serve(
        server.daemon.metrics_registry(),
        listener,
        async {
            let _ = stopped.await;
        },
    ));

    let channel = server.unix_channel().await;
    let f = DigestFunction::Sha256;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let root = put_tree(&mut cas, f, &[("in.txt", b"metrics input", false)]).await;
    let action = put_action(&mut cas, f, &sh("cat in.txt > /dev/null"), root).await;
    let (_, first) = execute(&mut exec, f, action, false).await.unwrap();
    assert_eq!(first.status.unwrap().code, 0);
    assert!(!first.cached_result);
    let (_, second) = execute(&mut exec, f, action, false).await.unwrap();
    assert!(second.cached_result);
    let refused = ActionCacheClient::new(channel)
        .update_action_result(UpdateActionResultRequest {
            action_digest: Some(action.to_proto()),
            action_result: Some(ActionResult::default()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let m = {
        let (status, body) = tokio::task::spawn_blocking(move || get(addr, "/metrics"))
            .await
            .unwrap();
        assert!(status.contains("200"), "{status}");
        body
    };
    assert_eq!(
        sample(&m, "hermeticd_actions_total{outcome=\"completed\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "hermeticd_action_cache_lookups_total{result=\"miss\"}"),
        1.0
    );
    assert_eq!(
        sample(&m, "hermeticd_action_cache_lookups_total{result=\"hit\"}"),
        1.0
    );
    for stage in [
        "queue_wait",
        "staging",
        "sandbox_setup",
        "execution",
        "output_ingest",
    ] {
        let name = format!("hermeticd_action_stage_duration_seconds_count{{stage=\"{stage}\"}}");
        assert_eq!(sample(&m, &name), 1.0, "{stage}");
    }
    assert_eq!(
        sample(
            &m,
            "hermeticd_auth_denials_total{method=\"/build.bazel.remote.execution.v2.ActionCache/UpdateActionResult\"}"
        ),
        1.0
    );
    assert!(sample(&m, "hermeticd_cas_written_bytes_total") > 0.0);
    assert!(sample(&m, "hermeticd_cas_read_bytes_total") > 0.0);
    assert!(sample(&m, "hermeticd_cas_size_bytes") > 0.0);
    assert_eq!(sample(&m, "hermeticd_queued_actions"), 0.0);
    assert_eq!(sample(&m, "hermeticd_running_actions"), 0.0);
    assert_eq!(sample(&m, "hermeticd_oom_kills_total"), 0.0);
    assert_eq!(sample(&m, "hermeticd_timeouts_total"), 0.0);
    assert_eq!(sample(&m, "hermeticd_cas_evictions_total"), 0.0);
    // The uploads are journaled, not yet checkpointed (30 s on).
    assert!(sample(&m, "hermeticd_cas_journal_size_bytes") > 0.0);
    assert_eq!(sample(&m, "hermeticd_cas_journal_checkpoints_total"), 0.0);
    assert_eq!(
        sample(&m, "hermeticd_cas_journal_checkpoint_failures_total"),
        0.0
    );
    assert!(
        m.contains(&format!(
            "hermeticd_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{m}"
    );
    let (status, _) = tokio::task::spawn_blocking(move || get(addr, "/other"))
        .await
        .unwrap();
    assert!(status.contains("404"), "{status}");

    let _ = stop.send(());
    scraper.await.unwrap();
    server.stop().await;
}

//! OTLP trace export (issue 8): the real `hermeticd` binary, configured with
//! `[tracing] otlp_endpoint`, runs one action through the real sandbox; a
//! real OTLP/gRPC collector (a tonic `TraceService` on a loopback port)
//! receives the action's span, with its digest, operation and outcome, once
//! the daemon has stopped on SIGTERM. And a collector that is not there
//! costs nothing but a logged warning.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::actions::{execute, put_action, put_tree, sh};
use common::real;
use hermeticd::digest::{BlobKey, DigestFunction};
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use tonic::transport::{Channel, Endpoint, Uri};

/// Keeps every export request it receives.
#[derive(Debug, Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Serves a collector on 127.0.0.1:0; its address and what it received.
async fn start_collector() -> (std::net::SocketAddr, Collector) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let collector = Collector::default();
    let service = TraceServiceServer::new(collector.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    (addr, collector)
}

/// A config for the real helper on a busybox rootfs, exporting to
/// `endpoint`; `None` (after a SKIP, or a failure in CI) without them.
fn write_config(dir: &Path, endpoint: &str) -> Option<()> {
    let Some(helper) = real::helper() else {
        real::skip_or_fail(
            "the hermetic-sandbox binary is not built (cargo build --workspace --bins)",
        );
        return None;
    };
    let Some(rootfs) = real::busybox_rootfs(dir) else {
        real::skip_or_fail(
            "no static busybox for the test rootfs (apt-get install busybox-static)",
        );
        return None;
    };
    let profiles = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
    let toml = format!(
        "default_image = \"busybox\"\n\
         sandbox_helper = {helper:?}\n\
         profiles_dir = {profiles:?}\n\
         [images]\nbusybox = {rootfs:?}\n\
         [metrics]\ndisabled = true\n\
         [tracing]\notlp_endpoint = {endpoint:?}\nservice_name = \"hermeticd-otlp-test\"\n"
    );
    std::fs::write(dir.join("hermeticd.toml"), toml).unwrap();
    Some(())
}

/// The daemon, and a thread collecting its stderr (read as it comes, so
/// that a full pipe never stalls it).
fn spawn(dir: &Path) -> (Child, std::thread::JoinHandle<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hermeticd"))
        .arg("--config")
        .arg(dir.join("hermeticd.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--listen")
        .arg(format!("unix://{}", dir.join("sock").display()))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        use std::io::Read;
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    (child, logs)
}

async fn connect(dir: &Path, child: &mut Child) -> Channel {
    let path = dir.join("sock");
    let deadline = Instant::now() + Duration::from_secs(60);
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
            Err(e) => {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!("hermeticd exited ({status}) before serving: {e}");
                }
                if Instant::now() > deadline {
                    panic!("hermeticd did not come up: {e}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs `echo` through the daemon; the action's key and operation name, or
/// `None` when the sandbox cannot run here (SKIP, or a failure in CI).
async fn run_one(channel: &Channel) -> Option<(BlobKey, String)> {
    if !real::probe(channel).await {
        return None;
    }
    let f = DigestFunction::Sha256;
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let root = put_tree(&mut cas, f, &[("in.txt", b"otlp input", false)]).await;
    let action = put_action(&mut cas, f, &sh("cat in.txt && echo traced"), root).await;
    let (ops, resp) = execute(&mut exec, f, action, true).await.unwrap();
    assert_eq!(resp.status.as_ref().map(|s| s.code), Some(0), "{resp:?}");
    let result = resp.result.unwrap();
    assert_eq!(result.exit_code, 0);
    assert_eq!(result.stdout_raw, b"otlp inputtraced\n");
    Some((action, ops.last().unwrap().name.clone()))
}

/// Kills the daemon when a test fails before [`terminate`].
struct KillOnDrop(Option<Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGTERM, then the exit status and everything written on stderr.
async fn terminate(
    mut guard: KillOnDrop,
    logs: std::thread::JoinHandle<String>,
) -> (std::process::ExitStatus, String) {
    let mut child = guard.0.take().unwrap();
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::task::spawn_blocking(move || (child.wait().unwrap(), logs.join().unwrap()))
        .await
        .unwrap()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v: &AnyValue| v.value.as_ref())
}

fn string_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attr(attrs, key)? {
        any_value::Value::StringValue(s) => Some(s),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_action_span_reaches_the_collector() {
    let (addr, collector) = start_collector().await;
    let dir = tempfile::tempdir().unwrap();
    if write_config(dir.path(), &format!("http://{addr}")).is_none() {
        return;
    }
    let (child, logs) = spawn(dir.path());
    let mut guard = KillOnDrop(Some(child));
    let channel = connect(dir.path(), guard.0.as_mut().unwrap()).await;
    let ran = run_one(&channel).await;
    drop(channel);
    let (status, stderr) = terminate(guard, logs).await;
    assert!(
        status.success(),
        "hermeticd exited with {status}:\n{stderr}"
    );
    let Some((action, operation)) = ran else {
        return;
    };

    // Everything was flushed on SIGTERM: the exports are already here.
    let received = collector.received.lock().unwrap().clone();
    assert!(
        !received.is_empty(),
        "no export reached the collector:\n{stderr}"
    );
    let mut spans: Vec<&Span> = Vec::new();
    for request in &received {
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().expect("a resource");
            assert_eq!(
                string_attr(&resource.attributes, "service.name"),
                Some("hermeticd-otlp-test")
            );
            spans.extend(rs.scope_spans.iter().flat_map(|s| &s.spans));
        }
    }
    let digest = format!("{action:?}");
    let action_span = spans
        .iter()
        .find(|s| {
            s.name == "action" && string_attr(&s.attributes, "action") == Some(digest.as_str())
        })
        .unwrap_or_else(|| {
            let names: Vec<_> = spans.iter().map(|s| (&s.name, &s.attributes)).collect();
            panic!("no action span for {digest} among {names:#?}")
        });
    assert_eq!(
        string_attr(&action_span.attributes, "operation"),
        Some(operation.as_str())
    );
    assert_eq!(
        string_attr(&action_span.attributes, "outcome"),
        Some("completed"),
        "{action_span:#?}"
    );
    assert_eq!(
        attr(&action_span.attributes, "exit_code"),
        Some(&any_value::Value::IntValue(0))
    );
    assert!(action_span.end_time_unix_nano >= action_span.start_time_unix_nano);
    // The stages are its children.
    for stage in ["staging", "sandbox", "output_ingest"] {
        assert!(
            spans.iter().any(|s| s.name == stage
                && s.trace_id == action_span.trace_id
                && s.parent_span_id == action_span.span_id),
            "no {stage} span under the action span"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_collector_is_logged_and_harmless() {
    // A port that was just free: nothing listens there.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    if write_config(dir.path(), &format!("http://127.0.0.1:{port}")).is_none() {
        return;
    }
    let (child, logs) = spawn(dir.path());
    let mut guard = KillOnDrop(Some(child));
    let channel = connect(dir.path(), guard.0.as_mut().unwrap()).await;
    let ran = run_one(&channel).await;
    drop(channel);
    let (status, stderr) = terminate(guard, logs).await;
    assert!(
        status.success(),
        "hermeticd exited with {status}:\n{stderr}"
    );
    if ran.is_none() {
        return;
    }
    assert!(
        stderr.contains("OTLP export failed"),
        "the failed export is not logged:\n{stderr}"
    );
}

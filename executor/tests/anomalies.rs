//! Anomaly indicators end to end (issue 8): through the real helper, an
//! action that tries the network and one that writes outside its declared
//! outputs. Each shows in its execution log and in the metrics, and fires
//! the alert hook: the command (which writes the alert to a file this test
//! reads) and the webhook (a tiny HTTP listener in this test). An action
//! without anomalies fires nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    ExecuteResponse, content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use common::actions::{execute, put_action, put_tree, read_blob, sh};
use common::real::{probe, start_with};
use hermeticd::config::SandboxMode;
use hermeticd::digest::DigestFunction;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tonic::transport::Channel;

async fn execution_log(channel: &Channel, f: DigestFunction, resp: &ExecuteResponse) -> Value {
    let log = resp
        .server_logs
        .get("execution_log")
        .expect("execution log");
    serde_json::from_slice(&read_blob(channel, f, log.digest.as_ref().unwrap()).await).unwrap()
}

/// Accepts HTTP/1.1 POSTs, answers 204 and sends each body on the channel.
async fn webhook(listener: tokio::net::TcpListener, tx: mpsc::UnboundedSender<Value>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (head_end, length) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before a whole request");
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                    assert!(head.starts_with("post /hook "), "{head}");
                    assert!(head.contains("content-type: application/json"), "{head}");
                    let length: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .expect("content-length")
                        .trim()
                        .parse()
                        .unwrap();
                    break (i + 4, length);
                }
            };
            while buf.len() < head_end + length {
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed before the whole body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body: Value = serde_json::from_slice(&buf[head_end..head_end + length]).unwrap();
            s.write_all(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
            let _ = tx.send(body);
        });
    }
}

/// The alerts the command wrote so far (`tee -a`: documents back to back).
fn command_alerts(file: &Path) -> Vec<Value> {
    let text = std::fs::read(file).unwrap_or_default();
    serde_json::Deserializer::from_slice(&text)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect()
}

/// Waits until `file` holds `n` alerts (delivery is in the background).
async fn wait_for_alerts(file: &Path, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let got = command_alerts(file);
        if got.len() >= n {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    command_alerts(file)
}

/// The value of `name` (with its labels, exactly as exposed), 0 when absent.
fn sample(body: &str, name: &str) -> f64 {
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_and_stray_writes_are_logged_counted_and_alerted() {
    let hooks = tempfile::tempdir().unwrap();
    let alert_file = hooks.path().join("alerts.json");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut posted) = mpsc::unbounded_channel();
    tokio::spawn(webhook(listener, tx));
    let file = alert_file.clone();
    let Some(server) = start_with(SandboxMode::Supervisor, move |c| {
        c.alerts.command = vec![
            "/usr/bin/tee".into(),
            "-a".into(),
            file.display().to_string(),
        ];
        c.alerts.webhook = Some(format!("http://127.0.0.1:{port}/hook"));
    })
    .await
    else {
        return;
    };
    let channel = server.unix_channel().await;
    if !probe(&channel).await {
        return;
    }
    let mut cas = ContentAddressableStorageClient::new(channel.clone());
    let mut exec = ExecutionClient::new(channel.clone());
    let f = DigestFunction::Sha256;
    let root = put_tree(&mut cas, f, &[("in.txt", b"input\n", false)]).await;
    let scrape = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &server.daemon.metrics_registry())
            .unwrap();
        text
    };
    let before = scrape();
    let net = "hermeticd_anomalies_total{kind=\"network\"}";
    let writes = "hermeticd_anomalies_total{kind=\"write_outside_outputs\"}";
    let denied = "hermeticd_network_denied_total";

    // 1. The network: a TCP connect off the host (busybox nc), which fails.
    let mut spec = sh("nc -w 2 10.0.0.1 80 </dev/null; echo nc=$? > out/a");
    spec.output_paths = vec!["out/a".into()];
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, true).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    let log = execution_log(&channel, f, &resp).await;
    let a = &log["anomalies"];
    assert_eq!(a["network_watched"], true, "{a}");
    let attempts = a["network"].as_array().expect("network list");
    assert_eq!(attempts.len(), 1, "{a}");
    assert_eq!(attempts[0]["syscall"], "connect");
    assert_eq!(attempts[0]["address"], "10.0.0.1");
    assert_eq!(attempts[0]["port"], 80);
    assert_eq!(attempts[0]["errno"], 101, "ENETUNREACH");
    assert_eq!(a["writes_outside_outputs"], serde_json::json!([]), "{a}");

    // 2. A write outside the declared output.
    let mut spec = sh("echo a > out/a && echo junk > stray && mkdir -p d && echo b > d/also");
    spec.output_paths = vec!["out/a".into()];
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, true).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    assert_eq!(resp.result.as_ref().unwrap().exit_code, 0, "{resp:?}");
    let log = execution_log(&channel, f, &resp).await;
    let a = &log["anomalies"];
    assert_eq!(a["writes_checked"], true, "{a}");
    assert_eq!(
        a["writes_outside_outputs"],
        serde_json::json!(["d/also", "stray"]),
        "{a}"
    );
    assert_eq!(a["network"], serde_json::json!([]), "{a}");

    // 3. Nothing unusual: no alert.
    let mut spec = sh("cat in.txt > out/a");
    spec.output_paths = vec!["out/a".into()];
    let action = put_action(&mut cas, f, &spec, root).await;
    let (_, resp) = execute(&mut exec, f, action, true).await.unwrap();
    assert_eq!(resp.status.as_ref().unwrap().code, 0, "{resp:?}");
    let log = execution_log(&channel, f, &resp).await;
    assert_eq!(log["anomalies"]["network"], serde_json::json!([]));
    assert_eq!(
        log["anomalies"]["writes_outside_outputs"],
        serde_json::json!([])
    );

    // The metrics moved by exactly what was recorded.
    let after = scrape();
    assert_eq!(sample(&after, net) - sample(&before, net), 1.0, "{after}");
    assert_eq!(
        sample(&after, writes) - sample(&before, writes),
        2.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, denied) - sample(&before, denied),
        1.0,
        "{after}"
    );

    // The command got both alerts (and only those two), in the background.
    let alerts = wait_for_alerts(&alert_file, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let alerts_now = command_alerts(&alert_file);
    assert_eq!(alerts_now.len(), 2, "alerts: {alerts_now:?}");
    assert!(alerts.iter().all(|a| a["kind"] == "anomaly"), "{alerts:?}");
    let network_alert = alerts
        .iter()
        .find(|a| {
            a["anomalies"]["network"]
                .as_array()
                .is_some_and(|n| !n.is_empty())
        })
        .expect("an alert for the network attempt");
    assert_eq!(
        network_alert["anomalies"]["network"][0]["address"],
        "10.0.0.1"
    );
    assert!(network_alert["action"].as_str().is_some());
    assert!(
        alerts
            .iter()
            .any(|a| a["anomalies"]["writes_outside_outputs"]
                == serde_json::json!(["d/also", "stray"])),
        "{alerts:?}"
    );

    // The webhook got the same two.
    let mut bodies = Vec::new();
    for _ in 0..2 {
        let body = tokio::time::timeout(Duration::from_secs(20), posted.recv())
            .await
            .expect("a webhook POST")
            .expect("the webhook listener runs");
        bodies.push(body);
    }
    assert!(bodies.iter().all(|b| b["kind"] == "anomaly"), "{bodies:?}");
    // Each delivery is counted once its answer is in.
    let sent = |channel: &str| {
        sample(
            &scrape(),
            &format!("hermeticd_alerts_total{{channel=\"{channel}\",result=\"sent\"}}"),
        )
    };
    for _ in 0..200 {
        if sent("webhook") >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sent("command"), 2.0);
    assert_eq!(sent("webhook"), 2.0);

    // A verification failure: the image is no longer trusted, the action
    // is refused, the hook hears of it.
    hermetic_proto::ImagesClient::new(channel.clone())
        .set_trust(hermetic_proto::v1::SetTrustRequest {
            image: "busybox".into(),
            trusted: false,
        })
        .await
        .unwrap();
    let empty = put_tree(&mut cas, f, &[]).await;
    let action = put_action(&mut cas, f, &sh("true"), empty).await;
    let code = match execute(&mut exec, f, action, true).await {
        Err(status) => status.code() as i32,
        Ok((_, resp)) => resp.status.unwrap().code,
    };
    assert_eq!(code, tonic::Code::FailedPrecondition as i32);
    let alerts = wait_for_alerts(&alert_file, 3).await;
    assert_eq!(alerts.len(), 3, "{alerts:?}");
    assert_eq!(alerts[2]["kind"], "verification_failure", "{alerts:?}");
    let message = alerts[2]["message"].as_str().unwrap();
    assert!(message.contains("is not trusted"), "{message}");
    server.stop().await;
}

#[test]
fn a_log_failing_verification_at_start_up_fires_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let alert_file = dir.path().join("alerts.json");
    let config = || {
        let mut c = hermeticd::config::Config {
            state_dir: Some(state.clone()),
            ..Default::default()
        };
        c.alerts.command = vec![
            "/usr/bin/tee".into(),
            "-a".into(),
            alert_file.display().to_string(),
        ];
        c
    };
    drop(hermeticd::Daemon::open(config()).unwrap());
    assert!(
        command_alerts(&alert_file).is_empty(),
        "a clean start alerts nobody"
    );
    // Flip one byte of the log's only entry (the key's creation).
    let path = state.join("attest/log/entries");
    let mut data = std::fs::read(&path).unwrap();
    let at = data
        .windows(7)
        .position(|w| w == b"created")
        .expect("the key event names its creation");
    data[at] = b'C';
    std::fs::write(&path, &data).unwrap();
    let err = hermeticd::Daemon::open(config()).unwrap_err().to_string();
    // The alert was delivered before Daemon::open returned.
    let alerts = command_alerts(&alert_file);
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["kind"], "verification_failure");
    let message = alerts[0]["message"].as_str().unwrap();
    assert!(
        message.contains("transparency log") && message.contains(&err),
        "{message}"
    );
}

//! The scale benchmark (issue 9):
//!
//! 1. `clients`: throughput and latency (p50, p99) of cache hits and of
//!    no-op cache misses with 1, 8, 32 and 128 concurrent clients, each on
//!    its own connection, hermeticd beside buildbox-casd + buildbox-run.
//! 2. `queue`: hermeticd's resident memory with many actions queued (both
//!    job slots held by `sleep`, the queue limit raised by config).
//! 3. `blobs`: a CAS holding a million small blobs (fewer in fast mode):
//!    the upload rate, FindMissingBlobs of 10,000 digests, disk use; on
//!    both servers.

pub mod report;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, ExecuteRequest, FindMissingBlobsRequest,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use hermeticd::digest::{BlobKey, key_of};
use prost::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::peer::{Inputs, Server, nonce, start_pair, want};
use crate::reapi::client::{Daemon, DaemonOptions, F, command, execute, put_action, upload};

/// What to measure and how much.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrency levels.
    pub clients: Vec<usize>,
    /// Seconds measured per level and kind (after a warm-up of a quarter).
    pub window_secs: f64,
    /// Actions queued for the memory figure.
    pub queued: usize,
    /// Small blobs stored.
    pub blobs: usize,
    /// Bytes per small blob.
    pub blob_size: usize,
    /// FindMissingBlobs calls.
    pub find_rounds: usize,
}

/// One level of concurrency, one kind, one server.
#[derive(Debug, Clone)]
pub struct Level {
    /// Server.
    pub server: &'static str,
    /// `hit` or `miss`.
    pub kind: &'static str,
    /// Concurrent clients.
    pub clients: usize,
    /// Completed requests per second in the window.
    pub per_sec: f64,
    /// Latencies (ms) of the requests completed in the window.
    pub latencies: Vec<f64>,
}

/// The queue's memory figure.
#[derive(Debug, Clone, Default)]
pub struct Queue {
    /// Actions queued (beyond the two running).
    pub queued: usize,
    /// hermeticd's VmRSS before any was sent (KiB).
    pub rss_before_kib: u64,
    /// VmRSS with all of them queued (KiB).
    pub rss_queued_kib: u64,
    /// VmHWM at that point (KiB).
    pub hwm_kib: u64,
    /// Seconds to get every one of them accepted.
    pub submit_secs: f64,
}

/// The many-blobs figures of one server.
#[derive(Debug, Clone, Default)]
pub struct Blobs {
    /// Server.
    pub server: &'static str,
    /// Blobs stored.
    pub count: usize,
    /// Bytes each.
    pub size: usize,
    /// Seconds to upload them all.
    pub upload_secs: f64,
    /// FindMissingBlobs latencies (ms), 10,000 digests, half present.
    pub find: Vec<f64>,
    /// Bytes on disk of the store directory (allocated blocks).
    pub disk_bytes: u64,
    /// Files in it.
    pub files: u64,
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// Concurrency levels.
    pub levels: Vec<Level>,
    /// hermeticd with a long queue.
    pub queue: Option<Queue>,
    /// Many small blobs.
    pub blobs: Vec<Blobs>,
}

/// Runs every part (`HERMETIC_BENCH_ONLY=clients,queue,blobs` selects).
pub fn run(inputs: &Inputs, plan: &Plan) -> Result<Results> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run_all(inputs, plan))
}

async fn run_all(inputs: &Inputs, plan: &Plan) -> Result<Results> {
    let mut r = Results::default();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    if want("clients") {
        let (daemon, casd, h, b) = start_pair(
            inputs,
            jobs,
            &format!(
                "max_queued = {}\n",
                4 * plan.clients.iter().max().unwrap_or(&1)
            ),
        )
        .await?;
        for &n in &plan.clients {
            for kind in ["hit", "miss"] {
                // Alternate which server goes first.
                let order: [&Server; 2] = if (n + kind.len()) % 2 == 0 {
                    [&h, &b]
                } else {
                    [&b, &h]
                };
                for s in order {
                    let level = concurrent(s, kind, n, plan.window_secs, || async {
                        match s.name {
                            "hermeticd" => daemon.connect().await,
                            _ => casd.connect().await,
                        }
                    })
                    .await
                    .with_context(|| format!("{} {kind} × {n}", s.name))?;
                    eprintln!(
                        "hermetic-bench: {} {kind} × {n}: {:.0}/s",
                        s.name, level.per_sec
                    );
                    r.levels.push(level);
                }
            }
        }
    }
    if want("queue") {
        r.queue = Some(queue(inputs, plan.queued).await?);
    }
    if want("blobs") {
        let (_daemon, casd, h, b) = start_pair(inputs, jobs, "").await?;
        let state = inputs.reapi.work.join("peer-hermeticd-state");
        r.blobs.push(many_blobs(&h, plan, &state).await?);
        r.blobs.push(many_blobs(&b, plan, casd.cache()).await?);
    }
    Ok(r)
}

/// `n` clients, each on its own connection, looping for the window.
async fn concurrent<C, Fut>(
    s: &Server,
    kind: &'static str,
    n: usize,
    window: f64,
    connect: C,
) -> Result<Level>
where
    C: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Channel>>,
{
    let nonce = nonce();
    let cmd = command(&["/bin/true"], &[]);
    let hit_action = put_action(
        &s.channel,
        &cmd,
        s.noop_root,
        format!("scale-hit-{nonce}").as_bytes(),
    )
    .await?;
    if kind == "hit" {
        execute(&mut ExecutionClient::new(s.channel.clone()), hit_action).await?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..n {
        let channel = connect().await?;
        let (stop, measuring) = (stop.clone(), measuring.clone());
        let (root, cmd) = (s.noop_root, cmd.clone());
        tasks.push(tokio::spawn(async move {
            let mut exec = ExecutionClient::new(channel.clone());
            let mut lat = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let action = if kind == "hit" {
                    hit_action
                } else {
                    i += 1;
                    let salt = format!("scale-miss-{nonce}-{c}-{i}");
                    put_action(&channel, &cmd, root, salt.as_bytes()).await?
                };
                let start = Instant::now();
                let resp = execute(&mut exec, action).await?;
                let t = start.elapsed().as_secs_f64() * 1e3;
                anyhow::ensure!(
                    resp.cached_result == (kind == "hit"),
                    "unexpected cache state"
                );
                if measuring.load(Ordering::Relaxed) && !stop.load(Ordering::Relaxed) {
                    lat.push(t);
                }
            }
            anyhow::Ok(lat)
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(window / 4.0)).await;
    measuring.store(true, Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(window)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = start.elapsed().as_secs_f64();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await??);
    }
    Ok(Level {
        server: s.name,
        kind,
        clients: n,
        per_sec: latencies.len() as f64 / elapsed,
        latencies,
    })
}

/// `VmRSS` and `VmHWM` of `pid` in KiB.
fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// hermeticd with `queued` actions waiting behind two `sleep`s.
async fn queue(inputs: &Inputs, queued: usize) -> Result<Queue> {
    let ri = &inputs.reapi;
    let daemon = Daemon::start_with(
        &ri.hermeticd,
        &ri.sandbox,
        &ri.rootfs,
        &ri.profiles,
        &ri.work,
        &DaemonOptions {
            name: Some("queue-hermeticd".into()),
            extra: format!(
                "jobs = 2\nmax_queued = {}\nshutdown_grace_secs = 1\n",
                queued + 100
            ),
            ..Default::default()
        },
    )?;
    let channel = daemon.connect().await?;
    let empty_dir = upload(
        &channel,
        &[
            bazel_remote_apis::build::bazel::remote::execution::v2::Directory::default()
                .encode_to_vec(),
        ],
    )
    .await?[0];
    let nonce = nonce();
    // The blockers: both job slots busy for the whole measurement.
    let sleep = command(&["/bin/sleep", "600"], &[]);
    let mut blockers = Vec::new();
    for i in 0..2 {
        let a = put_action(
            &channel,
            &sleep,
            empty_dir,
            format!("block-{nonce}-{i}").as_bytes(),
        )
        .await?;
        let mut exec = ExecutionClient::new(daemon.connect().await?);
        let mut stream = exec.execute(req(a)).await?.into_inner();
        stream.next().await.context("no first Operation")??;
        blockers.push(stream);
    }
    // Let the blockers start before measuring the baseline.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_before_kib, _) = rss(daemon.pid());
    // The queued actions, uploaded in batches before the clock starts.
    let cmd = command(&["/bin/true"], &[]);
    let cmd_key = upload(&channel, &[cmd.encode_to_vec()]).await?[0];
    let actions: Vec<Vec<u8>> = (0..queued)
        .map(|i| {
            Action {
                command_digest: Some(cmd_key.to_proto()),
                input_root_digest: Some(empty_dir.to_proto()),
                salt: format!("queued-{nonce}-{i}").into_bytes(),
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    let keys: Vec<BlobKey> = upload(&channel, &actions).await?;
    let per_conn = 100;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for chunk in keys.chunks(per_conn) {
        let exec = ExecutionClient::new(daemon.connect().await?);
        let chunk = chunk.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut streams = Vec::new();
            for a in chunk {
                let mut exec = exec.clone();
                let mut stream = exec.execute(req(a)).await?.into_inner();
                stream.next().await.context("no first Operation")??;
                streams.push(stream);
            }
            anyhow::Ok(streams)
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.extend(t.await??);
    }
    let submit_secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_queued_kib, hwm_kib) = rss(daemon.pid());
    drop(streams);
    drop(blockers);
    drop(daemon);
    Ok(Queue {
        queued,
        rss_before_kib,
        rss_queued_kib,
        hwm_kib,
        submit_secs,
    })
}

fn req(action: BlobKey) -> ExecuteRequest {
    ExecuteRequest {
        action_digest: Some(action.to_proto()),
        digest_function: F.to_proto(),
        ..Default::default()
    }
}

/// Allocated bytes and files under `dir`.
fn disk_use(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.metadata() else { continue };
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
            }
        }
    }
    (bytes, files)
}

async fn many_blobs(s: &Server, plan: &Plan, store: &std::path::Path) -> Result<Blobs> {
    eprintln!(
        "hermetic-bench: {}: storing {} blobs of {} bytes",
        s.name, plan.blobs, plan.blob_size
    );
    let nonce = nonce();
    let blob = |i: usize| {
        let mut b = format!("{nonce} blob {i} ").into_bytes();
        b.resize(plan.blob_size, b'.');
        b
    };
    let start = Instant::now();
    let batch = 10_000;
    let mut i = 0;
    while i < plan.blobs {
        let end = (i + batch).min(plan.blobs);
        let blobs: Vec<Vec<u8>> = (i..end).map(blob).collect();
        upload(&s.channel, &blobs).await?;
        i = end;
    }
    let upload_secs = start.elapsed().as_secs_f64();
    // 5,000 stored (spread over the whole store) and 5,000 absent.
    let step = (plan.blobs / 5000).max(1);
    let mut digests: Vec<_> = (0..5000)
        .map(|k| key_of(F, &blob((k * step) % plan.blobs)).to_proto())
        .collect();
    digests
        .extend((0..5000).map(|k| key_of(F, format!("absent {nonce} {k}").as_bytes()).to_proto()));
    let mut cas =
        ContentAddressableStorageClient::new(s.channel.clone()).max_decoding_message_size(64 << 20);
    let mut find = Vec::new();
    for round in 0..plan.find_rounds + 5 {
        let request = FindMissingBlobsRequest {
            blob_digests: digests.clone(),
            digest_function: F.to_proto(),
            ..Default::default()
        };
        let start = Instant::now();
        let missing = cas.find_missing_blobs(request).await?.into_inner();
        let t = start.elapsed().as_secs_f64() * 1e3;
        anyhow::ensure!(
            missing.missing_blob_digests.len() == 5000,
            "{}: {} missing of 10,000 (5,000 expected)",
            s.name,
            missing.missing_blob_digests.len()
        );
        if round >= 5 {
            find.push(t);
        }
    }
    let (disk_bytes, files) = disk_use(store);
    Ok(Blobs {
        server: s.name,
        count: plan.blobs,
        size: plan.blob_size,
        upload_secs,
        find,
        disk_bytes,
        files,
    })
}

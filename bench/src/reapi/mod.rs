//! The REAPI benchmark (issue 3): a real `hermeticd` (release build, its
//! own sandbox supervisor, fsync on) on a Unix socket, driven through gRPC
//! by this process.
//!
//! 1. No-op action, cache miss (distinct salts), end to end, interleaved
//!    with the helper's own no-op (`/bin/true` through a supervisor the
//!    harness drives directly, as in the sandbox-start benchmark).
//! 2. Cache hit through Execute: sequential latency, then throughput with
//!    32 concurrent clients, each on its own connection.
//! 3. ByteStream Write of 1 GiB (1 MiB messages), verified and stored.
//! 4. FindMissingBlobs of 10,000 digests, half of them stored.
//! 5. Staging a 10,000-file, 100 MB input tree whose blobs are stored, as
//!    the daemon reports it (`input_fetch_*` timestamps): a tree never
//!    staged before (every file hardlinked), and the same tree again
//!    (subdirectories reused from the pool).

pub mod client;
pub mod report;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Directory, DirectoryNode, FileNode, FindMissingBlobsRequest,
    content_addressable_storage_client::ContentAddressableStorageClient,
    execution_client::ExecutionClient,
};
use bazel_remote_apis::google::bytestream::{WriteRequest, byte_stream_client::ByteStreamClient};
use hermeticd::digest::{BlobKey, key_of};
use prost::Message;

use crate::variants::Variant;
use client::{Daemon, F, command, execute, put_action, span_us, upload};

/// What to measure and how much.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Rounds of the no-op comparison.
    pub noop_rounds: usize,
    /// Sequential cache hits.
    pub hit_rounds: usize,
    /// Seconds of 32-client cache hits.
    pub hit_secs: u64,
    /// 1 GiB uploads.
    pub upload_rounds: usize,
    /// FindMissingBlobs calls.
    pub find_rounds: usize,
    /// Stagings of each kind.
    pub stage_rounds: usize,
}

/// Where things are.
#[derive(Debug)]
pub struct Inputs {
    /// `hermeticd` (release).
    pub hermeticd: PathBuf,
    /// `hermetic-sandbox` (release, a private copy).
    pub sandbox: PathBuf,
    /// The busybox rootfs.
    pub rootfs: PathBuf,
    /// `sandbox-profiles/`.
    pub profiles: PathBuf,
    /// The harness's directory.
    pub work: PathBuf,
}

/// Millisecond samples of one measurement.
pub type Samples = Vec<f64>;

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// End-to-end no-op cache misses through gRPC.
    pub noop_grpc: Samples,
    /// The helper's own no-op (supervisor, driven directly).
    pub noop_helper: Samples,
    /// Per no-op through gRPC, from ExecutedActionMetadata (ms): queued,
    /// input fetch, execution, output upload, the whole worker span, and
    /// the client's total minus that span.
    pub noop_phases: Vec<[f64; 6]>,
    /// Sequential cache hits.
    pub hit: Samples,
    /// Latencies during the concurrent run.
    pub hit_concurrent: Samples,
    /// Completed cache hits per second with 32 clients.
    pub hit_per_sec: f64,
    /// Seconds per 1 GiB upload.
    pub upload_secs: Vec<f64>,
    /// Seconds per 1 GiB written to a file beside the daemon's store and
    /// fsynced (the disk's own speed: the upload's ceiling).
    pub disk_secs: Vec<f64>,
    /// FindMissingBlobs latencies.
    pub find: Samples,
    /// Staging a never-staged tree (daemon's input fetch, ms).
    pub stage_cold: Samples,
    /// Staging the same tree again.
    pub stage_warm: Samples,
}

/// Runs every measurement.
pub fn run(inputs: &Inputs, plan: Plan) -> Result<Results> {
    // One client thread, as in the peer suite (`crate::peer::run`): a
    // call and its connection never wait for another client thread to
    // wake, so the client's own hops do not count against the daemon.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_all(inputs, plan))
}

async fn run_all(inputs: &Inputs, plan: Plan) -> Result<Results> {
    let daemon = Daemon::start(
        &inputs.hermeticd,
        &inputs.sandbox,
        &inputs.rootfs,
        &inputs.profiles,
        &inputs.work,
    )?;
    let channel = daemon.connect().await?;
    let mut r = Results::default();
    // For profiling one part: HERMETIC_BENCH_ONLY=noop,hits,find,staging,bytestream.
    let only = std::env::var("HERMETIC_BENCH_ONLY").ok();
    let want = |name: &str| {
        let yes = only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|n| n == name));
        if yes {
            eprintln!("hermetic-bench reapi: {name}");
        }
        yes
    };
    if want("noop") {
        noop(inputs, plan, &channel, &mut r).await?;
    }
    if want("hits") {
        hits(&daemon, plan, &channel, &mut r).await?;
    }
    if want("find") {
        find_missing(plan, &channel, &mut r).await?;
    }
    if want("staging") {
        staging(plan, &channel, &mut r).await?;
    }
    if want("bytestream") {
        bytestream(plan, &channel, &inputs.work, &mut r).await?;
    }
    crate::peer::hang_up(channel).await;
    drop(daemon);
    Ok(r)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn noop(inputs: &Inputs, plan: Plan, channel: &Channel, r: &mut Results) -> Result<()> {
    let scratch = inputs.work.join("scratch");
    std::fs::create_dir_all(&scratch)?;
    let mut helper =
        crate::helper::Supervisor::start(&inputs.sandbox, &inputs.rootfs, &scratch, true)?;
    let empty_dir = upload(channel, &[Directory::default().encode_to_vec()]).await?[0];
    let true_cmd = command(&["/bin/true"], &[]);
    let mut exec = ExecutionClient::new(channel.clone());
    let nonce = nonce();
    let warmup = 10;
    for round in 0..plan.noop_rounds + warmup {
        let salt = format!("noop-{nonce}-{round}");
        let action = put_action(channel, &true_cmd, empty_dir, salt.as_bytes()).await?;
        let phases = &mut r.noop_phases;
        let grpc = async {
            let start = Instant::now();
            let resp = execute(&mut exec, action).await?;
            let total = ms(start.elapsed());
            if round >= warmup
                && let Some(m) = resp
                    .result
                    .as_ref()
                    .and_then(|r| r.execution_metadata.as_ref())
            {
                let span = |a, b| span_us(a, b).unwrap_or(0.0) / 1e3;
                let server = span(
                    m.worker_start_timestamp.as_ref(),
                    m.worker_completed_timestamp.as_ref(),
                );
                phases.push([
                    span(
                        m.queued_timestamp.as_ref(),
                        m.worker_start_timestamp.as_ref(),
                    ),
                    span(
                        m.input_fetch_start_timestamp.as_ref(),
                        m.input_fetch_completed_timestamp.as_ref(),
                    ),
                    span(
                        m.execution_start_timestamp.as_ref(),
                        m.execution_completed_timestamp.as_ref(),
                    ),
                    span(
                        m.output_upload_start_timestamp.as_ref(),
                        m.output_upload_completed_timestamp.as_ref(),
                    ),
                    server,
                    total - server,
                ]);
            }
            anyhow::Ok(total)
        };
        // Alternate which goes first, so drift hits both alike.
        let (g, h) = if round % 2 == 0 {
            let g = grpc.await?;
            (g, ms(helper.run_once()?.wall))
        } else {
            let h = ms(helper.run_once()?.wall);
            (grpc.await?, h)
        };
        if round >= warmup {
            r.noop_grpc.push(g);
            r.noop_helper.push(h);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

async fn hits(daemon: &Daemon, plan: Plan, channel: &Channel, r: &mut Results) -> Result<()> {
    let empty_dir = upload(channel, &[Directory::default().encode_to_vec()]).await?[0];
    let cmd = command(&["/bin/true"], &[]);
    let action = put_action(
        channel,
        &cmd,
        empty_dir,
        format!("hit-{}", nonce()).as_bytes(),
    )
    .await?;
    let mut exec = ExecutionClient::new(channel.clone());
    let first = execute(&mut exec, action).await?;
    anyhow::ensure!(!first.cached_result, "the first run was a hit");
    for i in 0..plan.hit_rounds + 100 {
        let start = Instant::now();
        let resp = execute(&mut exec, action).await?;
        let t = ms(start.elapsed());
        anyhow::ensure!(resp.cached_result, "not a cache hit");
        if i >= 100 {
            r.hit.push(t);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let mut exec = ExecutionClient::new(daemon.connect().await?);
        let (stop, done) = (stop.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = Instant::now();
                execute(&mut exec, action).await?;
                lat.push(ms(start.elapsed()));
                done.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    // Let every client connect and warm up, then count.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = done.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(plan.hit_secs)).await;
    let count = done.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        r.hit_concurrent.extend(t.await??);
    }
    r.hit_per_sec = count as f64 / elapsed.as_secs_f64();
    Ok(())
}

async fn find_missing(plan: Plan, channel: &Channel, r: &mut Results) -> Result<()> {
    let nonce = nonce();
    let present: Vec<Vec<u8>> = (0..5000)
        .map(|i| format!("present {nonce} {i}").into_bytes())
        .collect();
    let mut digests: Vec<_> = upload(channel, &present)
        .await?
        .iter()
        .map(BlobKey::to_proto)
        .collect();
    digests
        .extend((0..5000).map(|i| key_of(F, format!("absent {nonce} {i}").as_bytes()).to_proto()));
    let mut cas =
        ContentAddressableStorageClient::new(channel.clone()).max_decoding_message_size(64 << 20);
    for i in 0..plan.find_rounds + 10 {
        let req = FindMissingBlobsRequest {
            blob_digests: digests.clone(),
            digest_function: F.to_proto(),
            ..Default::default()
        };
        let start = Instant::now();
        let missing = cas.find_missing_blobs(req).await?.into_inner();
        let t = ms(start.elapsed());
        anyhow::ensure!(missing.missing_blob_digests.len() == 5000, "wrong answer");
        if i >= 10 {
            r.find.push(t);
        }
    }
    Ok(())
}

use tonic::transport::Channel;

/// 100 directories of 100 files of 10,000 bytes (100 MB), every file
/// distinct; `marker` adds an empty file to each directory, which makes
/// every Directory digest new while the file blobs stay the same.
async fn tree(channel: &Channel, files: &[BlobKey], marker: Option<&str>) -> Result<BlobKey> {
    let mut protos = Vec::new();
    let mut subdirs = Vec::new();
    for d in 0..100 {
        let mut dir = Directory::default();
        for f in 0..100 {
            dir.files.push(FileNode {
                name: format!("f{f:03}"),
                digest: Some(files[d * 100 + f].to_proto()),
                ..Default::default()
            });
        }
        if let Some(m) = marker {
            dir.files.push(FileNode {
                name: format!("zz-{m}"),
                digest: Some(key_of(F, b"").to_proto()),
                ..Default::default()
            });
        }
        let bytes = dir.encode_to_vec();
        subdirs.push(DirectoryNode {
            name: format!("d{d:03}"),
            digest: Some(key_of(F, &bytes).to_proto()),
        });
        protos.push(bytes);
    }
    let root = Directory {
        directories: subdirs,
        ..Default::default()
    };
    protos.push(root.encode_to_vec());
    Ok(*upload(channel, &protos).await?.last().expect("root"))
}

async fn staging(plan: Plan, channel: &Channel, r: &mut Results) -> Result<()> {
    let nonce = nonce();
    let blobs: Vec<Vec<u8>> = (0..10_000u32)
        .map(|i| {
            let mut b = vec![0u8; 10_000];
            b[..8].copy_from_slice(&u64::from(i).to_le_bytes());
            b[8..16].copy_from_slice(&nonce.to_le_bytes());
            b
        })
        .collect();
    let mut files = upload(channel, &blobs).await?;
    files.truncate(10_000);
    upload(channel, &[Vec::new()]).await?;
    // An output makes the root (and out/) fresh, as for most actions.
    let cmd = command(&["/bin/true"], &["out/x"]);
    let mut exec = ExecutionClient::new(channel.clone());
    let fetch = |resp: &bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteResponse| {
        let m = resp
            .result
            .as_ref()
            .and_then(|r| r.execution_metadata.as_ref());
        m.and_then(|m| {
            span_us(
                m.input_fetch_start_timestamp.as_ref(),
                m.input_fetch_completed_timestamp.as_ref(),
            )
        })
        .map(|us| us / 1e3)
        .context("no input fetch timestamps")
    };
    let warm_root = tree(channel, &files, None).await?;
    for round in 0..plan.stage_rounds + 1 {
        // Never staged: new directories, stored files.
        let cold_root = tree(channel, &files, Some(&format!("{nonce}-{round}"))).await?;
        let salt = format!("stage-cold-{nonce}-{round}");
        let action = put_action(channel, &cmd, cold_root, salt.as_bytes()).await?;
        let cold = fetch(&execute(&mut exec, action).await?)?;
        let salt = format!("stage-warm-{nonce}-{round}");
        let action = put_action(channel, &cmd, warm_root, salt.as_bytes()).await?;
        let warm = fetch(&execute(&mut exec, action).await?)?;
        // Round 0 warms the pool with the warm tree.
        if round > 0 {
            r.stage_cold.push(cold);
            r.stage_warm.push(warm);
        }
    }
    Ok(())
}

async fn bytestream(
    plan: Plan,
    channel: &Channel,
    work: &std::path::Path,
    r: &mut Results,
) -> Result<()> {
    const SIZE: usize = 1 << 30;
    const CHUNK: usize = 1 << 20;
    let mut bs = ByteStreamClient::new(channel.clone());
    for round in 0..plan.upload_rounds {
        // The messages are made (and digested) before the clock starts:
        // incompressible-looking bytes (xorshift), distinct per round.
        let mut x = nonce() ^ (round as u64 + 1) << 32 | 1;
        let mut hasher = F.hasher();
        let chunks: Vec<Vec<u8>> = (0..SIZE / CHUNK)
            .map(|_| {
                let mut c = vec![0u8; CHUNK];
                for w in c.chunks_exact_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    w.copy_from_slice(&x.to_le_bytes());
                }
                hasher.update(&c);
                c
            })
            .collect();
        let key = hasher.finish_sized(SIZE as u64);
        let name = format!("uploads/{}/blobs/{}/{}", uuid(round), key.hex(), key.size);
        // The baseline, interleaved: the same bytes to a file on the
        // store's filesystem, fsynced, as the daemon commits a blob.
        let disk = {
            use std::io::Write as _;
            let path = work.join("disk-baseline");
            let start = Instant::now();
            let mut f = std::fs::File::create(&path)?;
            for c in &chunks {
                f.write_all(c)?;
            }
            f.sync_all()?;
            let secs = start.elapsed().as_secs_f64();
            drop(f);
            std::fs::remove_file(&path)?;
            secs
        };
        r.disk_secs.push(disk);
        let count = chunks.len();
        let requests =
            tokio_stream::iter(
                chunks
                    .into_iter()
                    .enumerate()
                    .map(move |(i, data)| WriteRequest {
                        resource_name: if i == 0 { name.clone() } else { String::new() },
                        write_offset: (i * CHUNK) as i64,
                        finish_write: i + 1 == count,
                        data,
                    }),
            );
        let start = Instant::now();
        let resp = bs.write(requests).await?.into_inner();
        let secs = start.elapsed().as_secs_f64();
        anyhow::ensure!(resp.committed_size == SIZE as i64, "short write");
        r.upload_secs.push(secs);
    }
    Ok(())
}

fn uuid(round: usize) -> String {
    format!("00000000-0000-4000-8000-{:012x}", round)
}

/// A per-run value, so that a rerun on a kept state never hits old blobs.
fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Checks the inputs before anything is measured.
pub fn check(inputs: &Inputs) -> Result<()> {
    for p in [&inputs.hermeticd, &inputs.sandbox] {
        anyhow::ensure!(p.is_file(), "{} is not built", p.display());
    }
    anyhow::ensure!(
        inputs.profiles.join("strict.toml").is_file(),
        "no strict profile in {}",
        inputs.profiles.display()
    );
    Ok(())
}

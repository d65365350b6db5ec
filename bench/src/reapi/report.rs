//! The REAPI section of docs/BENCHMARKS.md, also printed to stdout.

use std::fmt::Write as _;

use crate::reapi::Results;
use crate::report::verdict;
use crate::stats::Summary;

/// The section's markers.
pub const BEGIN: &str = "<!-- bench:reapi:begin -->";
/// The section's end marker.
pub const END: &str = "<!-- bench:reapi:end -->";

/// A run of the REAPI benchmark.
pub type Run = crate::report::SuiteRun<Results>;

/// The results table with each target of issue 3.
pub fn table(r: &Results) -> String {
    let s = Summary::of_ms;
    let (grpc, helper) = (s(&r.noop_grpc), s(&r.noop_helper));
    let hit = s(&r.hit);
    let hit_load = s(&r.hit_concurrent);
    let find = s(&r.find);
    let (cold, warm) = (s(&r.stage_cold), s(&r.stage_warm));
    let mbps: Vec<f64> = r
        .upload_secs
        .iter()
        .map(|secs| (1u64 << 30) as f64 / 1e6 / secs)
        .collect();
    let up = s(&mbps);
    let disk_mbps: Vec<f64> = r
        .disk_secs
        .iter()
        .map(|secs| (1u64 << 30) as f64 / 1e6 / secs)
        .collect();
    let disk = s(&disk_mbps);
    let ratio = grpc.median / helper.median;
    let mut t = String::from(
        "| measurement | n | median | p90 | target (issue 3) | verdict |\n|---|---:|---:|---:|---|---|\n",
    );
    let mut row = |name: &str, n: usize, median: String, p90: String, target: &str, ok: bool| {
        let _ = writeln!(
            t,
            "| {name} | {n} | {median} | {p90} | {target} | {} |",
            if target.starts_with("baseline") {
                "baseline"
            } else {
                verdict(ok)
            }
        );
    };
    row(
        "no-op action, cache miss, through gRPC (ms)",
        r.noop_grpc.len(),
        f(grpc.median),
        f(grpc.p90),
        "median ≤ 1.5× the helper's own",
        ratio <= 1.5,
    );
    row(
        "the helper's own no-op, supervisor (ms)",
        r.noop_helper.len(),
        f(helper.median),
        f(helper.p90),
        &format!("ratio of medians: {ratio:.2}×"),
        ratio <= 1.5,
    );
    row(
        "cache hit through Execute, one client (ms)",
        r.hit.len(),
        f(hit.median),
        f(hit.p90),
        "median ≤ 1 ms",
        hit.median <= 1.0,
    );
    row(
        "cache hits per second, 32 clients",
        r.hit_concurrent.len(),
        format!("{:.0}/s", r.hit_per_sec),
        format!(
            "latency p50 {} / p90 {} ms",
            f(hit_load.median),
            f(hit_load.p90)
        ),
        "≥ 5,000/s",
        r.hit_per_sec >= 5000.0,
    );
    row(
        "ByteStream Write of 1 GiB, verified (MB/s)",
        mbps.len(),
        format!("{:.0}", up.median),
        format!(
            "{:.0} (slowest)",
            mbps.iter().copied().fold(f64::INFINITY, f64::min)
        ),
        "≥ 500 MB/s",
        up.median >= 500.0,
    );
    row(
        "the disk's own: 1 GiB written to a file, then fsynced (MB/s)",
        disk_mbps.len(),
        format!("{:.0}", disk.median),
        format!(
            "{:.0} (slowest)",
            disk_mbps.iter().copied().fold(f64::INFINITY, f64::min)
        ),
        &format!(
            "baseline: upload / disk {:.2}× (the store writes a blob this large \
             with O_DIRECT while the upload streams)",
            up.median / disk.median
        ),
        true,
    );
    row(
        "FindMissingBlobs, 10,000 digests (ms)",
        r.find.len(),
        f(find.median),
        f(find.p90),
        "≤ 20 ms",
        find.median <= 20.0,
    );
    row(
        "staging 10,000 files / 100 MB, never staged before (ms)",
        r.stage_cold.len(),
        f(cold.median),
        f(cold.p90),
        "≤ 150 ms",
        cold.median <= 150.0,
    );
    row(
        "staging the same tree again, subtrees reused (ms)",
        r.stage_warm.len(),
        f(warm.median),
        f(warm.p90),
        "≤ 150 ms",
        warm.median <= 150.0,
    );
    t
}

/// Medians of the no-op's phases as the daemon reports them.
pub fn phases_table(r: &Results) -> String {
    let col = |i: usize| {
        let v: Vec<f64> = r.noop_phases.iter().map(|p| p[i]).collect();
        f(Summary::of_ms(&v).median)
    };
    format!(
        "| queued → worker start | input fetch (staging) | execution (the helper) | output upload | \
         worker start → completed | outside the worker (gRPC, lookup, execution log, clean-up, client) |\n\
         |---:|---:|---:|---:|---:|---:|\n| {} | {} | {} | {} | {} | {} |\n",
        col(0),
        col(1),
        col(2),
        col(3),
        col(4),
        col(5)
    )
}

/// The whole section, between its markers.
pub fn section(run: &Run) -> String {
    let mut s = run.header(
        BEGIN,
        "REAPI server: `hermeticd` through gRPC",
        "--reapi",
        "",
        [],
    );
    let _ = write!(
        s,
        "\n{}\n\
         ### Where a no-op cache miss spends its time (medians, ms)\n\n{}\n\
         ### How\n\n\
         A release `hermeticd` (default configuration: sandbox supervisor, fsync on, strict profile, \
         busybox default image) serves a Unix socket; the harness is its gRPC client on the same 2 CPUs, on one \
         thread (a current-thread tokio runtime; every run starts after `sync` and dropping the page \
         cache). Latencies are the client's, from the request to the end of the Execute stream or the response.\n\n\
         1. **No-op, cache miss**: `/bin/true`, empty input root, a distinct salt per action (uploading the \
         Action is not timed). Interleaved with the helper's own no-op: `/bin/true` through a \
         `hermetic-sandbox --supervisor` the harness drives directly (the sandbox-start benchmark's \
         supervisor variant), alternating which goes first.\n\
         2. **Cache hit**: Execute of one cached action; then 32 clients, each on its own connection, each \
         looping Execute for the measured time after a 1 s warm-up.\n\
         3. **ByteStream**: one Write stream of 1 GiB in 1 MiB messages; the daemon hashes every byte, \
         writes a temp file, fsyncs it and renames it into the CAS. Client-side digesting is not timed.\n\
         4. **FindMissingBlobs**: 10,000 SHA-256 digests in one request, 5,000 of them stored.\n\
         5. **Staging**: the daemon's own `input_fetch_start`→`input_fetch_completed` timestamps \
         (ExecutedActionMetadata) for `/bin/true` with an output `out/x` (so the root directory is made \
         afresh) on 100 directories × 100 files × 10,000 bytes whose blobs are stored. *Never staged*: \
         each round's directories differ (one extra empty file each), so every file is hardlinked. *Again*: \
         the same tree, so its 100 subdirectories are moved in from the pool of materialized inputs.\n\
         {END}\n",
        table(&run.results),
        phases_table(&run.results),
    );
    s
}

fn f(v: f64) -> String {
    format!("{v:.3}")
}

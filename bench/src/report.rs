//! The sandbox-start section of docs/BENCHMARKS.md, also printed to stdout.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::machine::Machine;
use crate::stats::Summary;
use crate::variants::{BARE, BWRAP, CLI, CRUN, SUPERVISOR, SUPERVISOR_COLD, Sample};

const BEGIN: &str = "<!-- bench:sandbox-start:begin -->";
const END: &str = "<!-- bench:sandbox-start:end -->";

/// The targets of issue 2, in milliseconds and as a ratio.
const MAX_MEDIAN_OVERHEAD_MS: f64 = 2.0;
const MAX_P90_OVERHEAD_MS: f64 = 5.0;
const MAX_RATIO_TO_BWRAP: f64 = 0.5;

/// Everything one run of the benchmark produced.
#[derive(Debug)]
pub struct Run {
    /// Where it ran.
    pub machine: Machine,
    /// The command that produced it, as the user typed it.
    pub command: String,
    /// Untimed rounds before the measured ones.
    pub warmup: usize,
    /// Measured rounds asked for.
    pub rounds_planned: usize,
    /// Wall-clock time of the measured rounds.
    pub elapsed: Duration,
    /// What `favor_dynamic_cgroups` reported.
    pub favordynmods: String,
    /// Other conditions worth knowing.
    pub notes: Vec<String>,
    /// The samples of each variant, in table order.
    pub results: Vec<(&'static str, Vec<Sample>)>,
}

impl Run {
    fn summary(&self, name: &str) -> Option<Summary> {
        self.results
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| Summary::of_durations(&s.iter().map(|x| x.wall).collect::<Vec<_>>()))
    }

    fn rounds(&self) -> usize {
        self.results.iter().map(|(_, s)| s.len()).min().unwrap_or(0)
    }
}

/// The latency table.
pub fn latency_table(run: &Run) -> String {
    let bare = run.summary(BARE).unwrap_or_default();
    let bwrap = run.summary(BWRAP);
    let crun = run.summary(CRUN);
    let mut t = String::from(
        "| variant | median | p90 | p99 | mean | overhead over bare exec (median) | overhead (p90) | median ÷ bwrap | median ÷ crun |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for (name, _) in &run.results {
        let s = run.summary(name).unwrap_or_default();
        let (over_median, over_p90) = if *name == BARE {
            ("—".to_owned(), "—".to_owned())
        } else {
            (ms(s.median - bare.median), ms(s.p90 - bare.p90))
        };
        let ratio = |base: Option<Summary>| {
            base.map_or("—".to_owned(), |b| format!("{:.2}×", s.median / b.median))
        };
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} | {} | {over_median} | {over_p90} | {} | {} |",
            ms(s.median),
            ms(s.p90),
            ms(s.p99),
            ms(s.mean),
            ratio(bwrap),
            ratio(crun)
        );
    }
    t
}

/// The targets of issue 2, for each way of running the helper.
pub fn targets_table(run: &Run) -> String {
    let bare = run.summary(BARE).unwrap_or_default();
    let bwrap = run.summary(BWRAP).unwrap_or_default();
    let cells = |name| run.summary(name).map(|s| target_cells(&s, &bare, &bwrap));
    let (sup, cold, cli) = (cells(SUPERVISOR), cells(SUPERVISOR_COLD), cells(CLI));
    let mut t = String::from(
        "| target (issue 2) | sandbox supervisor (the daemon's path, pooled) | sandbox supervisor, cold (a pool miss) | sandbox CLI |\n|---|---|---|---|\n",
    );
    let labels = [
        "median overhead over bare exec ≤ 2 ms",
        "p90 overhead over bare exec ≤ 5 ms",
        "median ≤ half of bwrap's",
    ];
    for (i, label) in labels.iter().enumerate() {
        let col = |c: &Option<[String; 3]>| c.as_ref().map_or("—".to_owned(), |c| c[i].clone());
        let _ = writeln!(
            t,
            "| {label} | {} | {} | {} |",
            col(&sup),
            col(&cold),
            col(&cli)
        );
    }
    t
}

/// One variant's figure and verdict for each target, in table order.
fn target_cells(s: &Summary, bare: &Summary, bwrap: &Summary) -> [String; 3] {
    let verdict = |ok: bool| if ok { "**met**" } else { "**not met**" };
    let (d50, d90, ratio) = (
        s.median - bare.median,
        s.p90 - bare.p90,
        s.median / bwrap.median,
    );
    [
        format!(
            "{} ms — {}",
            ms(d50),
            verdict(d50 <= MAX_MEDIAN_OVERHEAD_MS)
        ),
        format!("{} ms — {}", ms(d90), verdict(d90 <= MAX_P90_OVERHEAD_MS)),
        format!("{ratio:.2}× — {}", verdict(ratio <= MAX_RATIO_TO_BWRAP)),
    ]
}

/// Medians of the helper's own phases, and of what lies outside them.
pub fn breakdown_table(run: &Run) -> String {
    let mut t = String::from(
        "| variant | setup | run | teardown | outside the phases | wall (harness) |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, samples) in &run.results {
        let timed: Vec<_> = samples
            .iter()
            .filter_map(|s| s.timings.map(|t| (s.wall, t)))
            .collect();
        if timed.is_empty() {
            continue;
        }
        let med = |f: &dyn Fn(&(Duration, crate::variants::Timings)) -> f64| {
            Summary::of_ms(&timed.iter().map(f).collect::<Vec<_>>()).median
        };
        let phases =
            |t: &crate::variants::Timings| (t.setup_us + t.run_us + t.teardown_us) as f64 / 1e3;
        let _ = writeln!(
            t,
            "| {name} | {} | {} | {} | {} | {} |",
            ms(med(&|(_, t)| t.setup_us as f64 / 1e3)),
            ms(med(&|(_, t)| t.run_us as f64 / 1e3)),
            ms(med(&|(_, t)| t.teardown_us as f64 / 1e3)),
            ms(med(&|(w, t)| w.as_secs_f64() * 1e3 - phases(t))),
            ms(med(&|(w, _)| w.as_secs_f64() * 1e3)),
        );
    }
    t
}

/// The whole section, between its markers.
pub fn section(run: &Run) -> String {
    let m = &run.machine;
    let mut s = format!(
        "{BEGIN}\n## Sandbox start: `/bin/true` from a busybox rootfs\n\n\
         Regenerated by `bench/run` between these markers; edits here are lost.\n\n\
         - Command: `{}` — {} measured rounds (of {} planned) after {} warm-up rounds, {:.1} s; \
         each round runs every variant once, in an order rotated by one each round.\n\
         - Date: {}\n\
         - Machine: {} CPUs ({}), {} MiB memory, kernel {}, cgroup {}\n\
         - Software: hermetic-sandbox at {}, {}, {}\n\
         - favordynmods: {}\n",
        run.command,
        run.rounds(),
        run.rounds_planned,
        run.warmup,
        run.elapsed.as_secs_f64(),
        m.date,
        m.nproc,
        m.cpu,
        m.memory_mib,
        m.kernel,
        m.cgroup,
        m.commit,
        m.bwrap,
        m.crun,
        run.favordynmods,
    );
    for note in &run.notes {
        let _ = writeln!(s, "- Note: {note}");
    }
    let _ = write!(
        s,
        "\n### Latency (ms)\n\n{}\n\
         Overheads are the variant's percentile minus bare exec's same percentile; ratios are of medians.\n\n\
         ### Targets\n\n{}\n\
         ### Where the sandbox's time goes (medians, ms)\n\n{}\n\
         From the helper's status: *setup* is its start of work to the step's `execve`, *run* is `execve` to \
         exit, *teardown* is exit to everything removed. *Outside the phases* is the harness's wall time minus \
         the three (CLI: the helper's own exec, argument and profile parsing, status file; supervisor: the \
         request and status lines, the fork of the runner, its reaping).\n\n\
         ### Variants\n\n\
         1. **bare exec**: `ROOTFS/bin/true` spawned and waited for by the harness (`std::process::Command`).\n\
         2. **sandbox supervisor**: one `hermetic-sandbox --supervisor` for the whole run; one request per \
         round with the strict profile's spec and a fresh scratch dir, timed from writing the request line to \
         reading the status line. After each action the supervisor makes the next sandbox for the same key \
         (namespaces, cgroup, every mount but `/work`) while the other variants run; the harness checks that \
         every request after the first was served by such a pooled sandbox. The request pays for `/work`, \
         `pivot_root`, every verification, the step's confinement and `execve`.\n\
         3. **sandbox supervisor, cold**: the same with `--pool 0`: every sandbox made at its request (what a \
         pool miss costs: a new key, or more concurrent actions than pooled sandboxes).\n\
         4. **sandbox CLI**: `hermetic-sandbox --rootfs ROOTFS --profile strict --status FILE -- /bin/true`, \
         spawn to exit.\n\
         5. **bwrap**: `bwrap --unshare-all --die-with-parent --ro-bind ROOTFS / --proc /proc --dev /dev /bin/true`.\n\
         6. **crun**: `crun run --bundle DIR ID` with a fresh id each time; `config.json` is `crun spec` with \
         the rootfs read-only, `/bin/true` and no terminal.\n\n\
         ROOTFS is `scripts/busybox-rootfs.sh` output (Debian's busybox-static). Every process gets \
         `/dev/null` for its standard streams.\n{END}\n",
        latency_table(run),
        targets_table(run),
        breakdown_table(run),
    );
    s
}

/// Replaces the sandbox-start section in `path` (or appends it; or
/// creates the file).
pub fn write_doc(path: &Path, section: &str) -> Result<()> {
    write_marked(path, BEGIN, END, section)
}

/// Replaces the section between `BEGIN` and `END` in `path` (or appends
/// it; or creates the file).
pub fn write_marked(path: &Path, begin: &str, end: &str, section: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::from(
            "# Benchmarks\n\n\
             Measured by `bench/run` (`--fast` for a quick look, `--full` for the record), each benchmark \
             interleaved with its baselines in one run on one machine. Each section is regenerated by its \
             own benchmark between its markers; text outside the markers is kept.\n",
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = match (old.find(begin), old.find(end)) {
        (Some(b), Some(e)) if b < e => format!(
            "{}{}{}",
            &old[..b],
            section,
            old[e + end.len()..].trim_start_matches('\n')
        ),
        _ => format!(
            "{}\n{}",
            old.trim_end_matches('\n').to_owned() + "\n",
            section
        ),
    };
    std::fs::write(path, new).with_context(|| format!("cannot write {}", path.display()))
}

fn ms(v: f64) -> String {
    format!("{v:.3}")
}

/// One run of a suite other than sandbox start (REAPI, peers, scale):
/// where it ran, the command, what was measured.
#[derive(Debug)]
pub struct SuiteRun<R> {
    /// Where it ran.
    pub machine: Machine,
    /// The command, as typed.
    pub command: String,
    /// What was measured.
    pub results: R,
    /// Wall-clock time of the whole run.
    pub elapsed_secs: f64,
    /// Other conditions worth knowing.
    pub notes: Vec<String>,
}

impl<R> SuiteRun<R> {
    /// The section's opening: its begin marker, title, how it is made, the
    /// command, date, machine and software (`extra` appended to the
    /// software line when not empty), then one line per note.
    pub fn header<'a>(
        &self,
        begin: &str,
        title: &str,
        flag: &str,
        extra: &str,
        notes: impl IntoIterator<Item = &'a String>,
    ) -> String {
        let m = &self.machine;
        let mut s = format!(
            "{begin}\n## {title}\n\n\
             Regenerated by `bench/run {flag}` between these markers; edits here are lost.\n\n\
             - Command: `{}` — {:.0} s in all\n\
             - Date: {}\n\
             - Machine: {} CPUs ({}), {} MiB memory, kernel {}, cgroup {}\n\
             - Software: hermeticd and hermetic-sandbox (release) at {}{}{extra}\n",
            self.command,
            self.elapsed_secs,
            m.date,
            m.nproc,
            m.cpu,
            m.memory_mib,
            m.kernel,
            m.cgroup,
            m.commit,
            if extra.is_empty() { "" } else { "; " },
        );
        for note in self.notes.iter() {
            let _ = writeln!(s, "- Note: {note}");
        }
        for note in notes {
            let _ = writeln!(s, "- Note: {note}");
        }
        s
    }
}

/// A target's verdict, as the tables print it.
pub fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**not met**" }
}

//! The report as readable text, for a terminal or a CI log.

use std::fmt::Write;

use crate::archive::{ArchiveDiff, FieldChange};
use crate::compare::Change;
use crate::content::{ContentDiff, HexContext};
use crate::plan::{ORDER_AS_GIVEN, ORDER_REVERSED, RunVariation};
use crate::report::{Report, Verdict};

/// A short description of a run's variation (`baseline` when none).
pub fn describe(v: &RunVariation) -> String {
    let s = &v.sandbox;
    let mut parts = Vec::new();
    if let Some(n) = s.cpus {
        parts.push(format!("cpus={n}"));
    }
    if s.clock_offset_secs != 0 {
        parts.push(format!("clock+{}s", s.clock_offset_secs));
    }
    if s.pid_offset != 0 {
        parts.push(format!("pids>{}", s.pid_offset));
    }
    if s.no_aslr {
        parts.push("aslr=off".into());
    }
    let order = |name: &str, seed: u64| match seed {
        ORDER_AS_GIVEN => None,
        ORDER_REVERSED => Some(format!("{name}=reversed")),
        s => Some(format!("{name}=shuffled({s:x})")),
    };
    parts.extend(order("staging", v.staging_order_seed));
    parts.extend(order("env", v.env_order_seed));
    if v.delay_ms != 0 {
        parts.push(format!("start+{}ms", v.delay_ms));
    }
    if parts.is_empty() {
        "baseline".into()
    } else {
        parts.join(" ")
    }
}

/// Renders `report` as text.
pub fn render(report: &Report) -> String {
    let mut o = String::new();
    let verdict = match report.verdict {
        Verdict::Reproducible => "REPRODUCIBLE",
        Verdict::NotReproducible => "NOT REPRODUCIBLE",
    };
    let _ = writeln!(
        o,
        "reproducibility check: {verdict} ({} runs)",
        report.runs.len()
    );
    if let Some(a) = &report.action {
        let _ = writeln!(o, "action: {a}");
    }
    let _ = writeln!(o, "\nruns:");
    for r in &report.runs {
        let _ = writeln!(
            o,
            "  run {}: {}\n         outputs {} ({} paths)",
            r.index,
            describe(&r.variation),
            r.outputs_digest,
            r.entries
        );
    }
    let _ = writeln!(o, "\nfixed on purpose:");
    for f in &report.fixed {
        let _ = writeln!(o, "  {:<18} {}", f.name, f.value);
    }
    if !report.differing_paths.is_empty() {
        let _ = writeln!(o, "\ndiffering paths ({}):", report.differing_paths.len());
        for path in &report.differing_paths {
            render_path(&mut o, report, path);
        }
    }
    if let Some(b) = &report.bisection {
        let _ = writeln!(o, "\none variation at a time:");
        for t in &b.trials {
            let found = if t.differing_paths.is_empty() {
                "same outputs".to_owned()
            } else {
                format!("differs: {}", t.differing_paths.join(", "))
            };
            let _ = writeln!(o, "  {:<14} {found}", t.aspect.name());
        }
        if b.responsible.is_empty() {
            let _ = writeln!(
                o,
                "responsible: no single variation reproduces the difference (a combination may)"
            );
        }
        for (path, aspects) in &b.by_path {
            for a in aspects {
                let _ = writeln!(o, "responsible for {path}: {a} ({})", a.hint());
            }
        }
    }
    o
}

fn render_path(o: &mut String, report: &Report, path: &str) {
    let mut runs = Vec::new();
    let mut first = None;
    for c in &report.comparisons {
        let diffs: Vec<_> = c.differences.iter().filter(|d| d.path == path).collect();
        if !diffs.is_empty() {
            runs.push(c.run.to_string());
            first.get_or_insert((c.run, diffs));
        }
    }
    let _ = writeln!(o, "  {path}  (differs in run {})", runs.join(", "));
    let Some((run, diffs)) = first else { return };
    for d in diffs {
        let line = match &d.change {
            Change::Added { entry } => format!("added in run {run} ({})", entry.kind()),
            Change::Removed { entry } => format!("missing in run {run} ({})", entry.kind()),
            Change::TypeChanged { baseline, run: r } => format!("{baseline} became {r}"),
            Change::SymlinkTarget { baseline, run: r } => {
                format!("symlink target {baseline:?} became {r:?}")
            }
            Change::Mode { baseline, run: r } => format!("mode {baseline} became {r}"),
            Change::Content {
                baseline_digest,
                run_digest,
                detail,
            } => {
                let _ = writeln!(
                    o,
                    "    run {run}: content {baseline_digest} became {run_digest}"
                );
                if let Some(c) = detail {
                    render_content(o, c, 6);
                }
                continue;
            }
        };
        let _ = writeln!(o, "    run {run}: {line}");
    }
}

fn render_content(o: &mut String, c: &ContentDiff, indent: usize) {
    let pad = " ".repeat(indent);
    let f = &c.first_difference;
    let _ = writeln!(
        o,
        "{pad}first difference at byte {} (sizes {} and {})",
        f.offset, f.baseline_size, f.run_size
    );
    let hex = |o: &mut String, label: &str, h: &HexContext| {
        let _ = writeln!(
            o,
            "{pad}  {label:<8} @{:<8} {} | {} | {}",
            h.start, h.before, h.after, h.ascii
        );
    };
    hex(o, "baseline", &f.baseline);
    hex(o, "run", &f.run);
    if let Some(t) = &c.text {
        for line in t.unified.lines() {
            let _ = writeln!(o, "{pad}  {line}");
        }
        if t.truncated {
            let _ = writeln!(o, "{pad}  (diff cut)");
        }
    }
    if let Some(a) = &c.archive {
        render_archive(o, a, indent);
    }
}

fn fields(changes: &[FieldChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{} {:?} became {:?}", c.field, c.baseline, c.run))
        .collect::<Vec<_>>()
        .join(", ")
}

fn render_archive(o: &mut String, a: &ArchiveDiff, indent: usize) {
    let pad = " ".repeat(indent);
    let _ = writeln!(o, "{pad}{} archive:", a.format);
    if let Some(n) = &a.note {
        let _ = writeln!(o, "{pad}  members not compared: {n}");
    }
    if !a.header.is_empty() {
        let _ = writeln!(o, "{pad}  header: {}", fields(&a.header));
    }
    if !a.added.is_empty() {
        let _ = writeln!(o, "{pad}  members added: {}", a.added.join(", "));
    }
    if !a.removed.is_empty() {
        let _ = writeln!(o, "{pad}  members removed: {}", a.removed.join(", "));
    }
    if a.order_changed {
        let _ = writeln!(o, "{pad}  member order changed");
    }
    if let Some(m) = &a.first_differing {
        let _ = writeln!(
            o,
            "{pad}  {} member(s) differ; first: {}",
            a.differing_members, m.name
        );
        if !m.metadata.is_empty() {
            let _ = writeln!(o, "{pad}    {}", fields(&m.metadata));
        }
        if let Some(c) = &m.content {
            render_content(o, c, indent + 4);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::plan::{Aspect, fixed_conditions, plan_for_cpus};
    use crate::report::{Bisection, TrialTrees};
    use crate::testutil::TempDir;
    use crate::tree::Tree;

    #[test]
    fn renders_everything_a_reader_needs() {
        let dir = TempDir::new("text");
        let mut trees = Vec::new();
        for (i, stamp) in ["12:00:01\n", "12:00:03\n"].iter().enumerate() {
            let d = dir.path().join(format!("r{i}"));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("stamp.txt"), stamp).unwrap();
            let tar = crate::archive::tests::tar_of(&[("stamp.txt", stamp.as_bytes(), 0)]);
            fs::write(d.join("bundle.tar"), tar).unwrap();
            trees.push(Tree::read(&d).unwrap());
        }
        let plan = plan_for_cpus(2, 3, 2);
        let profiles = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox-profiles");
        let profile = hermetic_sandbox::profile::Profile::load(&profiles, "strict").unwrap();
        let mut report = Report::new(&plan, &trees, fixed_conditions(&profile)).unwrap();
        report.action = Some("abc/12".into());
        report.bisection = Some(Bisection::judge(&[TrialTrees {
            aspect: Aspect::StartTime,
            variation: &plan[1],
            control: &trees[0],
            trial: &trees[1],
        }]));
        let text = report.render_text();
        for needle in [
            "NOT REPRODUCIBLE (2 runs)",
            "action: abc/12",
            "run 0: baseline",
            "cpus=1",
            "staging=reversed",
            "hostname           localhost",
            "TZ=UTC",
            "stamp.txt  (differs in run 1)",
            "first difference at byte 7",
            "-12:00:01",
            "+12:00:03",
            "tar archive:",
            "1 member(s) differ; first: stamp.txt",
            "responsible for stamp.txt: start_time",
        ] {
            assert!(text.contains(needle), "{needle:?} missing from:\n{text}");
        }
    }
}

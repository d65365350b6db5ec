//! The report of a reproducibility check: runs, variations, fixed
//! conditions, verdict, differences, bisection. Serialized as JSON (it is
//! also the attestation predicate, [`PREDICATE_TYPE`]) and rendered as
//! text by [`Report::render_text`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::compare::{self, Comparison};
use crate::plan::{Aspect, FixedCondition, RunVariation, aspects_varied};
use crate::tree::Tree;

/// The in-toto predicate type of a [`Report`] (see
/// `docs/reproducibility.md`).
pub const PREDICATE_TYPE: &str = "https://hermetic.dev/attestations/reproducibility/v1";

/// The report format's version (bumped on incompatible change, with the
/// predicate type).
pub const REPORT_VERSION: u32 = 1;

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every run produced the same output tree.
    Reproducible,
    /// At least one run's tree differs from the baseline's.
    NotReproducible,
}

/// A reproducibility check's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// The REAPI action digest (`hash/size`) the runs executed, when known
    /// (filled in by the caller).
    #[serde(default)]
    pub action: Option<String>,
    /// The verdict.
    pub verdict: Verdict,
    /// Each run: its variation and the digest of its outputs.
    pub runs: Vec<Run>,
    /// Conditions held fixed on purpose in every run.
    pub fixed: Vec<FixedCondition>,
    /// Every path that differs in some run, sorted.
    pub differing_paths: Vec<String>,
    /// Each run compared with run 0 (empty `differences` when equal).
    pub comparisons: Vec<Comparison>,
    /// The responsible variations, when one-at-a-time bisection ran.
    #[serde(default)]
    pub bisection: Option<Bisection>,
}

/// One run of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Its index (0: the baseline).
    pub index: usize,
    /// The variation applied.
    pub variation: RunVariation,
    /// The aspects in which it differs from the baseline's variation.
    pub varied: Vec<Aspect>,
    /// [`Tree::digest`] of its outputs.
    pub outputs_digest: String,
    /// How many paths its outputs hold.
    pub entries: usize,
}

/// The result of one-at-a-time bisection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bisection {
    /// Every trial and what it found.
    pub trials: Vec<TrialResult>,
    /// The aspects whose trial reproduced a difference, sorted;
    /// [`Aspect::Nothing`] alone when a run with nothing varied differed.
    pub responsible: Vec<Aspect>,
    /// For each path that differed in a trial, the aspects responsible.
    pub by_path: BTreeMap<String, Vec<Aspect>>,
}

/// One bisection trial: a control run of the baseline and a run with one
/// aspect changed, started together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialResult {
    /// The aspect changed.
    pub aspect: Aspect,
    /// The trial run's variation.
    pub variation: RunVariation,
    /// Paths where the trial's outputs differ from the control's.
    pub differing_paths: Vec<String>,
}

/// The output trees of one trial, for [`Bisection::judge`].
#[derive(Debug)]
pub struct TrialTrees<'a> {
    /// The aspect the trial changed.
    pub aspect: Aspect,
    /// The trial's variation.
    pub variation: &'a RunVariation,
    /// The outputs of the control run (the baseline, started together).
    pub control: &'a Tree,
    /// The outputs of the trial run.
    pub trial: &'a Tree,
}

impl Bisection {
    /// Judges trials: an aspect is responsible for a path when its trial's
    /// outputs differ there from the control's. A path that also differs
    /// when nothing was varied is put down to [`Aspect::Nothing`] alone.
    pub fn judge(trials: &[TrialTrees<'_>]) -> Bisection {
        let results: Vec<TrialResult> = trials
            .iter()
            .map(|t| TrialResult {
                aspect: t.aspect,
                variation: t.variation.clone(),
                differing_paths: compare::differing_paths(t.control, t.trial),
            })
            .collect();
        let mut by_path: BTreeMap<String, BTreeSet<Aspect>> = BTreeMap::new();
        for r in &results {
            for p in &r.differing_paths {
                by_path.entry(p.clone()).or_default().insert(r.aspect);
            }
        }
        let by_path: BTreeMap<String, Vec<Aspect>> = by_path
            .into_iter()
            .map(|(p, aspects)| {
                let v = if aspects.contains(&Aspect::Nothing) {
                    vec![Aspect::Nothing]
                } else {
                    aspects.into_iter().collect()
                };
                (p, v)
            })
            .collect();
        let responsible: BTreeSet<Aspect> = by_path.values().flatten().copied().collect();
        Bisection {
            trials: results,
            responsible: responsible.into_iter().collect(),
            by_path,
        }
    }
}

impl Report {
    /// Compares the runs' output trees (run 0 is the baseline) and builds
    /// the report; `variations[i]` is what run `i` applied.
    pub fn new(
        variations: &[RunVariation],
        trees: &[Tree],
        fixed: Vec<FixedCondition>,
    ) -> Result<Report, Error> {
        if variations.len() != trees.len() {
            return Err(Error::RunMismatch {
                variations: variations.len(),
                trees: trees.len(),
            });
        }
        let comparisons = compare::compare_all(trees)?;
        let differing_paths: BTreeSet<String> = comparisons
            .iter()
            .flat_map(|c| c.differences.iter().map(|d| d.path.clone()))
            .collect();
        let runs = variations
            .iter()
            .zip(trees)
            .enumerate()
            .map(|(index, (v, t))| Run {
                index,
                variation: v.clone(),
                varied: aspects_varied(&variations[0], v),
                outputs_digest: t.digest(),
                entries: t.entries().len(),
            })
            .collect();
        Ok(Report {
            version: REPORT_VERSION,
            action: None,
            verdict: if differing_paths.is_empty() {
                Verdict::Reproducible
            } else {
                Verdict::NotReproducible
            },
            runs,
            fixed,
            differing_paths: differing_paths.into_iter().collect(),
            comparisons,
            bisection: None,
        })
    }

    /// Whether every run gave the same outputs.
    pub fn is_reproducible(&self) -> bool {
        self.verdict == Verdict::Reproducible
    }

    /// The report as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a report always serializes")
    }

    /// The report as readable text (see [`crate::text`]).
    pub fn render_text(&self) -> String {
        crate::text::render(self)
    }
}

/// The attestation predicate for `report`: its JSON, to be signed as the
/// `predicate` of an in-toto Statement whose `predicateType` is
/// [`PREDICATE_TYPE`] and whose subjects are the baseline run's outputs.
pub fn predicate(report: &Report) -> serde_json::Value {
    serde_json::to_value(report).expect("a report always serializes")
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::plan::plan_for_cpus;
    use crate::testutil::TempDir;

    fn trees(dir: &TempDir, contents: &[&str]) -> Vec<Tree> {
        contents
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let d = dir.path().join(format!("run-{i}"));
                fs::create_dir_all(&d).unwrap();
                fs::write(d.join("stable.txt"), "stable\n").unwrap();
                fs::write(d.join("stamp.txt"), c).unwrap();
                Tree::read(&d).unwrap()
            })
            .collect()
    }

    #[test]
    fn verdicts_and_differing_paths() {
        let dir = TempDir::new("report");
        let plan = plan_for_cpus(3, 1, 2);
        let same = trees(&dir, &["a\n", "a\n", "a\n"]);
        let r = Report::new(&plan, &same, vec![]).unwrap();
        assert!(r.is_reproducible());
        assert_eq!(r.runs[1].varied.len(), 7);
        let dir = TempDir::new("report2");
        let differ = trees(&dir, &["a\n", "a\n", "b\n"]);
        let r = Report::new(&plan, &differ, vec![]).unwrap();
        assert_eq!(r.verdict, Verdict::NotReproducible);
        assert_eq!(r.differing_paths, ["stamp.txt"]);
        assert!(r.comparisons[0].differences.is_empty());
        assert_eq!(r.comparisons[1].run, 2);
        let v = predicate(&r);
        assert_eq!(v["verdict"], "not_reproducible");
        assert_eq!(v["differing_paths"][0], "stamp.txt");
        let back: Report = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
        assert!(Report::new(&plan[..2], &differ, vec![]).is_err());
    }

    #[test]
    fn judge_attributes_paths() {
        let dir = TempDir::new("judge");
        let t = trees(&dir, &["a\n", "b\n"]);
        let v = RunVariation::default();
        let trial = |aspect, control, trial| TrialTrees {
            aspect,
            variation: &v,
            control,
            trial,
        };
        let b = Bisection::judge(&[
            trial(Aspect::Nothing, &t[0], &t[0]),
            trial(Aspect::Pids, &t[0], &t[1]),
            trial(Aspect::Cpus, &t[0], &t[0]),
        ]);
        assert_eq!(b.responsible, [Aspect::Pids]);
        assert_eq!(b.by_path["stamp.txt"], [Aspect::Pids]);
        let b = Bisection::judge(&[
            trial(Aspect::Nothing, &t[0], &t[1]),
            trial(Aspect::Pids, &t[0], &t[1]),
        ]);
        assert_eq!(b.responsible, [Aspect::Nothing]);
    }
}

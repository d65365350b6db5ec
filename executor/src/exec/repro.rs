//! Reproducibility checks: one action run N ≥ 2 times in independent
//! sandboxes under varied non-semantic conditions, the output trees
//! compared, and a report of where they differ (`hermetic-repro` plans,
//! compares and renders; this module runs).
//!
//! Asked for with platform properties, so that any REAPI client can ask:
//!
//! | property | value | meaning |
//! |---|---|---|
//! | `hermetic-check-repro` | `2`..=`8` | runs to compare |
//! | `hermetic-check-repro-bisect` | `true`/`false` | on a mismatch, find the responsible variation by one-at-a-time trials |
//! | `hermetic-cache-nonreproducible` | `true`/`false` | cache the result even when the runs differ |
//!
//! Like every platform property they are part of the action key: a check is
//! a different action from the plain one, and its cached result says that
//! the check passed.
//!
//! Run 0 is the baseline and its result is the action's result; every
//! other run varies everything at once ([`hermetic_repro::plan::plan`]):
//! start time (runs [`START_SPACING_MS`] apart), clock offsets, pid
//! offset, visible CPUs, ASLR, the environment's order and the creation
//! order of the staged input's entries. For the last to matter, each run's
//! input is copied onto tmpfs, where readdir follows creation order
//! ([`STAGING_BASE`], verified to be tmpfs). The seed of the plan comes
//! from the action digest, so checking one action twice varies it the
//! same way.
//!
//! The report (JSON and text) goes into the CAS and the response's
//! `server_logs` as [`REPORT_JSON`] and [`REPORT_TEXT`]. When the runs
//! differ (in outputs or exit code), the response's message says so and
//! the result is not cached unless `hermetic-cache-nonreproducible` asks.
//!
//! [`START_SPACING_MS`]: hermetic_repro::plan::START_SPACING_MS

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bazel_remote_apis::build::bazel::remote::execution::v2::LogFile;
use hermetic_repro::{Bisection, Report, RunVariation, Tree, TrialTrees, Verdict, plan};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::cas::blocking;
use crate::error::{Error, Result};
use crate::exec::action::Prepared;
use crate::exec::runner::{RunEnv, RunOutcome, VariedRun, run_once};
use crate::exec::staging;

/// Runs to compare.
pub const CHECK_REPRO: &str = "hermetic-check-repro";
/// Bisection on a mismatch.
pub const CHECK_REPRO_BISECT: &str = "hermetic-check-repro-bisect";
/// Cache a result whose runs differed.
pub const CACHE_NONREPRODUCIBLE: &str = "hermetic-cache-nonreproducible";
/// The platform properties of this module.
pub const PROPERTIES: [&str; 3] = [CHECK_REPRO, CHECK_REPRO_BISECT, CACHE_NONREPRODUCIBLE];
/// Most runs one check may ask for.
pub const MAX_RUNS: usize = 8;
/// `server_logs` name of the JSON report.
pub const REPORT_JSON: &str = "repro-report.json";
/// `server_logs` name of the text report.
pub const REPORT_TEXT: &str = "repro-report.txt";
/// `server_logs` name of the signed report: a bundle (DSSE envelope of an
/// in-toto Statement whose predicate is the report, its transparency-log
/// proof and checkpoint), verifiable like provenance.
pub const REPORT_ATTESTATION: &str = "repro-attestation.json";
/// Where check runs stage their inputs: tmpfs, so that the creation order
/// of directory entries is their readdir order.
pub const STAGING_BASE: &str = "/dev/shm/hermetic-repro";

/// A check an action asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Runs to compare (≥ 2).
    pub runs: usize,
    /// Bisect on a mismatch.
    pub bisect: bool,
    /// Cache the result even when the runs differ.
    pub cache_anyway: bool,
}

/// The properties as an action's platform gives them.
#[derive(Debug, Default)]
pub struct Properties {
    runs: Option<usize>,
    bisect: Option<bool>,
    cache_anyway: Option<bool>,
}

impl Properties {
    /// Whether `name` is one of [`PROPERTIES`].
    pub fn accepts(&self, name: &str) -> bool {
        PROPERTIES.contains(&name)
    }

    /// Takes one property's value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let flag = |v: &str| match v {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err(Error::InvalidArgument(format!(
                "{name} {v:?} is neither \"true\" nor \"false\""
            ))),
        };
        match name {
            CHECK_REPRO => match value.parse::<usize>() {
                Ok(n) if (2..=MAX_RUNS).contains(&n) => self.runs = Some(n),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "{CHECK_REPRO} {value:?} is not a number of runs from 2 to {MAX_RUNS}"
                    )));
                }
            },
            CHECK_REPRO_BISECT => self.bisect = Some(flag(value)?),
            CACHE_NONREPRODUCIBLE => self.cache_anyway = Some(flag(value)?),
            other => {
                return Err(Error::InvalidArgument(format!(
                    "{other:?} is not a reproducibility-check property"
                )));
            }
        }
        Ok(())
    }

    /// The check asked for; the modifiers without [`CHECK_REPRO`] are an
    /// error, not silently nothing.
    pub fn request(self) -> Result<Option<Request>> {
        match self.runs {
            Some(runs) => Ok(Some(Request {
                runs,
                bisect: self.bisect.unwrap_or(false),
                cache_anyway: self.cache_anyway.unwrap_or(false),
            })),
            None if self.bisect.is_some() || self.cache_anyway.is_some() => {
                Err(Error::InvalidArgument(format!(
                    "{CHECK_REPRO_BISECT} and {CACHE_NONREPRODUCIBLE} need {CHECK_REPRO}"
                )))
            }
            None => Ok(None),
        }
    }
}

/// Runs the check; the response is run 0's with the report attached.
pub async fn check(
    env: &RunEnv,
    op_name: &str,
    p: Arc<Prepared>,
    cancel: watch::Receiver<bool>,
    queued_at: SystemTime,
    request: Request,
) -> RunOutcome {
    let id = op_name.rsplit('/').next().unwrap_or(op_name).to_owned();
    let kept = env.actions_dir.join(format!("{id}-repro"));
    let stage = Path::new(STAGING_BASE).join(&id);
    let result = checked(env, op_name, &p, cancel, queued_at, request, &kept, &stage).await;
    let (kept2, stage2) = (kept.clone(), stage.clone());
    let _ = tokio::task::spawn_blocking(move || {
        staging::remove_tree(&kept2);
        staging::remove_tree(&stage2);
    })
    .await;
    match result {
        Ok(outcome) => outcome,
        Err(e) => RunOutcome {
            response: bazel_remote_apis::build::bazel::remote::execution::v2::ExecuteResponse {
                status: Some(e.to_rpc_status()),
                ..Default::default()
            },
            cacheable: false,
            leftovers: Default::default(),
        },
    }
}

/// The plan's seed: the first 8 bytes of the action's hash.
fn seed_of(p: &Prepared) -> u64 {
    let h = &p.action_key.hash;
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

#[allow(clippy::too_many_arguments)]
async fn checked(
    env: &RunEnv,
    op_name: &str,
    p: &Arc<Prepared>,
    cancel: watch::Receiver<bool>,
    queued_at: SystemTime,
    request: Request,
    kept: &Path,
    stage: &Path,
) -> Result<RunOutcome> {
    prepare_dirs(kept, stage).await?;
    let variations = plan::plan(request.runs, seed_of(p));
    let start = Instant::now();
    let mut outcomes: Vec<RunOutcome> = Vec::new();
    let mut trees_at = Vec::new();
    for (i, v) in variations.iter().enumerate() {
        tokio::time::sleep_until(start + Duration::from_millis(v.delay_ms)).await;
        let name = if i == 0 {
            op_name.to_owned()
        } else {
            format!("{op_name}-repro-{i}")
        };
        let outputs = kept.join(format!("run-{i}"));
        let varied = VariedRun {
            variation: v.clone(),
            staging: stage.join(format!("run-{i}")),
            keep_outputs: outputs.clone(),
            attest: i == 0,
        };
        let outcome = run_once(
            env,
            &name,
            p.clone(),
            cancel.clone(),
            queued_at,
            Some(&varied),
        )
        .await;
        let failed = outcome
            .response
            .status
            .as_ref()
            .is_some_and(|s| s.code != 0);
        if failed || *cancel.borrow() {
            // An infrastructure failure, a timeout or a cancel in any run:
            // no comparison; that run's answer is the action's.
            return Ok(RunOutcome {
                cacheable: false,
                ..outcome
            });
        }
        outcomes.push(outcome);
        trees_at.push(outputs);
    }
    let exit_codes: Vec<i32> = outcomes
        .iter()
        .map(|o| o.response.result.as_ref().map_or(-1, |r| r.exit_code))
        .collect();
    let fixed = plan::fixed_conditions(&p.selection.profile);
    let trees_at2 = trees_at.clone();
    let variations2 = variations.clone();
    let mut report = blocking(move || {
        let trees = read_trees(&trees_at2)?;
        Report::new(&variations2, &trees, fixed)
            .map_err(|e| Error::Internal(format!("cannot compare the check's runs: {e}")))
    })
    .await?;
    report.action = Some(format!("{}/{}", p.action_key.hex(), p.action_key.size));
    let exit_differs = exit_codes.iter().any(|c| *c != exit_codes[0]);
    if exit_differs {
        report.verdict = Verdict::NotReproducible;
    }
    if !report.is_reproducible() && request.bisect {
        report.bisection = Some(
            bisect(
                env,
                op_name,
                p,
                &cancel,
                queued_at,
                &variations[0],
                kept,
                stage,
            )
            .await?,
        );
    }
    let mut text = report.render_text();
    if exit_differs {
        text.push_str(&format!(
            "\nexit codes differ between runs: {}\n",
            exit_codes
                .iter()
                .enumerate()
                .map(|(i, c)| format!("run {i}: {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let reproducible = report.is_reproducible();
    info!(
        operation = op_name,
        runs = request.runs,
        reproducible,
        differing = report.differing_paths.len(),
        "reproducibility check finished"
    );
    let mut run0 = outcomes.swap_remove(0);
    let (store, function, json) = (env.store.clone(), p.function, report.to_json());
    let (provenance, baseline) = (env.provenance.clone(), trees_at[0].clone());
    let signed = report.clone();
    let (json_key, text_key, bundle_key) = blocking(move || {
        let statement = statement(&signed, &baseline)?;
        let bundle = provenance
            .with(|a| a.attest_statement(&statement))
            .map_err(|e| Error::Internal(format!("cannot sign the reproducibility report: {e}")))?;
        Ok((
            store.put_new(function, json.as_bytes())?,
            store.put_new(function, text.as_bytes())?,
            store.put_new(function, &bundle.to_json())?,
        ))
    })
    .await?;
    let logs: &mut HashMap<String, LogFile> = &mut run0.response.server_logs;
    for (name, key) in [
        (REPORT_JSON, json_key),
        (REPORT_TEXT, text_key),
        (REPORT_ATTESTATION, bundle_key),
    ] {
        logs.insert(
            name.to_owned(),
            LogFile {
                digest: Some(key.to_proto()),
                human_readable: true,
            },
        );
    }
    if !reproducible {
        let what = if report.differing_paths.is_empty() {
            "their exit codes".to_owned()
        } else {
            format!("{} output path(s)", report.differing_paths.len())
        };
        let note = format!(
            "not reproducible: {} runs differ in {what} (see server log {REPORT_TEXT})",
            request.runs
        );
        run0.response.message = if run0.response.message.is_empty() {
            note
        } else {
            format!("{note}; {}", run0.response.message)
        };
    }
    run0.cacheable = run0.cacheable && (reproducible || request.cache_anyway);
    Ok(run0)
}

/// One-at-a-time trials: each aspect varied alone in a run started
/// together with a control run of the baseline, both just after a
/// wall-clock second boundary, so that time-of-day outputs agree.
#[allow(clippy::too_many_arguments)]
async fn bisect(
    env: &RunEnv,
    op_name: &str,
    p: &Arc<Prepared>,
    cancel: &watch::Receiver<bool>,
    queued_at: SystemTime,
    baseline: &RunVariation,
    kept: &Path,
    stage: &Path,
) -> Result<Bisection> {
    let mut dirs = Vec::new();
    for (i, (aspect, trial)) in plan::one_at_a_time(baseline).into_iter().enumerate() {
        if *cancel.borrow() {
            return Err(Error::Cancelled("cancelled during bisection".into()));
        }
        align_to_second().await;
        let start = Instant::now();
        let one = |role: &str, v: &RunVariation| {
            let name = format!("{op_name}-bisect-{i}-{role}");
            let outputs = kept.join(format!("bisect-{i}-{role}"));
            let varied = VariedRun {
                variation: v.clone(),
                staging: stage.join(format!("bisect-{i}-{role}")),
                keep_outputs: outputs.clone(),
                attest: false,
            };
            let (p, cancel) = (p.clone(), cancel.clone());
            async move {
                tokio::time::sleep_until(start + Duration::from_millis(varied.variation.delay_ms))
                    .await;
                let o = run_once(env, &name, p, cancel, queued_at, Some(&varied)).await;
                (o, outputs)
            }
        };
        let ((c, cdir), (t, tdir)) = tokio::join!(one("control", baseline), one("trial", &trial));
        for o in [&c, &t] {
            if let Some(s) = o.response.status.as_ref().filter(|s| s.code != 0) {
                return Err(Error::Internal(format!(
                    "a bisection run for {aspect:?} failed: {}",
                    s.message
                )));
            }
        }
        dirs.push((aspect, trial, cdir, tdir));
    }
    blocking(move || {
        let mut read = Vec::new();
        for (aspect, v, c, t) in &dirs {
            let trees = read_trees(&[c.clone(), t.clone()])?;
            read.push((*aspect, v.clone(), trees));
        }
        let trials: Vec<TrialTrees<'_>> = read
            .iter()
            .map(|(aspect, v, trees)| TrialTrees {
                aspect: *aspect,
                variation: v,
                control: &trees[0],
                trial: &trees[1],
            })
            .collect();
        Ok(Bisection::judge(&trials))
    })
    .await
}

/// The in-toto Statement of a report: its predicate the report, its
/// subjects the baseline run's output files with SHA-256 and BLAKE3 (as
/// in provenance), read from the kept copy.
fn statement(report: &Report, baseline: &Path) -> Result<serde_json::Value> {
    use hermetic_attest::FileRecord;
    let tree = Tree::read(baseline)
        .map_err(|e| Error::Internal(format!("cannot read the baseline's outputs: {e}")))?;
    let mut records = Vec::new();
    for (path, entry) in tree.entries() {
        if !matches!(entry, hermetic_repro::tree::Entry::File { .. }) {
            continue;
        }
        let file = tree.path_of(path);
        let f = std::fs::File::open(&file).map_err(Error::io("open", &file))?;
        records.push(
            FileRecord::from_reader(path.as_str(), std::io::BufReader::new(f), false)
                .map_err(Error::io("read", &file))?,
        );
    }
    if records.is_empty() {
        // A statement needs a subject: the report itself, by its digest.
        records.push(FileRecord::of(
            REPORT_JSON,
            report.to_json().as_bytes(),
            false,
        ));
    }
    let subjects: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.path,
                "digest": {"sha256": r.sha256, "blake3": r.blake3},
            })
        })
        .collect();
    Ok(serde_json::json!({
        "_type": hermetic_attest::provenance::STATEMENT_TYPE,
        "subject": subjects,
        "predicateType": hermetic_repro::PREDICATE_TYPE,
        "predicate": hermetic_repro::predicate(report),
    }))
}

/// Sleeps until 30 ms past the next wall-clock second boundary.
async fn align_to_second() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_nanos(u64::from(now.subsec_nanos()));
    tokio::time::sleep(Duration::from_secs(1) - into + Duration::from_millis(30)).await;
}

/// Reads each run's kept outputs; a run that collected nothing has an
/// empty tree.
fn read_trees(dirs: &[PathBuf]) -> Result<Vec<Tree>> {
    dirs.iter()
        .map(|d| {
            if !d.exists() {
                std::fs::create_dir_all(d).map_err(Error::io("create", d))?;
            }
            Tree::read(d)
                .map_err(|e| Error::Internal(format!("cannot read a check run's outputs: {e}")))
        })
        .collect()
}

/// Creates the directory for kept outputs and the tmpfs staging directory,
/// refusing a staging base that is not tmpfs (the staging-order variation
/// would silently do nothing there).
async fn prepare_dirs(kept: &Path, stage: &Path) -> Result<()> {
    let (kept, stage) = (kept.to_owned(), stage.to_owned());
    blocking(move || {
        std::fs::create_dir_all(&kept).map_err(Error::io("create", &kept))?;
        let base = Path::new(STAGING_BASE);
        if let Err(e) = std::fs::create_dir(base)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            return Err(Error::FailedPrecondition(format!(
                "reproducibility checks stage inputs in {STAGING_BASE}, which cannot be created: {e}"
            )));
        }
        let fs = nix::sys::statfs::statfs(base).map_err(|e| {
            Error::FailedPrecondition(format!("cannot statfs {STAGING_BASE}: {e}"))
        })?;
        if fs.filesystem_type() != nix::sys::statfs::TMPFS_MAGIC {
            return Err(Error::FailedPrecondition(format!(
                "reproducibility checks stage inputs on tmpfs, but {STAGING_BASE} is not on tmpfs"
            )));
        }
        // Searchable by the sandbox's host ids, which mount the staged
        // tree; nothing listable.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(base, std::fs::Permissions::from_mode(0o711))
            .map_err(Error::io("chmod", base))?;
        std::fs::create_dir(&stage).map_err(Error::io("create", &stage))?;
        std::fs::set_permissions(&stage, std::fs::Permissions::from_mode(0o711))
            .map_err(Error::io("chmod", &stage))?;
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_parse_and_refuse() {
        let mut p = Properties::default();
        assert!(p.accepts(CHECK_REPRO) && !p.accepts("container-image"));
        p.set(CHECK_REPRO, "3").unwrap();
        p.set(CHECK_REPRO_BISECT, "true").unwrap();
        assert_eq!(
            p.request().unwrap(),
            Some(Request {
                runs: 3,
                bisect: true,
                cache_anyway: false
            })
        );
        for bad in ["1", "9", "two", ""] {
            let e = Properties::default().set(CHECK_REPRO, bad).unwrap_err();
            assert!(e.to_string().contains(CHECK_REPRO), "{e}");
        }
        let e = Properties::default()
            .set(CACHE_NONREPRODUCIBLE, "yes")
            .unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let mut lone = Properties::default();
        lone.set(CHECK_REPRO_BISECT, "true").unwrap();
        assert!(lone.request().is_err());
        assert_eq!(Properties::default().request().unwrap(), None);
    }
}

//! `hermetic-repro`: reproducibility checks, the library half of issue 7.
//!
//! "Reproducible" must be checked, not claimed. A check runs one action
//! N ≥ 2 times in independent sandboxes under varied non-semantic
//! conditions, compares the output trees by digest, and on a mismatch
//! names every differing file and where it first differs. This crate holds
//! everything of that which is not running the action: the plan, the
//! comparison, the report and its attestation predicate. The daemon
//! (`hermeticd`) and the client (`hermetic run --check-repro`,
//! `hermetic reproduce`) call it.
//!
//! # A check, step by step
//!
//! 1. **Plan.** [`plan::plan`]`(n, seed)` gives one [`RunVariation`] per
//!    run. Run 0 is the baseline; every other run varies every
//!    non-semantic condition at once: CPU count (affinity), monotonic and
//!    boot-time clock offsets, pid offset, ASLR, the creation order of the
//!    staged input entries, the order of the environment, and the start
//!    time (runs start [`plan::START_SPACING_MS`] apart).
//! 2. **Run** (the caller). For each run: stage the inputs creating each
//!    directory's entries in the order [`plan::permute`] gives for
//!    `staging_order_seed` (on tmpfs, where readdir follows creation
//!    order; [`staging::copy_tree`] does it from a directory), permute the
//!    environment with `env_order_seed`, put `sandbox` in
//!    `Spec::variation`, start no earlier than `delay_ms` after the check's
//!    start, and collect the outputs into a directory.
//! 3. **Compare.** [`Tree::read`] each output directory (never following a
//!    symlink), then [`Report::new`]`(&plan, &trees, fixed)` compares each
//!    run with run 0 ([`compare`]), and for each differing file gives the
//!    first differing byte with hex context, a unified diff for text, and
//!    member-level differences for tar (plain or gzip'd), zip, ar and gzip
//!    ([`content`], [`archive`]). `fixed` is
//!    [`plan::fixed_conditions`]`(&profile)`: what stays the same on
//!    purpose (hostname, user, build path, locale, TZ, SOURCE_DATE_EPOCH,
//!    umask).
//! 4. **Bisect** (on request). [`plan::one_at_a_time`]`(&baseline)` gives
//!    one trial per [`Aspect`]: the baseline with that one aspect changed.
//!    Run each trial together with a control run of the baseline (one
//!    start instant, just after a wall-clock second boundary), read both
//!    trees, and [`Bisection::judge`] names the responsible aspects, per
//!    path. A difference with nothing varied ([`Aspect::Nothing`]) means
//!    randomness or a race inside the step.
//! 5. **Report.** [`Report::to_json`], [`Report::render_text`], and
//!    [`report::predicate`] for the attestation whose predicate type is
//!    [`PREDICATE_TYPE`] (fields documented in `docs/reproducibility.md`).
//!
//! # `hermetic reproduce`
//!
//! An auditor re-executes from the inputs an attestation names and reads
//! the rebuilt outputs with [`Tree::read`]; [`subjects::check`] against
//! [`subjects::from_statement`] gives the yes (no mismatch) or the list of
//! files that differ. When the attested outputs themselves are at hand
//! (from the daemon's CAS), [`Report::new`] with two runs (both
//! [`RunVariation::default()`]) gives the file-level diff.
//!
//! # Test strategy
//!
//! Unit tests build trees and archives in temp directories and memory.
//! `tests/corpus.rs` runs the builds of `corpus/` (each non-deterministic
//! in one known way, or deterministic) through the real sandbox helper,
//! checks that each is found with the right file named, and that
//! bisection names the right variation. It needs root: without it, it
//! prints `SKIP:` (and fails when `CI=true`).

pub mod archive;
pub mod compare;
pub mod content;
pub mod plan;
pub mod report;
pub mod staging;
pub mod subjects;
pub mod text;
pub mod tree;

use std::path::{Path, PathBuf};

pub use plan::{Aspect, FixedCondition, RunVariation};
pub use report::{Bisection, PREDICATE_TYPE, Report, TrialTrees, Verdict, predicate};
pub use tree::Tree;

/// Errors of this crate: each names the path or counts involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("failed to read or write {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A tree root is not a directory (or is a symlink).
    #[error("{path} is not a directory")]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// A tree holds too many entries to compare.
    #[error("{path} holds more than {limit} entries")]
    TooManyEntries {
        /// The tree's root.
        path: PathBuf,
        /// The limit.
        limit: usize,
    },
    /// A fifo, socket or device where only files, directories and
    /// symlinks may be.
    #[error("{path} is neither a file, a directory nor a symlink")]
    Unsupported {
        /// The path.
        path: PathBuf,
    },
    /// Fewer than two trees were given to compare.
    #[error("a check needs at least two runs to compare, got {0}")]
    TooFewRuns(usize),
    /// The numbers of variations and trees differ.
    #[error("{variations} variations but {trees} output trees")]
    RunMismatch {
        /// Variations given.
        variations: usize,
        /// Trees given.
        trees: usize,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::path::Path;

    /// A temporary directory removed on drop.
    #[derive(Debug)]
    pub(crate) struct TempDir(tempfile::TempDir);

    impl TempDir {
        pub(crate) fn new(prefix: &str) -> Self {
            TempDir(
                tempfile::Builder::new()
                    .prefix(&format!("hermetic-repro-{prefix}-"))
                    .tempdir()
                    .expect("a temp dir"),
            )
        }

        pub(crate) fn path(&self) -> &Path {
            self.0.path()
        }
    }
}

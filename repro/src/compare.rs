//! Comparing output trees: by digest first, then, for each path that
//! differs, what changed and where.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::content::{self, ContentDiff};
use crate::tree::{Entry, Tree};

/// Largest file read whole for a content comparison; larger files are
/// reported by digest only.
pub const MAX_COMPARED_FILE_BYTES: u64 = 512 << 20;

/// How one run's tree differs from the baseline's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The baseline run's index (0).
    pub baseline: usize,
    /// The compared run's index.
    pub run: usize,
    /// Every difference, sorted by path.
    pub differences: Vec<Difference>,
}

/// One difference at one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Difference {
    /// The path, relative to the output root.
    pub path: String,
    /// What changed.
    pub change: Change,
}

/// What changed at a path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    /// Only the other run has the path.
    Added {
        /// The entry there.
        entry: Entry,
    },
    /// Only the baseline has the path.
    Removed {
        /// The entry there.
        entry: Entry,
    },
    /// A file in one, a directory or symlink in the other.
    TypeChanged {
        /// The baseline's kind.
        baseline: String,
        /// The other run's kind.
        run: String,
    },
    /// A symlink points elsewhere.
    SymlinkTarget {
        /// The baseline's target.
        baseline: String,
        /// The other run's target.
        run: String,
    },
    /// Permission bits differ (octal strings).
    Mode {
        /// The baseline's mode.
        baseline: String,
        /// The other run's mode.
        run: String,
    },
    /// A file's content differs.
    Content {
        /// The baseline's digest.
        baseline_digest: String,
        /// The other run's digest.
        run_digest: String,
        /// Where and how (absent when a side is too large to read whole).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<Box<ContentDiff>>,
    },
}

/// Compares every tree after the first with the first (the baseline).
pub fn compare_all(trees: &[Tree]) -> Result<Vec<Comparison>, Error> {
    if trees.len() < 2 {
        return Err(Error::TooFewRuns(trees.len()));
    }
    (1..trees.len())
        .map(|i| {
            Ok(Comparison {
                baseline: 0,
                run: i,
                differences: compare(&trees[0], &trees[i])?,
            })
        })
        .collect()
}

/// The paths where two trees differ, by listing and digest only (no file
/// is read): what a bisection trial needs.
pub fn differing_paths(a: &Tree, b: &Tree) -> Vec<String> {
    let (ea, eb) = (a.entries(), b.entries());
    let paths: BTreeSet<&String> = ea.keys().chain(eb.keys()).collect();
    paths
        .into_iter()
        .filter(|p| ea.get(*p) != eb.get(*p))
        .cloned()
        .collect()
}

/// Every difference between `baseline` and `run`, with content details.
pub fn compare(baseline: &Tree, run: &Tree) -> Result<Vec<Difference>, Error> {
    let (ea, eb) = (baseline.entries(), run.entries());
    let mut out = Vec::new();
    for path in differing_paths(baseline, run) {
        let mut push = |change| {
            out.push(Difference {
                path: path.clone(),
                change,
            })
        };
        match (ea.get(&path), eb.get(&path)) {
            (Some(a), None) => push(Change::Removed { entry: a.clone() }),
            (None, Some(b)) => push(Change::Added { entry: b.clone() }),
            (Some(a), Some(b)) if a.kind() != b.kind() => push(Change::TypeChanged {
                baseline: a.kind().to_owned(),
                run: b.kind().to_owned(),
            }),
            (Some(Entry::Symlink { target: ta }), Some(Entry::Symlink { target: tb })) => {
                push(Change::SymlinkTarget {
                    baseline: ta.clone(),
                    run: tb.clone(),
                })
            }
            (
                Some(Entry::File {
                    digest: da,
                    size: sa,
                    mode: ma,
                }),
                Some(Entry::File {
                    digest: db,
                    size: sb,
                    mode: mb,
                }),
            ) => {
                if ma != mb {
                    push(Change::Mode {
                        baseline: format!("{ma:o}"),
                        run: format!("{mb:o}"),
                    });
                }
                if da != db {
                    let detail = if *sa <= MAX_COMPARED_FILE_BYTES && *sb <= MAX_COMPARED_FILE_BYTES
                    {
                        let read = |t: &Tree| {
                            let p = t.path_of(&path);
                            std::fs::read(&p).map_err(|e| Error::io(&p, e))
                        };
                        content::compare(&path, &read(baseline)?, &read(run)?).map(Box::new)
                    } else {
                        None
                    };
                    push(Change::Content {
                        baseline_digest: da.clone(),
                        run_digest: db.clone(),
                        detail,
                    });
                }
            }
            (Some(Entry::Directory { mode: ma }), Some(Entry::Directory { mode: mb }))
            | (Some(Entry::Special { mode: ma }), Some(Entry::Special { mode: mb })) => {
                push(Change::Mode {
                    baseline: format!("{ma:o}"),
                    run: format!("{mb:o}"),
                })
            }
            (a, b) => unreachable!("differing_paths gave an equal or absent pair: {a:?} {b:?}"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn every_kind_of_difference() {
        let dir = TempDir::new("compare");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d.join("sub")).unwrap();
            fs::write(d.join("same"), "same\n").unwrap();
        }
        fs::write(a.join("text"), "line 1\nline 2\n").unwrap();
        fs::write(b.join("text"), "line 1\nline two\n").unwrap();
        fs::write(a.join("gone"), "").unwrap();
        fs::write(b.join("new"), "").unwrap();
        fs::write(a.join("kind"), "").unwrap();
        fs::create_dir(b.join("kind")).unwrap();
        symlink("x", a.join("sub/link")).unwrap();
        symlink("y", b.join("sub/link")).unwrap();
        fs::write(a.join("exe"), "#!").unwrap();
        fs::write(b.join("exe"), "#!").unwrap();
        fs::set_permissions(b.join("exe"), fs::Permissions::from_mode(0o755)).unwrap();
        let trees = [Tree::read(&a).unwrap(), Tree::read(&b).unwrap()];
        let all = compare_all(&trees).unwrap();
        assert_eq!(all.len(), 1);
        let kinds: Vec<(&str, String)> = all[0]
            .differences
            .iter()
            .map(|d| {
                let v = serde_json::to_value(&d.change).unwrap();
                (d.path.as_str(), v["kind"].as_str().unwrap().to_owned())
            })
            .collect();
        let expect = [
            ("exe", "mode"),
            ("gone", "removed"),
            ("kind", "type_changed"),
            ("new", "added"),
            ("sub/link", "symlink_target"),
            ("text", "content"),
        ];
        assert_eq!(
            kinds,
            expect
                .iter()
                .map(|(p, k)| (*p, (*k).to_owned()))
                .collect::<Vec<_>>()
        );
        let Change::Content { detail, .. } = &all[0].differences[5].change else {
            panic!()
        };
        let detail = detail.as_ref().unwrap();
        assert_eq!(detail.first_difference.offset, 12);
        assert!(detail.text.as_ref().unwrap().unified.contains("+line two"));
        assert_eq!(
            differing_paths(&trees[0], &trees[1]),
            ["exe", "gone", "kind", "new", "sub/link", "text"]
        );
    }

    #[test]
    fn equal_trees_have_no_differences() {
        let dir = TempDir::new("equal");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for d in [&a, &b] {
            fs::create_dir_all(d).unwrap();
            fs::write(d.join("f"), "x").unwrap();
        }
        let trees = [Tree::read(&a).unwrap(), Tree::read(&b).unwrap()];
        assert!(compare_all(&trees).unwrap()[0].differences.is_empty());
        assert!(compare_all(&trees[..1]).is_err());
    }
}

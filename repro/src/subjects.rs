//! Output files as in-toto subjects, and a rebuilt tree checked against an
//! attestation's subjects: the yes-or-diff of `hermetic reproduce`.
//!
//! Subjects follow `docs/provenance.md`: every output file (directories
//! expanded), sorted by path, named by its path relative to the input root,
//! with `digest.sha256` the lowercase hex SHA-256 (other digest keys, such
//! as `blake3`, are not checked here).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tree::{Entry, Tree};

/// One subject: a file's name and SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Path relative to the input root.
    pub name: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
}

/// How a rebuilt tree disagrees with the attested subjects.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SubjectMismatch {
    /// An attested file the rebuild did not produce (or not as a file).
    Missing {
        /// The subject's name.
        name: String,
    },
    /// The rebuild produced different content.
    Differs {
        /// The subject's name.
        name: String,
        /// The attested SHA-256.
        attested: String,
        /// The rebuilt file's SHA-256.
        rebuilt: String,
    },
    /// A file the rebuild produced that no subject names.
    NotAttested {
        /// Its path.
        name: String,
    },
}

/// The subjects of a tree's files, sorted by name (the baseline run's
/// outputs are the subjects of a reproducibility attestation).
pub fn subjects(tree: &Tree) -> Vec<Subject> {
    tree.entries()
        .iter()
        .filter_map(|(path, e)| match e {
            Entry::File { digest, .. } => Some(Subject {
                name: path.clone(),
                sha256: digest.trim_start_matches("sha256:").to_owned(),
            }),
            _ => None,
        })
        .collect()
}

/// The subjects of an in-toto Statement (`subject[].name`,
/// `subject[].digest.sha256`); entries without a SHA-256 are skipped.
pub fn from_statement(statement: &Value) -> Vec<Subject> {
    statement["subject"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some(Subject {
                        name: s["name"].as_str()?.to_owned(),
                        sha256: s["digest"]["sha256"].as_str()?.to_ascii_lowercase(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a rebuilt tree against attested subjects; empty when every
/// subject is reproduced exactly and nothing else was produced.
pub fn check(rebuilt: &Tree, attested: &[Subject]) -> Vec<SubjectMismatch> {
    let have: std::collections::BTreeMap<String, String> = subjects(rebuilt)
        .into_iter()
        .map(|s| (s.name, s.sha256))
        .collect();
    let mut out = Vec::new();
    for s in attested {
        match have.get(&s.name) {
            None => out.push(SubjectMismatch::Missing {
                name: s.name.clone(),
            }),
            Some(d) if *d != s.sha256 => out.push(SubjectMismatch::Differs {
                name: s.name.clone(),
                attested: s.sha256.clone(),
                rebuilt: d.clone(),
            }),
            Some(_) => {}
        }
    }
    let named: std::collections::BTreeSet<&str> =
        attested.iter().map(|s| s.name.as_str()).collect();
    for name in have.keys() {
        if !named.contains(name.as_str()) {
            out.push(SubjectMismatch::NotAttested { name: name.clone() });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn rebuilt_tree_against_a_statement() {
        let dir = TempDir::new("subjects");
        let root = dir.path();
        fs::create_dir(root.join("out")).unwrap();
        fs::write(root.join("out/a"), "a").unwrap();
        fs::write(root.join("out/b"), "b").unwrap();
        let tree = Tree::read(root).unwrap();
        let subs = subjects(&tree);
        assert_eq!(subs.len(), 2);
        assert_eq!(subs[0].name, "out/a");
        assert_eq!(subs[0].sha256.len(), 64);
        let statement = serde_json::json!({
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [
                {"name": "out/a", "digest": {"sha256": subs[0].sha256.to_uppercase(), "blake3": "x"}},
                {"name": "out/b", "digest": {"sha256": "00"}},
                {"name": "out/c", "digest": {"sha256": "11"}},
            ],
        });
        let attested = from_statement(&statement);
        assert!(check(&tree, &subs).is_empty());
        let m = check(&tree, &attested);
        assert_eq!(m.len(), 2, "{m:?}");
        assert!(matches!(&m[0], SubjectMismatch::Differs { name, .. } if name == "out/b"));
        assert!(matches!(&m[1], SubjectMismatch::Missing { name } if name == "out/c"));
        let m = check(&tree, &attested[..1]);
        assert_eq!(
            m,
            [SubjectMismatch::NotAttested {
                name: "out/b".into()
            }]
        );
    }
}

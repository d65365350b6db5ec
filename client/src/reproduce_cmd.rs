//! `hermetic reproduce BUNDLE [--input DIR]`: an auditor rebuilds, on this
//! host, from the inputs an attestation names, and gets a yes or a diff.
//!
//! 1. The bundle's statement is read (and verified with `--keyring` when
//!    given: signature, log inclusion, key validity; without it the
//!    statement is read unverified, which `hermetic verify` can do first).
//! 2. Its `externalParameters` become a job: argv, environment, declared
//!    outputs, profile, timeout, and the base image by the SHA-256 tree
//!    digest of its `base-image` dependency. The inputs are either
//!    - `--input DIR`, which must be the attested input root: its digest
//!      (BLAKE3 or SHA-256, whichever the attestation used) is checked
//!      before anything runs; or
//!    - without `--input`, the attested input root in the store itself, by
//!      its digest (`inputRootDigest`, and the BLAKE3 of the `input-root`
//!      dependency where the daemon recorded one): the store must hold
//!      every blob of the tree (`stored_input`), else exit 64 naming the
//!      missing digests. Nothing is uploaded but the Command and Action.
//! 3. The job runs through the daemon (or `--local`) without the action
//!    cache (a fresh execution, never the attested result served again),
//!    and its outputs land in the out dir with their own provenance.
//! 4. The rebuilt outputs are compared with the attestation's subjects by
//!    SHA-256 (and BLAKE3 where the subject names one): every subject
//!    missing or different, and every rebuilt file no subject names, is
//!    listed. Exit 0 when they agree, 66 when they do not.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::Args;
use hermetic_attest::{Bundle, Keyring, verify};
use serde::Serialize;
use serde_json::Value;

use crate::cli::RunArgs;
use crate::digests::Function;
use crate::error::{Error, Result, code};
use crate::job::Job;
use crate::provenance::BUNDLE_FILE;
use crate::run::{Globals, META_DIR};

/// `hermetic reproduce`.
#[derive(Debug, Args)]
pub struct ReproduceArgs {
    /// The provenance bundle of the build to reproduce
    #[arg(value_name = "PROVENANCE")]
    pub bundle: PathBuf,
    /// The attested input root: the directory that was the step's /work
    /// [default: the attested input root digest, from the store]
    #[arg(long, value_name = "DIR")]
    pub input: Option<PathBuf>,
    /// Verify the bundle against this public keyring first
    #[arg(long, value_name = "FILE")]
    pub keyring: Option<PathBuf>,
    /// Where the rebuilt outputs go [default: hermetic-reproduce]
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Rebuild without a daemon, in this process, on the local state
    /// directory and its store (as `hermetic run --local`)
    #[arg(long)]
    pub local: bool,
}

/// One subject's fate.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Mismatch {
    Missing {
        name: String,
    },
    Differs {
        name: String,
        attested: String,
        rebuilt: String,
    },
    NotAttested {
        name: String,
    },
}

/// What `--json` prints after the run's own report.
#[derive(Debug, Serialize)]
struct Verdict {
    reproduced: bool,
    subjects: usize,
    mismatches: Vec<Mismatch>,
    rebuilt_provenance: PathBuf,
}

/// Runs `hermetic reproduce`; returns the exit code.
pub async fn reproduce(g: &Globals, args: &ReproduceArgs) -> Result<u8> {
    let data = std::fs::read(&args.bundle)
        .map_err(|e| Error::InvalidJob(format!("cannot read {}: {e}", args.bundle.display())))?;
    let bundle = Bundle::from_json(&data).map_err(|e| {
        Error::InvalidJob(format!(
            "{} is not a provenance bundle: {e}",
            args.bundle.display()
        ))
    })?;
    let statement = match &args.keyring {
        Some(path) => {
            let keyring =
                Keyring::from_json(&std::fs::read(path).map_err(Error::io("read", path))?)
                    .map_err(|e| Error::InvalidJob(format!("{}: {e}", path.display())))?;
            verify::verify_bundle(&bundle, &keyring)
                .map_err(|e| Error::Verification(format!("{}: {e}", args.bundle.display())))?
                .statement
        }
        None => {
            let payload = bundle.dsse_envelope.payload_bytes().map_err(|e| {
                Error::InvalidJob(format!("{}: bad envelope: {e}", args.bundle.display()))
            })?;
            serde_json::from_slice(&payload).map_err(|e| {
                Error::InvalidJob(format!("{}: bad statement: {e}", args.bundle.display()))
            })?
        }
    };
    let attested = subjects(&statement);
    let out_dir = args
        .out_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("hermetic-reproduce"));
    let mut run_args = job_of(&statement, args.input.as_deref(), &out_dir)?;
    let mut job = match &args.input {
        Some(_) => {
            let function = matching_function(&statement, &run_args)?;
            run_args.digest_function = Some(function.name().to_owned());
            crate::run::job_of_args(g, &run_args)?
        }
        None => {
            let mut job = crate::run::job_of_args(g, &run_args)?;
            job.stored_input = Some(stored_root(&statement)?);
            job
        }
    };
    // A fresh execution: the action cache is neither consulted (skip the
    // lookup) nor written (do_not_cache), so a rebuild that differs never
    // replaces the cached result of the build it audits.
    job.do_not_cache = true;
    let (report, streams) = crate::run::execute_job(g, job, args.local, true).await?;
    let exit = report.hermetic_exit_code;
    // With --json, one document: the rebuild's report and the verdict.
    let rebuild = if g.json {
        Some(report)
    } else {
        crate::run::print_run(g, &report, &streams)?;
        None
    };
    if exit != 0 {
        if let Some(report) = &rebuild {
            print_json(&serde_json::json!({ "rebuild": report }))?;
        }
        return Ok(exit);
    }
    let rebuilt_path = out_dir.join(META_DIR).join(BUNDLE_FILE);
    let rebuilt =
        Bundle::from_json(&std::fs::read(&rebuilt_path).map_err(Error::io("read", &rebuilt_path))?)
            .map_err(|e| Error::Infra(format!("the rebuild's provenance does not parse: {e}")))?;
    let rebuilt_statement: Value = serde_json::from_slice(
        &rebuilt
            .dsse_envelope
            .payload_bytes()
            .map_err(|e| Error::Infra(format!("the rebuild's provenance: {e}")))?,
    )
    .map_err(|e| Error::Infra(format!("the rebuild's provenance: {e}")))?;
    let mismatches = compare(&attested, &subjects(&rebuilt_statement));
    let verdict = Verdict {
        reproduced: mismatches.is_empty(),
        subjects: attested.len(),
        mismatches,
        rebuilt_provenance: rebuilt_path,
    };
    if let Some(report) = &rebuild {
        print_json(&serde_json::json!({ "rebuild": report, "verdict": verdict }))?;
    } else if verdict.reproduced {
        eprintln!(
            "reproduced     yes: all {} attested outputs rebuilt bit for bit",
            verdict.subjects
        );
    } else {
        eprintln!("reproduced     NO:");
        for m in &verdict.mismatches {
            match m {
                Mismatch::Missing { name } => eprintln!("  missing      {name}"),
                Mismatch::Differs {
                    name,
                    attested,
                    rebuilt,
                } => eprintln!(
                    "  differs      {name}: attested sha256 {attested}, rebuilt {rebuilt}"
                ),
                Mismatch::NotAttested { name } => eprintln!("  not attested {name}"),
            }
        }
    }
    Ok(if verdict.reproduced {
        0
    } else {
        code::NOT_REPRODUCIBLE
    })
}

fn print_json(v: &Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Error::Infra(format!("the verdict does not serialize: {e}")))?;
    println!("{text}");
    Ok(())
}

/// The job an attestation's `externalParameters` describe.
fn job_of(statement: &Value, input: Option<&Path>, out_dir: &Path) -> Result<RunArgs> {
    let build = &statement["predicate"]["buildDefinition"];
    let params = &build["externalParameters"];
    let bad = |what: &str| {
        Error::InvalidJob(format!(
            "the attestation has no usable {PARAMS}.{what}: it does not say how to rebuild"
        ))
    };
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array()?
            .iter()
            .map(|s| s.as_str().map(str::to_owned))
            .collect()
    };
    let argv = strings(&params["argv"]).ok_or_else(|| bad("argv"))?;
    let outputs = strings(&params["outputPaths"]).ok_or_else(|| bad("outputPaths"))?;
    let env: Vec<String> = params["env"]
        .as_object()
        .ok_or_else(|| bad("env"))?
        .iter()
        .map(|(k, v)| {
            Ok(format!(
                "{k}={}",
                v.as_str().ok_or_else(|| bad("env value"))?
            ))
        })
        .collect::<Result<_>>()?;
    if params["workingDirectory"]
        .as_str()
        .is_some_and(|w| !w.is_empty())
    {
        return Err(Error::InvalidJob(format!(
            "the attested action ran in working directory {:?}; `hermetic run` (and so \
             reproduce) runs steps at the input root only",
            params["workingDirectory"]
        )));
    }
    let image = build["resolvedDependencies"]
        .as_array()
        .and_then(|deps| deps.iter().find(|d| d["name"] == "base-image"))
        .and_then(|d| d["digest"]["sha256"].as_str())
        .ok_or_else(|| {
            Error::InvalidJob(
                "the attestation has no usable predicate.buildDefinition.resolvedDependencies\
                 [name=base-image].digest.sha256: it does not say which image to rebuild on"
                    .into(),
            )
        })?;
    Ok(RunArgs {
        file: None,
        image: Some(format!("hermetic-image:sha256:{image}")),
        input: input.map(Path::to_owned),
        outputs,
        env,
        timeout: params["timeout"].as_str().map(str::to_owned),
        memory: None,
        profile: params["profile"].as_str().map(str::to_owned),
        out_dir: Some(out_dir.to_owned()),
        digest_function: None,
        local: false,
        no_cache: true,
        check_repro: None,
        bisect: false,
        command: argv,
    })
}

/// Where an attestation's inputs are described.
const PARAMS: &str = "predicate.buildDefinition.externalParameters";

/// The attested input root's candidate keys in the store: its BLAKE3 (of
/// the `input-root` dependency, where the daemon recorded one) and its
/// SHA-256 (`inputRootDigest`), with the size they share.
fn stored_root(statement: &Value) -> Result<crate::stored_input::Candidates> {
    let build = &statement["predicate"]["buildDefinition"];
    let root = &build["externalParameters"]["inputRootDigest"];
    let missing = |field: &str| {
        Error::InvalidJob(format!(
            "the attestation has no usable {PARAMS}.inputRootDigest.{field}: its inputs \
             cannot be found in the store; give them with `--input DIR`"
        ))
    };
    let hex64 = |h: &&str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
    let hash = root["hash"]
        .as_str()
        .filter(hex64)
        .ok_or_else(|| missing("hash"))?;
    let size_bytes = root["sizeBytes"]
        .as_i64()
        .filter(|s| *s >= 0)
        .ok_or_else(|| missing("sizeBytes"))?;
    let digest = |hash: &str| bazel_remote_apis::build::bazel::remote::execution::v2::Digest {
        hash: hash.to_ascii_lowercase(),
        size_bytes,
    };
    let mut candidates = Vec::new();
    if let Some(b3) = build["resolvedDependencies"]
        .as_array()
        .and_then(|deps| deps.iter().find(|d| d["name"] == "input-root"))
        .and_then(|d| d["digest"]["blake3"].as_str())
        .filter(hex64)
    {
        candidates.push((Function::Blake3, digest(b3)));
    }
    candidates.push((Function::Sha256, digest(hash)));
    Ok(candidates)
}

/// The digest function under which `--input` hashes to the attested input
/// root; an input that matches under neither is not the attested one.
fn matching_function(statement: &Value, args: &RunArgs) -> Result<Function> {
    let attested =
        statement["predicate"]["buildDefinition"]["externalParameters"]["inputRootDigest"]["hash"]
            .as_str()
            .ok_or_else(|| {
                Error::InvalidJob(format!(
                    "the attestation has no usable {PARAMS}.inputRootDigest.hash: \
                     `--input` cannot be checked against it"
                ))
            })?;
    let mut seen = Vec::new();
    for f in [Function::Blake3, Function::Sha256] {
        let mut file = args.merged()?;
        file.digest_function = Some(f.name().to_owned());
        let prepared = crate::action::prepare(&Job::validate(file)?)?;
        // Provenance names the input root by the SHA-256 of its root
        // `Directory` blob as the request encoded it (under BLAKE3, a
        // message of BLAKE3 child digests).
        let root = prepared
            .blobs
            .get(&prepared.input_root.hash)
            .and_then(|b| match &b.source {
                crate::action::Source::Bytes(data) => Some(Function::Sha256.digest(data).hash),
                _ => None,
            })
            .ok_or_else(|| Error::Infra("the input root's Directory was not built".into()))?;
        if root == attested {
            return Ok(f);
        }
        seen.push(format!("{} root, sha256 {root}", f.name()));
    }
    Err(Error::InvalidJob(format!(
        "{} is not the attested input root {attested} (it hashes to {})",
        args.input.as_deref().unwrap_or(Path::new("")).display(),
        seen.join(", ")
    )))
}

/// Subject name → (sha256, blake3) of a statement.
fn subjects(statement: &Value) -> BTreeMap<String, (String, Option<String>)> {
    statement["subject"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| {
                    Some((
                        s["name"].as_str()?.to_owned(),
                        (
                            s["digest"]["sha256"].as_str()?.to_owned(),
                            s["digest"]["blake3"].as_str().map(str::to_owned),
                        ),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn compare(
    attested: &BTreeMap<String, (String, Option<String>)>,
    rebuilt: &BTreeMap<String, (String, Option<String>)>,
) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for (name, (sha, b3)) in attested {
        match rebuilt.get(name) {
            None => out.push(Mismatch::Missing { name: name.clone() }),
            Some((rsha, rb3)) if rsha != sha || (b3.is_some() && rb3.is_some() && b3 != rb3) => out
                .push(Mismatch::Differs {
                    name: name.clone(),
                    attested: sha.clone(),
                    rebuilt: rsha.clone(),
                }),
            Some(_) => {}
        }
    }
    for name in rebuilt.keys().filter(|n| !attested.contains_key(*n)) {
        out.push(Mismatch::NotAttested { name: name.clone() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(entries: &[(&str, &str)]) -> BTreeMap<String, (String, Option<String>)> {
        entries
            .iter()
            .map(|(n, d)| (n.to_string(), (d.to_string(), None)))
            .collect()
    }

    #[test]
    fn every_kind_of_mismatch_is_listed() {
        let attested = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let rebuilt = map(&[("a", "1"), ("b", "9"), ("d", "4")]);
        assert_eq!(
            compare(&attested, &rebuilt),
            vec![
                Mismatch::Differs {
                    name: "b".into(),
                    attested: "2".into(),
                    rebuilt: "9".into()
                },
                Mismatch::Missing { name: "c".into() },
                Mismatch::NotAttested { name: "d".into() },
            ]
        );
        assert!(compare(&attested, &attested).is_empty());
    }
}

//! A job: what `hermetic run` runs, from flags, a job file (`-f job.toml`)
//! or both (flags override the file's values; `--output` and `--env` add
//! to its lists).
//!
//! The job file is TOML with exactly these keys (any other is refused with
//! its name):
//!
//! ```toml
//! command = ["make", "-j2", "all"]  # required: argv of the step
//! image = "toolchain"               # alias or digest, pinned by digest; default: the daemon's
//! input = "src"                     # directory uploaded as /work
//! outputs = ["hello", "build/doc"]  # paths relative to /work
//! timeout = "10m"                   # humantime: 90s, 10m, 1h30m
//! memory = "512M"                   # bytes, or K/M/G/T (powers of 1024)
//! profile = "strict"                # sandbox profile
//! out_dir = "hermetic-out"          # where outputs are written
//! digest_function = "blake3"        # or "sha256"
//! check_repro = 2                   # run 2..=8 times varied, compare outputs
//! repro_bisect = true               # on a difference, find the variation
//!
//! [env]                             # the step's environment, exactly
//! CC = "cc"
//! ```
//!
//! Relative paths (`input`, `out_dir`) are relative to the job file's
//! directory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::digests::Function;
use crate::error::{Error, Result};

/// The job file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobFile {
    /// The step's argv.
    pub command: Option<Vec<String>>,
    /// The `container-image` platform property.
    pub image: Option<String>,
    /// The input directory.
    pub input: Option<PathBuf>,
    /// Declared outputs.
    #[serde(default)]
    pub outputs: Vec<String>,
    /// The environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The action timeout (humantime).
    pub timeout: Option<String>,
    /// A memory limit (bytes or K/M/G/T).
    pub memory: Option<String>,
    /// The sandbox profile.
    pub profile: Option<String>,
    /// Where to write outputs.
    pub out_dir: Option<PathBuf>,
    /// `blake3` or `sha256`.
    pub digest_function: Option<String>,
    /// Runs of a reproducibility check.
    pub check_repro: Option<u32>,
    /// Bisect a reproducibility check's difference.
    pub repro_bisect: Option<bool>,
}

impl JobFile {
    /// Reads a job file, resolving its relative paths against its
    /// directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::InvalidJob(format!("cannot read {}: {e}", path.display())))?;
        let mut job: JobFile = toml::from_str(&text).map_err(|e| {
            Error::InvalidJob(format!("{}: {}", path.display(), e.to_string().trim_end()))
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut job.input, &mut job.out_dir].into_iter().flatten() {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(job)
    }
}

/// A validated job.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// argv.
    pub command: Vec<String>,
    /// Image, when named.
    pub image: Option<String>,
    /// Input directory, when given.
    pub input: Option<PathBuf>,
    /// An input root already in the store instead of a directory (its
    /// candidate keys; see `stored_input`): set by `hermetic reproduce`,
    /// never by a job file.
    pub stored_input: Option<crate::stored_input::Candidates>,
    /// The Action's `do_not_cache`: its result is never cached (set by
    /// `hermetic reproduce`, whose rebuild must not replace a cached
    /// result); never from a job file.
    pub do_not_cache: bool,
    /// Output paths, sorted and unique.
    pub outputs: Vec<String>,
    /// Environment, sorted by name.
    pub env: BTreeMap<String, String>,
    /// Timeout.
    pub timeout: Option<Duration>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Profile.
    pub profile: Option<String>,
    /// Out dir.
    pub out_dir: PathBuf,
    /// Digest function.
    pub digest_function: Function,
    /// Runs of a reproducibility check (2..=8), when asked.
    pub check_repro: Option<u32>,
    /// Bisect a difference the check finds.
    pub repro_bisect: bool,
}

impl Job {
    /// Validates a merged job file.
    pub fn validate(f: JobFile) -> Result<Job> {
        let invalid = |m: String| Err(Error::InvalidJob(m));
        let command = f.command.unwrap_or_default();
        if command.is_empty() || command[0].is_empty() {
            return invalid(
                "no command: give one after `--` or as `command = [...]` in the job file".into(),
            );
        }
        if let Some(a) = command.iter().find(|a| a.contains('\0')) {
            return invalid(format!("command argument {a:?} contains a NUL byte"));
        }
        for (k, v) in &f.env {
            if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
                return invalid(format!("env: invalid variable name or value {k:?}"));
            }
        }
        let mut outputs = Vec::new();
        for o in &f.outputs {
            let trimmed = o.trim_end_matches('/');
            if let Err(why) = check_relative(trimmed) {
                return invalid(format!("outputs: {o:?} {why}"));
            }
            outputs.push(trimmed.to_owned());
        }
        outputs.sort();
        outputs.dedup();
        if let Some(input) = &f.input
            && !input.is_dir()
        {
            return invalid(format!("input {} is not a directory", input.display()));
        }
        let timeout = f.timeout.as_deref().map(parse_duration).transpose()?;
        let memory = f.memory.as_deref().map(parse_size).transpose()?;
        let digest_function = f
            .digest_function
            .as_deref()
            .map(Function::parse)
            .transpose()?
            .unwrap_or_default();
        for (name, v) in [("image", &f.image), ("profile", &f.profile)] {
            if v.as_deref().is_some_and(str::is_empty) {
                return invalid(format!("{name} is empty"));
            }
        }
        if let Some(n) = f.check_repro
            && !(2..=8).contains(&n)
        {
            return invalid(format!(
                "check_repro {n}: a reproducibility check compares 2 to 8 runs"
            ));
        }
        if f.repro_bisect == Some(true) && f.check_repro.is_none() {
            return invalid("repro_bisect needs check_repro (--bisect needs --check-repro)".into());
        }
        Ok(Job {
            command,
            image: f.image,
            input: f.input,
            stored_input: None,
            do_not_cache: false,
            outputs,
            env: f.env,
            timeout,
            memory,
            profile: f.profile,
            out_dir: f.out_dir.unwrap_or_else(|| PathBuf::from("hermetic-out")),
            digest_function,
            check_repro: f.check_repro,
            repro_bisect: f.repro_bisect.unwrap_or(false),
        })
    }
}

/// Checks a path relative to `/work`: not empty, not absolute, no `.` or
/// `..` segment, no empty segment.
pub fn check_relative(p: &str) -> std::result::Result<(), &'static str> {
    if p.is_empty() {
        return Err("is empty");
    }
    if p.starts_with('/') {
        return Err("is absolute; outputs are relative to /work");
    }
    if p.contains('\0') {
        return Err("contains a NUL byte");
    }
    for seg in p.split('/') {
        match seg {
            "" => return Err("has an empty segment"),
            "." | ".." => return Err("has a `.` or `..` segment"),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a humantime duration (`90s`, `10m`, `1h30m`); must be positive.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| Error::InvalidJob(format!("timeout {text:?}: {e}")))?;
    if d.is_zero() {
        return Err(Error::InvalidJob(format!("timeout {text:?} is zero")));
    }
    Ok(d)
}

/// Parses a size: bytes, or a number with K, M, G or T (powers of 1024;
/// `Ki`, `KiB`, `KB` alike).
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::InvalidJob(format!(
            "memory {text:?}: expected bytes or a number with K, M, G or T"
        ))
    };
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let shift = match unit {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(bad()),
    };
    let bytes = n
        .checked_shl(shift)
        .filter(|b| b >> shift == n)
        .ok_or_else(bad)?;
    if bytes == 0 {
        return Err(Error::InvalidJob(format!("memory {text:?} is zero")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let e = toml::from_str::<JobFile>("comand = [\"true\"]\n").unwrap_err();
        assert!(e.to_string().contains("comand"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("512").unwrap(), 512);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("2g").unwrap(), 2 << 30);
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn validation() {
        let ok = JobFile {
            command: Some(vec!["true".into()]),
            outputs: vec!["b/".into(), "a".into(), "a".into()],
            ..Default::default()
        };
        let job = Job::validate(ok.clone()).unwrap();
        assert_eq!(job.outputs, ["a", "b"]);
        assert_eq!(job.digest_function, Function::Blake3);
        for bad in [
            JobFile {
                command: None,
                ..ok.clone()
            },
            JobFile {
                outputs: vec!["../x".into()],
                ..ok.clone()
            },
            JobFile {
                outputs: vec!["/abs".into()],
                ..ok.clone()
            },
            JobFile {
                env: [("A=B".to_owned(), "c".to_owned())].into(),
                ..ok.clone()
            },
            JobFile {
                digest_function: Some("md5".into()),
                ..ok.clone()
            },
        ] {
            assert!(
                matches!(Job::validate(bad.clone()), Err(Error::InvalidJob(_))),
                "{bad:?}"
            );
        }
    }
}

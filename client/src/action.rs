//! Building the Action deterministically: the input tree as `Directory`
//! protos (entries sorted by name, as REAPI requires), the `Command` with
//! its environment sorted by name and its outputs sorted, the platform
//! properties sorted by name. The same job always gives the same action
//! digest, through the daemon or `--local`.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, Command, Digest, Directory, DirectoryNode, FileNode, Platform, SymlinkNode,
    command::EnvironmentVariable, platform::Property,
};
use prost::Message;

use crate::digests::Function;
use crate::error::{Error, Result};
use crate::job::Job;

/// The platform property naming the base image.
pub const CONTAINER_IMAGE: &str = "container-image";
/// The platform property naming the sandbox profile.
pub const HERMETIC_PROFILE: &str = "hermetic-profile";
/// The platform property lowering the memory limit (bytes).
pub const HERMETIC_MEMORY: &str = "hermetic-memory";
pub use hermeticd::exec::repro::{CHECK_REPRO, CHECK_REPRO_BISECT};

/// Where a blob's bytes are.
#[derive(Debug, Clone)]
pub enum Source {
    /// In memory (protos).
    Bytes(Vec<u8>),
    /// A file of the input directory.
    File(PathBuf),
}

/// A blob to make available to the daemon.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Its digest.
    pub digest: Digest,
    /// Its bytes.
    pub source: Source,
}

/// The action and every blob it needs, unique by hash.
#[derive(Debug)]
pub struct Prepared {
    /// The action's digest.
    pub action_digest: Digest,
    /// The input root's digest.
    pub input_root: Digest,
    /// Every blob: the Action, the Command, Directories and files.
    pub blobs: BTreeMap<String, Blob>,
}

fn add(blobs: &mut BTreeMap<String, Blob>, f: Function, data: Vec<u8>) -> Digest {
    let digest = f.digest(&data);
    blobs.entry(digest.hash.clone()).or_insert_with(|| Blob {
        digest: digest.clone(),
        source: Source::Bytes(data),
    });
    digest
}

/// Walks `dir` into Directory protos, recording every blob.
fn walk(dir: &Path, f: Function, blobs: &mut BTreeMap<String, Blob>) -> Result<Digest> {
    let mut entries = Vec::new();
    for e in std::fs::read_dir(dir).map_err(Error::io("read", dir))? {
        let e = e.map_err(Error::io("read", dir))?;
        let name = e.file_name().into_string().map_err(|n| {
            Error::InvalidJob(format!(
                "input {}: the name {n:?} is not UTF-8",
                dir.display()
            ))
        })?;
        entries.push(name);
    }
    entries.sort();
    let mut d = Directory::default();
    for name in entries {
        let path = dir.join(&name);
        let meta = std::fs::symlink_metadata(&path).map_err(Error::io("stat", &path))?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(Error::io("readlink", &path))?;
            let target = target.into_os_string().into_string().map_err(|t| {
                Error::InvalidJob(format!(
                    "input symlink {} has a non-UTF-8 target {t:?}",
                    path.display()
                ))
            })?;
            d.symlinks.push(SymlinkNode {
                name,
                target,
                node_properties: None,
            });
        } else if ft.is_dir() {
            let digest = walk(&path, f, blobs)?;
            d.directories.push(DirectoryNode {
                name,
                digest: Some(digest),
            });
        } else if ft.is_file() {
            let digest = f.digest_file(&path)?;
            blobs.entry(digest.hash.clone()).or_insert_with(|| Blob {
                digest: digest.clone(),
                source: Source::File(path.clone()),
            });
            d.files.push(FileNode {
                name,
                digest: Some(digest),
                is_executable: meta.permissions().mode() & 0o111 != 0,
                node_properties: None,
            });
        } else {
            return Err(Error::InvalidJob(format!(
                "input {} is neither a file, a directory nor a symlink",
                path.display()
            )));
        }
    }
    Ok(add(blobs, f, d.encode_to_vec()))
}

/// The Command of a job.
pub fn command(job: &Job) -> Command {
    Command {
        arguments: job.command.clone(),
        // A BTreeMap iterates in name order: sorted, as REAPI requires.
        environment_variables: job
            .env
            .iter()
            .map(|(name, value)| EnvironmentVariable {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
        // Validated sorted and unique.
        output_paths: job.outputs.clone(),
        ..Default::default()
    }
}

/// The platform of a job, properties sorted by name; `None` when empty.
pub fn platform(job: &Job) -> Option<Platform> {
    let mut properties: Vec<Property> = [
        (CONTAINER_IMAGE, job.image.clone()),
        (HERMETIC_PROFILE, job.profile.clone()),
        (HERMETIC_MEMORY, job.memory.map(|m| m.to_string())),
        (CHECK_REPRO, job.check_repro.map(|n| n.to_string())),
        (
            CHECK_REPRO_BISECT,
            job.repro_bisect.then(|| "true".to_owned()),
        ),
    ]
    .into_iter()
    .filter_map(|(name, value)| {
        value.map(|value| Property {
            name: name.to_owned(),
            value,
        })
    })
    .collect();
    properties.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.value.cmp(&b.value)));
    (!properties.is_empty()).then_some(Platform { properties })
}

/// Builds the action of `job` and collects its blobs.
pub fn prepare(job: &Job) -> Result<Prepared> {
    let f = job.digest_function;
    let mut blobs = BTreeMap::new();
    let input_root = match (&job.stored_input, &job.input) {
        // Already in the store, checked there (`stored_input::resolve`).
        (Some(candidates), _) => candidates
            .iter()
            .find(|(cf, _)| *cf == f)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| {
                Error::Infra(format!("the stored input root has no {} digest", f.name()))
            })?,
        (None, Some(dir)) => walk(dir, f, &mut blobs)?,
        (None, None) => add(&mut blobs, f, Directory::default().encode_to_vec()),
    };
    let command_digest = add(&mut blobs, f, command(job).encode_to_vec());
    let action = Action {
        command_digest: Some(command_digest),
        input_root_digest: Some(input_root.clone()),
        timeout: job.timeout.map(proto_duration),
        do_not_cache: job.do_not_cache,
        salt: Vec::new(),
        platform: platform(job),
    };
    let action_digest = add(&mut blobs, f, action.encode_to_vec());
    Ok(Prepared {
        action_digest,
        input_root,
        blobs,
    })
}

fn proto_duration(d: std::time::Duration) -> bazel_remote_apis::google::protobuf::Duration {
    bazel_remote_apis::google::protobuf::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{Job, JobFile};

    fn job(dir: &Path) -> Job {
        Job::validate(JobFile {
            command: Some(vec!["sh".into(), "-c".into(), "true".into()]),
            input: Some(dir.to_owned()),
            outputs: vec!["z".into(), "a/b".into()],
            env: [("Z".into(), "1".into()), ("A".into(), "2".into())].into(),
            image: Some("busybox".into()),
            profile: Some("strict".into()),
            memory: Some("1M".into()),
            timeout: Some("30s".into()),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn deterministic_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("b.txt"), b"b").unwrap();
        std::fs::write(dir.path().join("a.sh"), b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(
            dir.path().join("a.sh"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::fs::write(dir.path().join("sub/c"), b"b").unwrap();
        std::os::unix::fs::symlink("b.txt", dir.path().join("link")).unwrap();
        let j = job(dir.path());
        let a = prepare(&j).unwrap();
        let b = prepare(&j).unwrap();
        assert_eq!(a.action_digest, b.action_digest);
        let cmd = command(&j);
        let names: Vec<&str> = cmd
            .environment_variables
            .iter()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(names, ["A", "Z"]);
        assert_eq!(cmd.output_paths, ["a/b", "z"]);
        let p = platform(&j).unwrap();
        let names: Vec<&str> = p.properties.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            ["container-image", "hermetic-memory", "hermetic-profile"]
        );
        let root = a
            .blobs
            .values()
            .filter_map(|b| match &b.source {
                Source::Bytes(d) => Directory::decode(d.as_slice()).ok(),
                Source::File(_) => None,
            })
            .find(|d| d.files.len() == 2)
            .unwrap();
        assert_eq!(root.files[0].name, "a.sh");
        assert!(root.files[0].is_executable);
        assert!(!root.files[1].is_executable);
        assert_eq!(root.symlinks[0].target, "b.txt");
        // Same content in two files: one blob.
        // Blobs: 2 file contents, 2 directories, the command, the action.
        assert_eq!(a.blobs.len(), 6);
        let sha = Job {
            digest_function: Function::Sha256,
            ..j.clone()
        };
        assert_ne!(prepare(&sha).unwrap().action_digest, a.action_digest);
        // do_not_cache is part of the Action: another action.
        let uncached = Job {
            do_not_cache: true,
            ..j
        };
        let u = prepare(&uncached).unwrap();
        assert_ne!(u.action_digest, a.action_digest);
        let Source::Bytes(action) = &u.blobs[&u.action_digest.hash].source else {
            panic!("the Action is in memory")
        };
        assert!(Action::decode(action.as_slice()).unwrap().do_not_cache);
    }
}

//! Turning an ExecuteRequest into a prepared action: the Action and
//! Command read from the CAS and checked, the platform resolved, the
//! outputs declared, the input tree walked and validated.

use std::time::Duration;

use bazel_remote_apis::build::bazel::remote::execution::v2::{Action, Command, command};
use hermetic_sandbox::spec::check_relative;
use prost::Message;

use crate::cas::Store;
use crate::cas::tree::{TreeWalk, WalkOptions, walk};
use crate::digest::{BlobKey, DigestFunction};
use crate::error::{Error, Result};
use crate::exec::platform::{Choices, Selection};
use crate::service::ac_service::Inline;

/// How a client declared an output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declared {
    /// v2.0 `output_files`: must be a file (or a symlink).
    File,
    /// v2.0 `output_directories`: must be a directory (or a symlink).
    Directory,
    /// v2.1+ `output_paths`: whatever it turns out to be.
    Path,
}

/// One declared output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Relative to the working directory, as the client wrote it.
    pub path: String,
    /// How it was declared.
    pub declared: Declared,
}

/// Everything needed to run an action.
#[derive(Debug)]
pub struct Prepared {
    /// The digest function of the request.
    pub function: DigestFunction,
    /// The action's digest.
    pub action_key: BlobKey,
    /// The action.
    pub action: Action,
    /// The command's digest.
    pub command_key: BlobKey,
    /// The command.
    pub command: Command,
    /// The input root's digest.
    pub input_root: BlobKey,
    /// The walked, validated input tree.
    pub tree: TreeWalk,
    /// Image and profile.
    pub selection: Selection,
    /// Declared outputs.
    pub outputs: Vec<Output>,
    /// The effective timeout.
    pub timeout: Duration,
    /// What to inline in the response.
    pub inline: Inline,
    /// The requested output directory format (`Command.output_directory_format`).
    pub directory_format: command::OutputDirectoryFormat,
}

/// Reads and decodes a proto blob; a missing blob is a MISSING precondition.
pub fn read_proto<M: Message + Default>(store: &Store, key: &BlobKey, what: &str) -> Result<M> {
    let data = store.read(key).map_err(|e| match e {
        Error::NotFound(_) => Error::MissingBlobs(vec![*key]),
        e => e,
    })?;
    M::decode(data.as_slice())
        .map_err(|e| Error::InvalidArgument(format!("{what} {key} does not decode: {e}")))
}

/// Reads the Action.
pub fn load_action(store: &Store, key: &BlobKey) -> Result<Action> {
    read_proto(store, key, "action")
}

/// Limits applied while preparing.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deepest input tree.
    pub max_tree_depth: usize,
    /// Longest timeout.
    pub max_timeout: Duration,
}

/// Prepares an action whose Action proto is already loaded.
pub fn prepare(
    store: &Store,
    choices: &Choices,
    limits: Limits,
    action_key: BlobKey,
    action: Action,
    inline: Inline,
) -> Result<Prepared> {
    let function = action_key.function;
    let command_key =
        BlobKey::from_opt(function, action.command_digest.as_ref(), "command_digest")?;
    let input_root = BlobKey::from_opt(
        function,
        action.input_root_digest.as_ref(),
        "input_root_digest",
    )?;
    let mut missing = Vec::new();
    let command: Option<Command> = match read_proto(store, &command_key, "command") {
        Ok(c) => Some(c),
        Err(Error::MissingBlobs(m)) => {
            missing.extend(m);
            None
        }
        Err(e) => return Err(e),
    };
    let tree = walk(
        store,
        input_root,
        WalkOptions {
            validate: true,
            max_depth: limits.max_tree_depth,
            check_files: true,
        },
    )?;
    missing.extend(tree.missing.iter().copied());
    if !missing.is_empty() {
        return Err(Error::MissingBlobs(missing));
    }
    let command = command.expect("present when nothing is missing");
    if command.arguments.is_empty() || command.arguments[0].is_empty() {
        return Err(Error::InvalidArgument(
            "the command has no arguments".into(),
        ));
    }
    if !command.working_directory.is_empty() {
        check_relative(&command.working_directory)
            .map_err(|why| Error::InvalidArgument(format!("working_directory: {why}")))?;
    }
    for v in &command.environment_variables {
        if v.name.is_empty()
            || v.name.contains('=')
            || v.name.contains('\0')
            || v.value.contains('\0')
        {
            return Err(Error::InvalidArgument(format!(
                "invalid environment variable {:?}",
                v.name
            )));
        }
    }
    let outputs = declared_outputs(&command)?;
    // Old clients put the platform in the Command only.
    #[allow(deprecated)]
    let platform = action.platform.as_ref().or(command.platform.as_ref());
    let selection = choices.select(platform)?;
    let requested = action
        .timeout
        .as_ref()
        .filter(|t| t.seconds > 0 || t.nanos > 0)
        .map(|t| Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32))
        .unwrap_or(Duration::from_millis(selection.profile.limits.timeout_ms));
    let directory_format =
        command::OutputDirectoryFormat::try_from(command.output_directory_format)
            .unwrap_or(command::OutputDirectoryFormat::TreeOnly);
    Ok(Prepared {
        function,
        action_key,
        action,
        command_key,
        command,
        input_root,
        tree,
        selection,
        outputs,
        timeout: requested.min(limits.max_timeout),
        inline,
        directory_format,
    })
}

/// The outputs a command declares: `output_paths` when given (v2.1+),
/// otherwise the v2.0 `output_files` and `output_directories`.
#[allow(deprecated)]
pub fn declared_outputs(command: &Command) -> Result<Vec<Output>> {
    let mut out = Vec::new();
    if !command.output_paths.is_empty() {
        out.extend(command.output_paths.iter().map(|p| (p, Declared::Path)));
    } else {
        out.extend(command.output_files.iter().map(|p| (p, Declared::File)));
        out.extend(
            command
                .output_directories
                .iter()
                .map(|p| (p, Declared::Directory)),
        );
    }
    let mut seen = std::collections::HashSet::new();
    out.into_iter()
        .map(|(p, declared)| {
            check_relative(p)
                .map_err(|why| Error::InvalidArgument(format!("output path: {why}")))?;
            let path = p.trim_end_matches('/').to_owned();
            if !seen.insert(path.clone()) {
                return Err(Error::InvalidArgument(format!(
                    "output {path:?} is declared twice"
                )));
            }
            Ok(Output { path, declared })
        })
        .collect()
}

/// Joins the working directory and a path relative to it.
pub fn under_workdir(workdir: &str, path: &str) -> String {
    if workdir.is_empty() {
        path.to_owned()
    } else {
        format!("{}/{path}", workdir.trim_end_matches('/'))
    }
}

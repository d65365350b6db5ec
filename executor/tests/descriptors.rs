//! The descriptors reflection serves (`hermetic_proto::REAPI_FILE_DESCRIPTOR_SET`,
//! compiled from our .proto files) agree on the wire with the message types
//! the daemon uses (`bazel-remote-apis`): a message with EVERY field set is
//! encoded with the prost type, decoded with the descriptor, and every field
//! of the descriptor must be present, no field unknown, values readable by
//! name, and the bytes must round-trip.
#![allow(deprecated)]

use bazel_remote_apis::build::bazel::remote::execution::v2::{
    Action, ActionResult, Command, Digest, Directory, DirectoryNode, ExecuteRequest,
    ExecutedActionMetadata, ExecutionPolicy, FileNode, NodeProperties, NodeProperty,
    OutputDirectory, OutputFile, OutputSymlink, Platform, ResultsCachePolicy, SymlinkNode,
    command::EnvironmentVariable, platform::Property,
};
use bazel_remote_apis::google::protobuf::{Any, Duration, Timestamp, UInt32Value};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, ReflectMessage, Value};

fn pool() -> DescriptorPool {
    DescriptorPool::decode(hermetic_proto::REAPI_FILE_DESCRIPTOR_SET).unwrap()
}

fn digest(n: u8) -> Option<Digest> {
    Some(Digest {
        hash: format!("{n:02x}").repeat(32),
        size_bytes: 100 + i64::from(n),
    })
}

fn ts(s: i64) -> Option<Timestamp> {
    Some(Timestamp {
        seconds: s,
        nanos: 7,
    })
}

fn node_properties() -> Option<NodeProperties> {
    Some(NodeProperties {
        properties: vec![NodeProperty {
            name: "p".into(),
            value: "v".into(),
        }],
        mtime: ts(11),
        unix_mode: Some(UInt32Value { value: 0o755 }),
    })
}

fn symlink(path: &str) -> OutputSymlink {
    OutputSymlink {
        path: path.into(),
        target: "t".into(),
        node_properties: node_properties(),
    }
}

/// Every field of `msg`'s descriptor is set, recursively; none is unknown.
fn assert_complete(msg: &DynamicMessage, path: &str) {
    assert_eq!(
        msg.unknown_fields().count(),
        0,
        "{path}: fields unknown to the descriptor"
    );
    for field in msg.descriptor().fields() {
        let at = format!("{path}.{}", field.name());
        assert!(msg.has_field(&field), "{at} is missing on the wire");
        match &*msg.get_field(&field) {
            Value::Message(m) => assert_complete(m, &at),
            Value::List(items) => {
                for item in items {
                    if let Value::Message(m) = item {
                        assert_complete(m, &at);
                    }
                }
            }
            Value::Map(entries) => {
                for v in entries.values() {
                    if let Value::Message(m) = v {
                        assert_complete(m, &at);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Decodes `value`'s bytes through the descriptor named `name` and checks it.
fn check<T: Message + Default + PartialEq + std::fmt::Debug>(
    name: &str,
    value: &T,
) -> DynamicMessage {
    let descriptor = pool()
        .get_message_by_name(name)
        .unwrap_or_else(|| panic!("{name} is not in the descriptor set"));
    let bytes = value.encode_to_vec();
    let dynamic = DynamicMessage::decode(descriptor, bytes.as_slice()).unwrap();
    assert_complete(&dynamic, name);
    let back = T::decode(dynamic.encode_to_vec().as_slice()).unwrap();
    assert_eq!(&back, value, "{name} does not round-trip");
    dynamic
}

fn field(msg: &DynamicMessage, name: &str) -> Value {
    msg.get_field_by_name(name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .into_owned()
}

#[test]
fn action_and_command_agree() {
    let action = Action {
        command_digest: digest(1),
        input_root_digest: digest(2),
        timeout: Some(Duration {
            seconds: 60,
            nanos: 1,
        }),
        do_not_cache: true,
        salt: b"salt".to_vec(),
        platform: Some(Platform {
            properties: vec![Property {
                name: "container-image".into(),
                value: "busybox".into(),
            }],
        }),
    };
    let d = check("build.bazel.remote.execution.v2.Action", &action);
    assert_eq!(field(&d, "do_not_cache"), Value::Bool(true));
    let command = Command {
        arguments: vec!["sh".into(), "-c".into()],
        environment_variables: vec![EnvironmentVariable {
            name: "PATH".into(),
            value: "/bin".into(),
        }],
        output_files: vec!["a".into()],
        output_directories: vec!["b".into()],
        output_paths: vec!["c".into()],
        platform: Some(Platform {
            properties: vec![Property {
                name: "OSFamily".into(),
                value: "linux".into(),
            }],
        }),
        working_directory: "wd".into(),
        output_node_properties: vec!["mtime".into()],
        output_directory_format: 2,
    };
    let d = check("build.bazel.remote.execution.v2.Command", &command);
    assert_eq!(field(&d, "working_directory"), Value::String("wd".into()));
    assert_eq!(field(&d, "output_directory_format"), Value::EnumNumber(2));
}

#[test]
fn action_result_agrees() {
    let result = ActionResult {
        output_files: vec![OutputFile {
            path: "out/f".into(),
            digest: digest(3),
            is_executable: true,
            contents: b"inline".to_vec(),
            node_properties: node_properties(),
        }],
        output_file_symlinks: vec![symlink("fl")],
        output_symlinks: vec![symlink("l")],
        output_directories: vec![OutputDirectory {
            path: "out/d".into(),
            tree_digest: digest(4),
            is_topologically_sorted: true,
            root_directory_digest: digest(5),
        }],
        output_directory_symlinks: vec![symlink("dl")],
        exit_code: 7,
        stdout_raw: b"out".to_vec(),
        stdout_digest: digest(6),
        stderr_raw: b"err".to_vec(),
        stderr_digest: digest(7),
        execution_metadata: Some(ExecutedActionMetadata {
            worker: "w".into(),
            queued_timestamp: ts(1),
            worker_start_timestamp: ts(2),
            worker_completed_timestamp: ts(3),
            input_fetch_start_timestamp: ts(4),
            input_fetch_completed_timestamp: ts(5),
            execution_start_timestamp: ts(6),
            execution_completed_timestamp: ts(7),
            virtual_execution_duration: Some(Duration {
                seconds: 1,
                nanos: 2,
            }),
            output_upload_start_timestamp: ts(8),
            output_upload_completed_timestamp: ts(9),
            auxiliary_metadata: vec![Any {
                type_url: "type.googleapis.com/x".into(),
                value: vec![1],
            }],
        }),
    };
    let d = check("build.bazel.remote.execution.v2.ActionResult", &result);
    assert_eq!(field(&d, "exit_code"), Value::I32(7));
    let Value::Message(meta) = field(&d, "execution_metadata") else {
        panic!("execution_metadata is not a message")
    };
    assert_eq!(field(&meta, "worker"), Value::String("w".into()));
}

#[test]
fn directory_and_execute_request_agree() {
    let dir = Directory {
        files: vec![FileNode {
            name: "f".into(),
            digest: digest(8),
            is_executable: true,
            node_properties: node_properties(),
        }],
        directories: vec![DirectoryNode {
            name: "d".into(),
            digest: digest(9),
        }],
        symlinks: vec![SymlinkNode {
            name: "s".into(),
            target: "f".into(),
            node_properties: node_properties(),
        }],
        node_properties: node_properties(),
    };
    check("build.bazel.remote.execution.v2.Directory", &dir);
    let request = ExecuteRequest {
        instance_name: "main".into(),
        skip_cache_lookup: true,
        action_digest: digest(10),
        execution_policy: Some(ExecutionPolicy { priority: 1 }),
        results_cache_policy: Some(ResultsCachePolicy { priority: 2 }),
        digest_function: 9,
        inline_stdout: true,
        inline_stderr: true,
        inline_output_files: vec!["out/f".into()],
    };
    let d = check("build.bazel.remote.execution.v2.ExecuteRequest", &request);
    assert_eq!(field(&d, "digest_function"), Value::EnumNumber(9));
    let function = pool()
        .get_enum_by_name("build.bazel.remote.execution.v2.DigestFunction.Value")
        .unwrap();
    assert_eq!(function.get_value(9).unwrap().name(), "BLAKE3");
}

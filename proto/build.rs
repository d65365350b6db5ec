//! Compiles `hermetic/v1/*.proto` with protox (a protobuf compiler in Rust,
//! so no system `protoc` is needed) and generates prost messages and tonic
//! services, plus an encoded file descriptor set for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut protos = Vec::new();
    for entry in std::fs::read_dir(root.join("hermetic/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            protos.push(path);
        }
    }
    protos.sort();
    println!("cargo:rerun-if-changed=hermetic/v1");
    let fds = protox::compile(&protos, [&root])?;
    std::fs::write(
        out.join("hermetic_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    reapi_descriptors(&root, &out)?;
    Ok(())
}

/// The Remote Execution API files (REAPI v2, semver, ByteStream,
/// longrunning, rpc), compiled into a descriptor set only: their Rust
/// types come from the `bazel-remote-apis` crate, which ships none.
const REAPI_PROTOS: [&str; 7] = [
    "build/bazel/remote/execution/v2/remote_execution.proto",
    "build/bazel/semver/semver.proto",
    "google/bytestream/bytestream.proto",
    "google/longrunning/operations.proto",
    "google/rpc/code.proto",
    "google/rpc/error_details.proto",
    "google/rpc/status.proto",
];

fn reapi_descriptors(
    root: &std::path::Path,
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    for p in REAPI_PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(REAPI_PROTOS, [root])?;
    std::fs::write(
        out.join("reapi_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    Ok(())
}

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
    Ok(())
}

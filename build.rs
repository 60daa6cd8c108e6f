//! Generates the NEXUS gRPC code from proto/nexus.proto at build time. There is no `protoc` on
//! the build machines: `protox` (a pure-Rust protobuf compiler) produces the descriptor set,
//! which also feeds gRPC reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/nexus.proto");
    let descriptors = protox::compile(["nexus.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("nexus_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}

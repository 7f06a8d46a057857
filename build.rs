//! Generates the gRPC server and client code and the descriptor set that server reflection serves.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tributary_descriptor.bin"))
        .bytes(".")
        .compile_protos(&["proto/tributary/v1/gateway.proto", "proto/tributary/v1/translators.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

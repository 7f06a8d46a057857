//! Generates the gRPC server and client code and the descriptor set that server reflection serves,
//! from the repository's `proto/` (the interface's source of truth).

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("tributary_descriptor.bin"))
        .bytes(".")
        .compile_protos(
            &[
                root.join("tributary/v1/gateway.proto"),
                root.join("tributary/v1/translators.proto"),
                root.join("tributary/v1/subscriptions.proto"),
            ],
            std::slice::from_ref(&root),
        )?;
    println!("cargo:rerun-if-changed={}", root.display());
    Ok(())
}

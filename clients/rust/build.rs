//! Generates the client stubs and messages from the repository's `proto/` at build time, so the
//! Rust client can never be stale against the interface.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    tonic_prost_build::configure().build_server(false).bytes(".").compile_protos(
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

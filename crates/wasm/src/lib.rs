//! Tributary's translator runtime: the only crate that depends on wasmtime.
//!
//! # What it owns
//!
//! - [`config`]: the `[translators]` configuration: storage and sandbox limits.
//! - [`compile`]: compiling components in a child process under a time and memory budget.
//! - [`host`]: the wasmtime engine with the gateway's safe defaults (component model, epoch
//!   deadlines, pooling allocator with a memory cap, empty linker), validation and compilation.
//! - [`translator`]: a component with one configuration and its pool of initialized instances;
//!   it implements the core's [`Translate`](tributary_core::translate::Translate) port.
//! - [`registry`]: components stored durably by digest, names with versions, and the translators
//!   shared by every call that uses the same (digest, configuration).
//!
//! # What it must not know
//!
//! Kafka and gRPC: it takes the core's records and returns the core's outputs and errors; the
//! gRPC layer maps its plain registry types to protobuf.

pub mod compile;
pub mod config;
pub mod host;
pub mod registry;
pub mod translator;

pub use compile::{Cancel, CompileError};
pub use config::TranslatorsConfig;
pub use host::{Host, Invalid};
pub use registry::{sha256_hex, Registry, TranslatorInfo, TranslatorRef, VersionInfo};
pub use translator::Translator;

/// Host bindings generated from the WIT world, the interface's source of truth.
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../translators/wit",
        world: "translator",
        // Records are lent to the guest call as they are in the view (no copy per record on the
        // host side; lowering copies them into the guest once).
        ownership: Borrowing { duplicate_if_necessary: true },
    });
}

//! Tributary's translator runtime: the only crate that depends on wasmtime.
//!
//! # What it owns
//!
//! From the bottom up (each module imports only those above it in this list):
//!
//! - [`config`]: the `[translators]` configuration: storage and sandbox limits.
//! - [`limits`]: the instance pool's limits and the check of what a component declares against
//!   them (before compiling, so an upload over a limit is refused with its name and numbers).
//! - [`engine`]: the wasmtime engine with the gateway's safe defaults (component model, epoch
//!   deadlines, pooling allocator with a memory cap, empty linker), the sandbox every store runs
//!   in, and the validation of components. The only module that configures wasmtime.
//! - [`compile`]: compiling components in a child process under a time and memory budget, and
//!   the child's side of it.
//! - [`translator`]: a component with one configuration and its pool of initialized instances;
//!   it implements the core's [`Translate`](tributary_core::translate::Translate) port.
//! - [`host`]: the gateway's host: compiles uploads (through [`compile`]), loads compiled forms
//!   and makes translators.
//! - [`registry`]: components stored durably by digest, names with versions, and the translators
//!   shared by every call that uses the same (digest, configuration).
//!
//! # What it must not know
//!
//! Kafka and gRPC: it takes the core's records and returns the core's outputs and errors; the
//! gRPC layer maps its plain registry types to protobuf.

pub mod compile;
pub mod config;
pub mod engine;
pub mod frames;
pub mod host;
pub mod limits;
pub mod registry;
pub mod translator;

pub use compile::{Cancel, CompileError};
pub use config::TranslatorsConfig;
pub use engine::{Invalid, Unloadable};
pub use host::Host;
pub use limits::{Exceeded, Limit};
pub use registry::{sha256_hex, Registry, TranslatorInfo, TranslatorRef, VersionInfo};
pub use translator::Translator;

/// Host bindings generated from the WIT worlds, the interface's source of truth: version 1
/// (`translator`, records through the canonical ABI) and version 2 (`batch-translator`, one
/// buffer of frames each way, see [`frames`]).
mod bindings {
    wasmtime::component::bindgen!({
        path: "../../translators/wit",
        world: "translator",
        // Records are lent to the guest call as they are in the view (no copy per record on the
        // host side; lowering copies them into the guest once).
        ownership: Borrowing { duplicate_if_necessary: true },
    });

    pub(crate) mod v2 {
        wasmtime::component::bindgen!({
            path: "../../translators/wit",
            world: "batch-translator",
            // The input frames are lent to the call (lowering copies them into the guest).
            ownership: Borrowing { duplicate_if_necessary: true },
        });
    }
}

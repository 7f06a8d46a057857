//! The `[translators]` configuration: where translators are stored and the limits they run
//! under. Each limit ends only the calls that break it.

use serde::{Deserialize, Serialize};
use tributary_core::limits::all_positive;

/// Storage and sandbox limits of translators.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslatorsConfig {
    /// Directory of the translator registry (components by digest, compiled artifacts, index).
    pub data_dir: std::path::PathBuf,
    /// Deadline of one `translate` or `init` call, in milliseconds. A call past it is interrupted
    /// (reason `deadline`). JavaScript guests are ~60x slower per record than Rust ones.
    pub call_deadline_ms: u64,
    /// Linear memory one translator instance may grow to, in bytes (reason `memory`).
    pub memory_bytes: usize,
    /// Bytes of output one `translate` call may return (reason `output`).
    pub output_bytes: usize,
    /// Output records one `translate` call may return, over all its input records (reason
    /// `output`): many tiny outputs cost time downstream however few bytes they hold.
    pub output_records: usize,
    /// Largest component accepted at upload, in bytes.
    pub max_component_bytes: usize,
    /// Translator instances alive at once, over all translators (the pooling allocator's size).
    pub max_instances: u32,
    /// Records passed to one `translate` call. The default is `limits.max_batch_records`'s, so a
    /// subscription's batch is one call of the guest.
    pub batch_records: usize,
    /// Uploads received and compiled at once. Another upload fails RESOURCE_EXHAUSTED at once:
    /// compiling is the gateway's most expensive work (a core and up to hundreds of MB each).
    pub max_concurrent_uploads: usize,
    /// Time an upload may take to send its bytes, in milliseconds. A slower or never-ending
    /// upload stream fails RESOURCE_EXHAUSTED and frees its slot.
    pub upload_timeout_ms: u64,
    /// Longest a component may take to compile, in milliseconds. Compiling runs in a child
    /// process that is killed at this deadline; the upload fails RESOURCE_EXHAUSTED.
    pub compile_timeout_ms: u64,
    /// Memory a compile may use, in bytes (the child's `RLIMIT_DATA`: heap and thread stacks).
    /// Past it the compile fails and the upload fails RESOURCE_EXHAUSTED.
    pub compile_memory_bytes: u64,
    /// The `tributary` executable that compiles (`tributary compile-translator IN OUT`); unset is
    /// the running executable, which is right unless the gateway is embedded in another program.
    pub compiler: Option<std::path::PathBuf>,
}

impl Default for TranslatorsConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            // A Rust guest translates ~1000 records in well under 1 ms, a JavaScript guest in
            // ~12 ms: 1 s leaves room for real work and still stops a runaway loop quickly.
            call_deadline_ms: 1_000,
            // JavaScript guests (a whole engine) need tens of MiB; Rust guests a few.
            memory_bytes: 128 << 20,
            output_bytes: 16 << 20,
            // A call of 1000 records, each fanned out 65 ways.
            output_records: 65_536,
            // componentize-js components are ~12 MB.
            max_component_bytes: 64 << 20,
            max_instances: 64,
            batch_records: 1_000,
            max_concurrent_uploads: 2,
            // 64 MiB at a slow 2 MB/s takes 32 s.
            upload_timeout_ms: 60_000,
            // The 12 MB JavaScript component compiles in ~11 s and peaks at ~400 MB (it
            // compiles within a 512 MiB limit); Rust components take well under a second.
            compile_timeout_ms: 60_000,
            compile_memory_bytes: 1 << 30,
            compiler: None,
        }
    }
}

impl TranslatorsConfig {
    /// Checks what serde cannot: every limit is positive and the compiler has room to run. An
    /// error names the key.
    pub fn validate(&self) -> Result<(), String> {
        all_positive(&[
            ("translators.call_deadline_ms", self.call_deadline_ms),
            ("translators.memory_bytes", self.memory_bytes as u64),
            ("translators.output_bytes", self.output_bytes as u64),
            ("translators.output_records", self.output_records as u64),
            ("translators.max_component_bytes", self.max_component_bytes as u64),
            ("translators.max_instances", u64::from(self.max_instances)),
            ("translators.batch_records", self.batch_records as u64),
            ("translators.max_concurrent_uploads", self.max_concurrent_uploads as u64),
            ("translators.upload_timeout_ms", self.upload_timeout_ms),
            ("translators.compile_timeout_ms", self.compile_timeout_ms),
        ])?;
        // The compiler process itself (an engine, a few threads) needs some tens of MiB.
        if self.compile_memory_bytes < 64 << 20 {
            return Err("`translators.compile_memory_bytes` must be at least 67108864 (64 MiB)".into());
        }
        Ok(())
    }
}

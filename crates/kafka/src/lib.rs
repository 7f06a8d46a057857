//! Tributary's Kafka adapter: the only crate that depends on rdkafka.
//!
//! # What it owns
//!
//! - [`settings`]: the `[kafka]` configuration and the client settings every consumer shares
//!   (read_committed, no auto commit, never clamp an out-of-range position).
//! - [`ingest`]: the gateway's one consumer over every partition of the exposed topics, applying
//!   each record to its shard of the core's view.
//! - [`log`]: [`Kafka`](log::Kafka), the core's [`Log`](tributary_core::source::Log) port:
//!   watermarks and bounded catch-up readers for subscribers behind the tail buffer.
//! - [`positions`]: [`GroupPositions`](positions::GroupPositions), the core's
//!   [`Positions`](tributary_core::positions::Positions) port: named subscriptions' positions as
//!   consumer-group offsets.
//!
//! # What it must not know
//!
//! gRPC, protobuf and translators: it speaks the core's types (records, errors, positions) only.

mod batch;
pub mod ingest;
pub mod log;
pub mod positions;
pub mod settings;

pub use log::Kafka;
pub use positions::GroupPositions;
pub use settings::KafkaConfig;

//! Tributary's schema registry decoding: values of A's that a registry frames (Confluent's wire
//! format) become JSON where the gateway reads them from Kafka, for the topics configured in
//! `[schemas]`. The only crate that knows the registry's HTTP API and the Avro, Protobuf and
//! JSON Schema decoders.
//!
//! - [`config`]: the `[schemas]` section.
//! - [`registry`]: [`Registry`], the core's [`Decode`](tributary_core::decode::Decode) port:
//!   the framing, schemas fetched by id and kept parsed, failures remembered for `retry_ms`.
//! - `formats`: a schema parsed once and a value decoded with it: Avro datums as plain JSON,
//!   Protobuf messages (picked by the framing's message indexes) in their JSON mapping with the
//!   `.proto` field names, JSON values checked against their JSON Schema.
//!
//! Not decoded: keys (kept as bytes), schemas with references to other subjects, and Avro
//! values written with a schema other than the one their id names (no schema resolution).

pub mod config;
mod formats;
pub mod registry;

pub use config::{SchemasConfig, TopicSchemas};
pub use registry::Registry;

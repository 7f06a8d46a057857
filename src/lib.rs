//! Tributary: a gRPC gateway that lets a system B follow the state of a system A through A's Kafka
//! topics, without A knowing that B exists.
//!
//! # Layout
//!
//! The modules follow a record from Kafka to the client (see `DESIGN.md`):
//!
//! - [`config`]: the configuration (file, then environment, then flags), validated at start.
//! - [`kafka`]: the one module that knows rdkafka's API: client settings, metadata, watermarks.
//! - [`ingest`]: the gateway's single consumer over every partition of the exposed topics.
//! - [`view`]: a shard per partition: persistent state map, bounded tail buffer, next offset.
//! - [`filter`]: the key filter shared by snapshots and subscriptions.
//! - [`snapshot`]: `GetSnapshot`: clone each shard's map under a short lock, stream it in chunks.
//! - [`subscribe`]: `Subscribe`: per-partition cursors over the tail buffer, with a catch-up reader
//!   from Kafka for cursors behind it.
//! - [`api`]: the gRPC service, request validation and the mapping to protobuf.
//! - [`error`]: the domain error and its one mapping to gRPC status codes and details.
//! - [`server`]: wires it all together: ingest, gRPC, health, reflection, shutdown.

pub mod api;
pub mod config;
pub mod error;
pub mod filter;
pub mod ingest;
pub mod kafka;
pub mod registry;
pub mod server;
pub mod snapshot;
pub mod subscribe;
pub mod translate;
pub mod translators_api;
pub mod view;

/// Generated protobuf and gRPC code for `tributary.v1`.
pub mod pb {
    tonic::include_proto!("tributary.v1");

    /// Descriptor set of the `tributary.v1` protos, served by server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tributary_descriptor");
}

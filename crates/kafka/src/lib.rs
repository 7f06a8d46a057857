//! Tributary's Kafka adapter: the only crate that depends on rdkafka.
//!
//! # What it owns
//!
//! - [`settings`]: the `[kafka]` configuration and the client settings every consumer shares
//!   (read_committed, no auto commit, never clamp an out-of-range position).
//! - [`ingest`]: the gateway's one consumer over every partition of the exposed topics (with
//!   sharding, over those the group assigns this replica), applying each record to its shard of
//!   the core's view; partitions read back from a checkpoint resume at their offsets when Kafka
//!   can still continue them.
//! - [`log`]: [`Kafka`](log::Kafka), the core's [`Log`](tributary_core::source::Log) port:
//!   watermarks and bounded catch-up readers for subscribers behind the tail buffer.
//! - [`positions`]: [`GroupPositions`](positions::GroupPositions), the core's
//!   [`Positions`](tributary_core::positions::Positions) port: named subscriptions' positions as
//!   consumer-group offsets.
//! - [`group`]: partition sharding through a consumer group: [`Membership`](group::Membership)
//!   joins the group (cooperative-sticky, static membership, the replica's address in its client
//!   id) and reports the partitions it gains and loses, which ingest follows;
//!   [`Topology`](group::Topology) is who owns which partition, read from the coordinator.
//!
//! Beneath them, private: `message` (a Kafka message as the core's record), `metadata` (partition
//! counts, watermarks, a consumer's positions and the partition lists it is assigned), `batch`
//! (messages taken from librdkafka in batches: the crate's unsafe code, with `memory`: freed
//! shards' memory given back to the operating system when sharding releases partitions) and
//! `assignment` (a consumer group member's assignment bytes decoded, for the group's topology). Ingest and the
//! catch-up readers both build on these and neither knows the other. `testing` (tests only)
//! holds what the tests against the real broker share.
//!
//! # What it must not know
//!
//! gRPC, protobuf and translators: it speaks the core's types (records, errors, positions) only.

mod assignment;
mod batch;
pub mod group;
pub mod ingest;
pub mod log;
mod memory;
mod message;
mod metadata;
pub mod positions;
pub mod settings;
#[cfg(test)]
mod testing;

pub use log::Kafka;
pub use positions::GroupPositions;
pub use settings::KafkaConfig;

//! Tributary's core: what the gateway does with A's records between Kafka and B, with no Kafka
//! client, no WebAssembly runtime and no gRPC in sight.
//!
//! # What it owns
//!
//! In the order a record travels:
//!
//! - [`record`]: A's [`Record`](record::Record), B's [`Output`](record::Output) made from it, and
//!   the [`PartitionOffset`](record::PartitionOffset) positions are named in.
//! - [`decode`]: the [`Decode`](decode::Decode) port a schema decoder plugs into: framed values
//!   become JSON where they are read from Kafka, before anything else sees them.
//! - [`view`]: a shard per partition: persistent state map, bounded tail buffer, next offset.
//! - [`filter`]: the key filter shared by snapshots and subscriptions.
//! - [`translate`]: the [`Translate`](translate::Translate) port a translator runtime plugs into,
//!   and the one place outcomes become outputs (skip errors, source coordinates).
//! - [`snapshot`]: `GetSnapshot`: clone each shard's map under a short lock, stream it out.
//! - [`range`]: a fixed range of one partition, read from the tail buffer or Kafka (the HTTP
//!   log's chunks).
//! - [`subscribe`]: `Subscribe`: start positions, per-partition cursors over the tail buffer with a
//!   catch-up reader for cursors behind it, batching and progress.
//! - [`source`]: the [`Log`](source::Log) port the Kafka adapter implements (watermarks, catch-up
//!   readers).
//! - [`watermarks`]: one shared, single-flight watermark lookup for every call that needs Kafka's
//!   offsets, with the last known answer while Kafka does not respond.
//! - [`positions`]: the [`Positions`](positions::Positions) port where durable subscriptions'
//!   committed positions are kept (Kafka consumer groups, in production).
//! - [`durable`]: durable named subscriptions over that port: where a named `Subscribe` starts,
//!   one stream per name, commit, auto-commit, describe, list and delete.
//! - [`buffer`]: the buffer between a stream and its client, bounded in messages and bytes.
//! - [`error`]: the domain error every layer returns; the gRPC layer maps it to a status.
//! - [`events`]: named warning and error events, counted and logged rate-limited, with
//!   [`declare_events!`] for the events only an adapter emits.
//! - [`limits`]: every bound, with what happens at it.
//!
//! Unit tests share in-memory stand-ins for the ports (`testing`, compiled for tests only).
//!
//! # What it must not know
//!
//! rdkafka, wasmtime, tonic and prost: the crate does not depend on them, so it cannot. Adapters
//! (`tributary-kafka`, `tributary-wasm`, `tributary-server`) depend on this crate, never the
//! other way round; that is what lets the subscription state machine be unit-tested without
//! Kafka.

pub mod buffer;
pub mod decode;
pub mod durable;
pub mod error;
pub mod events;
pub mod filter;
pub mod limits;
pub mod positions;
pub mod range;
pub mod record;
pub mod snapshot;
pub mod source;
pub mod subscribe;
#[cfg(test)]
mod testing;
pub mod translate;
pub mod view;
pub mod watermarks;

pub use error::{Error, SubscriptionProblem, TranslatorFailure};
pub use limits::Limits;
pub use record::{
    Encode, Encoded, Encoder, Header, Lender, Lent, Output, PartitionOffset, Payload, Record, RecordRef, Run, Wire,
};

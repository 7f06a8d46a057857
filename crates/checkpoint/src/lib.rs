//! Tributary's checkpoints: the view of every partition and the offset it is exact at, kept on
//! local disk so that a restart resumes ingest there instead of re-reading Kafka from the start.
//! The only crate that depends on redb.
//!
//! # What it owns
//!
//! - [`config`]: the `[checkpoint]` section (where, how often).
//! - [`format`]: how a state record is laid out in the file (versioned), and read back checked.
//! - [`store`]: [`Store`](store::Store), the redb file: one write transaction holds a partition's
//!   records and its offset, so they never disagree; read back as the core's
//!   [`ShardImage`](tributary_core::view::ShardImage)s.
//! - [`writer`]: [`Checkpointer`](writer::Checkpointer), the task that writes changed partitions
//!   every interval, off the ingest thread.
//!
//! # What it must not know
//!
//! Kafka, gRPC and translators: it speaks the core's view. Whether a checkpoint can be continued
//! (its offsets against Kafka's) is decided by ingest, which knows Kafka.

pub mod config;
pub mod format;
pub mod store;
pub mod writer;

pub use config::CheckpointConfig;
pub use store::{CheckpointError, Store};
pub use writer::Checkpointer;

//! The Rust client of the Tributary gateway.
//!
//! - [`pb`]: the messages and gRPC stubs, generated from `proto/` at build time;
//! - [`Client`]: one connection (plain, TLS or mutual TLS, with an optional bearer token) and the
//!   three services on it;
//! - [`Error`]: a failed call with its `google.rpc.Status` details decoded;
//! - [`follow()`]: snapshot, then follow every change, resumable and self-healing (the algorithm of
//!   `clients/FOLLOW.md`);
//! - [`follow_fleet()`]: the same across a sharded fleet, each partition from its owner (module
//!   `fleet`, `clients/FOLLOW.md` "Sharded fleets").
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tributary_client::{follow, Change, Client, FollowOptions, Handler, MemoryStore, Position};
//!
//! struct Print;
//! impl Handler for Print {
//!     async fn reset(&mut self) -> Result<(), tributary_client::BoxError> { Ok(()) }
//!     async fn apply(&mut self, changes: &[Change], _: Option<&Position>) -> Result<(), tributary_client::BoxError> {
//!         for c in changes { println!("{:?} = {:?}", c.key, c.value); }
//!         Ok(())
//!     }
//! }
//! let client = Client::builder("http://127.0.0.1:50051").connect().await?;
//! let options = FollowOptions::new(["media-assignments"]);
//! follow(&client, options, &mut Print, &mut MemoryStore::default(), tokio::signal::ctrl_c()).await?;
//! # Ok(()) }
//! ```

mod client;
mod error;
mod fleet;
mod follow;
mod store;

pub use client::{Client, ClientBuilder, Token};
pub use error::{Error, FieldViolation, Offsets, OffsetsKind};
pub use fleet::follow_fleet;
pub use follow::{follow, Backoff, Change, FollowError, FollowOptions, Handler, OnError};
pub use store::{FileStore, MemoryStore, Position, Store};

/// An application's error, returned from a [`Handler`] or a [`Store`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The generated `tributary.v1` messages and client stubs.
pub mod pb {
    tonic::include_proto!("tributary.v1");
}

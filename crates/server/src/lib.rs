//! Tributary's gRPC layer and application: the only library crate that depends on tonic.
//!
//! # What it owns
//!
//! - [`pb`]: the code generated from `proto/` (package `tributary.v1`).
//! - [`api`]: the `Gateway` and `Translators` services; [`api::convert`] holds every mapping
//!   between protobuf and the core's types, once; [`api::status`] maps the core's error to a gRPC
//!   status with details, in one exhaustive match.
//! - [`config`]: the whole configuration (file, then environment, then flags), validated at start;
//!   each section belongs to the crate it configures.
//! - [`connections`] and [`tls`]: accepted connections within budgets, plain or TLS with
//!   reloaded certificates; a client certificate's identity.
//! - [`calls`]: the layer in front of every service: counts each call on its connection,
//!   authenticates it and measures it.
//! - [`auth`]: who is calling (bearer tokens, client certificates) and what they may do (the
//!   policy), with an audit log.
//! - [`events`]: the named events only the server emits (connections, TLS, auth reloads,
//!   drain), declared with the core's event machinery.
//! - [`telemetry`]: the Prometheus metrics listener and the metrics' descriptions.
//! - [`sharding`]: the `[sharding]` section, and who holds which partition in a sharded fleet
//!   (`GetTopology`, and the owner in the details of a call on a partition held elsewhere).
//! - [`web`]: the HTTP log for browsers and HTTP caches (`[http]`, off by default): snapshot,
//!   immutable chunks, live long-polls and SSE, under the same auth, translators and filters.
//! - [`app`]: build, then serve: ingest, the services, health and reflection on one port, and the
//!   shutdown protocol.
//!
//! # What it must not know
//!
//! rdkafka and wasmtime: Kafka and translators are reached through `tributary-kafka` and
//! `tributary-wasm`, which speak the core's types.

pub mod api;
pub mod app;
pub mod auth;
pub mod calls;
pub mod config;
pub mod connections;
pub mod events;
pub mod logs;
pub mod sharding;
pub mod telemetry;
pub mod tls;
pub mod web;

pub use app::serve;
pub use tributary_wasm::{compile::child_main as compile_translator, sha256_hex};

/// Generated protobuf and gRPC code for `tributary.v1`.
pub mod pb {
    tonic::include_proto!("tributary.v1");

    /// Descriptor set of the `tributary.v1` protos, served by server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("tributary_descriptor");
}

//! The gRPC services and the one place protobuf meets the core.
//!
//! - [`gateway`]: `tributary.v1.Gateway` (DescribeTopics, GetSnapshot, Subscribe, GetTopology).
//! - [`subscriptions`]: `tributary.v1.Subscriptions` (Commit, List, Describe, Delete) over the
//!   core's named subscriptions (`tributary_core::durable`), and a named `Subscribe`'s stamp.
//! - [`translators`]: `tributary.v1.Translators` (Upload, List, Describe, Delete).
//! - [`lag`]: how far behind the view's head each Subscribe stream's client is.
//! - [`convert`]: every mapping between protobuf messages and the core's types.
//! - [`routes`]: which code answers each Gateway method: `Subscribe` and `GetSnapshot` through
//!   the [`codec`], the others through the generated server.
//! - [`codec`]: tonic's codec for responses that write themselves ([`encode::Wire`]).
//! - [`chunker`]: packs snapshot entries into chunks under an encoded-size bound.
//! - [`encode`]: records, outputs and snapshot entries encoded as protobuf by hand, straight into
//!   tonic's buffer.
//! - [`status`]: the core's error as a gRPC status with details.

pub mod chunker;
pub mod codec;
pub mod convert;
pub mod encode;
pub mod gateway;
pub mod lag;
pub mod routes;
pub mod status;
pub mod subscriptions;
pub mod translators;

pub use gateway::GatewayService;
pub use subscriptions::SubscriptionsService;
pub use translators::TranslatorsService;

//! The gRPC services and the one place protobuf meets the core.
//!
//! - [`gateway`]: `tributary.v1.Gateway` (DescribeTopics, GetSnapshot, Subscribe).
//! - [`subscriptions`]: `tributary.v1.Subscriptions` (Commit, List, Describe, Delete) and named
//!   `Subscribe` streams: positions in Kafka, one stream per name.
//! - [`translators`]: `tributary.v1.Translators` (Upload, List, Describe, Delete).
//! - [`lag`]: how far behind the view's head each Subscribe stream's client is.
//! - [`convert`]: every mapping between protobuf messages and the core's types.
//! - [`chunker`]: packs snapshot entries into chunks under an encoded-size bound.
//! - [`status`]: the core's error as a gRPC status with details.
//! - [`wire`]: `Subscribe` responses framed from records encoded once, shared by subscribers.

pub mod chunker;
pub mod convert;
pub mod gateway;
pub mod lag;
pub mod status;
pub mod subscriptions;
pub mod translators;
pub mod wire;

pub use gateway::GatewayService;
pub use subscriptions::SubscriptionsService;
pub use translators::TranslatorsService;

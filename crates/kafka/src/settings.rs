//! The `[kafka]` configuration and the client settings shared by every consumer of the gateway.

use std::collections::BTreeMap;

use rdkafka::{
    config::{ClientConfig, RDKafkaLogLevel},
    error::KafkaError,
};
use serde::{Deserialize, Serialize};
use tributary_core::Error;

/// Kafka connection and the exposed topics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Kafka bootstrap servers, `host:port[,host:port...]`.
    pub bootstrap_servers: String,
    /// Topics the gateway exposes. Every other topic is unknown to clients.
    pub topics: Vec<String>,
    /// How often the gateway looks for new partitions of the exposed topics, in milliseconds.
    pub metadata_refresh_ms: u64,
    /// librdkafka properties passed through as they are (e.g. `security.protocol`), applied last
    /// so they override the gateway's own settings.
    pub properties: BTreeMap<String, String>,
    /// Prefix of the consumer groups that keep named subscriptions' positions: subscription N is
    /// group `<prefix>N`.
    pub subscription_group_prefix: String,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            // A local broker as `scripts/kafka.sh` starts it.
            bootstrap_servers: "127.0.0.1:9092".into(),
            topics: Vec::new(),
            // New partitions are rare; a 10 s delay before they are served is acceptable and
            // keeps metadata requests negligible.
            metadata_refresh_ms: 10_000,
            properties: BTreeMap::new(),
            subscription_group_prefix: "tributary.subscription.".into(),
        }
    }
}

/// Settings shared by every consumer of the gateway, then `tuning` for its purpose, then the
/// passthrough `kafka.properties` (so an operator can override any of them).
pub(crate) fn consumer_config(kafka: &KafkaConfig, purpose: &str, tuning: &[(&str, String)]) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &kafka.bootstrap_servers)
        .set("client.id", format!("tributary-{purpose}"))
        // Positions are assigned explicitly; no group coordination, no commits. librdkafka
        // still wants a group id for some calls.
        .set("group.id", format!("tributary-{purpose}"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only committed data is A's state: aborted transactions are never delivered.
        .set("isolation.level", "read_committed")
        // Never clamp silently (rule 7): an out-of-range position is an error we report.
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        .set_log_level(RDKafkaLogLevel::Warning);
    for (key, value) in tuning {
        config.set(*key, value);
    }
    for (key, value) in &kafka.properties {
        config.set(key, value);
    }
    config
}

/// The ingest consumer reads every exposed partition from the start at boot, then follows the
/// head: tuned for throughput (measured in FINDINGS: librdkafka's 1 s `fetch.queue.backoff.ms`
/// alone halved the load rate). The prefetch queue is kept small (4 MiB, 20,000 messages): ingest
/// takes messages in batches as fast as librdkafka fetches them, so a bigger queue only held
/// memory; with librdkafka's 64 MiB / 100,000 defaults (or more) the view loaded no faster and the
/// gateway kept up to 300 MiB more after loading 2 M records. The backoff is 2 ms, not 0: with
/// 0, librdkafka's broker thread spun on the full queue (a profile of the load: clock reads and
/// polls) and took CPU from ingest; 2 ms loaded 2 M records ~10% faster, and a 4 MiB queue takes
/// ingest longer than that to drain.
pub(crate) fn ingest_tuning() -> Vec<(&'static str, String)> {
    vec![
        ("fetch.queue.backoff.ms", "2".into()),
        ("queued.min.messages", "20000".into()),
        ("max.partition.fetch.bytes", (4 << 20).to_string()),
        ("queued.max.messages.kbytes", (4 << 10).to_string()),
        // Follow the head closely: a fetch returns as soon as there is data, at most 10 ms later.
        ("fetch.wait.max.ms", "10".into()),
    ]
}

/// A catch-up reader reads a backlog within a bounded prefetch of `kbytes` KiB.
pub(crate) fn catchup_tuning(kbytes: usize) -> Vec<(&'static str, String)> {
    vec![
        ("queued.max.messages.kbytes", kbytes.to_string()),
        ("fetch.max.bytes", (kbytes * 1024).max(1 << 20).to_string()),
        ("max.partition.fetch.bytes", (kbytes * 1024).clamp(64 << 10, 1 << 20).to_string()),
        // With a small queue the threshold is hit all the time; librdkafka's default 1 s backoff
        // would then throttle a catch-up reader to a few MB/s.
        ("fetch.queue.backoff.ms", "5".into()),
    ]
}

/// The metadata client never reads records.
pub(crate) fn metadata_tuning() -> Vec<(&'static str, String)> {
    catchup_tuning(64)
}

/// A Kafka error as the core's error (UNAVAILABLE to clients).
pub(crate) fn kafka_error(error: KafkaError) -> Error {
    Error::kafka(error.to_string())
}

//! The `[kafka]` configuration and the client settings shared by every consumer of the gateway.

use std::collections::BTreeMap;

use rdkafka::{
    config::{ClientConfig, RDKafkaLogLevel},
    error::KafkaError,
};
use serde::{Deserialize, Serialize};
use tributary_core::{limits::all_positive, Error};

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

impl KafkaConfig {
    /// Checks what serde cannot: brokers and topics are named, the refresh period is positive.
    /// An error names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.bootstrap_servers.trim().is_empty() {
            return Err("`kafka.bootstrap_servers` must name at least one broker".into());
        }
        if self.topics.is_empty() {
            return Err("`kafka.topics` must list at least one topic to expose".into());
        }
        if let Some(t) = self.topics.iter().find(|t| t.trim().is_empty()) {
            return Err(format!("`kafka.topics` contains an empty topic name {t:?}"));
        }
        all_positive(&[("kafka.metadata_refresh_ms", self.metadata_refresh_ms)])
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
        // Fetches of a quarter of the prefetch (at least 1 MiB): the next one is under way while
        // the reader drains the queue, and a reader holds little more than its prefetch.
        ("fetch.max.bytes", (kbytes * 256).max(1 << 20).to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(properties: &[(&str, &str)]) -> KafkaConfig {
        let properties = properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        KafkaConfig { bootstrap_servers: "k1:9092,k2:9092".into(), properties, ..KafkaConfig::default() }
    }

    #[test]
    fn every_consumer_reads_committed_data_never_commits_and_never_clamps() {
        let config = consumer_config(&config_with(&[]), "catchup", &[]);
        for (key, value) in [
            ("bootstrap.servers", "k1:9092,k2:9092"),
            ("client.id", "tributary-catchup"),
            ("group.id", "tributary-catchup"),
            ("isolation.level", "read_committed"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            // Rule 7: an out-of-range position is an error, not a silent jump to either end.
            ("auto.offset.reset", "error"),
            ("enable.partition.eof", "false"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn tuning_overrides_the_shared_settings_and_properties_override_both() {
        let tuning = [("fetch.wait.max.ms", "10".to_string()), ("enable.partition.eof", "true".to_string())];
        let kafka = config_with(&[("fetch.wait.max.ms", "50"), ("security.protocol", "ssl")]);
        let config = consumer_config(&kafka, "ingest", &tuning);
        assert_eq!(config.get("enable.partition.eof"), Some("true"), "tuning after the shared settings");
        assert_eq!(config.get("fetch.wait.max.ms"), Some("50"), "properties after the tuning");
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        // Even the settings the contract rests on: the operator has the last word.
        let clamping = consumer_config(&config_with(&[("auto.offset.reset", "earliest")]), "ingest", &[]);
        assert_eq!(clamping.get("auto.offset.reset"), Some("earliest"));
    }

    #[test]
    fn catch_up_prefetch_is_bounded_by_its_kbytes() {
        let get = |kbytes: usize, key: &str| -> usize {
            let tuning = catchup_tuning(kbytes);
            tuning.iter().find(|(k, _)| *k == key).map(|(_, v)| v.parse().unwrap()).unwrap()
        };
        assert_eq!(get(64, "queued.max.messages.kbytes"), 64);
        // A fetch may always bring 1 MiB, and one partition's share stays within 64 KiB..1 MiB.
        assert_eq!(get(64, "fetch.max.bytes"), 1 << 20);
        assert_eq!(get(64, "max.partition.fetch.bytes"), 64 << 10);
        assert_eq!(get(16, "max.partition.fetch.bytes"), 64 << 10);
        // Fetches of a quarter of the prefetch, so that the next one overlaps the draining.
        assert_eq!(get(4096, "fetch.max.bytes"), 1 << 20);
        assert_eq!(get(16384, "fetch.max.bytes"), 4 << 20);
        assert_eq!(get(4096, "max.partition.fetch.bytes"), 1 << 20);
        assert_eq!(metadata_tuning(), catchup_tuning(64));
    }

    #[test]
    fn unknown_keys_are_refused_by_name_and_missing_ones_take_defaults() {
        let err = serde_json::from_str::<KafkaConfig>(r#"{"bootstrap": "x:1"}"#).unwrap_err().to_string();
        assert!(err.contains("unknown field `bootstrap`"), "{err}");
        let config: KafkaConfig = serde_json::from_str(r#"{"topics": ["a"]}"#).unwrap();
        assert_eq!(config, KafkaConfig { topics: vec!["a".into()], ..KafkaConfig::default() });
        assert_eq!(config.subscription_group_prefix, "tributary.subscription.");
    }

    #[test]
    fn a_property_librdkafka_rejects_fails_at_creation_naming_it() {
        let kafka = config_with(&[("no.such.property", "1")]);
        let err = crate::Kafka::new(&kafka).err().expect("librdkafka refuses an unknown property");
        assert!(matches!(err, Error::Kafka { .. }), "{err:?}");
        assert!(err.to_string().contains("no.such.property"), "{err}");
    }
}

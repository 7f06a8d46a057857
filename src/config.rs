//! Configuration: defaults, then a TOML file, then `TRIBUTARY__SECTION__KEY` environment
//! variables, then command-line flags; validated once at start.

use std::{collections::BTreeMap, net::SocketAddr, path::Path, time::Duration};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};

/// The whole configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server listens on (gateway, health and reflection share it).
    pub listen: SocketAddr,
    /// Where A's topics are and which of them are exposed.
    pub kafka: KafkaConfig,
    /// Bounds on memory, message sizes and concurrency.
    pub limits: Limits,
    /// B's WebAssembly translators: where they are stored and the limits they run under.
    pub translators: TranslatorsConfig,
}

/// Storage and sandbox limits of translators. Each limit ends only the calls that break it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslatorsConfig {
    /// Directory of the translator registry (components by digest, compiled artifacts, index).
    pub data_dir: std::path::PathBuf,
    /// Deadline of one `translate` or `init` call, in milliseconds. A call past it is interrupted
    /// (reason `deadline`). JavaScript guests are ~60x slower per record than Rust ones.
    pub call_deadline_ms: u64,
    /// Linear memory one translator instance may grow to, in bytes (reason `memory`).
    pub memory_bytes: usize,
    /// Bytes of output one `translate` call may return (reason `output`).
    pub output_bytes: usize,
    /// Largest component accepted at upload, in bytes.
    pub max_component_bytes: usize,
    /// Translator instances alive at once, over all translators (the pooling allocator's size).
    pub max_instances: u32,
    /// Records passed to one `translate` call.
    pub batch_records: usize,
}

impl Default for TranslatorsConfig {
    fn default() -> Self {
        Self {
            data_dir: "data".into(),
            // A Rust guest translates ~1000 records in well under 1 ms, a JavaScript guest in
            // ~12 ms: 1 s leaves room for real work and still stops a runaway loop quickly.
            call_deadline_ms: 1_000,
            // JavaScript guests (a whole engine) need tens of MiB; Rust guests a few.
            memory_bytes: 128 << 20,
            output_bytes: 16 << 20,
            // componentize-js components are ~12 MB.
            max_component_bytes: 64 << 20,
            max_instances: 64,
            batch_records: 256,
        }
    }
}

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
}

/// Bounds, each with what happens at it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Records the tail buffer of one partition keeps in memory. Older records are evicted;
    /// subscribers behind them read from Kafka with a catch-up reader.
    pub tail_max_records: usize,
    /// Bytes (keys, values, headers) the tail buffer of one partition keeps, same eviction.
    pub tail_max_bytes: usize,
    /// Default and maximum encoded size of one snapshot chunk. A single entry larger than this is
    /// sent alone in its chunk.
    pub max_chunk_bytes: usize,
    /// Default and maximum records in one subscription batch.
    pub max_batch_records: usize,
    /// Maximum bytes of record data in one subscription batch (a larger single record goes alone).
    pub max_batch_bytes: usize,
    /// Messages buffered per stream between the gateway and a slow client. When full, that
    /// stream's producer waits; ingest and other clients never do.
    pub stream_buffer_messages: usize,
    /// Concurrent `Subscribe` and `GetSnapshot` streams. Beyond it calls fail RESOURCE_EXHAUSTED.
    pub max_streams: usize,
    /// Kafka consumers that catch-up readers may use at once. A subscriber behind the tail buffer
    /// waits for one (its progress messages keep flowing).
    pub max_catchup_readers: usize,
    /// Prefetch of one catch-up reader, in KiB (librdkafka's `queued.max.messages.kbytes`).
    pub catchup_prefetch_kbytes: usize,
    /// Interval between progress messages on a subscription, in milliseconds.
    pub progress_interval_ms: u64,
    /// How long a snapshot waits for a loading view when the call has no deadline, in ms.
    pub ready_wait_ms: u64,
    /// Largest request message the server accepts, in bytes.
    pub max_request_bytes: usize,
}

/// Fallbacks when nothing is configured: a local broker as `scripts/kafka.sh` starts it.
const fn default_listen() -> SocketAddr {
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 50051)
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            kafka: KafkaConfig::default(),
            limits: Limits::default(),
            translators: TranslatorsConfig::default(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            topics: Vec::new(),
            // New partitions are rare; a 10 s delay before they are served is acceptable and
            // keeps metadata requests negligible.
            metadata_refresh_ms: 10_000,
            properties: BTreeMap::new(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            // 4 MiB or 16k records per partition keeps near-head subscribers off Kafka for a few
            // seconds of a busy partition while 100 partitions cost at most 400 MiB.
            tail_max_records: 16_384,
            tail_max_bytes: 4 << 20,
            // 1 MiB stays well under the 4 MiB default receive limit of every gRPC client.
            max_chunk_bytes: 1 << 20,
            max_batch_records: 1_000,
            max_batch_bytes: 1 << 20,
            stream_buffer_messages: 16,
            max_streams: 1_024,
            // Each reader is a librdkafka client with its own threads and prefetch.
            max_catchup_readers: 16,
            // librdkafka defaults to 64 MiB per consumer; a thousand lagging clients must not.
            catchup_prefetch_kbytes: 1_024,
            progress_interval_ms: 1_000,
            ready_wait_ms: 30_000,
            max_request_bytes: 4 << 20,
        }
    }
}

impl Limits {
    pub fn progress_interval(&self) -> Duration {
        Duration::from_millis(self.progress_interval_ms)
    }
}

/// A configuration that could not be loaded; the message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(pub String);

impl Config {
    /// Loads defaults, then `file` (if any), then `TRIBUTARY__...` variables, then `overrides`.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!("config file {} does not exist", file.display())));
            }
            figment = figment.merge(Toml::file(file));
        }
        figment = figment.merge(Env::prefixed("TRIBUTARY__").split("__")).merge(Serialized::defaults(overrides));
        let config: Config = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: non-empty lists, positive bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("`{key}` {why}")));
        if self.kafka.bootstrap_servers.trim().is_empty() {
            return fail("kafka.bootstrap_servers", "must name at least one broker");
        }
        if self.kafka.topics.is_empty() {
            return fail("kafka.topics", "must list at least one topic to expose");
        }
        if let Some(t) = self.kafka.topics.iter().find(|t| t.trim().is_empty()) {
            return fail("kafka.topics", &format!("contains an empty topic name {t:?}"));
        }
        let l = &self.limits;
        for (key, value) in [
            ("limits.tail_max_records", l.tail_max_records),
            ("limits.tail_max_bytes", l.tail_max_bytes),
            ("limits.max_chunk_bytes", l.max_chunk_bytes),
            ("limits.max_batch_records", l.max_batch_records),
            ("limits.max_batch_bytes", l.max_batch_bytes),
            ("limits.stream_buffer_messages", l.stream_buffer_messages),
            ("limits.max_streams", l.max_streams),
            ("limits.max_catchup_readers", l.max_catchup_readers),
            ("limits.catchup_prefetch_kbytes", l.catchup_prefetch_kbytes),
            ("limits.max_request_bytes", l.max_request_bytes),
        ] {
            if value == 0 {
                return fail(key, "must be greater than 0");
            }
        }
        let t = &self.translators;
        for (key, value) in [
            ("translators.call_deadline_ms", t.call_deadline_ms as usize),
            ("translators.memory_bytes", t.memory_bytes),
            ("translators.output_bytes", t.output_bytes),
            ("translators.max_component_bytes", t.max_component_bytes),
            ("translators.max_instances", t.max_instances as usize),
            ("translators.batch_records", t.batch_records),
        ] {
            if value == 0 {
                return fail(key, "must be greater than 0");
            }
        }
        if l.progress_interval_ms == 0 {
            return fail("limits.progress_interval_ms", "must be greater than 0");
        }
        if self.kafka.metadata_refresh_ms == 0 {
            return fail("kafka.metadata_refresh_ms", "must be greater than 0");
        }
        Ok(())
    }
}

/// Command-line overrides; only the fields that were given are merged.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "KafkaOverrides::is_empty")]
    pub kafka: KafkaOverrides,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct KafkaOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap_servers: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<String>>,
}

impl KafkaOverrides {
    fn is_empty(&self) -> bool {
        self.bootstrap_servers.is_none() && self.topics.is_none()
    }
}

/// figment's errors name the key path; keep that and say where the value came from.
fn describe(error: figment::Error) -> String {
    error
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() { String::new() } else { format!("`{}`: ", e.path.join(".")) };
            let source = e.metadata.as_ref().map(|m| format!(" (from {})", m.name)).unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closures return figment::Error
mod tests {
    use super::*;

    fn write(contents: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), contents).unwrap();
        file
    }

    #[test]
    fn file_values_override_defaults() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let file = write("[kafka]\ntopics = [\"a\", \"b\"]\n[limits]\nmax_batch_records = 7\n");
            let config = Config::load(Some(file.path()), &Overrides::default()).unwrap();
            assert_eq!(config.kafka.topics, vec!["a", "b"]);
            assert_eq!(config.limits.max_batch_records, 7);
            assert_eq!(config.limits.max_chunk_bytes, Limits::default().max_chunk_bytes);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let file = write("[kafka]\ntopics = [\"a\"]\nbootstrap = \"x\"\n");
            let err = Config::load(Some(file.path()), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("bootstrap"), "{err}");
            assert!(err.contains("unknown field"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_value_is_named() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let file = write("[kafka]\ntopics = [\"a\"]\n[limits]\nmax_streams = -3\n");
            let err = Config::load(Some(file.path()), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("limits.max_streams"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn zero_bound_is_rejected() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let file = write("[kafka]\ntopics = [\"a\"]\n[limits]\nmax_streams = 0\n");
            let err = Config::load(Some(file.path()), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("`limits.max_streams` must be greater than 0"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_topics_are_rejected() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let err = Config::load(None, &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("kafka.topics"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn overrides_win_over_file() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let file = write("listen = \"127.0.0.1:1\"\n[kafka]\ntopics = [\"a\"]\n");
            let overrides = Overrides {
                listen: Some("127.0.0.1:2".parse().unwrap()),
                kafka: KafkaOverrides { bootstrap_servers: None, topics: Some(vec!["z".into()]) },
            };
            let config = Config::load(Some(file.path()), &overrides).unwrap();
            assert_eq!(config.listen.port(), 2);
            assert_eq!(config.kafka.topics, vec!["z"]);
            Ok(())
        });
    }

    #[test]
    fn environment_overrides_file_and_names_bad_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[kafka]\ntopics = [\"a\"]\n[limits]\nmax_streams = 5\n")?;
            jail.set_env("TRIBUTARY__LIMITS__MAX_STREAMS", "7");
            jail.set_env("TRIBUTARY__KAFKA__TOPICS", "[x,y]");
            let config = Config::load(Some(Path::new("t.toml")), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.limits.max_streams, 7);
            assert_eq!(config.kafka.topics, vec!["x", "y"]);
            jail.set_env("TRIBUTARY__LIMITS__MAX_STREAM", "7");
            let err = Config::load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("max_stream") && err.contains("unknown field"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        // Jail serializes tests that read the process environment.
        figment::Jail::expect_with(|_| {
            let err = Config::load(Some(Path::new("/nonexistent/tributary.toml")), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("does not exist"), "{err}");
            Ok(())
        });
    }
}

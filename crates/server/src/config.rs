//! Configuration: defaults, then a TOML file, then `TRIBUTARY__SECTION__KEY` environment
//! variables, then command-line flags; validated once at start. Each section is defined, and
//! validates itself, in the crate or module it configures (`[kafka]` in tributary-kafka,
//! `[translators]` in tributary-wasm, `[limits]` in the core and [`connections`](crate::connections),
//! `[tls]`, `[auth]`, `[metrics]`, `[tracing]`, `[sharding]` in their modules); this module puts them together
//! and checks what involves several sections.

use std::{net::SocketAddr, path::Path};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};
pub use tributary_checkpoint::CheckpointConfig;
pub use tributary_core::Limits;
pub use tributary_kafka::KafkaConfig;
pub use tributary_schema::{SchemasConfig, TopicSchemas};
pub use tributary_wasm::TranslatorsConfig;

pub use crate::{
    auth::AuthConfig,
    connections::ConnectionLimits,
    sharding::ShardingConfig,
    telemetry::MetricsConfig,
    tls::{ClientAuth, TlsConfig},
};

/// The whole configuration of one gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address the gRPC server listens on (gateway, health and reflection share it).
    pub listen: SocketAddr,
    /// Where A's topics are and which of them are exposed.
    pub kafka: KafkaConfig,
    /// Bounds on memory, message sizes, concurrency and connections.
    pub limits: LimitsConfig,
    /// Values framed by a schema registry (Avro, Protobuf, JSON Schema) decoded to JSON, per topic.
    pub schemas: SchemasConfig,
    /// B's WebAssembly translators: where they are stored and the limits they run under.
    pub translators: TranslatorsConfig,
    /// TLS and mutual TLS on the gRPC port.
    pub tls: TlsConfig,
    /// Bearer tokens and the authorization policy.
    pub auth: AuthConfig,
    /// The Prometheus metrics listener.
    pub metrics: MetricsConfig,
    /// Span export to an OpenTelemetry collector.
    pub tracing: crate::logs::TracingConfig,
    /// The view checkpointed on local disk, so a restart resumes instead of reloading.
    pub checkpoint: CheckpointConfig,
    /// Partition sharding between the replicas of a fleet (off unless `group` is set).
    pub sharding: ShardingConfig,
    /// The HTTP log for browsers and HTTP caches (off unless `listen` is set).
    pub http: crate::web::HttpConfig,
    /// Serve plain TCP on an address other than loopback. Without TLS anyone who reaches the
    /// port reads every exposed topic; the gateway refuses to do that unless this says it is
    /// intended (e.g. TLS ends at a proxy on the same host).
    pub allow_plaintext: bool,
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
            limits: LimitsConfig::default(),
            schemas: SchemasConfig::default(),
            translators: TranslatorsConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: crate::logs::TracingConfig::default(),
            checkpoint: CheckpointConfig::default(),
            sharding: ShardingConfig::default(),
            http: crate::web::HttpConfig::default(),
            allow_plaintext: false,
        }
    }
}

/// The `[limits]` section: the core's bounds of the data path and the server's bounds of the gRPC
/// port, side by side in one section whose keys are unchanged (`limits.max_streams`,
/// `limits.max_connections`).
///
/// It is read through [`LimitsSection`], one flat struct with every key: serde's `flatten` would
/// accept unknown keys silently (it cannot be combined with `deny_unknown_fields`) and would
/// lose the key's name from a bad value's error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(from = "LimitsSection", into = "LimitsSection")]
pub struct LimitsConfig {
    pub core: Limits,
    pub connections: ConnectionLimits,
}

impl LimitsConfig {
    /// Every bound is positive (`ready_wait_ms` aside); an error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.core.validate()?;
        self.connections.validate()
    }
}

/// Declares [`LimitsSection`] with every field of [`Limits`] and [`ConnectionLimits`] listed
/// once, and the conversions both ways. The struct literals name every field, so a bound added
/// to either type fails to compile until it is listed here.
macro_rules! limits_section {
    (core { $($core:ident: $core_ty:ty,)* } connections { $($conn:ident: $conn_ty:ty,)* }) => {
        /// The keys of `[limits]` as the file and the environment spell them, in the order
        /// unknown-key errors list them. Each is documented on [`Limits`] or [`ConnectionLimits`].
        #[derive(Serialize, Deserialize)]
        #[serde(deny_unknown_fields, default)]
        struct LimitsSection {
            $($core: $core_ty,)*
            $($conn: $conn_ty,)*
        }

        impl From<LimitsConfig> for LimitsSection {
            fn from(limits: LimitsConfig) -> Self {
                Self { $($core: limits.core.$core,)* $($conn: limits.connections.$conn,)* }
            }
        }

        impl From<LimitsSection> for LimitsConfig {
            fn from(section: LimitsSection) -> Self {
                Self {
                    core: Limits { $($core: section.$core,)* },
                    connections: ConnectionLimits { $($conn: section.$conn,)* },
                }
            }
        }
    };
}

limits_section! {
    core {
        tail_max_records: usize,
        tail_max_bytes: usize,
        tail_pool_bytes: usize,
        max_chunk_bytes: usize,
        max_batch_records: usize,
        max_batch_bytes: usize,
        stream_buffer_messages: usize,
        stream_buffer_bytes: usize,
        stream_buffer_total_bytes: usize,
        max_streams: usize,
        max_catchup_readers: usize,
        catchup_prefetch_kbytes: usize,
        progress_interval_ms: u64,
        head_linger_ms: u64,
        ready_wait_ms: u64,
        conflate_max_bytes: usize,
    }
    connections {
        max_request_bytes: usize,
        max_connections: usize,
        handshake_timeout_ms: u64,
        idle_timeout_ms: u64,
        max_streams_per_connection: u32,
    }
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsConfig::default().into()
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

    /// Checks what serde cannot: each section checks itself, then what involves several
    /// (plain text off loopback). An error names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.tracing.validate().map_err(ConfigError)?;
        self.checkpoint.validate().map_err(ConfigError)?;
        self.kafka.validate().map_err(ConfigError)?;
        self.limits.validate().map_err(ConfigError)?;
        self.translators.validate().map_err(ConfigError)?;
        self.tls.validate().map_err(ConfigError)?;
        self.sharding.validate(self.listen).map_err(ConfigError)?;
        self.http.validate().map_err(ConfigError)?;
        self.schemas.validate().map_err(ConfigError)?;
        let fail = |key: &str, why: String| Err(ConfigError(format!("`{key}` {why}")));
        if let Some(topic) = self.schemas.topics.keys().find(|t| !self.kafka.topics.contains(t)) {
            return fail(
                "schemas.topics",
                format!("names {topic:?}, which is not exposed (kafka.topics: {})", self.kafka.topics.join(", ")),
            );
        }
        if !self.tls.enabled() && !self.listen.ip().is_loopback() && !self.allow_plaintext {
            return fail(
                "listen",
                format!(
                    "is {}, not loopback, and TLS is off: set `tls.cert_file` and `tls.key_file`, or `allow_plaintext = true` if plain TCP there is intended",
                    self.listen
                ),
            );
        }
        if let Some(listen) = self.http.listen {
            if !self.tls.enabled() && !listen.ip().is_loopback() && !self.allow_plaintext {
                return fail(
                    "http.listen",
                    format!("is {listen}, not loopback, and TLS is off: set `tls.cert_file` and `tls.key_file`, or `allow_plaintext = true` if plain HTTP there is intended (TLS ends at a proxy or CDN)"),
                );
            }
        }
        if let Some(listen) = self.metrics.listen {
            if !listen.ip().is_loopback() && !self.allow_plaintext {
                return fail(
                    "metrics.listen",
                    format!("is {listen}, not loopback: metrics are plain HTTP; set `allow_plaintext = true` if that is intended"),
                );
            }
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
            assert_eq!(config.limits.core.max_batch_records, 7);
            assert_eq!(config.limits.core.max_chunk_bytes, Limits::default().max_chunk_bytes);
            Ok(())
        });
    }

    #[test]
    fn the_http_section_checks_itself_and_its_listener() {
        figment::Jail::expect_with(|jail| {
            let topics = "[kafka]\ntopics = [\"a\"]\n";
            let file = write(&format!(
                "{topics}[http]\nlisten = \"127.0.0.1:8080\"\ncors_origins = [\"https://app.example.com\"]\n"
            ));
            let config = Config::load(Some(file.path()), &Overrides::default()).unwrap();
            assert_eq!(config.http.listen, Some("127.0.0.1:8080".parse().unwrap()));
            assert_eq!(config.http.chunk_offsets, crate::web::HttpConfig::default().chunk_offsets);
            for (toml, says) in [
                ("[http]\nlisten = \"0.0.0.0:8080\"\n", "`http.listen`"),
                ("[http]\nepoch = \"a_b\"\n", "http.epoch"),
                ("[http]\nchunk_offsets = 0\n", "http.chunk_offsets"),
                ("[http]\ncors_origins = [\"app.example.com\"]\n", "http.cors_origins"),
            ] {
                let file = write(&format!("{topics}{toml}"));
                let err = Config::load(Some(file.path()), &Overrides::default()).unwrap_err().to_string();
                assert!(err.contains(says), "{toml}: {err}");
            }
            jail.set_env("TRIBUTARY__HTTP__CORS_ORIGINS", "[\"*\"]");
            let config = Config::load(Some(write(topics).path()), &Overrides::default()).unwrap();
            assert_eq!(config.http.cors_origins, vec!["*"]);
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
            let file = write("[kafka]\ntopics = [\"a\"]\n[translators]\ncompile_memory_bytes = 1000\n");
            let err = Config::load(Some(file.path()), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("`translators.compile_memory_bytes` must be at least"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn plaintext_off_loopback_and_half_tls_are_rejected() {
        figment::Jail::expect_with(|_| {
            let load = |toml: &str| {
                let file = write(&format!("{toml}\n[kafka]\ntopics = [\"a\"]\n"));
                Config::load(Some(file.path()), &Overrides::default()).map(|_| ()).map_err(|e| e.to_string())
            };
            let err = load("listen = \"0.0.0.0:50051\"\n").unwrap_err();
            assert!(err.contains("`listen`") && err.contains("allow_plaintext"), "{err}");
            assert!(load("listen = \"0.0.0.0:50051\"\nallow_plaintext = true\n").is_ok());
            let err = load("[tls]\ncert_file = \"c.pem\"\n").unwrap_err();
            assert!(err.contains("`tls.cert_file` and `tls.key_file` go together"), "{err}");
            let err = load("[metrics]\nlisten = \"0.0.0.0:9464\"\n").unwrap_err();
            assert!(err.contains("`metrics.listen`"), "{err}");
            let err = load("[tls]\nclient_ca_file = \"ca.pem\"\n").unwrap_err();
            assert!(err.contains("`tls.client_ca_file`"), "{err}");
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
            assert_eq!(config.limits.core.max_streams, 7);
            assert_eq!(config.kafka.topics, vec!["x", "y"]);
            jail.set_env("TRIBUTARY__LIMITS__MAX_STREAM", "7");
            let err = Config::load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("max_stream") && err.contains("unknown field"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn connection_limits_share_the_limits_section() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("t.toml", "[kafka]\ntopics = [\"a\"]\n[limits]\nmax_connections = 7\nmax_streams = 5\n")?;
            jail.set_env("TRIBUTARY__LIMITS__IDLE_TIMEOUT_MS", "9");
            let config = Config::load(Some(Path::new("t.toml")), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(config.limits.connections.max_connections, 7);
            assert_eq!(config.limits.connections.idle_timeout_ms, 9);
            assert_eq!(config.limits.core.max_streams, 5);
            assert_eq!(config.limits.connections.handshake_timeout_ms, 10_000, "the others keep their defaults");
            let load = |toml: &str| {
                let file = write(&format!("[kafka]\ntopics = [\"a\"]\n[limits]\n{toml}\n"));
                Config::load(Some(file.path()), &Overrides::default()).unwrap_err().to_string()
            };
            let err = load("max_connections = 0");
            assert!(err.contains("`limits.max_connections` must be greater than 0"), "{err}");
            let err = load("max_streams_per_connection = -1");
            assert!(err.contains("limits.max_streams_per_connection"), "{err}");
            let err = load("max_connection = 1");
            assert!(err.contains("unknown field") && err.contains("max_connection`"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn sharding_is_off_by_default_and_its_bad_values_are_named() {
        figment::Jail::expect_with(|jail| {
            let config = Config::load(
                None,
                &Overrides {
                    kafka: KafkaOverrides { topics: Some(vec!["a".into()]), ..Default::default() },
                    ..Default::default()
                },
            )
            .map_err(|e| e.to_string())?;
            assert!(!config.sharding.enabled());
            jail.create_file("t.toml", "[kafka]\ntopics = [\"a\"]\n")?;
            jail.set_env("TRIBUTARY__SHARDING__GROUP", "fleet");
            let err = Config::load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("`sharding.instance_id` is required"), "{err}");
            jail.set_env("TRIBUTARY__SHARDING__INSTANCE_ID", "gw-0");
            jail.set_env("TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS", "7000");
            let config = Config::load(Some(Path::new("t.toml")), &Overrides::default()).map_err(|e| e.to_string())?;
            assert_eq!(
                (config.sharding.group.as_deref(), config.sharding.instance_id.as_deref()),
                (Some("fleet"), Some("gw-0"))
            );
            assert_eq!(config.sharding.session_timeout_ms, 7000);
            jail.set_env("TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS", "soon");
            let err = Config::load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("sharding.session_timeout_ms"), "{err}");
            jail.set_env("TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS", "7000");
            jail.set_env("TRIBUTARY__SHARDING__ADVERTIZE", "h:1");
            let err = Config::load(Some(Path::new("t.toml")), &Overrides::default()).unwrap_err().to_string();
            assert!(err.contains("unknown field") && err.contains("advertize"), "{err}");
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

//! Configuration: defaults, then a TOML file, then `TRIBUTARY__SECTION__KEY` environment
//! variables, then command-line flags; validated once at start. Each section is defined by the
//! crate it configures (`[kafka]` by tributary-kafka, `[limits]` by the core, `[translators]` by
//! tributary-wasm); this module puts them together.

use std::{net::SocketAddr, path::Path};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use serde::{Deserialize, Serialize};
pub use tributary_core::Limits;
pub use tributary_kafka::KafkaConfig;
pub use tributary_wasm::TranslatorsConfig;

pub use crate::{
    auth::AuthConfig,
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
    /// Bounds on memory, message sizes and concurrency.
    pub limits: Limits,
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
            limits: Limits::default(),
            translators: TranslatorsConfig::default(),
            tls: TlsConfig::default(),
            auth: AuthConfig::default(),
            metrics: MetricsConfig::default(),
            tracing: crate::logs::TracingConfig::default(),
            allow_plaintext: false,
        }
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
        self.tracing.validate().map_err(ConfigError)?;
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
            ("limits.stream_buffer_bytes", l.stream_buffer_bytes),
            ("limits.max_streams", l.max_streams),
            ("limits.max_catchup_readers", l.max_catchup_readers),
            ("limits.catchup_prefetch_kbytes", l.catchup_prefetch_kbytes),
            ("limits.stream_buffer_total_bytes", l.stream_buffer_total_bytes),
            ("limits.max_request_bytes", l.max_request_bytes),
            ("limits.max_connections", l.max_connections),
            ("limits.handshake_timeout_ms", l.handshake_timeout_ms as usize),
            ("limits.idle_timeout_ms", l.idle_timeout_ms as usize),
            ("limits.max_streams_per_connection", l.max_streams_per_connection as usize),
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
            ("translators.output_records", t.output_records),
            ("translators.max_component_bytes", t.max_component_bytes),
            ("translators.max_instances", t.max_instances as usize),
            ("translators.batch_records", t.batch_records),
            ("translators.max_concurrent_uploads", t.max_concurrent_uploads),
            ("translators.upload_timeout_ms", t.upload_timeout_ms as usize),
            ("translators.compile_timeout_ms", t.compile_timeout_ms as usize),
        ] {
            if value == 0 {
                return fail(key, "must be greater than 0");
            }
        }
        // The compiler process itself (an engine, a few threads) needs some tens of MiB.
        if t.compile_memory_bytes < 64 << 20 {
            return fail("translators.compile_memory_bytes", "must be at least 67108864 (64 MiB)");
        }
        let tls = &self.tls;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return fail("tls.cert_file", "and `tls.key_file` go together: set both to serve TLS");
        }
        if tls.client_ca_file.is_some() && !tls.enabled() {
            return fail("tls.client_ca_file", "needs `tls.cert_file` and `tls.key_file`: mutual TLS is TLS first");
        }
        if !tls.enabled() && !self.listen.ip().is_loopback() && !self.allow_plaintext {
            return fail(
                "listen",
                &format!(
                    "is {}, not loopback, and TLS is off: set `tls.cert_file` and `tls.key_file`, or `allow_plaintext = true` if plain TCP there is intended",
                    self.listen
                ),
            );
        }
        if let Some(listen) = self.metrics.listen {
            if !listen.ip().is_loopback() && !self.allow_plaintext {
                return fail(
                    "metrics.listen",
                    &format!("is {listen}, not loopback: metrics are plain HTTP; set `allow_plaintext = true` if that is intended"),
                );
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

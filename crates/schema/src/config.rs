//! The `[schemas]` section: where the registry is, which topics' values are decoded, and the
//! bounds of decoding.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tributary_core::decode::OnError;

/// Schema Registry decoding. Off unless `topics` names a topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchemasConfig {
    /// The registry's Confluent-compatible API: `http://host:8081` for Confluent's registry,
    /// `http://host:8080/apis/ccompat/v7` for Apicurio's. `https://` is verified against the
    /// public web roots.
    pub registry: String,
    /// HTTP basic authentication for the registry (both or neither).
    pub username: Option<String>,
    pub password: Option<String>,
    /// How long one request to the registry may take.
    pub timeout_ms: u64,
    /// How long a failed lookup (registry down, schema not found) is remembered: no request per
    /// record while the registry is down, and a schema registered late is found within this. Also
    /// how often ingest tries again a record it stopped at (`on_error = "fail"`).
    pub retry_ms: u64,
    /// Most schemas kept parsed; past it the cache starts over (schemas are asked again).
    pub max_schemas: usize,
    /// Largest schema the registry may return; a larger one is refused (`SCHEMA_UNSUPPORTED`).
    pub max_schema_bytes: usize,
    /// Largest JSON a value decodes to; a larger one is an error (`SCHEMA_MISMATCH`).
    pub max_value_bytes: usize,
    /// The topics whose values are decoded, by name, each with what happens to a value that
    /// cannot be decoded.
    pub topics: BTreeMap<String, TopicSchemas>,
}

/// How one topic's values are decoded.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicSchemas {
    /// `fail` (the default: nothing is lost) or `skip`.
    pub on_error: OnError,
}

impl Default for SchemasConfig {
    fn default() -> Self {
        Self {
            registry: String::new(),
            username: None,
            password: None,
            timeout_ms: 2_000,
            retry_ms: 5_000,
            max_schemas: 1_000,
            max_schema_bytes: 1 << 20,
            max_value_bytes: 8 << 20,
            topics: BTreeMap::new(),
        }
    }
}

impl SchemasConfig {
    /// Whether any topic's values are decoded.
    pub fn enabled(&self) -> bool {
        !self.topics.is_empty()
    }

    /// An error names the key to fix.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled() {
            return Ok(());
        }
        if !(self.registry.starts_with("http://") || self.registry.starts_with("https://")) {
            return Err(format!(
                "schemas.registry must be the registry's http:// or https:// URL when schemas.topics names a topic (got {:?})",
                self.registry
            ));
        }
        if self.username.is_some() != self.password.is_some() {
            return Err("schemas.username and schemas.password go together: set both or neither".into());
        }
        for (key, value) in [
            ("timeout_ms", self.timeout_ms),
            ("retry_ms", self.retry_ms),
            ("max_schemas", self.max_schemas as u64),
            ("max_schema_bytes", self.max_schema_bytes as u64),
            ("max_value_bytes", self.max_value_bytes as u64),
        ] {
            if value == 0 {
                return Err(format!("schemas.{key} must be positive"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding_needs_a_registry_url_and_positive_bounds() {
        let mut config = SchemasConfig::default();
        assert_eq!(config.validate(), Ok(()), "off: nothing to check");
        config.topics.insert("orders".into(), TopicSchemas::default());
        assert!(config.validate().unwrap_err().contains("schemas.registry"));
        config.registry = "http://127.0.0.1:8081".into();
        assert_eq!(config.validate(), Ok(()));
        config.username = Some("u".into());
        assert!(config.validate().unwrap_err().contains("schemas.password"));
        config.password = Some("p".into());
        config.retry_ms = 0;
        assert_eq!(config.validate().unwrap_err(), "schemas.retry_ms must be positive");
    }

    #[test]
    fn a_topic_fails_on_an_undecodable_value_unless_told_to_skip() {
        let config: SchemasConfig =
            serde_json::from_str(r#"{"registry": "http://r", "topics": {"a": {}, "b": {"on_error": "skip"}}}"#)
                .unwrap();
        assert_eq!(config.topics["a"].on_error, OnError::Fail);
        assert_eq!(config.topics["b"].on_error, OnError::Skip);
        let wrong = serde_json::from_str::<SchemasConfig>(r#"{"topics": {"a": {"on_error": "drop"}}}"#);
        assert!(wrong.unwrap_err().to_string().contains("unknown variant `drop`"));
    }
}

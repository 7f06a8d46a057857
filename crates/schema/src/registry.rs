//! [`Registry`]: the core's [`Decode`] port over a schema registry's Confluent-compatible API.
//! Schemas are fetched by id once and kept parsed; a failed lookup is remembered for
//! `retry_ms`, so a registry that is down costs one request per schema per `retry_ms`, not one
//! per record.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use serde::Deserialize;
use tributary_core::decode::{Decode, DecodeError, DecodeFailure, OnError};

use crate::{config::SchemasConfig, formats::Schema};

/// Decodes the configured topics' values with the schemas their framing names.
pub struct Registry {
    config: SchemasConfig,
    agent: ureq::Agent,
    /// `Authorization` for basic authentication.
    authorization: Option<String>,
    cache: Mutex<Cache>,
    /// One lookup at a time: the ingest thread and the readers that meet a new schema together
    /// ask the registry once.
    fetching: Mutex<()>,
}

#[derive(Default)]
struct Cache {
    schemas: HashMap<u32, Arc<Schema>>,
    /// Lookups that failed, until when they are not asked again.
    failed: HashMap<u32, (Instant, DecodeError)>,
}

/// What `GET /schemas/ids/{id}` returns.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    schema: String,
    /// `AVRO` when absent.
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

impl Registry {
    /// A decoder for `config` (validated); nothing is asked of the registry until a value is.
    pub fn new(config: &SchemasConfig) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(config.timeout_ms)))
            .http_status_as_error(false)
            .build()
            .into();
        let authorization = match (&config.username, &config.password) {
            (Some(user), Some(password)) => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            _ => None,
        };
        Self { config: config.clone(), agent, authorization, cache: Mutex::default(), fetching: Mutex::default() }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schema with `id`, from the cache or the registry.
    fn schema(&self, id: u32) -> Result<Arc<Schema>, DecodeError> {
        if let Some(schema) = self.known(id)? {
            return Ok(schema);
        }
        let _one = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
        // Another caller may have fetched it meanwhile.
        if let Some(schema) = self.known(id)? {
            return Ok(schema);
        }
        metrics::counter!("tributary_schema_lookups_total").increment(1);
        let fetched = self.fetch(id);
        let mut cache = self.cache();
        match fetched {
            Ok(schema) => {
                let schema = Arc::new(schema);
                if cache.schemas.len() >= self.config.max_schemas {
                    cache.schemas.clear();
                }
                cache.schemas.insert(id, schema.clone());
                cache.failed.remove(&id);
                Ok(schema)
            }
            Err(e) => {
                if cache.failed.len() >= self.config.max_schemas {
                    cache.failed.clear();
                }
                let until = Instant::now() + Duration::from_millis(self.config.retry_ms);
                cache.failed.insert(id, (until, e.clone()));
                Err(e)
            }
        }
    }

    /// The cached schema, the remembered failure, or `None` to ask the registry.
    fn known(&self, id: u32) -> Result<Option<Arc<Schema>>, DecodeError> {
        let cache = self.cache();
        if let Some(schema) = cache.schemas.get(&id) {
            return Ok(Some(schema.clone()));
        }
        match cache.failed.get(&id) {
            Some((until, e)) if Instant::now() < *until => Err(e.clone()),
            _ => Ok(None),
        }
    }

    fn fetch(&self, id: u32) -> Result<Schema, DecodeError> {
        let url = format!("{}/schemas/ids/{id}", self.config.registry.trim_end_matches('/'));
        let unavailable = |why: String| {
            DecodeError::new(DecodeFailure::RegistryUnavailable, format!("the schema registry at {url} {why}"))
        };
        let mut request =
            self.agent.get(&url).header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let mut response = request.call().map_err(|e| unavailable(format!("did not answer: {e}")))?;
        let status = response.status().as_u16();
        let body =
            response.body_mut().with_config().limit(self.config.max_schema_bytes as u64).read_to_string().map_err(
                |e| match status {
                    200 => DecodeError::new(
                        DecodeFailure::Unsupported,
                        format!(
                            "schema {id} could not be read (larger than schemas.max_schema_bytes = {}?): {e}",
                            self.config.max_schema_bytes
                        ),
                    ),
                    _ => unavailable(format!("answered {status} and its body could not be read: {e}")),
                },
            )?;
        match status {
            200 => {}
            404 => {
                return Err(DecodeError::new(
                    DecodeFailure::UnknownSchema,
                    format!(
                        "schema id {id} is not in the registry at {} (asked again after schemas.retry_ms)",
                        self.config.registry
                    ),
                ))
            }
            _ => return Err(unavailable(format!("answered {status}: {}", body.chars().take(200).collect::<String>()))),
        }
        let reply: Reply = serde_json::from_str(&body)
            .map_err(|e| unavailable(format!("answered something that is not a schema: {e}")))?;
        if !reply.references.is_empty() {
            return Err(DecodeError::new(
                DecodeFailure::Unsupported,
                format!(
                    "schema {id} refers to other schemas ({} references), which the gateway does not decode",
                    reply.references.len()
                ),
            ));
        }
        Schema::parse(id, reply.schema_type.as_deref().unwrap_or("AVRO"), &reply.schema)
    }
}

/// Confluent's framing: a zero byte, then the schema id in 4 bytes, big-endian.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), DecodeError> {
    match value {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(DecodeError::new(
            DecodeFailure::NotFramed,
            format!(
                "the value is not framed by a schema registry (it must start with a zero byte and a 4-byte schema id; it starts with {:02x?})",
                &value[..value.len().min(5)]
            ),
        )),
    }
}

impl Decode for Registry {
    fn on_error(&self, topic: &str) -> Option<OnError> {
        self.config.topics.get(topic).map(|t| t.on_error)
    }

    fn decode(&self, _topic: &str, value: &[u8]) -> Result<Vec<u8>, DecodeError> {
        let (id, payload) = unframe(value)?;
        let json = self.schema(id)?.decode(id, payload)?;
        if json.len() > self.config.max_value_bytes {
            return Err(DecodeError::new(
                DecodeFailure::Mismatch,
                format!(
                    "the value decodes to {} bytes of JSON, more than schemas.max_value_bytes = {}",
                    json.len(),
                    self.config.max_value_bytes
                ),
            ));
        }
        Ok(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TopicSchemas;

    #[test]
    fn the_framing_is_a_zero_byte_and_a_big_endian_id() {
        assert_eq!(unframe(&[0, 0, 0, 1, 2, 9, 9]).unwrap(), (258, &[9, 9][..]));
        assert_eq!(unframe(&[0, 0, 0, 0, 7]).unwrap(), (7, &[][..]));
        for bad in [&b"{\"a\":1}"[..], &[1, 0, 0, 0, 1], &[0, 0, 0]] {
            let e = unframe(bad).unwrap_err();
            assert_eq!(e.failure, DecodeFailure::NotFramed);
            assert!(e.message.contains("zero byte and a 4-byte schema id"), "{}", e.message);
        }
    }

    /// A registry nobody listens at: refused at once.
    fn unreachable_registry() -> Registry {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut config =
            SchemasConfig { registry: format!("http://127.0.0.1:{port}"), retry_ms: 60_000, ..Default::default() };
        config.topics.insert("t".into(), TopicSchemas::default());
        Registry::new(&config)
    }

    #[test]
    fn a_registry_that_is_down_is_asked_once_per_retry_period_and_named_in_the_error() {
        let registry = unreachable_registry();
        assert_eq!(registry.on_error("t"), Some(OnError::Fail));
        assert_eq!(registry.on_error("other"), None, "not a decoded topic");
        let e = registry.decode("t", &[0, 0, 0, 0, 5, 1]).unwrap_err();
        assert_eq!(e.failure, DecodeFailure::RegistryUnavailable);
        assert!(e.message.contains("did not answer"), "{}", e.message);
        assert!(e.message.contains("/schemas/ids/5"), "{}", e.message);
        // Remembered: the same error without a request (no wait, no new message).
        let again = registry.decode("t", &[0, 0, 0, 0, 5, 1]).unwrap_err();
        assert_eq!(again, e);
        assert!(registry.cache().failed.contains_key(&5));
    }
}

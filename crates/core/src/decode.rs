//! The port a schema decoder plugs into ([`Decode`]): values of A's that a schema registry frames
//! (Confluent's wire format: a zero byte, the schema's id, the encoded value) become JSON where
//! they are read from Kafka, so that the view, filters, translators and every reader see JSON.
//! `tributary-schema` implements it against a registry's Confluent-compatible API.

use serde::{Deserialize, Serialize};

use crate::record::PartitionOffset;

/// What happens to a record whose value cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Nothing is lost: ingest of the partition stops at the record and tries it again every
    /// `schemas.retry_ms` (a schema registered late, a registry back up); a reader that reaches it
    /// ends with an error naming it.
    #[default]
    Fail,
    /// The record is left out, as a record a filter refuses is: positions move past it. Each one
    /// is counted and logged (`schema_decode_skipped`).
    Skip,
}

/// Why a value could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeFailure {
    /// The value does not start with the registry's framing (a zero byte and a schema id).
    NotFramed,
    /// The registry has no schema with the value's id.
    UnknownSchema,
    /// The registry could not be asked (down, slow, refused): may pass on a later try.
    RegistryUnavailable,
    /// The value's bytes do not match its schema.
    Mismatch,
    /// A schema of a kind, or with features, the gateway does not decode.
    Unsupported,
}

impl DecodeFailure {
    /// The stable name used in statuses, logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            DecodeFailure::NotFramed => "SCHEMA_NOT_FRAMED",
            DecodeFailure::UnknownSchema => "SCHEMA_UNKNOWN",
            DecodeFailure::RegistryUnavailable => "SCHEMA_REGISTRY_UNAVAILABLE",
            DecodeFailure::Mismatch => "SCHEMA_MISMATCH",
            DecodeFailure::Unsupported => "SCHEMA_UNSUPPORTED",
        }
    }
}

/// A value that could not be decoded: why, and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    pub failure: DecodeFailure,
    pub message: String,
}

impl DecodeError {
    pub fn new(failure: DecodeFailure, message: impl Into<String>) -> Self {
        Self { failure, message: message.into() }
    }

    /// The error a reader ends with at the record at `at`.
    pub fn at(self, at: PartitionOffset) -> crate::Error {
        crate::Error::Undecodable { at, failure: self.failure, message: self.message, resume: Vec::new() }
    }
}

/// Decodes the values of the topics configured for it.
pub trait Decode: Send + Sync + 'static {
    /// What happens to an undecodable value of `topic`; `None` when its values are not decoded.
    fn on_error(&self, topic: &str) -> Option<OnError>;

    /// The JSON of `value`, a framed value of `topic`. Blocking: a schema not known yet is asked
    /// of the registry (bounded by its timeout), so it is called from blocking threads or, in a
    /// catch-up reader, at most once per schema.
    fn decode(&self, topic: &str, value: &[u8]) -> Result<Vec<u8>, DecodeError>;
}

//! The domain error and its one mapping to gRPC status codes and machine-readable details.

use prost::Message;
use tonic::{Code, Status};
use tonic_types::pb as rpc;

use crate::{
    pb::{offsets_detail::Kind, OffsetsDetail, PartitionOffset},
    translate::Failure,
};

/// Domain of the `google.rpc.ErrorInfo` details this gateway attaches.
pub const ERROR_DOMAIN: &str = "tributary.v1";

/// Everything that can go wrong for a caller. Adding a variant forces a decision about its code.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// A malformed request: `field` names what to fix.
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// A topic that this gateway does not expose.
    #[error("topic '{topic}' is not exposed by this gateway (exposed: {})", exposed.join(", "))]
    UnknownTopic { topic: String, exposed: Vec<String> },
    /// A partition the topic does not have.
    #[error("topic '{topic}' has no partition {partition} (it has {partitions}: 0..{partitions})")]
    UnknownPartition { topic: String, partition: i32, partitions: i32 },
    /// Offsets below the earliest retained offset: the client must re-snapshot.
    #[error(
        "offset {requested} of {topic}/{partition} is no longer retained (earliest is {earliest}); take a new snapshot"
    )]
    TooOld { topic: String, partition: i32, requested: i64, earliest: i64, earliest_offsets: Vec<PartitionOffset> },
    /// An offset beyond what Kafka has.
    #[error("offset {requested} of {topic}/{partition} is beyond the end of the partition (latest is {latest})")]
    BeyondEnd { topic: String, partition: i32, requested: i64, latest: i64, latest_offsets: Vec<PartitionOffset> },
    /// The view has not caught up yet.
    #[error("the view is still loading ({percent}% caught up); retry shortly")]
    NotReady { percent: u32 },
    /// Kafka could not be reached or answered with an error.
    #[error("kafka: {message}")]
    Kafka { message: String, resume: Vec<PartitionOffset> },
    /// A bound was reached.
    #[error("{0}")]
    ResourceExhausted(String),
    /// The server is shutting down; resume elsewhere or later from `resume`.
    #[error("the gateway is shutting down; resume from the offsets in the details")]
    ShuttingDown { resume: Vec<PartitionOffset> },
    /// A translator name, or a digest of it, that the registry does not have.
    #[error("{}", unknown_translator(name, digest, known))]
    UnknownTranslator { name: String, digest: Option<String>, known: Vec<String> },
    /// A translator's `init` rejected the configuration.
    #[error("translator '{name}' ({digest}) rejected its configuration: {message}")]
    TranslatorConfig { name: String, digest: String, message: String },
    /// A translator call failed; only the calls using that translator end.
    #[error("translator '{name}' ({digest}) {failure}{}", at.as_deref().map(|(t, p, o)| format!(" on {t}/{p}@{o}")).unwrap_or_default())]
    Translator {
        name: String,
        digest: String,
        failure: crate::translate::Failure,
        /// The record the call failed on (boxed: keeps every `Result<_, Error>` small).
        at: Option<Box<(String, i32, i64)>>,
        resume: Vec<PartitionOffset>,
    },
    /// A reserved part of the API that this version does not serve yet.
    #[error("{0}")]
    Unimplemented(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), message: message.into() }
    }

    /// The gRPC code of this error: one exhaustive match.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => Code::NotFound,
            Error::TooOld { .. } | Error::BeyondEnd { .. } => Code::OutOfRange,
            Error::NotReady { .. } | Error::Kafka { .. } | Error::ShuttingDown { .. } => Code::Unavailable,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::UnknownTranslator { .. } => Code::NotFound,
            Error::TranslatorConfig { .. } => Code::InvalidArgument,
            Error::Translator { failure, .. } => match failure {
                Failure::Deadline | Failure::Memory | Failure::Output(_) | Failure::Instances(_) => {
                    Code::ResourceExhausted
                }
                Failure::Trap(_) | Failure::Error(_) => Code::FailedPrecondition,
            },
            Error::Internal(_) => Code::Internal,
        }
    }

    /// A stable machine-readable reason for `google.rpc.ErrorInfo`.
    fn reason(&self) -> &'static str {
        match self {
            Error::InvalidArgument { .. } => "INVALID_ARGUMENT",
            Error::UnknownTopic { .. } => "UNKNOWN_TOPIC",
            Error::UnknownPartition { .. } => "UNKNOWN_PARTITION",
            Error::TooOld { .. } => "OFFSET_TOO_OLD",
            Error::BeyondEnd { .. } => "OFFSET_BEYOND_END",
            Error::NotReady { .. } => "VIEW_LOADING",
            Error::Kafka { .. } => "KAFKA_UNAVAILABLE",
            Error::ResourceExhausted(_) => "LIMIT_REACHED",
            Error::ShuttingDown { .. } => "SHUTTING_DOWN",
            Error::Unimplemented(_) => "NOT_IMPLEMENTED",
            Error::UnknownTranslator { .. } => "UNKNOWN_TRANSLATOR",
            Error::TranslatorConfig { .. } => "TRANSLATOR_CONFIG_REJECTED",
            Error::Translator { failure, .. } => match failure {
                Failure::Trap(_) => "TRANSLATOR_TRAP",
                Failure::Deadline => "TRANSLATOR_DEADLINE",
                Failure::Memory => "TRANSLATOR_MEMORY",
                Failure::Output(_) => "TRANSLATOR_OUTPUT",
                Failure::Error(_) => "TRANSLATOR_ERROR",
                Failure::Instances(_) => "TRANSLATOR_INSTANCES",
            },
            Error::Internal(_) => "INTERNAL",
        }
    }

    /// Key-value facts for `ErrorInfo.metadata`.
    fn metadata(&self) -> std::collections::HashMap<String, String> {
        let mut m = std::collections::HashMap::new();
        match self {
            Error::Translator { name, digest, failure, at, .. } => {
                m.insert("translator".into(), name.clone());
                m.insert("digest".into(), digest.clone());
                m.insert("reason".into(), failure.reason().into());
                if let Some((t, p, o)) = at.as_deref() {
                    m.insert("topic".into(), t.clone());
                    m.insert("partition".into(), p.to_string());
                    m.insert("offset".into(), o.to_string());
                }
            }
            Error::TranslatorConfig { name, digest, .. } => {
                m.insert("translator".into(), name.clone());
                m.insert("digest".into(), digest.clone());
            }
            Error::UnknownTranslator { name, .. } => {
                m.insert("translator".into(), name.clone());
            }
            _ => {}
        }
        m
    }

    /// Details beyond `ErrorInfo`: which field is wrong, which offsets to use.
    fn details(&self) -> Vec<prost_types::Any> {
        let offsets = |kind: Kind, offsets: &[PartitionOffset]| {
            any("tributary.v1.OffsetsDetail", &OffsetsDetail { kind: kind as i32, offsets: offsets.to_vec() })
        };
        match self {
            Error::InvalidArgument { field, message } => vec![any(
                "google.rpc.BadRequest",
                &rpc::BadRequest {
                    field_violations: vec![rpc::bad_request::FieldViolation {
                        field: field.clone(),
                        description: message.clone(),
                        ..Default::default()
                    }],
                },
            )],
            Error::TooOld { earliest_offsets, .. } => vec![offsets(Kind::Earliest, earliest_offsets)],
            Error::BeyondEnd { latest_offsets, .. } => vec![offsets(Kind::Latest, latest_offsets)],
            Error::Kafka { resume, .. } | Error::ShuttingDown { resume } | Error::Translator { resume, .. }
                if !resume.is_empty() =>
            {
                vec![offsets(Kind::Resume, resume)]
            }
            _ => Vec::new(),
        }
    }

    /// Attaches the position a stream reached, so that the client can resume without a gap.
    pub fn with_resume(self, position: Vec<PartitionOffset>) -> Self {
        match self {
            Error::Kafka { message, .. } => Error::Kafka { message, resume: position },
            Error::ShuttingDown { .. } => Error::ShuttingDown { resume: position },
            Error::Translator { name, digest, failure, at, .. } => {
                Error::Translator { name, digest, failure, at, resume: position }
            }
            other => other,
        }
    }
}

fn unknown_translator(name: &str, digest: &Option<String>, known: &[String]) -> String {
    match digest {
        Some(d) => format!("translator '{name}' has no version with digest '{d}' (versions: {})", known.join(", ")),
        None if known.is_empty() => format!("no translator named '{name}'; none is uploaded yet"),
        None => format!("no translator named '{name}' (known: {})", known.join(", ")),
    }
}

/// The `google.rpc.ErrorInfo` metadata of a status from this gateway.
pub fn error_metadata(status: &Status) -> std::collections::HashMap<String, String> {
    decode_details(status)
        .and_then(|s| {
            s.details
                .iter()
                .find(|d| d.type_url.ends_with("/google.rpc.ErrorInfo"))
                .and_then(|d| rpc::ErrorInfo::decode(d.value.as_slice()).ok())
        })
        .map(|i| i.metadata)
        .unwrap_or_default()
}

fn any(type_name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{type_name}"), value: message.encode_to_vec() }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        let code = error.code();
        let message = error.to_string();
        let mut details = vec![any(
            "google.rpc.ErrorInfo",
            &rpc::ErrorInfo { reason: error.reason().into(), domain: ERROR_DOMAIN.into(), metadata: error.metadata() },
        )];
        details.extend(error.details());
        let status = rpc::Status { code: code as i32, message: message.clone(), details };
        Status::with_details(code, message, status.encode_to_vec().into())
    }
}

/// Decodes the details of a status produced by this gateway (used by tests and the Rust client).
pub fn decode_details(status: &Status) -> Option<rpc::Status> {
    rpc::Status::decode(status.details()).ok()
}

/// The offsets carried by a status from this gateway, with their kind.
pub fn offsets_detail(status: &Status) -> Option<OffsetsDetail> {
    decode_details(status)?
        .details
        .iter()
        .find(|d| d.type_url.ends_with("/tributary.v1.OffsetsDetail"))
        .and_then(|d| OffsetsDetail::decode(d.value.as_slice()).ok())
}

/// The `reason` of the status's `google.rpc.ErrorInfo`.
pub fn reason(status: &Status) -> Option<String> {
    decode_details(status)?
        .details
        .iter()
        .find(|d| d.type_url.ends_with("/google.rpc.ErrorInfo"))
        .and_then(|d| rpc::ErrorInfo::decode(d.value.as_slice()).ok())
        .map(|info| info.reason)
}

/// The first field violation of the status's `google.rpc.BadRequest`.
pub fn bad_field(status: &Status) -> Option<String> {
    decode_details(status)?
        .details
        .iter()
        .find(|d| d.type_url.ends_with("/google.rpc.BadRequest"))
        .and_then(|d| rpc::BadRequest::decode(d.value.as_slice()).ok())
        .and_then(|b| b.field_violations.into_iter().next())
        .map(|v| v.field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_old_carries_earliest_offsets() {
        let earliest = vec![PartitionOffset { topic: "t".into(), partition: 0, offset: 42 }];
        let status = Status::from(Error::TooOld {
            topic: "t".into(),
            partition: 0,
            requested: 3,
            earliest: 42,
            earliest_offsets: earliest.clone(),
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert!(status.message().contains("earliest is 42"));
        assert_eq!(reason(&status).as_deref(), Some("OFFSET_TOO_OLD"));
        let detail = offsets_detail(&status).unwrap();
        assert_eq!(detail.kind(), Kind::Earliest);
        assert_eq!(detail.offsets, earliest);
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = Status::from(Error::invalid("from_offsets[2].offset", "must be >= 0"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_field(&status).as_deref(), Some("from_offsets[2].offset"));
    }
}

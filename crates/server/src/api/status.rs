//! The core's error as a gRPC status: the code, a stable `google.rpc.ErrorInfo` reason with
//! metadata, and details a program can act on (which field is wrong, which offsets to use). One
//! exhaustive match per question, so a new error variant forces a decision.

use std::collections::HashMap;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::pb as rpc;
use tributary_core::{Error, SubscriptionProblem, TranslatorFailure};

use crate::{
    api::convert,
    pb::{offsets_detail::Kind, OffsetsDetail},
};

/// Domain of the `google.rpc.ErrorInfo` details this gateway attaches.
pub const ERROR_DOMAIN: &str = "tributary.v1";

/// The gRPC code of an error.
pub fn code(error: &Error) -> Code {
    match error {
        Error::InvalidArgument { .. } | Error::TranslatorConfig { .. } => Code::InvalidArgument,
        Error::UnknownTopic { .. } | Error::UnknownPartition { .. } | Error::UnknownTranslator { .. } => Code::NotFound,
        Error::TooOld { .. } | Error::BeyondEnd { .. } => Code::OutOfRange,
        Error::NotReady { .. } | Error::Kafka { .. } | Error::ShuttingDown { .. } => Code::Unavailable,
        Error::ResourceExhausted(_) => Code::ResourceExhausted,
        Error::Unimplemented(_) => Code::Unimplemented,
        Error::Translator { failure, .. } => match failure {
            TranslatorFailure::Deadline
            | TranslatorFailure::Memory
            | TranslatorFailure::Output(_)
            | TranslatorFailure::Instances(_) => Code::ResourceExhausted,
            TranslatorFailure::Trap(_) | TranslatorFailure::Error(_) => Code::FailedPrecondition,
        },
        Error::TranslatorUnavailable { .. } => Code::DataLoss,
        Error::Subscription { problem, .. } => match problem {
            SubscriptionProblem::Unknown => Code::NotFound,
            _ => Code::FailedPrecondition,
        },
        Error::SubscriptionTakenOver { .. } => Code::Aborted,
        Error::Unauthenticated(_) => Code::Unauthenticated,
        Error::PermissionDenied(_) => Code::PermissionDenied,
        Error::Internal(_) => Code::Internal,
    }
}

/// A stable machine-readable reason for `google.rpc.ErrorInfo`.
pub fn reason_of(error: &Error) -> &'static str {
    match error {
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
            TranslatorFailure::Trap(_) => "TRANSLATOR_TRAP",
            TranslatorFailure::Deadline => "TRANSLATOR_DEADLINE",
            TranslatorFailure::Memory => "TRANSLATOR_MEMORY",
            TranslatorFailure::Output(_) => "TRANSLATOR_OUTPUT",
            TranslatorFailure::Error(_) => "TRANSLATOR_ERROR",
            TranslatorFailure::Instances(_) => "TRANSLATOR_INSTANCES",
        },
        Error::TranslatorUnavailable { .. } => "TRANSLATOR_DAMAGED",
        Error::Subscription { problem, .. } => match problem {
            SubscriptionProblem::Unknown => "UNKNOWN_SUBSCRIPTION",
            SubscriptionProblem::NoPosition => "NO_COMMITTED_POSITION",
            SubscriptionProblem::TopicsChanged => "SUBSCRIPTION_TOPICS_CHANGED",
            SubscriptionProblem::TranslatorChanged => "SUBSCRIPTION_TRANSLATOR_CHANGED",
        },
        Error::SubscriptionTakenOver { .. } => "SUBSCRIPTION_TAKEN_OVER",
        Error::Unauthenticated(_) => "UNAUTHENTICATED",
        Error::PermissionDenied(_) => "PERMISSION_DENIED",
        Error::Internal(_) => "INTERNAL",
    }
}

/// Key-value facts for `ErrorInfo.metadata`.
fn metadata(error: &Error) -> HashMap<String, String> {
    let mut m = HashMap::new();
    match error {
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
        Error::TranslatorConfig { name, digest, .. } | Error::TranslatorUnavailable { name, digest } => {
            m.insert("translator".into(), name.clone());
            m.insert("digest".into(), digest.clone());
        }
        Error::UnknownTranslator { name, .. } => {
            m.insert("translator".into(), name.clone());
        }
        Error::Subscription { name, .. } | Error::SubscriptionTakenOver { name, .. } => {
            m.insert("subscription".into(), name.clone());
        }
        _ => {}
    }
    m
}

/// Details beyond `ErrorInfo`: which field is wrong, which offsets to use.
fn details(error: &Error) -> Vec<prost_types::Any> {
    let offsets = |kind: Kind, offsets: &[tributary_core::PartitionOffset]| {
        any(
            "tributary.v1.OffsetsDetail",
            &OffsetsDetail { kind: kind as i32, offsets: offsets.iter().map(convert::partition_offset).collect() },
        )
    };
    match error {
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
        Error::Kafka { resume, .. }
        | Error::ShuttingDown { resume }
        | Error::Translator { resume, .. }
        | Error::SubscriptionTakenOver { resume, .. }
            if !resume.is_empty() =>
        {
            vec![offsets(Kind::Resume, resume)]
        }
        _ => Vec::new(),
    }
}

fn any(type_name: &str, message: &impl Message) -> prost_types::Any {
    prost_types::Any { type_url: format!("type.googleapis.com/{type_name}"), value: message.encode_to_vec() }
}

/// The status a client gets for `error`, with its `google.rpc.Status` details.
pub fn status(error: Error) -> Status {
    let code = code(&error);
    let message = error.to_string();
    let mut details = vec![any(
        "google.rpc.ErrorInfo",
        &rpc::ErrorInfo { reason: reason_of(&error).into(), domain: ERROR_DOMAIN.into(), metadata: metadata(&error) },
    )];
    details.extend(self::details(&error));
    let status = rpc::Status { code: code as i32, message: message.clone(), details };
    Status::with_details(code, message, status.encode_to_vec().into())
}

// Reading a status back, for clients of this crate (the CLI, tests).

/// Decodes the details of a status produced by this gateway.
pub fn decode_details(status: &Status) -> Option<rpc::Status> {
    rpc::Status::decode(status.details()).ok()
}

/// The first detail of type `type_name` in the status.
fn detail<M: Message + Default>(status: &Status, type_name: &str) -> Option<M> {
    let suffix = format!("/{type_name}");
    decode_details(status)?
        .details
        .iter()
        .find(|d| d.type_url.ends_with(&suffix))
        .and_then(|d| M::decode(d.value.as_slice()).ok())
}

/// The offsets carried by a status from this gateway, with their kind.
pub fn offsets_detail(status: &Status) -> Option<OffsetsDetail> {
    detail(status, "tributary.v1.OffsetsDetail")
}

/// The `reason` of the status's `google.rpc.ErrorInfo`.
pub fn reason(status: &Status) -> Option<String> {
    detail::<rpc::ErrorInfo>(status, "google.rpc.ErrorInfo").map(|info| info.reason)
}

/// The `google.rpc.ErrorInfo` metadata of a status from this gateway.
pub fn error_metadata(status: &Status) -> HashMap<String, String> {
    detail::<rpc::ErrorInfo>(status, "google.rpc.ErrorInfo").map(|i| i.metadata).unwrap_or_default()
}

/// The first field violation of the status's `google.rpc.BadRequest`.
pub fn bad_field(status: &Status) -> Option<String> {
    detail::<rpc::BadRequest>(status, "google.rpc.BadRequest")
        .and_then(|b| b.field_violations.into_iter().next())
        .map(|v| v.field)
}

#[cfg(test)]
mod tests {
    use tributary_core::PartitionOffset;

    use super::*;

    #[test]
    fn too_old_carries_earliest_offsets() {
        let earliest = vec![PartitionOffset::new("t", 0, 42)];
        let status = status(Error::TooOld {
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
        assert_eq!(detail.offsets, earliest.iter().map(convert::partition_offset).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = status(Error::invalid("from_offsets[2].offset", "must be >= 0"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_field(&status).as_deref(), Some("from_offsets[2].offset"));
    }

    #[test]
    fn a_stream_error_carries_its_resume_offsets_and_translator_facts() {
        let error = Error::Translator {
            name: "m".into(),
            digest: "d".into(),
            failure: TranslatorFailure::Deadline,
            at: Some(Box::new(("t".into(), 1, 7))),
            resume: Vec::new(),
        }
        .with_resume(vec![PartitionOffset::new("t", 1, 7)]);
        let status = status(error);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(reason(&status).as_deref(), Some("TRANSLATOR_DEADLINE"));
        assert_eq!(error_metadata(&status).get("offset").map(String::as_str), Some("7"));
        let detail = offsets_detail(&status).unwrap();
        assert_eq!(detail.kind(), Kind::Resume);
        assert_eq!(detail.offsets.len(), 1);
    }
}

//! The core's error as a gRPC status: the code, a stable `google.rpc.ErrorInfo` reason with
//! metadata, and details a program can act on (which field is wrong, which offsets to use). One
//! exhaustive match per question, so a new error variant forces a decision.

use std::collections::HashMap;

use prost::Message;
use tonic::{Code, Status};
use tonic_types::pb as rpc;
use tributary_core::{decode::DecodeFailure, Error, SubscriptionProblem, TranslatorFailure};

use crate::{
    api::convert,
    pb::{offsets_detail::Kind, OffsetsDetail},
};

/// Domain of the `google.rpc.ErrorInfo` details this gateway attaches.
pub const ERROR_DOMAIN: &str = "tributary.v1";

/// The gRPC code of an error.
pub fn code(error: &Error) -> Code {
    match error {
        // A component over a limit is refused like any other invalid upload: the same bytes are
        // refused every time, so it is no transient shortage for a client to retry.
        Error::InvalidArgument { .. } | Error::TranslatorConfig { .. } | Error::ComponentLimit { .. } => {
            Code::InvalidArgument
        }
        Error::UnknownTopic { .. } | Error::UnknownPartition { .. } | Error::UnknownTranslator { .. } => Code::NotFound,
        Error::TooOld { .. } | Error::BeyondEnd { .. } | Error::AsOfTooOld { .. } => Code::OutOfRange,
        // Held elsewhere: this call cannot succeed here, the client goes to the owner. Held by no
        // one: it moves, and a retry soon finds its new owner.
        Error::PartitionNotHeld { owner: Some(_), .. } => Code::FailedPrecondition,
        Error::PartitionNotHeld { owner: None, .. } => Code::Unavailable,
        Error::NotReady { .. } | Error::Kafka { .. } | Error::ShuttingDown { .. } => Code::Unavailable,
        // A registry that did not answer may answer a retry; a schema or value that is wrong
        // stays wrong until A or the registry fixes it.
        Error::Undecodable { failure: DecodeFailure::RegistryUnavailable, .. } => Code::Unavailable,
        Error::Undecodable { .. } => Code::FailedPrecondition,
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
        Error::AsOfTooOld { .. } => "AS_OF_TOO_OLD",
        Error::BeyondEnd { .. } => "OFFSET_BEYOND_END",
        Error::PartitionNotHeld { owner: Some(_), .. } => "PARTITION_NOT_HELD",
        Error::PartitionNotHeld { owner: None, .. } => "PARTITION_MOVING",
        Error::NotReady { .. } => "VIEW_LOADING",
        Error::Kafka { .. } => "KAFKA_UNAVAILABLE",
        Error::Undecodable { failure, .. } => failure.reason(),
        Error::ResourceExhausted(_) => "LIMIT_REACHED",
        Error::ShuttingDown { .. } => "SHUTTING_DOWN",
        Error::Unimplemented(_) => "NOT_IMPLEMENTED",
        Error::UnknownTranslator { .. } => "UNKNOWN_TRANSLATOR",
        Error::TranslatorConfig { .. } => "TRANSLATOR_CONFIG_REJECTED",
        Error::ComponentLimit { .. } => "COMPONENT_EXCEEDS_LIMIT",
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
pub(crate) fn metadata(error: &Error) -> HashMap<String, String> {
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
        Error::ComponentLimit { limit, requested, allowed, .. } => {
            m.insert("limit".into(), limit.clone());
            m.insert("requested".into(), requested.to_string());
            m.insert("allowed".into(), allowed.to_string());
        }
        Error::Subscription { name, .. } | Error::SubscriptionTakenOver { name, .. } => {
            m.insert("subscription".into(), name.clone());
        }
        Error::AsOfTooOld { topic, partition, requested, earliest, .. } => {
            m.insert("topic".into(), topic.clone());
            m.insert("partition".into(), partition.to_string());
            m.insert("requested".into(), requested.to_string());
            m.insert("earliest".into(), earliest.to_string());
        }
        Error::Undecodable { at, .. } => {
            m.insert("topic".into(), at.topic.clone());
            m.insert("partition".into(), at.partition.to_string());
            m.insert("offset".into(), at.offset.to_string());
        }
        Error::PartitionNotHeld { topic, partition, owner, .. } => {
            m.insert("topic".into(), topic.clone());
            m.insert("partition".into(), partition.to_string());
            if let Some(owner) = owner {
                m.insert("owner".into(), owner.clone());
            }
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
    let bad_request = |field: &str, description: &str| {
        any(
            "google.rpc.BadRequest",
            &rpc::BadRequest {
                field_violations: vec![rpc::bad_request::FieldViolation {
                    field: field.into(),
                    description: description.into(),
                    ..Default::default()
                }],
            },
        )
    };
    // How long a client waits before it asks again for a partition that is moving: about a
    // rebalance's second round (cooperative: the new owner is assigned after the old one let go).
    let retry = || {
        any(
            "google.rpc.RetryInfo",
            &rpc::RetryInfo { retry_delay: Some(prost_types::Duration { seconds: 1, nanos: 0 }) },
        )
    };
    match error {
        Error::InvalidArgument { field, message } => vec![bad_request(field, message)],
        Error::PartitionNotHeld { owner, resume, .. } => {
            let mut details = Vec::new();
            if owner.is_none() {
                details.push(retry());
            }
            if !resume.is_empty() {
                details.push(offsets(Kind::Resume, resume));
            }
            details
        }
        // The component's bytes travel in the upload's chunks.
        Error::ComponentLimit { message, .. } => vec![bad_request("chunk", message)],
        Error::TooOld { earliest_offsets, .. } | Error::AsOfTooOld { earliest_offsets, .. } => {
            vec![offsets(Kind::Earliest, earliest_offsets)]
        }
        Error::BeyondEnd { latest_offsets, .. } => vec![offsets(Kind::Latest, latest_offsets)],
        Error::Kafka { resume, .. }
        | Error::Undecodable { resume, .. }
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
    fn an_undecodable_value_names_its_record_and_says_whether_a_retry_can_help() {
        let at = PartitionOffset::new("orders", 2, 17);
        let resume = vec![PartitionOffset::new("orders", 2, 17)];
        let error = |failure| Error::Undecodable {
            at: at.clone(),
            failure,
            message: "schema id 9 is not in the registry".into(),
            resume: resume.clone(),
        };
        let mismatch = status(error(DecodeFailure::UnknownSchema));
        assert_eq!(mismatch.code(), Code::FailedPrecondition);
        assert_eq!(reason(&mismatch).as_deref(), Some("SCHEMA_UNKNOWN"));
        assert!(mismatch.message().contains("orders/2 at offset 17"), "{}", mismatch.message());
        assert!(mismatch.message().contains("schema id 9"), "{}", mismatch.message());
        let meta = error_metadata(&mismatch);
        assert_eq!(
            (meta["topic"].as_str(), meta["partition"].as_str(), meta["offset"].as_str()),
            ("orders", "2", "17")
        );
        let detail = offsets_detail(&mismatch).unwrap();
        assert_eq!(detail.kind(), Kind::Resume);
        let down = status(error(DecodeFailure::RegistryUnavailable));
        assert_eq!(down.code(), Code::Unavailable);
        assert_eq!(reason(&down).as_deref(), Some("SCHEMA_REGISTRY_UNAVAILABLE"));
    }

    #[test]
    fn a_snapshot_as_of_an_offset_out_of_reach_carries_the_earliest_it_can_take() {
        let earliest = vec![PartitionOffset::new("t", 0, 40), PartitionOffset::new("t", 1, 7)];
        let status = status(Error::AsOfTooOld {
            topic: "t".into(),
            partition: 0,
            requested: 3,
            earliest: 40,
            earliest_offsets: earliest.clone(),
        });
        assert_eq!(status.code(), Code::OutOfRange);
        assert_eq!(reason(&status).as_deref(), Some("AS_OF_TOO_OLD"));
        assert!(status.message().contains("roll it back to offset 40"), "{}", status.message());
        let detail = offsets_detail(&status).unwrap();
        assert_eq!(detail.kind(), Kind::Earliest);
        assert_eq!(detail.offsets.len(), 2);
    }

    #[test]
    fn a_partition_held_elsewhere_names_its_owner_and_one_held_by_no_one_says_retry() {
        let elsewhere = status(Error::PartitionNotHeld {
            topic: "t".into(),
            partition: 3,
            owner: Some("10.0.0.2:50051".into()),
            resume: Vec::new(),
        });
        assert_eq!(elsewhere.code(), Code::FailedPrecondition);
        assert_eq!(reason(&elsewhere).as_deref(), Some("PARTITION_NOT_HELD"));
        let metadata = error_metadata(&elsewhere);
        assert_eq!(metadata.get("owner").map(String::as_str), Some("10.0.0.2:50051"));
        assert_eq!((metadata["topic"].as_str(), metadata["partition"].as_str()), ("t", "3"));
        assert!(elsewhere.message().contains("10.0.0.2:50051"), "{}", elsewhere.message());
        assert!(detail::<rpc::RetryInfo>(&elsewhere, "google.rpc.RetryInfo").is_none(), "no use retrying here");

        // A stream on a partition taken from this replica: UNAVAILABLE, retry, and where it stood.
        let resume = vec![PartitionOffset::new("t", 3, 40), PartitionOffset::new("t", 1, 7)];
        let moving = status(Error::not_held("t", 3).with_resume(resume.clone()));
        assert_eq!(moving.code(), Code::Unavailable);
        assert_eq!(reason(&moving).as_deref(), Some("PARTITION_MOVING"));
        assert!(!error_metadata(&moving).contains_key("owner"));
        let retry = detail::<rpc::RetryInfo>(&moving, "google.rpc.RetryInfo").expect("retry info");
        assert_eq!(retry.retry_delay.map(|d| d.seconds), Some(1));
        let detail = offsets_detail(&moving).expect("resume offsets");
        assert_eq!(detail.kind(), Kind::Resume);
        assert_eq!(detail.offsets, resume.iter().map(convert::partition_offset).collect::<Vec<_>>());
    }

    #[test]
    fn invalid_argument_names_the_field() {
        let status = status(Error::invalid("from_offsets[2].offset", "must be >= 0"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_field(&status).as_deref(), Some("from_offsets[2].offset"));
    }

    #[test]
    fn a_component_over_a_limit_names_the_limit_and_both_numbers() {
        let status = status(Error::ComponentLimit {
            limit: "translators.memory_bytes".into(),
            requested: 196_608_000,
            allowed: 134_217_728,
            message: "too much memory".into(),
        });
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(reason(&status).as_deref(), Some("COMPONENT_EXCEEDS_LIMIT"));
        let metadata = error_metadata(&status);
        assert_eq!(metadata.get("limit").map(String::as_str), Some("translators.memory_bytes"));
        assert_eq!(metadata.get("requested").map(String::as_str), Some("196608000"));
        assert_eq!(metadata.get("allowed").map(String::as_str), Some("134217728"));
        assert_eq!(bad_field(&status).as_deref(), Some("chunk"));
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

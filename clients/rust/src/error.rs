//! A failed call with the gateway's `google.rpc.Status` details decoded.

use std::{collections::HashMap, fmt};

use prost::Message;
use tonic_types::pb as rpc;

use crate::{
    pb::{offsets_detail::Kind, OffsetsDetail},
    Position,
};

/// A gRPC error from the gateway (or from reaching it), with what a program can act on: the code,
/// the stable `reason` of `google.rpc.ErrorInfo` (e.g. `OFFSET_TOO_OLD`, `UNKNOWN_TOPIC`), its
/// metadata, the fields a `google.rpc.BadRequest` names, and the offsets of a
/// `tributary.v1.OffsetsDetail`.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub code: tonic::Code,
    pub message: String,
    pub reason: Option<String>,
    pub domain: Option<String>,
    pub metadata: HashMap<String, String>,
    pub field_violations: Vec<FieldViolation>,
    pub offsets: Option<Offsets>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// Offsets an error carries, and what they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Offsets {
    pub kind: OffsetsKind,
    pub position: Position,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetsKind {
    /// The earliest offsets Kafka still retains (with `OUT_OF_RANGE`).
    Earliest,
    /// Where an ended stream stands: resume from here with no gap.
    Resume,
    /// The latest offsets (a requested offset was beyond them).
    Latest,
    Unspecified,
}

impl Error {
    /// An error that did not come from the gateway (bad settings, unreachable address).
    pub(crate) fn local(code: tonic::Code, message: String) -> Self {
        Error {
            code,
            message,
            reason: None,
            domain: None,
            metadata: HashMap::new(),
            field_violations: Vec::new(),
            offsets: None,
        }
    }

    /// The `ErrorInfo` reason, or "" when the status carried none.
    pub fn reason(&self) -> &str {
        self.reason.as_deref().unwrap_or("")
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let mut error = Error::local(status.code(), status.message().to_string());
        let details = rpc::Status::decode(status.details()).map(|s| s.details).unwrap_or_default();
        for any in details {
            let name = any.type_url.rsplit('/').next().unwrap_or_default();
            let value = any.value.as_slice();
            match name {
                "google.rpc.ErrorInfo" => {
                    if let Ok(info) = rpc::ErrorInfo::decode(value) {
                        error.reason = Some(info.reason);
                        error.domain = Some(info.domain);
                        error.metadata = info.metadata;
                    }
                }
                "google.rpc.BadRequest" => {
                    if let Ok(bad) = rpc::BadRequest::decode(value) {
                        error.field_violations.extend(
                            bad.field_violations
                                .into_iter()
                                .map(|v| FieldViolation { field: v.field, description: v.description }),
                        );
                    }
                }
                "tributary.v1.OffsetsDetail" => {
                    if let Ok(detail) = OffsetsDetail::decode(value) {
                        let kind = match detail.kind() {
                            Kind::Earliest => OffsetsKind::Earliest,
                            Kind::Resume => OffsetsKind::Resume,
                            Kind::Latest => OffsetsKind::Latest,
                            Kind::Unspecified => OffsetsKind::Unspecified,
                        };
                        error.offsets = Some(Offsets { kind, position: Position::from_offsets(&detail.offsets) });
                    }
                }
                _ => {}
            }
        }
        error
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.code, self.message)?;
        if let Some(reason) = &self.reason {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::*;
    use crate::pb::PartitionOffset;

    fn any<M: Message>(name: &str, m: &M) -> prost_types::Any {
        prost_types::Any { type_url: format!("type.googleapis.com/{name}"), value: m.encode_to_vec() }
    }

    #[test]
    fn every_detail_of_a_status_is_decoded() {
        let details = rpc::Status {
            code: tonic::Code::OutOfRange as i32,
            message: "too old".into(),
            details: vec![
                any(
                    "google.rpc.ErrorInfo",
                    &rpc::ErrorInfo {
                        reason: "OFFSET_TOO_OLD".into(),
                        domain: "tributary.v1".into(),
                        metadata: [("topic".to_string(), "t".to_string())].into(),
                    },
                ),
                any(
                    "google.rpc.BadRequest",
                    &rpc::BadRequest {
                        field_violations: vec![rpc::bad_request::FieldViolation {
                            field: "from_offsets[0].offset".into(),
                            description: "negative".into(),
                            ..Default::default()
                        }],
                    },
                ),
                any(
                    "tributary.v1.OffsetsDetail",
                    &OffsetsDetail {
                        kind: Kind::Earliest as i32,
                        offsets: vec![PartitionOffset { topic: "t".into(), partition: 1, offset: 42 }],
                    },
                ),
                any("example.Unknown", &rpc::ErrorInfo::default()),
            ],
        };
        let status = tonic::Status::with_details(tonic::Code::OutOfRange, "too old", details.encode_to_vec().into());
        let error = Error::from(status);
        assert_eq!(error.code, tonic::Code::OutOfRange);
        assert_eq!(error.reason(), "OFFSET_TOO_OLD");
        assert_eq!(error.domain.as_deref(), Some("tributary.v1"));
        assert_eq!(error.metadata.get("topic").map(String::as_str), Some("t"));
        assert_eq!(error.field_violations[0].field, "from_offsets[0].offset");
        let offsets = error.offsets.expect("offsets");
        assert_eq!(offsets.kind, OffsetsKind::Earliest);
        assert_eq!(offsets.position.get("t", 1), Some(42));
    }

    #[test]
    fn a_status_without_details_keeps_its_code_and_message() {
        let error = Error::from(tonic::Status::unavailable("connection refused"));
        assert_eq!(error.code, tonic::Code::Unavailable);
        assert_eq!(error.reason, None);
        assert!(error.to_string().contains("connection refused"));
    }
}

//! What the HTTP log writes: records as JSON objects, the answer's envelope, SSE events, and
//! errors as `no-store` JSON with a stable reason and details a program can act on.
//!
//! A key, value or header value is a JSON string when it is UTF-8, else base64 under
//! `key_b64` / `value_b64` (`{"b64": …}` for a header value); `null` is absent (a delete's value).

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use serde_json::{json, Map, Value};
use tributary_core::{decode::DecodeFailure, Error, Output, TranslatorFailure};

use crate::api::status;

/// The body of every response.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

/// A JSON string of `s` (quoted and escaped).
fn string(out: &mut Vec<u8>, s: &str) {
    serde_json::to_writer(&mut *out, s).expect("a string serializes");
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `"name":"text"`, `"name_b64":"…"` or `"name":null`.
fn part(out: &mut Vec<u8>, name: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => {
            string(out, name);
            out.extend_from_slice(b":null");
        }
        Some(Ok(text)) => {
            string(out, name);
            out.push(b':');
            string(out, text);
        }
        Some(Err(_)) => {
            string(out, &format!("{name}_b64"));
            out.push(b':');
            string(out, &base64(bytes.expect("some")));
        }
    }
}

/// One record (or translator output) as a JSON object, A's coordinates first (rule 8).
pub fn record(out: &mut Vec<u8>, o: &Output) {
    let source = &o.source;
    out.extend_from_slice(
        format!(
            "{{\"partition\":{},\"offset\":{},\"timestamp_ms\":{},",
            source.partition, source.offset, source.timestamp_ms
        )
        .as_bytes(),
    );
    if o.translated.is_some() {
        out.extend_from_slice(format!("\"index\":{},", o.index).as_bytes());
    }
    let headers: Vec<(String, Option<Bytes>)> = match o.payload() {
        Some(p) => {
            part(out, "key", p.key.as_deref());
            out.push(b',');
            part(out, "value", p.value.as_deref());
            p.headers.clone()
        }
        None => {
            part(out, "key", source.key());
            out.push(b',');
            part(out, "value", source.value());
            source.header_list()
        }
    };
    if !headers.is_empty() {
        let list: Vec<Value> = headers
            .iter()
            .map(|(k, v)| {
                let v = match v.as_deref().map(std::str::from_utf8) {
                    None => Value::Null,
                    Some(Ok(text)) => Value::String(text.to_string()),
                    Some(Err(_)) => json!({ "b64": base64(v.as_deref().expect("some")) }),
                };
                json!([k, v])
            })
            .collect();
        out.extend_from_slice(b",\"headers\":");
        serde_json::to_writer(&mut *out, &list).expect("headers serialize");
    }
    out.push(b'}');
}

/// How an answer is written: one JSON document, or NDJSON (the envelope, one line per record,
/// then an `end` line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
        }
    }

    /// The envelope's start, up to where the records go.
    pub fn start(self, envelope: &Value) -> Vec<u8> {
        let mut text = serde_json::to_vec(envelope).expect("an envelope serializes");
        match self {
            Format::Json => {
                text.pop(); // the closing brace: the records and the end follow
                text.extend_from_slice(b",\"records\":[");
            }
            Format::Ndjson => text.push(b'\n'),
        }
        text
    }

    /// Appends a record, `first` when it is the answer's first.
    pub fn record(self, out: &mut Vec<u8>, o: &Output, first: bool) {
        if self == Format::Json && !first {
            out.push(b',');
        }
        record(out, o);
        if self == Format::Ndjson {
            out.push(b'\n');
        }
    }

    /// The end: how many records were skipped (`skip_errors`).
    pub fn end(self, out: &mut Vec<u8>, skipped: u64) {
        match self {
            Format::Json => out.extend_from_slice(format!("],\"skipped_records\":{skipped}}}").as_bytes()),
            Format::Ndjson => {
                out.extend_from_slice(format!("{{\"end\":true,\"skipped_records\":{skipped}}}\n").as_bytes())
            }
        }
    }
}

/// The HTTP status of an error.
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidArgument { .. } | Error::TranslatorConfig { .. } | Error::ComponentLimit { .. } => {
            StatusCode::BAD_REQUEST
        }
        Error::UnknownTopic { .. } | Error::UnknownPartition { .. } | Error::UnknownTranslator { .. } => {
            StatusCode::NOT_FOUND
        }
        // The position cannot be served: start again from a snapshot (details.restart).
        Error::TooOld { .. } | Error::BeyondEnd { .. } | Error::AsOfTooOld { .. } => StatusCode::CONFLICT,
        // Another replica holds a partition: this one cannot answer for the whole topic.
        Error::PartitionNotHeld { owner: Some(_), .. } => StatusCode::MISDIRECTED_REQUEST,
        Error::PartitionNotHeld { owner: None, .. }
        | Error::NotReady { .. }
        | Error::Kafka { .. }
        | Error::ShuttingDown { .. }
        | Error::ResourceExhausted(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Translator { failure, .. } => match failure {
            TranslatorFailure::Deadline | TranslatorFailure::Memory | TranslatorFailure::Instances(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            TranslatorFailure::Trap(_) | TranslatorFailure::Error(_) | TranslatorFailure::Output(_) => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
        },
        Error::TranslatorUnavailable { .. } | Error::Subscription { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Undecodable { failure: DecodeFailure::RegistryUnavailable, .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::Undecodable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        Error::SubscriptionTakenOver { .. } => StatusCode::CONFLICT,
        Error::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        Error::PermissionDenied(_) => StatusCode::FORBIDDEN,
        Error::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error as JSON: `{"error":{"status","code","reason","message","details"}}`; `extra` adds to
/// the details (the restart position of a 409).
pub fn error_json(error: &Error, extra: Map<String, Value>) -> Value {
    let status = status_of(error);
    let mut details: Map<String, Value> =
        status::metadata(error).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    match error {
        Error::InvalidArgument { field, .. } => {
            details.insert("field".into(), Value::String(field.clone()));
        }
        Error::TooOld { earliest, .. } => {
            details.insert("earliest".into(), json!(earliest));
        }
        Error::BeyondEnd { latest, .. } => {
            details.insert("latest".into(), json!(latest));
        }
        Error::PartitionNotHeld { owner: Some(owner), .. } => {
            details.insert("owner".into(), Value::String(owner.clone()));
        }
        _ => {}
    }
    details.extend(extra);
    json!({ "error": {
        "status": status.as_u16(),
        "code": format!("{:?}", status::code(error)),
        "reason": status::reason_of(error),
        "message": error.to_string(),
        "details": details,
    }})
}

/// An error response: `no-store`, with `Retry-After` when retrying later can succeed and
/// `WWW-Authenticate` when a token is needed.
pub fn error(error: &Error, extra: Map<String, Value>) -> Response<Body> {
    let status = status_of(error);
    let body = serde_json::to_vec(&error_json(error, extra)).expect("an error serializes");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if status == StatusCode::UNAUTHORIZED {
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// An error of the HTTP layer itself (a path or method it does not serve, a position of
/// another epoch or partition count), in the same shape as [`error_json`].
pub fn problem_json(status: StatusCode, reason: &str, message: &str, extra: Map<String, Value>) -> Value {
    json!({ "error": {
        "status": status.as_u16(),
        // The gRPC code's name, as in every other error body.
        "code": match status {
            StatusCode::NOT_FOUND => "NotFound",
            StatusCode::CONFLICT => "OutOfRange",
            StatusCode::METHOD_NOT_ALLOWED => "Unimplemented",
            _ => "Unknown",
        },
        "reason": reason,
        "message": message,
        "details": extra,
    }})
}

/// [`problem_json`] as a `no-store` response.
pub fn problem(status: StatusCode, reason: &str, message: &str, extra: Map<String, Value>) -> Response<Body> {
    let body = serde_json::to_vec(&problem_json(status, reason, message, extra)).expect("an error serializes");
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use tributary_core::Record;

    use super::*;

    fn text(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn records_are_json_with_binary_parts_in_base64_and_deletes_as_null() {
        let r =
            Record::new("t".into(), 2, 7, 99, Some(b"k\"1"), Some(&[0xff, 0x00]), &[("h", Some(b"x")), ("n", None)]);
        let got: Value = serde_json::from_str(&text(|o| record(o, &Output::untranslated(r)))).unwrap();
        assert_eq!(
            got,
            json!({"partition": 2, "offset": 7, "timestamp_ms": 99, "key": "k\"1", "value_b64": "/wA=", "headers": [["h", "x"], ["n", null]]})
        );
        let delete = Record::new("t".into(), 0, 1, -1, Some(b"k"), None, &[]);
        let got: Value = serde_json::from_str(&text(|o| record(o, &Output::untranslated(delete)))).unwrap();
        assert_eq!(got, json!({"partition": 0, "offset": 1, "timestamp_ms": -1, "key": "k", "value": null}));
    }

    #[test]
    fn both_formats_make_a_valid_document() {
        let outputs: Vec<Output> = (0..3)
            .map(|i| Output::untranslated(Record::new("t".into(), 0, i, 0, Some(b"k"), Some(b"v"), &[])))
            .collect();
        let envelope = json!({"topic": "t", "next": "1_3"});
        let mut json_out = Format::Json.start(&envelope);
        let mut nd = Format::Ndjson.start(&envelope);
        for (i, o) in outputs.iter().enumerate() {
            Format::Json.record(&mut json_out, o, i == 0);
            Format::Ndjson.record(&mut nd, o, i == 0);
        }
        Format::Json.end(&mut json_out, 2);
        Format::Ndjson.end(&mut nd, 2);
        let doc: Value = serde_json::from_slice(&json_out).unwrap();
        assert_eq!((doc["records"].as_array().unwrap().len(), &doc["skipped_records"]), (3, &json!(2)));
        let lines: Vec<Value> =
            std::str::from_utf8(&nd).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!((lines.len(), &lines[0]["next"], &lines[4]["end"]), (5, &json!("1_3"), &json!(true)));
    }

    #[test]
    fn errors_say_what_to_do_and_are_never_stored() {
        let e =
            Error::TooOld { topic: "t".into(), partition: 0, requested: 3, earliest: 10, earliest_offsets: Vec::new() };
        let response = error(&e, Map::new());
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        let busy = error(&Error::NotReady { percent: 5 }, Map::new());
        assert_eq!(
            (busy.status(), &busy.headers()[header::RETRY_AFTER]),
            (StatusCode::SERVICE_UNAVAILABLE, &HeaderValue::from_static("1"))
        );
        let body = error_json(&Error::invalid("from", "bad"), Map::new());
        assert_eq!(body["error"]["details"]["field"], "from");
        assert_eq!(body["error"]["reason"], "INVALID_ARGUMENT");
    }
}

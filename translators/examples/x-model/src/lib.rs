//! System X's translator for the main demo (`scripts/demo.sh`, `demo/x.py`): turns system Y's
//! media assignments into X's own model, inside the gateway.
//!
//! Y writes, under the key `assignment/<id>`:
//!
//! ```json
//! {"id":7,"station":"north","status":"on-air","version":3}
//! ```
//!
//! and a tombstone when the assignment ends. X wants, under the key `<id>` (decimal):
//!
//! ```json
//! {"assignment":7,"station":"north","on_air":true,"finished":false,"revision":3}
//! ```
//!
//! - `status` becomes two booleans: `on_air` (`"on-air"`) and `finished` (`"done"`);
//!   `"scheduled"` is neither. Any other status is an error for that record.
//! - `version` becomes `revision`; `id` becomes `assignment` and must match the key's id.
//! - A tombstone stays a tombstone (key `<id>`): X deletes the assignment.
//! - Fields Y adds later are ignored (X's model does not change with Y's release cycle); a
//!   missing field, a key that is not `assignment/<id>` or a value that is not such a JSON object
//!   is an error for that record.
//! - Headers pass through unchanged.
//!
//! Configuration: empty or `{}` (no option yet; unknown fields are rejected).

use serde::{Deserialize, Serialize};
use tributary_translator_sdk::{export_translator, Outcome, OutputRecord, SourceRecord, Translator};

/// The prefix of Y's keys.
const Y_KEY_PREFIX: &str = "assignment/";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {}

/// A media assignment as Y writes it (the fields X reads).
#[derive(Debug, Deserialize)]
struct YAssignment {
    id: u64,
    station: String,
    status: String,
    version: u64,
}

/// A media assignment in X's model. Serialized in this field order.
#[derive(Debug, Serialize, PartialEq)]
struct XAssignment {
    assignment: u64,
    station: String,
    on_air: bool,
    finished: bool,
    revision: u64,
}

struct XModel;

/// `assignment/<id>` → `<id>`.
fn assignment_id(key: Option<&[u8]>) -> Result<u64, String> {
    let key = key.ok_or("record has no key (expected assignment/<id>)")?;
    let text = std::str::from_utf8(key).map_err(|_| "record key is not UTF-8".to_string())?;
    text.strip_prefix(Y_KEY_PREFIX)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| format!("record key {text:?} is not assignment/<id>"))
}

fn to_x(id: u64, value: &[u8]) -> Result<XAssignment, String> {
    let y: YAssignment =
        serde_json::from_slice(value).map_err(|e| format!("record value is not a Y assignment: {e}"))?;
    if y.id != id {
        return Err(format!("record value has id {} under the key of assignment {id}", y.id));
    }
    let (on_air, finished) = match y.status.as_str() {
        "scheduled" => (false, false),
        "on-air" => (true, false),
        "done" => (false, true),
        other => return Err(format!("unknown status {other:?}")),
    };
    Ok(XAssignment { assignment: id, station: y.station, on_air, finished, revision: y.version })
}

impl Translator for XModel {
    fn init(config: &str) -> Result<Self, String> {
        if !config.trim().is_empty() {
            serde_json::from_str::<Config>(config).map_err(|e| format!("invalid configuration: {e}"))?;
        }
        Ok(XModel)
    }

    fn translate<'a>(&mut self, record: SourceRecord<'a>) -> Outcome<'a> {
        let id = match assignment_id(record.key) {
            Ok(id) => id,
            Err(message) => return Outcome::err(message),
        };
        let key = id.to_string().into_bytes();
        let value = match record.value {
            None => None,
            Some(value) => match to_x(id, value) {
                Ok(x) => Some(serde_json::to_vec(&x).expect("X's record is always JSON").into()),
                Err(message) => return Outcome::err(message),
            },
        };
        Outcome::one(OutputRecord { key: Some(key.into()), value, headers: record.headers })
    }
}

export_translator!(XModel);

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use tributary_translator_sdk::Headers;

    fn headers() -> Headers<'static> {
        [("source", Some(Cow::Borrowed(&b"system-a"[..])))].into_iter().collect()
    }

    fn record<'a>(key: Option<&'a str>, value: Option<&'a str>) -> SourceRecord<'a> {
        SourceRecord {
            partition: 1,
            offset: 42,
            headers: headers(),
            ..SourceRecord::new("media-assignments", key.map(str::as_bytes), value.map(str::as_bytes))
        }
    }

    fn one(outcome: Outcome) -> OutputRecord {
        match outcome {
            Outcome::One(record) => record,
            other => panic!("expected one output, got {other:?}"),
        }
    }

    fn text(bytes: Option<Cow<[u8]>>) -> String {
        String::from_utf8(bytes.unwrap().into_owned()).unwrap()
    }

    #[test]
    fn maps_y_to_x() {
        let mut t = XModel::init("").unwrap();
        for (status, on_air, finished) in [("scheduled", false, false), ("on-air", true, false), ("done", false, true)]
        {
            let y = format!(r#"{{"id":7,"station":"north","status":"{status}","version":3}}"#);
            let out = one(t.translate(record(Some("assignment/7"), Some(&y))));
            assert_eq!(text(out.key), "7");
            assert_eq!(
                text(out.value),
                format!(r#"{{"assignment":7,"station":"north","on_air":{on_air},"finished":{finished},"revision":3}}"#)
            );
            assert_eq!(out.headers, headers());
        }
    }

    #[test]
    fn tombstones_stay_deletions() {
        let mut t = XModel::init("{}").unwrap();
        let out = one(t.translate(record(Some("assignment/123"), None)));
        assert_eq!(text(out.key), "123");
        assert_eq!(out.value, None);
    }

    #[test]
    fn new_fields_of_y_are_ignored() {
        let mut t = XModel::init("").unwrap();
        let out = one(t.translate(record(
            Some("assignment/0"),
            Some(r#"{"version":0,"status":"scheduled","station":"west","id":0,"crew":["a"]}"#),
        )));
        assert_eq!(
            text(out.value),
            r#"{"assignment":0,"station":"west","on_air":false,"finished":false,"revision":0}"#
        );
    }

    #[test]
    fn bad_records_are_errors() {
        let mut t = XModel::init("").unwrap();
        let good = r#"{"id":7,"station":"north","status":"done","version":3}"#;
        for (key, value, expected) in [
            (None, Some(good), "record has no key"),
            (Some("station/7"), Some(good), r#"record key "station/7" is not assignment/<id>"#),
            (Some("assignment/"), Some(good), "is not assignment/<id>"),
            (Some("assignment/+7"), Some(good), "is not assignment/<id>"),
            (Some("assignment/x"), None, "is not assignment/<id>"),
            (Some("assignment/8"), Some(good), "record value has id 7 under the key of assignment 8"),
            (Some("assignment/7"), Some("[1]"), "record value is not a Y assignment"),
            (Some("assignment/7"), Some(r#"{"id":7}"#), "missing field `station`"),
            (
                Some("assignment/7"),
                Some(r#"{"id":7,"station":"north","status":"paused","version":3}"#),
                r#"unknown status "paused""#,
            ),
        ] {
            match t.translate(record(key, value)) {
                Outcome::Err(message) => assert!(message.contains(expected), "{key:?} {value:?}: {message}"),
                other => panic!("{key:?} {value:?}: expected an error, got {other:?}"),
            }
        }
    }

    #[test]
    fn config_must_be_empty() {
        assert!(XModel::init(" ").is_ok());
        assert!(XModel::init("{}").is_ok());
        let message = XModel::init(r#"{"stations": ["north"]}"#).err().unwrap();
        assert!(message.contains("unknown field `stations`"), "{message}");
        assert!(XModel::init("{").is_err());
    }
}

//! Keeps the records that match, unchanged, and drops the others (zero outputs).
//!
//! Configuration (JSON, unknown fields rejected; at least one criterion):
//!
//! ```json
//! {"key_prefix": "assignment/1"}
//! {"field": "status", "equals": "on-air"}
//! {"key_prefix": "assignment/", "field": "status", "equals": "on-air"}
//! ```
//!
//! - `key_prefix`: the key must start with these bytes; keyless records never match.
//! - `field` + `equals`: the value must be a JSON object whose top-level field `field` equals
//!   `equals` (any JSON value; numbers compare by value, so `3` equals `3.0`). A record without
//!   the field is dropped; a value that is not a JSON object is an error for that record.
//! - Both given: both must match.
//!
//! Tombstones (deletions) have no value to look at: with `key_prefix` they pass if the key
//! matches; the field criterion lets them pass, because B must see the deletion of a key whose
//! last value matched, and the filter cannot know that value. B gets deletions of keys it never
//! saw as well, which it can ignore.

use serde::Deserialize;
use serde_json::Value;
use tributary_translator_sdk::{export_translator, Outcome, SourceRecord, Translator};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    key_prefix: Option<String>,
    #[serde(default)]
    field: Option<String>,
    // `Option<Value>` would read `"equals": null` as absent: keep "absent" and "null" apart.
    #[serde(default, deserialize_with = "present")]
    equals: Option<Value>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

struct Filter {
    key_prefix: Option<Vec<u8>>,
    field: Option<(String, Value)>,
}

impl Filter {
    fn new(config: &str) -> Result<Self, String> {
        let config: Config = serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))?;
        let field = match (config.field, config.equals) {
            (Some(field), Some(equals)) => Some((field, equals)),
            (None, None) => None,
            (Some(_), None) => return Err("invalid configuration: \"field\" needs \"equals\"".into()),
            (None, Some(_)) => return Err("invalid configuration: \"equals\" needs \"field\"".into()),
        };
        let key_prefix = config.key_prefix.map(String::into_bytes);
        if key_prefix.is_none() && field.is_none() {
            return Err("invalid configuration: give \"key_prefix\", or \"field\" and \"equals\", or both".into());
        }
        Ok(Filter { key_prefix, field })
    }

    fn matches(&self, record: &SourceRecord) -> Result<bool, String> {
        if let Some(prefix) = &self.key_prefix {
            match &record.key {
                Some(key) if key.starts_with(prefix) => {}
                _ => return Ok(false),
            }
        }
        let (Some((field, equals)), Some(value)) = (&self.field, &record.value) else {
            // No field criterion, or a tombstone: it passes (see the module's documentation).
            return Ok(true);
        };
        match serde_json::from_slice::<Value>(value) {
            Ok(Value::Object(object)) => Ok(object.get(field).is_some_and(|v| same(v, equals))),
            Ok(_) => Err("record value is not a JSON object".into()),
            Err(e) => Err(format!("record value is not a JSON object: {e}")),
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        _ => a == b,
    }
}

impl Translator for Filter {
    fn init(config: &str) -> Result<Self, String> {
        Filter::new(config)
    }

    fn translate<'a>(&mut self, record: SourceRecord<'a>) -> Outcome<'a> {
        match self.matches(&record) {
            Ok(true) => Outcome::pass(record),
            Ok(false) => Outcome::none(),
            Err(message) => Outcome::err(message),
        }
    }
}

export_translator!(Filter);

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(key: Option<&'a str>, value: Option<&'a str>) -> SourceRecord<'a> {
        SourceRecord::new("assignments", key.map(str::as_bytes), value.map(str::as_bytes))
    }

    fn kept(t: &mut Filter, r: SourceRecord) -> bool {
        let expected = Outcome::pass(r.clone());
        match t.translate(r) {
            Outcome::None => false,
            outcome if outcome == expected => true,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn key_prefix() {
        let mut t = Filter::init(r#"{"key_prefix": "assignment/1"}"#).unwrap();
        assert!(kept(&mut t, record(Some("assignment/17"), Some("x"))));
        assert!(kept(&mut t, record(Some("assignment/1"), None)));
        assert!(!kept(&mut t, record(Some("assignment/2"), None)));
        assert!(!kept(&mut t, record(Some("assignment/2"), Some("x"))));
        assert!(!kept(&mut t, record(None, Some("x"))));
    }

    #[test]
    fn field_equals() {
        let mut t = Filter::init(r#"{"field": "status", "equals": "on-air"}"#).unwrap();
        assert!(kept(&mut t, record(Some("a"), Some(r#"{"status":"on-air","id":1}"#))));
        assert!(!kept(&mut t, record(Some("a"), Some(r#"{"status":"off-air"}"#))));
        assert!(!kept(&mut t, record(Some("a"), Some(r#"{"id":1}"#))));
        assert!(kept(&mut t, record(Some("a"), None)), "tombstones pass");
        assert_eq!(t.translate(record(Some("a"), Some("[1]"))), Outcome::err("record value is not a JSON object"));
        let mut t = Filter::init(r#"{"field": "version", "equals": 3}"#).unwrap();
        assert!(kept(&mut t, record(None, Some(r#"{"version":3.0}"#))));
        let mut t = Filter::init(r#"{"field": "gone", "equals": null}"#).unwrap();
        assert!(kept(&mut t, record(None, Some(r#"{"gone":null}"#))));
        assert!(!kept(&mut t, record(None, Some(r#"{}"#))));
    }

    #[test]
    fn both() {
        let mut t = Filter::init(r#"{"key_prefix": "a/", "field": "status", "equals": "on-air"}"#).unwrap();
        assert!(kept(&mut t, record(Some("a/1"), Some(r#"{"status":"on-air"}"#))));
        assert!(!kept(&mut t, record(Some("b/1"), Some(r#"{"status":"on-air"}"#))));
        assert!(kept(&mut t, record(Some("a/1"), None)));
        assert!(!kept(&mut t, record(Some("b/1"), None)));
    }

    #[test]
    fn bad_configs() {
        for config in ["", "{}", r#"{"field": "x"}"#, r#"{"equals": 1}"#, r#"{"prefix": "a"}"#] {
            let message = Filter::init(config).err().unwrap();
            assert!(message.starts_with("invalid configuration: "), "{config}: {message}");
        }
    }
}

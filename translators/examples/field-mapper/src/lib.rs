//! Renames and drops fields of JSON-object values, and prefixes keys.
//!
//! Configuration (JSON; every field optional, unknown fields rejected; an empty string is `{}`):
//!
//! ```json
//! {"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}
//! ```
//!
//! - `rename`: old field name → new field name. Two fields may not get the same new name.
//!   Swapping names (`{"a": "b", "b": "a"}`) is fine.
//! - `drop`: fields to remove (by their name in A's record). A field can't be both renamed and
//!   dropped.
//! - `key_prefix`: prepended to every key; a keyless record stays keyless.
//!
//! Each value must be a JSON object; the output is that object with the fields renamed and
//! dropped, as compact JSON with its fields in name order. Fields named in the configuration
//! but missing from a record are ignored. A tombstone stays a tombstone (with the prefixed key).
//! Headers pass through unchanged. A value that is not a JSON object, or in which a new name
//! collides with a field that is kept under its own name, is an error for that record.

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{value::RawValue, Value};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use tributary_translator_sdk::{export_translator, Outcome, OutputRecord, SourceRecord, Translator};

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    rename: BTreeMap<String, String>,
    #[serde(default)]
    drop: BTreeSet<String>,
    #[serde(default)]
    key_prefix: String,
}

struct FieldMapper {
    config: Config,
}

/// A field name as written in the record: borrowed unless it has escapes.
#[derive(serde::Deserialize)]
struct Name<'a>(#[serde(borrow)] Cow<'a, str>);

/// An object's fields in the order written, each value as written (not parsed into a tree).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Fields<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((name, value)) = map.next_entry::<Name<'de>, &'de RawValue>()? {
                    fields.push((name.0, value));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

impl FieldMapper {
    fn new(config: &str) -> Result<Self, String> {
        let config: Config = if config.trim().is_empty() {
            Config::default()
        } else {
            serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))?
        };
        let mut targets = BTreeMap::new();
        for (from, to) in &config.rename {
            if config.drop.contains(from) {
                return Err(format!("invalid configuration: field {from:?} is both renamed and dropped"));
            }
            if let Some(other) = targets.insert(to, from) {
                return Err(format!("invalid configuration: fields {other:?} and {from:?} are both renamed to {to:?}"));
            }
        }
        Ok(FieldMapper { config })
    }

    /// The object with its fields renamed and dropped. Field values are not parsed into a tree:
    /// each is copied as it is written in A's record (a nested object keeps its formatting).
    fn map_value(&self, value: &[u8]) -> Result<Vec<u8>, String> {
        let Fields(fields) = match serde_json::from_slice(value) {
            Ok(fields) => fields,
            // Not an object, or not JSON: parse it as any JSON to say which.
            Err(e) => {
                return Err(match serde_json::from_slice::<Value>(value) {
                    Ok(other) => format!("record value is not a JSON object: found {}", kind(&other)),
                    Err(_) => format!("record value is not a JSON object: {e}"),
                })
            }
        };
        // (new name, name in the record, value), kept fields only.
        let mut out: Vec<(&str, &str, &RawValue)> = Vec::with_capacity(fields.len());
        for (name, field) in &fields {
            let name = &**name;
            if self.config.drop.contains(name) {
                continue;
            }
            out.push((self.config.rename.get(name).map_or(name, String::as_str), name, field));
        }
        // Stable: of a name the record has twice, the last is kept (as a JSON parser keeps it).
        out.sort_by(|a, b| a.0.cmp(b.0));
        let mut json = Vec::with_capacity(value.len());
        json.push(b'{');
        let mut written = false;
        for (i, (new_name, name, field)) in out.iter().enumerate() {
            if let Some(next) = out.get(i + 1).filter(|next| next.0 == *new_name) {
                if next.1 == *name {
                    continue;
                }
                // Rename targets are distinct (checked by `new`), so one of the two is a field
                // renamed to the name of a field that is kept.
                return Err(format!(
                    "field {new_name:?} would appear twice: the record has it and another field \
                     is renamed to it"
                ));
            }
            if written {
                json.push(b',');
            }
            written = true;
            write_name(&mut json, new_name);
            json.push(b':');
            json.extend_from_slice(field.get().as_bytes());
        }
        json.push(b'}');
        Ok(json)
    }

    fn map_key<'a>(&self, key: Option<&'a [u8]>) -> Option<Cow<'a, [u8]>> {
        let key = key?;
        if self.config.key_prefix.is_empty() {
            return Some(Cow::Borrowed(key));
        }
        let mut prefixed = Vec::with_capacity(self.config.key_prefix.len() + key.len());
        prefixed.extend_from_slice(self.config.key_prefix.as_bytes());
        prefixed.extend_from_slice(key);
        Some(Cow::Owned(prefixed))
    }
}

/// A field name as a JSON string: as it is when nothing in it needs escaping (the usual case).
fn write_name(json: &mut Vec<u8>, name: &str) {
    if name.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        json.push(b'"');
        json.extend_from_slice(name.as_bytes());
        json.push(b'"');
    } else {
        serde_json::to_writer(json, name).expect("a string is always written");
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl Translator for FieldMapper {
    fn init(config: &str) -> Result<Self, String> {
        FieldMapper::new(config)
    }

    fn translate<'a>(&mut self, record: SourceRecord<'a>) -> Outcome<'a> {
        let value = match record.value {
            None => None,
            Some(value) => match self.map_value(value) {
                Ok(mapped) => Some(Cow::Owned(mapped)),
                Err(message) => return Outcome::err(message),
            },
        };
        Outcome::one(OutputRecord { key: self.map_key(record.key), value, headers: record.headers })
    }
}

export_translator!(FieldMapper);

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_translator_sdk::Headers;

    fn headers() -> Headers<'static> {
        [("h", None)].into_iter().collect()
    }

    const CONFIG: &str =
        r#"{"rename": {"station": "location", "id": "assignment_id"}, "drop": ["version"], "key_prefix": "b/"}"#;

    fn record<'a>(key: Option<&'a str>, value: Option<&'a str>) -> SourceRecord<'a> {
        SourceRecord {
            headers: headers(),
            ..SourceRecord::new("assignments", key.map(str::as_bytes), value.map(str::as_bytes))
        }
    }

    fn one(outcome: Outcome) -> OutputRecord {
        match outcome {
            Outcome::One(record) => record,
            other => panic!("expected one output, got {other:?}"),
        }
    }

    #[test]
    fn renames_drops_and_prefixes() {
        let mut t = FieldMapper::init(CONFIG).unwrap();
        let out = one(t.translate(record(
            Some("assignment/7"),
            Some(r#"{"id":7,"station":"north","status":"on-air","version":3}"#),
        )));
        assert_eq!(out.key.as_deref(), Some(&b"b/assignment/7"[..]));
        assert_eq!(
            String::from_utf8(out.value.unwrap().into_owned()).unwrap(),
            r#"{"assignment_id":7,"location":"north","status":"on-air"}"#
        );
        assert_eq!(out.headers, headers());
    }

    #[test]
    fn tombstones_stay_tombstones_and_keyless_stays_keyless() {
        let mut t = FieldMapper::init(CONFIG).unwrap();
        let out = one(t.translate(record(Some("assignment/7"), None)));
        assert_eq!(out.key.as_deref(), Some(&b"b/assignment/7"[..]));
        assert_eq!(out.value, None);
        let out = one(t.translate(record(None, Some("{}"))));
        assert_eq!(out.key, None);
        assert_eq!(out.value.as_deref(), Some(&b"{}"[..]));
    }

    #[test]
    fn non_objects_are_errors() {
        let mut t = FieldMapper::init(CONFIG).unwrap();
        for (value, expected) in [
            ("[1,2]", "record value is not a JSON object: found an array"),
            ("\"x\"", "record value is not a JSON object: found a string"),
            ("", "record value is not a JSON object: EOF while parsing a value at line 1 column 0"),
            ("{", "record value is not a JSON object: EOF while parsing an object at line 1 column 1"),
        ] {
            assert_eq!(t.translate(record(Some("k"), Some(value))), Outcome::err(expected), "{value}");
        }
    }

    #[test]
    fn escaped_names_and_nested_values_are_kept_exactly() {
        let mut t = FieldMapper::init(r#"{"rename": {"a\"b": "q"}}"#).unwrap();
        let out = one(t.translate(record(None, Some(r#"{"z":{"n": [1, 2]},"a\"b":1.50,"\u00e9":"\u00e9"}"#))));
        assert_eq!(
            String::from_utf8(out.value.unwrap().into_owned()).unwrap(),
            r#"{"q":1.50,"z":{"n": [1, 2]},"é":"\u00e9"}"#
        );
    }

    #[test]
    fn a_name_written_twice_keeps_its_last_value_as_a_json_parser_does() {
        let mut t = FieldMapper::init(r#"{"rename": {"a": "z"}}"#).unwrap();
        let out = one(t.translate(record(None, Some(r#"{"a":1,"b":2,"a":3}"#))));
        assert_eq!(out.value.as_deref(), Some(&br#"{"b":2,"z":3}"#[..]));
    }

    #[test]
    fn empty_config_keeps_objects() {
        let mut t = FieldMapper::init("").unwrap();
        let out = one(t.translate(record(Some("k"), Some(r#"{"b":1,"a":2}"#))));
        assert_eq!(out.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(out.value.as_deref(), Some(&br#"{"a":2,"b":1}"#[..]));
    }

    #[test]
    fn swap_is_allowed_collision_is_an_error() {
        let mut t = FieldMapper::init(r#"{"rename": {"a": "b", "b": "a"}}"#).unwrap();
        let out = one(t.translate(record(None, Some(r#"{"a":1,"b":2}"#))));
        assert_eq!(out.value.as_deref(), Some(&br#"{"a":2,"b":1}"#[..]));

        let mut t = FieldMapper::init(r#"{"rename": {"station": "location"}}"#).unwrap();
        let outcome = t.translate(record(None, Some(r#"{"location":1,"station":2}"#)));
        assert!(matches!(outcome, Outcome::Err(ref m) if m.contains("\"location\"")), "{outcome:?}");
    }

    #[test]
    fn bad_configs_are_rejected() {
        for (config, expected) in [
            ("{", "invalid configuration: EOF while parsing an object"),
            (r#"{"renames": {}}"#, "invalid configuration: unknown field `renames`"),
            (r#"{"rename": {"a": "x", "b": "x"}}"#, "are both renamed to \"x\""),
            (r#"{"rename": {"a": "x"}, "drop": ["a"]}"#, "is both renamed and dropped"),
        ] {
            let message = FieldMapper::init(config).err().unwrap();
            assert!(message.contains(expected), "{config}: {message}");
        }
    }
}

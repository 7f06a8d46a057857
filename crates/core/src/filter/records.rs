//! Conditions on A's records beyond their keys: headers (exists, or equals one of some values)
//! and fields of JSON values, named by JSON Pointer (RFC 6901).
//!
//! A value is not parsed into a tree: each field condition walks the JSON text down its pointer,
//! skipping every member and element off the path, and parses only the value it reaches.

use std::fmt;

use bytes::Bytes;
use serde::{
    de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor},
    Deserialize,
};
use serde_json::Value;

use crate::error::Error;

/// Most header and field conditions one filter may hold, each kind: they are checked on every
/// record.
pub const MAX_CONDITIONS: usize = 64;
/// Most values one condition may list.
pub const MAX_VALUES: usize = 256;
/// Longest header key, pointer or value in a condition, in bytes.
pub const MAX_CONDITION_BYTES: usize = 4_096;

/// A header condition: the header is present (with any value, null included) when `any_of` is
/// empty, or one of its occurrences has one of these values.
#[derive(Debug, Clone)]
pub struct HeaderCondition {
    pub key: String,
    pub any_of: Vec<Bytes>,
}

/// A field condition: the value is JSON and has a field at `pointer` (a JSON Pointer; `""` is
/// the whole value), equal to one of `any_of` when it is not empty. Numbers compare by value
/// (`1` equals `1.0`); objects compare member by member, whatever their order.
#[derive(Debug, Clone)]
pub struct FieldCondition {
    /// The pointer's reference tokens, unescaped (`~1` is `/`, `~0` is `~`).
    path: Vec<String>,
    any_of: Vec<Value>,
}

/// What a filter does with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it as it is.
    Deliver,
    /// Leave it out (positions still move past it).
    Skip,
    /// Deliver a tombstone of its key in its place: the key left the selection.
    Tombstone,
}

/// Conditions on A's records, all of which must hold.
#[derive(Debug, Clone, Default)]
pub struct RecordFilter {
    headers: Vec<HeaderCondition>,
    fields: Vec<FieldCondition>,
    /// Deliver a record that fails the conditions as a tombstone of its key, so that a follower's
    /// model holds exactly the keys whose latest record matches.
    tombstone_mismatches: bool,
}

impl RecordFilter {
    /// Checks the requested conditions; `field` names the filter in errors. Field conditions
    /// come as a pointer and the JSON texts of their values.
    pub fn new(
        headers: Vec<HeaderCondition>,
        fields: Vec<(String, Vec<String>)>,
        tombstone_mismatches: bool,
        field: &str,
    ) -> Result<Self, Error> {
        for (kind, count) in [("headers", headers.len()), ("fields", fields.len())] {
            if count > MAX_CONDITIONS {
                return Err(Error::invalid(
                    format!("{field}.{kind}"),
                    format!("{count} conditions; at most {MAX_CONDITIONS}"),
                ));
            }
        }
        for (i, h) in headers.iter().enumerate() {
            let at = format!("{field}.headers[{i}]");
            if h.key.is_empty() {
                return Err(Error::invalid(format!("{at}.key"), "a header key is required"));
            }
            check_size(&format!("{at}.key"), h.key.len())?;
            check_values(&at, &h.any_of.iter().map(Bytes::len).collect::<Vec<_>>())?;
        }
        let fields = fields
            .into_iter()
            .enumerate()
            .map(|(i, (pointer, any_of))| {
                let at = format!("{field}.fields[{i}]");
                check_size(&format!("{at}.pointer"), pointer.len())?;
                check_values(&at, &any_of.iter().map(String::len).collect::<Vec<_>>())?;
                let path = parse_pointer(&pointer).map_err(|m| Error::invalid(format!("{at}.pointer"), m))?;
                let any_of = any_of
                    .iter()
                    .enumerate()
                    .map(|(j, text)| {
                        serde_json::from_str(text).map_err(|e| {
                            Error::invalid(
                                format!("{at}.any_of[{j}]"),
                                format!(
                                    "not a JSON text ({e}): write the value as JSON, a string with its quotes \
                                     (\"active\"), a number as it is (42)"
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?;
                Ok(FieldCondition { path, any_of })
            })
            .collect::<Result<_, Error>>()?;
        Ok(Self { headers, fields, tombstone_mismatches })
    }

    pub fn is_empty(&self) -> bool {
        self.headers.is_empty() && self.fields.is_empty()
    }

    /// Whether a record with this value and these headers meets every condition. A tombstone
    /// (no value) meets the field conditions: its key is deleted whatever the value was.
    pub fn matches<'a>(
        &self,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> bool {
        self.headers_match(headers) && value.is_none_or(|v| self.fields.iter().all(|f| f.matches(v)))
    }

    /// What to do with a record of `key` that `matches` (or not).
    pub fn verdict(&self, key: Option<&[u8]>, value: Option<&[u8]>, matches: bool) -> Verdict {
        match (matches, self.tombstone_mismatches) {
            (true, _) => Verdict::Deliver,
            // A keyless record has no key to delete; a tombstone is delivered as it is.
            (false, true) if key.is_some() && value.is_some() => Verdict::Tombstone,
            (false, true) if key.is_some() => Verdict::Deliver,
            (false, _) => Verdict::Skip,
        }
    }

    /// Every header condition holds, in one pass over the headers.
    fn headers_match<'a>(&self, headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> bool {
        if self.headers.is_empty() {
            return true;
        }
        let all: u64 = if self.headers.len() == 64 { u64::MAX } else { (1 << self.headers.len()) - 1 };
        let mut met = 0u64;
        for (key, value) in headers {
            for (i, c) in self.headers.iter().enumerate() {
                let hit = c.key == key
                    && (c.any_of.is_empty() || value.is_some_and(|v| c.any_of.iter().any(|a| a.as_ref() == v)));
                if hit {
                    met |= 1 << i;
                }
            }
            if met == all {
                return true;
            }
        }
        met == all
    }
}

fn check_size(field: &str, len: usize) -> Result<(), Error> {
    if len > MAX_CONDITION_BYTES {
        return Err(Error::invalid(field, format!("{len} bytes; at most {MAX_CONDITION_BYTES}")));
    }
    Ok(())
}

fn check_values(at: &str, lens: &[usize]) -> Result<(), Error> {
    if lens.len() > MAX_VALUES {
        return Err(Error::invalid(format!("{at}.any_of"), format!("{} values; at most {MAX_VALUES}", lens.len())));
    }
    for (j, len) in lens.iter().enumerate() {
        check_size(&format!("{at}.any_of[{j}]"), *len)?;
    }
    Ok(())
}

/// A JSON Pointer's reference tokens, unescaped.
fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let Some(rest) = pointer.strip_prefix('/') else {
        return Err(format!(
            "{pointer:?} is not a JSON Pointer: it starts with \"/\" (\"/status\", \"/owner/id\"), or is \"\" for \
             the whole value"
        ));
    };
    rest.split('/')
        .map(|token| {
            let mut out = String::with_capacity(token.len());
            let mut chars = token.chars();
            while let Some(c) = chars.next() {
                if c != '~' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('0') => out.push('~'),
                    Some('1') => out.push('/'),
                    _ => {
                        return Err(format!(
                            "{pointer:?}: in a JSON Pointer \"~\" is written \"~0\", and \"/\" inside a name \"~1\""
                        ))
                    }
                }
            }
            Ok(out)
        })
        .collect()
}

impl FieldCondition {
    fn matches(&self, value: &[u8]) -> bool {
        let mut de = serde_json::Deserializer::from_slice(value);
        let found = match (At { path: &self.path }).deserialize(&mut de).and_then(|v| de.end().map(|()| v)) {
            Ok(Some(found)) => found,
            // Not JSON, or nothing at the pointer.
            Ok(None) | Err(_) => return false,
        };
        self.any_of.is_empty() || self.any_of.iter().any(|a| same(a, &found))
    }
}

/// JSON values equal as JSON: numbers by value, objects whatever their members' order.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

/// Reads the value at `path` out of a JSON text, skipping the rest (`None` when there is none).
struct At<'p> {
    path: &'p [String],
}

impl<'de> DeserializeSeed<'de> for At<'_> {
    type Value = Option<Value>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.path.split_first() {
            None => Value::deserialize(d).map(Some),
            Some((token, rest)) => d.deserialize_any(Step { token, rest }),
        }
    }
}

/// One step of a path: into the member `token` of an object, or the element `token` of an array.
struct Step<'p> {
    token: &'p str,
    rest: &'p [String],
}

/// Whether an object's member name equals the token (compared without an allocation when the
/// name has no escapes).
struct NameIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for NameIs<'_> {
    type Value = bool;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for NameIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a member name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<bool, E> {
        Ok(name == self.0)
    }
}

impl<'de> Visitor<'de> for Step<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("JSON")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // The last of duplicate names counts, as in a parsed tree; every member is read through.
        let mut found = None;
        while let Some(hit) = map.next_key_seed(NameIs(self.token))? {
            if hit {
                found = map.next_value_seed(At { path: self.rest })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // An index is digits with no leading zero; "-" (past the end) and others find nothing.
        let index = (self.token == "0" || !self.token.starts_with('0'))
            .then(|| self.token.parse::<usize>().ok())
            .flatten()
            .filter(|_| self.token.bytes().all(|b| b.is_ascii_digit()));
        let mut found = None;
        let mut i = 0;
        loop {
            let more = if Some(i) == index {
                match seq.next_element_seed(At { path: self.rest })? {
                    Some(v) => {
                        found = v;
                        true
                    }
                    None => false,
                }
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(found);
            }
            i += 1;
        }
    }

    // A scalar has no members: nothing is at the path.
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(conditions: &[(&str, &[&str])]) -> RecordFilter {
        let fields =
            conditions.iter().map(|(p, v)| (p.to_string(), v.iter().map(|s| s.to_string()).collect())).collect();
        RecordFilter::new(vec![], fields, false, "record_filter").unwrap()
    }

    fn header(key: &str, any_of: &[&[u8]]) -> HeaderCondition {
        HeaderCondition { key: key.into(), any_of: any_of.iter().map(|v| Bytes::copy_from_slice(v)).collect() }
    }

    fn value_matches(f: &RecordFilter, value: &str) -> bool {
        f.matches(Some(value.as_bytes()), [])
    }

    #[test]
    fn a_field_is_found_down_its_pointer_and_compared_as_json() {
        let f = fields(&[("/owner/id", &["7", "\"seven\""])]);
        assert!(value_matches(&f, r#"{"a":[1,{"b":2}],"owner":{"name":"x","id":7}}"#));
        assert!(value_matches(&f, r#"{"owner":{"id":7.0}}"#), "numbers compare by value");
        assert!(value_matches(&f, r#"{"owner":{"id":"seven"}}"#));
        assert!(!value_matches(&f, r#"{"owner":{"id":"7"}}"#), "a string is not a number");
        assert!(!value_matches(&f, r#"{"owner":{"id":8}}"#));
        assert!(!value_matches(&f, r#"{"owner":7}"#), "nothing under a scalar");
        assert!(!value_matches(&f, r#"{"id":7}"#));
        assert!(!value_matches(&f, r#"{"owner":{"id":7}"#), "not JSON");
        assert!(!value_matches(&f, r#"{"owner":{"id":7}} trailing"#), "not one JSON text");
        assert!(!value_matches(&f, "binary \u{1} bytes"));
    }

    #[test]
    fn exists_without_values_and_the_whole_value_with_an_empty_pointer() {
        let f = fields(&[("/deleted_at", &[])]);
        assert!(value_matches(&f, r#"{"deleted_at":null}"#), "a null field exists");
        assert!(!value_matches(&f, r#"{"deleted":1}"#));
        let f = fields(&[("", &[r#"{"b":[1,2],"a":1}"#])]);
        assert!(value_matches(&f, r#"{"a":1.0,"b":[1,2]}"#), "objects compare whatever the order");
        assert!(!value_matches(&f, r#"{"a":1,"b":[2,1]}"#), "arrays compare in order");
    }

    #[test]
    fn array_elements_escapes_and_duplicate_names() {
        let f = fields(&[("/tags/1", &["\"b\""])]);
        assert!(value_matches(&f, r#"{"tags":["a","b","c"]}"#));
        assert!(!value_matches(&f, r#"{"tags":["b"]}"#));
        assert!(!fields(&[("/tags/01", &[])]).matches(Some(br#"{"tags":[0,1]}"#), []), "no leading zero");
        assert!(!fields(&[("/tags/-", &[])]).matches(Some(br#"{"tags":[0,1]}"#), []), "past the end");
        let f = fields(&[("/a~1b/m~0n", &["1"])]);
        assert!(value_matches(&f, r#"{"a/b":{"m~n":1}}"#));
        let f = fields(&[("/k", &["2"])]);
        assert!(value_matches(&f, r#"{"k":1,"k":2}"#), "the last of duplicate names counts");
        let f = fields(&[("/na\\u006de", &[])]);
        assert!(!value_matches(&f, r#"{"name":1}"#));
        let f = fields(&[("/name", &[])]);
        assert!(value_matches(&f, r#"{"na\u006de":1}"#), "escaped member names are unescaped");
    }

    #[test]
    fn every_condition_must_hold_and_tombstones_pass_the_field_conditions() {
        let headers = vec![header("type", &[b"order", b"refund"]), header("tenant", &[])];
        let fields = vec![("/status".to_string(), vec!["\"open\"".to_string()])];
        let f = RecordFilter::new(headers, fields, false, "record_filter").unwrap();
        let open = Some(&br#"{"status":"open"}"#[..]);
        let typed: [(&str, Option<&[u8]>); 2] = [("type", Some(b"refund")), ("tenant", None)];
        assert!(f.matches(open, typed));
        assert!(!f.matches(Some(br#"{"status":"closed"}"#), typed));
        assert!(!f.matches(open, [("type", Some(&b"refund"[..]))]), "tenant is missing");
        assert!(!f.matches(open, [("type", Some(&b"other"[..])), ("tenant", Some(&b"t"[..]))]));
        assert!(
            f.matches(open, [("type", Some(&b"x"[..])), ("tenant", None), ("type", Some(&b"order"[..]))]),
            "any occurrence of a repeated header"
        );
        assert!(!f.matches(open, [("type", None), ("tenant", None)]), "a null value equals no value");
        assert!(f.matches(None, typed), "a tombstone passes the field conditions");
        assert!(!f.matches(None, [("tenant", None)]), "but not the header conditions");
    }

    #[test]
    fn verdicts_with_and_without_tombstones_for_mismatches() {
        let skip = RecordFilter::new(vec![header("h", &[])], vec![], false, "f").unwrap();
        assert_eq!(skip.verdict(Some(b"k"), Some(b"v"), true), Verdict::Deliver);
        assert_eq!(skip.verdict(Some(b"k"), Some(b"v"), false), Verdict::Skip);
        let delete = RecordFilter::new(vec![header("h", &[])], vec![], true, "f").unwrap();
        assert_eq!(delete.verdict(Some(b"k"), Some(b"v"), false), Verdict::Tombstone);
        assert_eq!(delete.verdict(Some(b"k"), None, false), Verdict::Deliver, "already a tombstone");
        assert_eq!(delete.verdict(None, Some(b"v"), false), Verdict::Skip, "no key to delete");
    }

    #[test]
    fn bad_conditions_are_refused_naming_the_field() {
        let field_of = |r: Result<RecordFilter, Error>| match r.unwrap_err() {
            Error::InvalidArgument { field, .. } => field,
            e => panic!("{e:?}"),
        };
        let one = |p: &str, v: &str| vec![(p.to_string(), vec![v.to_string()])];
        assert_eq!(field_of(RecordFilter::new(vec![], one("status", "1"), false, "rf")), "rf.fields[0].pointer");
        assert_eq!(field_of(RecordFilter::new(vec![], one("/a~2", "1"), false, "rf")), "rf.fields[0].pointer");
        assert_eq!(field_of(RecordFilter::new(vec![], one("/a~", "1"), false, "rf")), "rf.fields[0].pointer");
        assert_eq!(field_of(RecordFilter::new(vec![], one("/a", "open"), false, "rf")), "rf.fields[0].any_of[0]");
        assert_eq!(field_of(RecordFilter::new(vec![header("", &[])], vec![], false, "rf")), "rf.headers[0].key");
        let many = (0..=MAX_CONDITIONS).map(|i| header(&i.to_string(), &[])).collect();
        assert_eq!(field_of(RecordFilter::new(many, vec![], false, "rf")), "rf.headers");
        let long = "x".repeat(MAX_CONDITION_BYTES + 1);
        assert_eq!(field_of(RecordFilter::new(vec![header(&long, &[])], vec![], false, "rf")), "rf.headers[0].key");
        let values = vec![("/a".to_string(), vec!["1".to_string(); MAX_VALUES + 1])];
        assert_eq!(field_of(RecordFilter::new(vec![], values, false, "rf")), "rf.fields[0].any_of");
    }

    #[test]
    fn sixty_four_header_conditions_all_count() {
        let conditions: Vec<_> = (0..MAX_CONDITIONS).map(|i| header(&i.to_string(), &[])).collect();
        let f = RecordFilter::new(conditions, vec![], false, "f").unwrap();
        let names: Vec<String> = (0..MAX_CONDITIONS).map(|i| i.to_string()).collect();
        assert!(f.matches(Some(b"v"), names.iter().map(|n| (n.as_str(), None))));
        assert!(!f.matches(Some(b"v"), names[1..].iter().map(|n| (n.as_str(), None))));
    }
}

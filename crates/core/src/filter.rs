//! The filters shared by snapshots and subscriptions: on keys ([`KeyFilter`]), and on headers
//! and JSON fields of values ([`RecordFilter`]), together a [`Filter`].

use bytes::Bytes;

use crate::{
    error::Error,
    record::{Record, RecordRef},
};

mod records;

pub use records::{HeaderCondition, RecordFilter, Verdict, MAX_CONDITIONS, MAX_CONDITION_BYTES, MAX_VALUES};

/// Which of A's records a snapshot or a subscription delivers: those whose key the key filter
/// matches and that meet the record filter's conditions (checked on A's records, before any
/// translation).
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub keys: KeyFilter,
    pub records: RecordFilter,
}

impl Filter {
    /// Whether every record is delivered as it is (no filter).
    pub fn is_everything(&self) -> bool {
        self.keys.is_empty() && self.records.is_empty()
    }

    /// What to do with `record`.
    pub fn verdict(&self, record: &RecordRef<'_>) -> Verdict {
        self.judge(record.key, record.value, record.headers.iter().copied())
    }

    /// What to do with `record` (a record of the view; its headers are read in place).
    pub fn verdict_of(&self, record: &Record) -> Verdict {
        self.judge(record.key(), record.value(), record.headers())
    }

    fn judge<'a>(
        &self,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
    ) -> Verdict {
        if !self.keys.matches(key) {
            return Verdict::Skip;
        }
        if self.records.is_empty() {
            return Verdict::Deliver;
        }
        let matches = self.records.matches(value, headers);
        self.records.verdict(key, value, matches)
    }
}

/// Most keys and prefixes one filter may hold: the filter is checked on every record.
pub const MAX_FILTER_KEYS: usize = 1_024;

/// Matches a record whose key equals one of `exact` or starts with one of `prefixes`.
/// An empty filter matches every record, keyless ones included.
#[derive(Debug, Clone, Default)]
pub struct KeyFilter {
    exact: Vec<Bytes>,
    prefixes: Vec<Bytes>,
}

impl KeyFilter {
    /// Checks a requested filter; `field` names it in errors.
    pub fn new(exact: Vec<Bytes>, prefixes: Vec<Bytes>, field: &str) -> Result<Self, Error> {
        if exact.len() + prefixes.len() > MAX_FILTER_KEYS {
            return Err(Error::invalid(field, format!("at most {MAX_FILTER_KEYS} keys and prefixes together")));
        }
        if prefixes.iter().any(|p| p.is_empty()) {
            return Err(Error::invalid(
                format!("{field}.prefixes"),
                "an empty prefix matches every key; leave the filter out instead",
            ));
        }
        let mut exact = exact;
        exact.sort();
        exact.dedup();
        Ok(Self { exact, prefixes })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty()
    }

    pub fn matches(&self, key: Option<&[u8]>) -> bool {
        if self.is_empty() {
            return true;
        }
        let Some(key) = key else { return false };
        self.exact.binary_search_by(|k| k.as_ref().cmp(key)).is_ok() || self.prefixes.iter().any(|p| key.starts_with(p))
    }

    pub fn exact(&self) -> &[Bytes] {
        &self.exact
    }

    pub fn prefixes(&self) -> &[Bytes] {
        &self.prefixes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(exact: &[&str], prefixes: &[&str]) -> KeyFilter {
        let bytes = |s: &[&str]| s.iter().map(|s| Bytes::copy_from_slice(s.as_bytes())).collect();
        KeyFilter::new(bytes(exact), bytes(prefixes), "key_filter").unwrap()
    }

    #[test]
    fn empty_filter_matches_everything() {
        let f = KeyFilter::default();
        assert!(f.matches(None));
        assert!(f.matches(Some(b"x")));
    }

    #[test]
    fn exact_and_prefix() {
        let f = filter(&["b", "a"], &["media/"]);
        assert!(f.matches(Some(b"a")));
        assert!(f.matches(Some(b"b")));
        assert!(!f.matches(Some(b"ab")));
        assert!(f.matches(Some(b"media/7")));
        assert!(!f.matches(Some(b"medi")));
        assert!(!f.matches(None));
    }

    #[test]
    fn empty_prefix_is_rejected() {
        let err = KeyFilter::new(vec![], vec![Bytes::new()], "key_filter").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "key_filter.prefixes"));
    }

    #[test]
    fn too_many_keys_are_rejected() {
        let keys = (0..=MAX_FILTER_KEYS).map(|i| Bytes::from(i.to_string())).collect();
        let err = KeyFilter::new(keys, vec![], "key_filter").unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { ref field, .. } if field == "key_filter"));
    }
}

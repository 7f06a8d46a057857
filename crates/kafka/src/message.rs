//! Kafka messages as the core's [`Record`]s, or borrowed as [`RecordRef`]s: the one place a
//! message's key, value, headers and timestamp are read, for ingest and catch-up readers alike.

use std::sync::Arc;

use rdkafka::message::{Headers, Message};
use tributary_core::{
    decode::{Decode, OnError},
    events, Error, PartitionOffset, Record, RecordRef,
};

/// Calls `f` with the parts of a Kafka message, borrowed from librdkafka's buffers.
pub(crate) fn with_parts<M: Message, R>(m: &M, topic: &str, f: impl FnOnce(&RecordRef<'_>) -> R) -> R {
    // Once per record: librdkafka parses the headers (and allocates) on every call while a record
    // has none, which every Kafka v2 record without headers is.
    let headers: Vec<(&str, Option<&[u8]>)> =
        m.headers().map(|hs| hs.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
    f(&RecordRef {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        key: m.key(),
        value: m.payload(),
        headers: &headers,
    })
}

/// Copies a Kafka message into the gateway's record: key, value and header values in one buffer.
pub(crate) fn to_record<M: Message>(m: &M, topic: Arc<str>) -> Record {
    with_parts(m, "", |r| Record::new(topic, r.partition, r.offset, r.timestamp_ms, r.key, r.value, r.headers))
}

/// What a message's value is as the gateway reads it, its topic's schema decoding applied.
pub(crate) enum Value {
    /// As it is in Kafka: the topic is not decoded, or the record is a tombstone.
    AsIs,
    /// Decoded to JSON.
    Decoded(Vec<u8>),
    /// Undecodable, and its topic skips such records (counted and logged).
    Skip,
    /// Undecodable, and its topic keeps such records from being skipped (logged).
    Fail(Error),
}

/// `m`'s value through `decode` (no work for a topic it does not decode, or without one).
pub(crate) fn value_of<M: Message>(decode: Option<&dyn Decode>, m: &M) -> Value {
    let Some(decode) = decode else { return Value::AsIs };
    let (Some(on_error), Some(value)) = (decode.on_error(m.topic()), m.payload()) else { return Value::AsIs };
    match decode.decode(m.topic(), value) {
        Ok(json) => Value::Decoded(json),
        Err(error) => {
            let record = format!("{}/{}@{}", m.topic(), m.partition(), m.offset());
            let (topic, reason) = (m.topic().to_string(), error.failure.reason().to_string());
            match on_error {
                OnError::Skip => {
                    events::emit(&events::SchemaDecodeSkipped { topic, record, reason, error: error.message });
                    Value::Skip
                }
                OnError::Fail => {
                    let e = error.message.clone();
                    events::emit(&events::SchemaDecodeStopped { topic, record, reason, error: e });
                    Value::Fail(error.at(PartitionOffset::new(m.topic(), m.partition(), m.offset())))
                }
            }
        }
    }
}

/// A record of `m` with `value` in place of its own (its decoded value).
pub(crate) fn to_record_with<M: Message>(m: &M, topic: Arc<str>, value: &[u8]) -> Record {
    with_parts(m, "", |r| Record::new(topic, r.partition, r.offset, r.timestamp_ms, r.key, Some(value), r.headers))
}

/// The name of `m`'s topic, shared with `topics` when it is one of them (no allocation).
pub(crate) fn topic_of<M: Message>(topics: &[Arc<str>], m: &M) -> Arc<str> {
    let known = topics.iter().find(|t| ***t == *m.topic()).cloned();
    known.unwrap_or_else(|| Arc::from(m.topic()))
}

/// A record of `m`, sharing the name of its topic when it is one of `topics` (no allocation).
pub(crate) fn record_of<M: Message>(topics: &[Arc<str>], m: &M) -> Record {
    to_record(m, topic_of(topics, m))
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header, OwnedHeaders, OwnedMessage, Timestamp};

    use super::*;

    fn message(key: Option<&[u8]>, value: Option<&[u8]>, headers: Option<OwnedHeaders>, at: Timestamp) -> OwnedMessage {
        OwnedMessage::new(value.map(<[u8]>::to_vec), key.map(<[u8]>::to_vec), "t".into(), at, 3, 42, headers)
    }

    #[test]
    fn keys_values_and_headers_keep_null_apart_from_empty() {
        let headers = OwnedHeaders::new()
            .insert(Header { key: "null", value: None::<&[u8]> })
            .insert(Header { key: "empty", value: Some(&b""[..]) })
            .insert(Header { key: "full", value: Some(&b"x"[..]) })
            .insert(Header { key: "full", value: Some(&b"again"[..]) });
        let r = to_record(&message(Some(b""), None, Some(headers), Timestamp::CreateTime(7)), "t".into());
        assert_eq!((&*r.topic, r.partition, r.offset), ("t", 3, 42));
        assert_eq!((r.key(), r.value()), (Some(&b""[..]), None), "an empty key and a tombstone");
        let expected: Vec<(&str, Option<&[u8]>)> =
            vec![("null", None), ("empty", Some(b"")), ("full", Some(b"x")), ("full", Some(b"again"))];
        assert_eq!(r.headers().collect::<Vec<_>>(), expected, "every header, in order, repeats kept");

        let r = to_record(&message(None, Some(b""), None, Timestamp::CreateTime(7)), "t".into());
        assert_eq!((r.key(), r.value()), (None, Some(&b""[..])), "a keyless record with an empty value");
        assert_eq!(r.headers().count(), 0);
    }

    #[test]
    fn timestamps_of_either_kind_are_kept_and_a_missing_one_is_minus_one() {
        for (at, ms) in [
            (Timestamp::CreateTime(1_700_000_000_000), 1_700_000_000_000),
            (Timestamp::LogAppendTime(5), 5),
            (Timestamp::NotAvailable, -1),
        ] {
            assert_eq!(to_record(&message(Some(b"k"), Some(b"v"), None, at), "t".into()).timestamp_ms, ms, "{at:?}");
        }
    }

    #[test]
    fn records_share_the_name_of_a_known_topic() {
        let known: Vec<Arc<str>> = vec!["other".into(), "t".into()];
        let m = message(Some(b"k"), Some(b"v"), None, Timestamp::NotAvailable);
        let r = record_of(&known, &m);
        assert!(Arc::ptr_eq(&r.topic, &known[1]), "no allocation per record for an assigned topic");
        let unknown = record_of(&known[..1], &m);
        assert_eq!(&*unknown.topic, "t");
        assert!(!Arc::ptr_eq(&unknown.topic, &known[1]));
    }
}

//! Every mapping between protobuf messages and the core's types, each written once.

use tributary_core::{
    filter::{Filter, HeaderCondition, KeyFilter, RecordFilter},
    subscribe::Progress,
    Error, Header, Output, PartitionOffset,
};
use tributary_wasm::{TranslatorInfo, TranslatorRef, VersionInfo};

use crate::pb;

pub fn partition_offset(po: &PartitionOffset) -> pb::PartitionOffset {
    pb::PartitionOffset { topic: po.topic.clone(), partition: po.partition, offset: po.offset }
}

pub fn offsets(offsets: &[PartitionOffset]) -> Vec<pb::PartitionOffset> {
    offsets.iter().map(partition_offset).collect()
}

pub fn from_partition_offset(po: pb::PartitionOffset) -> PartitionOffset {
    PartitionOffset { topic: po.topic, partition: po.partition, offset: po.offset }
}

fn headers(headers: Vec<Header>) -> Vec<pb::Header> {
    headers.into_iter().map(|(key, value)| pb::Header { key, value }).collect()
}

/// An output as a streamed record: B's key, value and headers (or A's) at A's coordinates.
pub fn record(output: Output) -> pb::Record {
    let source = &output.source;
    let (key, value, headers) = match output.payload() {
        Some(p) => (p.key.clone(), p.value.clone(), p.headers.clone()),
        None => (source.key_bytes(), source.value_bytes(), source.header_list()),
    };
    pb::Record {
        topic: source.topic.to_string(),
        partition: source.partition,
        offset: source.offset,
        timestamp_ms: source.timestamp_ms,
        key,
        value,
        headers: self::headers(headers),
        output_index: output.index,
    }
}

/// An output as a snapshot entry (a snapshot never holds a null key or value: empty instead).
pub fn entry(output: Output) -> pb::SnapshotEntry {
    let r = record(output);
    pb::SnapshotEntry {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key.unwrap_or_default(),
        value: r.value.unwrap_or_default(),
        headers: r.headers,
        output_index: r.output_index,
    }
}

/// A subscription's progress as a `SubscribeResponse` (records are written by
/// [`super::encode::SubscribeWire`]).
pub fn progress(Progress { offsets, skipped_records }: Progress) -> pb::SubscribeResponse {
    let progress = pb::Progress { offsets: self::offsets(&offsets), skipped_records };
    pb::SubscribeResponse { message: Some(pb::subscribe_response::Message::Progress(progress)) }
}

/// A request's key filter (`None`: every key), checked.
pub fn key_filter(filter: Option<pb::KeyFilter>, field: &str) -> Result<KeyFilter, Error> {
    match filter {
        None => Ok(KeyFilter::default()),
        Some(f) => KeyFilter::new(f.exact, f.prefixes, field),
    }
}

/// A request's record filter (`None`: no conditions), checked.
pub fn record_filter(filter: Option<pb::RecordFilter>, field: &str) -> Result<RecordFilter, Error> {
    let Some(f) = filter else { return Ok(RecordFilter::default()) };
    let headers = f.headers.into_iter().map(|h| HeaderCondition { key: h.key, any_of: h.any_of }).collect();
    let fields = f.fields.into_iter().map(|c| (c.pointer, c.any_of)).collect();
    RecordFilter::new(headers, fields, f.tombstone_mismatches, field)
}

/// A request's key and record filters, checked.
pub fn filter(keys: Option<pb::KeyFilter>, records: Option<pb::RecordFilter>) -> Result<Filter, Error> {
    Ok(Filter { keys: key_filter(keys, "key_filter")?, records: record_filter(records, "record_filter")? })
}

pub fn translator_ref(r: pb::TranslatorRef) -> TranslatorRef {
    TranslatorRef { name: r.name, digest: r.digest, config: r.config, skip_errors: r.skip_errors }
}

pub fn version(v: VersionInfo) -> pb::TranslatorVersion {
    pb::TranslatorVersion {
        name: v.name,
        digest: v.digest,
        size: v.size,
        uploaded_at_ms: v.uploaded_at_ms,
        version: v.version,
    }
}

pub fn translator_info(t: TranslatorInfo) -> pb::TranslatorInfo {
    pb::TranslatorInfo { name: t.name, versions: t.versions.into_iter().map(version).collect() }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use tributary_core::{Payload, Record};

    use super::*;

    fn source() -> Record {
        Record::new("a".into(), 2, 9, 5, Some(b"k"), None, &[("h", None)])
    }

    #[test]
    fn untranslated_records_keep_nulls_and_headers() {
        let r = record(Output::untranslated(source()));
        assert_eq!((r.topic.as_str(), r.partition, r.offset, r.timestamp_ms), ("a", 2, 9, 5));
        assert_eq!(r.key.as_deref(), Some(b"k".as_slice()));
        assert_eq!(r.value, None, "a tombstone stays null, not empty");
        assert_eq!(r.headers, vec![pb::Header { key: "h".into(), value: None }]);
    }

    #[test]
    fn translated_outputs_keep_source_coordinates() {
        let payload = Payload { key: None, value: Some(Bytes::from_static(b"B")), headers: vec![] };
        let payloads = vec![Payload::default(), Payload::default(), Payload::default(), payload];
        let e = entry(Output::translated(source(), payloads.into(), 3));
        assert_eq!((e.topic.as_str(), e.partition, e.offset, e.output_index), ("a", 2, 9, 3));
        assert_eq!(e.value.as_ref(), b"B");
        assert!(e.key.is_empty() && e.headers.is_empty());
    }
}

//! `Subscribe` responses and snapshot entries encoded as protobuf by hand, so that a record is
//! written straight from where it is (the view, librdkafka's buffer) into tonic's buffer, and a
//! snapshot entry costs no protobuf struct.
//!
//! A `RecordBatch` is a sequence of `Record` messages, each framed by a tag and a length: a
//! `SubscribeResponse` is written straight into the output buffer, record by record, with no
//! protobuf structs and no per-record allocation. A's records sent as they are come as the
//! view's records (from the tail) or lent by a catch-up reader (librdkafka's messages), each
//! encoded straight into tonic's buffer: one copy of their bytes. Translated outputs are encoded in place, their lengths
//! computed first. The bytes on the wire are exactly those of
//! `tributary.v1.SubscribeResponse`: clients see no difference.
//!
//! This module knows protobuf's encoding, not tonic's codec: [`super::codec`] hands tonic's buffer
//! to a [`Wire`] response, and [`super::routes`] decides which calls are answered that way.

use bytes::{BufMut, BytesMut};
use prost::{
    encoding::{encode_key, encode_varint, encoded_len_varint, key_len, WireType},
    Message,
};
use tonic::Status;
use tributary_core::{Encode, Encoded, Output, RecordRef, Wire as RecordWire};

use crate::pb;

/// A response written as protobuf by hand ([`super::codec::WireCodec`] writes it into tonic's
/// buffer).
pub trait Wire {
    /// Writes the response, reserving its exact length first (one allocation per response).
    fn write(&self, buf: &mut impl WireBuf);
}

/// A buffer a [`Wire`] response is written into: tonic's ([`super::codec`]), or a plain one.
pub trait WireBuf: BufMut {
    fn reserve(&mut self, additional: usize);
}

impl WireBuf for BytesMut {
    fn reserve(&mut self, additional: usize) {
        BytesMut::reserve(self, additional);
    }
}

/// One `SubscribeResponse`, ready to write.
#[derive(Debug)]
pub enum SubscribeWire {
    /// A `RecordBatch` of translated outputs (or records nothing encoded yet).
    Records(Vec<Output>),
    /// A `RecordBatch` of A's records as they are, each encoded already.
    Encoded(Vec<Encoded>),
    /// Any other response (progress), encoded as usual.
    Message(pb::SubscribeResponse),
}

/// `SubscribeResponse.records` and `RecordBatch.records` are both field 1.
const RECORDS_FIELD: u32 = 1;

impl SubscribeWire {
    /// The response as the generated struct (for [`pb::gateway_server::Gateway::subscribe`], which
    /// the routed path does not use).
    pub fn into_message(self) -> Result<pb::SubscribeResponse, Status> {
        match self {
            SubscribeWire::Message(m) => Ok(m),
            SubscribeWire::Records(_) | SubscribeWire::Encoded(_) => {
                let mut buf = BytesMut::new();
                self.write(&mut buf);
                pb::SubscribeResponse::decode(buf.freeze()).map_err(|e| Status::internal(e.to_string()))
            }
        }
    }

    /// Writes a `RecordBatch` of records of these encoded lengths, each written by `put`.
    fn write_batch<B: WireBuf>(lens: &[usize], buf: &mut B, mut put: impl FnMut(usize, &mut B)) {
        let batch_len: usize =
            lens.iter().map(|len| key_len(RECORDS_FIELD) + encoded_len_varint(*len as u64) + len).sum();
        buf.reserve(key_len(RECORDS_FIELD) + encoded_len_varint(batch_len as u64) + batch_len);
        encode_key(RECORDS_FIELD, WireType::LengthDelimited, buf);
        encode_varint(batch_len as u64, buf);
        for (i, len) in lens.iter().enumerate() {
            encode_key(RECORDS_FIELD, WireType::LengthDelimited, buf);
            encode_varint(*len as u64, buf);
            put(i, buf);
        }
    }
}

impl Wire for SubscribeWire {
    fn write(&self, buf: &mut impl WireBuf) {
        match self {
            SubscribeWire::Message(m) => {
                buf.reserve(m.encoded_len());
                m.encode_raw(buf)
            }
            SubscribeWire::Records(outputs) => {
                let lens: Vec<usize> = outputs.iter().map(|o| output_len(o, Presence::Optional)).collect();
                Self::write_batch(&lens, buf, |i, buf| put_output(&outputs[i], Presence::Optional, buf));
            }
            SubscribeWire::Encoded(records) => {
                // A shared run is a sequence of framed records already (`encode_item`).
                let framed = |wire: &RecordWire| match wire {
                    RecordWire::Run(run) => run.bytes.len(),
                    wire => key_len(RECORDS_FIELD) + encoded_len_varint(wire.len() as u64) + wire.len(),
                };
                let batch_len: usize = records.iter().map(|r| framed(&r.wire)).sum();
                buf.reserve(key_len(RECORDS_FIELD) + encoded_len_varint(batch_len as u64) + batch_len);
                encode_key(RECORDS_FIELD, WireType::LengthDelimited, buf);
                encode_varint(batch_len as u64, buf);
                for record in records {
                    if let RecordWire::Run(run) = &record.wire {
                        buf.put_slice(&run.bytes);
                        continue;
                    }
                    encode_key(RECORDS_FIELD, WireType::LengthDelimited, buf);
                    encode_varint(record.wire.len() as u64, buf);
                    match &record.wire {
                        RecordWire::Bytes(bytes) => buf.put_slice(bytes),
                        RecordWire::Record { record, .. } => record.with_ref(|r| put_record(r, buf)),
                        // Straight from librdkafka's buffer into tonic's: the record's one copy.
                        RecordWire::Lent(lent) => lent.with_ref(|r| put_record(r, buf)),
                        RecordWire::Run(_) => unreachable!("written above"),
                    }
                }
            }
        }
    }
}

/// A's record as a `tributary.v1.Record` message, appended to `buf` (the same bytes as prost's
/// encoding of [`crate::api::convert::record`]'s result, without building it).
pub fn encode_record(r: &RecordRef<'_>, buf: &mut BytesMut) {
    buf.reserve(record_len(r));
    put_record(r, buf);
}

/// The gateway's [`tributary_core::Encode`] for records sent as they are: [`encode_record`].
pub struct RecordEncoder;

impl Encode for RecordEncoder {
    fn encode(&self, record: &RecordRef<'_>, buf: &mut BytesMut) {
        encode_record(record, buf);
    }

    fn encoded_len(&self, record: &RecordRef<'_>) -> usize {
        record_len(record)
    }

    /// The record as an entry of a `RecordBatch`: field 1, its length, the record.
    fn encode_item(&self, record: &RecordRef<'_>, buf: &mut BytesMut) {
        let len = record_len(record);
        buf.reserve(key_len(RECORDS_FIELD) + encoded_len_varint(len as u64) + len);
        encode_key(RECORDS_FIELD, WireType::LengthDelimited, buf);
        encode_varint(len as u64, buf);
        put_record(record, buf);
    }
}

/// Writes what [`encode_record`] appends, into any buffer (room reserved by the caller).
fn put_record(r: &RecordRef<'_>, buf: &mut impl BufMut) {
    let (index, key, value, mut headers) = (0, r.key, r.value, r.headers.iter().copied());
    put_fields(&Coordinates::of(r), (index, key, value, &mut headers), Presence::Optional, buf);
}

/// The length of what [`encode_record`] appends.
fn record_len(r: &RecordRef<'_>) -> usize {
    let (index, key, value, mut headers) = (0, r.key, r.value, r.headers.iter().copied());
    fields_len(&Coordinates::of(r), (index, key, value, &mut headers), Presence::Optional)
}

/// An output as a `tributary.v1.SnapshotEntry` message, appended to `buf`.
pub fn encode_entry(output: &Output, buf: &mut BytesMut) {
    put_output(output, Presence::Implicit, buf);
}

/// How key and value are written: `Record` has `optional bytes` (a present empty value is
/// written), `SnapshotEntry` plain `bytes` (empty is the default and is not written).
#[derive(Clone, Copy, PartialEq)]
enum Presence {
    Optional,
    Implicit,
}

/// An output's delivered fields: A's record's, or the translator's.
type Delivered<'a, 'i> =
    (u32, Option<&'a [u8]>, Option<&'a [u8]>, &'i mut dyn Iterator<Item = (&'a str, Option<&'a [u8]>)>);

/// A's coordinates of a record or output: topic, partition, offset and timestamp.
struct Coordinates<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
}

impl<'a> Coordinates<'a> {
    fn of(r: &RecordRef<'a>) -> Self {
        Self { topic: r.topic, partition: r.partition, offset: r.offset, timestamp_ms: r.timestamp_ms }
    }

    fn of_output(output: &'a Output) -> Self {
        let s = &output.source;
        Self { topic: &s.topic, partition: s.partition, offset: s.offset, timestamp_ms: s.timestamp_ms }
    }
}

/// Calls `f` with what `output` delivers: its index, key, value and headers.
fn with_delivered<R>(output: &Output, f: impl FnOnce(Delivered<'_, '_>) -> R) -> R {
    let source = &output.source;
    match output.payload() {
        None => {
            let mut headers = source.headers();
            f((0, source.key(), source.value(), &mut headers))
        }
        Some(p) => {
            let mut headers = p.headers.iter().map(|(k, v)| (k.as_str(), v.as_deref()));
            f((output.index, p.key.as_deref(), p.value.as_deref(), &mut headers))
        }
    }
}

fn put_output(output: &Output, presence: Presence, buf: &mut impl BufMut) {
    with_delivered(output, |delivered| put_fields(&Coordinates::of_output(output), delivered, presence, buf))
}

/// The fields `Record` and `SnapshotEntry` share (same numbers and types): A's coordinates, the
/// key, value and headers delivered, and which output of the source record this is.
fn put_fields(
    source: &Coordinates<'_>,
    (index, key, value, headers): Delivered<'_, '_>,
    presence: Presence,
    buf: &mut impl BufMut,
) {
    if !source.topic.is_empty() {
        put_bytes(1, source.topic.as_bytes(), buf);
    }
    // int32 and int64 are varints of the value's 64-bit two's complement.
    put_varint(2, source.partition as i64 as u64, buf);
    put_varint(3, source.offset as u64, buf);
    put_varint(4, source.timestamp_ms as u64, buf);
    for (tag, part) in [(5, key), (6, value)] {
        if let Some(bytes) = written(part, presence) {
            put_bytes(tag, bytes, buf);
        }
    }
    for (key, value) in headers {
        encode_key(7, WireType::LengthDelimited, buf);
        encode_varint(header_len(key, value) as u64, buf);
        if !key.is_empty() {
            put_bytes(1, key.as_bytes(), buf);
        }
        if let Some(value) = value {
            put_bytes(2, value, buf);
        }
    }
    put_varint(8, u64::from(index), buf);
}

/// Encoded length of what [`put_output`] writes.
fn output_len(output: &Output, presence: Presence) -> usize {
    with_delivered(output, |delivered| fields_len(&Coordinates::of_output(output), delivered, presence))
}

/// Encoded length of what [`put_fields`] writes, field by field in the same order.
fn fields_len(source: &Coordinates<'_>, (index, key, value, headers): Delivered<'_, '_>, presence: Presence) -> usize {
    let topic = if source.topic.is_empty() { 0 } else { bytes_len(1, source.topic.len()) };
    let coordinates = varint_len(2, source.partition as i64 as u64)
        + varint_len(3, source.offset as u64)
        + varint_len(4, source.timestamp_ms as u64);
    let parts: usize = [(5, key), (6, value)]
        .into_iter()
        .filter_map(|(tag, p)| Some(bytes_len(tag, written(p, presence)?.len())))
        .sum();
    let headers: usize = headers.map(|(k, v)| bytes_len(7, header_len(k, v))).sum();
    topic + coordinates + parts + headers + varint_len(8, u64::from(index))
}

/// The key or value as written: `Record`'s optional fields are written when present, even empty;
/// `SnapshotEntry`'s plain fields only when not empty.
fn written(part: Option<&[u8]>, presence: Presence) -> Option<&[u8]> {
    part.filter(|bytes| presence == Presence::Optional || !bytes.is_empty())
}

/// Length of a `Header` message's body.
fn header_len(key: &str, value: Option<&[u8]>) -> usize {
    let key_field = if key.is_empty() { 0 } else { bytes_len(1, key.len()) };
    key_field + value.map_or(0, |v| bytes_len(2, v.len()))
}

/// Length of a length-delimited field of `len` bytes.
fn bytes_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Length of a varint field (nothing for zero, the default).
fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// A length-delimited field (proto3 omits nothing for `optional` and repeated fields).
fn put_bytes(tag: u32, bytes: &[u8], buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

/// A varint field; zero is the default and is not written.
fn put_varint(tag: u32, value: u64, buf: &mut impl BufMut) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

#[cfg(test)]
mod tests {

    use bytes::Bytes;
    use tributary_core::{Payload, Record};

    use super::*;

    /// A's record as the gateway sends it untranslated.
    fn encoded(r: &Record) -> Encoded {
        r.encode(&RecordEncoder)
    }
    use crate::api::convert;

    fn record(partition: i32, offset: i64, timestamp_ms: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Record {
        Record::new("topic-ä".into(), partition, offset, timestamp_ms, key, value, &[])
    }

    #[test]
    fn a_record_encodes_exactly_as_prost_encodes_it() {
        let headers: [(&str, Option<&[u8]>); 3] = [("h", Some(b"v")), ("", None), ("n", Some(b""))];
        let with_headers =
            Record::new("topic-ä".into(), 3, 1 << 40, 1_700_000_000_000, Some(b"k"), Some(&[7; 300]), &headers);
        let cases = [
            record(0, 0, 0, None, None),
            record(0, 0, -1, Some(b""), Some(b"")),
            record(-1, -5, i64::MIN, Some(b"key"), None),
            record(i32::MAX, i64::MAX, i64::MAX, None, Some(b"value")),
            Record::new("".into(), 1, 1, 1, None, None, &[]),
            with_headers,
        ];
        for r in cases {
            let expected = convert::record(Output::untranslated(r.clone())).encode_to_vec();
            let written = r.wire(&RecordEncoder);
            assert_eq!(written.as_ref(), expected.as_slice(), "{r:?}");
            assert_eq!(written.len(), output_len(&Output::untranslated(r.clone()), Presence::Optional));
            assert_eq!(written.len(), r.with_ref(|r| RecordEncoder.encoded_len(r)), "the length told without writing");
        }
    }

    /// Records lent by index, as a catch-up reader lends librdkafka's messages.
    struct Lending(Vec<Record>);

    impl tributary_core::Lender for Lending {
        fn lend(&self, index: usize, f: &mut dyn FnMut(&RecordRef<'_>)) {
            self.0[index].with_ref(|r| f(r));
        }
    }

    #[test]
    fn lent_records_are_written_as_their_encodings_are() {
        let headers: [(&str, Option<&[u8]>); 1] = [("h", Some(b"v"))];
        let records: Vec<Record> = (0..4)
            .map(|o| Record::new("t".into(), 2, o, 5, Some(b"k"), Some(&[o as u8; 1500]), &headers[..(o % 2) as usize]))
            .collect();
        let batch: std::sync::Arc<dyn tributary_core::Lender> = std::sync::Arc::new(Lending(records.clone()));
        // Every other one delivered as a tombstone of its key (a filter's verdict).
        let lent = records.iter().enumerate().map(|(i, r)| {
            let tombstone = i % 2 == 1;
            let delivered = if tombstone { r.to_tombstone() } else { r.clone() };
            let len = delivered.with_ref(|r| RecordEncoder.encoded_len(r));
            let wire = RecordWire::Lent(tributary_core::Lent::new(batch.clone(), i, tombstone, len));
            (Encoded { wire, data_bytes: delivered.data_bytes() }, delivered)
        });
        let (lent, delivered): (Vec<Encoded>, Vec<Record>) = lent.unzip();
        let mut written = BytesMut::new();
        SubscribeWire::Encoded(lent).write(&mut written);
        let mut expected = BytesMut::new();
        SubscribeWire::Encoded(delivered.iter().map(encoded).collect()).write(&mut expected);
        assert_eq!(written, expected);
        let decoded = pb::SubscribeResponse::decode(written.freeze()).unwrap();
        let Some(pb::subscribe_response::Message::Records(batch)) = decoded.message else { panic!("a batch") };
        let values: Vec<Option<usize>> = batch.records.iter().map(|r| r.value.as_ref().map(|v| v.len())).collect();
        assert_eq!(values, vec![Some(1500), None, Some(1500), None]);
    }

    #[test]
    fn a_shared_run_is_written_as_the_records_it_holds() {
        let headers: [(&str, Option<&[u8]>); 1] = [("h", Some(b"v"))];
        let records: Vec<Record> = (0..5)
            .map(|o| Record::new("t".into(), 1, o, 5, Some(b"k"), (o != 3).then_some(&[o as u8; 200][..]), &headers))
            .collect();
        let mut items = BytesMut::new();
        for r in &records[1..4] {
            r.with_ref(|r| RecordEncoder.encode_item(r, &mut items));
        }
        let data_bytes = records[1..4].iter().map(Record::data_bytes).sum();
        let run = Encoded::run(tributary_core::Run { bytes: items.freeze(), records: 3 }, data_bytes);
        assert_eq!((run.records(), run.size()), (3, records[1..4].iter().map(Record::size).sum()));
        // A run between single records: the same bytes as each record on its own.
        let records_to = |rs: &[Record]| rs.iter().map(|r| r.to_encode(&RecordEncoder)).collect::<Vec<_>>();
        let mut mixed = records_to(&records[..1]);
        mixed.push(run);
        mixed.extend(records_to(&records[4..]));
        let mut written = BytesMut::new();
        SubscribeWire::Encoded(mixed).write(&mut written);
        let mut expected = BytesMut::new();
        SubscribeWire::Encoded(records.iter().map(encoded).collect()).write(&mut expected);
        assert_eq!(written, expected);
        assert_eq!(written.capacity(), written.len(), "the exact length reserved");
        let decoded = pb::SubscribeResponse::decode(written.freeze()).unwrap();
        let Some(pb::subscribe_response::Message::Records(batch)) = decoded.message else { panic!("a batch") };
        assert_eq!(batch.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert_eq!(batch.records[3].value, None, "a tombstone in the run");
    }

    #[test]
    fn a_snapshot_entry_encodes_exactly_as_prost_encodes_it() {
        let headers: [(&str, Option<&[u8]>); 2] = [("h", Some(b"v")), ("n", None)];
        let source = Record::new("t".into(), 1, 9, -1, Some(b""), Some(b"v"), &headers);
        let translated = |key: Option<&'static [u8]>| {
            let payload = Payload {
                key: key.map(Bytes::from_static),
                value: Some(Bytes::from_static(b"B")),
                headers: vec![("x".into(), Some(Bytes::from_static(b"1")))],
            };
            Output::translated(source.clone(), vec![Payload::default(), Payload::default(), payload].into(), 2)
        };
        for output in [Output::untranslated(source.clone()), translated(None), translated(Some(b"k"))] {
            let mut written = BytesMut::new();
            encode_entry(&output, &mut written);
            assert_eq!(output_len(&output, Presence::Implicit), written.len(), "length computed = length written");
            assert_eq!(written.as_ref(), convert::entry(output).encode_to_vec().as_slice());
        }
    }

    #[test]
    fn a_batch_of_outputs_or_of_encoded_records_is_a_subscribe_response() {
        let headers: [(&str, Option<&[u8]>); 2] = [("h", Some(b"v")), ("n", None)];
        let source = Record::new("t".into(), 2, 9, 5, Some(b"k"), Some(b"v"), &headers);
        let payload = Payload { key: None, value: Some(Bytes::from_static(b"B")), headers: vec![] };
        let translated = Output::translated(source.clone(), vec![Payload::default(), payload].into(), 1);
        let outputs = vec![Output::untranslated(source.clone()), translated, Output::untranslated(source.clone())];
        let response = |outputs: &[Output]| pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Records(pb::RecordBatch {
                records: outputs.iter().cloned().map(convert::record).collect(),
            })),
        };
        for output in &outputs {
            let mut alone = BytesMut::new();
            put_output(output, Presence::Optional, &mut alone);
            assert_eq!(output_len(output, Presence::Optional), alone.len(), "length computed = length written");
        }
        let expected = response(&outputs);
        let mut written = BytesMut::new();
        SubscribeWire::Records(outputs).write(&mut written);
        assert_eq!(written.as_ref(), expected.encode_to_vec().as_slice());
        // One allocation of the exact length, reserved before writing (no growth steps).
        assert_eq!(written.capacity(), written.len());

        // A's records sent as they are, encoded already: the same bytes as their outputs.
        let other = record(0, 1 << 40, -1, None, Some(b""));
        let untranslated = [Output::untranslated(source.clone()), Output::untranslated(other.clone())];
        let wire = SubscribeWire::Encoded(vec![encoded(&source), encoded(&other)]);
        let mut written = BytesMut::new();
        wire.write(&mut written);
        assert_eq!(written.as_ref(), response(&untranslated).encode_to_vec().as_slice());
        assert_eq!(written.capacity(), written.len());
        let wire = SubscribeWire::Encoded(vec![encoded(&source), encoded(&other)]);
        assert_eq!(wire.into_message().unwrap(), response(&untranslated));
    }
}

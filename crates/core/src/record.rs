//! The records the gateway moves: A's [`Record`] as read from Kafka, B's [`Output`] made from one,
//! A's record as the delivering layer sends it ([`Encoded`], made by an [`Encode`]), and
//! [`PartitionOffset`], the position a client resumes from.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use triomphe::ThinArc;

/// A header of a record: a key and a value that may be null (not the same as empty).
pub type Header = (String, Option<Bytes>);

/// A Kafka record of A's, as the gateway keeps it: a handle to one allocation shared by the state
/// map, the tail buffer and every subscriber that delivers it (cloning counts a reference).
///
/// The allocation holds the coordinates ([`Meta`], reached through `Deref`: `record.offset`), then
/// the key, the value and each header's value one after the other, so that a record costs one
/// allocation whatever it holds: the view keeps one per key.
#[derive(Clone)]
pub struct Record(ThinArc<Meta, u8>);

/// A record's coordinates and the layout of its bytes.
#[derive(Debug, PartialEq)]
pub struct Meta {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, -1 when unknown.
    pub timestamp_ms: i64,
    /// Length of the key, [`ABSENT`] for a keyless record.
    key_len: u32,
    /// Length of the value after the key, [`ABSENT`] for a tombstone.
    value_len: u32,
    /// Header keys and value lengths (values follow the value). Most records have none: a boxed
    /// `Vec` costs them one word (a boxed slice would cost two).
    #[allow(clippy::box_collection)]
    headers: Option<Box<Vec<HeaderLayout>>>,
}

/// A header's key and the length of its value ([`ABSENT`] when null).
type HeaderLayout = (Box<str>, u32);

impl std::ops::Deref for Record {
    type Target = Meta;

    fn deref(&self) -> &Meta {
        &self.0.header.header
    }
}

impl PartialEq for Record {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0.heap_ptr(), other.0.heap_ptr()) || (**self == **other && self.data() == other.data())
    }
}

/// A key, value or header value that is null (not the same as empty).
const ABSENT: u32 = u32::MAX;

fn len_of(part: Option<&[u8]>) -> u32 {
    part.map_or(ABSENT, |p| u32::try_from(p.len()).expect("a Kafka record part is smaller than 4 GiB"))
}

fn used(len: u32) -> usize {
    if len == ABSENT {
        0
    } else {
        len as usize
    }
}

impl Record {
    /// A record of `topic`/`partition` at `offset`; the key, value and header values are copied
    /// into the record's one allocation.
    pub fn new(
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Self {
        let (key_len, value_len) = (len_of(key), len_of(value));
        let parts = || [key, value].into_iter().chain(headers.iter().map(|(_, v)| *v)).flatten();
        let length = parts().map(<[u8]>::len).sum();
        let header_meta = (!headers.is_empty())
            .then(|| Box::new(headers.iter().map(|(k, v)| (Box::from(*k), len_of(*v))).collect::<Vec<_>>()));
        let meta = Meta { topic, partition, offset, timestamp_ms, key_len, value_len, headers: header_meta };
        // Zeroed, then each part copied in (a memset and memcpys, not a byte at a time).
        let mut arc = ThinArc::from_header_and_iter(meta, std::iter::repeat_n(0u8, length));
        arc.with_arc_mut(|arc| {
            let data = triomphe::Arc::get_mut(arc).expect("a record's allocation is its own until shared").slice_mut();
            let mut at = 0;
            for part in parts() {
                data[at..at + part.len()].copy_from_slice(part);
                at += part.len();
            }
        });
        Self(arc)
    }

    /// Key, value and header values, one after the other.
    fn data(&self) -> &[u8] {
        &self.0.slice
    }

    /// The key; `None` for a keyless record (not the same as an empty key).
    pub fn key(&self) -> Option<&[u8]> {
        (self.key_len != ABSENT).then(|| &self.data()[..self.key_len as usize])
    }

    /// The value; `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        let start = used(self.key_len);
        (self.value_len != ABSENT).then(|| &self.data()[start..start + self.value_len as usize])
    }

    /// The key as shared bytes (no copy: they keep the record alive).
    pub fn key_bytes(&self) -> Option<Bytes> {
        (self.key_len != ABSENT).then(|| self.share(0..self.key_len as usize))
    }

    /// The value as shared bytes (no copy: they keep the record alive).
    pub fn value_bytes(&self) -> Option<Bytes> {
        let start = used(self.key_len);
        (self.value_len != ABSENT).then(|| self.share(start..start + self.value_len as usize))
    }

    /// The headers in order: key and value (`None` when null).
    pub fn headers(&self) -> impl Iterator<Item = (&str, Option<&[u8]>)> + '_ {
        self.header_ranges().map(|(k, v)| (k, v.map(|v| &self.data()[v])))
    }

    /// The headers with their values as shared bytes (no copy).
    pub fn header_list(&self) -> Vec<Header> {
        self.header_ranges().map(|(k, v)| (k.to_string(), v.map(|v| self.share(v)))).collect()
    }

    /// Each header's key and where its value is in `data`.
    fn header_ranges(&self) -> impl Iterator<Item = (&str, Option<std::ops::Range<usize>>)> + '_ {
        let mut at = used(self.key_len) + used(self.value_len);
        self.headers.iter().flat_map(|h| h.iter()).map(move |(key, len)| {
            let value = (*len != ABSENT).then(|| at..at + *len as usize);
            at += used(*len);
            (&**key, value)
        })
    }

    /// `range` of the data as `Bytes` that own a reference to the record.
    fn share(&self, range: std::ops::Range<usize>) -> Bytes {
        if range.is_empty() {
            return Bytes::new();
        }
        Bytes::from_owner(Part(self.clone(), range))
    }

    /// Bytes the record holds (keys, values, headers, plus a fixed overhead), which tail buffers
    /// and batches bound.
    pub fn size(&self) -> usize {
        self.data_bytes() + RECORD_OVERHEAD
    }

    /// Key, value and header bytes.
    pub fn data_bytes(&self) -> usize {
        self.data().len() + self.headers.iter().flat_map(|h| h.iter()).map(|(k, _)| k.len()).sum::<usize>()
    }

    /// Calls `f` with the record's parts borrowed (its headers are listed only when it has some).
    pub fn with_ref<R>(&self, f: impl FnOnce(&RecordRef<'_>) -> R) -> R {
        let headers: Vec<(&str, Option<&[u8]>)> = self.headers().collect();
        f(&RecordRef {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.timestamp_ms,
            key: self.key(),
            value: self.value(),
            headers: &headers,
        })
    }

    /// A tombstone of the record's key at its coordinates, with its headers: what a subscription
    /// that deletes keys leaving its selection delivers in its place.
    pub fn to_tombstone(&self) -> Record {
        let headers: Vec<(&str, Option<&[u8]>)> = self.headers().collect();
        Record::new(self.topic.clone(), self.partition, self.offset, self.timestamp_ms, self.key(), None, &headers)
    }

    /// The record as `encoder` sends it, encoded now.
    pub fn encode(&self, encoder: &dyn Encode) -> Encoded {
        Encoded::bytes(self.wire(encoder), self.data_bytes())
    }

    /// The record as `encoder` sends it, encoded by the delivering layer as it writes it (only
    /// its length is found now).
    pub fn to_encode(&self, encoder: &dyn Encode) -> Encoded {
        let len = self.with_ref(|r| encoder.encoded_len(r));
        Encoded { wire: Wire::Record { record: self.clone(), len }, data_bytes: self.data_bytes() }
    }

    /// The bytes of the record's encoding by `encoder`.
    pub fn wire(&self, encoder: &dyn Encode) -> Bytes {
        let mut wire = BytesMut::new();
        self.with_ref(|r| encoder.encode(r, &mut wire));
        wire.freeze()
    }
}

/// A part of a record's data, owned for [`Bytes::from_owner`].
struct Part(Record, std::ops::Range<usize>);

impl AsRef<[u8]> for Part {
    fn as_ref(&self) -> &[u8] {
        &self.0.data()[self.1.clone()]
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("timestamp_ms", &self.timestamp_ms)
            .field("key", &self.key().map(Bytes::copy_from_slice))
            .field("value", &self.value().map(Bytes::copy_from_slice))
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

/// What a record costs beyond its data, in the bounds that count bytes.
pub const RECORD_OVERHEAD: usize = 64;

/// Bytes that `records` records of `data_bytes` of data together count for in the bounds.
pub fn bounded_size(data_bytes: usize, records: usize) -> usize {
    data_bytes + records * RECORD_OVERHEAD
}

/// Bytes of a key, a value and headers, plus [`RECORD_OVERHEAD`].
fn data_size(key: &Option<Bytes>, value: &Option<Bytes>, headers: &[Header]) -> usize {
    let headers: usize = headers.iter().map(|(k, v)| k.len() + v.as_ref().map_or(0, |v| v.len())).sum();
    key.as_ref().map_or(0, |k| k.len()) + value.as_ref().map_or(0, |v| v.len()) + headers + RECORD_OVERHEAD
}

/// What a translator made of a record: B's key, value and headers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Payload {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Payload {
    /// Bytes the payload holds, counted like [`Record::size`].
    pub fn size(&self) -> usize {
        data_size(&self.key, &self.value, &self.headers)
    }
}

/// A record as delivered to B: A's record itself, or one of the outputs a translator made of it.
/// Either way it keeps A's coordinates (rule 8), so positions stay in A's offset space.
#[derive(Debug, Clone)]
pub struct Output {
    /// A's record this output comes from.
    pub source: Record,
    /// Which output of `source` this is (a translator may make several of one record).
    pub index: u32,
    /// Where this output's payload is in `translated`.
    slot: u32,
    /// The outputs the translator made of a batch that holds `source`, this one at `slot` (see
    /// [`Output::payload`]): one allocation per translator call, shared by its outputs and by
    /// every subscription that delivers them. `None` delivers A's record as it is.
    pub translated: Option<Arc<[Payload]>>,
}

/// Equal when they deliver the same: the same source record, output index and payload (however
/// the payloads are shared).
impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.index == other.index && self.payload() == other.payload()
    }
}

impl Output {
    /// A's record, untranslated.
    pub fn untranslated(source: Record) -> Self {
        Self { source, index: 0, slot: 0, translated: None }
    }

    /// Output `index` of the translator's `payloads` of `source`.
    pub fn translated(source: Record, payloads: Arc<[Payload]>, index: u32) -> Self {
        Self::translated_at(source, payloads, index, index)
    }

    /// Output `index` of `source`, whose payload is `payloads[slot]` (the payloads of a whole
    /// translator call, shared by its outputs).
    pub fn translated_at(source: Record, payloads: Arc<[Payload]>, slot: u32, index: u32) -> Self {
        debug_assert!((slot as usize) < payloads.len());
        Self { source, index, slot, translated: Some(payloads) }
    }

    /// B's key, value and headers; `None` for A's record as it is.
    pub fn payload(&self) -> Option<&Payload> {
        self.translated.as_ref().map(|payloads| &payloads[self.slot as usize])
    }

    /// Bytes the output holds, counted like [`Record::size`].
    pub fn size(&self) -> usize {
        match self.payload() {
            None => self.source.size(),
            Some(p) => p.size(),
        }
    }

    /// Key, value and header bytes.
    pub fn data_bytes(&self) -> usize {
        self.size() - RECORD_OVERHEAD
    }

    /// The value delivered: the translator's, or A's.
    pub fn value(&self) -> Option<&[u8]> {
        match self.payload() {
            Some(p) => p.value.as_deref(),
            None => self.source.value(),
        }
    }
}

/// A's record's coordinates and parts, borrowed from wherever they are: a [`Record`], or a Kafka
/// client's buffers (catch-up reads encoded straight from them, with no [`Record`] in between).
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, -1 when unknown.
    pub timestamp_ms: i64,
    /// `None` for a keyless record (not the same as an empty key).
    pub key: Option<&'a [u8]>,
    /// `None` for a tombstone.
    pub value: Option<&'a [u8]>,
    /// Key and value (`None` when null) of each header, in order.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

impl RecordRef<'_> {
    /// Key, value and header bytes, counted as [`Record::data_bytes`] counts them.
    pub fn data_bytes(&self) -> usize {
        let part = |p: Option<&[u8]>| p.map_or(0, <[u8]>::len);
        let headers: usize = self.headers.iter().map(|(k, v)| k.len() + part(*v)).sum();
        part(self.key) + part(self.value) + headers
    }
}

/// How the delivering layer encodes A's record sent untranslated (the gRPC layer: a protobuf
/// `Record`). The core treats the bytes as opaque: it keeps a tail record's encoding for every
/// subscriber that sends it, and catch-up readers encode straight from their buffers with it.
pub trait Encode: Send + Sync {
    /// Appends the encoding of `record` to `buf`.
    fn encode(&self, record: &RecordRef<'_>, buf: &mut BytesMut);

    /// The length of what [`Encode::encode`] appends for `record` (by default, found by encoding
    /// it: an encoder that knows its lengths says so without writing).
    fn encoded_len(&self, record: &RecordRef<'_>) -> usize {
        let mut buf = BytesMut::new();
        self.encode(record, &mut buf);
        buf.len()
    }

    /// Appends `record` as one item of the records a message carries: its encoding framed as the
    /// delivering layer frames each record (by default, unframed). A [`Run`] holds such items,
    /// written out as they are.
    fn encode_item(&self, record: &RecordRef<'_>, buf: &mut BytesMut) {
        self.encode(record, buf)
    }
}

impl<F: Fn(&RecordRef<'_>, &mut BytesMut) + Send + Sync> Encode for F {
    fn encode(&self, record: &RecordRef<'_>, buf: &mut BytesMut) {
        self(record, buf)
    }
}

/// A shared [`Encode`].
pub type Encoder = Arc<dyn Encode>;

/// A's record as the delivering layer sends it untranslated: encoded once by an [`Encode`], or
/// still in a catch-up reader's buffers and encoded as it is written.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub wire: Wire,
    /// The record's key, value and header bytes ([`Record::data_bytes`]).
    pub data_bytes: usize,
}

impl Encoded {
    /// A record encoded already.
    pub fn bytes(wire: Bytes, data_bytes: usize) -> Self {
        Self { wire: Wire::Bytes(wire), data_bytes }
    }

    /// Records of the tail encoded once for every subscriber that reads them.
    pub fn run(run: Run, data_bytes: usize) -> Self {
        Self { wire: Wire::Run(run), data_bytes }
    }

    /// How many records this is: one, or those of a [`Run`].
    pub fn records(&self) -> usize {
        match &self.wire {
            Wire::Run(run) => run.records,
            Wire::Bytes(_) | Wire::Record { .. } | Wire::Lent(_) => 1,
        }
    }

    /// Bytes the record (or run) counts for in the bounds, as [`Record::size`] counts them.
    pub fn size(&self) -> usize {
        bounded_size(self.data_bytes, self.records())
    }

    /// The encoding as bytes: shared when it was made already, made by `encoder` from a lent
    /// record (for tests and callers that keep it; the delivering layer writes a lent record
    /// straight into its output instead). A run's are its items ([`Encode::encode_item`]).
    pub fn to_bytes(&self, encoder: &dyn Encode) -> Bytes {
        match &self.wire {
            Wire::Bytes(bytes) => bytes.clone(),
            Wire::Run(run) => run.bytes.clone(),
            Wire::Record { record, .. } => record.wire(encoder),
            Wire::Lent(lent) => {
                let mut buf = BytesMut::with_capacity(lent.len);
                lent.with_ref(|r| encoder.encode(r, &mut buf));
                buf.freeze()
            }
        }
    }
}

/// How an untranslated record reaches its delivering layer.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// Its encoding.
    Bytes(Bytes),
    /// A record of the view (read from the tail), encoded by the delivering layer straight into
    /// its output as it is written: `len` bytes.
    Record { record: Record, len: usize },
    /// The record itself, lent from the buffers it was read into: the delivering layer encodes
    /// it straight into its output, so its bytes are copied once on their way out.
    Lent(Lent),
    /// Consecutive records of the tail, encoded once and shared by every subscriber that reads
    /// them: written out as they are.
    Run(Run),
}

/// Consecutive records of a partition encoded as items ([`Encode::encode_item`]), in offset
/// order.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub bytes: Bytes,
    pub records: usize,
}

impl Wire {
    /// The length of the encoding (a run's: of its items, framing included).
    pub fn len(&self) -> usize {
        match self {
            Wire::Bytes(bytes) => bytes.len(),
            Wire::Run(run) => run.bytes.len(),
            Wire::Record { len, .. } => *len,
            Wire::Lent(lent) => lent.len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Records a reader holds in its buffers (a batch of Kafka messages as librdkafka handed them
/// out), lent by index. The batch lives as long as any record lent from it.
pub trait Lender: Send + Sync {
    /// Calls `f` with record `index` of the batch.
    fn lend(&self, index: usize, f: &mut dyn FnMut(&RecordRef<'_>));
}

/// A record of a [`Lender`]'s batch, as a subscription delivers it (itself, or a tombstone of its
/// key when the subscription's filter says so), and the length of its encoding.
#[derive(Clone)]
pub struct Lent {
    batch: Arc<dyn Lender>,
    index: usize,
    tombstone: bool,
    len: usize,
}

impl Lent {
    /// Record `index` of `batch`, delivered as a tombstone of its key with `tombstone`, whose
    /// encoding is `len` bytes long.
    pub fn new(batch: Arc<dyn Lender>, index: usize, tombstone: bool, len: usize) -> Self {
        Self { batch, index, tombstone, len }
    }

    /// Calls `f` with the record as it is delivered.
    pub fn with_ref<R>(&self, f: impl FnOnce(&RecordRef<'_>) -> R) -> R {
        let (mut f, mut out) = (Some(f), None);
        self.batch.lend(self.index, &mut |r| {
            let f = f.take().expect("a batch lends a record once per call");
            out = Some(if self.tombstone { f(&RecordRef { value: None, ..*r }) } else { f(r) });
        });
        out.expect("a batch lends the records it holds")
    }
}

impl std::fmt::Debug for Lent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lent")
            .field("index", &self.index)
            .field("tombstone", &self.tombstone)
            .field("len", &self.len)
            .finish()
    }
}

impl PartialEq for Lent {
    /// The same record of the same batch, delivered the same way.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.batch, &other.batch) && (self.index, self.tombstone) == (other.index, other.tombstone)
    }
}

/// A position in a partition: `offset` is the *next* offset to read, as in Kafka's committed
/// offsets (rule 1). The one (topic, partition, offset) coordinate of the gateway: the offsets a
/// client sends and is sent, committed positions, and the positions a catch-up reader is assigned
/// and reports ([`crate::source::CatchUpReader`]). A partition without an offset is a
/// [`crate::source::Partition`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl PartitionOffset {
    pub fn new(topic: impl Into<String>, partition: i32, offset: i64) -> Self {
        Self { topic: topic.into(), partition, offset }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_keep_null_apart_from_empty_and_share_one_buffer() {
        let headers: [(&str, Option<&[u8]>); 3] = [("a", Some(b"1")), ("b", None), ("c", Some(b""))];
        let r = Record::new("t".into(), 1, 2, 3, Some(b""), Some(b"value"), &headers);
        assert_eq!((r.key(), r.value()), (Some(&b""[..]), Some(&b"value"[..])));
        assert_eq!(r.headers().collect::<Vec<_>>(), headers.to_vec());
        assert_eq!(
            r.header_list(),
            vec![("a".into(), Some(Bytes::from_static(b"1"))), ("b".into(), None), ("c".into(), Some(Bytes::new()))]
        );
        assert_eq!(r.value_bytes().as_deref(), Some(&b"value"[..]));
        assert_eq!(r.data_bytes(), 5 + 1 + 3, "value, one header value byte, three header key bytes");
        assert_eq!(r.size(), r.data_bytes() + RECORD_OVERHEAD);

        let tombstone = Record::new("t".into(), 0, 0, 0, Some(b"k"), None, &[]);
        assert_eq!((tombstone.key(), tombstone.value(), tombstone.value_bytes()), (Some(&b"k"[..]), None, None));
        let keyless = Record::new("t".into(), 0, 0, 0, None, Some(b"v"), &[]);
        assert_eq!((keyless.key(), keyless.key_bytes(), keyless.value()), (None, None, Some(&b"v"[..])));
        assert_eq!(keyless.headers().count(), 0);
    }

    #[test]
    fn a_record_lends_its_parts_and_is_encoded_from_them() {
        let headers: [(&str, Option<&[u8]>); 2] = [("a", Some(b"12")), ("b", None)];
        let r = Record::new("t".into(), 1, 2, 3, None, Some(b"value"), &headers);
        r.with_ref(|parts| {
            assert_eq!((parts.topic, parts.partition, parts.offset, parts.timestamp_ms), ("t", 1, 2, 3));
            assert_eq!((parts.key, parts.value, parts.headers), (None, Some(&b"value"[..]), &headers[..]));
            assert_eq!(parts.data_bytes(), r.data_bytes());
        });
        let encoder =
            |parts: &RecordRef<'_>, buf: &mut BytesMut| buf.extend_from_slice(format!("{parts:?}").as_bytes());
        let encoded = r.encode(&encoder);
        let expected = Bytes::from(r.with_ref(|parts| format!("{parts:?}")).into_bytes());
        assert_eq!(encoded.wire, Wire::Bytes(expected.clone()));
        assert_eq!((encoded.to_bytes(&encoder), encoded.wire.len()), (expected.clone(), expected.len()));
        assert_eq!((encoded.data_bytes, encoded.size()), (r.data_bytes(), r.size()));
    }

    #[test]
    fn a_record_is_a_thin_pointer_and_its_shared_parts_outlive_the_handle() {
        assert_eq!(std::mem::size_of::<Record>(), std::mem::size_of::<usize>());
        assert!(std::mem::size_of::<Meta>() <= 56, "coordinates and layout fit in 56 bytes");
        let r = Record::new("t".into(), 1, 2, 3, Some(b"key"), Some(b"value"), &[("h", Some(b"x"))]);
        let copy = Record::new("t".into(), 1, 2, 3, Some(b"key"), Some(b"value"), &[("h", Some(b"x"))]);
        assert_eq!(r, copy, "equal by content, not only by pointer");
        assert_ne!(r, Record::new("t".into(), 1, 2, 3, Some(b"key"), Some(b"valuf"), &[("h", Some(b"x"))]));
        let (value, headers) = (r.value_bytes().unwrap(), r.header_list());
        drop((r, copy));
        assert_eq!((&value[..], headers[0].1.as_deref()), (&b"value"[..], Some(&b"x"[..])));
    }
}

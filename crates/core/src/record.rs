//! The records the gateway moves: A's [`Record`] as read from Kafka, B's [`Output`] made from one,
//! and [`PartitionOffset`], the position a client resumes from.

use std::sync::Arc;

use bytes::Bytes;

/// A header of a record: a key and a value that may be null (not the same as empty).
pub type Header = (String, Option<Bytes>);

/// A Kafka record of A's, as the gateway keeps it. Shared (behind an `Arc`) between the state
/// map, the tail buffer and every subscriber that delivers it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, -1 when unknown.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    /// `None` is a tombstone: the key leaves the state.
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// Bytes the record holds (keys, values, headers, plus a fixed overhead), which tail buffers
    /// and batches bound.
    pub fn size(&self) -> usize {
        data_size(&self.key, &self.value, &self.headers)
    }

    /// Key, value and header bytes.
    pub fn data_bytes(&self) -> usize {
        self.size() - RECORD_OVERHEAD
    }
}

/// What a record costs beyond its data, in the bounds that count bytes.
pub const RECORD_OVERHEAD: usize = 64;

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

/// A record as delivered to B: A's record itself, or one of the outputs a translator made of it.
/// Either way it keeps A's coordinates (rule 8), so positions stay in A's offset space.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// A's record this output comes from.
    pub source: Arc<Record>,
    /// Which output of `source` this is (a translator may make several of one record).
    pub index: u32,
    /// B's key, value and headers; `None` delivers A's record as it is.
    pub translated: Option<Payload>,
    /// The delivering layer's encoding of this output, when one was already made: a tail record
    /// is encoded once and every subscriber that delivers it untranslated sends the same bytes.
    pub wire: Option<Bytes>,
}

impl Output {
    /// A's record, untranslated.
    pub fn untranslated(source: Arc<Record>) -> Self {
        Self { source, index: 0, translated: None, wire: None }
    }

    /// A's record, untranslated, with its encoding if it has one.
    pub fn encoded(source: Arc<Record>, wire: Option<Bytes>) -> Self {
        Self { source, index: 0, translated: None, wire }
    }

    /// Bytes the output holds, counted like [`Record::size`].
    pub fn size(&self) -> usize {
        match &self.translated {
            None => self.source.size(),
            Some(p) => data_size(&p.key, &p.value, &p.headers),
        }
    }

    /// Key, value and header bytes.
    pub fn data_bytes(&self) -> usize {
        self.size() - RECORD_OVERHEAD
    }

    /// The value delivered: the translator's, or A's.
    pub fn value(&self) -> Option<&Bytes> {
        match &self.translated {
            Some(p) => p.value.as_ref(),
            None => self.source.value.as_ref(),
        }
    }
}

/// Encodes a record the way the delivering layer sends it (the gRPC layer: a protobuf `Record`).
/// The core treats the bytes as opaque; it only caches them with the tail record.
pub type WireEncoder = Arc<dyn Fn(&Record) -> Bytes + Send + Sync>;

/// A position in a partition: `offset` is the *next* offset to read, as in Kafka's committed
/// offsets (rule 1).
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

//! The port through which the core reads A's log beyond its own view: watermarks, and catch-up
//! readers for subscribers behind the tail buffer. `tributary-kafka` implements it with rdkafka;
//! tests implement it in memory.

use std::sync::Arc;

use bytes::BytesMut;
use futures::future::BoxFuture;
use tokio::sync::OwnedSemaphorePermit;

use crate::{
    error::Error,
    filter::{Filter, Verdict},
    record::{Encoded, Encoder, Lender, Lent, PartitionOffset, Record, RecordRef, Wire},
};

/// Earliest retained offset and latest offset (high watermark) of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermarks {
    pub earliest: i64,
    pub latest: i64,
}

/// A partition: (topic, partition). A partition at an offset is a [`PartitionOffset`].
pub type Partition = (Arc<str>, i32);

/// A's log (Kafka, in production).
pub trait Log: Send + Sync + 'static {
    /// The watermarks of `partitions`, in the same order. Blocking (network requests): call it
    /// from a blocking thread.
    fn watermarks(&self, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error>;

    /// A new catch-up reader with at most `prefetch_kbytes` KiB read ahead, assigned nothing.
    /// With `encoding`, it hands over records encoded ([`Read::Encoded`]) and only those the
    /// encoding's filter matches. It holds `permit` (of the pool `limits.max_catchup_readers`
    /// counts) for as long as its Kafka consumer lives: records it lends keep the consumer until
    /// they are written, so the pool bounds live consumers, not only open readers.
    fn catch_up(
        &self,
        prefetch_kbytes: usize,
        encoding: Option<Encoding>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Box<dyn CatchUpReader>, Error>;
}

/// How a catch-up reader of a subscription that sends A's records as they are hands them over:
/// encoded straight from its buffers (no [`Record`] in between), the records `filter` refuses
/// left out before they cost anything.
#[derive(Clone)]
pub struct Encoding {
    pub encoder: Encoder,
    pub filter: Filter,
}

impl Encoding {
    /// Writes what the subscription delivers of `record` into `out`: its encoding, or that of a
    /// tombstone of its key when the filter says so. Returns the record data bytes delivered, or
    /// `None` (and writes nothing) when the filter leaves the record out.
    pub fn encode(&self, record: &RecordRef<'_>, out: &mut BytesMut) -> Option<usize> {
        let tombstone;
        let record = match self.filter.verdict(record) {
            Verdict::Skip => return None,
            Verdict::Deliver => record,
            Verdict::Tombstone => {
                tombstone = RecordRef { value: None, ..*record };
                &tombstone
            }
        };
        self.encoder.encode(record, out);
        Some(record.data_bytes())
    }

    /// What the subscription delivers of record `index` of `batch` (`record`, lent by it), for the
    /// delivering layer to encode as it writes it; `None` when the filter leaves it out.
    pub fn lend(&self, record: &RecordRef<'_>, batch: &Arc<dyn Lender>, index: usize) -> Option<Encoded> {
        let (delivered, tombstone) = match self.filter.verdict(record) {
            Verdict::Skip => return None,
            Verdict::Deliver => (*record, false),
            Verdict::Tombstone => (RecordRef { value: None, ..*record }, true),
        };
        let len = self.encoder.encoded_len(&delivered);
        Some(Encoded {
            wire: Wire::Lent(Lent::new(batch.clone(), index, tombstone, len)),
            data_bytes: delivered.data_bytes(),
        })
    }
}

/// What a catch-up reader read.
#[derive(Debug)]
pub enum Read {
    Record(Record),
    /// A record read by a reader opened with an [`Encoding`]: where it is, and its encoding.
    Encoded {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        record: Encoded,
    },
    /// A record the reader cannot hand over and must not skip (a value that cannot be decoded
    /// while its topic's `on_error` is `fail`): the reading call ends with `error`.
    Failed {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
        error: Error,
    },
    /// A position is no longer retained (or beyond the end): check the watermarks.
    OutOfRange,
    /// A transient error; the reader keeps going.
    Error(String),
}

impl Read {
    /// The partition and offset of a record read.
    pub fn at(&self) -> Option<(&Arc<str>, i32, i64)> {
        match self {
            Read::Record(r) => Some((&r.topic, r.partition, r.offset)),
            Read::Encoded { topic, partition, offset, .. } | Read::Failed { topic, partition, offset, .. } => {
                Some((topic, *partition, *offset))
            }
            Read::OutOfRange | Read::Error(_) => None,
        }
    }

    /// Bytes a record read counts for in the bounds ([`Record::size`]); nothing otherwise.
    pub fn size(&self) -> usize {
        match self {
            Read::Record(r) => r.size(),
            Read::Encoded { record, .. } => record.size(),
            Read::Failed { .. } | Read::OutOfRange | Read::Error(_) => 0,
        }
    }
}

/// A reader over a few partitions, from explicit positions, in offset order per partition.
pub trait CatchUpReader: Send + Sync {
    /// Adds partitions to read from the given positions.
    fn assign(&self, positions: &[PartitionOffset]) -> Result<(), Error>;

    /// Stops reading partitions (their prefetched records may still arrive and must be ignored).
    fn unassign(&self, positions: &[PartitionOffset]) -> Result<(), Error>;

    /// The next read; pending while there is none.
    fn recv(&self) -> BoxFuture<'_, Read>;

    /// The next read if one is ready now (the hot path: no allocation per record).
    fn try_recv(&self) -> Option<Read>;

    /// Appends to `out` the reads ready now, in order: at most `max_records`, and no more once
    /// the records taken hold `max_bytes` ([`crate::Record::size`]; the last one may pass it, as a
    /// batch's last record may). Readers that hold reads in batches hand them over under one lock.
    fn try_recv_many(&self, max_records: usize, max_bytes: usize, out: &mut Vec<Read>) {
        take_reads(max_records, max_bytes, out, || self.try_recv());
    }

    /// The reader's position per partition (the next offset it will return), which moves past
    /// transaction markers that no record stands for.
    fn positions(&self) -> Vec<PartitionOffset>;
}

/// Appends reads from `next` to `out` within [`CatchUpReader::try_recv_many`]'s bounds.
pub fn take_reads(max_records: usize, max_bytes: usize, out: &mut Vec<Read>, mut next: impl FnMut() -> Option<Read>) {
    let (start, mut bytes) = (out.len(), 0);
    while out.len() - start < max_records && bytes < max_bytes {
        let Some(read) = next() else { break };
        bytes += read.size();
        out.push(read);
    }
}

/// Calls [`Log::watermarks`] on a blocking thread.
pub async fn watermarks(log: &Arc<dyn Log>, partitions: Vec<Partition>) -> Result<Vec<Watermarks>, Error> {
    let log = log.clone();
    tokio::task::spawn_blocking(move || log.watermarks(&partitions))
        .await
        .map_err(|e| Error::Internal(format!("watermarks task: {e}")))?
}

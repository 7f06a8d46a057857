//! [`Kafka`]: the core's [`Log`] port over rdkafka: watermarks from a metadata client, and
//! catch-up readers (a consumer each, with a bounded prefetch) for subscribers behind the tail.
//! A reader of a subscription that sends A's records as they are lends librdkafka's messages to
//! the delivering layer, which encodes them straight into its output (no record and no copy in
//! between); values it decodes are encoded into chunks it shares out.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use bytes::BytesMut;
use futures::{future::BoxFuture, FutureExt};
use rdkafka::{
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::{KafkaError, KafkaResult},
    message::{BorrowedMessage, Message},
    types::RDKafkaErrorCode,
};
use tokio::sync::OwnedSemaphorePermit;
use tributary_core::{
    decode::Decode,
    source::{take_reads, CatchUpReader, Encoding, Log, Partition, Read, Watermarks},
    Error, Lender, PartitionOffset, RecordRef,
};

use crate::{
    batch::{ConsumerQueue, Held},
    message::{record_of, to_record_with, topic_of, value_of, with_parts, Value},
    metadata::{assignment, positions, watermarks},
    settings::{catchup_tuning, consumer_config, kafka_error, metadata_tuning, KafkaConfig},
};

/// Most messages a catch-up reader takes from librdkafka at once (held as reads until taken).
const CATCHUP_BATCH: usize = 256;

/// Bytes of the buffers a reader encodes records into when it does not lend them (a decoded value,
/// or a record awaited one at a time): a record's encoding is a slice of one, so
/// a buffer is allocated per this many bytes of records, not per record. Only records the
/// subscription sends are encoded, so the slices that keep a buffer alive cover nearly all of it.
const ENCODE_CHUNK: usize = 64 * 1024;

/// A's Kafka cluster, as the core sees it.
pub struct Kafka {
    config: KafkaConfig,
    metadata: BaseConsumer,
    decode: Option<Arc<dyn Decode>>,
}

impl Kafka {
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        let metadata = consumer_config(config, "metadata", &metadata_tuning()).create().map_err(kafka_error)?;
        Ok(Self { config: config.clone(), metadata, decode: None })
    }

    /// Catch-up readers decode the values of the topics `decode` is configured for, as ingest
    /// does: a value their topic skips is left out, one their topic must not skip ends the read
    /// with an error naming it ([`Read::Failed`]).
    pub fn decoding(mut self, decode: Arc<dyn Decode>) -> Self {
        self.decode = Some(decode);
        self
    }
}

impl Log for Kafka {
    fn watermarks(&self, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
        watermarks(&self.metadata, partitions)
    }

    fn catch_up(
        &self,
        prefetch_kbytes: usize,
        encoding: Option<Encoding>,
        permit: OwnedSemaphorePermit,
    ) -> Result<Box<dyn CatchUpReader>, Error> {
        let consumer: StreamConsumer =
            consumer_config(&self.config, "catchup", &catchup_tuning(prefetch_kbytes)).create().map_err(kafka_error)?;
        let decode = self.decode.clone();
        let consumer = Arc::new(Leased { consumer, _permit: permit });
        Ok(Box::new(Reader { consumer, topics: RwLock::new(Vec::new()), ready: Mutex::default(), encoding, decode }))
    }
}

/// A catch-up reader's consumer, with the pool permit it holds until it is gone.
struct Leased {
    consumer: StreamConsumer,
    /// Dropped after the consumer (fields drop in order).
    _permit: OwnedSemaphorePermit,
}

impl std::ops::Deref for Leased {
    type Target = StreamConsumer;

    fn deref(&self) -> &StreamConsumer {
        &self.consumer
    }
}

/// A batch of a catch-up reader lends its messages as records.
impl Lender for Held<Leased> {
    fn lend(&self, index: usize, f: &mut dyn FnMut(&RecordRef<'_>)) {
        let m = self.message(index);
        with_parts(&m, m.topic(), |r| f(r));
    }
}

/// A catch-up reader: a consumer assigned explicit positions, no group.
struct Reader {
    /// Shared with the batches whose records are lent out ([`Held`]), which outlive the reader
    /// when its last records are still on their way to the client.
    consumer: Arc<Leased>,
    /// The names of the assigned topics, shared by every record read (no allocation per record).
    topics: RwLock<Vec<Arc<str>>>,
    /// Reads taken from librdkafka in one batch and not handed out yet, and the buffer records
    /// are encoded into.
    ready: Mutex<Ready>,
    /// Set for a subscription that sends A's records as they are.
    encoding: Option<Encoding>,
    /// Schema decoding of the values of the topics configured for it.
    decode: Option<Arc<dyn Decode>>,
}

/// Reads not handed out yet (at most [`CATCHUP_BATCH`]), and the rest of the buffer the next
/// encoded ones are written into.
#[derive(Default)]
struct Ready {
    reads: VecDeque<Read>,
    chunk: BytesMut,
}

impl Reader {
    /// The read of one message from librdkafka, encoded into `chunk` when the reader encodes;
    /// `None` for a record the encoding's filter refuses.
    fn read(&self, message: KafkaResult<BorrowedMessage<'_>>, chunk: &mut BytesMut) -> Option<Read> {
        match message {
            Ok(m) => {
                // Locks are taken in this order everywhere: ready reads, then topics.
                let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
                self.take(&topics, &m, chunk, None)
            }
            // With `auto.offset.reset=error` librdkafka reports a position it cannot fetch as
            // "no offset to automatically reset to", not as the broker's out-of-range error.
            Err(KafkaError::MessageConsumption(
                RDKafkaErrorCode::OffsetOutOfRange | RDKafkaErrorCode::AutoOffsetReset,
            )) => Some(Read::OutOfRange),
            Err(e) => Some(Read::Error(e.to_string())),
        }
    }

    /// A message as the subscription takes it: a record, or, when the reader has an encoding,
    /// lent from the batch `lent` (message `index` of it) or encoded into `chunk` when there is
    /// no batch or the value was decoded (`None` when the filter refuses the record: nothing is
    /// copied).
    fn take<M: Message>(
        &self,
        topics: &[Arc<str>],
        m: &M,
        chunk: &mut BytesMut,
        lent: Option<(&Arc<dyn Lender>, usize)>,
    ) -> Option<Read> {
        // Most refusals cost no more than a look at the key, and a value is decoded only for a
        // record the key filter takes.
        if self.encoding.as_ref().is_some_and(|e| !e.filter.keys.matches(m.key())) {
            return None;
        }
        let decoded = match value_of(self.decode.as_deref(), m) {
            Value::AsIs => None,
            Value::Decoded(json) => Some(json),
            Value::Skip => return None,
            Value::Fail(error) => {
                let (topic, partition, offset) = (topic_of(topics, m), m.partition(), m.offset());
                return Some(Read::Failed { topic, partition, offset, error });
            }
        };
        let Some(encoding) = &self.encoding else {
            return Some(Read::Record(match decoded {
                Some(json) => to_record_with(m, topic_of(topics, m), &json),
                None => record_of(topics, m),
            }));
        };
        let topic = topic_of(topics, m);
        if let (Some((batch, index)), None) = (lent, &decoded) {
            let record = with_parts(m, &topic, |r| encoding.lend(r, batch, index))?;
            return Some(Read::Encoded { topic, partition: m.partition(), offset: m.offset(), record });
        }
        let data_bytes = with_parts(m, &topic, |r| {
            let with_json;
            let r = match &decoded {
                Some(json) => {
                    with_json = RecordRef { value: Some(json), ..*r };
                    &with_json
                }
                None => r,
            };
            // Room for the parts and their framing; a new buffer when the rest of this one is
            // smaller (the old one lives on in the slices already handed out).
            let room = r.data_bytes() + r.topic.len() + 64 + 16 * r.headers.len();
            if chunk.capacity() < room {
                *chunk = BytesMut::with_capacity(room.max(ENCODE_CHUNK));
            }
            encoding.encode(r, chunk)
        })?;
        let record = tributary_core::Encoded::bytes(chunk.split().freeze(), data_bytes);
        Some(Read::Encoded { topic, partition: m.partition(), offset: m.offset(), record })
    }

    /// Drops the records of these partitions that wait to be handed out.
    fn forget(&self, partitions: &[PartitionOffset]) {
        self.ready().reads.retain(|read| match read.at() {
            Some((topic, partition, _)) => !partitions.iter().any(|p| p.partition == partition && *p.topic == **topic),
            None => true,
        });
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what librdkafka has ready, up to [`CATCHUP_BATCH`] messages, in one call. Records
    /// sent as they are stay in librdkafka's buffers, lent from the batch until written.
    fn fill(&self, ready: &mut Ready) {
        let Some(queue) = ConsumerQueue::of(&self.consumer.consumer) else {
            if let Some(message) = self.consumer.recv().now_or_never() {
                let read = self.read(message, &mut ready.chunk);
                ready.reads.extend(read);
            }
            return;
        };
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        let held = Arc::new(queue.consume(Duration::ZERO, CATCHUP_BATCH).hold(self.consumer.clone()));
        let batch: Arc<dyn Lender> = held.clone();
        for (index, message) in held.iter() {
            let read = match message {
                Ok(m) => self.take(&topics, &m, &mut ready.chunk, Some((&batch, index))),
                Err(e) if e.out_of_range => Some(Read::OutOfRange),
                Err(e) => Some(Read::Error(e.message)),
            };
            ready.reads.extend(read);
        }
    }
}

impl CatchUpReader for Reader {
    /// Records of these partitions taken from librdkafka under an earlier assignment and not
    /// handed out yet are dropped first: a cursor that left the reader and comes back reads from
    /// its new offset, and an earlier prefetch whose first records were dropped meanwhile (the
    /// cursor read the tail buffer then) would otherwise start past that offset.
    fn assign(&self, positions: &[PartitionOffset]) -> Result<(), Error> {
        self.forget(positions);
        {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            for p in positions {
                if !topics.iter().any(|t| **t == *p.topic) {
                    topics.push(Arc::from(p.topic.as_str()));
                }
            }
        }
        self.consumer.incremental_assign(&assignment(positions)?).map_err(kafka_error)
    }

    fn unassign(&self, positions: &[PartitionOffset]) -> Result<(), Error> {
        self.forget(positions);
        self.consumer.incremental_unassign(&assignment(positions)?).map_err(kafka_error)
    }

    fn recv(&self) -> BoxFuture<'_, Read> {
        Box::pin(async move {
            if let Some(read) = self.ready().reads.pop_front() {
                return read;
            }
            loop {
                let message = self.consumer.recv().await;
                if let Some(read) = self.read(message, &mut self.ready().chunk) {
                    return read;
                }
            }
        })
    }

    fn try_recv(&self) -> Option<Read> {
        let mut ready = self.ready();
        if ready.reads.is_empty() {
            self.fill(&mut ready);
        }
        ready.reads.pop_front()
    }

    /// Under one lock of the ready reads, filled from librdkafka as they run out.
    fn try_recv_many(&self, max_records: usize, max_bytes: usize, out: &mut Vec<Read>) {
        let mut ready = self.ready();
        take_reads(max_records, max_bytes, out, || {
            if ready.reads.is_empty() {
                self.fill(&mut ready);
            }
            ready.reads.pop_front()
        });
    }

    /// The consumer's positions, held back to the first record not handed out yet: a position
    /// must never pass a record the subscription has not taken.
    fn positions(&self) -> Vec<PartitionOffset> {
        let mut positions = positions(&self.consumer.consumer);
        for (topic, partition, offset) in self.ready().reads.iter().filter_map(Read::at) {
            for p in &mut positions {
                if p.partition == partition && *p.topic == **topic && offset < p.offset {
                    p.offset = offset;
                }
            }
        }
        positions
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tributary_core::{Record, Wire};

    use super::*;
    use crate::testing;

    const WAIT: Duration = Duration::from_secs(20);

    /// A permit of a pool of one, for a reader whose pool the test does not watch.
    fn permit() -> OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    fn reader(topic: &str, from: &[(i32, i64)]) -> Box<dyn CatchUpReader> {
        let reader = Kafka::new(&testing::config()).unwrap().catch_up(64, None, permit()).unwrap();
        let positions: Vec<_> = from.iter().map(|&(p, o)| PartitionOffset::new(topic, p, o)).collect();
        reader.assign(&positions).unwrap();
        reader
    }

    /// The next read that is not a transient error, awaited (rdkafka's message path).
    async fn next(reader: &dyn CatchUpReader) -> Read {
        loop {
            match tokio::time::timeout(WAIT, reader.recv()).await.expect("a read in time") {
                Read::Error(_) => continue,
                read => return read,
            }
        }
    }

    /// Up to `n` reads, each batch at most `max` long, taken without waiting (librdkafka's batch
    /// path, the one subscriptions take) as they become ready.
    fn take(reader: &dyn CatchUpReader, n: usize, max: usize) -> Vec<Read> {
        let (mut reads, started) = (Vec::new(), Instant::now());
        while reads.len() < n && started.elapsed() < WAIT {
            reader.try_recv_many(max.min(n - reads.len()), usize::MAX, &mut reads);
            reads.retain(|r| !matches!(r, Read::Error(_)));
            std::thread::sleep(Duration::from_millis(5));
        }
        reads
    }

    fn record(read: Read) -> Record {
        match read {
            Read::Record(r) => r,
            other => panic!("a record, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_catch_up_reader_reads_each_partition_from_its_offset_in_order() {
        let topic = testing::topic("catchup", 2);
        testing::write_n(&topic, 0, 10);
        testing::write_n(&topic, 1, 3);
        let reader = reader(&topic, &[(0, 4)]);
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let r = record(next(&*reader).await);
            seen.push((r.partition, r.offset, r.key().map(<[u8]>::to_vec)));
        }
        let expected: Vec<_> = (4..10).map(|o| (0, o, Some(format!("k{o}").into_bytes()))).collect();
        assert_eq!(seen, expected);
        assert_eq!(reader.positions(), vec![PartitionOffset::new(&topic, 0, 10)]);

        // A partition added later reads from its own offset, through the batch path.
        reader.assign(&[PartitionOffset::new(&topic, 1, 1)]).unwrap();
        let offsets: Vec<_> = take(&*reader, 2, 8).into_iter().map(record).map(|r| (r.partition, r.offset)).collect();
        assert_eq!(offsets, vec![(1, 1), (1, 2)]);
    }

    #[tokio::test]
    async fn positions_never_pass_a_record_not_handed_out() {
        let topic = testing::topic("held", 1);
        testing::write_n(&topic, 0, 20);
        let reader = reader(&topic, &[(0, 0)]);
        let first = record(take(&*reader, 1, 1).pop().expect("a read"));
        assert_eq!(first.offset, 0);
        // However many records librdkafka handed over in that batch, only one was taken.
        assert_eq!(reader.positions(), vec![PartitionOffset::new(&topic, 0, 1)]);
    }

    /// A subscription's cursor can leave the reader (it reached the tail buffer) and come back
    /// behind it later, at an offset below what the reader read the first time. Nothing of the
    /// first assignment may show through: neither its prefetched records nor librdkafka's
    /// position, which its batch path only ever moves forward.
    #[tokio::test]
    async fn a_partition_assigned_again_reads_and_reports_only_its_new_assignment() {
        let topic = testing::topic("again", 2);
        testing::write_n(&topic, 0, 50);
        testing::write_n(&topic, 1, 50);
        let reader = reader(&topic, &[(0, 0), (1, 0)]);
        // Partition 0 read through: librdkafka's position of it is 50.
        let mut read = 0;
        while read < 50 {
            read += take(&*reader, 1, 64).into_iter().map(record).filter(|r| r.partition == 0).count();
        }
        let at = |p: i32, o: i64| PartitionOffset::new(&topic, p, o);
        reader.unassign(&[at(0, 50)]).unwrap();
        reader.assign(&[at(0, 10)]).unwrap();
        for p in reader.positions() {
            assert!(p.partition != 0 || p.offset <= 10, "position {p:?} passes records not read again yet");
        }
        // Records of partition 0 come again from 10, in order, whatever partition 1 does.
        let mut again = Vec::new();
        let started = Instant::now();
        while again.len() < 40 && started.elapsed() < WAIT {
            for r in take(&*reader, 1, 64).into_iter().map(record).filter(|r| r.partition == 0) {
                again.push(r.offset);
            }
            for p in reader.positions() {
                let next = again.last().map_or(10, |o| o + 1);
                assert!(p.partition != 0 || p.offset <= next, "position {p:?} passes {next}, the next not handed out");
            }
        }
        assert_eq!(again, (10..50).collect::<Vec<_>>());
    }

    /// The gap a stalled subscriber once saw: its cursor left the reader with records prefetched,
    /// the first of them were dropped while it read the tail buffer, and it came back behind at
    /// an offset below the rest. The next record it reads must be the one at that offset.
    #[tokio::test]
    async fn a_partition_assigned_again_does_not_start_past_its_offset() {
        let topic = testing::topic("prefetched", 1);
        testing::write_n(&topic, 0, 50);
        let at = |o: i64| PartitionOffset::new(&topic, 0, o);
        let reader = reader(&topic, &[(0, 0)]);
        assert_eq!(record(take(&*reader, 1, 1).pop().expect("a read")).offset, 0);
        reader.unassign(&[at(1)]).unwrap();
        // Whatever was prefetched and is taken now belongs to no cursor: it is dropped.
        let mut dropped = Vec::new();
        reader.try_recv_many(5, usize::MAX, &mut dropped);
        reader.assign(&[at(3)]).unwrap();
        let next = take(&*reader, 1, 1).into_iter().map(record).next().expect("a read");
        assert_eq!(next.offset, 3, "after {} reads dropped", dropped.len());
    }

    /// A record lent by a reader keeps the reader's consumer (librdkafka wants its messages
    /// destroyed first) and with it the reader's pool permit: the pool bounds live consumers,
    /// also while a closed reader's last records wait in a stream's buffer.
    #[tokio::test]
    async fn a_lent_record_keeps_its_consumer_and_the_pool_permit_until_it_is_dropped() {
        let topic = testing::topic("lent", 1);
        testing::write_n(&topic, 0, 20);
        let pool = Arc::new(tokio::sync::Semaphore::new(1));
        let encoder: tributary_core::Encoder =
            Arc::new(|r: &RecordRef<'_>, buf: &mut BytesMut| buf.extend_from_slice(r.value.unwrap()));
        let encoding = Encoding { encoder: encoder.clone(), filter: Default::default() };
        let permit = pool.clone().try_acquire_owned().unwrap();
        let reader = Kafka::new(&testing::config()).unwrap().catch_up(64, Some(encoding), permit).unwrap();
        reader.assign(&[PartitionOffset::new(&topic, 0, 0)]).unwrap();
        let mut reads = take(&*reader, 20, 64);
        assert_eq!(reads.len(), 20);
        drop(reader);
        reads.truncate(1);
        assert_eq!(pool.available_permits(), 0, "a lent record holds the consumer, and the permit with it");
        let Some(Read::Encoded { record, .. }) = reads.pop() else { panic!("an encoded read") };
        assert_eq!(&record.to_bytes(&*encoder)[..], b"v0", "the record is still readable after its reader closed");
        drop(record);
        assert_eq!(pool.available_permits(), 1, "the last lent record gone, the consumer and its permit are");
    }

    /// A reader with an encoding hands over what encoding the record it would read otherwise
    /// gives, byte for byte, and only the records the filter matches; its positions move past
    /// the others.
    #[tokio::test]
    async fn an_encoding_reader_encodes_straight_from_librdkafka_and_leaves_out_what_the_filter_refuses() {
        use bytes::BytesMut;
        use tributary_core::{
            filter::{Filter, KeyFilter},
            Encoder, RecordRef,
        };

        let topic = testing::topic("encoded", 1);
        let headers: &[(&str, Option<&[u8]>)] = &[("null", None), ("empty", Some(b"")), ("full", Some(b"x"))];
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let mut written: Vec<testing::Write<'_>> = vec![
            (None, Some(b"keyless"), &[], now),
            (Some(b"a1"), None, headers, now),
            (Some(b"b1"), Some(b""), headers, now),
        ];
        let big = vec![7u8; 100_000];
        written.push((Some(b"a2"), Some(&big), &[], now));
        for _ in 0..300 {
            written.push((Some(b"a3"), Some(b"v"), &[], now));
        }
        testing::write(&topic, 0, &written);
        // Every part, in a form that tells null from empty.
        let encoder: Encoder = Arc::new(|r: &RecordRef<'_>, buf: &mut BytesMut| {
            buf.extend_from_slice(format!("{r:?}").as_bytes());
        });
        // Offset, encoding, its length as announced, data bytes.
        let seen =
            |offset: i64, e: &tributary_core::Encoded| (offset, e.to_bytes(&*encoder), e.wire.len(), e.data_bytes);
        let expected: Vec<_> = take(&*reader(&topic, &[(0, 0)]), written.len(), 64)
            .into_iter()
            .map(record)
            .filter(|r| r.key().is_some_and(|k| k.starts_with(b"a")))
            .map(|r| seen(r.offset, &r.encode(&*encoder)))
            .collect();
        assert_eq!(expected.len(), 302, "a1, a2 and the a3s");

        let keys = KeyFilter::new(vec![], vec![bytes::Bytes::from_static(b"a")], "filter").unwrap();
        let filter = Filter { keys, ..Default::default() };
        let encoding = Encoding { encoder: encoder.clone(), filter };
        let reader = Kafka::new(&testing::config()).unwrap().catch_up(64, Some(encoding), permit()).unwrap();
        reader.assign(&[PartitionOffset::new(&topic, 0, 0)]).unwrap();
        let reads = take(&*reader, expected.len(), 64);
        let got: Vec<_> = reads
            .into_iter()
            .map(|read| match read {
                Read::Encoded { topic: t, partition: 0, offset, record } if *t == *topic => {
                    assert!(matches!(record.wire, Wire::Lent(_)), "the batch path lends librdkafka's buffers");
                    seen(offset, &record)
                }
                other => panic!("an encoded read of the topic, not {other:?}"),
            })
            .collect();
        assert_eq!(got, expected);
        assert_eq!(reader.positions(), vec![PartitionOffset::new(&topic, 0, written.len() as i64)]);
        // The awaited path encodes and filters the same.
        reader.unassign(&[PartitionOffset::new(&topic, 0, written.len() as i64)]).unwrap();
        reader.assign(&[PartitionOffset::new(&topic, 0, 0)]).unwrap();
        let Read::Encoded { offset, record, .. } = next(&*reader).await else { panic!("an encoded read") };
        assert_eq!(seen(offset, &record), expected[0], "the keyless record and b1 are left out");
    }

    /// Records `ok:a`, `bad`, `ok:c` and a tombstone, for the stub decoder.
    fn undecodable_in_the_middle() -> String {
        let topic = testing::topic("decoded", 1);
        let written: Vec<testing::Write<'_>> = vec![
            (Some(b"a"), Some(b"ok:a"), &[], 0),
            (Some(b"b"), Some(b"bad"), &[], 0),
            (Some(b"c"), Some(b"ok:c"), &[], 0),
            (Some(b"a"), None, &[], 0),
        ];
        testing::write(&topic, 0, &written);
        topic
    }

    fn decoding_reader(
        topic: &str,
        decode: Arc<testing::StubDecode>,
        encoding: Option<Encoding>,
    ) -> Box<dyn CatchUpReader> {
        let reader = Kafka::new(&testing::config()).unwrap().decoding(decode).catch_up(64, encoding, permit()).unwrap();
        reader.assign(&[PartitionOffset::new(topic, 0, 0)]).unwrap();
        reader
    }

    #[tokio::test]
    async fn a_reader_hands_over_decoded_values_and_leaves_out_those_its_topic_skips() {
        use tributary_core::decode::OnError;

        let topic = undecodable_in_the_middle();
        let reader = decoding_reader(&topic, testing::StubDecode::new(OnError::Skip), None);
        let got: Vec<_> = take(&*reader, 3, 64)
            .into_iter()
            .map(record)
            .map(|r| (r.offset, r.key().map(<[u8]>::to_vec), r.value().map(<[u8]>::to_vec)))
            .collect();
        let expected = vec![
            (0, Some(b"a".to_vec()), Some(br#"{"v":"a"}"#.to_vec())),
            (2, Some(b"c".to_vec()), Some(br#"{"v":"c"}"#.to_vec())),
            (3, Some(b"a".to_vec()), None),
        ];
        assert_eq!(got, expected, "the undecodable record is left out, a tombstone is kept as it is");
        assert_eq!(reader.positions(), vec![PartitionOffset::new(&topic, 0, 4)], "positions pass it");

        // Encoded straight from librdkafka, with the decoded value in place of the framed one.
        let encoder: tributary_core::Encoder = Arc::new(|r: &RecordRef<'_>, buf: &mut BytesMut| {
            buf.extend_from_slice(r.value.unwrap_or(b"<tombstone>"));
        });
        let encoding = Encoding { encoder: encoder.clone(), filter: Default::default() };
        let reader = decoding_reader(&topic, testing::StubDecode::new(OnError::Skip), Some(encoding));
        let wires: Vec<_> = take(&*reader, 3, 64)
            .into_iter()
            .map(|read| match read {
                Read::Encoded { offset, record, .. } => (offset, record.to_bytes(&*encoder).to_vec()),
                other => panic!("an encoded read, not {other:?}"),
            })
            .collect();
        assert_eq!(
            wires,
            vec![(0, br#"{"v":"a"}"#.to_vec()), (2, br#"{"v":"c"}"#.to_vec()), (3, b"<tombstone>".to_vec())]
        );
    }

    #[tokio::test]
    async fn a_reader_stops_at_a_value_its_topic_must_not_skip_and_names_it() {
        use tributary_core::decode::{DecodeFailure, OnError};

        let topic = undecodable_in_the_middle();
        let reader = decoding_reader(&topic, testing::StubDecode::new(OnError::Fail), None);
        let reads = take(&*reader, 2, 64);
        assert_eq!(record(reads.into_iter().next().unwrap()).offset, 0);
        let reader = decoding_reader(&topic, testing::StubDecode::new(OnError::Fail), None);
        let mut reads = take(&*reader, 2, 64).into_iter();
        reads.next();
        match reads.next() {
            Some(Read::Failed { offset: 1, error: Error::Undecodable { at, failure, message, .. }, .. }) => {
                assert_eq!(at, PartitionOffset::new(&topic, 0, 1));
                assert_eq!((failure, message.as_str()), (DecodeFailure::Mismatch, "not ok"));
            }
            other => panic!("the read that failed, not {other:?}"),
        }
    }

    #[tokio::test]
    async fn below_the_log_start_either_path_reads_out_of_range() {
        let topic = testing::topic("gone", 1);
        testing::write_n(&topic, 0, 10);
        testing::delete_below(&topic, 0, 5);
        assert!(matches!(next(&*reader(&topic, &[(0, 2)])).await, Read::OutOfRange));
        let reads = take(&*reader(&topic, &[(0, 2)]), 1, 1);
        assert!(matches!(reads.as_slice(), [Read::OutOfRange]), "{reads:?}");
        // At the log start it reads on.
        assert_eq!(record(next(&*reader(&topic, &[(0, 5)])).await).offset, 5);
    }

    #[tokio::test]
    async fn either_path_keeps_null_apart_from_empty_and_the_create_time() {
        let topic = testing::topic("nulls", 1);
        let headers: &[(&str, Option<&[u8]>)] = &[("null", None), ("empty", Some(b"")), ("full", Some(b"x"))];
        // Create times of this hour: records stamped long ago are deleted by the broker's
        // retention check (every 10 s in the test broker) and would read as out of range.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let at = [now - 3_000, now - 2_000, now - 1_000];
        testing::write(
            &topic,
            0,
            &[
                (None, Some(b"keyless"), &[], at[0]),
                (Some(b""), None, headers, at[1]),
                (Some(b"k"), Some(b""), headers, at[2]),
            ],
        );
        let view = |r: Record| {
            let headers: Vec<(String, Option<Vec<u8>>)> =
                r.headers().map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec))).collect();
            (r.offset, r.timestamp_ms, r.key().map(<[u8]>::to_vec), r.value().map(<[u8]>::to_vec), headers)
        };
        let awaited = reader(&topic, &[(0, 0)]);
        let mut one_by_one = Vec::new();
        for _ in 0..3 {
            one_by_one.push(view(record(next(&*awaited).await)));
        }
        let batched: Vec<_> = take(&*reader(&topic, &[(0, 0)]), 3, 3).into_iter().map(record).map(view).collect();
        assert_eq!(one_by_one, batched);
        let owned = |hs: &[(&str, Option<&[u8]>)]| -> Vec<(String, Option<Vec<u8>>)> {
            hs.iter().map(|(k, v)| (k.to_string(), v.map(<[u8]>::to_vec))).collect()
        };
        assert_eq!(
            batched,
            vec![
                (0, at[0], None, Some(b"keyless".to_vec()), vec![]),
                (1, at[1], Some(vec![]), None, owned(headers)),
                (2, at[2], Some(b"k".to_vec()), Some(vec![]), owned(headers)),
            ]
        );
    }
}

//! [`Kafka`]: the core's [`Log`] port over rdkafka: watermarks from a metadata client, and
//! catch-up readers (a consumer each, with a bounded prefetch) for subscribers behind the tail.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use futures::{future::BoxFuture, FutureExt};
use rdkafka::{
    consumer::{BaseConsumer, Consumer, StreamConsumer},
    error::{KafkaError, KafkaResult},
    message::{BorrowedMessage, Message},
    types::RDKafkaErrorCode,
    Offset, TopicPartitionList,
};
use tributary_core::{
    source::{take_reads, CatchUpReader, Log, Partition, Position, Read, Watermarks},
    Error,
};

use crate::{
    batch::ConsumerQueue,
    ingest::to_record,
    settings::{catchup_tuning, consumer_config, kafka_error, metadata_tuning, KafkaConfig},
};

/// Timeout of one metadata or watermark request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most messages a catch-up reader takes from librdkafka at once (held as reads until taken).
const CATCHUP_BATCH: usize = 256;

/// A's Kafka cluster, as the core sees it.
pub struct Kafka {
    config: KafkaConfig,
    metadata: BaseConsumer,
}

impl Kafka {
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        let metadata = consumer_config(config, "metadata", &metadata_tuning()).create().map_err(kafka_error)?;
        Ok(Self { config: config.clone(), metadata })
    }
}

impl Log for Kafka {
    fn watermarks(&self, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
        watermarks(&self.metadata, partitions)
    }

    fn catch_up(&self, prefetch_kbytes: usize) -> Result<Box<dyn CatchUpReader>, Error> {
        let consumer: StreamConsumer =
            consumer_config(&self.config, "catchup", &catchup_tuning(prefetch_kbytes)).create().map_err(kafka_error)?;
        Ok(Box::new(Reader { consumer, topics: RwLock::new(Vec::new()), ready: Mutex::new(VecDeque::new()) }))
    }
}

/// A catch-up reader: a consumer assigned explicit positions, no group.
struct Reader {
    consumer: StreamConsumer,
    /// The names of the assigned topics, shared by every record read (no allocation per record).
    topics: RwLock<Vec<Arc<str>>>,
    /// Reads taken from librdkafka in one batch and not handed out yet (at most
    /// [`CATCHUP_BATCH`]).
    ready: Mutex<VecDeque<Read>>,
}

impl Reader {
    fn read(&self, message: KafkaResult<BorrowedMessage<'_>>) -> Read {
        match message {
            Ok(m) => Read::Record(self.record(&m)),
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)) => Read::OutOfRange,
            Err(e) => Read::Error(e.to_string()),
        }
    }

    fn record<M: Message>(&self, m: &M) -> tributary_core::Record {
        record_of(&self.topics.read().unwrap_or_else(|e| e.into_inner()), m)
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, VecDeque<Read>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what librdkafka has ready, up to [`CATCHUP_BATCH`] messages, in one call.
    fn fill(&self, ready: &mut VecDeque<Read>) {
        let Some(queue) = ConsumerQueue::of(&self.consumer) else {
            ready.extend(self.consumer.recv().now_or_never().map(|m| self.read(m)));
            return;
        };
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        for message in queue.consume(Duration::ZERO, CATCHUP_BATCH).iter() {
            ready.push_back(match message {
                Ok(m) => Read::Record(record_of(&topics, &m)),
                Err(e) if e.out_of_range => Read::OutOfRange,
                Err(e) => Read::Error(e.message),
            });
        }
    }
}

/// A record of `m`, sharing the name of its topic when the reader knows it (no allocation).
fn record_of<M: Message>(topics: &[Arc<str>], m: &M) -> tributary_core::Record {
    let known = topics.iter().find(|t| ***t == *m.topic()).cloned();
    to_record(m, known.unwrap_or_else(|| Arc::from(m.topic())))
}

impl CatchUpReader for Reader {
    fn assign(&self, positions: &[Position]) -> Result<(), Error> {
        {
            let mut topics = self.topics.write().unwrap_or_else(|e| e.into_inner());
            for (topic, _, _) in positions {
                if !topics.contains(topic) {
                    topics.push(topic.clone());
                }
            }
        }
        self.consumer.incremental_assign(&assignment(positions)?).map_err(kafka_error)
    }

    fn unassign(&self, positions: &[Position]) -> Result<(), Error> {
        self.consumer.incremental_unassign(&assignment(positions)?).map_err(kafka_error)
    }

    fn recv(&self) -> BoxFuture<'_, Read> {
        Box::pin(async move {
            if let Some(read) = self.ready().pop_front() {
                return read;
            }
            self.read(self.consumer.recv().await)
        })
    }

    fn try_recv(&self) -> Option<Read> {
        let mut ready = self.ready();
        if ready.is_empty() {
            self.fill(&mut ready);
        }
        ready.pop_front()
    }

    /// Under one lock of the ready reads, filled from librdkafka as they run out.
    fn try_recv_many(&self, max_records: usize, max_bytes: usize, out: &mut Vec<Read>) {
        let mut ready = self.ready();
        take_reads(max_records, max_bytes, out, || {
            if ready.is_empty() {
                self.fill(&mut ready);
            }
            ready.pop_front()
        });
    }

    /// The consumer's positions, held back to the first record not handed out yet: a position
    /// must never pass a record the subscription has not taken.
    fn positions(&self) -> Vec<Position> {
        let mut positions = positions(&self.consumer);
        for read in self.ready().iter() {
            let Read::Record(r) = read else { continue };
            for (topic, partition, offset) in &mut positions {
                if *partition == r.partition && **topic == *r.topic && r.offset < *offset {
                    *offset = r.offset;
                }
            }
        }
        positions
    }
}

/// Number of partitions of `topic`, or `None` if Kafka does not know the topic.
pub(crate) fn partition_count<C: Consumer>(client: &C, topic: &str) -> Result<Option<i32>, Error> {
    let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(kafka_error)?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else { return Ok(None) };
    if t.error().is_some() || t.partitions().is_empty() {
        return Ok(None);
    }
    Ok(Some(t.partitions().len() as i32))
}

/// The earliest (`Offset::Beginning`) or latest (`Offset::End`: the high watermark, or the last
/// stable offset under `read_committed`) offset of every partition, in one ListOffsets request per
/// broker. Blocking.
fn list_offsets<C: Consumer>(client: &C, partitions: &[Partition], which: Offset) -> Result<Vec<i64>, Error> {
    let mut list = TopicPartitionList::new();
    for (topic, partition) in partitions {
        list.add_partition_offset(topic, *partition, which).map_err(kafka_error)?;
    }
    let found = client.offsets_for_times(list, REQUEST_TIMEOUT).map_err(kafka_error)?;
    partitions
        .iter()
        .map(|(topic, partition)| {
            let missing = || Error::kafka(format!("Kafka returned no {which:?} offset for {topic}/{partition}"));
            let element = found.find_partition(topic, *partition).ok_or_else(missing)?;
            element.error().map_err(kafka_error)?;
            match element.offset() {
                Offset::Offset(offset) => Ok(offset),
                _ => Err(missing()),
            }
        })
        .collect()
}

/// Watermarks of `partitions`, in order: two requests for all of them (the earliest offsets, then
/// the latest), where asking partition by partition took two round trips each. Blocking.
pub(crate) fn watermarks<C: Consumer>(client: &C, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
    let earliest = list_offsets(client, partitions, Offset::Beginning)?;
    let latest = list_offsets(client, partitions, Offset::End)?;
    Ok(earliest.into_iter().zip(latest).map(|(earliest, latest)| Watermarks { earliest, latest }).collect())
}

/// A partition list assigning each `(topic, partition)` at `offset`.
pub(crate) fn assignment(positions: &[Position]) -> Result<TopicPartitionList, Error> {
    let mut list = TopicPartitionList::new();
    for (topic, partition, offset) in positions {
        list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(kafka_error)?;
    }
    Ok(list)
}

/// The consumer's current position per partition (the next offset it will return), which moves
/// past transaction markers that no record stands for.
pub(crate) fn positions<C: Consumer>(consumer: &C) -> Vec<Position> {
    let Ok(list) = consumer.position() else { return Vec::new() };
    list.elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((Arc::from(e.topic()), e.partition(), o)),
            _ => None,
        })
        .collect()
}

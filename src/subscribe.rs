//! `Subscribe`: a cursor per partition. Near the head a cursor reads the shard's tail buffer and
//! waits for appends; behind it, the subscription reads from Kafka with its own catch-up reader
//! (from a bounded pool) until the cursor reaches the tail buffer, then switches over.
//!
//! Exactly-once delivery within a stream rests on one invariant: a cursor's `pos` is the next
//! offset not yet delivered, and a record is delivered only if its offset is `>= pos`, after which
//! `pos` moves past it. Both sources (tail and Kafka) only ever move `pos` forward.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::FutureExt;
use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    error::KafkaError,
    message::Message,
    types::RDKafkaErrorCode,
};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tonic::Status;
use tracing::debug;

use crate::{
    config::{KafkaConfig, Limits},
    error::Error,
    filter::KeyFilter,
    ingest::{to_rec, ErrorLog},
    kafka, pb,
    registry::{self, Translation},
    translate::OutputRecord,
    view::{Rec, Shard, TailRead, TopicView},
};

/// How long a waiting subscription sleeps at most before it looks at its catch-up reader's
/// position again (transaction markers move it without any message to wake us).
const CATCHUP_POLL: Duration = Duration::from_millis(200);

/// Resources shared by every subscription of a gateway.
#[derive(Clone)]
pub struct Shared {
    pub limits: Limits,
    pub kafka: KafkaConfig,
    /// Catch-up readers in use (each one is a Kafka consumer).
    pub catchup_pool: Arc<Semaphore>,
    pub metadata: Arc<rdkafka::consumer::BaseConsumer>,
    pub shutdown: watch::Receiver<bool>,
}

/// A cursor over one partition.
#[derive(Debug)]
pub struct Cursor {
    pub shard: Arc<Shard>,
    /// The next offset not yet delivered.
    pub pos: i64,
    /// True while the cursor reads from the catch-up reader instead of the tail buffer.
    behind: bool,
}

impl Cursor {
    pub fn new(shard: Arc<Shard>, pos: i64) -> Self {
        Self { shard, pos, behind: false }
    }
}

/// A validated subscription, ready to run.
pub struct Subscription {
    pub topics: Vec<Arc<TopicView>>,
    pub cursors: Vec<Cursor>,
    pub filter: KeyFilter,
    pub max_batch_records: usize,
    pub translation: Option<Translation>,
}

type Sender = mpsc::Sender<Result<pb::SubscribeResponse, Status>>;

/// A Kafka consumer reading the partitions whose cursors are behind the tail buffer.
struct CatchUp {
    consumer: StreamConsumer,
    _permit: OwnedSemaphorePermit,
}

/// Runs a subscription until the client leaves, the gateway shuts down or an error ends it.
pub async fn run(mut sub: Subscription, shared: Shared, tx: Sender, _stream_permit: OwnedSemaphorePermit) {
    let mut runner = Runner::new(&mut sub, &shared);
    if let Err(e) = runner.run(&tx).await {
        // Where the client stands: what it was sent, not what was read for an unsent batch.
        let resume = runner.sent.clone();
        let _ = tx.send(Err(e.with_resume(resume).into())).await;
    }
}

struct Runner<'a> {
    sub: &'a mut Subscription,
    shared: &'a Shared,
    /// Cursor index per (topic, partition).
    index: HashMap<(Arc<str>, i32), usize>,
    catchup: Option<CatchUp>,
    errors: ErrorLog,
    round_robin: usize,
    batch: Vec<Arc<Rec>>,
    batch_bytes: usize,
    max_bytes: usize,
    /// The position as of the last message the client was sent.
    sent: Vec<pb::PartitionOffset>,
    /// Records skipped because their translation returned an error (`skip_errors`).
    skipped: u64,
}

/// Why the run loop stopped without an error.
enum Stop {
    ClientLeft,
}

impl<'a> Runner<'a> {
    fn new(sub: &'a mut Subscription, shared: &'a Shared) -> Self {
        let index =
            sub.cursors.iter().enumerate().map(|(i, c)| ((c.shard.topic.clone(), c.shard.partition), i)).collect();
        Self {
            sub,
            shared,
            index,
            catchup: None,
            errors: ErrorLog::default(),
            round_robin: 0,
            batch: Vec::new(),
            batch_bytes: 0,
            max_bytes: shared.limits.max_batch_bytes,
            sent: Vec::new(),
            skipped: 0,
        }
    }

    /// The position to resume from: every cursor's next offset.
    fn position(&self) -> Vec<pb::PartitionOffset> {
        self.sub
            .cursors
            .iter()
            .map(|c| pb::PartitionOffset {
                topic: c.shard.topic.to_string(),
                partition: c.shard.partition,
                offset: c.pos,
            })
            .collect()
    }

    fn progress(&self) -> pb::SubscribeResponse {
        pb::SubscribeResponse {
            message: Some(pb::subscribe_response::Message::Progress(pb::Progress {
                offsets: self.position(),
                skipped_records: self.skipped,
            })),
        }
    }

    fn batch_full(&self) -> bool {
        self.batch.len() >= self.sub.max_batch_records || self.batch_bytes >= self.max_bytes
    }

    fn push(&mut self, rec: Arc<Rec>) {
        if self.sub.filter.matches(rec.key.as_deref()) {
            self.batch_bytes += rec.size();
            self.batch.push(rec);
        }
    }

    async fn run(&mut self, tx: &Sender) -> Result<(), Error> {
        self.sent = self.position();
        if let Err(Stop::ClientLeft) = self.send(tx, self.progress()).await {
            return Ok(());
        }
        let mut watches: Vec<watch::Receiver<u64>> = self.sub.topics.iter().map(|t| t.watch()).collect();
        let interval = self.shared.limits.progress_interval();
        let mut next_progress = Instant::now() + interval;
        let mut shutdown = self.shared.shutdown.clone();
        loop {
            // Mark every signal seen before reading, so an append after the read wakes us.
            for w in &mut watches {
                w.borrow_and_update();
            }
            self.add_new_partitions();
            self.read_tails();
            self.read_catchup()?;
            if !self.batch.is_empty() {
                let batch = std::mem::take(&mut self.batch);
                self.batch_bytes = 0;
                let records = match &self.sub.translation {
                    None => batch.iter().map(|r| to_record(r)).collect(),
                    Some(t) => {
                        let translated = registry::translate(t, batch).await?;
                        self.skipped += translated.skipped;
                        translated
                            .outputs
                            .into_iter()
                            .map(|(rec, index, out)| translated_record(&rec, index, out))
                            .collect()
                    }
                };
                let message = pb::SubscribeResponse {
                    message: Some(pb::subscribe_response::Message::Records(pb::RecordBatch { records })),
                };
                if let Err(Stop::ClientLeft) = self.send(tx, message).await {
                    return Ok(());
                }
            }
            if Instant::now() >= next_progress {
                if let Err(Stop::ClientLeft) = self.send(tx, self.progress()).await {
                    return Ok(());
                }
                next_progress = Instant::now() + interval;
            }
            if self.more_to_read() {
                continue;
            }
            let behind = self.sub.cursors.iter().any(|c| c.behind);
            let need_reader = behind && self.catchup.is_none();
            let pool = self.shared.catchup_pool.clone();
            let changed = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            let catchup_poll = if self.catchup.is_some() { CATCHUP_POLL } else { Duration::MAX };
            tokio::select! {
                _ = changed => {},
                _ = tokio::time::sleep_until(next_progress.into()) => {},
                _ = tokio::time::sleep(catchup_poll), if self.catchup.is_some() => {},
                message = recv(&self.catchup) => self.take_catchup(message)?,
                permit = pool.acquire_owned(), if need_reader => {
                    let permit = permit.map_err(|_| Error::Internal("catch-up pool closed".into()))?;
                    self.open_catchup(permit)?;
                },
                _ = shutdown.changed() => return Err(Error::ShuttingDown { resume: Vec::new() }),
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// True when a source still has data ready without waiting.
    fn more_to_read(&self) -> bool {
        self.batch_full()
            || self
                .sub
                .cursors
                .iter()
                .any(|c| !c.behind && c.pos < c.shard.next_offset() && c.pos >= c.shard.tail_start())
    }

    /// Sends a message; an empty record batch (everything filtered out) is not sent.
    async fn send(&mut self, tx: &Sender, message: pb::SubscribeResponse) -> Result<(), Stop> {
        if let Some(pb::subscribe_response::Message::Records(batch)) = &message.message {
            if batch.records.is_empty() {
                return Ok(());
            }
        }
        let mut shutdown = self.shared.shutdown.clone();
        tokio::select! {
            sent = tx.send(Ok(message)) => sent.map_err(|_| Stop::ClientLeft)?,
            // A client that does not read cannot be told anything: stop.
            _ = shutdown.changed() => return Err(Stop::ClientLeft),
        }
        self.sent = self.position();
        Ok(())
    }

    /// Follows partitions added to a followed topic, from their start (rule 4).
    fn add_new_partitions(&mut self) {
        for topic in &self.sub.topics {
            let known = self.sub.cursors.iter().filter(|c| c.shard.topic == topic.name).count() as i32;
            for partition in known..topic.partitions() {
                if let Some(shard) = topic.shard(partition) {
                    let start = shard.start();
                    self.index.insert((topic.name.clone(), partition), self.sub.cursors.len());
                    self.sub.cursors.push(Cursor::new(shard, start));
                }
            }
        }
    }

    /// Reads every cursor that is near the head from its tail buffer, fairly across partitions.
    fn read_tails(&mut self) {
        let n = self.sub.cursors.len();
        self.round_robin = self.round_robin.wrapping_add(1);
        let mut out = Vec::new();
        for i in 0..n {
            if self.batch_full() {
                break;
            }
            let at = (self.round_robin + i) % n;
            let cursor = &self.sub.cursors[at];
            if cursor.behind {
                continue;
            }
            let room = self.sub.max_batch_records - self.batch.len();
            let bytes = self.max_bytes.saturating_sub(self.batch_bytes).max(1);
            out.clear();
            match cursor.shard.read_tail(cursor.pos, room, bytes, &mut out) {
                TailRead::Read { next } => {
                    self.sub.cursors[at].pos = next;
                    for rec in out.drain(..) {
                        self.push(rec);
                    }
                }
                TailRead::Behind { tail_start } => {
                    debug!(
                        partition = cursor.shard.partition,
                        pos = cursor.pos,
                        tail_start,
                        "cursor behind the tail buffer"
                    );
                    self.sub.cursors[at].behind = true;
                    if let Some(c) = &self.catchup {
                        let cursor = &self.sub.cursors[at];
                        let list = kafka::assignment([(&*cursor.shard.topic, cursor.shard.partition, cursor.pos)]);
                        if let Err(e) = list.and_then(|l| c.consumer.incremental_assign(&l).map_err(kafka::kafka_error))
                        {
                            self.errors.log(&e.to_string());
                            self.catchup = None; // reopened with every behind cursor
                        }
                    }
                }
            }
        }
    }

    /// Creates the catch-up reader over every cursor that is behind.
    fn open_catchup(&mut self, permit: OwnedSemaphorePermit) -> Result<(), Error> {
        let consumer = kafka::catchup_consumer(&self.shared.kafka, self.shared.limits.catchup_prefetch_kbytes)?;
        let behind = self.sub.cursors.iter().filter(|c| c.behind).map(|c| (&*c.shard.topic, c.shard.partition, c.pos));
        consumer.assign(&kafka::assignment(behind)?).map_err(kafka::kafka_error)?;
        self.catchup = Some(CatchUp { consumer, _permit: permit });
        Ok(())
    }

    /// Drains what the catch-up reader has ready, then moves cursors that reached the tail buffer
    /// back to it and closes the reader when none is behind any more.
    fn read_catchup(&mut self) -> Result<(), Error> {
        if self.catchup.is_none() {
            return Ok(());
        }
        while !self.batch_full() {
            let Some(message) = recv(&self.catchup).now_or_never() else { break };
            self.take_catchup(message)?;
        }
        let Some(catchup) = &self.catchup else { return Ok(()) };
        for (topic, partition, position) in kafka::positions(&catchup.consumer) {
            if let Some(&i) = self.index.get(&(Arc::from(topic.as_str()), partition)) {
                let cursor = &mut self.sub.cursors[i];
                if cursor.behind && position > cursor.pos {
                    cursor.pos = position; // past transaction markers
                }
            }
        }
        let mut unassign = Vec::new();
        for cursor in self.sub.cursors.iter_mut().filter(|c| c.behind) {
            if cursor.pos >= cursor.shard.tail_start() {
                cursor.behind = false;
                unassign.push((cursor.shard.topic.clone(), cursor.shard.partition, cursor.pos));
            }
        }
        if self.sub.cursors.iter().all(|c| !c.behind) {
            self.catchup = None;
        } else if !unassign.is_empty() {
            let list = kafka::assignment(unassign.iter().map(|(t, p, o)| (&**t, *p, *o)))?;
            if let Err(e) = catchup.consumer.incremental_unassign(&list) {
                self.errors.log(&e.to_string());
            }
        }
        Ok(())
    }

    /// Delivers one message of the catch-up reader if its cursor still wants it.
    fn take_catchup(&mut self, message: Result<Rec, KafkaError>) -> Result<(), Error> {
        match message {
            Ok(rec) => {
                let Some(&i) = self.index.get(&(rec.topic.clone(), rec.partition)) else { return Ok(()) };
                let cursor = &mut self.sub.cursors[i];
                // A prefetched record of a cursor that already switched, or one already delivered.
                if !cursor.behind || rec.offset < cursor.pos {
                    return Ok(());
                }
                cursor.pos = rec.offset + 1;
                self.push(Arc::new(rec));
                Ok(())
            }
            Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange)) => self.check_retained(),
            Err(e) => {
                self.errors.log(&e.to_string());
                Ok(())
            }
        }
    }

    /// Ends the stream with OUT_OF_RANGE when a behind cursor's position is no longer retained.
    fn check_retained(&mut self) -> Result<(), Error> {
        let meta = &self.shared.metadata;
        let mut too_old = None;
        let mut earliest = Vec::new();
        for c in &self.sub.cursors {
            let (low, _) = kafka::watermarks(&**meta, &c.shard.topic, c.shard.partition)?;
            earliest.push(pb::PartitionOffset {
                topic: c.shard.topic.to_string(),
                partition: c.shard.partition,
                offset: low,
            });
            if c.behind && c.pos < low && too_old.is_none() {
                too_old = Some((c.shard.topic.to_string(), c.shard.partition, c.pos, low));
            }
        }
        match too_old {
            Some((topic, partition, requested, low)) => {
                Err(Error::TooOld { topic, partition, requested, earliest: low, earliest_offsets: earliest })
            }
            None => Ok(()),
        }
    }
}

/// The next message of the catch-up reader, or never when there is none.
async fn recv(catchup: &Option<CatchUp>) -> Result<Rec, KafkaError> {
    match catchup {
        Some(c) => c.consumer.recv().await.map(|m| to_rec(&m, Arc::from(m.topic()))),
        None => futures::future::pending().await,
    }
}

pub fn to_record(rec: &Rec) -> pb::Record {
    pb::Record {
        topic: rec.topic.to_string(),
        partition: rec.partition,
        offset: rec.offset,
        timestamp_ms: rec.timestamp_ms,
        key: rec.key.clone(),
        value: rec.value.clone(),
        headers: rec.headers.iter().map(|(k, v)| pb::Header { key: k.clone(), value: v.clone() }).collect(),
        output_index: 0,
    }
}

/// B's record made from A's `rec`: the translator's key, value and headers at A's coordinates.
fn translated_record(rec: &Rec, output_index: u32, out: OutputRecord) -> pb::Record {
    pb::Record {
        topic: rec.topic.to_string(),
        partition: rec.partition,
        offset: rec.offset,
        timestamp_ms: rec.timestamp_ms,
        key: out.key.map(Into::into),
        value: out.value.map(Into::into),
        headers: out.headers.into_iter().map(|h| pb::Header { key: h.key, value: h.value.map(Into::into) }).collect(),
        output_index,
    }
}

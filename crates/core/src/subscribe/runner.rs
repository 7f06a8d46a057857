//! The subscription state machine. Near the head a cursor reads its shard's tail buffer and waits
//! for appends; a cursor behind the tail buffer reads from a catch-up reader (one per
//! subscription, from a bounded pool) until it reaches the tail buffer again, then switches back.
//! Records are batched fairly across partitions, translated, and sent; progress goes out at
//! least every `progress_interval_ms`, also when every record was filtered out. A batch is
//! translated on a blocking thread while the next one is read: one translation in flight per
//! subscription, sent once the next batch is read or there is nothing more to read.
//!
//! A conflating subscription keeps reading while messages wait in its client's buffer, holding
//! only the latest record per key ([`Conflated`], up to `limits.conflate_max_bytes`), and sends
//! what it holds once the client has taken the rest.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    sync::{watch, OwnedSemaphorePermit},
    task::JoinHandle,
};
use tracing::debug;

use super::{Cursor, Event, EventSender, Progress, Shared, Subscription};
use crate::{
    error::Error,
    events,
    filter::Verdict,
    record::{Encoded, Encoder, Output, PartitionOffset, Record},
    source::{CatchUpReader, Encoding, Read},
    translate::{Translated, Translation},
    view::TailRead,
};

/// How long a waiting subscription sleeps at most before it looks at its catch-up reader's
/// position again (transaction markers move it without any record to wake us).
const CATCHUP_POLL: Duration = Duration::from_millis(200);
/// How long a subscription told its position is gone waits for fresh watermarks.
const RETAINED_WAIT: Duration = Duration::from_secs(5);

/// Runs a subscription until the client leaves, the gateway shuts down or an error ends it; an
/// error is sent last, with the position the client was last sent.
pub async fn run(sub: Subscription, shared: Shared, tx: EventSender) {
    let mut runner = Runner::new(sub, &shared);
    if let Err(e) = runner.run(&tx).await {
        // Where the client stands: what it was sent, not what was read for an unsent batch.
        let resume = runner.sent.clone();
        let _ = tx.send(Err(e.with_resume(resume))).await;
    }
}

/// A batch under translation, and where the client stands once it is sent.
struct Translating {
    translated: JoinHandle<Result<Translated, Error>>,
    at: Vec<PartitionOffset>,
}

/// A catch-up reader (which holds its pool permit).
struct CatchUp {
    reader: Box<dyn CatchUpReader>,
}

struct Runner<'a> {
    sub: Subscription,
    shared: &'a Shared,
    /// Cursor index per (topic, partition).
    index: HashMap<(Arc<str>, i32), usize>,
    /// The cursor of the last catch-up read: (topic, partition, index).
    last_read: Option<(Arc<str>, i32, usize)>,
    catchup: Option<CatchUp>,
    round_robin: usize,
    /// Records to send next.
    batch: Batch,
    batch_bytes: usize,
    /// How A's records are encoded when this subscription sends them as they are (no translator,
    /// and a delivering layer that encodes): the tail's shared encodings, and catch-up reads
    /// encoded straight from the reader's buffers.
    encoder: Option<Encoder>,
    /// Whether the batch's outcomes are the subscription's own, not shared with others: it
    /// holds records of the catch-up reader (older than the head, where subscriptions meet;
    /// sharing would cost a lookup and an insertion per record for nothing) or tombstones this
    /// subscription's filter put in place of records (no other subscription translates them).
    batch_private: bool,
    max_bytes: usize,
    /// The position as of the last message the client was sent.
    sent: Vec<PartitionOffset>,
    /// Records skipped because their translation returned an error (`skip_errors`).
    skipped: u64,
    /// Per followed topic, how many of its partitions were looked at for cursors: only later
    /// ones are new to the topic.
    known: HashMap<Arc<str>, i32>,
    /// A conflating subscription whose client has messages waiting: it reads on, conflating,
    /// up to `conflate_max_bytes`.
    holding: bool,
    /// The batch being translated while the next is read (nothing else is sent before it).
    translating: Option<Translating>,
}

/// The client is gone (or cannot be told anything): stop without an error.
struct ClientLeft;

/// The records a subscription sends next: A's records to translate (or to send as they are when
/// nothing encodes them), their encodings, or (conflating) the latest record of each key.
enum Batch {
    Records(Vec<Record>),
    /// Encodings, and how many records they hold (a shared run holds several).
    Encoded(Vec<Encoded>, usize),
    Conflated(Conflated),
}

/// The latest record of each key read since the last message, in the order read (so in offset
/// order per partition); keyless records are all kept.
#[derive(Default)]
struct Conflated {
    /// `None` where a later record of the same key took the place.
    records: Vec<Option<Record>>,
    /// Where the latest record of each (topic, partition, key) is in `records`.
    latest: HashMap<(Arc<str>, i32, bytes::Bytes), usize>,
    live: usize,
}

impl Conflated {
    /// Adds `record` in place of the one of its key it supersedes; returns that one's size (0
    /// when there is none).
    fn insert(&mut self, record: Record) -> usize {
        let at = self.records.len();
        let freed = match record.key_bytes() {
            None => 0,
            Some(key) => match self.latest.insert((record.topic.clone(), record.partition, key), at) {
                None => 0,
                Some(old) => {
                    let old = self.records[old].take().expect("the latest record of its key");
                    self.live -= 1;
                    old.size()
                }
            },
        };
        self.records.push(Some(record));
        self.live += 1;
        // Superseded places are dropped before they outnumber the records held.
        if self.records.len() >= 2 * self.live + 1_024 {
            self.compact();
        }
        freed
    }

    fn compact(&mut self) {
        let records: Vec<Record> = std::mem::take(&mut self.records).into_iter().flatten().collect();
        self.latest.clear();
        for (i, r) in records.iter().enumerate() {
            if let Some(key) = r.key_bytes() {
                self.latest.insert((r.topic.clone(), r.partition, key), i);
            }
        }
        self.records = records.into_iter().map(Some).collect();
    }

    fn into_records(self) -> Vec<Record> {
        self.records.into_iter().flatten().collect()
    }
}

impl Batch {
    fn len(&self) -> usize {
        match self {
            Batch::Records(records) => records.len(),
            Batch::Encoded(_, records) => *records,
            Batch::Conflated(held) => held.live,
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The batch, leaving an empty one of the same kind.
    fn take(&mut self) -> Batch {
        match self {
            Batch::Records(records) => Batch::Records(std::mem::take(records)),
            Batch::Encoded(encoded, records) => Batch::Encoded(std::mem::take(encoded), std::mem::take(records)),
            Batch::Conflated(held) => Batch::Conflated(std::mem::take(held)),
        }
    }
}

impl<'a> Runner<'a> {
    fn new(sub: Subscription, shared: &'a Shared) -> Self {
        let index =
            sub.cursors.iter().enumerate().map(|(i, c)| ((c.shard.topic.clone(), c.shard.partition), i)).collect();
        // Conflating needs the keys, which encodings do not keep.
        let encoder = match (&sub.translation, sub.conflate) {
            (None, false) => shared.wire.clone(),
            _ => None,
        };
        let batch = match (&encoder, sub.conflate) {
            (_, true) => Batch::Conflated(Conflated::default()),
            (None, false) => Batch::Records(Vec::new()),
            (Some(_), false) => Batch::Encoded(Vec::new(), 0),
        };
        Self {
            sub,
            shared,
            index,
            last_read: None,
            catchup: None,
            round_robin: 0,
            batch,
            batch_bytes: 0,
            encoder,
            batch_private: false,
            max_bytes: shared.limits.max_batch_bytes,
            sent: Vec::new(),
            skipped: 0,
            known: HashMap::new(),
            holding: false,
            translating: None,
        }
    }

    /// The position to resume from: every cursor's next offset.
    fn position(&self) -> Vec<PartitionOffset> {
        self.sub.cursors.iter().map(Cursor::position).collect()
    }

    fn progress(&self) -> Event {
        Event::Progress(Progress { offsets: self.position(), skipped_records: self.skipped })
    }

    fn batch_full(&self) -> bool {
        match self.holding {
            true => self.batch_bytes >= self.shared.limits.conflate_max_bytes,
            false => self.batch.len() >= self.sub.max_batch_records || self.batch_bytes >= self.max_bytes,
        }
    }

    /// How many more records, and bytes of them, the batch takes in one read.
    fn room(&self) -> (usize, usize) {
        match self.holding {
            // Reads conflate as they go: a batch's worth at a time, up to the bound.
            true => {
                let bytes = self.shared.limits.conflate_max_bytes.saturating_sub(self.batch_bytes);
                (self.sub.max_batch_records, bytes.max(1))
            }
            false => (
                self.sub.max_batch_records.saturating_sub(self.batch.len()),
                self.max_bytes.saturating_sub(self.batch_bytes).max(1),
            ),
        }
    }

    /// A conflating subscription holds what it read while its client has messages waiting and
    /// the bound is not reached.
    fn holds(&self, tx: &EventSender) -> bool {
        self.sub.conflate
            && tx.queued() > 0
            && self.batch_bytes < self.shared.limits.conflate_max_bytes
            && !self.batch.is_empty()
    }

    /// Adds a record to the batch as the filter has it (as it is, as a tombstone of its key, or
    /// not at all); a record sent as it is is encoded as it is written, straight from the view.
    fn push(&mut self, record: Record) {
        let record = match self.sub.filter.verdict_of(&record) {
            Verdict::Skip => return,
            Verdict::Deliver => record,
            Verdict::Tombstone => {
                // No other subscription translates this tombstone: keeping its outcome for
                // sharing would only push out outcomes that others reuse.
                self.batch_private = true;
                record.to_tombstone()
            }
        };
        self.batch_bytes += record.size();
        match (&mut self.batch, &self.encoder) {
            (Batch::Conflated(held), _) => self.batch_bytes -= held.insert(record),
            (Batch::Records(records), _) => records.push(record),
            (Batch::Encoded(encoded, records), Some(encoder)) => {
                encoded.push(record.to_encode(&**encoder));
                *records += 1;
            }
            (Batch::Encoded(..), None) => unreachable!("an encoded batch has an encoder"),
        }
    }

    /// Adds a record (or a run of them) encoded and filtered already to the batch.
    fn push_encoded(&mut self, record: Encoded) {
        self.batch_bytes += record.size();
        match &mut self.batch {
            Batch::Encoded(encoded, records) => {
                *records += record.records();
                encoded.push(record);
            }
            Batch::Records(_) | Batch::Conflated(_) => {
                unreachable!("a reader encodes only for a subscription that sends encodings")
            }
        }
    }

    async fn run(&mut self, tx: &EventSender) -> Result<(), Error> {
        self.sent = self.position();
        if let Err(ClientLeft) = self.send(tx, self.progress(), self.position()).await {
            return Ok(());
        }
        let mut watches: Vec<watch::Receiver<u64>> = self.sub.topics.iter().map(|t| t.watch()).collect();
        let interval = self.shared.limits.progress_interval();
        let mut next_progress = Instant::now() + interval;
        let shutdown = self.shared.shutdown.clone();
        let stop = self.sub.stop.clone();
        loop {
            // Mark every signal seen before reading, so an append after the read wakes us.
            for w in &mut watches {
                w.borrow_and_update();
            }
            self.add_new_partitions();
            self.check_held()?;
            self.holding = self.sub.conflate && tx.queued() > 0;
            // The tails and the catch-up reader take turns to fill the batch first (`read_tails`
            // moves `round_robin` on once a turn), so that neither starves the other.
            if self.round_robin % 2 == 0 {
                self.read_tails();
                self.read_catchup().await?;
            } else {
                self.read_catchup().await?;
                self.read_tails();
            }
            // A full batch leaves more ready to read, from the tails or the catch-up reader.
            let mut more = self.batch_full();
            if !self.batch.is_empty() && !self.holds(tx) {
                let batch = self.batch.take();
                self.batch_bytes = 0;
                let sent = match (batch, self.sub.translation.clone()) {
                    (Batch::Conflated(held), _) => match self.send_translating(tx).await? {
                        Ok(()) => self.send_held(tx, held.into_records()).await?,
                        left => left,
                    },
                    // Translated while the next batch is read; the one before it is sent now.
                    (Batch::Records(records), Some(translation)) => {
                        let before = match self.translating.take() {
                            Some(t) => Some(self.translated(t).await?),
                            None => None,
                        };
                        self.translating = Some(self.start_translation(records, translation));
                        match before {
                            Some((event, at)) => self.send(tx, event, at).await,
                            None => Ok(()),
                        }
                    }
                    (batch, _) => match self.send_translating(tx).await? {
                        Ok(()) => {
                            let event = self.event(batch).await?;
                            let at = self.position();
                            self.send(tx, event, at).await
                        }
                        left => left,
                    },
                };
                if let Err(ClientLeft) = sent {
                    return Ok(());
                }
            }
            more = more || self.more_to_read();
            // Nothing more to read without waiting: what is being translated goes out first.
            if !more {
                if let Err(ClientLeft) = self.send_translating(tx).await? {
                    return Ok(());
                }
            }
            // A position is sent only when nothing read is held back.
            if Instant::now() >= next_progress && self.batch.is_empty() && self.translating.is_none() {
                if let Err(ClientLeft) = self.send(tx, self.progress(), self.position()).await {
                    return Ok(());
                }
                next_progress = Instant::now() + interval;
            }
            let behind = self.sub.cursors.iter().any(|c| c.behind);
            let need_reader = behind && self.catchup.is_none();
            if more {
                // Partitions behind the tail do not wait for the others' tails to run dry (a
                // busy partition's may not): a free reader is taken now.
                if need_reader {
                    if let Ok(permit) = self.shared.catchup_pool.clone().try_acquire_owned() {
                        self.open_catchup(permit)?;
                    }
                }
                continue;
            }
            let linger = self.shared.limits.head_linger().filter(|_| !behind);
            let pool = self.shared.catchup_pool.clone();
            let changed = futures::future::select_all(watches.iter_mut().map(|w| Box::pin(w.changed())));
            let catchup_poll = if self.catchup.is_some() { CATCHUP_POLL } else { Duration::MAX };
            tokio::select! {
                _ = changed => {
                    // At the head: let more appends arrive, and send them in one message.
                    if let Some(linger) = linger {
                        tokio::time::sleep(linger).await;
                    }
                },
                // (No progress while records are held: the timer would only spin.)
                _ = tokio::time::sleep_until(next_progress.into()), if self.batch.is_empty() => {},
                // A conflating subscription's client took what it had: send what is held.
                _ = tx.emptied(), if self.sub.conflate && !self.batch.is_empty() => {},
                _ = tokio::time::sleep(catchup_poll), if self.catchup.is_some() => {},
                read = recv(&self.catchup) => self.take_catchup(read).await?,
                permit = pool.acquire_owned(), if need_reader => {
                    let permit = permit.map_err(|_| Error::Internal("catch-up pool closed".into()))?;
                    self.open_catchup(permit)?;
                },
                _ = shutdown.cancelled() => return Err(Error::ShuttingDown { resume: Vec::new() }),
                e = stop.stopped() => return Err(e),
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

    /// The message of a batch: its records translated, or as they are.
    async fn event(&mut self, batch: Batch) -> Result<Event, Error> {
        Ok(match (batch, self.sub.translation.clone()) {
            (Batch::Encoded(encoded, _), _) => Event::Encoded(encoded),
            (Batch::Records(records), None) => Event::Records(records.into_iter().map(Output::untranslated).collect()),
            (Batch::Records(records), Some(translation)) => {
                let translating = self.start_translation(records, translation);
                self.translated(translating).await?.0
            }
            (Batch::Conflated(_), _) => unreachable!("held records are sent as records (`send_held`)"),
        })
    }

    /// Starts translating a batch on a blocking thread; the runner reads on meanwhile.
    fn start_translation(&mut self, records: Vec<Record>, translation: Translation) -> Translating {
        let private = std::mem::take(&mut self.batch_private);
        let translated = tokio::spawn(async move {
            match private {
                true => translation.translate(records).await,
                false => translation.translate_shared(records).await,
            }
        });
        Translating { translated, at: self.position() }
    }

    /// The message of a batch under translation, once translated, and where it leaves the client.
    async fn translated(&mut self, t: Translating) -> Result<(Event, Vec<PartitionOffset>), Error> {
        let translated = t.translated.await.map_err(|e| Error::Internal(format!("translation task: {e}")))??;
        self.skipped += translated.skipped;
        Ok((Event::Records(translated.outputs), t.at))
    }

    /// Sends the batch under translation, if there is one, once it is translated.
    async fn send_translating(&mut self, tx: &EventSender) -> Result<Result<(), ClientLeft>, Error> {
        let Some(t) = self.translating.take() else { return Ok(Ok(())) };
        let (event, at) = self.translated(t).await?;
        Ok(self.send(tx, event, at).await)
    }

    /// Sends what a conflating subscription held, in messages of at most a batch each. Between
    /// them the client stands, per partition, after the last record it was sent; after the last
    /// one, at the position read.
    async fn send_held(&mut self, tx: &EventSender, records: Vec<Record>) -> Result<Result<(), ClientLeft>, Error> {
        let mut chunks: Vec<Vec<Record>> = Vec::new();
        let mut bytes = 0;
        for record in records {
            let full = chunks.last().is_none_or(|c| c.len() >= self.sub.max_batch_records || bytes >= self.max_bytes);
            if full {
                chunks.push(Vec::new());
                bytes = 0;
            }
            bytes += record.size();
            chunks.last_mut().expect("a chunk").push(record);
        }
        let last = chunks.len().saturating_sub(1);
        for (i, chunk) in chunks.into_iter().enumerate() {
            let mut at = self.sent.clone();
            match i == last {
                true => at = self.position(),
                false => {
                    for r in &chunk {
                        let cursor = self.index.get(&(r.topic.clone(), r.partition)).copied();
                        if let Some(p) = cursor.and_then(|c| at.get_mut(c)) {
                            p.offset = p.offset.max(r.offset + 1);
                        }
                    }
                }
            }
            let event = self.event(Batch::Records(chunk)).await?;
            if let Err(ClientLeft) = self.send(tx, event, at).await {
                return Ok(Err(ClientLeft));
            }
        }
        Ok(Ok(()))
    }

    /// Sends an event after which the client stands `at`; an empty record batch (everything
    /// filtered out) is not sent.
    async fn send(&mut self, tx: &EventSender, event: Event, at: Vec<PartitionOffset>) -> Result<(), ClientLeft> {
        if event.is_empty() {
            return Ok(());
        }
        tokio::select! {
            sent = tx.send(Ok(event)) => sent.map_err(|_| ClientLeft)?,
            // A client that does not read cannot be told anything: stop.
            _ = self.shared.shutdown.cancelled() => return Err(ClientLeft),
            _ = self.sub.stop.stopped() => return Err(ClientLeft),
        }
        self.sent = at;
        Ok(())
    }

    /// Follows partitions added to a followed topic, from their start (rule 4). The first look
    /// goes over every partition (one added between the plan and the run is followed too); a
    /// partition held by another replica then is not followed by this stream, even if it comes
    /// here later: its client follows it where it was (sharding, `docs/sharding.md`).
    fn add_new_partitions(&mut self) {
        for topic in &self.sub.topics {
            let known = self.known.get(&topic.name).copied().unwrap_or(0);
            let partitions = topic.partitions();
            for partition in known..partitions {
                if self.index.contains_key(&(topic.name.clone(), partition)) {
                    continue;
                }
                if let Some(shard) = topic.shard(partition) {
                    let start = shard.start();
                    self.index.insert((topic.name.clone(), partition), self.sub.cursors.len());
                    self.sub.cursors.push(Cursor::new(shard, start));
                }
            }
            self.known.insert(topic.name.clone(), partitions);
        }
    }

    /// Ends the stream when a partition it reads was taken from this replica (sharding): the
    /// client resumes it, from the position in the error, where it moves.
    fn check_held(&self) -> Result<(), Error> {
        match self.sub.cursors.iter().find(|c| c.shard.is_released()) {
            Some(c) => Err(Error::not_held(c.shard.topic.to_string(), c.shard.partition)),
            None => Ok(()),
        }
    }

    /// Reads every cursor that is near the head from its tail buffer, fairly across partitions.
    fn read_tails(&mut self) {
        let n = self.sub.cursors.len();
        self.round_robin = self.round_robin.wrapping_add(1);
        // Every record as it is: the tail's shared encodings serve.
        let shared = self.encoder.clone().filter(|_| self.sub.filter.is_everything());
        let (mut out, mut encoded) = (Vec::new(), Vec::new());
        for i in 0..n {
            if self.batch_full() {
                break;
            }
            let at = (self.round_robin + i) % n;
            let cursor = &self.sub.cursors[at];
            if cursor.behind {
                continue;
            }
            let (room, bytes) = self.room();
            let limits = &self.shared.limits;
            let read = match &shared {
                Some(encoder) => {
                    cursor.shard.read_tail_encoded(cursor.pos, room, bytes, limits, &**encoder, &mut encoded)
                }
                None => cursor.shard.read_tail(cursor.pos, room, bytes, &mut out),
            };
            match read {
                TailRead::Read { next } => {
                    self.sub.cursors[at].pos = next;
                    for read in out.drain(..) {
                        self.push(read);
                    }
                    for read in encoded.drain(..) {
                        self.push_encoded(read);
                    }
                }
                TailRead::Behind { tail_start } => {
                    debug!(
                        partition = cursor.shard.partition,
                        pos = cursor.pos,
                        tail_start,
                        "cursor behind the tail buffer"
                    );
                    let position = cursor.position();
                    self.sub.cursors[at].behind = true;
                    if let Some(c) = &self.catchup {
                        if let Err(e) = c.reader.assign(&[position]) {
                            events::emit(&events::KafkaCatchupError { error: e.to_string() });
                            self.catchup = None; // reopened with every behind cursor
                        }
                    }
                }
            }
        }
    }

    /// Opens the catch-up reader over every cursor that is behind.
    fn open_catchup(&mut self, permit: OwnedSemaphorePermit) -> Result<(), Error> {
        let encoding = self.encoder.clone().map(|encoder| Encoding { encoder, filter: self.sub.filter.clone() });
        let reader = self.shared.log.catch_up(self.shared.limits.catchup_prefetch_kbytes, encoding, permit)?;
        let behind: Vec<PartitionOffset> = self.sub.cursors.iter().filter(|c| c.behind).map(Cursor::position).collect();
        reader.assign(&behind)?;
        self.catchup = Some(CatchUp { reader });
        Ok(())
    }

    /// Drains what the catch-up reader has ready, then moves cursors that reached the tail buffer
    /// back to it and closes the reader when none is behind any more.
    async fn read_catchup(&mut self) -> Result<(), Error> {
        if self.catchup.is_none() {
            return Ok(());
        }
        let mut reads = Vec::new();
        while !self.batch_full() {
            let Some(catchup) = &self.catchup else { break };
            let (room, bytes) = self.room();
            catchup.reader.try_recv_many(room, bytes, &mut reads);
            if reads.is_empty() {
                break;
            }
            for read in reads.drain(..) {
                self.take_catchup(read).await?;
            }
        }
        let Some(catchup) = &self.catchup else { return Ok(()) };
        for p in catchup.reader.positions() {
            if let Some(&i) = self.index.get(&(Arc::from(p.topic), p.partition)) {
                let cursor = &mut self.sub.cursors[i];
                if cursor.behind && p.offset > cursor.pos {
                    cursor.pos = p.offset; // past transaction markers
                }
            }
        }
        let mut switched = Vec::new();
        for cursor in self.sub.cursors.iter_mut().filter(|c| c.behind) {
            if cursor.pos >= cursor.shard.tail_start() {
                cursor.behind = false;
                switched.push(cursor.position());
            }
        }
        if self.sub.cursors.iter().all(|c| !c.behind) {
            self.catchup = None;
        } else if !switched.is_empty() {
            if let Err(e) = catchup.reader.unassign(&switched) {
                events::emit(&events::KafkaCatchupError { error: e.to_string() });
            }
        }
        Ok(())
    }

    /// Delivers one read of the catch-up reader if its cursor still wants it.
    async fn take_catchup(&mut self, read: Read) -> Result<(), Error> {
        if let Some((topic, partition, offset)) = read.at() {
            // Reads come in runs of one partition: the last cursor found is tried first.
            let i = match self.last_read {
                Some((ref last, p, i)) if p == partition && last == topic => i,
                _ => {
                    let Some(&i) = self.index.get(&(topic.clone(), partition)) else {
                        return Ok(());
                    };
                    self.last_read = Some((topic.clone(), partition, i));
                    i
                }
            };
            let cursor = &mut self.sub.cursors[i];
            // A prefetched record of a cursor that already switched, or one already delivered.
            if !cursor.behind || offset < cursor.pos {
                return Ok(());
            }
            if matches!(read, Read::Failed { .. }) {
                // Not delivered: the stream ends where it stands, resumable at the record.
                let Read::Failed { error, .. } = read else { unreachable!() };
                return Err(error);
            }
            cursor.pos = offset + 1;
            self.batch_private = true;
        }
        match read {
            Read::Record(record) => {
                self.push(record);
                Ok(())
            }
            Read::Encoded { record, .. } => {
                self.push_encoded(record);
                Ok(())
            }
            // A read without a position is no record of a cursor's.
            Read::Failed { error, .. } => Err(error),
            Read::OutOfRange => self.check_retained().await,
            Read::Error(message) => {
                events::emit(&events::KafkaCatchupError { error: message });
                Ok(())
            }
        }
    }

    /// Ends the stream with OUT_OF_RANGE when a behind cursor's position is no longer retained.
    async fn check_retained(&mut self) -> Result<(), Error> {
        let partitions: Vec<_> = self.sub.cursors.iter().map(|c| (c.shard.topic.clone(), c.shard.partition)).collect();
        // Earliest offsets only grow: known ones, however old, can tell "too old" for sure.
        let marks = self.shared.watermarks.get(&partitions, RETAINED_WAIT).await?.marks;
        let earliest: Vec<PartitionOffset> =
            self.sub.cursors.iter().zip(&marks).map(|(c, m)| c.shard.at(m.earliest)).collect();
        let too_old = self.sub.cursors.iter().zip(&marks).find(|(c, m)| c.behind && c.pos < m.earliest);
        match too_old {
            Some((c, m)) => Err(Error::TooOld {
                topic: c.shard.topic.to_string(),
                partition: c.shard.partition,
                requested: c.pos,
                earliest: m.earliest,
                earliest_offsets: earliest,
            }),
            None => Ok(()),
        }
    }
}

/// The next read of the catch-up reader, or never when there is none.
async fn recv(catchup: &Option<CatchUp>) -> Read {
    match catchup {
        Some(c) => c.reader.recv().await,
        None => futures::future::pending().await,
    }
}

#[cfg(test)]
mod tests;

//! A fixed range of one partition: the records of offsets `[from, end)`, read from the tail
//! buffer when it holds them, else from a catch-up reader of the shared pool. The HTTP log's
//! chunks are ranges: offsets never change meaning (rule 1), so the same range gives the same
//! records to every reader, and a chunk can be cached for good.
//!
//! Unlike a subscription, a range reads one partition and ends at `end`; it never waits for the
//! head (the caller asks only for offsets the view already has).

use std::{sync::Arc, time::Duration};

use crate::{
    error::Error,
    events,
    record::Record,
    source::{CatchUpReader, Read},
    subscribe::Shared,
    view::{Shard, TailRead},
};

/// How long a range read waits for a free catch-up reader before it answers UNAVAILABLE.
pub const CATCHUP_WAIT: Duration = Duration::from_secs(10);
/// How long a catch-up read waits for a record before it looks at the reader's position again
/// (transaction markers move it without a record).
const POLL: Duration = Duration::from_millis(200);
/// How long a catch-up read may see no progress at all before it gives up (Kafka unreachable).
const STALL: Duration = Duration::from_secs(30);

/// Reads `[from, end)` of one partition in batches; see the module docs.
pub struct RangeReader {
    shared: Shared,
    shard: Arc<Shard>,
    pos: i64,
    end: i64,
    max_records: usize,
    max_bytes: usize,
    /// The catch-up reader in use.
    catchup: Option<CatchUp>,
    /// A catch-up reader assigned nothing, kept to be used again: opening one is a new Kafka
    /// consumer (threads, connections), which costs more than reading a chunk.
    spare: Option<CatchUp>,
}

/// A catch-up reader (which holds its permit of the pool `limits.max_catchup_readers`).
pub struct CatchUp {
    reader: Box<dyn CatchUpReader>,
    /// Where it was assigned last (unassigned when it is parked).
    assigned: Option<crate::record::PartitionOffset>,
}

impl RangeReader {
    /// A reader of `[from, end)` of `shard`, in batches of at most `limits.max_batch_records`
    /// records and (beyond the first) `limits.max_batch_bytes`.
    pub fn new(shared: Shared, shard: Arc<Shard>, from: i64, end: i64) -> Self {
        let (max_records, max_bytes) = (shared.limits.max_batch_records, shared.limits.max_batch_bytes);
        Self { shared, shard, pos: from, end, max_records, max_bytes, catchup: None, spare: None }
    }

    /// Uses `spare` (a reader parked by another range) before opening a new one.
    pub fn with_spare(mut self, spare: Option<CatchUp>) -> Self {
        self.spare = spare;
        self
    }

    /// The catch-up reader this range used (or was given), assigned nothing, for the next range.
    pub fn into_spare(mut self) -> Option<CatchUp> {
        self.park();
        self.spare.take()
    }

    /// Unassigns the reader in use and keeps it as the spare.
    fn park(&mut self) {
        let Some(mut catchup) = self.catchup.take() else { return };
        if let Some(assigned) = catchup.assigned.take() {
            if let Err(e) = catchup.reader.unassign(&[assigned]) {
                events::emit(&events::KafkaCatchupError { error: e.to_string() });
                return; // dropped: a new one is opened when needed
            }
        }
        self.spare = Some(catchup);
    }

    /// The next offset to read.
    pub fn position(&self) -> i64 {
        self.pos
    }

    /// The next records of the range in offset order; `None` once the range is read. Errors:
    /// too old (Kafka no longer retains the position), the partition left this replica, no
    /// catch-up reader free within [`CATCHUP_WAIT`], Kafka silent for [`STALL`].
    pub async fn next_batch(&mut self) -> Result<Option<Vec<Record>>, Error> {
        loop {
            if self.pos >= self.end {
                self.park();
                return Ok(None);
            }
            if self.shard.is_released() {
                return Err(Error::not_held(self.shard.topic.to_string(), self.shard.partition));
            }
            if self.catchup.is_none() {
                let mut out = Vec::new();
                match self.shard.read_tail(self.pos, self.max_records, self.max_bytes, &mut out) {
                    TailRead::Read { next } => {
                        let records: Vec<Record> = out.into_iter().take_while(|r| r.offset < self.end).collect();
                        let next = next.min(self.end);
                        if next <= self.pos {
                            // The view is behind the range: the caller asked beyond the head, or
                            // the partition was reset under it.
                            return Err(Error::kafka(format!(
                                "{}/{} is at {} in this gateway's view, before the end of the range asked for ({}); retry shortly",
                                self.shard.topic,
                                self.shard.partition,
                                self.shard.next_offset(),
                                self.end
                            )));
                        }
                        self.pos = next;
                        if !records.is_empty() {
                            return Ok(Some(records));
                        }
                    }
                    TailRead::Behind { .. } => self.open_catchup().await?,
                }
                continue;
            }
            let records = self.read_catchup().await?;
            if !records.is_empty() {
                return Ok(Some(records));
            }
        }
    }

    async fn open_catchup(&mut self) -> Result<(), Error> {
        let at = self.shard.at(self.pos);
        if let Some(mut spare) = self.spare.take() {
            spare.reader.assign(std::slice::from_ref(&at))?;
            spare.assigned = Some(at);
            self.catchup = Some(spare);
            return Ok(());
        }
        let pool = self.shared.catchup_pool.clone();
        let permit = tokio::time::timeout(CATCHUP_WAIT, pool.acquire_owned())
            .await
            .map_err(|_| {
                Error::ResourceExhausted(format!(
                    "every catch-up reader (limits.max_catchup_readers = {}) stayed busy for {CATCHUP_WAIT:?}; retry later",
                    self.shared.limits.max_catchup_readers
                ))
            })?
            .map_err(|_| Error::Internal("catch-up pool closed".into()))?;
        let reader = self.shared.log.catch_up(self.shared.limits.catchup_prefetch_kbytes, None, permit)?;
        reader.assign(std::slice::from_ref(&at))?;
        self.catchup = Some(CatchUp { reader, assigned: Some(at) });
        Ok(())
    }

    /// What the catch-up reader has (waiting for it at most [`POLL`]); switches back to the tail
    /// buffer once the position is in it.
    async fn read_catchup(&mut self) -> Result<Vec<Record>, Error> {
        let mut batch = Vec::new();
        let mut reads = Vec::new();
        let mut stalled = Duration::ZERO;
        let start = self.pos;
        while batch.is_empty() && self.pos < self.end {
            let Some(CatchUp { reader, .. }) = &self.catchup else { break };
            reader.try_recv_many(self.max_records, self.max_bytes, &mut reads);
            if reads.is_empty() {
                if let Some(p) = reader.positions().into_iter().find(|p| p.partition == self.shard.partition) {
                    // Past transaction markers that no record stands for.
                    self.pos = self.pos.max(p.offset.min(self.end));
                }
                if self.pos >= self.end || self.pos >= self.shard.tail_start() {
                    break;
                }
                let shutdown = self.shared.shutdown.clone();
                tokio::select! {
                    read = reader.recv() => reads.push(read),
                    _ = tokio::time::sleep(POLL) => stalled += POLL,
                    _ = shutdown.cancelled() => return Err(Error::ShuttingDown { resume: Vec::new() }),
                }
                if stalled >= STALL && self.pos == start {
                    return Err(Error::kafka(format!(
                        "no record of {}/{} from offset {} arrived from Kafka in {STALL:?}; retry later",
                        self.shard.topic, self.shard.partition, self.pos
                    )));
                }
            }
            for read in reads.drain(..) {
                match read {
                    Read::Record(r) if r.partition == self.shard.partition && r.offset >= self.pos => {
                        self.pos = (r.offset + 1).min(self.end);
                        if r.offset < self.end {
                            batch.push(r);
                        }
                    }
                    // Not this partition's, or already read; a reader opened without an encoding
                    // reads no encoded record.
                    Read::Record(_) | Read::Encoded { .. } => {}
                    Read::Failed { partition, offset, error, .. }
                        if partition == self.shard.partition && offset >= self.pos && offset < self.end =>
                    {
                        return Err(error)
                    }
                    Read::Failed { .. } => {}
                    Read::OutOfRange => return Err(self.too_old().await),
                    Read::Error(error) => events::emit(&events::KafkaCatchupError { error }),
                }
            }
        }
        if self.pos >= self.end || self.pos >= self.shard.tail_start() {
            self.park();
        }
        Ok(batch)
    }

    /// The error for a position Kafka no longer has.
    async fn too_old(&self) -> Error {
        let partition = (self.shard.topic.clone(), self.shard.partition);
        match self.shared.watermarks.get(&[partition], Duration::from_secs(5)).await {
            Ok(answer) if self.pos < answer.marks[0].earliest => Error::TooOld {
                topic: self.shard.topic.to_string(),
                partition: self.shard.partition,
                requested: self.pos,
                earliest: answer.marks[0].earliest,
                earliest_offsets: vec![self.shard.at(answer.marks[0].earliest)],
            },
            Ok(_) => Error::kafka(format!(
                "Kafka said offset {} of {}/{} is out of range, yet it is retained; retry shortly",
                self.pos, self.shard.topic, self.shard.partition
            )),
            Err(e) => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::{limits::Limits, testing::MemoryLog, view::View, watermarks::WatermarkCache};

    /// What a range reader shares, over a log in memory that holds `records` (partition t/0).
    fn shared(records: Vec<Record>, limits: Limits) -> (Shared, Arc<MemoryLog>) {
        let memory = Arc::new(MemoryLog::default());
        memory.records.lock().unwrap().insert(("t".into(), 0), records);
        let log: Arc<dyn crate::source::Log> = memory.clone();
        let view = Arc::new(View::new(&["t".to_string()]));
        let shared = Shared {
            catchup_pool: Arc::new(tokio::sync::Semaphore::new(limits.max_catchup_readers)),
            limits,
            watermarks: WatermarkCache::new(log.clone(), view),
            log,
            shutdown: CancellationToken::new(),
            wire: None,
        };
        (shared, memory)
    }

    fn records(shard: &Shard, offsets: impl IntoIterator<Item = i64>, limits: &Limits) -> Vec<Record> {
        let records: Vec<Record> = offsets
            .into_iter()
            .map(|o| Record::new("t".into(), 0, o, 0, Some(format!("k{o}").as_bytes()), Some(b"v"), &[]))
            .collect();
        shard.apply_all(records.clone(), limits);
        records
    }

    async fn read_all(mut reader: RangeReader) -> Result<Vec<i64>, Error> {
        let mut offsets = Vec::new();
        while let Some(batch) = reader.next_batch().await? {
            offsets.extend(batch.iter().map(|r| r.offset));
        }
        Ok(offsets)
    }

    #[tokio::test]
    async fn a_range_in_the_tail_gives_exactly_its_records() {
        let limits = Limits { max_batch_records: 3, ..Limits::default() };
        let shard = Arc::new(Shard::new("t".into(), 0, 0, 0));
        records(&shard, [0, 1, 2, 4, 5, 7, 8, 9], &limits);
        let (shared, _) = shared(Vec::new(), limits);
        assert_eq!(read_all(RangeReader::new(shared.clone(), shard.clone(), 1, 8)).await.unwrap(), vec![1, 2, 4, 5, 7]);
        assert_eq!(read_all(RangeReader::new(shared.clone(), shard.clone(), 3, 4)).await.unwrap(), Vec::<i64>::new());
        let beyond = read_all(RangeReader::new(shared, shard, 8, 12)).await.unwrap_err();
        assert!(matches!(beyond, Error::Kafka { .. }), "{beyond}");
    }

    #[tokio::test]
    async fn a_range_behind_the_tail_is_read_from_kafka_and_ends_at_its_end() {
        let limits = Limits { tail_max_records: 2, max_batch_records: 2, ..Limits::default() };
        let shard = Arc::new(Shard::new("t".into(), 0, 0, 0));
        let all = records(&shard, 0..10, &limits);
        assert_eq!(shard.tail_start(), 8);
        let (shared, memory) = shared(all, limits);
        let got = read_all(RangeReader::new(shared.clone(), shard.clone(), 2, 9)).await.unwrap();
        assert_eq!(got, (2..9).collect::<Vec<_>>(), "from Kafka, then the tail");
        assert_eq!(shared.catchup_pool.available_permits(), shared.limits.max_catchup_readers, "reader returned");

        // A reader parked by one range serves the next: one Kafka consumer for both.
        let mut first = RangeReader::new(shared.clone(), shard.clone(), 0, 4);
        let mut got = Vec::new();
        while let Some(batch) = first.next_batch().await.unwrap() {
            got.extend(batch.iter().map(|r| r.offset));
        }
        let spare = first.into_spare();
        assert!(spare.is_some(), "the reader is kept");
        let second = RangeReader::new(shared.clone(), shard.clone(), 1, 6).with_spare(spare);
        let opened = memory.opened.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            read_all(second).await.unwrap(),
            (1..6).collect::<Vec<_>>(),
            "from its own start, not the last one's"
        );
        assert_eq!(
            (got, memory.opened.load(std::sync::atomic::Ordering::SeqCst)),
            ((0..4).collect::<Vec<_>>(), opened),
            "no new reader opened"
        );
    }
}

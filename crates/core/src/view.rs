//! The materialized view: a shard per partition holding the state map (persistent, O(1) clone),
//! a bounded tail buffer of recent records, and the next offset.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex, OnceLock, RwLock,
    },
};

use std::time::{Duration, Instant};

use bytes::BytesMut;

use imbl::OrdSet;
use tokio::sync::watch;

use crate::{
    error::Error,
    limits::Limits,
    record::{bounded_size, Encode, Encoded, PartitionOffset, Record, Run, RECORD_OVERHEAD},
};

/// The state of one partition: the last record with a value of each key, ordered by key (a
/// set of records rather than a map from a key copy: an entry costs a pointer).
pub type StateMap = OrdSet<Keyed>;

/// A record in the state, ordered and looked up by its key (a record without a key is never
/// state).
#[derive(Debug, Clone)]
pub struct Keyed(pub Record);

impl Keyed {
    pub fn key(&self) -> &[u8] {
        self.0.key().unwrap_or_default()
    }
}

impl PartialEq for Keyed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Keyed {}

impl PartialOrd for Keyed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Keyed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

impl std::borrow::Borrow<[u8]> for Keyed {
    fn borrow(&self) -> &[u8] {
        self.key()
    }
}

/// One partition of the view.
#[derive(Debug)]
pub struct Shard {
    pub topic: Arc<str>,
    pub partition: i32,
    /// The offset of the checkpoint this shard was restored from, if it was.
    restored_at: Option<i64>,
    /// Set once the partition was taken from this replica (sharding): the subscriptions reading
    /// it end, and ingest no longer applies records to it.
    released: AtomicBool,
    state: Mutex<ShardState>,
}

#[derive(Debug)]
struct ShardState {
    map: StateMap,
    /// Key, value and header bytes of the records in `map`.
    state_bytes: usize,
    /// Timestamp of the last applied record (ms since the epoch; -1 when unknown).
    last_timestamp_ms: i64,
    /// Every record with offset in `[tail_start, next_offset)`, in offset order.
    tail: VecDeque<TailEntry>,
    /// Bytes the tail alone keeps alive ([`TailEntry::bytes`]).
    tail_bytes: usize,
    /// The index in `tail` of the first of the tail's own records, within its own bounds; the
    /// ones before it are kept on bytes borrowed from the pool.
    own_front: usize,
    /// Bytes of the tail's own records (`tail[own_front..]`).
    own_bytes: usize,
    tail_start: i64,
    next_offset: i64,
    /// The end offset seen at start: the shard is caught up once `next_offset` reaches it.
    target: i64,
    /// Where ingest started, for the percentage of catching up.
    start: i64,
    /// Ranges of the tail that subscribers read, encoded once for all of them.
    runs: Runs,
    /// The gateway's pool this tail borrows from beyond its own bounds (none: it never does).
    pool: Option<Arc<TailPool>>,
    /// Bytes borrowed from `pool`: the tail keeps at most `limits.tail_max_bytes` plus these.
    borrowed: usize,
    /// The next offset when [`Shard::settle_pool`] last saw it change, and when.
    quiet_since: (i64, Instant),
}

/// Memory that the tails of all partitions may keep beyond their own bounds
/// (`limits.tail_pool_bytes`), so that a busy partition keeps seconds of records in memory for
/// its followers while idle ones hold nothing. A tail borrows in [`LEND_STEP`]s as it grows past
/// its bounds, first come first served, and gives back what it no longer uses (and all when its
/// shard is dropped); its own bounds are never taken from it. What is lent never exceeds the
/// pool's bound, so all tails together keep at most their own bounds plus the pool.
#[derive(Debug, Default)]
pub struct TailPool {
    lent: AtomicUsize,
}

/// The step a tail borrows in, so that a tail at its bound does not touch the pool per record.
const LEND_STEP: usize = 64 << 10;

/// A tail whose partition received nothing for this long gives back what it borrowed
/// ([`Shard::settle_pool`]), so that a partition busy once does not keep the pool while idle.
pub const POOL_IDLE: Duration = Duration::from_secs(30);

impl TailPool {
    /// Lends up to `want` bytes without the total lent passing `max`; returns what it lent.
    fn lend(&self, want: usize, max: usize) -> usize {
        let mut lent = 0;
        let _ = self.lent.fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
            lent = want.min(max.saturating_sub(held));
            (lent > 0).then_some(held + lent)
        });
        lent
    }

    fn give_back(&self, bytes: usize) {
        self.lent.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes lent to tails now.
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Acquire)
    }
}

impl Drop for ShardState {
    fn drop(&mut self) {
        self.give_back(self.borrowed);
    }
}

/// Ranges of the tail a subscriber read as the view's records, by first offset, each encoded once
/// the next subscriber reads it too: followers at the head read the same ranges, and every one
/// after the first two sends the shared encoding instead of encoding each record again
/// ([`Shard::read_tail_encoded`]). Bounded: at most [`MAX_RUNS`] ranges, and encodings of at most
/// a quarter of `limits.tail_max_bytes` ([`RUNS_SHARE`]); the oldest go first, and a range below
/// the tail's start goes with the tail.
#[derive(Debug, Default)]
struct Runs {
    by_from: BTreeMap<i64, RunSlot>,
    /// Bytes of the encodings held.
    bytes: usize,
}

/// Most ranges a shard keeps for sharing their encodings.
const MAX_RUNS: usize = 1_024;

/// The encodings a shard keeps take at most `tail_max_bytes` divided by this.
const RUNS_SHARE: usize = 4;

/// One range of the tail: `[from, next)`, its records' count and key, value and header bytes,
/// and its encoding, made once by the second subscriber to read the range.
#[derive(Debug, Clone)]
struct RunSlot {
    next: i64,
    records: usize,
    data_bytes: usize,
    encoded: Arc<OnceLock<Run>>,
    /// Bytes of the encoding counted in [`Runs::bytes`] (0 until the encoder counts them).
    held: usize,
}

impl RunSlot {
    fn size(&self) -> usize {
        bounded_size(self.data_bytes, self.records)
    }
}

impl Runs {
    /// Keeps `[from, slot.next)` unless a range from `from` is kept already, then drops what is
    /// beyond the bounds.
    fn insert(&mut self, from: i64, slot: RunSlot, tail_start: i64, limits: &Limits) {
        self.by_from.entry(from).or_insert(slot);
        self.bound(tail_start, limits);
    }

    /// Counts the `bytes` of the encoding just made for the range from `from` (if it is still
    /// kept), then drops what is beyond the bounds.
    fn encoded(&mut self, from: i64, encoded: &Arc<OnceLock<Run>>, bytes: usize, tail_start: i64, limits: &Limits) {
        if let Some(slot) = self.by_from.get_mut(&from).filter(|s| Arc::ptr_eq(&s.encoded, encoded) && s.held == 0) {
            slot.held = bytes;
            self.bytes += bytes;
        }
        self.bound(tail_start, limits);
    }

    /// Drops ranges below `tail_start` and, oldest first, those beyond the bounds.
    fn bound(&mut self, tail_start: i64, limits: &Limits) {
        let max_bytes = limits.tail_max_bytes / RUNS_SHARE;
        loop {
            let over = self.by_from.len() > MAX_RUNS || self.bytes > max_bytes;
            let Some(entry) = self.by_from.first_entry() else { break };
            if *entry.key() >= tail_start && !over {
                break;
            }
            self.bytes -= entry.remove().held;
        }
    }
}

/// A record of the tail buffer, and the record of its key it replaced in the state (kept so that
/// the state can be rolled back to any offset of the tail: a snapshot as of a past offset).
#[derive(Debug)]
struct TailEntry {
    record: Record,
    replaced: Option<Record>,
}

impl TailEntry {
    /// The memory the tail alone keeps alive for this entry: the entry itself, the record it
    /// replaced (no longer in the state), and the record when the state does not hold it (a
    /// tombstone or a keyless record). A record the state holds costs the tail nothing more
    /// until a later record replaces it, whose entry counts it then: a tail of new keys is deep,
    /// one of updates holds every old version it keeps.
    fn bytes(&self) -> usize {
        let in_state = self.record.key().is_some() && self.record.value().is_some();
        let record = if in_state { 0 } else { self.record.size() };
        TAIL_ENTRY_BYTES + record + self.replaced.as_ref().map_or(0, Record::size)
    }
}

/// Bytes of a tail entry itself.
const TAIL_ENTRY_BYTES: usize = std::mem::size_of::<TailEntry>();

/// A partition's state as a checkpoint holds it: the map, the offset it is exact at (the next
/// offset to apply) and the timestamp of the last applied record.
#[derive(Debug, Clone)]
pub struct ShardImage {
    pub map: StateMap,
    pub next_offset: i64,
    pub last_timestamp_ms: i64,
}

/// What changed in a shard since an offset, for a checkpoint to write (see
/// [`Shard::changes_since`]).
#[derive(Debug)]
pub enum ShardChanges {
    /// Every record in `[from, next_offset)` (keyless ones included), in offset order: applied to
    /// the state at `from`, they give the state at `next_offset`.
    Records { records: Vec<Record>, next_offset: i64, last_timestamp_ms: i64 },
    /// The tail no longer reaches back to `from`: the whole state.
    Whole(ShardImage),
}

impl ShardState {
    /// The index in the tail of the first record at or after `offset`: found at once where the
    /// offsets run without gaps (most partitions), by binary search where they do not.
    fn tail_index(&self, offset: i64) -> usize {
        let (Some(front), Some(back)) = (self.tail.front(), self.tail.back()) else { return 0 };
        if back.record.offset < offset {
            return self.tail.len(); // at the head
        }
        let guess = usize::try_from(offset - front.record.offset).unwrap_or(0);
        match self.tail.get(guess) {
            Some(e) if e.record.offset == offset => guess,
            _ => self.tail.partition_point(|e| e.record.offset < offset),
        }
    }

    fn apply(&mut self, rec: Record, limits: &Limits) {
        if rec.offset < self.next_offset {
            return;
        }
        let mut replaced = None;
        if let Some(key) = rec.key() {
            replaced = if rec.value().is_some() {
                self.state_bytes += rec.data_bytes();
                self.map.insert(Keyed(rec.clone()))
            } else {
                self.map.remove(key)
            }
            .map(|old| {
                self.state_bytes -= old.0.data_bytes();
                old.0
            });
        }
        self.next_offset = rec.offset + 1;
        self.last_timestamp_ms = rec.timestamp_ms;
        let entry = TailEntry { record: rec, replaced };
        let bytes = entry.bytes();
        self.tail_bytes += bytes;
        self.own_bytes += bytes;
        self.tail.push_back(entry);
        self.bound_tail(limits);
    }

    /// Keeps the tail within its own bounds plus what it borrowed from the pool. The newest
    /// records within `tail_max_records` and `tail_max_bytes` are the tail's own (from
    /// `own_front`); the older ones it keeps on bytes borrowed from the pool, a step at a time,
    /// and evicts when it cannot borrow. It gives back what it borrowed beyond a step of what it
    /// uses.
    fn bound_tail(&mut self, limits: &Limits) {
        while self.tail.len() - self.own_front > limits.tail_max_records
            || (self.own_bytes > limits.tail_max_bytes && self.tail.len() - self.own_front > 1)
        {
            self.own_bytes -= self.tail[self.own_front].bytes();
            self.own_front += 1;
        }
        let need = self.tail_bytes - self.own_bytes;
        if need > self.borrowed {
            if let Some(pool) = &self.pool {
                self.borrowed += pool.lend((need - self.borrowed).max(LEND_STEP), limits.tail_pool_bytes);
            }
        }
        while self.tail_bytes - self.own_bytes > self.borrowed {
            // Entries are never 0 bytes: some are before `own_front`.
            self.pop_front();
        }
        let used = self.tail_bytes - self.own_bytes;
        if self.borrowed > used + 2 * LEND_STEP {
            self.give_back(self.borrowed - used - LEND_STEP);
        }
    }

    /// Gives `bytes` of what the tail borrowed back to the pool.
    fn give_back(&mut self, bytes: usize) {
        self.borrowed -= bytes;
        if let Some(pool) = &self.pool {
            pool.give_back(bytes);
        }
    }

    /// Evicts the oldest record of the tail.
    fn pop_front(&mut self) {
        let old = self.tail.pop_front().expect("tail is not empty");
        let bytes = old.bytes();
        self.tail_bytes -= bytes;
        match self.own_front.checked_sub(1) {
            Some(front) => self.own_front = front,
            None => self.own_bytes -= bytes,
        }
        self.tail_start = old.record.offset + 1;
    }

    /// The earliest offset the state can be rolled back to for a snapshot as of it: the tail's
    /// own records reach back to it (what it borrowed serves subscriptions only, so how far back
    /// a snapshot reaches is what `tail_max_records` and `tail_max_bytes` say).
    fn as_of_start(&self) -> i64 {
        match self.own_front.checked_sub(1) {
            Some(last_borrowed) => self.tail[last_borrowed].record.offset + 1,
            None => self.tail_start,
        }
    }
}

/// What [`Shard::state_at`] found.
#[derive(Debug)]
pub enum StateAt {
    /// The state exactly at the offset.
    State(StateMap),
    /// The offset is below the tail buffer: the records needed to roll back to it are gone.
    Behind { tail_start: i64 },
    /// The shard has not reached the offset yet.
    Ahead { next_offset: i64 },
}

/// What a tail read found.
#[derive(Debug, PartialEq, Eq)]
pub enum TailRead {
    /// Records were appended to the output; the cursor's next position is `next`.
    Read { next: i64 },
    /// The position is older than the tail buffer: read it from Kafka.
    Behind { tail_start: i64 },
}

impl Shard {
    pub fn new(topic: Arc<str>, partition: i32, start: i64, target: i64) -> Self {
        Self {
            topic,
            partition,
            restored_at: None,
            released: AtomicBool::new(false),
            state: Mutex::new(ShardState {
                map: StateMap::new(),
                tail: VecDeque::new(),
                tail_bytes: 0,
                own_front: 0,
                own_bytes: 0,
                state_bytes: 0,
                last_timestamp_ms: -1,
                tail_start: start,
                next_offset: start,
                target,
                start,
                runs: Runs::default(),
                pool: None,
                borrowed: 0,
                quiet_since: (start, Instant::now()),
            }),
        }
    }

    /// A shard restored from a checkpoint: its state at `image.next_offset`, from which ingest
    /// resumes; caught up once it reaches `target`. The tail starts empty at that offset (older
    /// positions are read from Kafka).
    pub fn restored(topic: Arc<str>, partition: i32, image: ShardImage, target: i64) -> Self {
        let mut shard = Self::new(topic, partition, image.next_offset, target);
        shard.restored_at = Some(image.next_offset);
        {
            let mut s = shard.lock();
            s.state_bytes = image.map.iter().map(|k| k.0.data_bytes()).sum();
            s.last_timestamp_ms = image.last_timestamp_ms;
            s.map = image.map;
        }
        shard
    }

    /// The offset of the checkpoint this shard was restored from (`None`: loaded from Kafka).
    pub fn restored_at(&self) -> Option<i64> {
        self.restored_at
    }

    /// Whether the partition was taken from this replica ([`TopicView::release`]).
    pub fn is_released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Whether the initial load of this shard reached the end offsets seen when it was added.
    pub fn is_loaded(&self) -> bool {
        self.load_progress().0
    }

    /// The state for a checkpoint, under the short lock (the map clone is O(1)).
    pub fn image(&self) -> ShardImage {
        let s = self.lock();
        ShardImage { map: s.map.clone(), next_offset: s.next_offset, last_timestamp_ms: s.last_timestamp_ms }
    }

    /// What changed since `from` (an offset a checkpoint holds the state at): the tail's records
    /// when it still reaches back to `from` (a checkpoint then writes only those), else the whole
    /// state. One lock: the records and the offset agree.
    pub fn changes_since(&self, from: i64) -> ShardChanges {
        let s = self.lock();
        if from < s.tail_start || from > s.next_offset {
            return ShardChanges::Whole(ShardImage {
                map: s.map.clone(),
                next_offset: s.next_offset,
                last_timestamp_ms: s.last_timestamp_ms,
            });
        }
        let first = s.tail_index(from);
        ShardChanges::Records {
            records: s.tail.range(first..).map(|e| e.record.clone()).collect(),
            next_offset: s.next_offset,
            last_timestamp_ms: s.last_timestamp_ms,
        }
    }

    /// This partition at `offset`.
    pub fn at(&self, offset: i64) -> PartitionOffset {
        PartitionOffset::new(&*self.topic, self.partition, offset)
    }

    /// Gives back what the tail borrowed from the pool, evicting the records it kept on it, when
    /// the partition has received nothing for [`POOL_IDLE`] as of `now`: those records serve
    /// followers behind a busy partition, and an idle partition's followers have caught up (or
    /// read from Kafka, as behind any tail). Called at every watermark refresh; returns whether
    /// it gave anything back.
    pub fn settle_pool(&self, now: Instant) -> bool {
        let mut s = self.lock();
        if s.quiet_since.0 != s.next_offset {
            s.quiet_since = (s.next_offset, now);
            return false;
        }
        if s.borrowed == 0 || now.saturating_duration_since(s.quiet_since.1) < POOL_IDLE {
            return false;
        }
        while s.own_front > 0 {
            s.pop_front();
        }
        let borrowed = s.borrowed;
        s.give_back(borrowed);
        true
    }

    /// Lets this shard's tail borrow from `pool` (the view's, once the shard is in it).
    fn join(&self, pool: &Arc<TailPool>) {
        let mut s = self.lock();
        if s.pool.is_none() {
            s.pool = Some(pool.clone());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ShardState> {
        // A panic while holding the lock leaves a consistent state (every update is one step),
        // so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one record from ingest. Records at or before the current position are ignored, so
    /// a re-delivery after a reassignment cannot apply twice.
    pub fn apply(&self, record: Record, limits: &Limits) {
        self.lock().apply(record, limits);
    }

    /// Applies records of this partition in offset order under one lock (ingest's batches).
    pub fn apply_all(&self, records: impl IntoIterator<Item = Record>, limits: &Limits) {
        let mut s = self.lock();
        for record in records {
            s.apply(record, limits);
        }
    }

    /// Moves the position forward to what the consumer reports, past transaction markers and
    /// aborted records that no delivered record stands for.
    pub fn advance_to(&self, position: i64) -> bool {
        let mut s = self.lock();
        if position > s.next_offset {
            s.next_offset = position;
            true
        } else {
            false
        }
    }

    /// Drops tail records below Kafka's earliest retained offset, so that a position Kafka no
    /// longer has is reported as too old here as on any other replica (rule 7).
    pub fn trim_below(&self, earliest: i64) {
        let mut s = self.lock();
        while s.tail.front().is_some_and(|e| e.record.offset < earliest) {
            s.pop_front();
        }
        if earliest > s.tail_start {
            s.tail_start = earliest;
        }
    }

    /// The state and the offset it is exact at. The clone is O(1): the map is persistent.
    pub fn snapshot(&self) -> (StateMap, i64) {
        let s = self.lock();
        (s.map.clone(), s.next_offset)
    }

    /// The state exactly at `offset` (after every record below it, none at or above it), for an
    /// offset in the tail buffer's reach: the state at the head with the tail's records from
    /// `offset` on undone, newest first (each puts back the record of its key it replaced).
    /// The undoing happens outside the lock.
    pub fn state_at(&self, offset: i64) -> StateAt {
        let (mut map, undo) = {
            let s = self.lock();
            if offset > s.next_offset {
                return StateAt::Ahead { next_offset: s.next_offset };
            }
            let earliest = s.as_of_start();
            if offset < earliest {
                return StateAt::Behind { tail_start: earliest };
            }
            let first = s.tail_index(offset);
            let undo: Vec<(Record, Option<Record>)> =
                s.tail.range(first..).map(|e| (e.record.clone(), e.replaced.clone())).collect();
            (s.map.clone(), undo)
        };
        for (record, replaced) in undo.into_iter().rev() {
            let Some(key) = record.key() else { continue };
            match replaced {
                Some(before) => {
                    map.insert(Keyed(before));
                }
                None => {
                    map.remove(key);
                }
            }
        }
        StateAt::State(map)
    }

    /// The offset ingest started this partition from (its earliest offset then).
    pub fn start(&self) -> i64 {
        self.lock().start
    }

    pub fn next_offset(&self) -> i64 {
        self.lock().next_offset
    }

    /// Records between `position` (a next offset to read) and the head: how far behind a reader
    /// at `position` is (transaction markers count as records; none when ahead).
    pub fn lag(&self, position: i64) -> i64 {
        (self.next_offset() - position).max(0)
    }

    /// The offset of the tail's first record: subscribers from here on read memory.
    pub fn tail_start(&self) -> i64 {
        self.lock().tail_start
    }

    /// The earliest offset a snapshot can be taken as of ([`Shard::state_at`]): the start of the
    /// tail's own records, within `tail_max_records` and `tail_max_bytes`.
    pub fn as_of_start(&self) -> i64 {
        self.lock().as_of_start()
    }

    pub fn keys(&self) -> usize {
        self.lock().map.len()
    }

    /// Key, value and header bytes of the state.
    pub fn state_bytes(&self) -> usize {
        self.lock().state_bytes
    }

    /// Bytes the tail buffer alone keeps alive ([`TailEntry::bytes`]), within its own bounds
    /// plus what it borrowed from the view's pool.
    pub fn tail_bytes(&self) -> usize {
        self.lock().tail_bytes
    }

    /// Timestamp of the last applied record (ms since the epoch; -1 when unknown or none).
    pub fn last_timestamp_ms(&self) -> i64 {
        self.lock().last_timestamp_ms
    }

    /// `(caught up, records to go, records done)` of the initial load.
    pub fn load_progress(&self) -> (bool, i64, i64) {
        let s = self.lock();
        (s.next_offset >= s.target, (s.target - s.next_offset).max(0), (s.next_offset - s.start).max(0))
    }

    /// Appends to `out` the records at or after `from`, up to `max_records` and (beyond the first)
    /// `max_bytes`.
    pub fn read_tail(&self, from: i64, max_records: usize, max_bytes: usize, out: &mut Vec<Record>) -> TailRead {
        let s = self.lock();
        if from < s.tail_start {
            return TailRead::Behind { tail_start: s.tail_start };
        }
        let first = s.tail_index(from);
        let mut bytes = 0;
        for (taken, entry) in s.tail.range(first..).enumerate() {
            let size = entry.record.size();
            if batch_full((taken, max_records), (bytes, max_bytes), size) {
                return TailRead::Read { next: out.last().map_or(from, |r| r.offset + 1) };
            }
            bytes += size;
            out.push(entry.record.clone());
        }
        TailRead::Read { next: from.max(s.next_offset) }
    }

    /// [`Shard::read_tail`] for a subscriber that sends every record as it is, as `encoder`
    /// encodes it: a range of the tail that another subscriber read before comes as one shared
    /// [`Run`] (encoded by the second subscriber to read it), the rest as the view's records,
    /// encoded by the delivering layer as it writes them. Every encoding must be `encoder`'s:
    /// the one of the delivering layer.
    pub fn read_tail_encoded(
        &self,
        from: i64,
        max_records: usize,
        max_bytes: usize,
        limits: &Limits,
        encoder: &dyn Encode,
        out: &mut Vec<Encoded>,
    ) -> TailRead {
        let (mut pos, mut records, mut bytes) = (from, 0, 0);
        loop {
            let mut s = self.lock();
            if pos < s.tail_start {
                return match pos == from {
                    true => TailRead::Behind { tail_start: s.tail_start },
                    // Evicted since the last range was taken: the next read finds it behind.
                    false => TailRead::Read { next: pos },
                };
            }
            let fits = |r: &RunSlot| records + r.records <= max_records && bytes + r.size() <= max_bytes;
            let Some(slot) = s.runs.by_from.get(&pos).filter(|r| fits(r)).cloned() else {
                return s.read_records(pos, (records, max_records), (bytes, max_bytes), limits, encoder, out);
            };
            let run = match slot.encoded.get() {
                Some(run) => run.clone(),
                None => {
                    let first = s.tail_index(pos);
                    let range: Vec<Record> = (s.tail.range(first..))
                        .take_while(|e| e.record.offset < slot.next)
                        .map(|e| e.record.clone())
                        .collect();
                    drop(s);
                    let mut made = false;
                    let run = slot.encoded.get_or_init(|| {
                        made = true;
                        encode_run(&range, encoder)
                    });
                    if made {
                        let mut s = self.lock();
                        let tail_start = s.tail_start;
                        s.runs.encoded(pos, &slot.encoded, run.bytes.len(), tail_start, limits);
                    }
                    run.clone()
                }
            };
            out.push(Encoded::run(run, slot.data_bytes));
            (pos, records, bytes) = (slot.next, records + slot.records, bytes + slot.size());
        }
    }
}

/// Whether a batch of `taken` records of `bytes` is full before one more of `size` bytes: at
/// `max_records`, or past `max_bytes` with it (the first record goes whatever its size).
fn batch_full((taken, max_records): (usize, usize), (bytes, max_bytes): (usize, usize), size: usize) -> bool {
    taken == max_records || (taken > 0 && bytes + size > max_bytes)
}

/// Records encoded as one run of items.
fn encode_run(records: &[Record], encoder: &dyn Encode) -> Run {
    let mut buf = BytesMut::with_capacity(records.iter().map(Record::size).sum());
    for record in records {
        record.with_ref(|r| encoder.encode_item(r, &mut buf));
    }
    Run { bytes: buf.freeze(), records: records.len() }
}

impl ShardState {
    /// The records of the tail from `from` on as [`Record::to_encode`] encodes them, within the
    /// `(taken, max)` counts of records and bytes (beyond the first of the read); keeps the range
    /// read for sharing ([`Runs`]).
    fn read_records(
        &mut self,
        from: i64,
        (mut records, max_records): (usize, usize),
        (mut bytes, max_bytes): (usize, usize),
        limits: &Limits,
        encoder: &dyn Encode,
        out: &mut Vec<Encoded>,
    ) -> TailRead {
        let first = self.tail_index(from);
        let (taken_before, mut data_bytes) = (records, 0);
        let mut next = from.max(self.next_offset);
        for entry in self.tail.range(first..) {
            let size = entry.record.size();
            if batch_full((records, max_records), (bytes, max_bytes), size) {
                next = entry.record.offset;
                break;
            }
            (records, bytes, data_bytes) = (records + 1, bytes + size, data_bytes + size - RECORD_OVERHEAD);
            out.push(entry.record.to_encode(encoder));
        }
        if records > taken_before {
            let slot = RunSlot { next, records: records - taken_before, data_bytes, encoded: Arc::default(), held: 0 };
            self.runs.insert(from, slot, self.tail_start, limits);
        }
        TailRead::Read { next }
    }
}

/// One exposed topic: a slot per partition, holding its shard when this replica holds the
/// partition, and a signal that fires when any of them changes.
///
/// Without sharding every slot holds its shard. With sharding a slot is empty while another
/// replica holds the partition (or no one does, during a rebalance): the topic still knows the
/// partition exists, so a call on it is told where it is rather than that it does not exist.
#[derive(Debug)]
pub struct TopicView {
    pub name: Arc<str>,
    slots: RwLock<Vec<Option<Arc<Shard>>>>,
    changed: watch::Sender<u64>,
    /// The view's pool, joined by every shard added here.
    pool: Arc<TailPool>,
}

/// Whether this replica holds a partition.
#[derive(Debug, Clone)]
pub enum Holding {
    /// Held here, loaded up to the end offsets seen when it was added: served.
    Held(Arc<Shard>),
    /// Held here, its initial load still under way.
    Loading(Arc<Shard>),
    /// The partition exists but another replica holds it, or none does yet.
    NotHeld,
    /// The topic has no such partition.
    Unknown,
}

impl TopicView {
    fn read_slots(&self) -> std::sync::RwLockReadGuard<'_, Vec<Option<Arc<Shard>>>> {
        self.slots.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_slots(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Option<Arc<Shard>>>> {
        self.slots.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The shards of the partitions held here, by partition.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.read_slots().iter().flatten().cloned().collect()
    }

    /// The shard of `partition`, when this replica holds it.
    pub fn shard(&self, partition: i32) -> Option<Arc<Shard>> {
        usize::try_from(partition).ok().and_then(|p| self.read_slots().get(p).cloned().flatten())
    }

    /// How many partitions the topic has, as far as this replica knows (held or not).
    pub fn partitions(&self) -> i32 {
        self.read_slots().len() as i32
    }

    /// Whether this replica holds `partition`, and whether it is loaded.
    pub fn holding(&self, partition: i32) -> Holding {
        let Ok(p) = usize::try_from(partition) else { return Holding::Unknown };
        match self.read_slots().get(p) {
            None => Holding::Unknown,
            Some(None) => Holding::NotHeld,
            Some(Some(shard)) if shard.is_loaded() => Holding::Held(shard.clone()),
            Some(Some(shard)) => Holding::Loading(shard.clone()),
        }
    }

    /// Adds the shard of the next partition (partitions are numbered densely from 0).
    pub fn add_shard(&self, shard: Arc<Shard>) {
        let mut slots = self.write_slots();
        debug_assert_eq!(slots.len() as i32, shard.partition);
        shard.join(&self.pool);
        slots.push(Some(shard));
        drop(slots);
        self.notify();
    }

    /// Knows that the topic has `count` partitions, not held here unless [`TopicView::hold`]
    /// says so (sharding). Never shrinks: Kafka partitions are never removed.
    pub fn extend_partitions(&self, count: i32) {
        let mut slots = self.write_slots();
        while (slots.len() as i32) < count {
            slots.push(None);
        }
    }

    /// Holds `shard`'s partition here from now on (sharding: the partition was assigned to this
    /// replica), in place of whatever the slot had.
    pub fn hold(&self, shard: Arc<Shard>) {
        let Ok(p) = usize::try_from(shard.partition) else { return };
        shard.join(&self.pool);
        let mut slots = self.write_slots();
        while slots.len() <= p {
            slots.push(None);
        }
        if let Some(old) = slots[p].replace(shard) {
            old.released.store(true, Ordering::Release);
        }
        drop(slots);
        self.notify();
    }

    /// Stops holding `partition` here (sharding: it was revoked): its shard is dropped from the
    /// view and marked released, and the subscriptions reading it are woken to end. Returns the
    /// shard it held, if any.
    pub fn release(&self, partition: i32) -> Option<Arc<Shard>> {
        let p = usize::try_from(partition).ok()?;
        let shard = self.write_slots().get_mut(p)?.take()?;
        shard.released.store(true, Ordering::Release);
        self.notify();
        Some(shard)
    }

    /// Wakes the subscribers of this topic.
    pub fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

/// Every exposed topic, and whether the view has caught up with the end offsets seen at start.
#[derive(Debug)]
pub struct View {
    topics: HashMap<String, Arc<TopicView>>,
    names: Vec<String>,
    ready: watch::Sender<bool>,
    /// Ingest has reached Kafka and knows every exposed partition.
    assigned: AtomicBool,
    /// Sharding: this replica has not been given its share of the partitions yet, so having
    /// loaded every shard it holds (none) does not make it ready.
    awaiting_share: AtomicBool,
    /// What the tails of all partitions may keep beyond their own bounds.
    tail_pool: Arc<TailPool>,
}

impl View {
    pub fn new(topics: &[String]) -> Self {
        let mut names = topics.to_vec();
        names.sort();
        names.dedup();
        let tail_pool = Arc::new(TailPool::default());
        let topics = names
            .iter()
            .map(|name| {
                let view = TopicView {
                    name: name.as_str().into(),
                    slots: RwLock::new(Vec::new()),
                    changed: watch::channel(0).0,
                    pool: tail_pool.clone(),
                };
                (name.clone(), Arc::new(view))
            })
            .collect();
        Self {
            topics,
            names,
            ready: watch::channel(false).0,
            assigned: Default::default(),
            awaiting_share: Default::default(),
            tail_pool,
        }
    }

    /// The pool the tails borrow from beyond their own bounds.
    pub fn tail_pool(&self) -> &TailPool {
        &self.tail_pool
    }

    /// Exposed topic names, sorted.
    pub fn topic_names(&self) -> &[String] {
        &self.names
    }

    pub fn topic(&self, name: &str) -> Result<Arc<TopicView>, Error> {
        self.topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopic { topic: name.to_string(), exposed: self.names.clone() })
    }

    /// Topics named in a request (`field` names the list in errors): known, exposed, each once.
    pub fn requested(&self, names: &[String], field: &str) -> Result<Vec<Arc<TopicView>>, Error> {
        let mut seen = std::collections::HashSet::new();
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if name.is_empty() {
                    return Err(Error::invalid(format!("{field}[{i}]"), "topic name is empty"));
                }
                if !seen.insert(name.as_str()) {
                    return Err(Error::invalid(format!("{field}[{i}]"), format!("topic '{name}' is listed twice")));
                }
                self.topic(name)
            })
            .collect()
    }

    pub fn topics(&self) -> impl Iterator<Item = &Arc<TopicView>> {
        self.names.iter().map(|n| &self.topics[n])
    }

    /// Marks that ingest has reached Kafka and added every exposed partition.
    pub fn set_assigned(&self) {
        self.assigned.store(true, Ordering::Release);
    }

    /// UNAVAILABLE until ingest has reached Kafka: before that the view does not know the
    /// partitions, so positions can be neither checked nor served.
    pub fn check_assigned(&self) -> Result<(), Error> {
        if self.assigned.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(Error::kafka("the gateway has not reached Kafka yet (it keeps retrying; its log says why); retry shortly"))
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    /// Not serving any more (sharding: this replica was fenced out of its group).
    pub fn set_not_ready(&self) {
        self.ready.send_replace(false);
    }

    /// Sharding: whether the view waits for its first share of the partitions before it can be
    /// ready (set when the replica joins its group, cleared once its first share is held).
    pub fn await_share(&self, waiting: bool) {
        self.awaiting_share.store(waiting, Ordering::Release);
    }

    /// Whether every shard held here has loaded and the replica is not waiting for its share:
    /// the view can be declared ready.
    pub fn caught_up(&self) -> bool {
        !self.awaiting_share.load(Ordering::Acquire) && self.topics().all(|t| t.shards().iter().all(|s| s.is_loaded()))
    }

    pub fn ready_watch(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Percent of the initial load done, over every shard.
    pub fn load_percent(&self) -> u32 {
        let (mut to_go, mut done) = (0i64, 0i64);
        for topic in self.topics() {
            for shard in topic.shards() {
                let (_, t, d) = shard.load_progress();
                to_go += t;
                done += d;
            }
        }
        if to_go == 0 {
            return if self.is_ready() { 100 } else { 99 };
        }
        ((done as f64 / (done + to_go) as f64) * 100.0).min(99.0) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(offset: i64, key: &str, value: Option<&str>) -> Record {
        Record::new("t".into(), 0, offset, 0, Some(key.as_bytes()), value.map(str::as_bytes), &[])
    }

    fn limits(records: usize) -> Limits {
        Limits { tail_max_records: records, ..Limits::default() }
    }

    /// The state as (key, value) pairs.
    fn pairs(map: &StateMap) -> Vec<(String, String)> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        map.iter().map(|k| (text(k.key()), text(k.0.value().unwrap()))).collect()
    }

    #[test]
    fn the_state_at_any_offset_of_the_tail_is_the_state_rebuilt_up_to_it() {
        // Updates, deletes, re-creations, a keyless record and a gap (a transaction marker).
        let records = vec![
            rec(0, "a", Some("1")),
            rec(1, "b", Some("1")),
            rec(2, "a", Some("2")),
            rec(3, "b", None),
            Record::new("t".into(), 0, 4, 0, None, Some(b"keyless"), &[]),
            rec(6, "b", Some("2")),
            rec(7, "c", None),
            rec(8, "a", None),
            rec(9, "a", Some("3")),
        ];
        let shard = Shard::new("t".into(), 0, 0, 0);
        shard.apply_all(records.clone(), &limits(100));
        shard.advance_to(11);
        for at in 0..=11 {
            let mut rebuilt = StateMap::new();
            for r in records.iter().filter(|r| r.offset < at && r.key().is_some()) {
                match r.value() {
                    Some(_) => rebuilt.insert(Keyed(r.clone())),
                    None => rebuilt.remove(r.key().unwrap()),
                };
            }
            let StateAt::State(state) = shard.state_at(at) else { panic!("offset {at} is in the tail") };
            assert_eq!(pairs(&state), pairs(&rebuilt), "at {at}");
            // The very records, with their offsets.
            let offsets: Vec<_> = state.iter().map(|k| k.0.offset).collect();
            assert_eq!(offsets, rebuilt.iter().map(|k| k.0.offset).collect::<Vec<_>>(), "at {at}");
        }
        assert!(matches!(shard.state_at(12), StateAt::Ahead { next_offset: 11 }));
        assert_eq!(
            pairs(&shard.snapshot().0),
            [("a".into(), "3".into()), ("b".into(), "2".into())],
            "undone on a copy"
        );

        // Past the tail's reach, the records to undo are gone.
        let short = Shard::new("t".into(), 0, 0, 0);
        short.apply_all(records, &limits(3));
        assert!(matches!(short.state_at(6), StateAt::Behind { tail_start: 7 }));
        assert!(matches!(short.state_at(7), StateAt::State(_)));
    }

    #[test]
    fn the_records_a_tail_keeps_for_undoing_count_in_its_bound() {
        // Two entries that each keep the record they replaced.
        let limits =
            Limits { tail_max_bytes: 2 * (TAIL_ENTRY_BYTES + rec(0, "k", Some("v")).size()), ..Limits::default() };
        let shard = Shard::new("t".into(), 0, 0, 0);
        // Each update after the first keeps the record it replaced.
        shard.apply_all((0..4).map(|o| rec(o, "k", Some("v"))), &limits);
        assert_eq!(shard.tail_start(), 2, "a third entry with the record it replaced would pass the bound");
        assert!(matches!(shard.state_at(2), StateAt::State(_)));
        assert!(matches!(shard.state_at(1), StateAt::Behind { tail_start: 2 }));
    }

    #[test]
    fn state_follows_last_value_and_tombstones() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = limits(100);
        shard.apply(rec(0, "a", Some("1")), &l);
        shard.apply(rec(2, "b", Some("2")), &l);
        let (before, at) = shard.snapshot();
        shard.apply(rec(5, "a", None), &l);
        shard.apply(rec(6, "b", Some("3")), &l);
        assert_eq!(at, 3);
        assert_eq!(before.len(), 2, "a snapshot is not affected by later records");
        let (after, at) = shard.snapshot();
        assert_eq!(at, 7);
        assert_eq!(after.len(), 1);
        assert_eq!(after.get(b"b".as_slice()).unwrap().0.value(), Some(b"3".as_slice()));
    }

    #[test]
    fn redelivered_records_are_ignored() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = limits(100);
        shard.apply(rec(3, "a", Some("new")), &l);
        shard.apply(rec(1, "a", Some("old")), &l);
        assert_eq!(shard.snapshot().0.get(b"a".as_slice()).unwrap().0.value(), Some(b"new".as_slice()));
    }

    #[test]
    fn tail_reads_respect_gaps_and_eviction() {
        let shard = Shard::new("t".into(), 0, 10, 0);
        let l = limits(3);
        for o in [10, 12, 13, 20] {
            shard.apply(rec(o, "k", Some("v")), &l);
        }
        let mut out = Vec::new();
        assert_eq!(shard.read_tail(10, 10, 1 << 20, &mut out), TailRead::Behind { tail_start: 11 });
        assert_eq!(shard.read_tail(11, 10, 1 << 20, &mut out), TailRead::Read { next: 21 });
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![12, 13, 20]);
        out.clear();
        assert_eq!(shard.read_tail(13, 1, 1 << 20, &mut out), TailRead::Read { next: 14 });
        assert_eq!(out.len(), 1);
        out.clear();
        assert_eq!(shard.read_tail(21, 10, 1 << 20, &mut out), TailRead::Read { next: 21 });
        assert!(shard.advance_to(25));
        assert_eq!(shard.read_tail(21, 10, 1 << 20, &mut out), TailRead::Read { next: 25 });
        assert!(out.is_empty());
        // Lag counts offsets to the head, markers included; none for a reader at or past it.
        assert_eq!((shard.lag(11), shard.lag(25), shard.lag(30)), (14, 0, 0));
    }

    /// An encoder that writes a record's offset; an item is `|` and the offset.
    struct Offsets;

    impl Encode for Offsets {
        fn encode(&self, record: &crate::record::RecordRef<'_>, buf: &mut BytesMut) {
            buf.extend_from_slice(&record.offset.to_be_bytes());
        }

        fn encode_item(&self, record: &crate::record::RecordRef<'_>, buf: &mut BytesMut) {
            buf.extend_from_slice(b"|");
            self.encode(record, buf);
        }
    }

    /// What a read sent: each record's offset, and for each entry whether it was a shared run.
    fn sent(out: &mut Vec<Encoded>) -> (Vec<i64>, Vec<bool>) {
        let (mut offsets, mut runs) = (Vec::new(), Vec::new());
        for e in out.drain(..) {
            match &e.wire {
                crate::record::Wire::Run(run) => {
                    assert_eq!(run.bytes.len(), 9 * run.records);
                    offsets.extend(run.bytes.chunks(9).map(|i| i64::from_be_bytes(i[1..].try_into().unwrap())));
                }
                crate::record::Wire::Record { record, len } => {
                    assert_eq!(*len, 8);
                    offsets.push(record.offset);
                }
                other => panic!("a tail read sends records or runs, not {other:?}"),
            }
            runs.push(matches!(e.wire, crate::record::Wire::Run(_)));
        }
        (offsets, runs)
    }

    #[test]
    fn the_second_reader_of_a_range_encodes_it_once_for_every_later_one() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = limits(1000);
        shard.apply_all((0..10).map(|o| rec(o, &format!("k{o}"), Some("v"))), &l);
        let mut out = Vec::new();
        let read = |from, max_records, out: &mut Vec<Encoded>| {
            shard.read_tail_encoded(from, max_records, 1 << 20, &l, &Offsets, out)
        };
        // The first reader reads the view's records, and the range is kept.
        assert_eq!(read(0, 4, &mut out), TailRead::Read { next: 4 });
        assert_eq!(sent(&mut out), ((0..4).collect(), vec![false; 4]));
        // The second reads it again as one run, encoded now; the rest as records.
        assert_eq!(read(0, 1000, &mut out), TailRead::Read { next: 10 });
        let first_run = out[0].clone();
        assert_eq!((first_run.records(), first_run.data_bytes), (4, 4 * 3));
        assert_eq!(sent(&mut out), ((0..10).collect(), vec![true, false, false, false, false, false, false]));
        // Later readers share both runs: the same bytes, not a copy.
        assert_eq!(read(0, 1000, &mut out), TailRead::Read { next: 10 });
        let (crate::record::Wire::Run(a), crate::record::Wire::Run(b)) = (&out[0].wire, &first_run.wire) else {
            panic!("runs")
        };
        assert_eq!(a.bytes.as_ptr(), b.bytes.as_ptr(), "one encoding for all");
        assert_eq!(sent(&mut out), ((0..10).collect(), vec![true, true]));
        // A reader with less room than a run reads records; one past the head reads nothing.
        assert_eq!(read(0, 3, &mut out), TailRead::Read { next: 3 });
        assert_eq!(sent(&mut out), ((0..3).collect(), vec![false; 3]));
        assert_eq!(read(10, 1000, &mut out), TailRead::Read { next: 10 });
        assert!(out.is_empty());
        // A byte budget a run does not fit in: records, the first one whatever its size.
        assert_eq!(shard.read_tail_encoded(4, 1000, 1, &l, &Offsets, &mut out), TailRead::Read { next: 5 });
        assert_eq!(sent(&mut out), (vec![4], vec![false]));
    }

    #[test]
    fn shared_runs_go_with_the_tail_and_stay_within_their_bounds() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = limits(5);
        shard.apply_all((0..5).map(|o| rec(o, "k", Some("v"))), &l);
        let mut out = Vec::new();
        let mut read = |from| {
            let read = shard.read_tail_encoded(from, 1000, 1 << 20, &l, &Offsets, &mut out);
            (read, sent(&mut out))
        };
        assert_eq!(read(0).0, TailRead::Read { next: 5 });
        assert_eq!(read(0).1 .1, vec![true]);
        // Evicted with the tail: the position is behind, whatever was shared.
        shard.apply(rec(5, "k", Some("v")), &l);
        assert_eq!(read(0).0, TailRead::Behind { tail_start: 1 });
        assert_eq!(read(1), (TailRead::Read { next: 6 }, ((1..6).collect(), vec![false; 5])));
        assert!(shard.lock().runs.by_from.keys().all(|&from| from >= 1), "ranges below the tail are dropped");
        // At most MAX_RUNS ranges, and no more bytes than the tail's bound.
        let many = Shard::new("t".into(), 0, 0, 0);
        let wide = Limits { tail_max_records: 10_000, ..Limits::default() };
        many.apply_all((0..5_000).map(|o| rec(o, "k", Some("v"))), &wide);
        for from in 0..3_000 {
            many.read_tail_encoded(from, 1, 1 << 20, &wide, &Offsets, &mut out);
        }
        assert_eq!(many.lock().runs.by_from.len(), MAX_RUNS);
        assert_eq!(*many.lock().runs.by_from.keys().next().unwrap(), 3_000 - MAX_RUNS as i64, "the oldest go");
        // Encodings (9 bytes a record here) of at most a quarter of the tail's bound.
        let small = Limits { tail_max_bytes: 4 * 90, ..wide };
        out.clear();
        for from in (3_000..3_100).step_by(2) {
            for _ in 0..2 {
                many.read_tail_encoded(from, 2, 1 << 20, &small, &Offsets, &mut out);
            }
        }
        assert_eq!(sent(&mut out).0.len(), 200, "every range read twice, the second time shared");
        let runs = &many.lock().runs;
        assert_eq!(runs.bytes, runs.by_from.values().map(|s| s.held).sum::<usize>());
        assert_eq!((runs.bytes, runs.by_from.len()), (90, 5), "five ranges of 2 records encoded fit in 90 bytes");
        assert_eq!(*runs.by_from.keys().next().unwrap(), 3_090, "the oldest go");
    }

    /// A view of topic "t" holding `shards` fresh shards (partitions 0, 1, ...).
    fn view_of(shards: i32) -> (View, Vec<Arc<Shard>>) {
        let view = View::new(&["t".to_string()]);
        let topic = view.topic("t").unwrap();
        let shards: Vec<_> = (0..shards).map(|p| Arc::new(Shard::new("t".into(), p, 0, 0))).collect();
        shards.iter().for_each(|s| topic.add_shard(s.clone()));
        (view, shards)
    }

    fn new_keys(from: i64, to: i64) -> impl Iterator<Item = Record> {
        (from..to).map(|o| rec(o, &format!("k{o}"), Some("v")))
    }

    #[test]
    fn tails_borrow_from_the_view_pool_beyond_their_bounds_first_come_first_served() {
        let l = Limits { tail_max_records: 4, tail_pool_bytes: 6 * TAIL_ENTRY_BYTES, ..Limits::default() };
        let (view, shards) = view_of(2);
        shards[0].apply_all(new_keys(0, 20), &l);
        assert_eq!(shards[0].tail_start(), 10, "its own 4 records and 6 borrowed");
        assert_eq!(view.tail_pool().lent(), 6 * TAIL_ENTRY_BYTES);
        shards[1].apply_all(new_keys(0, 20), &l);
        assert_eq!(shards[1].tail_start(), 16, "the pool is lent out: its own bound");
        // Subscribers read the borrowed records; a snapshot reaches back as far as the tail's own.
        assert_eq!(shards[0].as_of_start(), 16);
        assert!(matches!(shards[0].state_at(15), StateAt::Behind { tail_start: 16 }));
        assert!(matches!(shards[0].state_at(16), StateAt::State(_)));
        let mut out = Vec::new();
        assert_eq!(shards[0].read_tail(10, 100, usize::MAX, &mut out), TailRead::Read { next: 20 });
        assert_eq!(out.iter().map(|r| r.offset).collect::<Vec<_>>(), (10..20).collect::<Vec<_>>());
        assert!(matches!(shards[0].read_tail(9, 100, usize::MAX, &mut out), TailRead::Behind { tail_start: 10 }));
        // A shard not in a view, or a view without a pool, keeps its own bound.
        let alone = Shard::new("t".into(), 0, 0, 0);
        alone.apply_all(new_keys(0, 20), &l);
        assert_eq!(alone.tail_start(), 16);
        let (none, unpooled) = view_of(1);
        unpooled[0].apply_all(new_keys(0, 20), &Limits { tail_pool_bytes: 0, ..l.clone() });
        assert_eq!((unpooled[0].tail_start(), none.tail_pool().lent()), (16, 0));
        // A dropped shard gives back what it borrowed, and the other one takes it.
        view.topic("t").unwrap().release(0);
        drop(shards.into_iter().next());
        assert_eq!(view.tail_pool().lent(), 0);
        let other = view.topic("t").unwrap().shards().pop().unwrap();
        other.apply_all(new_keys(20, 30), &l);
        assert_eq!(other.tail_start(), 20, "4 of its own and 6 borrowed");
        assert_eq!(view.tail_pool().lent(), 6 * TAIL_ENTRY_BYTES);
    }

    #[test]
    fn an_idle_partition_gives_back_what_its_tail_borrowed() {
        let l = Limits { tail_max_records: 4, tail_pool_bytes: 6 * TAIL_ENTRY_BYTES, ..Limits::default() };
        let (view, shards) = view_of(1);
        let t0 = Instant::now();
        shards[0].apply_all(new_keys(0, 20), &l);
        assert_eq!((shards[0].tail_start(), view.tail_pool().lent()), (10, 6 * TAIL_ENTRY_BYTES));
        // Records arrived since the last look: busy.
        assert!(!shards[0].settle_pool(t0));
        assert!(!shards[0].settle_pool(t0 + POOL_IDLE / 2), "quiet, not for long enough");
        shards[0].apply_all(new_keys(20, 21), &l);
        assert!(!shards[0].settle_pool(t0 + POOL_IDLE), "a record restarts the clock");
        assert!(!shards[0].settle_pool(t0 + POOL_IDLE + POOL_IDLE / 2));
        assert_eq!(shards[0].tail_start(), 11, "still borrowing");
        assert!(shards[0].settle_pool(t0 + 2 * POOL_IDLE));
        assert_eq!((shards[0].tail_start(), view.tail_pool().lent()), (17, 0), "its own 4 records");
        assert!(!shards[0].settle_pool(t0 + 3 * POOL_IDLE), "nothing left to give back");
        // It borrows again once records come (a step at a time: here the whole pool).
        shards[0].apply_all(new_keys(21, 23), &l);
        assert_eq!((shards[0].tail_start(), view.tail_pool().lent()), (17, 6 * TAIL_ENTRY_BYTES));
    }

    #[test]
    fn a_tail_keeps_its_bytes_bound_plus_what_it_borrowed_and_gives_back_what_it_stops_using() {
        let big = "x".repeat(100);
        let version = TAIL_ENTRY_BYTES + rec(0, "k", Some(&big)).size();
        let l = Limits { tail_max_bytes: 10 * version, tail_pool_bytes: 1 << 20, ..Limits::default() };
        let (view, shards) = view_of(1);
        // Updates: every entry keeps the version it replaced, and the pool lends up to its bound.
        shards[0].apply_all((0..20_000).map(|o| rec(o, "k", Some(&big))), &l);
        let held = shards[0].tail_bytes();
        assert!(held <= l.tail_max_bytes + l.tail_pool_bytes, "{held}");
        assert!(held > l.tail_max_bytes + l.tail_pool_bytes - 2 * version, "{held}: the whole pool is used");
        assert_eq!(view.tail_pool().lent(), l.tail_pool_bytes);
        // A snapshot reaches back ten versions, subscribers thousands.
        assert_eq!(shards[0].as_of_start(), 19_990);
        assert!(shards[0].tail_start() < 19_000, "{}", shards[0].tail_start());
        // Kafka deleted the records: the tail empties, and gives back all but a step at the next one.
        shards[0].trim_below(20_000);
        shards[0].apply(rec(20_000, "k", Some(&big)), &l);
        assert_eq!(view.tail_pool().lent(), LEND_STEP);
        assert!(shards[0].tail_bytes() <= version);
    }

    #[test]
    fn a_tail_counts_what_it_alone_keeps_alive() {
        let big = "x".repeat(1000);
        let l = Limits { tail_max_records: 1000, tail_max_bytes: 100 * TAIL_ENTRY_BYTES, ..Limits::default() };
        // New keys: the state holds each record, the tail only its entries.
        let shard = Shard::new("t".into(), 0, 0, 0);
        shard.apply_all((0..100).map(|o| rec(o, &format!("k{o}"), Some(&big))), &l);
        assert_eq!(shard.tail_start(), 0, "100 entries of new keys fit in 100 entries' bytes");
        // A tombstone is not in the state; it removes (and so keeps) the record it deletes.
        shard.apply(rec(100, "k0", None), &l);
        let tombstone = rec(100, "k0", None).size() + rec(0, "k0", Some(&big)).size();
        assert!(shard.tail_start() > 0, "the tombstone's entry costs its record and the one it removed");
        let held = shard.lock().tail.len() * TAIL_ENTRY_BYTES + tombstone;
        assert!(held <= l.tail_max_bytes, "{held}");
        // Updates: each entry keeps the version it replaced.
        let updates = Shard::new("t".into(), 0, 0, 0);
        updates.apply_all((0..100).map(|o| rec(o, "k", Some(&big))), &l);
        let version = rec(0, "k", Some(&big)).size();
        let kept = updates.lock().tail.len();
        assert!(kept < 100, "old versions count");
        // The first entry, which replaced nothing, is gone: each one kept holds a version.
        let entry = TAIL_ENTRY_BYTES + version;
        assert!(kept * entry <= l.tail_max_bytes && (kept + 1) * entry > l.tail_max_bytes, "{kept}: as many as fit");
    }

    #[test]
    fn tail_is_bounded_in_bytes() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits { tail_max_records: 1000, tail_max_bytes: 500, ..Limits::default() };
        for o in 0..100 {
            shard.apply(rec(o, "k", Some(&"x".repeat(100))), &l);
        }
        let mut out = Vec::new();
        assert!(matches!(shard.read_tail(0, 1000, usize::MAX, &mut out), TailRead::Behind { .. }));
        let start = shard.tail_start();
        assert!(shard.read_tail(start, 1000, usize::MAX, &mut out) == TailRead::Read { next: 100 });
        assert!(out.iter().map(|r| r.size()).sum::<usize>() <= 500);
    }

    #[test]
    fn a_restored_shard_serves_its_image_and_resumes_after_it() {
        let l = limits(100);
        let source = Shard::new("t".into(), 0, 0, 0);
        source.apply(rec(0, "a", Some("1")), &l);
        source.apply(rec(1, "b", Some("22")), &l);
        let image = source.image();
        let restored = Shard::restored("t".into(), 0, image, 5);
        assert_eq!((restored.next_offset(), restored.start(), restored.tail_start()), (2, 2, 2));
        assert_eq!(restored.state_bytes(), source.state_bytes());
        assert_eq!(restored.load_progress(), (false, 3, 0));
        assert_eq!((restored.restored_at(), source.restored_at()), (Some(2), None));
        restored.apply(rec(1, "a", Some("old")), &l);
        restored.apply(rec(2, "a", None), &l);
        let (map, at) = restored.snapshot();
        assert_eq!((map.len(), at), (1, 3), "a record at or before the image is not applied again");
    }

    #[test]
    fn changes_since_are_the_tail_records_or_the_whole_state() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = limits(3);
        for o in 0..5 {
            shard.apply(rec(o, "k", Some("v")), &l);
        }
        match shard.changes_since(3) {
            ShardChanges::Records { records, next_offset, .. } => {
                assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
                assert_eq!(next_offset, 5);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(shard.changes_since(5), ShardChanges::Records { ref records, .. } if records.is_empty()));
        match shard.changes_since(1) {
            ShardChanges::Whole(image) => assert_eq!((image.map.len(), image.next_offset), (1, 5)),
            other => panic!("the tail starts at 2: {other:?}"),
        }
    }

    #[test]
    fn a_sharded_topic_knows_partitions_it_does_not_hold_and_holds_releases_and_loads_them() {
        let view = View::new(&["t".to_string()]);
        let topic = view.topic("t").unwrap();
        topic.extend_partitions(3);
        assert_eq!((topic.partitions(), topic.shards().len()), (3, 0));
        assert!(matches!(topic.holding(1), Holding::NotHeld));
        assert!(matches!(topic.holding(3), Holding::Unknown) && matches!(topic.holding(-1), Holding::Unknown));
        view.await_share(true);
        assert!(!view.caught_up(), "no share yet: holding nothing is not being ready");
        view.await_share(false);
        assert!(view.caught_up());

        let loading = Arc::new(Shard::new("t".into(), 1, 0, 2));
        let mut watch = topic.watch();
        topic.hold(loading.clone());
        assert!(watch.has_changed().unwrap(), "subscribers are woken");
        assert!(matches!(topic.holding(1), Holding::Loading(_)));
        assert!(!view.caught_up(), "a held shard still loading");
        assert_eq!(topic.shards().iter().map(|s| s.partition).collect::<Vec<_>>(), [1]);
        loading.apply(rec(0, "a", Some("1")), &limits(10));
        loading.apply(rec(1, "b", Some("1")), &limits(10));
        assert!(matches!(topic.holding(1), Holding::Held(_)) && view.caught_up());
        topic.hold(Arc::new(Shard::new("t".into(), 5, 0, 0)));
        assert_eq!(topic.partitions(), 6, "holding a partition beyond the known ones extends the topic");

        watch.borrow_and_update();
        let released = topic.release(1).expect("held");
        assert!(released.is_released() && watch.has_changed().unwrap());
        assert!(matches!(topic.holding(1), Holding::NotHeld) && topic.shard(1).is_none());
        assert!(topic.release(1).is_none(), "released once");
        topic.extend_partitions(2);
        assert_eq!(topic.partitions(), 6, "never shrinks");
    }

    #[test]
    fn state_bytes_follow_inserts_replacements_and_deletes() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits::default();
        let (a, b) = (rec(0, "a", Some("12345")), rec(1, "b", Some("1")));
        let (a_size, b_size) = (a.data_bytes(), b.data_bytes());
        shard.apply(a, &l);
        shard.apply(b, &l);
        assert_eq!(shard.state_bytes(), a_size + b_size);
        let a2 = rec(2, "a", Some("1234567890"));
        let a2_size = a2.data_bytes();
        shard.apply(a2, &l);
        assert_eq!(shard.state_bytes(), a2_size + b_size);
        shard.apply(rec(3, "b", None), &l);
        assert_eq!(shard.state_bytes(), a2_size);
        shard.apply(rec(4, "never-set", None), &l);
        assert_eq!(shard.state_bytes(), a2_size);
    }
}

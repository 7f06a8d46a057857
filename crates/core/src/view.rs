//! The materialized view: a shard per partition holding the state map (persistent, O(1) clone),
//! a bounded tail buffer of recent records, and the next offset.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, RwLock},
};

use bytes::Bytes;
use imbl::OrdSet;
use tokio::sync::watch;

use crate::{
    error::Error,
    limits::Limits,
    record::{PartitionOffset, Record, WireEncoder},
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
    /// Bytes of the tail's records and of their encodings.
    tail_bytes: usize,
    tail_start: i64,
    next_offset: i64,
    /// The end offset seen at start: the shard is caught up once `next_offset` reaches it.
    target: i64,
    /// Where ingest started, for the percentage of catching up.
    start: i64,
}

/// A record of the tail buffer and, once a subscriber delivered it untranslated, its encoding,
/// made once for every subscriber that reads it.
#[derive(Debug)]
struct TailEntry {
    record: Record,
    wire: Option<Bytes>,
}

impl TailEntry {
    fn bytes(&self) -> usize {
        self.record.size() + self.wire.as_ref().map_or(0, Bytes::len)
    }
}

/// What [`Shard::read_tail`] appends: a record and its encoding (when asked for).
pub type TailRecord = (Record, Option<Bytes>);

impl ShardState {
    fn apply(&mut self, rec: Record, limits: &Limits) {
        if rec.offset < self.next_offset {
            return;
        }
        if let Some(key) = rec.key() {
            let replaced = if rec.value().is_some() {
                self.state_bytes += rec.data_bytes();
                self.map.insert(Keyed(rec.clone()))
            } else {
                self.map.remove(key)
            };
            if let Some(old) = replaced {
                self.state_bytes -= old.0.data_bytes();
            }
        }
        self.next_offset = rec.offset + 1;
        self.last_timestamp_ms = rec.timestamp_ms;
        self.tail_bytes += rec.size();
        self.tail.push_back(TailEntry { record: rec, wire: None });
        while self.tail.len() > limits.tail_max_records
            || (self.tail_bytes > limits.tail_max_bytes && self.tail.len() > 1)
        {
            let old = self.tail.pop_front().expect("tail is not empty");
            self.tail_bytes -= old.bytes();
            self.tail_start = old.record.offset + 1;
        }
    }
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
            state: Mutex::new(ShardState {
                map: StateMap::new(),
                tail: VecDeque::new(),
                tail_bytes: 0,
                state_bytes: 0,
                last_timestamp_ms: -1,
                tail_start: start,
                next_offset: start,
                target,
                start,
            }),
        }
    }

    /// This partition at `offset`.
    pub fn at(&self, offset: i64) -> PartitionOffset {
        PartitionOffset::new(&*self.topic, self.partition, offset)
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
            let old = s.tail.pop_front().expect("tail is not empty");
            s.tail_bytes -= old.bytes();
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

    pub fn tail_start(&self) -> i64 {
        self.lock().tail_start
    }

    pub fn keys(&self) -> usize {
        self.lock().map.len()
    }

    /// Key, value and header bytes of the state.
    pub fn state_bytes(&self) -> usize {
        self.lock().state_bytes
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
    /// `max_bytes`. With `wire`, each record comes with its encoding, made by the first reader
    /// that asks and kept with the tail record (its bytes count in the tail's bound).
    pub fn read_tail(
        &self,
        from: i64,
        max_records: usize,
        max_bytes: usize,
        wire: Option<&WireEncoder>,
        out: &mut Vec<TailRecord>,
    ) -> TailRead {
        let mut guard = self.lock();
        let s = &mut *guard;
        if from < s.tail_start {
            return TailRead::Behind { tail_start: s.tail_start };
        }
        let first = s.tail.partition_point(|e| e.record.offset < from);
        let mut bytes = 0;
        for (taken, entry) in s.tail.range_mut(first..).enumerate() {
            let size = entry.record.size();
            if taken == max_records || (taken > 0 && bytes + size > max_bytes) {
                return TailRead::Read { next: out.last().map_or(from, |(r, _)| r.offset + 1) };
            }
            bytes += size;
            let encoded = wire.map(|encode| {
                entry
                    .wire
                    .get_or_insert_with(|| {
                        let encoded = encode(&entry.record);
                        s.tail_bytes += encoded.len();
                        encoded
                    })
                    .clone()
            });
            out.push((entry.record.clone(), encoded));
        }
        TailRead::Read { next: from.max(s.next_offset) }
    }
}

/// One exposed topic: its shards and a signal that fires when any of them changes.
#[derive(Debug)]
pub struct TopicView {
    pub name: Arc<str>,
    shards: RwLock<Vec<Arc<Shard>>>,
    changed: watch::Sender<u64>,
}

impl TopicView {
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn shard(&self, partition: i32) -> Option<Arc<Shard>> {
        usize::try_from(partition)
            .ok()
            .and_then(|p| self.shards.read().unwrap_or_else(|e| e.into_inner()).get(p).cloned())
    }

    pub fn partitions(&self) -> i32 {
        self.shards.read().unwrap_or_else(|e| e.into_inner()).len() as i32
    }

    /// Adds the shard of the next partition (partitions are numbered densely from 0).
    pub fn add_shard(&self, shard: Arc<Shard>) {
        let mut shards = self.shards.write().unwrap_or_else(|e| e.into_inner());
        debug_assert_eq!(shards.len() as i32, shard.partition);
        shards.push(shard);
        drop(shards);
        self.notify();
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
    assigned: std::sync::atomic::AtomicBool,
}

impl View {
    pub fn new(topics: &[String]) -> Self {
        let mut names = topics.to_vec();
        names.sort();
        names.dedup();
        let topics = names
            .iter()
            .map(|name| {
                let view = TopicView {
                    name: name.as_str().into(),
                    shards: RwLock::new(Vec::new()),
                    changed: watch::channel(0).0,
                };
                (name.clone(), Arc::new(view))
            })
            .collect();
        Self { topics, names, ready: watch::channel(false).0, assigned: Default::default() }
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
        self.assigned.store(true, std::sync::atomic::Ordering::Release);
    }

    /// UNAVAILABLE until ingest has reached Kafka: before that the view does not know the
    /// partitions, so positions can be neither checked nor served.
    pub fn check_assigned(&self) -> Result<(), Error> {
        if self.assigned.load(std::sync::atomic::Ordering::Acquire) {
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
        assert_eq!(shard.read_tail(10, 10, 1 << 20, None, &mut out), TailRead::Behind { tail_start: 11 });
        assert_eq!(shard.read_tail(11, 10, 1 << 20, None, &mut out), TailRead::Read { next: 21 });
        assert_eq!(out.iter().map(|(r, _)| r.offset).collect::<Vec<_>>(), vec![12, 13, 20]);
        out.clear();
        assert_eq!(shard.read_tail(13, 1, 1 << 20, None, &mut out), TailRead::Read { next: 14 });
        assert_eq!(out.len(), 1);
        out.clear();
        assert_eq!(shard.read_tail(21, 10, 1 << 20, None, &mut out), TailRead::Read { next: 21 });
        assert!(shard.advance_to(25));
        assert_eq!(shard.read_tail(21, 10, 1 << 20, None, &mut out), TailRead::Read { next: 25 });
        assert!(out.is_empty());
        // Lag counts offsets to the head, markers included; none for a reader at or past it.
        assert_eq!((shard.lag(11), shard.lag(25), shard.lag(30)), (14, 0, 0));
    }

    #[test]
    fn a_tail_record_is_encoded_once_for_every_reader_and_its_encoding_counts_in_the_bound() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits { tail_max_records: 1000, tail_max_bytes: 10_000, ..Limits::default() };
        for o in 0..10 {
            shard.apply(rec(o, "k", Some("v")), &l);
        }
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let wire: WireEncoder = Arc::new(move |r: &Record| {
            counted.fetch_add(1, Ordering::Relaxed);
            Bytes::from(vec![r.offset as u8; 1000])
        });
        let (mut first, mut second, mut plain) = (Vec::new(), Vec::new(), Vec::new());
        assert_eq!(shard.read_tail(0, 100, usize::MAX, Some(&wire), &mut first), TailRead::Read { next: 10 });
        assert_eq!(shard.read_tail(5, 100, usize::MAX, Some(&wire), &mut second), TailRead::Read { next: 10 });
        assert_eq!(calls.load(Ordering::Relaxed), 10, "each record is encoded once, whoever reads it");
        assert!(first[7].1.as_ref().unwrap().as_ptr() == second[2].1.as_ref().unwrap().as_ptr(), "shared bytes");
        assert_eq!(first[3].1.as_deref(), Some(&[3u8; 1000][..]));
        shard.read_tail(0, 100, usize::MAX, None, &mut plain);
        assert!(plain.iter().all(|(_, w)| w.is_none()), "no encoding unless asked for");
        // 10 records of 66 bytes and their encodings of 1000: the next record pushes the tail over
        // its 10,000 bytes.
        shard.apply(rec(10, "k", Some("v")), &l);
        let start = shard.tail_start();
        assert!(start > 0, "encodings count in the tail's bound");
        let mut after = Vec::new();
        assert_eq!(shard.read_tail(start, 100, usize::MAX, None, &mut after), TailRead::Read { next: 11 });
        let held: usize = after.iter().map(|(r, _)| r.size()).sum::<usize>() + (10 - start as usize) * 1000;
        assert!(held <= 10_000, "{held}");
    }

    #[test]
    fn tail_is_bounded_in_bytes() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits { tail_max_records: 1000, tail_max_bytes: 500, ..Limits::default() };
        for o in 0..100 {
            shard.apply(rec(o, "k", Some(&"x".repeat(100))), &l);
        }
        let mut out = Vec::new();
        assert!(matches!(shard.read_tail(0, 1000, usize::MAX, None, &mut out), TailRead::Behind { .. }));
        let start = shard.tail_start();
        assert!(shard.read_tail(start, 1000, usize::MAX, None, &mut out) == TailRead::Read { next: 100 });
        assert!(out.iter().map(|(r, _)| r.size()).sum::<usize>() <= 500);
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

//! The subscription state machine without Kafka: an in-memory log stands in for the catch-up
//! reader, a channel for the client.

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::run;
use crate::{
    error::{Error, TranslatorFailure},
    filter::{Filter, KeyFilter},
    limits::Limits,
    record::{Output, PartitionOffset, Payload, Record, RecordRef},
    source::{CatchUpReader, Partition, Read},
    subscribe::{Cursor, Event, Progress, Shared, Subscription},
    testing::{MemoryLog, MemoryReader},
    translate::{Outcome, Translate, Translation},
    view::{Shard, TopicView, View},
    watermarks::WatermarkCache,
};

/// One topic "t" with one partition, its view and its log.
struct Fixture {
    view: Arc<View>,
    topic: Arc<TopicView>,
    shard: Arc<Shard>,
    log: Arc<MemoryLog>,
    limits: Limits,
}

impl Fixture {
    fn new(limits: Limits) -> Self {
        let view = Arc::new(View::new(&["t".to_string()]));
        let topic = view.topic("t").unwrap();
        let shard = Arc::new(Shard::new("t".into(), 0, 0, 0));
        topic.add_shard(shard.clone());
        view.set_assigned();
        Self { view, topic, shard, log: Arc::default(), limits }
    }

    /// Appends records at `offsets` to the log and the view, as ingest would.
    fn append(&self, offsets: std::ops::Range<i64>, key: &str) {
        for offset in offsets {
            let value = offset.to_string();
            let record = Record::new("t".into(), 0, offset, 0, Some(key.as_bytes()), Some(value.as_bytes()), &[]);
            self.log.records.lock().unwrap().entry(("t".into(), 0)).or_default().push(record.clone());
            self.shard.apply(record, &self.limits);
        }
        self.topic.notify();
    }

    fn shared(&self) -> Shared {
        let shutdown = CancellationToken::new();
        let watermarks = WatermarkCache::new(self.log.clone(), self.view.clone());
        tokio::spawn(watermarks.clone().run(Duration::from_secs(3600), shutdown.clone()));
        Shared {
            limits: self.limits.clone(),
            log: self.log.clone(),
            watermarks,
            catchup_pool: Arc::new(Semaphore::new(1)),
            shutdown,
            wire: Some(offset_encoder()),
        }
    }

    fn subscription(&self, from: i64, filter: Filter, translation: Option<Translation>) -> Subscription {
        Subscription {
            topics: vec![self.topic.clone()],
            cursors: vec![Cursor::new(self.shard.clone(), from)],
            filter,
            max_batch_records: self.limits.max_batch_records,
            translation,
            conflate: false,
            stop: Default::default(),
        }
    }
}

/// The fixture's encoding of a record sent as it is: its offset.
fn offset_encoder() -> crate::record::Encoder {
    Arc::new(|r: &RecordRef<'_>, buf: &mut BytesMut| buf.extend_from_slice(&r.offset.to_be_bytes()))
}

fn limits(tail_max_records: usize, max_batch_records: usize) -> Limits {
    Limits { tail_max_records, tail_pool_bytes: 0, max_batch_records, progress_interval_ms: 20, ..Limits::default() }
}

/// What a client saw.
#[derive(Default)]
struct Seen {
    offsets: Vec<i64>,
    /// Records delivered as they are: their offsets and encodings, and whether they came as the
    /// view's records (from the tail) rather than encoded already (by the catch-up reader).
    encoded: Vec<(i64, Bytes, bool)>,
    progress: Vec<Progress>,
    error: Option<Error>,
    /// Runs of records encoded once for every subscriber that read them.
    runs: usize,
}

impl Seen {
    /// Reads events until the last delivered or acknowledged offset reaches `end`, an error, or
    /// the end of the stream.
    async fn until(&mut self, rx: &mut crate::buffer::Receiver<Result<Event, Error>>, end: i64) {
        let at = |seen: &Seen| {
            let progressed = seen.progress.last().map_or(0, |p| p.offsets[0].offset);
            seen.offsets.last().map_or(0, |o| o + 1).max(progressed)
        };
        while at(self) < end && self.error.is_none() {
            match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event within 10 s") {
                Some(Ok(Event::Records(records))) => {
                    assert!(!records.is_empty(), "an empty batch was sent");
                    self.offsets.extend(records.iter().map(|o: &Output| o.source.offset));
                }
                Some(Ok(Event::Encoded(records))) => {
                    assert!(!records.is_empty(), "an empty batch was sent");
                    for r in records {
                        // The fixture's encoding: the offset (a run's items: offsets one after another).
                        let wire = r.to_bytes(&*offset_encoder());
                        assert_eq!(r.wire.len(), wire.len(), "the length announced is the length written");
                        assert_eq!(wire.len(), 8 * r.records(), "8 bytes per record");
                        let shared = matches!(r.wire, crate::record::Wire::Run(_));
                        self.runs += usize::from(shared);
                        let offsets: Vec<i64> =
                            wire.chunks(8).map(|o| i64::from_be_bytes(o.try_into().expect("8 bytes"))).collect();
                        let min_data = offsets.iter().map(|o| o.to_string().len() + 1).sum::<usize>();
                        assert!(r.data_bytes >= min_data, "key and value bytes");
                        for (offset, wire) in offsets.into_iter().zip(wire.chunks(8)) {
                            self.offsets.push(offset);
                            let from_view = shared || matches!(r.wire, crate::record::Wire::Record { .. });
                            self.encoded.push((offset, Bytes::copy_from_slice(wire), from_view));
                        }
                    }
                }
                Some(Ok(Event::Progress(p))) => self.progress.push(p),
                Some(Err(e)) => self.error = Some(e),
                None => break,
            }
        }
    }
}

#[tokio::test]
async fn switches_from_catch_up_to_the_tail_and_back_without_gap_or_duplicate() {
    // The tail keeps 5 records; the first 15 are only in the log.
    let f = Fixture::new(limits(5, 4));
    f.append(0..20, "k");
    let shared = f.shared();
    // Room for one message: the runner blocks while the client does not read.
    let (tx, mut rx) = crate::buffer::channel(1, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(0, Filter::default(), None), shared.clone(), tx));

    let mut seen = Seen::default();
    seen.until(&mut rx, 20).await;
    assert_eq!(seen.offsets, (0..20).collect::<Vec<_>>());
    assert_eq!(seen.encoded.len(), 20, "sent as they are, every record comes encoded");
    // The catch-up reader's records come encoded; the tail's are the view's records, encoded as
    // they are written.
    let from_view: Vec<bool> = seen.encoded.iter().map(|(_, _, from_view)| *from_view).collect();
    let switch = from_view.iter().position(|v| *v).expect("the last records come from the tail");
    assert!(switch >= 15 && from_view[switch..].iter().all(|v| *v), "{from_view:?}");
    assert_eq!(f.log.opened.load(Ordering::SeqCst), 1, "one catch-up reader for the first 15 records");
    assert_eq!(shared.catchup_pool.available_permits(), 1, "the reader is closed once the cursor is on the tail");

    // While the client is not reading, the tail moves past the cursor: it must go back to Kafka.
    f.append(20..40, "k");
    seen.until(&mut rx, 40).await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_eq!(seen.offsets, (0..40).collect::<Vec<_>>());
    assert_eq!(f.log.opened.load(Ordering::SeqCst), 2, "a second catch-up reader after falling behind again");
    assert_eq!(shared.catchup_pool.available_permits(), 1);
}

#[tokio::test]
async fn followers_of_the_same_records_share_their_encoding_without_gap_or_duplicate() {
    let f = Fixture::new(limits(1000, 1000));
    f.append(0..10, "k");
    let shared = f.shared();
    let follow = |from, filter| {
        let (tx, rx) = crate::buffer::channel(16, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
        tokio::spawn(run(f.subscription(from, filter, None), shared.clone(), tx));
        rx
    };
    // One after the other, from the start: the first reads records, the next ones its range.
    let mut followers = Vec::new();
    for _ in 0..3 {
        let mut rx = follow(0, Filter::default());
        let mut seen = Seen::default();
        seen.until(&mut rx, 10).await;
        followers.push((rx, seen));
    }
    assert_eq!(followers.iter().map(|(_, s)| s.runs).collect::<Vec<_>>(), vec![0, 1, 1]);
    // A filtered follower reads records, each judged by its filter.
    let keys = KeyFilter::new(vec![], vec![Bytes::from_static(b"k")], "key_filter").unwrap();
    let mut rx = follow(0, Filter { keys, ..Default::default() });
    let mut seen = Seen::default();
    seen.until(&mut rx, 10).await;
    assert_eq!((seen.offsets, seen.runs), ((0..10).collect(), 0));
    // At the head, appends in steps: every follower sees each record once, in order.
    for step in 1..6 {
        f.append(step * 10..step * 10 + 10, "k");
        for (rx, seen) in &mut followers {
            seen.until(rx, step * 10 + 10).await;
        }
    }
    for (_, seen) in &followers {
        assert!(seen.error.is_none(), "{:?}", seen.error);
        assert_eq!(seen.offsets, (0..60).collect::<Vec<_>>());
    }
    assert!(followers.iter().map(|(_, s)| s.runs).sum::<usize>() > 2, "ranges at the head are shared too");
}

#[tokio::test]
async fn progress_moves_past_filtered_out_records() {
    let f = Fixture::new(limits(100, 1000));
    f.append(0..10, "other");
    let keys = KeyFilter::new(vec![Bytes::from_static(b"wanted")], vec![], "key_filter").unwrap();
    let filter = Filter { keys, ..Default::default() };
    let (tx, mut rx) = crate::buffer::channel(16, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(0, filter, None), f.shared(), tx));

    let mut seen = Seen::default();
    seen.until(&mut rx, 10).await;
    assert!(seen.offsets.is_empty(), "filtered-out records were delivered: {:?}", seen.offsets);
    assert_eq!(seen.progress.first().unwrap().offsets, vec![PartitionOffset::new("t", 0, 0)], "first progress = start");
    assert_eq!(seen.progress.last().unwrap().offsets, vec![PartitionOffset::new("t", 0, 10)]);

    f.append(10..11, "wanted");
    f.append(11..15, "other");
    seen.until(&mut rx, 15).await;
    assert_eq!(seen.offsets, vec![10]);
    assert_eq!(seen.progress.last().unwrap().offsets, vec![PartitionOffset::new("t", 0, 15)]);
}

/// Traps on any batch that holds offset 5; otherwise passes values through.
struct TrapAtFive;

impl Translate for TrapAtFive {
    fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
        if batch.iter().any(|r| r.offset == 5) {
            return Err(TranslatorFailure::Trap("unreachable".into()));
        }
        Ok(batch.iter().map(|r| Outcome::Ok(vec![Payload { value: r.value_bytes(), ..Payload::default() }])).collect())
    }
}

#[tokio::test]
async fn an_error_mid_batch_resumes_from_what_was_sent() {
    let f = Fixture::new(limits(100, 4));
    f.append(0..10, "k");
    let translation = Translation {
        name: "trap".into(),
        digest: "d".into(),
        translator: Arc::new(TrapAtFive),
        skip_errors: false,
        batch_records: 100,
    };
    let (tx, mut rx) = crate::buffer::channel(16, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(0, Filter::default(), Some(translation)), f.shared(), tx));

    let mut seen = Seen::default();
    seen.until(&mut rx, 10).await;
    // Batch 0..4 was sent; batch 4..8 failed: the client resumes at 4, not at 8.
    assert_eq!(seen.offsets, vec![0, 1, 2, 3]);
    match seen.error.expect("the stream ends with the translator's error") {
        Error::Translator { failure: TranslatorFailure::Trap(_), resume, .. } => {
            assert_eq!(resume, vec![PartitionOffset::new("t", 0, 4)])
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(rx.recv().await.is_none(), "nothing after the error");
}

#[tokio::test]
async fn shutdown_ends_the_stream_with_its_resume_position() {
    let f = Fixture::new(limits(100, 1000));
    f.append(0..3, "k");
    let shared = f.shared();
    let (tx, mut rx) = crate::buffer::channel(16, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(0, Filter::default(), None), shared.clone(), tx));
    let mut seen = Seen::default();
    seen.until(&mut rx, 3).await;
    shared.shutdown.cancel();
    seen.until(&mut rx, i64::MAX).await;
    match seen.error.expect("the stream ends with SHUTTING_DOWN") {
        Error::ShuttingDown { resume } => assert_eq!(resume, vec![PartitionOffset::new("t", 0, 3)]),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_partition_taken_from_this_replica_ends_the_stream_unavailable_with_its_position() {
    let f = Fixture::new(limits(100, 1000));
    f.append(0..4, "k");
    let (tx, mut rx) = crate::buffer::channel(16, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(1, Filter::default(), None), f.shared(), tx));
    let mut seen = Seen::default();
    seen.until(&mut rx, 4).await;
    assert!(seen.error.is_none());
    assert!(f.topic.release(0).is_some_and(|s| Arc::ptr_eq(&s, &f.shard)));
    seen.until(&mut rx, i64::MAX).await;
    match seen.error.expect("the stream ends when its partition is taken") {
        Error::PartitionNotHeld { topic, partition, owner: None, resume } => {
            assert_eq!((topic.as_str(), partition), ("t", 0));
            assert_eq!(resume, vec![PartitionOffset::new("t", 0, 4)], "where the client stands");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(rx.recv().await.is_none(), "nothing after the error");
}

/// A reader hands over at most the records asked for, and stops once their bytes reach the
/// budget (the last one may pass it), in order.
#[test]
fn reads_are_taken_in_bulk_within_a_count_and_a_byte_budget() {
    let record = |offset| Record::new("t".into(), 0, offset, 0, Some(b"k"), Some(&[b'v'; 100]), &[]);
    let log: BTreeMap<Partition, Vec<Record>> = [(("t".into(), 0), (0..10).map(record).collect())].into();
    let _permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
    let (records, assigned) = (Arc::new(Mutex::new(log)), Mutex::new(BTreeMap::new()));
    let reader = MemoryReader { records, assigned, encoding: None, _permit };
    reader.assign(&[PartitionOffset::new("t", 0, 0)]).unwrap();
    let offsets =
        |reads: &[Read]| reads.iter().map(|r| if let Read::Record(r) = r { r.offset } else { -1 }).collect::<Vec<_>>();
    let mut out = Vec::new();
    reader.try_recv_many(3, usize::MAX, &mut out);
    assert_eq!(offsets(&out), [0, 1, 2]);
    let size = record(0).size();
    reader.try_recv_many(100, 2 * size + 1, &mut out);
    assert_eq!(offsets(&out), [0, 1, 2, 3, 4, 5], "two records hold less than the budget: a third is taken");
    reader.try_recv_many(100, usize::MAX, &mut out);
    assert_eq!(out.len(), 10, "then the rest, and no more");
}

#[tokio::test]
async fn a_conflating_subscription_sends_the_latest_record_per_key_while_its_client_is_behind() {
    let f = Fixture::new(limits(1000, 1000));
    // One message of room: the first progress fills it, and the client does not read yet.
    let (tx, mut rx) = crate::buffer::channel(1, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    let subscription = Subscription { conflate: true, ..f.subscription(0, Filter::default(), None) };
    tokio::spawn(run(subscription, f.shared(), tx));
    for round in 0..10 {
        for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
            let at = round * 3 + i as i64;
            f.append(at..at + 1, key);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = Seen::default();
    seen.until(&mut rx, 30).await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_eq!(seen.offsets, vec![27, 28, 29], "the latest record of each key, in offset order");
    // Then the position is told, past every record read.
    while seen.progress.last().map(|p| p.offsets[0].offset) != Some(30) {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.expect("progress").expect("open") {
            Ok(Event::Progress(p)) => seen.progress.push(p),
            other => panic!("unexpected {:?}", other.map(|e| e.is_empty())),
        }
    }
}

#[tokio::test]
async fn a_conflating_subscription_at_its_bound_waits_for_its_client_and_loses_nothing() {
    // Room for about three records held: thirty keys go through in turns.
    let f = Fixture::new(Limits { conflate_max_bytes: 200, ..limits(1000, 1000) });
    let (tx, mut rx) = crate::buffer::channel(1, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    let subscription = Subscription { conflate: true, ..f.subscription(0, Filter::default(), None) };
    tokio::spawn(run(subscription, f.shared(), tx));
    for i in 0..30 {
        f.append(i..i + 1, &format!("k{i}"));
    }
    let mut seen = Seen::default();
    seen.until(&mut rx, 30).await;
    assert!(seen.error.is_none(), "{:?}", seen.error);
    assert_eq!(seen.offsets, (0..30).collect::<Vec<_>>(), "distinct keys: every record, in order");
}

#[tokio::test]
async fn a_partition_behind_the_tail_is_read_while_another_still_has_tail_to_read() {
    // Partition 0's 100 records are all in its tail; partition 1's first 50 only in the log.
    let f = Fixture::new(limits(100, 4));
    f.append(0..100, "k");
    let second = Arc::new(Shard::new("t".into(), 1, 0, 0));
    f.topic.add_shard(second.clone());
    for offset in 0..150 {
        let record = Record::new("t".into(), 1, offset, 0, Some(b"k"), Some(b"v"), &[]);
        f.log.records.lock().unwrap().entry(("t".into(), 1)).or_default().push(record.clone());
        second.apply(record, &f.limits);
    }
    assert_eq!(second.tail_start(), 50);
    let mut sub = f.subscription(0, Filter::default(), None);
    sub.cursors.push(Cursor::new(second, 0));
    // Room for one message: the runner reads a batch at a time as the client takes them.
    let (tx, mut rx) = crate::buffer::channel(1, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    // Records as they are, encoded as partition and offset.
    let encoder: crate::record::Encoder = Arc::new(|r: &RecordRef<'_>, buf: &mut BytesMut| {
        buf.extend_from_slice(&(i64::from(r.partition) << 32 | r.offset).to_be_bytes())
    });
    tokio::spawn(run(sub, Shared { wire: Some(encoder.clone()), ..f.shared() }, tx));

    let mut order = Vec::new();
    while order.len() < 250 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event within 10 s") {
            Some(Ok(Event::Encoded(records))) => {
                for r in records {
                    for item in r.to_bytes(&*encoder).chunks(8) {
                        let item = i64::from_be_bytes(item.try_into().unwrap());
                        order.push(((item >> 32) as i32, item & 0xffff_ffff));
                    }
                }
            }
            Some(Ok(Event::Progress(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let of = |p: i32| order.iter().filter(|(q, _)| *q == p).map(|(_, o)| *o).collect::<Vec<_>>();
    assert_eq!((of(0), of(1)), ((0..100).collect(), (0..150).collect()), "every record once, in order");
    let first_behind = order.iter().position(|(p, _)| *p == 1).unwrap();
    let last_of_tail = order.iter().rposition(|(p, _)| *p == 0).unwrap();
    assert!(
        first_behind < last_of_tail,
        "partition 1 was read from the log only after partition 0's tail: first at {first_behind}, partition 0 ended at {last_of_tail}"
    );
}

/// Passes values through and counts its calls.
struct CountCalls(Arc<std::sync::atomic::AtomicUsize>);

impl Translate for CountCalls {
    fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(batch.iter().map(|r| Outcome::Ok(vec![Payload { value: r.value_bytes(), ..Payload::default() }])).collect())
    }
}

#[tokio::test]
async fn the_next_batch_is_translated_while_the_client_has_not_taken_the_last_one_and_no_further() {
    let f = Fixture::new(limits(100, 4));
    f.append(0..12, "k");
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let translation = Translation {
        name: "count".into(),
        digest: "d".into(),
        translator: Arc::new(CountCalls(calls.clone())),
        skip_errors: false,
        batch_records: 100,
    };
    // Room for one message: the first progress takes it, and the client reads nothing yet.
    let (tx, mut rx) = crate::buffer::channel(1, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(0, Filter::default(), Some(translation)), f.shared(), tx));

    // Batch 0..4 waits for room; 4..8 is translated meanwhile, and nothing after it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while calls.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the next batch was not translated while the client was busy");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2, "one translation ahead of the client, no more");

    let mut seen = Seen::default();
    seen.until(&mut rx, 12).await;
    assert_eq!(seen.offsets, (0..12).collect::<Vec<_>>(), "every record once, in order");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert!(seen.error.is_none());
}

/// Passes values through, taking 30 ms a call (longer than the fixture's progress interval).
struct Slow;

impl Translate for Slow {
    fn translate(&self, batch: &[Record]) -> Result<Vec<Outcome>, TranslatorFailure> {
        std::thread::sleep(Duration::from_millis(30));
        Ok(batch.iter().map(|r| Outcome::Ok(vec![Payload { value: r.value_bytes(), ..Payload::default() }])).collect())
    }
}

#[tokio::test]
async fn no_position_is_sent_ahead_of_a_batch_under_translation() {
    let f = Fixture::new(limits(100, 4));
    f.append(0..40, "k");
    let translation = Translation {
        name: "slow".into(),
        digest: "d".into(),
        translator: Arc::new(Slow),
        skip_errors: false,
        batch_records: 100,
    };
    let (tx, mut rx) = crate::buffer::channel(64, usize::MAX, &crate::buffer::Budget::new(usize::MAX));
    tokio::spawn(run(f.subscription(0, Filter::default(), Some(translation)), f.shared(), tx));

    // Every position sent is at most one past the last record delivered before it.
    let mut next = 0;
    while next < 40 {
        match tokio::time::timeout(Duration::from_secs(10), rx.recv()).await.expect("an event within 10 s") {
            Some(Ok(Event::Records(records))) => {
                for r in records {
                    assert_eq!(r.source.offset, next, "every record once, in order");
                    next += 1;
                }
            }
            Some(Ok(Event::Progress(p))) => {
                assert!(p.offsets[0].offset <= next, "position {} sent before record {next}", p.offsets[0].offset)
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

//! The gateway's single Kafka consumer: it reads every partition of the exposed topics once and
//! applies each record to its shard, however many clients there are.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};
use tributary_core::{
    events,
    source::Position,
    view::{Shard, TopicView, View},
    Error, Limits, Record,
};

use crate::{
    batch::ConsumerQueue,
    log::{assignment, partition_count, positions, watermarks},
    settings::{consumer_config, ingest_tuning, kafka_error, KafkaConfig},
};

/// How often positions are synced from the consumer and readiness is checked.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How often the initial load logs its progress.
const LOG_INTERVAL: Duration = Duration::from_secs(5);
/// How long one poll waits for a record; bounds how late shutdown and position syncs are.
const POLL_WAIT: Duration = Duration::from_millis(100);
/// Most records ingest takes from the consumer before applying them.
const MAX_BATCH: usize = 4096;
/// How long ingest waits for more records after the first of a batch. Each batch wakes every
/// subscriber of its topics once: without waiting, a topic written at 50,000 records/s woke each
/// of them for every few records, and at 10 subscribers the gateway used 3x the CPU per
/// delivered record and fell behind (bench, fan-out rows).
const LINGER: Duration = Duration::from_millis(5);

/// The ingest consumer, assigned every partition of the exposed topics.
pub struct Ingest {
    consumer: Arc<BaseConsumer>,
    view: Arc<View>,
    limits: Limits,
    refresh: Duration,
}

/// First wait between attempts to reach Kafka at start; it doubles up to [`SETUP_BACKOFF_MAX`].
const SETUP_BACKOFF: Duration = Duration::from_millis(200);
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Ingest {
    /// Creates the ingest consumer. Fails only on a configuration librdkafka rejects; reaching
    /// Kafka and finding the topics happens in [`Ingest::run`], which retries.
    pub fn new(kafka: &KafkaConfig, limits: &Limits, view: Arc<View>) -> Result<Self, Error> {
        let consumer: Arc<BaseConsumer> =
            Arc::new(consumer_config(kafka, "ingest", &ingest_tuning()).create().map_err(kafka_error)?);
        Ok(Self { consumer, view, limits: limits.clone(), refresh: Duration::from_millis(kafka.metadata_refresh_ms) })
    }

    /// Applies records until `shutdown` is cancelled; also moves positions past transaction
    /// markers, declares the view ready, and picks up new partitions.
    ///
    /// First it assigns every partition of the exposed topics at its earliest offset, retrying
    /// with backoff while Kafka is unreachable or a topic is missing or has no leader yet (the
    /// gateway serves health NOT_SERVING and UNAVAILABLE meanwhile). The poll loop runs on a
    /// thread of its own (a blocking task), like a raw consumer: a tight `poll` loop with no async
    /// wake-up per message; new partitions are looked for beside it.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { consumer, view, limits, refresh } = self;
        if !assign_at_start(&consumer, &view, &shutdown).await {
            return;
        }
        // The poll loop is a thread: it must also stop when this future is dropped without a
        // shutdown (a runtime shutting down waits for its blocking threads).
        let shutdown = shutdown.child_token();
        let _stop_on_drop = shutdown.clone().drop_guard();
        let refresher = tokio::spawn(
            refresh_partitions(consumer.clone(), view.clone(), refresh, shutdown.clone()).in_current_span(),
        );
        let span = tracing::Span::current();
        let polling =
            tokio::task::spawn_blocking(move || span.in_scope(|| poll_loop(&consumer, &view, &limits, &shutdown)));
        if let Err(e) = polling.await {
            events::emit(&events::IngestStoppedAbnormally { error: e.to_string() });
        }
        let _ = refresher.await;
        info!("ingest stopped");
    }
}

/// Assigns every exposed partition, retrying with backoff until it works; false on shutdown.
async fn assign_at_start(consumer: &Arc<BaseConsumer>, view: &Arc<View>, shutdown: &CancellationToken) -> bool {
    let mut backoff = SETUP_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (c, v) = (consumer.clone(), view.clone());
        let setup = tokio::task::spawn_blocking(move || add_new_partitions(&*c, &v, true));
        let result = tokio::select! {
            r = setup => r.map_err(|e| Error::Internal(e.to_string())).and_then(|r| r),
            _ = shutdown.cancelled() => return false,
        };
        match result {
            Ok(_) => {
                view.set_assigned();
                info!(topics = ?view.topic_names(), attempt, "ingest assigned every partition of the exposed topics");
                return true;
            }
            Err(e) => {
                // Every attempt is logged: at start nothing else tells the operator what is wrong.
                events::emit(&events::IngestStartRetry {
                    error: e.to_string(),
                    attempt,
                    retry_in: format!("{backoff:?}"),
                });
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => return false,
        }
        backoff = (backoff * 2).min(SETUP_BACKOFF_MAX);
    }
}

/// The ingest loop: waits for a message, then takes up to [`MAX_BATCH`] more at once, makes
/// records of them and hands them to the apply thread; every [`SYNC_INTERVAL`] it also hands over
/// the consumer's positions (past transaction markers), after which readiness is checked.
///
/// Two threads in a pipeline: this one takes messages and copies them into records while the
/// apply thread inserts the previous batch into the shards (each partition's run under one shard
/// lock, one wake-up per topic). With one thread, loading was bound by that thread while the
/// second core idled (the profile: about half in librdkafka and record copies, half in the state
/// map). Order is kept: one apply thread takes the work in the order it was made.
fn poll_loop(consumer: &BaseConsumer, view: &View, limits: &Limits, shutdown: &CancellationToken) {
    let Some(queue) = ConsumerQueue::of(consumer) else {
        events::emit(&events::IngestStoppedAbnormally { error: "the ingest consumer has no consumer queue".into() });
        return;
    };
    let (work, todo) = std::sync::mpsc::sync_channel::<Work>(APPLY_QUEUE);
    let span = tracing::Span::current();
    std::thread::scope(|scope| {
        let applier = std::thread::Builder::new()
            .name("tributary-apply".into())
            .spawn_scoped(scope, move || span.in_scope(|| apply_loop(todo, view, limits)));
        if let Err(e) = applier {
            events::emit(&events::IngestStoppedAbnormally { error: format!("cannot start the apply thread: {e}") });
            return;
        }
        let mut next_sync = Instant::now();
        while !shutdown.is_cancelled() {
            let mut batch = Batch::default();
            // Wait for one message, then up to LINGER for a full batch (librdkafka's batch call
            // waits for a full batch or its timeout): records are late by at most LINGER, and
            // subscribers are woken at most once per LINGER while records trickle in.
            let linger = match consumer.poll(POLL_WAIT) {
                Some(Ok(m)) => {
                    batch.push(view, &m);
                    LINGER
                }
                Some(Err(e)) => {
                    events::emit(&events::KafkaIngestError { error: e.to_string() });
                    Duration::ZERO
                }
                None => Duration::ZERO,
            };
            let taken = queue.consume(linger, MAX_BATCH);
            for message in taken.iter() {
                match message {
                    Ok(m) => batch.push(view, &m),
                    Err(e) => events::emit(&events::KafkaIngestError { error: e.message }),
                }
            }
            drop(taken);
            // A send fails only when the apply thread is gone (it panicked): stop, the scope
            // passes the panic on.
            if batch.len > 0 && work.send(Work::Apply(batch)).is_err() {
                break;
            }
            if Instant::now() < next_sync {
                continue;
            }
            next_sync = Instant::now() + SYNC_INTERVAL;
            if work.send(Work::Sync(positions(consumer))).is_err() {
                break;
            }
        }
        // Dropping the sender ends the apply thread once it has applied what it was given.
        drop(work);
    });
}

/// Batches the apply thread may be behind the poll thread (each at most [`MAX_BATCH`] records):
/// the memory between the two is bounded, and a slow apply holds the poll loop back.
const APPLY_QUEUE: usize = 2;

/// What the poll thread hands the apply thread, in order.
enum Work {
    /// Records to apply.
    Apply(Batch),
    /// The consumer's positions once every record sent before is applied: shards move past
    /// transaction markers no record stands for.
    Sync(Vec<Position>),
}

/// Applies the poll thread's work in order until it hangs up; declares the view ready once every
/// shard reached its target, and logs the load's progress meanwhile.
fn apply_loop(todo: std::sync::mpsc::Receiver<Work>, view: &View, limits: &Limits) {
    let started = Instant::now();
    let mut last_log = (Instant::now(), 0u64);
    let mut applied: u64 = 0;
    let mut counters = Counters::default();
    for work in todo {
        let positions = match work {
            Work::Apply(mut batch) => {
                applied += batch.apply(limits, &mut counters) as u64;
                continue;
            }
            Work::Sync(positions) => positions,
        };
        for (topic, partition, position) in positions {
            if let Ok(t) = view.topic(&topic) {
                if let Some(shard) = t.shard(partition) {
                    if shard.advance_to(position) {
                        t.notify();
                    }
                }
            }
        }
        if !view.is_ready() {
            let caught_up = view.topics().all(|t| t.shards().iter().all(|s| s.load_progress().0));
            if caught_up {
                view.set_ready();
                info!(records = applied, elapsed = ?started.elapsed(), "view caught up with Kafka; serving snapshots");
            } else if last_log.0.elapsed() >= LOG_INTERVAL {
                let rate = (applied - last_log.1) as f64 / last_log.0.elapsed().as_secs_f64();
                info!(percent = view.load_percent(), records_per_sec = rate as u64, "loading the view");
                last_log = (Instant::now(), applied);
            }
        }
    }
}

/// Every `refresh`, picks up partitions added to the exposed topics (blocking requests, off the
/// poll loop). Tail buffers are trimmed to what Kafka retains by the shared watermark refresher.
async fn refresh_partitions(
    consumer: Arc<BaseConsumer>,
    view: Arc<View>,
    refresh: Duration,
    shutdown: CancellationToken,
) {
    let refresh_failed = |error: String| events::emit(&events::KafkaPartitionsRefreshError { error });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(refresh) => {}
        }
        let (consumer, view) = (consumer.clone(), view.clone());
        match tokio::task::spawn_blocking(move || add_new_partitions(&*consumer, &view, false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => refresh_failed(e.to_string()),
            Err(e) => refresh_failed(e.to_string()),
        }
    }
}

/// Adds a shard for every partition not yet in the view and assigns it to the consumer at its
/// earliest retained offset.
/// Every request is made before the view changes, so a failure leaves the view as it was and the
/// next attempt starts over. Blocking: metadata and watermark requests.
fn add_new_partitions<C: Consumer>(consumer: &C, view: &View, at_start: bool) -> Result<usize, Error> {
    let mut found = Vec::new();
    for topic in view.topics() {
        let Some(count) = partition_count(consumer, &topic.name)? else {
            if at_start {
                return Err(Error::kafka(format!(
                    "exposed topic '{}' does not exist in Kafka; create it or remove it from kafka.topics",
                    topic.name
                )));
            }
            continue;
        };
        found.extend((topic.partitions()..count).map(|partition| (topic.clone(), partition)));
    }
    if found.is_empty() {
        return Ok(0);
    }
    let partitions: Vec<_> = found.iter().map(|(t, p)| (t.name.clone(), *p)).collect();
    let found: Vec<_> =
        found.into_iter().zip(watermarks(consumer, &partitions)?).map(|((t, p), marks)| (t, p, marks)).collect();
    let added: Vec<_> = found.iter().map(|(t, p, marks)| (t.name.clone(), *p, marks.earliest)).collect();
    let assign = || consumer.incremental_assign(&assignment(&added)?).map_err(kafka_error);
    // At start nothing polls yet: assign first, so a failure leaves no shard behind for the next
    // attempt to skip. While running, the shards come first: the poll loop drops records of
    // partitions it has no shard for.
    if at_start {
        assign()?;
    }
    for (topic, partition, marks) in found {
        // A partition added while running is caught up from the start: its target is its start.
        let target = if at_start { marks.latest } else { marks.earliest };
        topic.add_shard(Arc::new(Shard::new(topic.name.clone(), partition, marks.earliest, target)));
    }
    if !at_start {
        assign()?;
        info!(partitions = ?added.iter().map(|(t, p, _)| format!("{t}/{p}")).collect::<Vec<_>>(), "new partitions picked up");
    }
    Ok(added.len())
}

/// The ingest counters of each partition (records, bytes), registered once: building the labels
/// per batch allocated on the apply thread's hot path.
#[derive(Default)]
struct Counters(std::collections::HashMap<(Arc<str>, i32), (metrics::Counter, metrics::Counter)>);

impl Counters {
    fn of(&mut self, topic: &Arc<str>, partition: i32) -> &(metrics::Counter, metrics::Counter) {
        self.0.entry((topic.clone(), partition)).or_insert_with(|| {
            let labels = [("topic", topic.to_string()), ("partition", partition.to_string())];
            (
                metrics::counter!("tributary_ingest_records_total", &labels),
                metrics::counter!("tributary_ingest_bytes_total", &labels),
            )
        })
    }
}

/// Consecutive records of one partition.
type Run = (Arc<TopicView>, Arc<Shard>, Vec<Record>);

/// Records taken from the consumer, in runs of one partition each, waiting to be applied.
#[derive(Default)]
struct Batch {
    runs: Vec<Run>,
    len: usize,
}

impl Batch {
    fn push<M: Message>(&mut self, view: &View, m: &M) {
        let same = self.runs.last().is_some_and(|(t, s, _)| *t.name == *m.topic() && s.partition == m.partition());
        if !same {
            let Ok(topic) = view.topic(m.topic()) else { return };
            let Some(shard) = topic.shard(m.partition()) else { return };
            self.runs.push((topic, shard, Vec::new()));
        }
        let (topic, _, records) = self.runs.last_mut().expect("a run");
        records.push(to_record(m, topic.name.clone()));
        self.len += 1;
    }

    /// Applies every run, then wakes each topic's subscribers once. Returns the records applied.
    fn apply(&mut self, limits: &Limits, counters: &mut Counters) -> usize {
        let mut woken: Vec<Arc<TopicView>> = Vec::new();
        for (topic, shard, records) in self.runs.drain(..) {
            let (count, size) = counters.of(&topic.name, shard.partition);
            count.increment(records.len() as u64);
            size.increment(records.iter().map(|r| r.data_bytes() as u64).sum());
            shard.apply_all(records, limits);
            if !woken.iter().any(|t| Arc::ptr_eq(t, &topic)) {
                woken.push(topic);
            }
        }
        for topic in woken {
            topic.notify();
        }
        std::mem::take(&mut self.len)
    }
}

/// Copies a Kafka message into the gateway's record: key, value and header values in one buffer.
pub(crate) fn to_record<M: Message>(m: &M, topic: Arc<str>) -> Record {
    // Once per record: librdkafka parses the headers (and allocates) on every call while a record
    // has none, which every Kafka v2 record without headers is.
    let headers: Vec<(&str, Option<&[u8]>)> =
        m.headers().map(|hs| hs.iter().map(|h| (h.key, h.value)).collect()).unwrap_or_default();
    let timestamp_ms = m.timestamp().to_millis().unwrap_or(-1);
    Record::new(topic, m.partition(), m.offset(), timestamp_ms, m.key(), m.payload(), &headers)
}

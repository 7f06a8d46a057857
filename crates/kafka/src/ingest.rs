//! The gateway's single Kafka consumer: it reads every partition of the exposed topics once and
//! applies each record to its shard, however many clients there are.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::{Headers, Message},
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tributary_core::{
    logging::ErrorLog,
    view::{Shard, TopicView, View},
    Error, Limits, Record,
};

use crate::{
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

/// The ingest consumer, assigned every partition of the exposed topics.
pub struct Ingest {
    consumer: Arc<BaseConsumer>,
    view: Arc<View>,
    limits: Limits,
    refresh: Duration,
}

impl Ingest {
    /// Builds the shards of every exposed topic and assigns them at their earliest offsets.
    ///
    /// Fails when Kafka cannot be reached or an exposed topic does not exist, so that a
    /// misconfigured gateway stops at start with a message instead of serving an empty view.
    pub async fn start(kafka: &KafkaConfig, limits: &Limits, view: Arc<View>) -> Result<Self, Error> {
        let consumer: Arc<BaseConsumer> =
            Arc::new(consumer_config(kafka, "ingest", &ingest_tuning()).create().map_err(kafka_error)?);
        let setup = {
            let (consumer, view) = (consumer.clone(), view.clone());
            tokio::task::spawn_blocking(move || add_new_partitions(&*consumer, &view, true))
        };
        setup.await.map_err(|e| Error::Internal(e.to_string()))??;
        info!(topics = ?view.topic_names(), "ingest assigned every partition of the exposed topics");
        Ok(Self { consumer, view, limits: limits.clone(), refresh: Duration::from_millis(kafka.metadata_refresh_ms) })
    }

    /// Applies records until `shutdown` is cancelled; also moves positions past transaction
    /// markers, declares the view ready, and picks up new partitions.
    ///
    /// The poll loop runs on a thread of its own (a blocking task), like a raw consumer: a tight
    /// `poll` loop with no async wake-up per message; new partitions are looked for beside it.
    pub async fn run(self, shutdown: CancellationToken) {
        let Self { consumer, view, limits, refresh } = self;
        // The poll loop is a thread: it must also stop when this future is dropped without a
        // shutdown (a runtime shutting down waits for its blocking threads).
        let shutdown = shutdown.child_token();
        let _stop_on_drop = shutdown.clone().drop_guard();
        let refresher = tokio::spawn(refresh_partitions(consumer.clone(), view.clone(), refresh, shutdown.clone()));
        let polling = tokio::task::spawn_blocking(move || poll_loop(&consumer, &view, &limits, &shutdown));
        if let Err(e) = polling.await {
            warn!(error = %e, "ingest poll loop ended abnormally");
        }
        let _ = refresher.await;
        info!("ingest stopped");
    }
}

/// The ingest loop: takes every record that is ready (up to [`MAX_BATCH`]) and applies each
/// partition's run under one shard lock with one wake-up per topic; every [`SYNC_INTERVAL`] moves
/// positions past transaction markers and checks readiness.
fn poll_loop(consumer: &BaseConsumer, view: &View, limits: &Limits, shutdown: &CancellationToken) {
    let started = Instant::now();
    let mut last_log = (Instant::now(), 0u64);
    let mut next_sync = Instant::now();
    let mut applied: u64 = 0;
    let mut errors = ErrorLog::default();
    let mut batch = Batch::default();
    while !shutdown.is_cancelled() {
        match consumer.poll(POLL_WAIT) {
            Some(Ok(m)) => batch.push(view, &m),
            Some(Err(e)) => errors.log(&e.to_string()),
            None => {}
        }
        while batch.len < MAX_BATCH {
            match consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => batch.push(view, &m),
                Some(Err(e)) => errors.log(&e.to_string()),
                None => break,
            }
        }
        applied += batch.apply(limits) as u64;
        if Instant::now() < next_sync {
            continue;
        }
        next_sync = Instant::now() + SYNC_INTERVAL;
        for (topic, partition, position) in positions(consumer) {
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

/// Every `refresh`, picks up partitions added to the exposed topics and trims tail buffers to
/// what Kafka still retains (blocking requests, off the poll loop).
async fn refresh_partitions(
    consumer: Arc<BaseConsumer>,
    view: Arc<View>,
    refresh: Duration,
    shutdown: CancellationToken,
) {
    let mut errors = ErrorLog::default();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(refresh) => {}
        }
        let (consumer, view) = (consumer.clone(), view.clone());
        match tokio::task::spawn_blocking(move || add_new_partitions(&*consumer, &view, false)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => errors.log(&e.to_string()),
            Err(e) => errors.log(&e.to_string()),
        }
    }
}

/// Adds a shard for every partition not yet in the view and assigns it to the consumer at its
/// earliest retained offset; on refreshes, also trims tail buffers to what Kafka still retains.
/// Blocking: metadata and watermark requests.
fn add_new_partitions<C: Consumer>(consumer: &C, view: &View, at_start: bool) -> Result<usize, Error> {
    let mut added = Vec::new();
    for topic in view.topics() {
        if !at_start {
            for shard in topic.shards() {
                shard.trim_below(watermarks(consumer, &topic.name, shard.partition)?.earliest);
            }
        }
        let Some(count) = partition_count(consumer, &topic.name)? else {
            if at_start {
                return Err(Error::kafka(format!(
                    "exposed topic '{}' does not exist in Kafka; create it or remove it from kafka.topics",
                    topic.name
                )));
            }
            continue;
        };
        for partition in topic.partitions()..count {
            let marks = watermarks(consumer, &topic.name, partition)?;
            // A partition added while running is caught up from the start: its target is its start.
            let target = if at_start { marks.latest } else { marks.earliest };
            topic.add_shard(Arc::new(Shard::new(topic.name.clone(), partition, marks.earliest, target)));
            added.push((topic.name.clone(), partition, marks.earliest));
        }
    }
    if !added.is_empty() {
        consumer.incremental_assign(&assignment(&added)?).map_err(kafka_error)?;
        if !at_start {
            info!(partitions = ?added.iter().map(|(t, p, _)| format!("{t}/{p}")).collect::<Vec<_>>(), "new partitions picked up");
        }
    }
    Ok(added.len())
}

/// Consecutive records of one partition.
type Run = (Arc<TopicView>, Arc<Shard>, Vec<Arc<Record>>);

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
        records.push(Arc::new(to_record(m, topic.name.clone())));
        self.len += 1;
    }

    /// Applies every run, then wakes each topic's subscribers once. Returns the records applied.
    fn apply(&mut self, limits: &Limits) -> usize {
        let mut woken: Vec<Arc<TopicView>> = Vec::new();
        for (topic, shard, records) in self.runs.drain(..) {
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

/// Copies a Kafka message into the gateway's record: key, value and header values share one
/// buffer.
pub(crate) fn to_record<M: Message>(m: &M, topic: Arc<str>) -> Record {
    let (key, value) = (m.key(), m.payload());
    let header_bytes: usize = m.headers().map_or(0, |hs| hs.iter().map(|h| h.value.map_or(0, <[u8]>::len)).sum());
    let mut buffer = Vec::with_capacity(key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len) + header_bytes);
    let mut slice = |bytes: &[u8]| {
        let start = buffer.len();
        buffer.extend_from_slice(bytes);
        start..buffer.len()
    };
    let key = key.map(&mut slice);
    let value = value.map(&mut slice);
    let headers: Vec<(String, Option<std::ops::Range<usize>>)> = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(&mut slice))).collect())
        .unwrap_or_default();
    let buffer = Bytes::from(buffer);
    Record {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        key: key.map(|r| buffer.slice(r)),
        value: value.map(|r| buffer.slice(r)),
        headers: headers.into_iter().map(|(k, v)| (k, v.map(|r| buffer.slice(r)))).collect(),
    }
}

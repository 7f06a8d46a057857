//! The gateway's single Kafka consumer: it reads every partition of the exposed topics once and
//! applies each record to its shard, however many clients there are.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{Consumer, StreamConsumer},
    message::{Headers, Message},
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

use crate::{
    config::Config,
    error::Error,
    kafka,
    view::{Rec, Shard, View},
};

/// How often positions are synced from the consumer and readiness is checked.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);
/// How often the initial load logs its progress.
const LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Builds the shards of every exposed topic and starts the ingest loop.
///
/// Fails when Kafka cannot be reached or an exposed topic does not exist, so that a
/// misconfigured gateway stops at start with a message instead of serving an empty view.
pub async fn start(config: &Config, view: Arc<View>, shutdown: watch::Receiver<bool>) -> Result<JoinHandle<()>, Error> {
    let kafka_config = config.kafka.clone();
    let consumer = kafka::ingest_consumer(&kafka_config)?;
    let consumer = Arc::new(consumer);
    let setup = {
        let (consumer, view) = (consumer.clone(), view.clone());
        tokio::task::spawn_blocking(move || add_new_partitions(&consumer, &view, true))
    };
    setup.await.map_err(|e| Error::Internal(e.to_string()))??;
    info!(topics = ?view.topic_names(), "ingest assigned every partition of the exposed topics");
    let limits = config.limits.clone();
    let refresh = Duration::from_millis(config.kafka.metadata_refresh_ms);
    Ok(tokio::spawn(run(consumer, view, limits, refresh, shutdown)))
}

/// Adds a shard for every partition not yet in the view and assigns it to the consumer at its
/// earliest retained offset; on refreshes, also trims tail buffers to what Kafka still retains.
/// Blocking: metadata and watermark requests.
fn add_new_partitions(consumer: &StreamConsumer, view: &View, at_start: bool) -> Result<usize, Error> {
    let mut added = Vec::new();
    for topic in view.topics() {
        if !at_start {
            for shard in topic.shards() {
                let (low, _) = kafka::watermarks(consumer, &topic.name, shard.partition)?;
                shard.trim_below(low);
            }
        }
        let Some(count) = kafka::partition_count(consumer, &topic.name)? else {
            if at_start {
                return Err(Error::Kafka {
                    message: format!(
                        "exposed topic '{}' does not exist in Kafka; create it or remove it from kafka.topics",
                        topic.name
                    ),
                    resume: Vec::new(),
                });
            }
            continue;
        };
        for partition in topic.partitions()..count {
            let (low, high) = kafka::watermarks(consumer, &topic.name, partition)?;
            // A partition added while running is caught up from the start: its target is its start.
            let target = if at_start { high } else { low };
            topic.add_shard(Arc::new(Shard::new(topic.name.clone(), partition, low, target)));
            added.push((topic.name.clone(), partition, low));
        }
    }
    if !added.is_empty() {
        let list = kafka::assignment(added.iter().map(|(t, p, o)| (&**t, *p, *o)))?;
        consumer.incremental_assign(&list).map_err(kafka::kafka_error)?;
        if !at_start {
            info!(partitions = ?added.iter().map(|(t, p, _)| format!("{t}/{p}")).collect::<Vec<_>>(), "new partitions picked up");
        }
    }
    Ok(added.len())
}

async fn run(
    consumer: Arc<StreamConsumer>,
    view: Arc<View>,
    limits: crate::config::Limits,
    refresh: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut sync = tokio::time::interval(SYNC_INTERVAL);
    let mut metadata = tokio::time::interval(refresh);
    metadata.reset();
    let started = Instant::now();
    let mut last_log = (Instant::now(), 0u64);
    let mut applied: u64 = 0;
    let mut errors = ErrorLog::default();
    let mut refreshing: Option<JoinHandle<Result<usize, Error>>> = None;
    loop {
        // Unbiased: under a flood of records the sync and metadata ticks still get their turn.
        tokio::select! {
            _ = shutdown.changed() => break,
            message = consumer.recv() => match message {
                Ok(m) => {
                    let Ok(topic) = view.topic(m.topic()) else { continue };
                    let Some(shard) = topic.shard(m.partition()) else { continue };
                    shard.apply(Arc::new(to_rec(&m, topic.name.clone())), &limits);
                    topic.notify();
                    applied += 1;
                }
                Err(e) => errors.log(&e.to_string()),
            },
            _ = sync.tick() => {
                for (topic, partition, position) in kafka::positions(&*consumer) {
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
            },
            _ = metadata.tick(), if refreshing.is_none() => {
                let (consumer, view) = (consumer.clone(), view.clone());
                refreshing = Some(tokio::task::spawn_blocking(move || add_new_partitions(&consumer, &view, false)));
            },
            done = async { refreshing.as_mut().expect("guarded").await }, if refreshing.is_some() => {
                refreshing = None;
                match done {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => errors.log(&e.to_string()),
                    Err(e) => errors.log(&e.to_string()),
                }
            },
        }
    }
    info!("ingest stopped");
}

/// Copies a Kafka message into the gateway's record.
pub fn to_rec<M: Message>(m: &M, topic: Arc<str>) -> Rec {
    let headers = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key.to_string(), h.value.map(bytes::Bytes::copy_from_slice))).collect())
        .unwrap_or_default();
    Rec {
        topic,
        partition: m.partition(),
        offset: m.offset(),
        timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        key: m.key().map(bytes::Bytes::copy_from_slice),
        value: m.payload().map(bytes::Bytes::copy_from_slice),
        headers,
    }
}

/// Logs a recurring error once, then a count at most every 10 s, so a broker outage does not
/// flood the log while the loop keeps going.
#[derive(Default)]
pub struct ErrorLog {
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl ErrorLog {
    pub fn log(&mut self, message: &str) {
        match &self.last {
            Some((m, at)) if m == message && at.elapsed() < Duration::from_secs(10) => self.suppressed += 1,
            _ => {
                warn!(error = message, repeated = self.suppressed, "kafka consumer error");
                self.last = Some((message.to_string(), Instant::now()));
                self.suppressed = 0;
            }
        }
    }
}

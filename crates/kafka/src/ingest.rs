//! The gateway's single Kafka consumer: it reads every partition of the exposed topics once and
//! applies each record to its shard, however many clients there are. With sharding, it reads
//! the partitions the group assigns this replica, and drops those it takes away.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rdkafka::{
    consumer::{BaseConsumer, Consumer},
    message::Message,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, Instrument};
use tributary_core::{
    decode::Decode,
    events,
    source::{Partition, Watermarks},
    view::{Shard, ShardImage, TopicView, View},
    Error, Limits, PartitionOffset, Record,
};

use crate::{
    batch::ConsumerQueue,
    group::Change,
    message::{to_record, to_record_with, value_of, Value},
    metadata::{assignment, partition_count, positions, watermarks},
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
    /// Partitions read back from a checkpoint, resumed at their offsets when still continuable.
    restored: Restored,
    /// Sharding: what this replica's group membership gives and takes. `None`: every partition.
    share: Option<mpsc::Receiver<Change>>,
    /// Schema decoding of the values of the topics configured for it.
    decoding: Decoding,
}

/// How ingest decodes values: through `decode`, a partition stopped at an undecodable value
/// (`on_error = fail`) trying it again every `retry`.
#[derive(Clone)]
struct Decoding {
    decode: Option<Arc<dyn Decode>>,
    retry: Duration,
}

/// Checkpointed partitions waiting for the start's assignment (which may take several attempts).
type Restored = Arc<Mutex<HashMap<Partition, ShardImage>>>;

/// First wait between attempts to reach Kafka at start; it doubles up to [`SETUP_BACKOFF_MAX`].
const SETUP_BACKOFF: Duration = Duration::from_millis(200);
const SETUP_BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Ingest {
    /// Creates the ingest consumer. Fails only on a configuration librdkafka rejects; reaching
    /// Kafka and finding the topics happens in [`Ingest::run`], which retries.
    pub fn new(kafka: &KafkaConfig, limits: &Limits, view: Arc<View>) -> Result<Self, Error> {
        let consumer: Arc<BaseConsumer> =
            Arc::new(consumer_config(kafka, "ingest", &ingest_tuning()).create().map_err(kafka_error)?);
        Ok(Self {
            consumer,
            view,
            limits: limits.clone(),
            refresh: Duration::from_millis(kafka.metadata_refresh_ms),
            restored: Restored::default(),
            share: None,
            decoding: Decoding { decode: None, retry: Duration::from_secs(5) },
        })
    }

    /// Decodes the values of the topics `decode` is configured for. A partition stopped at a
    /// value it cannot decode (its topic's `on_error` is `fail`) is paused there and tries the
    /// record again every `retry`: nothing after it is applied until it decodes.
    pub fn decoding(mut self, decode: Arc<dyn Decode>, retry: Duration) -> Self {
        self.decoding = Decoding { decode: Some(decode), retry };
        self
    }

    /// Holds only the partitions this replica's sharding membership assigns it (`changes`, from
    /// [`Membership::join`](crate::group::Membership::join)): each one assigned is loaded (from
    /// its checkpoint where Kafka can continue it, else from its earliest offset), each one
    /// revoked is dropped and the subscriptions reading it end. The view is ready once the first
    /// share has loaded.
    pub fn sharded(mut self, changes: mpsc::Receiver<Change>) -> Self {
        self.share = Some(changes);
        self
    }

    /// Starts the partitions in `images` (read from a checkpoint) from their state and offset
    /// instead of from the start, each one whose offset Kafka can still continue from (at or above
    /// the log start, at or below the end); every other is discarded loudly
    /// (`checkpoint_discarded`) and loaded from Kafka.
    pub fn resume_from(self, images: HashMap<Partition, ShardImage>) -> Self {
        *self.restored.lock().unwrap_or_else(|e| e.into_inner()) = images;
        self
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
        let Self { consumer, view, limits, refresh, restored, share, decoding } = self;
        view.await_share(share.is_some());
        if !assign_at_start(&consumer, &view, &restored, share.is_some(), &shutdown).await {
            return;
        }
        // The poll loop is a thread: it must also stop when this future is dropped without a
        // shutdown (a runtime shutting down waits for its blocking threads).
        let shutdown = shutdown.child_token();
        let _stop_on_drop = shutdown.clone().drop_guard();
        let refresher = match share {
            None => tokio::spawn(
                refresh_partitions(consumer.clone(), view.clone(), refresh, shutdown.clone()).in_current_span(),
            ),
            Some(changes) => {
                let share = Share { consumer: consumer.clone(), view: view.clone(), restored };
                tokio::spawn(share.follow(changes, refresh, shutdown.clone()).in_current_span())
            }
        };
        let span = tracing::Span::current();
        let polling = tokio::task::spawn_blocking(move || {
            span.in_scope(|| poll_loop(&consumer, &view, &limits, &decoding, &shutdown))
        });
        if let Err(e) = polling.await {
            events::emit(&events::IngestStoppedAbnormally { error: e.to_string() });
        }
        let _ = refresher.await;
        info!("ingest stopped");
    }
}

/// Assigns every exposed partition, retrying with backoff until it works; false on shutdown.
/// `sharded`: only learns how many partitions each exposed topic has; the membership assigns.
async fn assign_at_start(
    consumer: &Arc<BaseConsumer>,
    view: &Arc<View>,
    restored: &Restored,
    sharded: bool,
    shutdown: &CancellationToken,
) -> bool {
    let mut backoff = SETUP_BACKOFF;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let (c, v, r) = (consumer.clone(), view.clone(), restored.clone());
        let setup = tokio::task::spawn_blocking(move || match sharded {
            true => know_partitions(&*c, &v, true),
            false => add_partitions(&*c, &v, Some(&mut r.lock().unwrap_or_else(|e| e.into_inner()))),
        });
        let result = tokio::select! {
            r = setup => r.map_err(|e| Error::Internal(e.to_string())).and_then(|r| r),
            _ = shutdown.cancelled() => return false,
        };
        match result {
            Ok(_) => {
                view.set_assigned();
                match sharded {
                    true => {
                        info!(topics = ?view.topic_names(), attempt, "ingest found the exposed topics; it loads the partitions the sharding group assigns this replica")
                    }
                    false => {
                        info!(topics = ?view.topic_names(), attempt, "ingest assigned every partition of the exposed topics")
                    }
                }
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
fn poll_loop(consumer: &BaseConsumer, view: &View, limits: &Limits, decoding: &Decoding, shutdown: &CancellationToken) {
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
        let mut stopped = Stopped::default();
        while !shutdown.is_cancelled() {
            let mut batch = Batch { decode: decoding.decode.clone(), ..Batch::default() };
            // Wait for one message, then up to LINGER for a full batch (librdkafka's batch call
            // waits for a full batch or its timeout): records are late by at most LINGER, and
            // subscribers are woken at most once per LINGER while records trickle in.
            let linger = match consumer.poll(POLL_WAIT) {
                Some(Ok(m)) => {
                    batch.push(view, &m, &mut stopped);
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
                    Ok(m) => batch.push(view, &m, &mut stopped),
                    Err(e) => events::emit(&events::KafkaIngestError { error: e.message }),
                }
            }
            drop(taken);
            stopped.pause_new(consumer, decoding.retry);
            stopped.resume_due(consumer);
            // A send fails only when the apply thread is gone (it panicked): stop, the scope
            // passes the panic on.
            if batch.len > 0 && work.send(Work::Apply(batch)).is_err() {
                break;
            }
            if Instant::now() < next_sync {
                continue;
            }
            next_sync = Instant::now() + SYNC_INTERVAL;
            // Each position goes with the shard it was read for: a partition revoked and assigned
            // again before the apply thread gets to it has a new shard, starting over.
            let synced = positions(consumer)
                .into_iter()
                .map(|p| stopped.hold_back(p))
                .filter_map(|p| {
                    let topic = view.topic(&p.topic).ok()?;
                    let shard = topic.shard(p.partition)?;
                    Some((topic, shard, p.offset))
                })
                .collect();
            if work.send(Work::Sync(synced)).is_err() {
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
    Sync(Vec<(Arc<TopicView>, Arc<Shard>, i64)>),
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
        for (topic, shard, offset) in positions {
            if shard.advance_to(offset) {
                topic.notify();
            }
        }
        if !view.is_ready() {
            if view.caught_up() {
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

/// Sharding: learns how many partitions each exposed topic has, holding none of them (the
/// membership assigns them). At start a missing topic is an error; later it is looked for again.
/// Blocking: metadata requests.
fn know_partitions<C: Consumer>(consumer: &C, view: &View, at_start: bool) -> Result<usize, Error> {
    for topic in view.topics() {
        match partition_count(consumer, &topic.name)? {
            Some(count) => topic.extend_partitions(count),
            None if at_start => return Err(missing_topic(&topic.name)),
            None => {}
        }
    }
    Ok(0)
}

fn missing_topic(topic: &str) -> Error {
    Error::kafka(format!("exposed topic '{topic}' does not exist in Kafka; create it or remove it from kafka.topics"))
}

/// Sharding: what ingest holds follows what the group assigns this replica.
struct Share {
    consumer: Arc<BaseConsumer>,
    view: Arc<View>,
    restored: Restored,
}

impl Share {
    /// Applies the membership's changes until shutdown or the membership ends; every `refresh`
    /// it also learns of partitions added to the exposed topics (so a call on one is told who
    /// holds it rather than that it does not exist).
    async fn follow(self, mut changes: mpsc::Receiver<Change>, refresh: Duration, shutdown: CancellationToken) {
        let mut next_refresh = tokio::time::Instant::now() + refresh;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(next_refresh) => {
                    next_refresh = tokio::time::Instant::now() + refresh;
                    let (consumer, view) = (self.consumer.clone(), self.view.clone());
                    let known = tokio::task::spawn_blocking(move || know_partitions(&*consumer, &view, false)).await;
                    if let Some(error) = failure(known) {
                        events::emit(&events::KafkaPartitionsRefreshError { error });
                    }
                }
                change = changes.recv() => match change {
                    None => return,
                    Some(Change::Assigned(partitions)) => {
                        if !self.hold(partitions, &mut changes, &shutdown).await {
                            return;
                        }
                    }
                    Some(Change::Revoked { partitions, lost }) => self.release(&partitions, lost).await,
                    Some(Change::Error { message, fatal: false }) => {
                        events::emit(&events::ShardingError { error: message })
                    }
                    Some(Change::Error { message, fatal: true }) => {
                        events::emit(&events::ShardingMembershipEnded { error: message });
                        let held: Vec<Partition> =
                            self.view.topics().flat_map(|t| t.shards()).map(|s| (s.topic.clone(), s.partition)).collect();
                        self.release(&held, true).await;
                        // Holding nothing must not make it ready again.
                        self.view.await_share(true);
                        self.view.set_not_ready();
                        return;
                    }
                },
            }
        }
    }

    /// Loads `partitions`, retrying with backoff while Kafka does not answer. A revocation that
    /// arrives meanwhile is applied first (what it takes is not loaded); false on shutdown or
    /// when the membership ended.
    async fn hold(
        &self,
        mut partitions: Vec<Partition>,
        changes: &mut mpsc::Receiver<Change>,
        shutdown: &CancellationToken,
    ) -> bool {
        let mut backoff = SETUP_BACKOFF;
        loop {
            let (consumer, view, restored, ps) =
                (self.consumer.clone(), self.view.clone(), self.restored.clone(), partitions.clone());
            let held = tokio::task::spawn_blocking(move || {
                hold_partitions(&*consumer, &view, &ps, &mut restored.lock().unwrap_or_else(|e| e.into_inner()))
            })
            .await;
            let Some(error) = failure(held) else {
                self.view.await_share(false);
                return true;
            };
            let listed = partitions.iter().map(|(t, p)| format!("{t}/{p}")).collect::<Vec<_>>().join(", ");
            events::emit(&events::ShardingHoldRetry { error, partitions: listed });
            let until = tokio::time::Instant::now() + backoff;
            backoff = (backoff * 2).min(SETUP_BACKOFF_MAX);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return false,
                    _ = tokio::time::sleep_until(until) => break,
                    change = changes.recv() => match change {
                        None => return false,
                        Some(Change::Assigned(more)) => partitions.extend(more),
                        Some(Change::Revoked { partitions: taken, lost }) => {
                            partitions.retain(|p| !taken.contains(p));
                            self.release(&taken, lost).await;
                        }
                        Some(Change::Error { message, .. }) => events::emit(&events::ShardingError { error: message }),
                    },
                }
            }
            if partitions.is_empty() {
                return true;
            }
        }
    }

    /// Drops `partitions`' shards (their subscriptions end) and stops reading them.
    async fn release(&self, partitions: &[Partition], lost: bool) {
        let (consumer, view, ps) = (self.consumer.clone(), self.view.clone(), partitions.to_vec());
        let released = tokio::task::spawn_blocking(move || release_partitions(&*consumer, &view, &ps)).await;
        if let Some(error) = failure(released) {
            events::emit(&events::ShardingError { error });
        }
        let listed: Vec<String> = partitions.iter().map(|(t, p)| format!("{t}/{p}")).collect();
        info!(partitions = ?listed, lost, "partitions revoked from this replica; their subscriptions end");
    }
}

/// The error of a blocking task that failed or did not finish.
fn failure<T>(outcome: Result<Result<T, Error>, tokio::task::JoinError>) -> Option<String> {
    match outcome {
        Ok(Ok(_)) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// Sharding: holds `partitions` (assigned to this replica): a shard for each, from its checkpoint
/// in `images` where Kafka can continue it, else from its earliest offset, loading up to the end
/// offsets seen now; then assigns them to the consumer (after the shards: the poll loop drops
/// records of partitions it has no shard for). The offsets are asked for before the view changes;
/// when the assignment fails, a retry holds fresh shards in their place. Blocking: watermark
/// requests.
fn hold_partitions<C: Consumer>(
    consumer: &C,
    view: &View,
    partitions: &[Partition],
    images: &mut HashMap<Partition, ShardImage>,
) -> Result<usize, Error> {
    let partitions: Vec<Partition> = partitions.iter().filter(|(t, _)| view.topic(t).is_ok()).cloned().collect();
    if partitions.is_empty() {
        return Ok(0);
    }
    let marks = watermarks(consumer, &partitions)?;
    let mut added = Vec::with_capacity(partitions.len());
    let (mut resumed, mut records) = (0usize, 0usize);
    for ((topic, partition), marks) in partitions.iter().zip(marks) {
        let view_topic = view.topic(topic)?;
        let shard = shard_at_start(topic, *partition, &marks, images.remove(&(topic.clone(), *partition)));
        if let Some(at) = shard.restored_at() {
            resumed += 1;
            records += shard.keys();
            added.push(PartitionOffset::new(&**topic, *partition, at));
        } else {
            added.push(PartitionOffset::new(&**topic, *partition, shard.start()));
        }
        // The shard first: the poll loop drops records of partitions it has no shard for.
        view_topic.hold(Arc::new(shard));
    }
    consumer.incremental_assign(&assignment(&added)?).map_err(kafka_error)?;
    if resumed > 0 {
        info!(partitions = resumed, keys = records, "resumed from the checkpoint");
    }
    let listed: Vec<String> = added.iter().map(|p| format!("{}/{}@{}", p.topic, p.partition, p.offset)).collect();
    info!(partitions = ?listed, "partitions assigned to this replica; loading them");
    Ok(added.len())
}

/// Sharding: stops holding `partitions` here and unassigns those the consumer reads.
fn release_partitions<C: Consumer>(consumer: &C, view: &View, partitions: &[Partition]) -> Result<(), Error> {
    let mut released = Vec::new();
    for (topic, partition) in partitions {
        if let Some(shard) = view.topic(topic).ok().and_then(|t| t.release(*partition)) {
            released.push(shard.at(0));
        }
    }
    if released.is_empty() {
        return Ok(());
    }
    crate::memory::give_back();
    consumer.incremental_unassign(&assignment(&released)?).map_err(kafka_error)
}

/// The shard of a partition ingest starts now, loading up to `marks.latest`: from `image` (its
/// checkpoint) when Kafka can continue it (else the checkpoint is reported and discarded), else
/// from its earliest offset.
fn shard_at_start(topic: &Arc<str>, partition: i32, marks: &Watermarks, image: Option<ShardImage>) -> Shard {
    match image.map(|image| (continuable(image.next_offset, marks), image)) {
        Some((Ok(()), image)) => Shard::restored(topic.clone(), partition, image, marks.latest),
        Some((Err(reason), image)) => {
            discarded(topic, partition, image.next_offset, reason);
            Shard::new(topic.clone(), partition, marks.earliest, marks.latest)
        }
        None => Shard::new(topic.clone(), partition, marks.earliest, marks.latest),
    }
}

/// Adds a shard for every partition not yet in the view and assigns it to the consumer at its
/// earliest retained offset.
/// Every request is made before the view changes, so a failure leaves the view as it was and the
/// next attempt starts over. Blocking: metadata and watermark requests.
fn add_new_partitions<C: Consumer>(consumer: &C, view: &View, at_start: bool) -> Result<usize, Error> {
    let mut none = HashMap::new();
    add_partitions(consumer, view, at_start.then_some(&mut none))
}

/// [`add_new_partitions`]; `at_start` holds the checkpointed partitions: each one that can be
/// continued starts from its image at its offset (and is taken out), the others are reported and
/// loaded from Kafka. Once the start succeeded, it is empty.
fn add_partitions<C: Consumer>(
    consumer: &C,
    view: &View,
    mut at_start: Option<&mut HashMap<Partition, ShardImage>>,
) -> Result<usize, Error> {
    let start = at_start.is_some();
    let mut found = Vec::new();
    for topic in view.topics() {
        let Some(count) = partition_count(consumer, &topic.name)? else {
            if start {
                return Err(missing_topic(&topic.name));
            }
            continue;
        };
        found.extend((topic.partitions()..count).map(|partition| (topic.clone(), partition)));
    }
    if found.is_empty() {
        discard_the_rest(at_start.as_deref_mut());
        return Ok(0);
    }
    let partitions: Vec<_> = found.iter().map(|(t, p)| (t.name.clone(), *p)).collect();
    let found: Vec<_> =
        found.into_iter().zip(watermarks(consumer, &partitions)?).map(|((t, p), marks)| (t, p, marks)).collect();
    // Where each partition starts: its checkpoint's offset when it can be continued, else its
    // earliest. Decided before anything changes; reported once the start has succeeded.
    let resumable = |topic: &Arc<TopicView>, partition: i32, marks: &Watermarks| {
        let image = at_start.as_deref()?.get(&(topic.name.clone(), partition))?;
        continuable(image.next_offset, marks).is_ok().then_some(image.next_offset)
    };
    let added: Vec<_> = found
        .iter()
        .map(|(t, p, marks)| PartitionOffset::new(&*t.name, *p, resumable(t, *p, marks).unwrap_or(marks.earliest)))
        .collect();
    let assign = || consumer.incremental_assign(&assignment(&added)?).map_err(kafka_error);
    // At start nothing polls yet: assign first, so a failure leaves no shard behind for the next
    // attempt to skip. While running, the shards come first: the poll loop drops records of
    // partitions it has no shard for.
    if start {
        assign()?;
    }
    let (mut resumed, mut records) = (0usize, 0usize);
    for (topic, partition, marks) in found {
        let shard = match at_start.as_deref_mut() {
            Some(images) => {
                let shard =
                    shard_at_start(&topic.name, partition, &marks, images.remove(&(topic.name.clone(), partition)));
                if shard.restored_at().is_some() {
                    resumed += 1;
                    records += shard.keys();
                }
                shard
            }
            // A partition added while running is caught up from the start: its target is its start.
            None => Shard::new(topic.name.clone(), partition, marks.earliest, marks.earliest),
        };
        topic.add_shard(Arc::new(shard));
    }
    discard_the_rest(at_start);
    if resumed > 0 {
        info!(partitions = resumed, keys = records, "resumed from the checkpoint");
    }
    if !start {
        assign()?;
        info!(partitions = ?added.iter().map(|p| format!("{}/{}", p.topic, p.partition)).collect::<Vec<_>>(), "new partitions picked up");
    }
    Ok(added.len())
}

/// Whether ingest can continue a partition from a checkpoint at `offset`: Kafka still has every
/// record after it (retention has not passed it) and has not fewer records than it (the topic was
/// not recreated or truncated below it). A topic recreated and refilled past the offset is not
/// detected: rdkafka does not expose topic ids.
fn continuable(offset: i64, marks: &Watermarks) -> Result<(), String> {
    if offset < marks.earliest {
        return Err(format!(
            "its offset is below the log start ({}): Kafka no longer has the records after it",
            marks.earliest
        ));
    }
    if offset > marks.latest {
        return Err(format!("its offset is past the end ({}): the topic was recreated or truncated", marks.latest));
    }
    Ok(())
}

fn discarded(topic: &str, partition: i32, offset: i64, reason: String) {
    events::emit(&events::CheckpointDiscarded { partition: format!("{topic}/{partition}"), offset, reason });
}

/// Reports the checkpointed partitions that no longer exist in Kafka (once the start succeeded).
fn discard_the_rest(images: Option<&mut HashMap<Partition, ShardImage>>) {
    for ((topic, partition), image) in images.into_iter().flat_map(|images| images.drain()) {
        discarded(&topic, partition, image.next_offset, "the partition no longer exists in Kafka".into());
    }
}

/// The ingest counters of each partition (records, bytes), registered once: building the labels
/// per batch allocated on the apply thread's hot path.
#[derive(Default)]
struct Counters(std::collections::HashMap<Partition, (metrics::Counter, metrics::Counter)>);

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

/// Partitions whose ingest waits at a value it cannot decode (`on_error = fail`): nothing of
/// theirs from it on is applied, and their positions are held back to it, until it decodes.
#[derive(Default)]
struct Stopped {
    /// Per partition: the offset of the record it waits at, and how it waits.
    at: HashMap<(String, i32), (i64, Wait)>,
}

#[derive(Clone, Copy)]
enum Wait {
    /// Stopped in the batch being read: to be paused.
    New,
    /// Paused and moved back to the record, until this instant.
    Paused(Instant),
    /// Resumed: the record is read again next.
    Resumed,
}

impl Stopped {
    /// Whether `m` is not to be applied: it comes after the record its partition waits at (or is
    /// that record, read before the partition is resumed).
    fn holds<M: Message>(&self, m: &M) -> bool {
        if self.at.is_empty() {
            return false;
        }
        self.at.get(&(m.topic().to_string(), m.partition())).is_some_and(|&(offset, wait)| {
            m.offset() > offset || (m.offset() == offset && matches!(wait, Wait::Paused(_)))
        })
    }

    /// Stops `m`'s partition at `m`.
    fn stop<M: Message>(&mut self, m: &M) {
        self.at.insert((m.topic().to_string(), m.partition()), (m.offset(), Wait::New));
    }

    /// `m` was applied: a partition waiting at it goes on.
    fn passed<M: Message>(&mut self, m: &M) {
        if !self.at.is_empty() {
            self.at.remove(&(m.topic().to_string(), m.partition()));
        }
    }

    /// Pauses the partitions stopped since the last call and moves each back to the record it
    /// waits at (what librdkafka fetched beyond it is dropped), to be tried again after `retry`.
    fn pause_new(&mut self, consumer: &BaseConsumer, retry: Duration) {
        for ((topic, partition), (offset, wait)) in &mut self.at {
            if !matches!(wait, Wait::New) {
                continue;
            }
            let moved = assignment(&[PartitionOffset::new(topic.as_str(), *partition, *offset)]).and_then(|list| {
                consumer.pause(&list).map_err(kafka_error)?;
                consumer.seek_partitions(list, SEEK_TIMEOUT).map(drop).map_err(kafka_error)
            });
            if let Err(e) = moved {
                events::emit(&events::KafkaIngestError { error: format!("pausing {topic}/{partition}: {e}") });
            }
            *wait = Wait::Paused(Instant::now() + retry);
        }
    }

    /// Resumes the paused partitions whose retry is due: each reads the record it waits at again
    /// (and stops at it again if it still cannot be decoded).
    fn resume_due(&mut self, consumer: &BaseConsumer) {
        let now = Instant::now();
        for ((topic, partition), (offset, wait)) in &mut self.at {
            if !matches!(wait, Wait::Paused(at) if *at <= now) {
                continue;
            }
            let resumed = assignment(&[PartitionOffset::new(topic.as_str(), *partition, *offset)])
                .and_then(|list| consumer.resume(&list).map_err(kafka_error));
            if let Err(e) = resumed {
                events::emit(&events::KafkaIngestError { error: format!("resuming {topic}/{partition}: {e}") });
            }
            *wait = Wait::Resumed;
        }
    }

    /// `p` no further than the record its partition waits at.
    fn hold_back(&self, mut p: PartitionOffset) -> PartitionOffset {
        if let Some((offset, _)) = self.at.get(&(p.topic.clone(), p.partition)) {
            p.offset = p.offset.min(*offset);
        }
        p
    }
}

/// How long moving a stopped partition back to its record may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(5);

/// Consecutive records of one partition.
type Run = (Arc<TopicView>, Arc<Shard>, Vec<Record>);

/// Records taken from the consumer, in runs of one partition each, waiting to be applied.
#[derive(Default)]
struct Batch {
    runs: Vec<Run>,
    len: usize,
    decode: Option<Arc<dyn Decode>>,
}

impl Batch {
    fn push<M: Message>(&mut self, view: &View, m: &M, stopped: &mut Stopped) {
        if stopped.holds(m) {
            return;
        }
        let same = self.runs.last().is_some_and(|(t, s, _)| *t.name == *m.topic() && s.partition == m.partition());
        if !same {
            let Ok(topic) = view.topic(m.topic()) else { return };
            let Some(shard) = topic.shard(m.partition()) else { return };
            self.runs.push((topic, shard, Vec::new()));
        }
        let record = match value_of(self.decode.as_deref(), m) {
            Value::AsIs => None,
            Value::Decoded(json) => Some(json),
            Value::Skip => return,
            Value::Fail(_) => return stopped.stop(m),
        };
        stopped.passed(m);
        let (topic, _, records) = self.runs.last_mut().expect("a run");
        records.push(match record {
            Some(json) => to_record_with(m, topic.name.clone(), &json),
            None => to_record(m, topic.name.clone()),
        });
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metadata::offsets_of, testing};

    fn consumer() -> BaseConsumer {
        consumer_config(&testing::config(), "ingest", &ingest_tuning()).create().unwrap()
    }

    /// Runs ingest of `topic` with the stub decoder until `done` says the view is as expected;
    /// returns the view then. Panics after 30 s.
    async fn ingest_until(
        topic: &str,
        decode: Arc<testing::StubDecode>,
        mut done: impl FnMut(&Shard) -> bool,
        mut meanwhile: impl FnMut(&Shard, Duration),
    ) -> Arc<View> {
        let view = Arc::new(View::new(&[topic.to_string()]));
        let ingest = Ingest::new(&testing::config(), &Limits::default(), view.clone())
            .unwrap()
            .decoding(decode, Duration::from_millis(300));
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(ingest.run(shutdown.clone()));
        let started = Instant::now();
        loop {
            let shard = view.topic(topic).unwrap().shard(0);
            if let Some(shard) = shard {
                if done(&shard) {
                    break;
                }
                meanwhile(&shard, started.elapsed());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "ingest did not get there in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        running.await.unwrap();
        view
    }

    fn values(shard: &Shard) -> Vec<(String, Option<String>)> {
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        shard.snapshot().0.iter().map(|k| (text(k.0.key()).unwrap(), text(k.0.value()))).collect()
    }

    #[tokio::test]
    async fn ingest_applies_decoded_values_and_moves_past_those_its_topic_skips() {
        let topic = testing::topic("decode-skip", 1);
        testing::write(
            &topic,
            0,
            &[
                (Some(b"a"), Some(b"ok:1"), &[], 0),
                (Some(b"b"), Some(b"bad"), &[], 0),
                (Some(b"c"), Some(b"ok:3"), &[], 0),
            ],
        );
        let decode = testing::StubDecode::new(tributary_core::decode::OnError::Skip);
        let view = ingest_until(&topic, decode, |s| s.next_offset() == 3, |_, _| {}).await;
        let shard = view.topic(&topic).unwrap().shard(0).unwrap();
        let expected = vec![("a".into(), Some(r#"{"v":"1"}"#.into())), ("c".into(), Some(r#"{"v":"3"}"#.into()))];
        assert_eq!(values(&shard), expected);
    }

    #[tokio::test]
    async fn ingest_waits_at_a_value_its_topic_must_not_skip_and_goes_on_once_it_decodes() {
        let topic = testing::topic("decode-fail", 1);
        let mut written: Vec<testing::Write<'_>> =
            vec![(Some(b"a"), Some(b"ok:1"), &[], 0), (Some(b"b"), Some(b"bad"), &[], 0)];
        // More than one batch after it: nothing of them is applied while it waits.
        let keys: Vec<String> = (0..5000).map(|i| format!("k{i}")).collect();
        written.extend(keys.iter().map(|k| (Some(k.as_bytes()), Some(&b"ok:x"[..]), &[][..], 0)));
        testing::write(&topic, 0, &written);
        let decode = testing::StubDecode::new(tributary_core::decode::OnError::Fail);
        let healer = decode.clone();
        let mut waited = false;
        let view = ingest_until(
            &topic,
            decode,
            |s| s.next_offset() == 5002,
            |shard, elapsed| {
                if elapsed < Duration::from_secs(2) {
                    // Several retries (every 300 ms): still at the record, the state exact there.
                    assert!(shard.next_offset() <= 1, "ingest passed the record it must wait at");
                    assert!(shard.keys() <= 1);
                    waited |= shard.next_offset() == 1;
                } else {
                    assert!(waited, "ingest reached the record");
                    healer.healed.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            },
        )
        .await;
        let shard = view.topic(&topic).unwrap().shard(0).unwrap();
        let state = values(&shard);
        assert_eq!(state.len(), 5002, "nothing lost");
        assert!(state.contains(&("b".into(), Some(r#"{"v":"healed"}"#.into()))));
    }

    #[test]
    fn at_start_a_missing_exposed_topic_is_an_error_naming_it() {
        let missing = testing::unique("missing");
        let view = View::new(std::slice::from_ref(&missing));
        let err = add_new_partitions(&consumer(), &view, true).unwrap_err();
        assert!(err.to_string().contains(&format!("exposed topic '{missing}' does not exist")), "{err}");
        assert_eq!(view.topic(&missing).unwrap().partitions(), 0, "a failed attempt leaves the view as it was");
        // While running, a topic that went missing is looked for again later.
        assert_eq!(add_new_partitions(&consumer(), &view, false).unwrap(), 0);
    }

    #[test]
    fn every_partition_is_assigned_at_its_earliest_offset_and_loaded_up_to_its_latest() {
        let topic = testing::topic("ingest", 3);
        testing::write_n(&topic, 0, 5);
        testing::write_n(&topic, 1, 8);
        testing::delete_below(&topic, 1, 3);
        let (view, consumer) = (View::new(std::slice::from_ref(&topic)), consumer());
        assert_eq!(add_new_partitions(&consumer, &view, true).unwrap(), 3);
        let shards = view.topic(&topic).unwrap().shards();
        let loads: Vec<_> = shards.iter().map(|s| (s.partition, s.start(), s.load_progress())).collect();
        assert_eq!(loads, vec![(0, 0, (false, 5, 0)), (1, 3, (false, 5, 0)), (2, 0, (true, 0, 0))]);
        let assigned = offsets_of(&consumer.assignment().unwrap());
        let expected: Vec<_> = [(0, 0), (1, 3), (2, 0)].map(|(p, o)| PartitionOffset::new(&topic, p, o)).to_vec();
        assert_eq!(assigned, expected);
        assert_eq!(add_new_partitions(&consumer, &view, false).unwrap(), 0, "nothing new");
    }

    #[test]
    fn sharded_ingest_holds_the_partitions_it_is_given_and_drops_those_taken() {
        let topic = testing::topic("share", 3);
        testing::write_n(&topic, 0, 4);
        testing::write_n(&topic, 2, 6);
        let name: Arc<str> = topic.as_str().into();
        let (view, consumer) = (View::new(std::slice::from_ref(&topic)), consumer());
        assert_eq!(know_partitions(&consumer, &view, true).unwrap(), 0);
        let t = view.topic(&topic).unwrap();
        assert_eq!((t.partitions(), t.shards().len()), (3, 0), "known, none held");
        let image = ShardImage {
            map: [tributary_core::view::Keyed(Record::new(
                name.clone(),
                2,
                1,
                0,
                Some(b"k".as_slice()),
                Some(b"v".as_slice()),
                &[],
            ))]
            .into_iter()
            .collect(),
            next_offset: 2,
            last_timestamp_ms: 0,
        };
        let mut images: HashMap<Partition, ShardImage> = [((name.clone(), 2), image)].into();
        let given = [(name.clone(), 0), (name.clone(), 2)];
        assert_eq!(hold_partitions(&consumer, &view, &given, &mut images).unwrap(), 2);
        assert!(images.is_empty(), "the checkpoint of a partition held is used");
        let loads: Vec<_> =
            t.shards().iter().map(|s| (s.partition, s.start(), s.restored_at(), s.load_progress())).collect();
        assert_eq!(loads, vec![(0, 0, None, (false, 4, 0)), (2, 2, Some(2), (false, 4, 0))], "loaded up to the end");
        assert!(t.shard(1).is_none());
        let assigned = offsets_of(&consumer.assignment().unwrap());
        assert_eq!(assigned, vec![PartitionOffset::new(&topic, 0, 0), PartitionOffset::new(&topic, 2, 2)]);

        let held = t.shard(0).unwrap();
        release_partitions(&consumer, &view, &[(name.clone(), 0), (name.clone(), 1)]).unwrap();
        assert!(held.is_released() && t.shard(0).is_none());
        assert_eq!(offsets_of(&consumer.assignment().unwrap()), vec![PartitionOffset::new(&topic, 2, 2)]);
        assert_eq!(t.partitions(), 3, "a partition taken is still known");
    }

    #[test]
    fn a_checkpointed_partition_resumes_at_its_offset_only_where_kafka_can_continue_it() {
        let topic = testing::topic("resume", 3);
        testing::write_n(&topic, 0, 5);
        testing::write_n(&topic, 1, 8);
        testing::delete_below(&topic, 1, 3);
        testing::write_n(&topic, 2, 2);
        let name: Arc<str> = topic.as_str().into();
        let image = |next_offset: i64, keys: &[&str]| {
            let map = keys
                .iter()
                .map(|k| {
                    let record = Record::new(name.clone(), 0, 0, 0, Some(k.as_bytes()), Some(b"v"), &[]);
                    tributary_core::view::Keyed(record)
                })
                .collect();
            ShardImage { map, next_offset, last_timestamp_ms: 0 }
        };
        let mut images: HashMap<Partition, ShardImage> = [
            ((name.clone(), 0), image(3, &["a", "b"])),
            ((name.clone(), 1), image(1, &["c"])),
            ((name.clone(), 2), image(9, &["d"])),
            ((name.clone(), 7), image(1, &["e"])),
        ]
        .into();
        let (view, consumer) = (View::new(std::slice::from_ref(&topic)), consumer());
        assert_eq!(add_partitions(&consumer, &view, Some(&mut images)).unwrap(), 3);
        assert!(images.is_empty(), "every checkpointed partition was used or discarded");
        let shards = view.topic(&topic).unwrap().shards();
        let loads: Vec<_> = shards.iter().map(|s| (s.restored_at(), s.start(), s.keys(), s.load_progress())).collect();
        assert_eq!(
            loads,
            vec![
                (Some(3), 3, 2, (false, 2, 0)),
                (None, 3, 0, (false, 5, 0)), // below the log start
                (None, 0, 0, (false, 2, 0)), // past the end
            ]
        );
        let assigned = offsets_of(&consumer.assignment().unwrap());
        let expected: Vec<_> = [(0, 3), (1, 3), (2, 0)].map(|(p, o)| PartitionOffset::new(&topic, p, o)).to_vec();
        assert_eq!(assigned, expected);
    }
}

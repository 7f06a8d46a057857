//! The follow helper: A's state, then every change after it, across restarts of either side
//! (`clients/FOLLOW.md` is the algorithm every client shares).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use rand::Rng;
use tonic::{Code, Streaming};

use crate::{
    pb::{self, subscribe_response::Message},
    BoxError, Client, Error, Position, Store,
};

/// One snapshot entry or streamed record, in one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch (-1 when unknown).
    pub timestamp_ms: i64,
    /// Absent for a keyless record.
    pub key: Option<Bytes>,
    /// Absent for a tombstone: delete the key.
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
    /// With a translator: which output of the source record this is.
    pub output_index: u32,
    /// Whether this is an entry of a snapshot (else a record that followed one).
    pub snapshot: bool,
}

/// The application: what it does with A's state and changes.
pub trait Handler: Send {
    /// Forget all state: a snapshot follows.
    fn reset(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send;
    /// Apply these changes in order. `position` is where the follow stands once they are applied;
    /// `None` while a snapshot is still arriving. Write it in the same transaction as the changes
    /// to apply each change exactly once across crashes.
    fn apply(
        &mut self,
        changes: &[Change],
        position: Option<&Position>,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Jittered exponential backoff between reconnection attempts ("full jitter": a uniformly random
/// wait up to the current ceiling, which grows from `initial` by `multiplier` up to `max`).
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(10), multiplier: 2.0 }
    }
}

impl Backoff {
    /// The next wait: uniformly random up to the ceiling `delay`, which then grows.
    pub(crate) fn next_wait(&self, delay: &mut Duration) -> Duration {
        let wait = delay.mul_f64(rand::rng().random_range(0.0..=1.0));
        *delay = delay.mul_f64(self.multiplier).clamp(self.initial, self.max);
        wait
    }
}

/// Told about an error the follow recovers from.
pub type OnError = Arc<dyn Fn(&Error) + Send + Sync>;

/// What to follow and how.
#[derive(Clone)]
pub struct FollowOptions {
    pub topics: Vec<String>,
    pub translator: Option<pb::TranslatorRef>,
    pub key_filter: Option<pb::KeyFilter>,
    /// Conditions on headers and JSON fields, for the snapshot and the stream alike; set
    /// `tombstone_mismatches` to keep the handler's model at exactly the selection (see the
    /// gateway's contract, "Selecting records").
    pub record_filter: Option<pb::RecordFilter>,
    /// While the handler falls behind, the gateway sends only the latest record per key (see
    /// the gateway's contract, "Conflation"); the position still resumes exactly.
    pub conflate: bool,
    /// A durable subscription: the position is also committed to the gateway under this name, and
    /// with an empty store the follow resumes from the committed position.
    pub subscription_name: Option<String>,
    /// 0 takes the gateway's default.
    pub max_batch_records: u32,
    /// Commits of a named subscription happen at most this often (and once more at stop).
    pub commit_interval: Duration,
    pub backoff: Backoff,
    /// Told about every error the follow recovers from (reconnections, failed commits).
    pub on_error: Option<OnError>,
}

impl FollowOptions {
    pub fn new<T: Into<String>>(topics: impl IntoIterator<Item = T>) -> Self {
        FollowOptions {
            topics: topics.into_iter().map(Into::into).collect(),
            translator: None,
            key_filter: None,
            record_filter: None,
            conflate: false,
            subscription_name: None,
            max_batch_records: 0,
            commit_interval: Duration::from_secs(1),
            backoff: Backoff::default(),
            on_error: None,
        }
    }

    pub fn translator(mut self, name: impl Into<String>, config: impl Into<String>) -> Self {
        self.translator = Some(pb::TranslatorRef { name: name.into(), config: config.into(), ..Default::default() });
        self
    }

    /// Follows only the records that meet `filter` (sets the field `record_filter`).
    pub fn record_filter(mut self, filter: pb::RecordFilter) -> Self {
        self.record_filter = Some(filter);
        self
    }

    /// Follows the latest record per key while the handler falls behind (sets the field
    /// `conflate`).
    pub fn conflate(mut self) -> Self {
        self.conflate = true;
        self
    }

    pub fn max_batch(mut self, records: u32) -> Self {
        self.max_batch_records = records;
        self
    }

    pub fn subscription(mut self, name: impl Into<String>) -> Self {
        self.subscription_name = Some(name.into());
        self
    }
}

/// Why a follow stopped before it was asked to.
#[derive(Debug, thiserror::Error)]
pub enum FollowError {
    /// The gateway refused what was asked (bad request, permission, translator failure, a
    /// subscription taken over by another follower): retrying would not help.
    #[error("the gateway refused the follow: {0}")]
    Gateway(#[from] Error),
    #[error("the handler failed: {0}")]
    Handler(BoxError),
    #[error("the position store failed: {0}")]
    Store(BoxError),
}

/// Follows `options.topics` until `stop` completes (then the last position is saved and committed
/// and `Ok(())` is returned) or a failure retrying cannot fix.
///
/// With no saved position: a snapshot (`reset`, then `apply` per chunk), then every change after
/// its offsets. With one: every change after it. `OUT_OF_RANGE` (the position is older than what
/// Kafka retains) clears the store and takes a new snapshot; an unavailable gateway, a dropped
/// connection or an aborted stream are retried with jittered exponential backoff from the last
/// saved position.
pub async fn follow<H: Handler, S: Store>(
    client: &Client,
    options: FollowOptions,
    handler: &mut H,
    store: &mut S,
    stop: impl Future,
) -> Result<(), FollowError> {
    let stop = std::pin::pin!(stop);
    let mut follow = Follow::new(client.clone(), options, handler, store, stop).await?;
    follow.run_to_end().await
}

/// How one attempt ended.
pub(crate) enum Ended {
    /// `stop` completed.
    Stopped,
    /// The stream ended without a status: reconnect.
    Dropped,
}

pub(crate) struct Follow<'a, H, S, F> {
    pub(crate) client: Client,
    pub(crate) options: FollowOptions,
    pub(crate) handler: &'a mut H,
    pub(crate) store: &'a mut S,
    pub(crate) stop: Pin<&'a mut F>,
    pub(crate) position: Option<Position>,
    committed: Option<Position>,
    last_commit: Option<Instant>,
    pub(crate) delay: Duration,
    /// After `OUT_OF_RANGE`: take a snapshot rather than resume a name.
    snapshot_next: bool,
}

impl<'a, H: Handler, S: Store, F: Future> Follow<'a, H, S, F> {
    pub(crate) async fn new(
        client: Client,
        options: FollowOptions,
        handler: &'a mut H,
        store: &'a mut S,
        stop: Pin<&'a mut F>,
    ) -> Result<Self, FollowError> {
        Ok(Follow {
            position: store.load().await.map_err(FollowError::Store)?,
            delay: options.backoff.initial,
            client,
            options,
            handler,
            store,
            stop,
            committed: None,
            last_commit: None,
            snapshot_next: false,
        })
    }

    /// Follows until stopped; the last position is committed when the follow stops cleanly.
    pub(crate) async fn run_to_end(&mut self) -> Result<(), FollowError> {
        let result = self.run().await;
        if result.is_ok() {
            self.commit(true).await;
        }
        result
    }

    async fn run(&mut self) -> Result<(), FollowError> {
        loop {
            let error = match self.attempt().await {
                Ok(Ended::Stopped) => return Ok(()),
                Ok(Ended::Dropped) => Error::local(Code::Unavailable, "the stream ended without a status".into()),
                Err(FollowError::Gateway(e)) => e,
                Err(other) => return Err(other),
            };
            if error.code == Code::OutOfRange {
                // The position cannot be continued: a new snapshot replaces the state.
                self.store.clear().await.map_err(FollowError::Store)?;
                self.position = None;
                self.committed = None;
                // Not the name's committed position either: retention may have passed it too.
                self.snapshot_next = true;
            } else if !retryable(&error) {
                return Err(FollowError::Gateway(error));
            }
            self.report(&error);
            if self.sleep().await {
                return Ok(());
            }
        }
    }

    /// One connection's worth of following: a snapshot if needed, then a subscription.
    async fn attempt(&mut self) -> Result<Ended, FollowError> {
        let mut resumed = None;
        if self.position.is_none() {
            let by_name = self.options.subscription_name.clone().filter(|_| !self.snapshot_next);
            if let Some(name) = by_name {
                match self.open(None, &name).await {
                    Ok(stream) => resumed = Some(stream),
                    Err(e) if never_committed(&e) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if resumed.is_none() {
                if let Ended::Stopped = self.snapshot().await? {
                    return Ok(Ended::Stopped);
                }
            }
        }
        let stream = match resumed {
            Some(stream) => stream,
            None => {
                let from = self.position.clone().unwrap_or_default();
                let name = self.options.subscription_name.clone().unwrap_or_default();
                self.open(Some(&from), &name).await?
            }
        };
        self.stream(stream).await
    }

    async fn open(&mut self, from: Option<&Position>, name: &str) -> Result<Streaming<pb::SubscribeResponse>, Error> {
        let request = pb::SubscribeRequest {
            topics: self.options.topics.clone(),
            from_offsets: from.map(Position::to_offsets).unwrap_or_default(),
            key_filter: self.options.key_filter.clone(),
            record_filter: self.options.record_filter.clone(),
            conflate: self.options.conflate,
            max_batch_records: self.options.max_batch_records,
            translator: self.options.translator.clone(),
            subscription_name: name.to_string(),
            ..Default::default()
        };
        let mut gateway = self.client.gateway.clone();
        Ok(gateway.subscribe(request).await?.into_inner())
    }

    /// Takes a snapshot into the handler; once it is complete (`Ended::Dropped`: go on with a
    /// subscription) the position is its offsets.
    async fn snapshot(&mut self) -> Result<Ended, FollowError> {
        let client = self.client.clone();
        let Some(position) = self.read_snapshot(&client, true).await? else { return Ok(Ended::Stopped) };
        self.store.save(&position).await.map_err(FollowError::Store)?;
        self.position = Some(position);
        self.snapshot_next = false;
        Ok(Ended::Dropped)
    }

    /// Reads one gateway's snapshot into the handler (after `reset` and `store.clear()` before its
    /// first chunk when `reset`): its offsets once its last chunk is applied, `None` if `stop`
    /// completed first.
    pub(crate) async fn read_snapshot(
        &mut self,
        client: &Client,
        reset: bool,
    ) -> Result<Option<Position>, FollowError> {
        let request = pb::GetSnapshotRequest {
            topics: self.options.topics.clone(),
            key_filter: self.options.key_filter.clone(),
            record_filter: self.options.record_filter.clone(),
            translator: self.options.translator.clone(),
            ..Default::default()
        };
        let mut gateway = client.gateway.clone();
        let mut stream = gateway.get_snapshot(request).await.map_err(Error::from)?.into_inner();
        let mut offsets = None;
        loop {
            let chunk = tokio::select! {
                biased;
                _ = self.stop.as_mut() => return Ok(None),
                chunk = stream.message() => chunk.map_err(Error::from)?,
            };
            let Some(chunk) = chunk else {
                return Err(Error::local(Code::Unavailable, "the snapshot ended before its last chunk".into()).into());
            };
            self.delay = self.options.backoff.initial;
            if offsets.is_none() {
                offsets = Some(Position::from_offsets(&chunk.offsets));
                if reset {
                    self.handler.reset().await.map_err(FollowError::Handler)?;
                    self.store.clear().await.map_err(FollowError::Store)?;
                }
            }
            let changes: Vec<Change> = chunk.entries.into_iter().map(entry_change).collect();
            if !changes.is_empty() {
                self.handler.apply(&changes, None).await.map_err(FollowError::Handler)?;
            }
            if chunk.last {
                return Ok(offsets);
            }
        }
    }

    async fn stream(&mut self, mut stream: Streaming<pb::SubscribeResponse>) -> Result<Ended, FollowError> {
        loop {
            let message = tokio::select! {
                biased;
                _ = self.stop.as_mut() => return Ok(Ended::Stopped),
                message = stream.message() => message.map_err(Error::from)?,
            };
            let Some(message) = message else { return Ok(Ended::Dropped) };
            self.delay = self.options.backoff.initial;
            let mut next = self.position.clone().unwrap_or_default();
            match message.message {
                Some(Message::Records(batch)) => {
                    for r in &batch.records {
                        next.set(&r.topic, r.partition, r.offset + 1);
                    }
                    let changes: Vec<Change> = batch.records.into_iter().map(record_change).collect();
                    self.handler.apply(&changes, Some(&next)).await.map_err(FollowError::Handler)?;
                }
                Some(Message::Progress(progress)) => next.merge(&progress.offsets),
                None => continue,
            }
            if self.position.as_ref() != Some(&next) {
                self.store.save(&next).await.map_err(FollowError::Store)?;
                self.position = Some(next);
            }
            self.commit(false).await;
        }
    }

    /// Commits the position of a named subscription, at most once per interval unless `force`.
    async fn commit(&mut self, force: bool) {
        let (Some(name), Some(position)) = (&self.options.subscription_name, &self.position) else { return };
        if self.committed.as_ref() == Some(position)
            || (!force && self.last_commit.is_some_and(|t| t.elapsed() < self.options.commit_interval))
        {
            return;
        }
        let request = pb::CommitRequest { name: name.clone(), offsets: position.to_offsets() };
        let position = position.clone();
        self.last_commit = Some(Instant::now());
        let mut subscriptions = self.client.subscriptions.clone();
        match subscriptions.commit(request).await {
            Ok(_) => self.committed = Some(position),
            Err(status) => self.report(&status.into()),
        }
    }

    pub(crate) fn report(&self, error: &Error) {
        match &self.options.on_error {
            Some(callback) => callback(error),
            None => tracing::warn!(%error, "tributary follow: retrying"),
        }
    }

    /// The next backoff wait of the follow.
    fn next_wait(&mut self) -> Duration {
        self.options.backoff.next_wait(&mut self.delay)
    }

    /// Waits the backoff delay (true if `stop` completed meanwhile) and grows it.
    pub(crate) async fn sleep(&mut self) -> bool {
        let wait = self.next_wait();
        tokio::select! {
            biased;
            _ = self.stop.as_mut() => true,
            _ = tokio::time::sleep(wait) => false,
        }
    }
}

/// Errors that a later attempt from the same position may not meet.
pub(crate) fn retryable(error: &Error) -> bool {
    match error.code {
        Code::Unavailable | Code::DeadlineExceeded => true,
        Code::Aborted => error.reason() != "SUBSCRIPTION_TAKEN_OVER",
        Code::ResourceExhausted => error.reason() == "LIMIT_REACHED",
        // A connection reset mid-stream surfaces as one of these, without the gateway's details.
        Code::Internal | Code::Unknown | Code::Cancelled => error.reason.is_none(),
        _ => false,
    }
}

/// A named subscription that has no committed position yet: it starts from a snapshot.
fn never_committed(error: &Error) -> bool {
    matches!(
        (error.code, error.reason()),
        (Code::FailedPrecondition, "NO_COMMITTED_POSITION") | (Code::NotFound, "UNKNOWN_SUBSCRIPTION")
    )
}

fn headers(headers: Vec<pb::Header>) -> Vec<(String, Option<Bytes>)> {
    headers.into_iter().map(|h| (h.key, h.value)).collect()
}

pub(crate) fn record_change(r: pb::Record) -> Change {
    Change {
        topic: r.topic,
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.timestamp_ms,
        key: r.key,
        value: r.value,
        headers: headers(r.headers),
        output_index: r.output_index,
        snapshot: false,
    }
}

fn entry_change(e: pb::SnapshotEntry) -> Change {
    Change {
        topic: e.topic,
        partition: e.partition,
        offset: e.offset,
        timestamp_ms: e.timestamp_ms,
        key: Some(e.key),
        value: Some(e.value),
        headers: headers(e.headers),
        output_index: e.output_index,
        snapshot: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: Code, reason: Option<&str>) -> Error {
        let mut e = Error::local(code, String::new());
        e.reason = reason.map(str::to_string);
        e
    }

    #[test]
    fn only_errors_a_retry_can_outlive_are_retried() {
        assert!(retryable(&error(Code::Unavailable, Some("KAFKA_UNAVAILABLE"))));
        assert!(retryable(&error(Code::Unavailable, None)));
        assert!(retryable(&error(Code::Aborted, Some("SHUTTING_DOWN"))));
        assert!(!retryable(&error(Code::Aborted, Some("SUBSCRIPTION_TAKEN_OVER"))));
        assert!(retryable(&error(Code::ResourceExhausted, Some("LIMIT_REACHED"))));
        assert!(!retryable(&error(Code::ResourceExhausted, Some("TRANSLATOR_DEADLINE"))));
        assert!(retryable(&error(Code::Unknown, None)));
        assert!(!retryable(&error(Code::Internal, Some("INTERNAL"))));
        assert!(!retryable(&error(Code::InvalidArgument, Some("INVALID_ARGUMENT"))));
        assert!(!retryable(&error(Code::PermissionDenied, Some("PERMISSION_DENIED"))));
        assert!(never_committed(&error(Code::FailedPrecondition, Some("NO_COMMITTED_POSITION"))));
        assert!(!never_committed(&error(Code::FailedPrecondition, Some("SUBSCRIPTION_TOPICS_CHANGED"))));
    }
}

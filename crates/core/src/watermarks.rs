//! Watermarks without a Kafka request per call. One refresher fetches the watermarks of every
//! exposed partition, one blocking request at a time; every caller that needs them (a Subscribe
//! that starts outside the view, DescribeTopics, a catch-up reader told a position is gone) asks
//! for a refresh and shares its answer. However many calls arrive, at most one blocking thread
//! talks to Kafka for them.
//!
//! While Kafka does not answer, callers get the last known watermarks and their age after a short
//! wait instead of waiting for Kafka's timeout; the refresher also runs on a period, so
//! [`WatermarkCache::reachable`] says whether Kafka answered its last request. Each answer also
//! trims the tail buffers to what Kafka still retains, so that a position Kafka no longer has is
//! too old here as on any other replica (rule 7).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::{
    error::Error,
    events,
    source::{self, Log, Partition, Watermarks},
    view::View,
};

/// Refresh period until Kafka has answered once.
const FIRST_ANSWER_RETRY: Duration = Duration::from_millis(500);

/// The watermarks of the partitions asked for, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub marks: Vec<Watermarks>,
    /// `None` when fetched after the call arrived; else how old the last successful fetch is
    /// (Kafka did not answer in time).
    pub stale: Option<Duration>,
}

#[derive(Debug, Default)]
struct State {
    marks: HashMap<Partition, Watermarks>,
    /// When the last successful refresh started.
    fetched: Option<Instant>,
    /// Refreshes started so far.
    started: u64,
    /// Why the last refresh failed, if it did.
    failure: Option<String>,
    /// Each partition's lag in records at the last refresh.
    lags: HashMap<Partition, i64>,
}

/// How old the newest record the view holds may be before a growing lag is reported.
const BEHIND: f64 = 5.0;

/// Whether a partition's view is falling behind Kafka: its newest record is more than [`BEHIND`]
/// seconds old and its lag in records grew since the last refresh (`before`). A view that is
/// behind but catching up, or that sees a burst it clears within seconds, is not.
pub fn falling_behind(before: Option<i64>, lag_records: i64, lag_seconds: f64) -> bool {
    lag_seconds > BEHIND && before.is_some_and(|before| lag_records > before)
}

/// Shared, single-flight watermark lookups over every partition of the view.
pub struct WatermarkCache {
    log: Arc<dyn Log>,
    view: Arc<View>,
    state: Mutex<State>,
    /// Refreshes finished so far.
    finished: watch::Sender<u64>,
    /// Whether Kafka answered the last refresh.
    reachable: watch::Sender<bool>,
    /// Whether no partition was falling behind ([`falling_behind`]) at the last refresh.
    keeping_up: watch::Sender<bool>,
    wake: Notify,
}

impl WatermarkCache {
    pub fn new(log: Arc<dyn Log>, view: Arc<View>) -> Arc<Self> {
        Arc::new(Self {
            log,
            view,
            state: Mutex::new(State::default()),
            finished: watch::channel(0).0,
            reachable: watch::channel(false).0,
            keeping_up: watch::channel(true).0,
            wake: Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refreshes when asked, and every `period` to keep [`Self::reachable`] current, until
    /// `shutdown`.
    pub async fn run(self: Arc<Self>, period: Duration, shutdown: CancellationToken) {
        loop {
            // Until the first answer, ask often: health reports Kafka unreachable until then.
            let wait = if self.lock().fetched.is_none() { period.min(FIRST_ANSWER_RETRY) } else { period };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return,
            }
            let started = Instant::now();
            self.lock().started += 1;
            if self.view.check_assigned().is_err() {
                // Ingest has not reached Kafka yet; it says why.
                self.finish_failed("ingest has not reached Kafka yet".into());
                continue;
            }
            let partitions: Vec<Partition> = self
                .view
                .topics()
                .flat_map(|t| t.shards().into_iter().map(|s| (s.topic.clone(), s.partition)))
                .collect();
            let result = tokio::select! {
                r = source::watermarks(&self.log, partitions.clone()) => r,
                _ = shutdown.cancelled() => return,
            };
            match result {
                Ok(marks) => {
                    let mut behind = false;
                    for ((topic, partition), m) in partitions.iter().zip(&marks) {
                        if let Some(shard) = self.view.topic(topic).ok().and_then(|t| t.shard(*partition)) {
                            shard.trim_below(m.earliest);
                            shard.settle_pool(Instant::now());
                            let labels = [("topic", topic.to_string()), ("partition", partition.to_string())];
                            let view = shard.next_offset();
                            metrics::gauge!("tributary_view_offset", &labels).set(view as f64);
                            metrics::gauge!("tributary_kafka_earliest_offset", &labels).set(m.earliest as f64);
                            metrics::gauge!("tributary_kafka_latest_offset", &labels).set(m.latest as f64);
                            metrics::gauge!("tributary_view_lag_records", &labels).set((m.latest - view).max(0) as f64);
                            metrics::gauge!("tributary_view_keys", &labels).set(shard.keys() as f64);
                            metrics::gauge!("tributary_view_bytes", &labels).set(shard.state_bytes() as f64);
                            metrics::gauge!("tributary_tail_bytes", &labels).set(shard.tail_bytes() as f64);
                            // Behind: the newest record the view holds is this old.
                            let last = shard.last_timestamp_ms();
                            let lag_seconds = match (m.latest > view, last >= 0) {
                                (true, true) => (now_ms() - last).max(0) as f64 / 1000.0,
                                _ => 0.0,
                            };
                            metrics::gauge!("tributary_view_lag_seconds", &labels).set(lag_seconds);
                            let lag_records = (m.latest - view).max(0);
                            let key = (topic.clone(), *partition);
                            let before = self.lock().lags.insert(key, lag_records);
                            if falling_behind(before, lag_records, lag_seconds) {
                                behind = true;
                                events::emit(&events::ViewFallingBehind {
                                    partition: format!("{topic}/{partition}"),
                                    lag_records,
                                    lag_seconds,
                                });
                            }
                        }
                    }
                    metrics::gauge!("tributary_tail_pool_lent_bytes").set(self.view.tail_pool().lent() as f64);
                    metrics::gauge!("tributary_kafka_reachable").set(1.0);
                    let mut s = self.lock();
                    s.marks.extend(partitions.into_iter().zip(marks));
                    s.fetched = Some(started);
                    s.failure = None;
                    drop(s);
                    self.reachable.send_if_modified(|r| !std::mem::replace(r, true));
                    self.keeping_up.send_if_modified(|k| std::mem::replace(k, !behind) == behind);
                    self.finished.send_modify(|n| *n += 1);
                }
                Err(e) => {
                    events::emit(&events::KafkaWatermarksError { error: e.to_string() });
                    self.finish_failed(e.to_string());
                }
            }
        }
    }

    fn finish_failed(&self, why: String) {
        metrics::gauge!("tributary_kafka_reachable").set(0.0);
        self.lock().failure = Some(why);
        self.reachable.send_if_modified(|r| std::mem::replace(r, false));
        self.finished.send_modify(|n| *n += 1);
    }

    /// Whether Kafka answered the last refresh (false until the first one).
    pub fn reachable(&self) -> watch::Receiver<bool> {
        self.reachable.subscribe()
    }

    /// False while ingest is not keeping up: at the last refresh some partition was falling
    /// behind ([`falling_behind`], the `view_falling_behind` event); true again at the first
    /// refresh where none is.
    pub fn keeping_up(&self) -> watch::Receiver<bool> {
        self.keeping_up.subscribe()
    }

    /// The last known watermarks of `partitions`, without asking Kafka; `None` when one was never
    /// fetched.
    pub fn known(&self, partitions: &[Partition]) -> Option<Vec<Watermarks>> {
        let s = self.lock();
        partitions.iter().map(|p| s.marks.get(p).copied()).collect()
    }

    /// The watermarks of `partitions` from a refresh that starts after this call, if it ends
    /// within `wait`; else the last known ones with their age. UNAVAILABLE when a partition's
    /// watermarks were never fetched.
    pub async fn get(&self, partitions: &[Partition], wait: Duration) -> Result<Answer, Error> {
        let asked = Instant::now();
        let want = self.lock().started + 1;
        let mut finished = self.finished.subscribe();
        self.wake.notify_one();
        // Refreshes numbered from `want` on started after this call.
        let _ = tokio::time::timeout(wait, finished.wait_for(|n| *n >= want)).await;
        let s = self.lock();
        let marks = partitions
            .iter()
            .map(|p| s.marks.get(p).copied())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| unreachable(s.failure.as_deref()))?;
        let stale = match s.fetched {
            Some(at) if at >= asked => None,
            Some(at) => Some(at.elapsed()),
            None => return Err(unreachable(s.failure.as_deref())),
        };
        Ok(Answer { marks, stale })
    }
}

fn unreachable(failure: Option<&str>) -> Error {
    Error::kafka(format!(
        "Kafka's watermarks are not known yet ({}); retry shortly",
        failure.unwrap_or("no answer yet")
    ))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

    use super::*;
    use crate::{source::CatchUpReader, view::Shard};

    /// A log whose end offset grows on every request and that can be made to hang.
    #[derive(Default)]
    struct Flaky {
        latest: AtomicI64,
        down: AtomicBool,
        requests: AtomicI64,
    }

    impl Log for Flaky {
        fn watermarks(&self, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            if self.down.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(300));
                return Err(Error::kafka("down"));
            }
            let latest = self.latest.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(partitions.iter().map(|_| Watermarks { earliest: 0, latest }).collect())
        }

        fn catch_up(
            &self,
            _: usize,
            _: Option<crate::source::Encoding>,
            _: tokio::sync::OwnedSemaphorePermit,
        ) -> Result<Box<dyn CatchUpReader>, Error> {
            Err(Error::Internal("watermark tests read no records".into()))
        }
    }

    fn fixture() -> (Arc<Flaky>, Arc<WatermarkCache>, CancellationToken, Vec<Partition>) {
        let view = Arc::new(View::new(&["t".to_string()]));
        view.topic("t").unwrap().add_shard(Arc::new(Shard::new("t".into(), 0, 0, 0)));
        view.set_assigned();
        let log = Arc::new(Flaky::default());
        let cache = WatermarkCache::new(log.clone(), view);
        let stop = CancellationToken::new();
        tokio::spawn(cache.clone().run(Duration::from_secs(3600), stop.clone()));
        (log, cache, stop, vec![("t".into(), 0)])
    }

    #[tokio::test]
    async fn every_answer_comes_from_a_refresh_that_started_after_the_call() {
        let (log, cache, stop, p) = fixture();
        let first = cache.get(&p, Duration::from_secs(5)).await.unwrap();
        let second = cache.get(&p, Duration::from_secs(5)).await.unwrap();
        assert_eq!(first.stale, None);
        assert!(second.marks[0].latest > first.marks[0].latest, "{first:?} then {second:?}");
        assert!(*cache.reachable().borrow());
        // Concurrent calls share refreshes instead of making one request each.
        let before = log.requests.load(Ordering::SeqCst);
        let calls: Vec<_> = (0..50).map(|_| cache.get(&p, Duration::from_secs(5))).collect();
        for answer in futures::future::join_all(calls).await {
            assert_eq!(answer.unwrap().stale, None);
        }
        assert!(log.requests.load(Ordering::SeqCst) - before <= 2, "one or two refreshes for 50 calls");
        stop.cancel();
    }

    #[tokio::test]
    async fn while_kafka_does_not_answer_calls_get_the_last_known_marks_and_their_age() {
        let (log, cache, stop, p) = fixture();
        let known = cache.get(&p, Duration::from_secs(5)).await.unwrap();
        log.down.store(true, Ordering::SeqCst);
        let answer = cache.get(&p, Duration::from_millis(50)).await.unwrap();
        assert_eq!(answer.marks, known.marks);
        assert!(answer.stale.is_some());
        // The failed refresh marks Kafka unreachable.
        let mut reachable = cache.reachable();
        tokio::time::timeout(Duration::from_secs(5), reachable.wait_for(|r| !*r)).await.unwrap().unwrap();
        stop.cancel();
    }

    #[tokio::test]
    async fn marks_never_fetched_are_unavailable() {
        let (log, cache, stop, p) = fixture();
        log.down.store(true, Ordering::SeqCst);
        let error = cache.get(&p, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(error, Error::Kafka { .. }), "{error:?}");
        stop.cancel();
    }

    #[tokio::test]
    async fn keeping_up_turns_false_while_a_partition_falls_behind_and_true_once_it_catches_up() {
        let view = Arc::new(View::new(&["t".to_string()]));
        let shard = Arc::new(Shard::new("t".into(), 0, 0, 0));
        view.topic("t").unwrap().add_shard(shard.clone());
        view.set_assigned();
        let log = Arc::new(Flaky::default());
        let cache = WatermarkCache::new(log.clone(), view);
        let stop = CancellationToken::new();
        tokio::spawn(cache.clone().run(Duration::from_secs(3600), stop.clone()));
        let p: Vec<Partition> = vec![("t".into(), 0)];
        let limits = crate::limits::Limits::default();
        let record = |offset, age_ms| {
            crate::record::Record::new("t".into(), 0, offset, now_ms() - age_ms, Some(b"k"), Some(b"v"), &[])
        };
        // The newest record is a minute old and Kafka's end moves on at every refresh.
        shard.apply(record(0, 60_000), &limits);
        let mut keeping_up = cache.keeping_up();
        for _ in 0..3 {
            cache.get(&p, Duration::from_secs(5)).await.unwrap();
        }
        assert!(!*keeping_up.borrow_and_update(), "lag grew with the newest record 60 s old");
        // Ingest catches up: the lag shrinks.
        let latest = log.latest.load(Ordering::SeqCst);
        shard.apply_all((1..=latest).map(|o| record(o, 0)), &limits);
        cache.get(&p, Duration::from_secs(5)).await.unwrap();
        assert!(*keeping_up.borrow_and_update(), "caught up");
        stop.cancel();
    }

    #[test]
    fn a_view_falls_behind_when_its_lag_grows_with_its_newest_record_seconds_old() {
        assert!(falling_behind(Some(1_000), 5_000, 12.0), "behind and further behind");
        assert!(!falling_behind(Some(5_000), 1_000, 12.0), "behind but catching up");
        assert!(!falling_behind(Some(1_000), 5_000, 0.5), "a burst cleared within seconds");
        assert!(!falling_behind(None, 5_000, 12.0), "the first refresh has nothing to compare");
        assert!(!falling_behind(Some(0), 0, 0.0), "up to date");
    }
}

//! Named subscriptions without Kafka: positions in a map (the port's test double), A's log and
//! the view in memory.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::AtomicUsize, Arc, Mutex},
    time::Duration,
};

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::{limits::Limits, record::Record, testing::MemoryLog, view::Shard};

/// A group's committed offsets, each with the stamp it was committed with.
type Group = BTreeMap<Partition, (i64, Stamp)>;

/// Positions in memory, kept per partition as Kafka keeps a group's offsets: a commit replaces
/// the partitions it lists and leaves the others.
#[derive(Default)]
struct MemoryPositions {
    groups: Mutex<HashMap<String, Group>>,
    commits: AtomicUsize,
}

impl MemoryPositions {
    /// What is committed under `name`, partition by partition.
    fn offsets(&self, name: &str) -> Vec<PartitionOffset> {
        let groups = self.groups.lock().unwrap();
        let group = groups.get(name).into_iter().flatten();
        group.map(|((t, p), (o, _))| PartitionOffset::new(&**t, *p, *o)).collect()
    }

    fn stamp(&self, name: &str) -> Option<Stamp> {
        let groups = self.groups.lock().unwrap();
        groups.get(name)?.values().map(|(_, s)| s.clone()).max_by_key(|s| s.committed_at_ms)
    }
}

impl Positions for MemoryPositions {
    fn group(&self, name: &str) -> String {
        format!("group-{name}")
    }

    fn committed(&self, name: &str, partitions: &[Partition]) -> Result<Option<Committed>, Error> {
        let groups = self.groups.lock().unwrap();
        let Some(group) = groups.get(name) else { return Ok(None) };
        let found: Vec<_> = partitions.iter().filter_map(|p| Some((p, group.get(p)?))).collect();
        let Some(stamp) = found.iter().map(|(_, (_, s))| s).max_by_key(|s| s.committed_at_ms).cloned() else {
            return Ok(None);
        };
        let offsets = found.iter().map(|((t, p), (o, _))| PartitionOffset::new(&**t, *p, *o)).collect();
        Ok(Some(Committed { offsets, stamp }))
    }

    fn commit(&self, name: &str, offsets: &[PartitionOffset], stamp: &Stamp) -> Result<(), Error> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        let mut groups = self.groups.lock().unwrap();
        let group = groups.entry(name.to_string()).or_default();
        for o in offsets {
            group.insert((o.topic.as_str().into(), o.partition), (o.offset, stamp.clone()));
        }
        Ok(())
    }

    fn names(&self) -> Result<Vec<String>, Error> {
        Ok(self.groups.lock().unwrap().keys().cloned().collect())
    }

    fn delete(&self, name: &str) -> Result<bool, Error> {
        Ok(self.groups.lock().unwrap().remove(name).is_some())
    }
}

/// Topics "t" (partitions 0 and 1) and "u" (partition 0). Kafka retains t/0 from offset 5 to 10,
/// t/1 from 0 to 3 and u/0 from 0 to 2; the view holds the same.
struct Fixture {
    durable: Arc<Durable>,
    positions: Arc<MemoryPositions>,
    view: Arc<View>,
    _stop: tokio_util::sync::DropGuard,
}

impl Fixture {
    fn new() -> Self {
        let view = Arc::new(View::new(&["t".to_string(), "u".to_string()]));
        let log = Arc::new(MemoryLog::default());
        for (topic, partition, offsets) in [("t", 0, 5..10), ("t", 1, 0..3), ("u", 0, 0..2)] {
            let shard = Arc::new(Shard::new(topic.into(), partition, offsets.start, offsets.end));
            for offset in offsets {
                let record = Record::new(topic.into(), partition, offset, 0, Some(b"k"), Some(b"v"), &[]);
                log.records.lock().unwrap().entry((topic.into(), partition)).or_default().push(record.clone());
                shard.apply(record, &Limits::default());
            }
            view.topic(topic).unwrap().add_shard(shard);
        }
        view.set_assigned();
        let watermarks = WatermarkCache::new(log, view.clone());
        let stop = CancellationToken::new();
        tokio::spawn(watermarks.clone().run(Duration::from_secs(3600), stop.clone()));
        let positions = Arc::new(MemoryPositions::default());
        let durable = Durable::new(positions.clone(), view.clone(), watermarks);
        Self { durable, positions, view, _stop: stop.drop_guard() }
    }

    /// Commits `offsets` under `name` directly through the port, as an earlier gateway did.
    fn committed_before(&self, name: &str, offsets: &[PartitionOffset], stamp: Stamp) {
        self.positions.commit(name, offsets, &Stamp { committed_at_ms: 1, ..stamp }).unwrap();
    }

    /// A cursor of every partition of "t" at `t0` and `t1`.
    fn cursors(&self, t0: i64, t1: i64) -> Vec<Cursor> {
        let topic = self.view.topic("t").unwrap();
        vec![Cursor::new(topic.shard(0).unwrap(), t0), Cursor::new(topic.shard(1).unwrap(), t1)]
    }
}

fn at(topic: &str, partition: i32, offset: i64) -> PartitionOffset {
    PartitionOffset::new(topic, partition, offset)
}

fn following(topics: &[&str]) -> Stamp {
    Stamp { topics: topics.iter().map(|t| t.to_string()).collect(), ..Stamp::default() }
}

fn translated(digest: &str, config_sha256: &str) -> Stamp {
    Stamp {
        translator_name: "mapper".into(),
        translator_digest: digest.into(),
        config_sha256: config_sha256.into(),
        ..following(&["t"])
    }
}

fn problem(result: Result<impl std::fmt::Debug, Error>) -> SubscriptionProblem {
    match result {
        Err(Error::Subscription { problem, .. }) => problem,
        other => panic!("expected a subscription error, got {other:?}"),
    }
}

fn invalid_field(result: Result<impl std::fmt::Debug, Error>) -> String {
    match result {
        Err(Error::InvalidArgument { field, .. }) => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

#[tokio::test]
async fn a_start_with_offsets_starts_there_and_reads_no_position() {
    let f = Fixture::new();
    let from = vec![at("t", 0, 7)];
    let started = f.durable.start("s", vec!["t".into()], from.clone(), &Stamp::default(), false).await.unwrap();
    assert_eq!(started, (vec!["t".to_string()], from));
    let bad = f.durable.start("a b", vec![], vec![at("t", 0, 7)], &Stamp::default(), false).await;
    assert_eq!(invalid_field(bad), "subscription_name");
}

#[tokio::test]
async fn a_start_without_offsets_resumes_the_committed_position_of_its_topics() {
    let f = Fixture::new();
    // u/0 was committed under the name once, but the subscription follows "t" only.
    f.committed_before("s", &[at("t", 0, 7), at("t", 1, 1), at("u", 0, 1)], following(&["t"]));
    for topics in [vec![], vec!["t".to_string()]] {
        let (topics, from) = f.durable.start("s", topics, vec![], &Stamp::default(), false).await.unwrap();
        assert_eq!(topics, ["t"]);
        assert_eq!(from, [at("t", 0, 7), at("t", 1, 1)]);
    }
}

#[tokio::test]
async fn a_start_with_nothing_committed_needs_offsets() {
    let f = Fixture::new();
    assert_eq!(
        problem(f.durable.start("s", vec![], vec![], &Stamp::default(), false).await),
        SubscriptionProblem::NoPosition
    );
}

#[tokio::test]
async fn a_start_with_other_topics_is_refused() {
    let f = Fixture::new();
    f.committed_before("s", &[at("t", 0, 7)], following(&["t"]));
    for topics in [vec!["u".to_string()], vec!["t".to_string(), "u".to_string()]] {
        let refused = f.durable.start("s", topics, vec![], &Stamp::default(), false).await;
        assert_eq!(problem(refused), SubscriptionProblem::TopicsChanged);
    }
}

#[tokio::test]
async fn a_start_with_another_translator_is_refused_unless_accepted() {
    let f = Fixture::new();
    f.committed_before("s", &[at("t", 0, 7)], translated("d1", "c1"));
    for other in [translated("d2", "c1"), translated("d1", "c2"), Stamp::default()] {
        let refused = f.durable.start("s", vec![], vec![], &other, false).await;
        assert_eq!(problem(refused), SubscriptionProblem::TranslatorChanged, "{other:?}");
        let accepted = f.durable.start("s", vec![], vec![], &other, true).await.unwrap();
        assert_eq!(accepted.1, [at("t", 0, 7)]);
    }
    let message = f.durable.start("s", vec![], vec![], &translated("d2", "c1"), false).await.unwrap_err().to_string();
    assert!(message.contains("digest d1") && message.contains("digest d2"), "{message}");
    assert!(f.durable.start("s", vec![], vec![], &translated("d1", "c1"), false).await.is_ok());
}

#[tokio::test]
async fn a_newer_stream_takes_the_name_over_and_the_older_hold_leaves_it() {
    let f = Fixture::new();
    let (older, older_hold) = f.durable.begin("s", &f.cursors(6, 0), translated("d", "c")).await.unwrap();
    // The start position is committed, with the stream's stamp.
    assert_eq!(f.positions.offsets("s"), [at("t", 0, 6), at("t", 1, 0)]);
    let stamp = f.positions.stamp("s").unwrap();
    assert!(stamp.same_translator(&translated("d", "c")) && stamp.committed_at_ms > 0, "{stamp:?}");
    assert!(older.stopped().now_or_never().is_none(), "nobody took it yet");

    let (newer, newer_hold) = f.durable.begin("s", &f.cursors(8, 2), translated("d", "c")).await.unwrap();
    match older.stopped().now_or_never() {
        Some(Error::SubscriptionTakenOver { name, why, .. }) => {
            assert_eq!((name.as_str(), why.as_str()), ("s", "was opened by a newer stream"))
        }
        other => panic!("the older stream is stopped, got {other:?}"),
    }
    assert!(newer.stopped().now_or_never().is_none());
    assert_eq!(f.positions.offsets("s"), [at("t", 0, 8), at("t", 1, 2)]);

    drop(older_hold);
    assert!(f.durable.describe("s").await.unwrap().active_here, "the older hold leaves the newer stream's name");
    drop(newer_hold);
    assert!(!f.durable.describe("s").await.unwrap().active_here);
}

#[tokio::test]
async fn a_commit_is_checked_like_a_start() {
    let f = Fixture::new();
    let empty = f.durable.commit("s", vec![]).await;
    assert_eq!(invalid_field(empty), "offsets");
    assert_eq!(problem(f.durable.commit("s", vec![at("t", 0, 7)]).await), SubscriptionProblem::NoPosition);

    f.committed_before("s", &[at("t", 0, 6)], translated("d", "c"));
    let other_topic = f.durable.commit("s", vec![at("t", 0, 7), at("u", 0, 1)]).await;
    assert_eq!(invalid_field(other_topic), "offsets[1].topic");
    match f.durable.commit("s", vec![at("t", 7, 0)]).await {
        Err(Error::UnknownPartition { topic, partition: 7, partitions: 2 }) => assert_eq!(topic, "t"),
        other => panic!("expected an unknown partition, got {other:?}"),
    }
    match f.durable.commit("s", vec![at("t", 0, 2)]).await {
        Err(Error::TooOld { requested: 2, earliest: 5, .. }) => {}
        other => panic!("expected too old, got {other:?}"),
    }
    match f.durable.commit("s", vec![at("t", 0, 20)]).await {
        Err(Error::BeyondEnd { requested: 20, latest: 10, .. }) => {}
        other => panic!("expected beyond the end, got {other:?}"),
    }
    assert_eq!(f.positions.offsets("s"), [at("t", 0, 6)], "nothing refused was committed");

    f.durable.commit("s", vec![at("t", 0, 9)]).await.unwrap();
    assert_eq!(f.positions.offsets("s"), [at("t", 0, 9)]);
    let stamp = f.positions.stamp("s").unwrap();
    assert!(stamp.same_translator(&translated("d", "c")), "a commit keeps the subscription's translator: {stamp:?}");
    assert!(stamp.committed_at_ms > 1, "and says when");
}

#[tokio::test]
async fn auto_commits_are_one_at_a_time() {
    let f = Fixture::new();
    let busy = Arc::new(AtomicBool::new(false));
    // Delivered positions arrive faster than commits end: only the first is committed.
    for offset in 6..9 {
        f.durable.auto_commit("s", vec![at("t", 0, offset)], &following(&["t"]), &busy);
    }
    let idle = async {
        while busy.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), idle).await.expect("the commit ends");
    assert_eq!(f.positions.commits.load(Ordering::SeqCst), 1);
    assert_eq!(f.positions.offsets("s"), [at("t", 0, 6)]);
    // Once it ended, the next progress commits its later position.
    f.durable.auto_commit("s", vec![at("t", 0, 9)], &following(&["t"]), &busy);
    while f.positions.commits.load(Ordering::SeqCst) < 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(f.positions.offsets("s"), [at("t", 0, 9)]);
}

#[tokio::test]
async fn delete_ends_the_stream_and_forgets_the_name() {
    let f = Fixture::new();
    let (stop, _hold) = f.durable.begin("s", &f.cursors(6, 0), following(&["t"])).await.unwrap();
    f.durable.delete("s").await.unwrap();
    match stop.stopped().now_or_never() {
        Some(Error::SubscriptionTakenOver { why, .. }) => assert_eq!(why, "was deleted"),
        other => panic!("the stream is stopped, got {other:?}"),
    }
    assert!(f.positions.offsets("s").is_empty());
    assert_eq!(problem(f.durable.describe("s").await), SubscriptionProblem::Unknown);
    assert_eq!(problem(f.durable.delete("s").await), SubscriptionProblem::Unknown);
    assert_eq!(invalid_field(f.durable.delete("").await), "name");
}

#[tokio::test]
async fn describe_shows_each_partitions_lag_behind_kafka() {
    let f = Fixture::new();
    let stamp = translated("d", "c");
    f.committed_before("s", &[at("t", 0, 7)], stamp.clone());
    let described = f.durable.describe("s").await.unwrap();
    let position =
        |partition, committed, latest, lag| PartitionPosition { topic: "t".into(), partition, committed, latest, lag };
    let expected = Described {
        name: "s".into(),
        group: "group-s".into(),
        active_here: false,
        stamp: Stamp { committed_at_ms: 1, ..stamp },
        // t/1 has no committed offset: a resume starts it at its earliest offset, 0.
        partitions: vec![position(0, Some(7), 10, 3), position(1, None, 3, 3)],
    };
    assert_eq!(described, expected);

    // A position Kafka no longer retains lags from the earliest offset a resume could read.
    f.committed_before("s", &[at("t", 0, 2)], following(&["t"]));
    assert_eq!(f.durable.describe("s").await.unwrap().partitions[0], position(0, Some(2), 10, 5));
}

#[tokio::test]
async fn list_shows_the_visible_subscriptions_of_the_exposed_topics() {
    let f = Fixture::new();
    f.committed_before("mine", &[at("t", 0, 7)], following(&["t"]));
    f.committed_before("theirs", &[at("u", 0, 1)], following(&["u"]));
    // Groups of the prefix that are not subscriptions here: a name no subscription may have,
    // and one with offsets of topics this gateway does not expose.
    f.committed_before("not a name", &[at("t", 0, 7)], following(&["t"]));
    f.committed_before("elsewhere", &[at("hidden", 0, 1)], following(&["hidden"]));
    let listed = f.durable.list(|name| name != "theirs").await.unwrap();
    assert_eq!(listed.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(), ["mine"]);
    let mut all: Vec<_> = f.durable.list(|_| true).await.unwrap().into_iter().map(|d| d.name).collect();
    all.sort();
    assert_eq!(all, ["mine", "theirs"]);
}

//! The Rust follow helper on a sharded fleet: three replicas (the real binary) share a topic's six
//! partitions while A keeps writing; two followers follow every partition through the fleet, one
//! replica is killed and another joins, and each follower ends at the raw rebuild with every
//! record after its snapshot applied once, in offset order per partition.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use tokio::{sync::oneshot, task::JoinHandle};
use tributary_client::{
    follow_fleet, Backoff, BoxError, Change, Client, FollowError, FollowOptions, Handler, MemoryStore, Position, Store,
};

use crate::{
    harness::*,
    sharding::{replica, settled, SESSION_MS},
};

const PARTITIONS: i32 = 6;
/// Longest wait for the followers to reach a point.
const WAIT: Duration = Duration::from_secs(60);

/// B's model and what the test checks about how it was built.
#[derive(Default)]
struct Model {
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    /// The position the snapshot ended at (the first save after a reset).
    snapshot_at: Option<Position>,
    /// Streamed records per partition, in the order applied.
    streamed: BTreeMap<i32, Vec<i64>>,
    /// Positions given to `apply` that did not name every partition.
    partial_positions: usize,
    saved: Option<Position>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Model>>);

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.0.lock().unwrap())
    }

    /// The saved offset of every partition of `topic` (0 when none yet).
    fn saved(&self, topic: &str) -> BTreeMap<i32, i64> {
        self.with(|m| {
            (0..PARTITIONS).map(|p| (p, m.saved.as_ref().and_then(|s| s.get(topic, p)).unwrap_or(0))).collect()
        })
    }
}

impl Handler for Shared {
    async fn reset(&mut self) -> Result<(), BoxError> {
        let mut m = self.0.lock().unwrap();
        *m = Model::default();
        Ok(())
    }

    async fn apply(&mut self, changes: &[Change], position: Option<&Position>) -> Result<(), BoxError> {
        let mut m = self.0.lock().unwrap();
        for c in changes {
            if !c.snapshot {
                m.streamed.entry(c.partition).or_default().push(c.offset);
            }
            if let Some(key) = &c.key {
                match &c.value {
                    Some(v) => m.state.insert(key.to_vec(), v.to_vec()),
                    None => m.state.remove(key.as_ref()),
                };
            }
        }
        if position.is_some_and(|p| p.iter().count() != PARTITIONS as usize) {
            m.partial_positions += 1;
        }
        Ok(())
    }
}

/// A store that tells the model what it holds.
struct Tracked {
    inner: MemoryStore,
    model: Shared,
}

impl Store for Tracked {
    async fn load(&mut self) -> Result<Option<Position>, BoxError> {
        self.inner.load().await
    }

    async fn save(&mut self, position: &Position) -> Result<(), BoxError> {
        self.inner.save(position).await?;
        let mut m = self.model.0.lock().unwrap();
        m.snapshot_at.get_or_insert_with(|| position.clone());
        m.saved = Some(position.clone());
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), BoxError> {
        self.inner.clear().await?;
        self.model.0.lock().unwrap().saved = None;
        Ok(())
    }
}

struct Follower {
    model: Shared,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), FollowError>>,
}

fn start(topic: &str, seeds: Vec<String>) -> Follower {
    let model = Shared::default();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut options = FollowOptions::new([topic]).max_batch(100);
    options.backoff = Backoff { initial: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 };
    options.on_error = Some(Arc::new(|e| eprintln!("fleet follower: {e}")));
    let builder = Client::builder(format!("http://{}", seeds[0]));
    let (mut handler, mut store) = (model.clone(), Tracked { inner: MemoryStore::default(), model: model.clone() });
    let task =
        tokio::spawn(async move { follow_fleet(builder, seeds, options, &mut handler, &mut store, stopped).await });
    Follower { model, stop, task }
}

/// Waits until every follower's saved position is at or past `target` on `partitions`.
async fn reached(
    followers: &[Follower],
    topic: &str,
    target: &BTreeMap<i32, i64>,
    partitions: &BTreeSet<i32>,
    what: &str,
) {
    let start = Instant::now();
    loop {
        if followers.iter().all(|f| {
            let saved = f.model.saved(topic);
            partitions.iter().all(|p| saved[p] >= target[p])
        }) {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{what}: the followers did not reach {target:?} on {partitions:?}: {:?}",
            followers.iter().map(|f| f.model.saved(topic)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn by_partition(ends: &BTreeMap<(String, i32), i64>) -> BTreeMap<i32, i64> {
    ends.iter().map(|((_, p), o)| (*p, *o)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_route_per_partition_through_a_kill_and_a_join_with_no_gap_and_no_duplicate() {
    let topic = unique_topic("fleet");
    create_topic(&topic, PARTITIONS).await;
    let record = |i: usize| Out {
        partition: Some((i % PARTITIONS as usize) as i32),
        ..Out::kv(&format!("k{}", i % 600), (i % 7 != 6).then(|| format!("v{i}")).as_deref())
    };
    produce(&topic, &(0..3_000).map(record).collect::<Vec<_>>());
    let group = unique_topic("fleet-group");
    let mut a = replica(&topic, &group, "replica-a").await;
    let b = replica(&topic, &group, "replica-b").await;
    let c = replica(&topic, &group, "replica-c").await;
    let addresses = [a.addr, b.addr, c.addr].map(|a| a.to_string());

    // A keeps writing on every partition until told to stop.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (topic, writing) = (topic.clone(), writing.clone());
        std::thread::spawn(move || {
            let w = Writer::new(&topic);
            let mut i = 3_000;
            while writing.load(Ordering::Relaxed) {
                for _ in 0..30 {
                    w.send(&record(i));
                    i += 1;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            w.flush();
        })
    };

    let followers =
        [start(&topic, vec![addresses[0].clone()]), start(&topic, vec![addresses[1].clone(), addresses[2].clone()])];
    let topology = settled(&[&a, &b, &c], &topic, |owners| {
        owners.len() == PARTITIONS as usize && addresses.iter().all(|a| owners.values().any(|o| o == a))
    })
    .await;
    let every: BTreeSet<i32> = (0..PARTITIONS).collect();
    reached(&followers, &topic, &by_partition(&ends(&topic)), &every, "following the three replicas").await;

    // Killed: its partitions are unserved until its session times out, then followed on their new
    // owners from where each follower stood.
    let held_by_a: BTreeSet<i32> = topology.iter().filter(|(_, o)| **o == addresses[0]).map(|(p, _)| *p).collect();
    let at_kill = by_partition(&ends(&topic));
    a.kill();
    let killed = Instant::now();
    reached(&followers, &topic, &at_kill.iter().map(|(p, o)| (*p, o + 1)).collect(), &held_by_a, "after the kill")
        .await;
    let served = killed.elapsed();
    let survivors = [b.addr, c.addr].map(|a| a.to_string());
    settled(&[&b, &c], &topic, |owners| {
        owners.len() == PARTITIONS as usize && owners.values().all(|o| survivors.contains(o))
    })
    .await;
    assert!(
        served >= Duration::from_millis(SESSION_MS / 2),
        "a killed replica's partitions move only once its session times out ({served:?})"
    );

    // Another replica joins: partitions move to it while the streams on them are open.
    let d = replica(&topic, &group, "replica-d").await;
    let joined = Instant::now();
    let d_address = d.addr.to_string();
    let topology = settled(&[&b, &c, &d], &topic, |owners| {
        owners.len() == PARTITIONS as usize && owners.values().any(|o| *o == d_address)
    })
    .await;
    let held_by_d: BTreeSet<i32> = topology.iter().filter(|(_, o)| **o == d_address).map(|(p, _)| *p).collect();
    // Written after the move: only the new replica serves these.
    let at_join = by_partition(&ends(&topic));
    reached(&followers, &topic, &at_join.iter().map(|(p, o)| (*p, o + 1)).collect(), &held_by_d, "after the join")
        .await;
    let moved = joined.elapsed();

    writing.store(false, Ordering::Relaxed);
    writer.join().unwrap();
    let end = by_partition(&ends(&topic));
    reached(&followers, &topic, &end, &every, "at the end").await;

    let raw = read_all(&topic);
    let expected = rebuild(&raw);
    for (i, follower) in followers.into_iter().enumerate() {
        let _ = follower.stop.send(());
        follower.task.await.unwrap().unwrap_or_else(|e| panic!("follower {i}: {e}"));
        follower.model.with(|m| {
            assert!(m.state == expected, "follower {i}: the state equals the raw rebuild");
            assert_eq!(m.partial_positions, 0, "follower {i}: every position names every partition");
            let snapshot_at = m.snapshot_at.as_ref().expect("a snapshot");
            for p in 0..PARTITIONS {
                let from = snapshot_at.get(&topic, p).unwrap();
                let applied = m.streamed.get(&p).cloned().unwrap_or_default();
                let backwards = applied.windows(2).position(|w| w[0] >= w[1]);
                assert!(
                    backwards.is_none(),
                    "follower {i}, partition {p}: offsets strictly increase (from {from}): {:?}",
                    backwards.map(|at| &applied[at.saturating_sub(3)..(at + 4).min(applied.len())])
                );
                let kafka: Vec<i64> =
                    raw.iter().filter(|r| r.partition == p && r.offset >= from).map(|r| r.offset).collect();
                assert_eq!(applied, kafka, "follower {i}, partition {p}: every record after the snapshot, once");
            }
        });
    }
    println!(
        "fleet: after a kill -9 the followers applied the killed replica's partitions again after {served:?} (session timeout {SESSION_MS} ms); after a replica joined, the partitions it took were followed on it {moved:?} after it was serving"
    );
}

//! Rule 5: snapshot + subscribe from its offsets = a raw rebuild from the beginning, for clients
//! that snapshot at random moments while producers write updates and tombstones.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rand::{Rng, SeedableRng};
use tributary_server::{config::Limits, pb};

use crate::harness::*;

const PARTITIONS: i32 = 4;
const KEYS: u32 = 2_000;
const PRODUCERS: usize = 2;
const RECORDS_PER_PRODUCER: usize = 50_000;
const CLIENTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_subscribe_equals_raw_rebuild() {
    // A small tail buffer and small chunks, so that late subscribers catch up from Kafka and
    // snapshots cross many chunk edges.
    let limits = Limits {
        tail_max_records: 2_000,
        tail_pool_bytes: 0,
        max_chunk_bytes: 16 << 10,
        max_batch_records: 300,
        ..Limits::default()
    };
    snapshot_then_subscribe_with(limits).await;
}

/// The same with tails that keep older records on a small pool: late subscribers catch up from
/// Kafka into records the tails borrowed, then into the tails' own, while the pool is lent out
/// and given back as the tails move.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_then_subscribe_equals_raw_rebuild_through_borrowed_tails() {
    let limits = Limits {
        tail_max_records: 1_000,
        tail_pool_bytes: 256 << 10,
        max_chunk_bytes: 16 << 10,
        max_batch_records: 300,
        ..Limits::default()
    };
    snapshot_then_subscribe_with(limits).await;
}

async fn snapshot_then_subscribe_with(limits: Limits) {
    let topic = unique_topic("handoff");
    create_topic(&topic, PARTITIONS).await;
    let gateway = Gateway::start_with(config(&[&topic], limits)).await;
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");

    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|i| {
            let topic = topic.clone();
            std::thread::spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ i as u64);
                let writer = Writer::new(&topic);
                for n in 0..RECORDS_PER_PRODUCER {
                    let key = format!("assignment-{}", rng.random_range(0..KEYS));
                    let value =
                        (!rng.random_bool(0.1)).then(|| format!("{{\"producer\":{i},\"n\":{n},\"seed\":{seed}}}"));
                    let mut out = Out::kv(&key, value.as_deref());
                    if rng.random_bool(0.01) {
                        out.key = None; // keyless records flow through Subscribe but are no state
                    }
                    writer.send(&out);
                    // About 20k records/s in all: the writes span several seconds of snapshots.
                    if n % 500 == 499 {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                writer.flush();
            })
        })
        .collect();

    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let topic = topic.clone();
            let addr = gateway.addr;
            let done = done.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(100 + c as u64));
                tokio::time::sleep(Duration::from_millis(rng.random_range(100..3_500))).await;
                let mut client = connect(addr).await;
                let snap = snapshot(&mut client, topic_snapshot(&topic)).await.expect("snapshot");
                assert_eq!(snap.offsets.len(), PARTITIONS as usize, "every partition has an offset");
                let mut state = snap.state();
                // Some clients wait before subscribing, so their offsets fall behind the tail.
                if c % 3 == 0 {
                    tokio::time::sleep(Duration::from_millis(1_500)).await;
                }
                let request = pb::SubscribeRequest { from_offsets: snap.offsets.clone(), ..Default::default() };
                let mut follower = Follower::start(&mut client, request).await.expect("subscribe");
                // Follow until the producers are done and the stream reached the end.
                loop {
                    if done.load(Ordering::SeqCst) {
                        let ends = ends(&topic);
                        follower.until(&ends, Duration::from_secs(120)).await.expect("stream");
                        break;
                    }
                    if let Ok(next) = tokio::time::timeout(Duration::from_millis(200), follower.next()).await {
                        next.expect("stream").expect("stream ended early");
                    }
                }
                for r in &follower.records {
                    apply(&mut state, r);
                }
                (snap, follower.records, state)
            })
        })
        .collect();

    for p in producers {
        p.join().unwrap();
    }
    let produced = PRODUCERS * RECORDS_PER_PRODUCER;
    println!("produced {produced} records in {:?}", started.elapsed());
    done.store(true, Ordering::SeqCst);

    let raw = read_all(&topic);
    assert_eq!(raw.len(), produced);
    let expected = rebuild(&raw);
    let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for r in &raw {
        by_partition.entry(r.partition).or_default().push(r.offset);
    }
    let mut snapshot_sizes = Vec::new();
    for client in clients {
        let (snap, records, state) = client.await.unwrap();
        let behind = records.len();
        snapshot_sizes.push((snap.entries.len(), snap.chunks, behind));
        assert_eq!(state.len(), expected.len(), "client state has as many keys as the raw rebuild");
        assert!(state == expected, "client state differs from the raw rebuild");
        // Per partition: exactly the raw offsets at or after the snapshot's offset, in order.
        let from = offset_map(&snap.offsets);
        for (p, offsets) in &by_partition {
            let start = from[&(topic.clone(), *p)];
            let want: Vec<i64> = offsets.iter().copied().filter(|o| *o >= start).collect();
            let got: Vec<i64> = records.iter().filter(|r| r.partition == *p).map(|r| r.offset).collect();
            assert_eq!(got, want, "partition {p}: delivered offsets have a gap or a duplicate");
        }
    }
    println!("snapshots (entries, chunks, records behind the end): {snapshot_sizes:?}");
    let mid_stream = snapshot_sizes.iter().filter(|(entries, _, behind)| *entries > 0 && *behind > 0).count();
    assert!(mid_stream >= CLIENTS / 2, "at least half the snapshots were taken while producers wrote");
    assert!(snapshot_sizes.iter().any(|(_, chunks, _)| *chunks > 2), "snapshots crossed chunk edges");
    gateway.stop().await;
}

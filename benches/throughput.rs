//! Throughput of the gateway against a raw rdkafka consumer on the same topic, in the same run.
//!
//! `scripts/kafka.sh start && cargo bench --bench throughput` (BENCH_RECORDS, BENCH_VALUE_BYTES,
//! BENCH_KEYS to size it). Prints ratios; asserts nothing about speed (the machine is shared).

#[path = "../tests/gateway/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use harness::*;
use tributary::{config::Limits, pb};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let records = env("BENCH_RECORDS", 500_000);
    let value_bytes = env("BENCH_VALUE_BYTES", 200);
    let keys = env("BENCH_KEYS", 50_000);
    let topic = unique_topic("bench");
    create_topic(&topic, 4).await;

    let value = "v".repeat(value_bytes);
    let started = Instant::now();
    let writer = Writer::new(&topic);
    for i in 0..records {
        writer.send(&Out::kv(&format!("key-{}", i % keys), Some(&value)));
    }
    writer.flush();
    let produce = started.elapsed();
    println!("setup: produced {records} records of {value_bytes} B over {keys} keys in {produce:.2?}");

    // Baseline: a raw consumer reading the topic from the beginning and building the state.
    let started = Instant::now();
    let raw = tokio::task::block_in_place(|| read_all(&topic));
    let raw_read = started.elapsed();
    let started = Instant::now();
    let state = rebuild(&raw);
    let raw_rebuild = raw_read + started.elapsed();
    assert_eq!(raw.len(), records);
    drop(raw);

    // The gateway's ingest: from start to ready (the whole topic applied to the view).
    let started = Instant::now();
    let limits = Limits::default();
    let gateway = Gateway::start_with(config(&[&topic], limits)).await;
    let ingest = started.elapsed();

    // A full snapshot.
    let mut client = gateway.client().await;
    let started = Instant::now();
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    let snapshot_time = started.elapsed();
    assert_eq!(snap.entries.len(), state.len());
    let snapshot_bytes: usize = snap.entries.iter().map(|e| e.key.len() + e.value.len()).sum();

    // Subscribe from offset 0: behind the tail buffer, so through a catch-up reader.
    let started = Instant::now();
    let from = (0..4).map(|p| pb::PartitionOffset { topic: topic.clone(), partition: p, offset: 0 }).collect();
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await.unwrap();
    follower.until(&ends(&topic), Duration::from_secs(600)).await.unwrap();
    let subscribe = started.elapsed();
    assert_eq!(follower.records.len(), records);

    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!();
    println!("{:<44} {:>10} {:>14} {:>18}", "what", "time", "records/s", "vs raw consumer");
    let row = |what: &str, d: Duration| {
        println!("{what:<44} {:>10.2?} {:>14.0} {:>17.2}x", d, rate(d), raw_read.as_secs_f64() / d.as_secs_f64());
    };
    row("raw rdkafka consumer, read all (baseline)", raw_read);
    row("raw consumer + state rebuild", raw_rebuild);
    row("gateway ingest, start to ready", ingest);
    row("Subscribe from 0 (catch-up reader)", subscribe);
    println!(
        "{:<44} {:>10.2?} {:>14} {:>17.2}x   ({} keys, {:.1} MiB, {} chunks; vs raw rebuild)",
        "GetSnapshot, full state",
        snapshot_time,
        "-",
        raw_rebuild.as_secs_f64() / snapshot_time.as_secs_f64(),
        snap.entries.len(),
        snapshot_bytes as f64 / (1 << 20) as f64,
        snap.chunks
    );
    gateway.stop().await;
}

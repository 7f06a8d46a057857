//! Throughput of the gateway against a raw rdkafka consumer on the same topic, in the same run.
//!
//! `scripts/kafka.sh start && cargo bench --bench throughput` (BENCH_RECORDS, BENCH_VALUE_BYTES,
//! BENCH_KEYS to size it). Prints ratios; asserts nothing about speed (the machine is shared).

use std::time::{Duration, Instant};

use tributary_server::{config::Limits, pb};
use tributary_testkit::*;

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

    // A's media assignments as JSON, padded to about BENCH_VALUE_BYTES.
    let pad = "x".repeat(value_bytes.saturating_sub(70));
    let started = Instant::now();
    let writer = Writer::new(&topic);
    for i in 0..records {
        let value = format!(r#"{{"id":{i},"station":"north","status":"on-air","version":1,"pad":"{pad}"}}"#);
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

    // The same subscription through translators: identity and the field mapper.
    let mut registry = pb::translators_client::TranslatorsClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap(),
    );
    let mut translated = Vec::new();
    for (name, file, config) in [
        ("identity", "identity.wasm", ""),
        ("mapper", "field-mapper.wasm", r#"{"rename": {"station": "location"}, "drop": ["version"]}"#),
    ] {
        let path = repo_root().join("translators/dist").join(file);
        let bytes = std::fs::read(&path).expect("scripts/build-translators.sh builds the translators");
        use pb::upload_translator_request::Part;
        let messages = vec![
            pb::UploadTranslatorRequest {
                part: Some(Part::Header(pb::UploadHeader { name: name.into(), ..Default::default() })),
            },
            pb::UploadTranslatorRequest { part: Some(Part::Chunk(bytes.into())) },
        ];
        registry.upload(tokio_stream::iter(messages)).await.unwrap();
        let reference = Some(pb::TranslatorRef { name: name.into(), config: config.into(), ..Default::default() });
        let started = Instant::now();
        let from = (0..4).map(|p| pb::PartitionOffset { topic: topic.clone(), partition: p, offset: 0 }).collect();
        let request = pb::SubscribeRequest { from_offsets: from, translator: reference, ..Default::default() };
        let mut follower = Follower::start(&mut client, request).await.unwrap();
        follower.until(&ends(&topic), Duration::from_secs(600)).await.unwrap();
        assert_eq!(follower.records.len(), records);
        translated.push((name, started.elapsed()));
    }
    let instantiate = {
        let host = tributary_wasm::Host::new(&Default::default()).unwrap();
        let bytes = std::fs::read(repo_root().join("translators/dist/identity.wasm")).unwrap();
        let component = host.compile(&bytes).unwrap();
        let translator = host.translator(&component, String::new()).unwrap();
        let runs = 200;
        let total: Duration = (0..runs).map(|_| translator.time_instantiate().unwrap()).sum();
        total / runs
    };

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
    for (name, d) in &translated {
        row(&format!("Subscribe from 0 through {name} translator"), *d);
        let per_record = (d.as_secs_f64() - subscribe.as_secs_f64()) / records as f64 * 1e9;
        println!("{:<44} {:>10.0} ns/record over no translator", "", per_record);
    }
    println!("{:<44} {:>10.2?}   (instantiate + init, identity, mean of 200)", "translator instance", instantiate);
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

//! What a translator costs per record, in both versions of the contract: version 1 (records
//! lowered and lifted one by one through the canonical ABI) and version 2 (one buffer of frames
//! each way per batch), for the identity, the field mapper in Rust, JavaScript and Python.
//!
//! `scripts/bench.sh translators`. Each row is Subscribe from 0 through the gateway (the release
//! binary, its own process) on a topic of A's JSON records, against the same Subscribe without a
//! translator in the same run: µs per record over none. The raw consumer's time on the same topic
//! is printed for scale. Sizing: BENCH_RECORDS (2,000,000 records of ~100 B, 4 partitions) for the
//! Rust rows, BENCH_SLOW_RECORDS (100,000; 0 skips them) for JavaScript and Python, whose engines
//! run tens of times slower; BENCH_RUNS (2): each row is the best of that many runs (noise only adds time).

use std::time::{Duration, Instant};

use tributary_server::pb::{self, translators_client::TranslatorsClient};
use tributary_testkit::{bench::*, *};

/// The field mapper's configuration in every language.
const MAPPER: &str = r#"{"rename": {"station": "location"}, "drop": ["pad"]}"#;

/// Best of `runs` Subscribes from 0 through `translator` (or none), each checked to deliver
/// every record.
async fn best_subscribe(
    client: &mut Client,
    topic: &str,
    partitions: i32,
    records: usize,
    translator: Option<(&str, &str)>,
    runs: usize,
) -> Duration {
    let ends = ends(topic);
    let mut best = Duration::MAX;
    for _ in 0..runs.max(1) {
        let request = pb::SubscribeRequest {
            from_offsets: from_start(topic, partitions),
            translator: translator.map(|(name, config)| pb::TranslatorRef {
                name: name.into(),
                config: config.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let started = Instant::now();
        let delivered = follow(client, request, &ends).await as usize;
        best = best.min(started.elapsed());
        assert_eq!(delivered, records, "every record delivered");
    }
    best
}

struct Row<'a> {
    what: &'a str,
    file_v1: &'a str,
    file_v2: &'a str,
    config: &'a str,
}

/// One table: no translator, then each row's version 1 and version 2.
async fn table(client: &mut Client, registry: &mut Registry, topic: &str, records: usize, rows: &[Row<'_>]) {
    let partitions = ends(topic).len() as i32;
    let runs = env("BENCH_RUNS", 2);
    let none = best_subscribe(client, topic, partitions, records, None, runs).await;
    println!("\n{records} records, Subscribe from 0: no translator {none:.2?} (best of {runs})");
    println!(
        "{:<28} {:>12} {:>12} {:>12} {:>12} {:>8}",
        "translator", "v1 time", "v1 µs/rec", "v2 time", "v2 µs/rec", "v1/v2"
    );
    for row in rows {
        let mut cells = Vec::new();
        for (version, file) in [("v1", row.file_v1), ("v2", row.file_v2)] {
            let name = format!("{}-{version}", row.file_v2.trim_end_matches(".wasm"));
            let started = Instant::now();
            let uploaded = upload(registry, &name, file).await;
            println!("  ({name}: {} bytes, uploaded and compiled in {:.1?})", uploaded.size, started.elapsed());
            let d = best_subscribe(client, topic, partitions, records, Some((&name, row.config)), runs).await;
            let per_record = (d.as_secs_f64() - none.as_secs_f64()) / records as f64 * 1e6;
            cells.push((d, per_record));
        }
        println!(
            "{:<28} {:>12.2?} {:>12.2} {:>12.2?} {:>12.2} {:>7.1}x",
            row.what,
            cells[0].0,
            cells[0].1,
            cells[1].0,
            cells[1].1,
            cells[0].1 / cells[1].1.max(1e-9)
        );
    }
}

#[tokio::main]
async fn main() {
    let records = env("BENCH_RECORDS", 2_000_000);
    let slow_records = env("BENCH_SLOW_RECORDS", 100_000);
    let partitions = env("BENCH_PARTITIONS", 4) as i32;

    let (topic, slow) = (new_topic("bench-tr", partitions).await, new_topic("bench-tr-slow", partitions).await);
    fill(&topic, records, 100, 1);
    fill(&slow, slow_records.max(1), 100, 1);
    println!(
        "setup: {records} + {slow_records} records of ~100 B (JSON objects), one per key, {partitions} partitions"
    );
    let (raw, profile) = best_raw(&ends(&topic), records);
    println!("raw consumer ({profile}), {records} records: {raw:.2?}, for scale");

    // JavaScript and Python components carry an engine: seconds to compile at upload.
    let gateway = Process::spawn_logging_to(
        &[&topic, &slow],
        &[("TRIBUTARY__TRANSLATORS__COMPILE_TIMEOUT_MS", "600000")],
        std::process::Stdio::null(),
    )
    .await;
    let mut client = connect(gateway.addr).await;
    let mut registry = TranslatorsClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap(),
    )
    .max_decoding_message_size(64 << 20);

    let rust = [
        Row { what: "identity (Rust)", file_v1: "identity-v1.wasm", file_v2: "identity.wasm", config: "" },
        Row {
            what: "field mapper (Rust)",
            file_v1: "field-mapper-v1.wasm",
            file_v2: "field-mapper.wasm",
            config: MAPPER,
        },
    ];
    table(&mut client, &mut registry, &topic, records, &rust).await;
    if slow_records == 0 {
        delete_topics().await;
        return;
    }
    let slow_rows = [
        Row {
            what: "field mapper (JavaScript)",
            file_v1: "js-field-mapper-v1.wasm",
            file_v2: "js-field-mapper.wasm",
            config: MAPPER,
        },
        Row {
            what: "field mapper (Python)",
            file_v1: "py-field-mapper-v1.wasm",
            file_v2: "py-field-mapper.wasm",
            config: MAPPER,
        },
        Row {
            what: "field mapper (Rust)",
            file_v1: "field-mapper-v1.wasm",
            file_v2: "field-mapper.wasm",
            config: MAPPER,
        },
    ];
    table(&mut client, &mut registry, &slow, slow_records, &slow_rows).await;
    delete_topics().await;
}

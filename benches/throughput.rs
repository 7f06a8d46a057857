//! The gateway against the best a user could do instead: a raw rdkafka consumer tuned for
//! throughput, on the same topic, in the same run. Prints ratios; asserts nothing about speed
//! (the machine is shared and noisy).
//!
//! `scripts/bench.sh` (starts Kafka, builds the translators, runs this in release). Sizing:
//! BENCH_RECORDS (default 2,000,000), BENCH_VALUE_BYTES (100), BENCH_PARTITIONS (4),
//! BENCH_FANOUT (followers at the head, default "1,10,100"), BENCH_FANOUT_RECORDS (200,000).
//!
//! The gateway runs as its own process (the release binary), like in production; the clients run
//! in this process and only count what they receive, so the client side costs little.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};
use tributary_server::pb::{self, gateway_client::GatewayClient, translators_client::TranslatorsClient};
use tributary_testkit::*;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// librdkafka settings a user would try for a fast consumer (FINDINGS: no single profile wins for
/// every record size, so the baseline is the best of them, measured here).
fn profiles() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
    vec![
        ("librdkafka defaults", vec![]),
        (
            "throughput-tuned",
            vec![
                ("fetch.max.bytes", "104857600"),
                ("max.partition.fetch.bytes", "16777216"),
                ("queued.min.messages", "2000000"),
                ("queued.max.messages.kbytes", "1048576"),
                ("fetch.wait.max.ms", "100"),
                ("fetch.queue.backoff.ms", "0"),
                ("socket.receive.buffer.bytes", "4194304"),
            ],
        ),
        (
            "defaults + bigger fetches, no backoff",
            vec![
                ("max.partition.fetch.bytes", "4194304"),
                ("queued.max.messages.kbytes", "131072"),
                ("queued.min.messages", "1000000"),
                ("fetch.queue.backoff.ms", "0"),
            ],
        ),
    ]
}

/// A raw consumer poll loop (no copy; it only touches each payload) reading every partition of
/// `ends` from the start. With `rebuild`, it also builds the state (key -> value, owned), as a user
/// without the gateway would.
fn raw_read(settings: &[(&str, &str)], ends: &BTreeMap<(String, i32), i64>, rebuild: bool) -> Duration {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique_topic("raw"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    let consumer: BaseConsumer = config.create().expect("raw consumer");
    let mut list = TopicPartitionList::new();
    for (t, p) in ends.keys() {
        list.add_partition_offset(t, *p, Offset::Beginning).unwrap();
    }
    let started = Instant::now();
    consumer.assign(&list).unwrap();
    let mut left: HashMap<i32, i64> = ends.iter().filter(|(_, e)| **e > 0).map(|((_, p), e)| (*p, *e)).collect();
    let mut state: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut touched = 0usize;
    while !left.is_empty() {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.expect("raw consume");
        touched += m.payload().map_or(0, <[u8]>::len);
        if rebuild {
            if let Some(k) = m.key() {
                match m.payload() {
                    Some(v) => state.insert(k.to_vec(), v.to_vec()),
                    None => state.remove(k),
                };
            }
        }
        if left.get(&m.partition()).is_some_and(|end| m.offset() + 1 >= *end) {
            left.remove(&m.partition());
        }
    }
    let elapsed = started.elapsed();
    assert!(touched > 0);
    elapsed
}

type Gw = GatewayClient<tonic::transport::Channel>;

/// Subscribes with `request` and reads until every partition reaches `ends`, counting records.
async fn follow(client: &mut Gw, request: pb::SubscribeRequest, ends: &BTreeMap<(String, i32), i64>) -> u64 {
    let mut stream = client.subscribe(request).await.expect("subscribe").into_inner();
    let mut pos: BTreeMap<(String, i32), i64> = BTreeMap::new();
    let mut count = 0u64;
    while !ends.iter().all(|(k, e)| pos.get(k).is_some_and(|p| p >= e)) {
        let message = stream.message().await.expect("stream").expect("stream ended early");
        match message.message.expect("message") {
            pb::subscribe_response::Message::Records(batch) => {
                count += batch.records.len() as u64;
                for r in batch.records {
                    pos.insert((r.topic, r.partition), r.offset + 1);
                }
            }
            pb::subscribe_response::Message::Progress(p) => {
                for o in p.offsets {
                    pos.insert((o.topic, o.partition), o.offset);
                }
            }
        }
    }
    count
}

fn from_start(topic: &str, partitions: i32) -> Vec<pb::PartitionOffset> {
    (0..partitions).map(|p| pb::PartitionOffset { topic: topic.into(), partition: p, offset: 0 }).collect()
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, as in proc(5)).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

struct Table {
    baseline: Duration,
    records: usize,
}

impl Table {
    fn row(&self, what: &str, d: Duration) {
        let rate = self.records as f64 / d.as_secs_f64();
        println!("{what:<52} {d:>10.2?} {rate:>12.0} {:>9.2}x", self.baseline.as_secs_f64() / d.as_secs_f64());
    }
}

#[tokio::main]
async fn main() {
    let records = env("BENCH_RECORDS", 2_000_000);
    let value_bytes = env("BENCH_VALUE_BYTES", 100);
    let partitions = env("BENCH_PARTITIONS", 4) as i32;
    let fanout: Vec<usize> = std::env::var("BENCH_FANOUT")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let fanout_records = env("BENCH_FANOUT_RECORDS", 200_000);
    let topic = unique_topic("bench");
    create_topic(&topic, partitions).await;

    // One record per key (the snapshot case that matters): `records` distinct keys.
    let pad = "x".repeat(value_bytes.saturating_sub(60));
    let started = Instant::now();
    let writer = Writer::new(&topic);
    for i in 0..records {
        let value = format!(r#"{{"id":{i},"station":"north","status":"on-air","pad":"{pad}"}}"#);
        writer.send(&Out::kv(&format!("key-{i:08}"), Some(&value)));
    }
    writer.flush();
    let key_value_bytes = records * (12 + value_bytes.max(60));
    println!(
        "setup: {records} records of ~{value_bytes} B, one per key, {partitions} partitions, produced in {:.2?}",
        started.elapsed()
    );
    let ends = ends(&topic);

    // The baseline: the best of the raw profiles, each run twice (best kept: the noise is one-sided).
    println!("\nraw rdkafka BaseConsumer poll loop, read_committed, no copy (the baseline is the best profile):");
    let mut best: Option<(Duration, &str)> = None;
    for (name, settings) in profiles() {
        let d = (0..2).map(|_| tokio::task::block_in_place(|| raw_read(&settings, &ends, false))).min().unwrap();
        let shown: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {name:<40} {d:>9.2?} {:>10.0} rec/s  {}",
            records as f64 / d.as_secs_f64(),
            if shown.is_empty() { "-".into() } else { shown.join(" ") }
        );
        if best.is_none_or(|(b, _)| d < b) {
            best = Some((d, name));
        }
    }
    let (baseline, baseline_name) = best.unwrap();
    let rebuild = tokio::task::block_in_place(|| {
        let settings = profiles().into_iter().find(|(n, _)| *n == baseline_name).unwrap().1;
        raw_read(&settings, &ends, true)
    });
    println!("  baseline: {baseline_name}");
    let table = Table { baseline, records };

    println!("\n{:<52} {:>10} {:>12} {:>10}", "what", "time", "records/s", "vs raw");
    table.row(&format!("raw consumer ({baseline_name}) = baseline"), baseline);
    table.row("raw consumer + state rebuild (HashMap, owned)", rebuild);

    // Start to ready: the gateway process loads the whole topic into its view.
    let started = Instant::now();
    let mut gateway = Process::spawn(&[&topic], &[]).await;
    let ready = started.elapsed();
    table.row("gateway start to ready (process start included)", ready);
    let pid = gateway.child.id();
    let rss_loaded = gateway.rss_kib();

    let mut client = connect(gateway.addr).await;
    let request = || pb::SubscribeRequest { from_offsets: from_start(&topic, partitions), ..Default::default() };
    let started = Instant::now();
    let delivered = follow(&mut client, request(), &ends).await;
    let subscribe = started.elapsed();
    assert_eq!(delivered as usize, records);
    table.row("Subscribe from 0 (catch-up reader, then tail)", subscribe);

    let started = Instant::now();
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    let snapshot_time = started.elapsed();
    assert_eq!(snap.entries.len(), records);
    println!(
        "{:<52} {snapshot_time:>10.2?} {:>12} {:>9.2}x   (vs raw rebuild; {} chunks)",
        "GetSnapshot, full state, one record per key",
        "-",
        rebuild.as_secs_f64() / snapshot_time.as_secs_f64(),
        snap.chunks
    );
    drop(snap);

    // Translators on the same subscription.
    let mut registry = TranslatorsClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap(),
    );
    for (name, file, config) in [
        ("identity", "identity.wasm", ""),
        ("mapper", "field-mapper.wasm", r#"{"rename": {"station": "location"}, "drop": ["pad"]}"#),
    ] {
        let bytes = std::fs::read(repo_root().join("translators/dist").join(file))
            .expect("scripts/build-translators.sh builds the translators");
        use pb::upload_translator_request::Part;
        let messages = vec![
            pb::UploadTranslatorRequest {
                part: Some(Part::Header(pb::UploadHeader { name: name.into(), ..Default::default() })),
            },
            pb::UploadTranslatorRequest { part: Some(Part::Chunk(bytes.into())) },
        ];
        registry.upload(tokio_stream::iter(messages)).await.unwrap();
        let translator = Some(pb::TranslatorRef { name: name.into(), config: config.into(), ..Default::default() });
        let started = Instant::now();
        let n = follow(&mut client, pb::SubscribeRequest { translator, ..request() }, &ends).await;
        let d = started.elapsed();
        assert_eq!(n as usize, records);
        table.row(&format!("Subscribe from 0 through the {name} translator"), d);
        let per_record = (d.as_secs_f64() - subscribe.as_secs_f64()) / records as f64 * 1e6;
        println!("{:<52} {per_record:>10.2} µs/record over no translator", "");
    }

    // First message on a small topic: the latency floor of a stream.
    let small = unique_topic("bench-small");
    create_topic(&small, 1).await;
    produce(&small, &[Out::kv("k", Some("v"))]);
    drop(client);
    gateway.kill();
    let mut gateway = Process::spawn(&[&topic, &small], &[]).await;
    let pid_small = gateway.child.id();
    let mut client = connect(gateway.addr).await;
    let (mut sub, mut snap, mut describe) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..21 {
        let started = Instant::now();
        let mut s = client
            .subscribe(pb::SubscribeRequest { topics: vec![small.clone()], ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
        sub.push(started.elapsed());
        drop(s);
        let started = Instant::now();
        let mut s = client.get_snapshot(topic_snapshot(&small)).await.unwrap().into_inner();
        s.message().await.unwrap().unwrap();
        snap.push(started.elapsed());
        let started = Instant::now();
        client.describe_topics(pb::DescribeTopicsRequest { topics: vec![small.clone()] }).await.unwrap();
        describe.push(started.elapsed());
    }
    println!(
        "\nfirst message on a small topic, median of 21: Subscribe {:.2?}, GetSnapshot {:.2?}, DescribeTopics {:.2?}",
        median(sub),
        median(snap),
        median(describe)
    );

    // Fan-out at the head: N followers of `small` while A writes `fanout_records`; gateway CPU per
    // million delivered records, and the delivery latency (produce to receive) of each record.
    for &n in &fanout {
        let start_ends = self::ends(&small);
        let from: Vec<pb::PartitionOffset> = start_ends
            .iter()
            .map(|((t, p), o)| pb::PartitionOffset { topic: t.clone(), partition: *p, offset: *o })
            .collect();
        let mut followers = Vec::new();
        for _ in 0..n {
            let mut c = connect(gateway.addr).await;
            let s = c
                .subscribe(pb::SubscribeRequest { from_offsets: from.clone(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            followers.push((c, s));
        }
        let cpu_before = cpu_seconds(pid_small);
        let topic = small.clone();
        let writer = tokio::task::spawn_blocking(move || {
            let w = Writer::new(&topic);
            for i in 0..fanout_records {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
                w.send(&Out::kv(&format!("f-{i}"), Some(&now.to_string())));
            }
            w.flush();
        });
        let target = fanout_records as u64;
        let mut tasks = Vec::new();
        for (i, (_c, mut s)) in followers.into_iter().enumerate() {
            tasks.push(tokio::spawn(async move {
                let (mut count, mut lags) = (0u64, Vec::new());
                while count < target {
                    let Some(m) = s.message().await.unwrap() else { break };
                    if let Some(pb::subscribe_response::Message::Records(b)) = m.message {
                        let now =
                            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros();
                        for r in &b.records {
                            // Sample the first follower's latency (every record).
                            if i == 0 {
                                let sent: u128 =
                                    std::str::from_utf8(r.value.as_deref().unwrap()).unwrap().parse().unwrap();
                                lags.push(Duration::from_micros(now.saturating_sub(sent) as u64));
                            }
                        }
                        count += b.records.len() as u64;
                    }
                }
                lags
            }));
        }
        writer.await.unwrap();
        let mut lags = Vec::new();
        for t in tasks {
            lags.extend(t.await.unwrap());
        }
        let cpu = cpu_seconds(pid_small) - cpu_before;
        let delivered = (n * fanout_records) as f64;
        println!(
            "fan-out: {n:>4} followers at the head, {fanout_records} records each: gateway CPU {:.2} s per million delivered; latency p50 {:.1?} p99 {:.1?}",
            cpu / delivered * 1e6,
            percentile(&mut lags, 0.5),
            percentile(&mut lags, 0.99),
        );
    }

    println!(
        "\nmemory: gateway RSS with the view loaded {:.0} MiB for ~{:.0} MiB of keys and values ({:.1}x)",
        rss_loaded as f64 / 1024.0,
        key_value_bytes as f64 / (1 << 20) as f64,
        rss_loaded as f64 * 1024.0 / key_value_bytes as f64
    );
    let _ = pid;
    gateway.kill();
}

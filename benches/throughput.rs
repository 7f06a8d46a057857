//! The gateway against the best a user could do instead: a raw rdkafka consumer tuned for
//! throughput, on the same topic, in the same run. Prints ratios; asserts nothing about speed
//! (the machine is shared and noisy).
//!
//! `scripts/bench.sh` (starts Kafka, builds the translators, runs this in release). Sizing, with
//! defaults: BENCH_RECORDS (2,000,000 records of BENCH_VALUE_BYTES = 100, one per key, in
//! BENCH_PARTITIONS = 4 partitions), BENCH_LARGE_RECORDS (1,000,000 records of 1 KiB),
//! BENCH_VERSIONS (10 versions per key for the many-versions snapshot), BENCH_FOLLOW_RECORDS
//! (1,000,000 written at full speed while followed), BENCH_RATE (20,000 records/s for 5 s, the
//! latency row), BENCH_IDLE (1,000 idle subscribers), BENCH_FANOUT (followers at the head,
//! "1,10,100,1000"; A writes at BENCH_FANOUT_RATE = 500,000 deliveries/s divided by the
//! followers, for 5 s or at most BENCH_FANOUT_RECORDS = 200,000 records), BENCH_FANOUT_TRANSLATED
//! (the same through the identity translator, "100"), BENCH_FANOUT_LINGER (the same with
//! `limits.head_linger_ms` 0, 1 and 5, each on a gateway of its own, "100,1000"), BENCH_STALLED (1,000
//! subscribers that never read),
//! BENCH_IDLE_CONNECTIONS (20,000 TCP connections that never speak HTTP/2, at most this process's
//! open-files limit minus 1,000), BENCH_METRICS_RUNS
//! (3 Subscribe-from-0 runs each against a gateway with and without its metrics exporter; 0 skips),
//! BENCH_CONFLATE_RECORDS (400,000 rewrites of BENCH_CONFLATE_KEYS = 1,000 keys at full speed,
//! followed by a slow reader that applies 50,000 records/s, with and without `conflate`),
//! BENCH_SCHEMA_RECORDS (1,000,000 Avro records framed by the schema registry at
//! TRIBUTARY_TEST_REGISTRY, loaded as bytes and decoded to JSON; 0 skips).
//!
//! The gateway runs as its own process (the release binary), like in production; the clients run
//! in this process and only count what they receive, so the client side costs little.
//!
//! Each raw profile reads twice and the baseline is its best run; the gateway's start to ready and
//! Subscribe from 0 rows run as often ([`RUNS`]) and show their best run too, so noise (which
//! only slows a run down) weighs the same on both sides of a ratio.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use rdkafka::{consumer::Consumer, Message, Offset, TopicPartitionList};
use tributary_server::pb::{self, translators_client::TranslatorsClient};
use tributary_testkit::{bench::*, *};

/// The schema of the Avro rows: an order of a few fields, as A's serializers would write it.
const BENCH_AVRO: &str = r#"{"type": "record", "name": "Assignment", "namespace": "bench", "fields": [
    {"name": "id", "type": "long"},
    {"name": "station", "type": "string"},
    {"name": "status", "type": {"type": "enum", "name": "Status", "symbols": ["SCHEDULED", "ON_AIR", "DONE"]}},
    {"name": "note", "type": ["null", "string"], "default": null},
    {"name": "pad", "type": "string"}
]}"#;

/// Writes `records` Avro values of [`BENCH_AVRO`], framed with schema `id`, one per key; returns
/// the size of one value.
fn fill_avro(topic: &str, records: usize, id: u32) -> usize {
    use apache_avro::types::Value as Avro;
    let schema = apache_avro::Schema::parse_str(BENCH_AVRO).unwrap();
    let writer = Writer::new(topic);
    let mut size = 0;
    for i in 0..records {
        let value = Avro::Record(vec![
            ("id".into(), Avro::Long(i as i64)),
            ("station".into(), Avro::String("north".into())),
            ("status".into(), Avro::Enum(1, "ON_AIR".into())),
            ("note".into(), Avro::Union(0, Box::new(Avro::Null))),
            ("pad".into(), Avro::String("x".repeat(40))),
        ]);
        let framed = tributary_testkit::schemas::framed(id, &apache_avro::to_avro_datum(&schema, value).unwrap());
        size = framed.len();
        writer.send(&Out { value: Some(framed), ..Out::kv(&format!("key-{i:08}"), None) });
    }
    writer.flush();
    size
}

/// Threads of a process.
fn threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count())
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

struct Table {
    baseline: Duration,
    records: usize,
}

/// Runs of each gateway row timed against the raw baseline: as many as of each raw profile, the
/// best one shown (the noise of a shared machine only slows a run down).
const RUNS: usize = 2;

/// A gateway started on `topics` [`RUNS`] times; the last one, kept, and the best start to ready.
async fn spawn_best(topics: &[&str]) -> (Process, Duration) {
    let (mut kept, mut best): (Option<Process>, Duration) = (None, Duration::MAX);
    for _ in 0..RUNS {
        if let Some(mut earlier) = kept.take() {
            earlier.kill();
        }
        let started = Instant::now();
        kept = Some(Process::spawn(topics, &[]).await);
        best = best.min(started.elapsed());
    }
    (kept.expect("at least one run"), best)
}

/// The best of [`RUNS`] reads of every record from the start of `ends` (`records` of them).
async fn follow_best(
    client: &mut Client,
    request: impl Fn() -> pb::SubscribeRequest,
    ends: &BTreeMap<(String, i32), i64>,
    records: usize,
) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..RUNS {
        let started = Instant::now();
        assert_eq!(follow(client, request(), ends).await as usize, records);
        best = best.min(started.elapsed());
    }
    best
}

impl Table {
    fn row(&self, what: &str, d: Duration) {
        let rate = self.records as f64 / d.as_secs_f64();
        println!("{what:<52} {d:>10.2?} {rate:>12.0} {:>9.2}x", self.baseline.as_secs_f64() / d.as_secs_f64());
    }
}

/// Writes `count` records whose values start with their send time (µs, 20 digits), ~100 B each,
/// at `rate` records/s or as fast as the producer goes.
fn produce_stamped(topic: &str, count: usize, rate: Option<u64>) {
    let writer = Writer::new(topic);
    writer.warm_up();
    let started = Instant::now();
    let pad = "x".repeat(80);
    for i in 0..count {
        if let Some(rate) = rate {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        writer.send(&Out::kv(&format!("s-{i}"), Some(&format!("{:020}{pad}", micros_now()))));
    }
    writer.flush();
}

/// A raw consumer following `from` until `count` records arrived: when the last arrived, and the
/// lag of every record.
fn raw_follow(
    settings: &[(&str, &str)],
    from: &BTreeMap<(String, i32), i64>,
    count: usize,
) -> (Instant, Vec<Duration>) {
    let consumer = raw_consumer(settings);
    let mut list = TopicPartitionList::new();
    for ((t, p), o) in from {
        list.add_partition_offset(t, *p, Offset::Offset(*o)).unwrap();
    }
    consumer.assign(&list).unwrap();
    let mut lags = Vec::with_capacity(count);
    while lags.len() < count {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.expect("raw consume");
        lags.push(lag_of(m.payload().unwrap(), micros_now()));
    }
    (Instant::now(), lags)
}

/// The gateway's counterpart of [`raw_follow`], on an open subscription.
async fn gateway_follow(
    mut stream: tonic::Streaming<pb::SubscribeResponse>,
    count: usize,
    sample: bool,
) -> (Instant, Vec<Duration>) {
    let (mut received, mut lags) = (0, Vec::new());
    while received < count {
        let Some(m) = stream.message().await.expect("stream") else { break };
        if let Some(pb::subscribe_response::Message::Records(b)) = m.message {
            let now = micros_now();
            received += b.records.len();
            if sample {
                lags.extend(b.records.iter().map(|r| lag_of(r.value.as_deref().unwrap(), now)));
            }
        }
    }
    (Instant::now(), lags)
}

/// Decodes a `SubscribeResponse` only as far as counting its records. The fan-out rows measure
/// the gateway: followers in this process that built every record would take the cores the
/// gateway needs, fall behind its tail and measure catching up instead.
#[derive(Clone, Copy, Default)]
struct CountingCodec;

impl tonic::codec::Codec for CountingCodec {
    type Encode = pb::SubscribeRequest;
    type Decode = usize;
    type Encoder =
        <tonic_prost::ProstCodec<pb::SubscribeRequest, pb::SubscribeResponse> as tonic::codec::Codec>::Encoder;
    type Decoder = CountingCodec;

    fn encoder(&mut self) -> Self::Encoder {
        tonic::codec::Codec::encoder(
            &mut tonic_prost::ProstCodec::<pb::SubscribeRequest, pb::SubscribeResponse>::default(),
        )
    }

    fn decoder(&mut self) -> Self::Decoder {
        CountingCodec
    }
}

impl tonic::codec::Decoder for CountingCodec {
    type Item = usize;
    type Error = tonic::Status;

    /// Records in a response: field 1 (`records`) holds a `RecordBatch` whose field 1 entries
    /// are the records; a progress message (field 2) has none.
    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<usize>, tonic::Status> {
        use bytes::Buf;
        use prost::encoding::decode_varint;
        let bad = |e: prost::DecodeError| tonic::Status::internal(e.to_string());
        let mut count = 0;
        while buf.has_remaining() {
            let key = decode_varint(buf).map_err(bad)?;
            let len = decode_varint(buf).map_err(bad)? as usize;
            if key != (1 << 3 | 2) {
                buf.advance(len);
                continue;
            }
            let end = buf.remaining() - len;
            while buf.remaining() > end {
                decode_varint(buf).map_err(bad)?;
                let record = decode_varint(buf).map_err(bad)? as usize;
                buf.advance(record);
                count += 1;
            }
        }
        Ok(Some(count))
    }
}

/// A follower that counts what it receives (see [`CountingCodec`]).
async fn counting_follow(channel: tonic::transport::Channel, request: pb::SubscribeRequest, count: usize) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/tributary.v1.Gateway/Subscribe");
    let mut stream =
        grpc.server_streaming(tonic::Request::new(request), path, CountingCodec).await.unwrap().into_inner();
    let mut received = 0;
    while received < count {
        let Some(n) = stream.message().await.expect("stream") else { break };
        received += n;
    }
}

/// This process's soft limit of open files (`ulimit -n`).
fn open_files_limit() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap_or_default();
    line.split_whitespace().nth(3).and_then(|n| n.parse().ok()).unwrap_or(usize::MAX)
}

fn at(ends: &BTreeMap<(String, i32), i64>) -> Vec<pb::PartitionOffset> {
    ends.iter().map(|((t, p), o)| pb::PartitionOffset { topic: t.clone(), partition: *p, offset: *o }).collect()
}

fn lag_summary(lags: &mut [Duration]) -> String {
    format!("p50 {:.1?} p99 {:.1?}", percentile(lags, 0.5), percentile(lags, 0.99))
}

/// N followers of `topic` at the head (through `translator` if given) while A writes at a rate
/// that makes the same number of deliveries per second whatever N: the rate, the records each
/// follower got, the gateway's CPU seconds per million delivered, and the delivery latency
/// (produce to receive) seen by one follower (the others only count what they receive).
#[allow(clippy::too_many_arguments)]
async fn fan_out(
    pid: u32,
    clients: &mut [Client],
    channels: &[tonic::transport::Channel],
    topic: &str,
    n: usize,
    translator: Option<&str>,
    fanout_rate: usize,
    fanout_records: usize,
) -> (usize, usize, f64, Vec<Duration>) {
    let rate = (fanout_rate / n.max(1)).max(1);
    let count = fanout_records.min(rate * 5).max(1);
    let from = at(&ends(topic));
    let translator = translator.map(|name| pb::TranslatorRef { name: name.into(), ..Default::default() });
    let request =
        || pb::SubscribeRequest { from_offsets: from.clone(), translator: translator.clone(), ..Default::default() };
    let sampled = clients[0].subscribe(request()).await.unwrap().into_inner();
    let sampled = tokio::spawn(gateway_follow(sampled, count, true));
    let counting: Vec<_> =
        (1..n).map(|i| tokio::spawn(counting_follow(channels[i % channels.len()].clone(), request(), count))).collect();
    let cpu_before = cpu_seconds(pid);
    let t = topic.to_string();
    tokio::task::spawn_blocking(move || produce_stamped(&t, count, Some(rate as u64))).await.unwrap();
    let lags = sampled.await.unwrap().1;
    for t in counting {
        t.await.unwrap();
    }
    let cpu = cpu_seconds(pid) - cpu_before;
    (rate, count, cpu / (n * count) as f64 * 1e6, lags)
}

#[tokio::main]
async fn main() {
    let records = env("BENCH_RECORDS", 2_000_000);
    let value_bytes = env("BENCH_VALUE_BYTES", 100);
    let partitions = env("BENCH_PARTITIONS", 4) as i32;
    let large_records = env("BENCH_LARGE_RECORDS", 1_000_000);
    let versions = env("BENCH_VERSIONS", 10).max(1);
    let follow_records = env("BENCH_FOLLOW_RECORDS", 1_000_000);
    let rate = env("BENCH_RATE", 20_000) as u64;
    let idle = env("BENCH_IDLE", 1_000);
    let fanout: Vec<usize> = std::env::var("BENCH_FANOUT")
        .unwrap_or_else(|_| "1,10,100,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let fanout_translated: Vec<usize> = std::env::var("BENCH_FANOUT_TRANSLATED")
        .unwrap_or_else(|_| "100".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let fanout_records = env("BENCH_FANOUT_RECORDS", 200_000);
    let fanout_linger_followers: Vec<usize> = std::env::var("BENCH_FANOUT_LINGER")
        .unwrap_or_else(|_| "100,1000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let fanout_rate = env("BENCH_FANOUT_RATE", 500_000);
    let stalled = env("BENCH_STALLED", 1_000);
    let idle_connections = env("BENCH_IDLE_CONNECTIONS", 20_000);
    let metrics_runs = env("BENCH_METRICS_RUNS", 3);
    let conflate_records = env("BENCH_CONFLATE_RECORDS", 400_000);
    let conflate_keys = env("BENCH_CONFLATE_KEYS", 1_000).max(1);
    let schema_records = env("BENCH_SCHEMA_RECORDS", 1_000_000);

    // One record per key (the snapshot case that matters): `records` distinct keys.
    let topic = new_topic("bench", partitions).await;
    let started = Instant::now();
    let key_value_bytes = fill(&topic, records, value_bytes, 1);
    println!(
        "setup: {records} records of ~{value_bytes} B, one per key, {partitions} partitions, produced in {:.2?}",
        started.elapsed()
    );
    let ends = ends(&topic);
    let (baseline, baseline_name) = best_raw(&ends, records);
    let rebuild = tokio::task::block_in_place(|| raw_read(&settings_of(baseline_name), &ends, true));
    let table = Table { baseline, records };

    println!("\n{:<52} {:>10} {:>12} {:>10}", "what", "time", "records/s", "vs raw");
    table.row(&format!("raw consumer ({baseline_name}) = baseline"), baseline);
    table.row("raw consumer + state rebuild (HashMap, owned)", rebuild);

    // Start to ready: the gateway process loads the whole topic into its view. The other topics
    // it exposes are empty until later rows.
    let (small, follow_topic) = (new_topic("bench-small", 1).await, new_topic("bench-follow", partitions).await);
    let (mut gateway, ready) = spawn_best(&[&topic, &small, &follow_topic]).await;
    table.row("gateway start to ready (process start included)", ready);
    let pid = gateway.child.id();
    let rss_loaded = gateway.rss_kib();

    let mut client = connect(gateway.addr).await;
    let request = || pb::SubscribeRequest { from_offsets: from_start(&topic, partitions), ..Default::default() };
    let subscribe = follow_best(&mut client, request, &ends, records).await;
    table.row("Subscribe from 0 (catch-up reader, then tail)", subscribe);

    // The cost of metrics: a second gateway on the same topic with the Prometheus exporter on,
    // Subscribe from 0 alternating between the two (medians of BENCH_METRICS_RUNS each).
    if metrics_runs > 0 {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let listen = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let metered =
            Process::spawn(&[&topic, &small, &follow_topic], &[("TRIBUTARY__METRICS__LISTEN", &listen)]).await;
        let metered_ready = started.elapsed();
        let mut metered_client = connect(metered.addr).await;
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..metrics_runs {
            for (times, client) in [(&mut off, &mut client), (&mut on, &mut metered_client)] {
                let started = Instant::now();
                assert_eq!(follow(client, request(), &ends).await as usize, records);
                times.push(started.elapsed());
            }
        }
        let (off, on) = (median(off), median(on));
        let cost = (on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0;
        table.row("Subscribe from 0, metrics off (median)", off);
        table.row("Subscribe from 0, metrics on (median)", on);
        println!("{:<52} {cost:>+9.1}%   (goal: < 3%)", "metrics on vs off, Subscribe from 0");
        println!(
            "{:<52} {metered_ready:>10.2?}   (metrics off: {ready:.2?}, one run each)",
            "gateway start to ready, metrics on"
        );
        drop(metered);
    }

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
        upload(&mut registry, name, file).await;
        let translator = Some(pb::TranslatorRef { name: name.into(), config: config.into(), ..Default::default() });
        let started = Instant::now();
        let n = follow(&mut client, pb::SubscribeRequest { translator, ..request() }, &ends).await;
        let d = started.elapsed();
        assert_eq!(n as usize, records);
        table.row(&format!("Subscribe from 0 through the {name} translator"), d);
        let per_record = (d.as_secs_f64() - subscribe.as_secs_f64()) / records as f64 * 1e6;
        println!("{:<52} {per_record:>10.2} µs/record over no translator", "");
    }

    // Following a producer that writes as fast as it can: the raw follower, then the gateway's.
    let raw_follow_settings: Vec<(&str, &str)> =
        settings_of(baseline_name).into_iter().chain([("fetch.wait.max.ms", "10")]).collect();
    println!(
        "\nfollowing a producer ({follow_records} records of ~100 B, {partitions} partitions); raw follower: {} settings + fetch.wait.max.ms=10",
        baseline_name
    );
    let mut follow_rows = Vec::new();
    for rate in [None, Some(rate)] {
        let count = match rate {
            None => follow_records,
            Some(r) => (r * 5) as usize,
        };
        let from = self::ends(&follow_topic);
        let settings = raw_follow_settings.clone();
        let raw_from = from.clone();
        let raw = tokio::task::spawn_blocking(move || raw_follow(&settings, &raw_from, count));
        tokio::time::sleep(Duration::from_millis(500)).await; // assigned and fetching
        let started = Instant::now();
        let t = follow_topic.clone();
        tokio::task::spawn_blocking(move || produce_stamped(&t, count, rate)).await.unwrap();
        let (raw_done, mut raw_lags) = raw.await.unwrap();
        let raw_time = raw_done - started;

        let from = self::ends(&follow_topic);
        let stream = client
            .subscribe(pb::SubscribeRequest { from_offsets: at(&from), ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        let follower = tokio::spawn(gateway_follow(stream, count, true));
        let started = Instant::now();
        let t = follow_topic.clone();
        tokio::task::spawn_blocking(move || produce_stamped(&t, count, rate)).await.unwrap();
        let (gw_done, mut gw_lags) = follower.await.unwrap();
        let gw_time = gw_done - started;
        let what = match rate {
            None => "full speed".to_string(),
            Some(r) => format!("{r} records/s"),
        };
        follow_rows.push(format!(
            "  {what:<16} raw follower {:.2?} ({:.0} rec/s), lag {}; gateway follower {:.2?} ({:.0} rec/s), lag {}; ratio {:.2}x",
            raw_time,
            count as f64 / raw_time.as_secs_f64(),
            lag_summary(&mut raw_lags),
            gw_time,
            count as f64 / gw_time.as_secs_f64(),
            lag_summary(&mut gw_lags),
            raw_time.as_secs_f64() / gw_time.as_secs_f64(),
        ));
        println!("{}", follow_rows.last().unwrap());
    }

    // First message on a small topic: the latency floor of a stream.
    produce(&small, &[Out::kv("k", Some("v"))]);
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

    // Clients spread over a few connections (HTTP/2 multiplexes streams, as real clients do).
    let (mut clients, mut channels) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        clients.push(connect(gateway.addr).await);
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap();
        channels.push(channel.connect().await.unwrap());
    }

    // Idle subscribers at the head: what each costs while nothing is written, on a gateway of
    // their own (in one that has freed memory before, new streams reuse it and RSS hides them).
    {
        let idle_gateway = Process::spawn(&[&small], &[]).await;
        let mut idle_clients = Vec::new();
        for _ in 0..20 {
            idle_clients.push(connect(idle_gateway.addr).await);
        }
        let head = at(&self::ends(&small));
        let (rss_before, threads_before) = (idle_gateway.rss_kib(), threads(idle_gateway.child.id()));
        let mut idle_streams = Vec::new();
        for i in 0..idle {
            let c = &mut idle_clients[i % 20];
            let mut s = c
                .subscribe(pb::SubscribeRequest { from_offsets: head.clone(), ..Default::default() })
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().unwrap();
            idle_streams.push(s);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss_idle, threads_idle) = (idle_gateway.rss_kib(), threads(idle_gateway.child.id()));
        println!(
            "idle subscribers: {idle} streams at the head cost {:.1} KiB of gateway RSS each; threads {threads_before} -> {threads_idle}",
            rss_idle.saturating_sub(rss_before) as f64 / idle.max(1) as f64
        );
    }

    // Fan-out at the head: N followers of `small` while A writes at a rate that makes the same
    // number of deliveries per second whatever N (with one follower: as fast as the producer
    // goes); gateway CPU per million delivered records, and the delivery latency (produce to
    // receive) seen by one follower (the others only count what they receive). A latency far
    // above the rate's spacing means the gateway did not keep up at that rate.
    println!();
    // Then the same through the identity translator: followers with the same translator share
    // its outcomes, so each record is translated once.
    let runs = fanout.iter().map(|&n| (n, None)).chain(fanout_translated.iter().map(|&n| (n, Some("identity"))));
    for (n, translator) in runs {
        let (rate, count, cpu, mut lags) =
            fan_out(pid, &mut clients, &channels, &small, n, translator, fanout_rate, fanout_records).await;
        let through = translator.map_or(String::new(), |t| format!(" through the {t} translator"));
        println!(
            "fan-out: {n:>4} followers at the head{through}, {count} records each at {rate} rec/s: gateway CPU {cpu:.2} s per million delivered; latency {}",
            lag_summary(&mut lags),
        );
    }
    // The same with a linger at the head (`limits.head_linger_ms`), each on a gateway of its own
    // that exposes only the small topic.
    for n in fanout_linger_followers.iter().copied() {
        for linger in ["0", "1", "5"] {
            let lingering = Process::spawn_logging_to(
                &[&small],
                &[("TRIBUTARY__LIMITS__HEAD_LINGER_MS", linger)],
                std::process::Stdio::null(),
            )
            .await;
            let (mut own_clients, mut own_channels) = (Vec::new(), Vec::new());
            for _ in 0..20 {
                own_clients.push(connect(lingering.addr).await);
                let channel = tonic::transport::Channel::from_shared(format!("http://{}", lingering.addr)).unwrap();
                own_channels.push(channel.connect().await.unwrap());
            }
            let (rate, count, cpu, mut lags) = fan_out(
                lingering.child.id(),
                &mut own_clients,
                &own_channels,
                &small,
                n,
                None,
                fanout_rate,
                fanout_records,
            )
            .await;
            println!(
                "fan-out: {n:>4} followers at the head, head_linger_ms = {linger}, {count} records each at {rate} rec/s: gateway CPU {cpu:.2} s per million delivered; latency {}",
                lag_summary(&mut lags),
            );
        }
    }
    println!(
        "\nmemory: gateway RSS with the view loaded {:.0} MiB for ~{:.0} MiB of keys and values ({:.1}x)",
        rss_loaded as f64 / 1024.0,
        key_value_bytes as f64 / (1 << 20) as f64,
        rss_loaded as f64 * 1024.0 / key_value_bytes as f64
    );
    drop(clients);
    drop(client);
    gateway.kill();

    // Hostile clients (issue 8): subscribers that never read, each on its own connection (on a
    // shared one they would block each other's first message client-side), from offset 0 of the
    // main topic; then TCP connections that never speak HTTP/2.
    if stalled > 0 {
        let gateway = Process::spawn(&[&topic], &[]).await;
        let (rss_before, threads_before) = (gateway.rss_kib(), threads(gateway.child.id()));
        let mut held = Vec::new();
        for _ in 0..stalled {
            let mut c = connect(gateway.addr).await;
            let mut s = c.subscribe(request()).await.unwrap().into_inner();
            s.message().await.unwrap().unwrap();
            held.push((c, s));
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        println!(
            "\nstalled subscribers: {stalled} streams from offset 0 that never read: gateway RSS {} -> {} MiB, threads {threads_before} -> {}",
            rss_before / 1024,
            gateway.rss_kib() / 1024,
            threads(gateway.child.id())
        );
        drop(held);
        drop(gateway);
    }
    // The connections take file descriptors in this process too: stay under its limit.
    let idle_connections = idle_connections.min(open_files_limit().saturating_sub(1_000));
    if idle_connections > 0 {
        let gateway = Process::spawn(&[&small], &[]).await;
        let (rss_before, threads_before) = (gateway.rss_kib(), threads(gateway.child.id()));
        let mut sockets = Vec::new();
        let mut waiting = 0;
        for chunk in (0..idle_connections).collect::<Vec<_>>().chunks(1000) {
            let mut connects = tokio::task::JoinSet::new();
            for _ in chunk {
                let addr = gateway.addr;
                connects.spawn(tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr)));
            }
            while let Some(c) = connects.join_next().await {
                match c {
                    Ok(Ok(Ok(s))) => sockets.push(s),
                    _ => waiting += 1,
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (rss, threads_now) = (gateway.rss_kib(), threads(gateway.child.id()));
        let started = Instant::now();
        let mut c = connect(gateway.addr).await;
        c.describe_topics(pb::DescribeTopicsRequest { topics: vec![small.clone()] }).await.unwrap();
        println!(
            "idle TCP connections: {} open ({waiting} not accepted in 2 s): gateway RSS {} -> {} MiB, threads {threads_before} -> {threads_now}; a new client's first call took {:.2?}",
            sockets.len(),
            rss_before / 1024,
            rss / 1024,
            started.elapsed()
        );
    }

    // 1 KiB records: the same read, raw and through the gateway.
    if large_records > 0 {
        let large = new_topic("bench-large", partitions).await;
        fill(&large, large_records, 1024, 1);
        let large_ends = self::ends(&large);
        println!("\n{large_records} records of ~1 KiB, one per key, {partitions} partitions:");
        let (large_baseline, _) = best_raw(&large_ends, large_records);
        let large_table = Table { baseline: large_baseline, records: large_records };
        let (mut gateway, ready) = spawn_best(&[&large]).await;
        large_table.row("gateway start to ready, 1 KiB records", ready);
        let mut client = connect(gateway.addr).await;
        let cpu_before = cpu_seconds(gateway.child.id());
        let request = || pb::SubscribeRequest { from_offsets: from_start(&large, partitions), ..Default::default() };
        let subscribe = follow_best(&mut client, request, &large_ends, large_records).await;
        large_table.row("Subscribe from 0, 1 KiB records", subscribe);
        let cpu = (cpu_seconds(gateway.child.id()) - cpu_before) / RUNS as f64;
        println!("{:<52} {:>10.2}s of gateway CPU per million records", "", cpu / large_records as f64 * 1e6);
        gateway.kill();
    }

    // Avro values framed by a real schema registry: the gateway loading them as bytes, then
    // decoding each to JSON ([schemas]), against the raw consumer reading the same topic.
    if schema_records > 0 {
        let avro = new_topic("bench-avro", partitions).await;
        let id = tokio::task::block_in_place(|| tributary_testkit::schemas::register("AVRO", BENCH_AVRO));
        let bytes = fill_avro(&avro, schema_records, id);
        let avro_ends = self::ends(&avro);
        println!(
            "\n{schema_records} Avro records of {bytes} B (framed, schema {id} in the registry at {}), one per key, {partitions} partitions:",
            tributary_testkit::schemas::registry_url()
        );
        let (avro_baseline, _) = best_raw(&avro_ends, schema_records);
        let avro_table = Table { baseline: avro_baseline, records: schema_records };
        let registry = tributary_testkit::schemas::registry_url();
        let on_error = format!("TRIBUTARY__SCHEMAS__TOPICS__{avro}__ON_ERROR");
        let mut loads = Vec::new();
        for decoded in [false, true] {
            let env: Vec<(&str, &str)> = match decoded {
                false => vec![],
                true => vec![("TRIBUTARY__SCHEMAS__REGISTRY", registry.as_str()), (on_error.as_str(), "fail")],
            };
            let started = Instant::now();
            let mut gateway = Process::spawn(&[&avro], &env).await;
            let took = started.elapsed();
            let cpu = cpu_seconds(gateway.child.id());
            let what = if decoded { "decoded to JSON" } else { "kept as bytes" };
            avro_table.row(&format!("gateway start to ready, Avro {what}"), took);
            println!("{:<52} {:>10.2}s of gateway CPU per million records", "", cpu / schema_records as f64 * 1e6);
            if decoded {
                // What B receives: JSON.
                let mut client = connect(gateway.addr).await;
                let snap = snapshot(&mut client, topic_snapshot(&avro)).await.expect("snapshot");
                let first = snap.entries.first().expect("an entry");
                assert!(serde_json::from_slice::<serde_json::Value>(&first.value).is_ok(), "decoded values are JSON");
            }
            loads.push((took, cpu));
            gateway.kill();
        }
        let per_record = |a: f64, b: f64| (b - a) / schema_records as f64 * 1e6;
        println!(
            "{:<52} {:>10.2} µs per record (start to ready), {:.2} µs of CPU",
            "decoding cost",
            per_record(loads[0].0.as_secs_f64(), loads[1].0.as_secs_f64()),
            per_record(loads[0].1, loads[1].1)
        );
    }

    // A slow reader (it applies 50,000 records/s) following A rewriting a few keys at full speed,
    // with and without conflation, each on a gateway of its own: how many records it had to
    // apply, how long after A stopped its state was current, and what the gateway held.
    if conflate_records > 0 {
        println!("\nslow reader (applies 50 k records/s) while A rewrites {conflate_keys} keys {conflate_records} times at full speed:");
        for conflate in [false, true] {
            let topic = new_topic("bench-conflate", partitions).await;
            let gateway = Process::spawn(&[&topic], &[]).await;
            let rss_before = gateway.rss_kib();
            let mut client = connect(gateway.addr).await;
            let request = pb::SubscribeRequest { topics: vec![topic.clone()], conflate, ..Default::default() };
            let mut stream = client.subscribe(request).await.unwrap().into_inner();
            stream.message().await.unwrap().unwrap();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<BTreeMap<(String, i32), i64>>();
            let reader = tokio::spawn(async move {
                type Offsets = BTreeMap<(String, i32), i64>;
                let current = |ends: &Option<Offsets>, position: &Offsets| {
                    ends.as_ref().is_some_and(|e| e.iter().all(|(k, e)| position.get(k).is_some_and(|p| p >= e)))
                };
                let (mut applied, mut position, mut ends) = (0usize, Offsets::new(), None);
                let mut done_rx = done_rx;
                loop {
                    let m = tokio::select! {
                        m = stream.message() => m.expect("stream").expect("the stream goes on"),
                        e = &mut done_rx, if ends.is_none() => {
                            ends = e.ok();
                            if current(&ends, &position) {
                                return (applied, Instant::now());
                            }
                            continue;
                        }
                    };
                    match m.message {
                        Some(pb::subscribe_response::Message::Records(b)) => {
                            applied += b.records.len();
                            for r in &b.records {
                                position.insert((r.topic.clone(), r.partition), r.offset + 1);
                            }
                            // 20 µs per record: a B that writes each change to its own store.
                            tokio::time::sleep(Duration::from_micros(20 * b.records.len() as u64)).await;
                        }
                        Some(pb::subscribe_response::Message::Progress(p)) => {
                            for o in p.offsets {
                                position.insert((o.topic, o.partition), o.offset);
                            }
                        }
                        None => {}
                    }
                    if current(&ends, &position) {
                        return (applied, Instant::now());
                    }
                }
            });
            let pid = gateway.child.id();
            let sampler = tokio::spawn(async move {
                let mut peak = 0;
                loop {
                    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                        .ok()
                        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(String::from))
                        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()))
                        .unwrap_or(0);
                    peak = peak.max(rss);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if rss == 0 {
                        return peak;
                    }
                }
            });
            let (writer_topic, keys) = (topic.clone(), conflate_keys);
            tokio::task::spawn_blocking(move || {
                let writer = Writer::new(&writer_topic);
                writer.warm_up();
                let pad = "x".repeat(80);
                for i in 0..conflate_records {
                    writer.send(&Out::kv(&format!("c-{}", i % keys), Some(&format!("{:020}{pad}", micros_now()))));
                }
                writer.flush();
            })
            .await
            .unwrap();
            let stopped = Instant::now();
            let _ = done_tx.send(self::ends(&topic));
            let (applied, current) = reader.await.unwrap();
            let rss_peak = {
                let peak_now = gateway.rss_kib();
                drop(gateway);
                sampler.await.unwrap().max(peak_now)
            };
            println!(
                "  {:<14} applied {applied:>7} records; state current {:>8.2?} after A stopped; gateway RSS {} -> peak {} MiB",
                if conflate { "conflate" } else { "every record" },
                current.saturating_duration_since(stopped),
                rss_before / 1024,
                rss_peak / 1024
            );
        }
    }

    // Many versions per key: the snapshot against a raw rebuild that reads every version.
    if versions > 1 {
        let versioned = new_topic("bench-versions", partitions).await;
        fill(&versioned, records, value_bytes, versions);
        let v_ends = self::ends(&versioned);
        let rebuild = tokio::task::block_in_place(|| raw_read(&settings_of(baseline_name), &v_ends, true));
        let gateway = Process::spawn(&[&versioned], &[]).await;
        let mut client = connect(gateway.addr).await;
        let started = Instant::now();
        let snap = snapshot(&mut client, topic_snapshot(&versioned)).await.unwrap();
        let d = started.elapsed();
        assert_eq!(snap.entries.len(), records / versions);
        println!(
            "\nGetSnapshot of {} keys with {versions} versions each: {d:.2?}; raw rebuild {rebuild:.2?}; {:.2}x faster",
            records / versions,
            rebuild.as_secs_f64() / d.as_secs_f64()
        );
    }
    delete_topics().await;
}

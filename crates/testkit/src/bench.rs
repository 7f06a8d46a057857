//! What both benchmarks share: sizes from the environment, the raw consumer a user would write
//! instead of the gateway (the baseline, tried with several librdkafka profiles), and A's records.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use rdkafka::{
    config::ClientConfig,
    consumer::{BaseConsumer, Consumer},
    Message, Offset, TopicPartitionList,
};

use tributary_server::pb;

use crate::{bootstrap, unique_topic, Client, Out, Writer};

/// A size from the environment variable `name`, or `default`.
/// Topics a benchmark created ([`new_topic`]), deleted by [`delete_topics`] when it ends: a run of
/// the head bench writes gigabytes, and a broker kept between runs would fill its disk.
static CREATED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A fresh topic of `partitions` named after `prefix`, deleted by [`delete_topics`].
pub async fn new_topic(prefix: &str, partitions: i32) -> String {
    let name = unique_topic(prefix);
    crate::create_topic(&name, partitions).await;
    CREATED.lock().unwrap_or_else(|e| e.into_inner()).push(name.clone());
    name
}

/// Deletes the topics made with [`new_topic`] so far.
pub async fn delete_topics() {
    let names = std::mem::take(&mut *CREATED.lock().unwrap_or_else(|e| e.into_inner()));
    for name in names {
        crate::delete_topic(&name).await;
    }
}

pub fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The librdkafka settings a user would try for a fast consumer (FINDINGS: no single profile wins for
/// every record size, so the baseline is the best of them, measured here).
pub fn profiles() -> Vec<(&'static str, Vec<(&'static str, &'static str)>)> {
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
pub fn raw_read(settings: &[(&str, &str)], ends: &BTreeMap<(String, i32), i64>, rebuild: bool) -> Duration {
    let consumer = raw_consumer(settings);
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

/// Writes `records` records of ~`value_bytes` to `topic`, `versions` per key (the last version of
/// every key is the state), and returns the bytes of keys and values in the state.
pub fn fill(topic: &str, records: usize, value_bytes: usize, versions: usize) -> usize {
    let pad = "x".repeat(value_bytes.saturating_sub(60));
    let keys = records / versions;
    let writer = Writer::new(topic);
    for i in 0..records {
        let value = format!(r#"{{"id":{i},"station":"north","status":"on-air","pad":"{pad}"}}"#);
        writer.send(&Out::kv(&format!("key-{:08}", i % keys), Some(&value)));
    }
    writer.flush();
    keys * (12 + value_bytes.max(60))
}

/// The best raw profile on `ends` (each run twice; the noise is one-sided), printed.
pub fn best_raw(ends: &BTreeMap<(String, i32), i64>, records: usize) -> (Duration, &'static str) {
    println!("raw rdkafka BaseConsumer poll loop, read_committed, no copy (the baseline is the best profile):");
    let mut best: Option<(Duration, &str)> = None;
    for (name, settings) in profiles() {
        let d = (0..2).map(|_| tokio::task::block_in_place(|| raw_read(&settings, ends, false))).min().unwrap();
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
    let best = best.unwrap();
    println!("  baseline: {}", best.1);
    best
}

/// The settings of the profile named `profile`.
pub fn settings_of(profile: &str) -> Vec<(&'static str, &'static str)> {
    profiles().into_iter().find(|(n, _)| *n == profile).unwrap().1
}

/// Subscribes with `request` and reads until every partition reaches `ends`, counting records.
pub async fn follow(client: &mut Client, request: pb::SubscribeRequest, ends: &BTreeMap<(String, i32), i64>) -> u64 {
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

/// Offset 0 of every partition of `topic`.
pub fn from_start(topic: &str, partitions: i32) -> Vec<pb::PartitionOffset> {
    (0..partitions).map(|p| pb::PartitionOffset { topic: topic.into(), partition: p, offset: 0 }).collect()
}

/// A plain rdkafka consumer of the suite's Kafka (read_committed, no commits) with `settings` on
/// top: the baselines' reader, to be assigned its partitions.
pub fn raw_consumer(settings: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap())
        .set("group.id", unique_topic("raw"))
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.create().expect("raw consumer")
}

/// The `p` quantile (0 to 1) of `xs` (sorted in place; not empty).
pub fn percentile(xs: &mut [Duration], p: f64) -> Duration {
    xs.sort();
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

/// Microseconds since the Unix epoch: the stamp a benchmark's producer writes first in a value.
pub fn micros_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64
}

/// Receive time minus send time of a stamped value (its first 20 bytes: [`micros_now`]).
pub fn lag_of(value: &[u8], now: u64) -> Duration {
    let sent: u64 = std::str::from_utf8(&value[..20]).unwrap().parse().unwrap();
    Duration::from_micros(now.saturating_sub(sent))
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, as in proc(5)).
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

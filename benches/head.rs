//! The head at full speed (issue 26): a producer in a process of its own writes ~100 B records to
//! a fresh 4-partition topic as fast as it can for BENCH_HEAD_SECONDS (9); the followers read at
//! the head and, after a warm-up of 1 s, are measured for BENCH_HEAD_SECONDS - 3 seconds (6):
//! records delivered per second, latency from the send stamp in each value to its arrival
//! (p50, p99, p999), and CPU per million records delivered of the gateway, of the client (this
//! process: the followers) and of the broker (BENCH_BROKER_PID, set by scripts/bench.sh), and the
//! gateway's CPU per million records A wrote (what 10 followers cost over one). Each
//! case runs on a topic of its own: the raw follower (the best raw profile of the throughput
//! bench, plus `fetch.wait.max.ms=100`), one Subscribe, then BENCH_HEAD_FOLLOWERS (10) Subscribes,
//! then as many again on a gateway whose tails do not borrow from the pool (`tail_pool_bytes = 0`,
//! each partition's tail within its own bounds, as before the pool).
//! Everything shares the machine's cores, as it would for a user trying this on one machine.
//! Asserts nothing.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rdkafka::{consumer::Consumer, Message, Offset, TopicPartitionList};
use tributary_server::pb;
use tributary_testkit::{bench::*, *};

const PARTITIONS: i32 = 4;

/// What the followers saw in the measured window.
#[derive(Default)]
struct Window {
    delivered: usize,
    lags: Vec<Duration>,
}

/// The measured window: from `start` to `end`, as seen by every follower.
#[derive(Clone)]
struct Clock {
    start: Instant,
    end: Instant,
    seen: Arc<Mutex<Window>>,
    done: Arc<AtomicBool>,
}

impl Clock {
    /// Counts a batch that arrived now (its stamped values give the latency), if in the window.
    fn arrived<'a>(&self, values: impl Iterator<Item = &'a [u8]>) {
        let now = Instant::now();
        if now < self.start || now >= self.end {
            return;
        }
        let stamp = micros_now();
        let mut seen = self.seen.lock().unwrap();
        for value in values {
            seen.delivered += 1;
            seen.lags.push(lag_of(value, stamp));
        }
    }

    fn over(&self) -> bool {
        self.done.load(Ordering::Relaxed) || Instant::now() >= self.end
    }
}

/// The producer process: stamped ~100 B values as fast as librdkafka takes them, for `seconds`;
/// prints how many it wrote.
fn produce(topic: &str, seconds: u64) {
    let writer = Writer::new(topic);
    writer.warm_up();
    let pad = "x".repeat(80);
    let (started, mut sent) = (Instant::now(), 0usize);
    while started.elapsed() < Duration::from_secs(seconds) {
        for _ in 0..1000 {
            writer.send(&Out::kv(&format!("h-{sent}"), Some(&format!("{:020}{pad}", micros_now()))));
            sent += 1;
        }
    }
    writer.flush();
    println!("{sent}");
}

fn raw_follower(topic: &str, settings: &[(&str, &str)], clock: Clock) {
    let consumer = raw_consumer(settings);
    let mut list = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        list.add_partition_offset(topic, p, Offset::Offset(0)).unwrap();
    }
    consumer.assign(&list).unwrap();
    while !clock.over() {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else { continue };
        let m = m.expect("raw consume");
        clock.arrived(m.payload().into_iter());
    }
}

async fn gateway_follower(addr: std::net::SocketAddr, topic: String, clock: Clock) {
    let mut client = connect(addr).await;
    let request = pb::SubscribeRequest { from_offsets: from_start(&topic, PARTITIONS), ..Default::default() };
    let mut stream = client.subscribe(request).await.expect("subscribe").into_inner();
    while !clock.over() {
        let Ok(message) = tokio::time::timeout(Duration::from_millis(200), stream.message()).await else { continue };
        let Some(message) = message.expect("stream") else { break };
        if let Some(pb::subscribe_response::Message::Records(batch)) = message.message {
            clock.arrived(batch.records.iter().filter_map(|r| r.value.as_deref()));
        }
    }
}

/// CPU seconds of this process so far.
fn own_cpu() -> f64 {
    cpu_seconds(std::process::id())
}

struct Case<'a> {
    name: String,
    gateway_pid: Option<u32>,
    broker_pid: Option<u32>,
    clock: &'a Clock,
}

/// Runs the producer process for `seconds` while the followers run; prints the case's row.
async fn measure(case: Case<'_>, topic: &str, seconds: u64, followers: impl std::future::Future<Output = ()>) {
    let producer = std::process::Command::new(std::env::current_exe().unwrap())
        .env("BENCH_HEAD_PRODUCE", format!("{topic}:{seconds}"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the producer process");
    let cpu = |pid: Option<u32>| pid.map_or(0.0, cpu_seconds);
    // CPU is counted over the window: sampled at its start and end.
    let sampler = {
        let (clock, gateway, broker) = (case.clock.clone(), case.gateway_pid, case.broker_pid);
        tokio::spawn(async move {
            tokio::time::sleep_until(clock.start.into()).await;
            let before = (cpu(gateway), own_cpu(), cpu(broker));
            tokio::time::sleep_until(clock.end.into()).await;
            (cpu(gateway) - before.0, own_cpu() - before.1, cpu(broker) - before.2)
        })
    };
    followers.await;
    let (gateway_cpu, client_cpu, broker_cpu) = sampler.await.unwrap();
    let out = tokio::task::spawn_blocking(move || producer.wait_with_output()).await.unwrap().unwrap();
    let produced: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0.0);
    let window = (case.clock.end - case.clock.start).as_secs_f64();
    let mut seen = std::mem::take(&mut *case.clock.seen.lock().unwrap());
    let millions = seen.delivered as f64 / 1e6;
    let per_million = |cpu: f64| if millions > 0.0 { format!("{:.2}", cpu / millions) } else { "-".into() };
    let (p50, p99, p999) = if seen.lags.is_empty() {
        (Duration::ZERO, Duration::ZERO, Duration::ZERO)
    } else {
        (percentile(&mut seen.lags, 0.5), percentile(&mut seen.lags, 0.99), percentile(&mut seen.lags, 0.999))
    };
    // The gateway's CPU per million of A's records (written in the window at the producer's
    // average rate): what fan-out costs over one follower, whether or not the followers keep up.
    let written_millions = produced / seconds as f64 * window / 1e6;
    let per_written = match case.gateway_pid {
        Some(_) if written_millions > 0.0 => format!("{:.2}", gateway_cpu / written_millions),
        _ => "-".into(),
    };
    println!(
        "{:<24} {:>8.0} k/s {:>8.0} k/s {:>9.1?} {:>9.1?} {:>9.1?} {:>8} {:>8} {:>8} {:>10}",
        case.name,
        produced / seconds as f64 / 1e3,
        seen.delivered as f64 / window / 1e3,
        p50,
        p99,
        p999,
        if case.gateway_pid.is_some() { per_million(gateway_cpu) } else { "-".into() },
        per_million(client_cpu),
        per_million(broker_cpu),
        per_written,
    );
}

fn clock(seconds: u64) -> Clock {
    let now = Instant::now();
    Clock {
        start: now + Duration::from_secs(1),
        end: now + Duration::from_secs(seconds.saturating_sub(2).max(2)),
        seen: Arc::default(),
        done: Arc::default(),
    }
}

#[tokio::main]
async fn main() {
    if let Ok(what) = std::env::var("BENCH_HEAD_PRODUCE") {
        let (topic, seconds) = what.rsplit_once(':').unwrap();
        produce(topic, seconds.parse().unwrap());
        return;
    }
    let seconds = env("BENCH_HEAD_SECONDS", 9) as u64;
    let many = env("BENCH_HEAD_FOLLOWERS", 10);
    let broker_pid: Option<u32> = std::env::var("BENCH_BROKER_PID").ok().and_then(|p| p.parse().ok());

    // The raw follower's profile: the throughput bench's best on a topic of this size.
    let sizing = new_topic("head-sizing", PARTITIONS).await;
    fill(&sizing, 1_000_000, 100, 1);
    let (_, profile) = best_raw(&ends(&sizing), 1_000_000);
    let settings: Vec<(&'static str, &'static str)> =
        settings_of(profile).into_iter().chain([("fetch.wait.max.ms", "100")]).collect();
    println!(
        "\nthe head at full speed: a producer process writes ~100 B records to a fresh {PARTITIONS}-partition topic for {seconds} s; \
         followers measured from 1 s to {} s; CPU per million records delivered (broker: {})",
        seconds.saturating_sub(2).max(2),
        broker_pid.map_or("not measured: set BENCH_BROKER_PID".to_string(), |p| format!("pid {p}"))
    );
    println!("raw follower: {profile} + fetch.wait.max.ms=100");
    println!(
        "{:<24} {:>12} {:>12} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10}",
        "follower", "produced", "delivered", "p50", "p99", "p999", "gateway", "client", "broker", "gateway/A"
    );
    println!(
        "(delivered: records/s summed over the followers; CPU: seconds per million of them; gateway/A: the \
         gateway's seconds per million records A wrote)"
    );

    let topic = new_topic("head-raw", PARTITIONS).await;
    let c = clock(seconds);
    let follower = {
        let (topic, settings, c) = (topic.clone(), settings.clone(), c.clone());
        tokio::task::spawn_blocking(move || raw_follower(&topic, &settings, c))
    };
    let case = Case { name: "raw consumer".into(), gateway_pid: None, broker_pid, clock: &c };
    measure(case, &topic, seconds, async { follower.await.unwrap() }).await;
    // Each case writes gigabytes: its topic goes once it is measured.
    delete_topics().await;

    // The defaults, whose tails borrow from the pool to keep followers that fall seconds behind
    // in memory, then the many followers again on tails within their own bounds (each follower
    // that falls behind them reads from Kafka).
    let no_pool: &[(&str, &str)] = &[("TRIBUTARY__LIMITS__TAIL_POOL_BYTES", "0")];
    for (followers, tail) in [(1, &[][..]), (many, &[][..]), (many, no_pool)] {
        let topic = new_topic("head-gw", PARTITIONS).await;
        let gateway = Process::spawn(&[&topic], tail).await;
        let c = clock(seconds);
        let tasks: Vec<_> =
            (0..followers).map(|_| tokio::spawn(gateway_follower(gateway.addr, topic.clone(), c.clone()))).collect();
        let name = format!(
            "{followers} Subscribe{}{}",
            if followers > 1 { "s" } else { "" },
            if tail.is_empty() { "" } else { ", no pool" }
        );
        let case = Case { name, gateway_pid: Some(gateway.child.id()), broker_pid, clock: &c };
        measure(case, &topic, seconds, async {
            for t in tasks {
                t.await.unwrap();
            }
        })
        .await;
        c.done.store(true, Ordering::Relaxed);
        drop(gateway);
        delete_topics().await;
    }
}

//! Faults of the network between the gateway and Kafka (issue 25): a broker of its own that every
//! client reaches through a proxy that adds latency, stalls every connection, resets them in the
//! middle of fetches and refuses new ones. Through all of it a follower at the head and a
//! catch-up reader must get every record once, in order, and the `tributary.kafka` health service
//! and the `tributary_kafka_reachable` metric must say when Kafka is away and when it is back.
//! How long each recovery took is printed.

use std::time::{Duration, Instant};

use tonic_health::pb::health_check_response::ServingStatus;
use tributary_server::pb;

use crate::{
    hardening::{health_of, OwnBroker},
    harness::*,
    observability::{metric, scrape},
};

/// Records of `topic` written from `next` on: keys cycle over 50, values name their sequence.
struct Load {
    writer: Writer,
    next: usize,
    pad: String,
}

impl Load {
    fn write(&mut self, n: usize) {
        for _ in 0..n {
            let value = format!(r#"{{"seq":{},"pad":"{}"}}"#, self.next, self.pad);
            self.writer.send(&Out::kv(&format!("key-{:02}", self.next % 50), Some(&value)));
            self.next += 1;
        }
    }

    /// Writes and waits for Kafka to have them (blocking: the proxy may be slow).
    async fn write_flushed(&mut self, n: usize) {
        self.write(n);
        tokio::task::block_in_place(|| self.writer.flush());
    }
}

/// The gateway process and its metrics endpoint.
struct Observed {
    gateway: Process,
    metrics: std::net::SocketAddr,
}

impl Observed {
    /// Waits until the `tributary.kafka` health service says `want`, then checks that the metric
    /// says the same; returns how long the health took to say it.
    async fn wait_health(&self, want: ServingStatus, within: Duration, what: &str) -> Duration {
        let started = Instant::now();
        while health_of(self.gateway.addr, "tributary.kafka").await != want {
            assert!(started.elapsed() < within, "{what}: tributary.kafka is not {want:?} after {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        // The metric is set by the same refresh; the exporter may show the previous one briefly.
        let reachable = if want == ServingStatus::Serving { 1.0 } else { 0.0 };
        while metric(&scrape(self.metrics).await, "tributary_kafka_reachable", &[]) != reachable {
            assert!(started.elapsed() < within, "{what}: tributary_kafka_reachable is not {reachable}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        took
    }
}

/// Every record of each partition once, offsets 0 to the end with none missing (the topic has no
/// transactions, so its offsets are dense), and the same state as a raw rebuild.
fn check_complete(follower: &Follower, bootstrap: &str, topic: &str) {
    let raw = tokio::task::block_in_place(|| read_all_at(bootstrap, topic));
    for partition in 0..2 {
        let got: Vec<i64> = follower.records.iter().filter(|r| r.partition == partition).map(|r| r.offset).collect();
        let want: Vec<i64> = raw.iter().filter(|r| r.partition == partition).map(|r| r.offset).collect();
        assert_eq!(got, want, "partition {partition}: every record once, in order");
        assert_eq!(want, (0..want.len() as i64).collect::<Vec<_>>(), "partition {partition}: dense offsets");
    }
    let mut state = State::new();
    for r in &follower.records {
        apply(&mut state, r);
    }
    assert_eq!(state, rebuild(&raw), "the follower's model equals a raw rebuild");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_between_the_gateway_and_kafka_lose_and_repeat_nothing() {
    let (_broker, proxy, bootstrap) = OwnBroker::start_behind_proxy(19_692).await;
    let topic = unique_topic("faults");
    create_topic_at(&bootstrap, &topic, 2).await;
    let mut load = Load { writer: Writer::new_at(&bootstrap, &topic), next: 0, pad: "x".repeat(900) };
    load.write_flushed(2_000).await;

    // The real binary, with its metrics endpoint; a short tail buffer, so that a subscriber from
    // offset 0 reads Kafka through a catch-up reader.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let env = [
        ("TRIBUTARY__METRICS__LISTEN", metrics.to_string()),
        ("TRIBUTARY__LIMITS__TAIL_MAX_RECORDS", "100".to_string()),
        ("TRIBUTARY__KAFKA__METADATA_REFRESH_MS", "500".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let gateway = Process::spawn_at(&bootstrap, &[&topic], &env, std::process::Stdio::null()).await;
    let observed = Observed { gateway, metrics };
    let gateway = &observed.gateway;
    let mut client = connect(gateway.addr).await;
    observed.wait_health(ServingStatus::Serving, Duration::from_secs(20), "at start").await;
    let from_zero = || pb::SubscribeRequest {
        from_offsets: (0..2).map(|p| pb::PartitionOffset { topic: topic.clone(), partition: p, offset: 0 }).collect(),
        ..Default::default()
    };
    let mut head = Follower::start(&mut client, from_zero()).await.unwrap();
    head.until(&ends_at(&bootstrap, &topic), Duration::from_secs(60)).await.unwrap();
    let mut report = Vec::new();

    // Latency: 150 ms on every chunk each way. Slower, nothing else.
    proxy.set_latency(Duration::from_millis(150));
    load.write_flushed(200).await;
    let started = Instant::now();
    head.until(&ends_at(&bootstrap, &topic), Duration::from_secs(60)).await.unwrap();
    report.push(format!("150 ms of latency: 200 records followed in {:?}", started.elapsed()));
    assert_eq!(health_of(gateway.addr, "tributary.kafka").await, ServingStatus::Serving, "slow is not away");
    proxy.set_latency(Duration::ZERO);

    // A stall: every connection open, no byte moves. Health says Kafka is away; the view serves.
    proxy.stall();
    load.write(100); // held in the producer until the stall ends
    let noticed = observed.wait_health(ServingStatus::NotServing, Duration::from_secs(60), "stalled").await;
    assert_eq!(health_of(gateway.addr, "").await, ServingStatus::Serving, "the view still serves");
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.entries.len(), 50, "snapshots come from the view during the stall");
    proxy.resume();
    let started = Instant::now();
    load.write_flushed(100).await;
    head.until(&ends_at(&bootstrap, &topic), Duration::from_secs(90)).await.unwrap();
    let caught_up = started.elapsed();
    let healthy = observed.wait_health(ServingStatus::Serving, Duration::from_secs(60), "after the stall").await;
    report.push(format!(
        "a stall: NOT_SERVING after {noticed:?}; after it, the follower had every record in {caught_up:?}, SERVING in {:?}",
        caught_up + healthy
    ));

    // Resets in the middle of fetches: a catch-up reader reading 2,400 records of 1 KiB from 0
    // (slowed by 50 ms a chunk, so that its fetches are under way), and ingest, have every
    // connection reset three times.
    proxy.set_latency(Duration::from_millis(50));
    let mut catching_up = Follower::start(&mut client, from_zero()).await.unwrap();
    let started = Instant::now();
    for i in 1..=3 {
        while catching_up.records.len() < 400 * i {
            tokio::time::timeout(Duration::from_secs(5), catching_up.next()).await.ok();
        }
        load.write(50);
        proxy.reset_all();
    }
    proxy.set_latency(Duration::ZERO);
    let resets = proxy.accepted();
    load.write_flushed(0).await;
    let end = ends_at(&bootstrap, &topic);
    catching_up.until(&end, Duration::from_secs(90)).await.unwrap();
    head.until(&end, Duration::from_secs(90)).await.unwrap();
    report.push(format!(
        "3 resets mid-fetch: the catch-up reader had all {} records {:?} after it started ({resets} connections accepted in all)",
        catching_up.records.len(),
        started.elapsed()
    ));

    // Kafka unreachable: every connection reset and new ones refused for 5 s.
    proxy.refuse(true);
    proxy.reset_all();
    let noticed = observed.wait_health(ServingStatus::NotServing, Duration::from_secs(60), "refused").await;
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(noticed)).await;
    proxy.refuse(false);
    let started = Instant::now();
    load.write_flushed(100).await;
    let end = ends_at(&bootstrap, &topic);
    head.until(&end, Duration::from_secs(90)).await.unwrap();
    catching_up.until(&end, Duration::from_secs(90)).await.unwrap();
    let caught_up = started.elapsed();
    let healthy = observed.wait_health(ServingStatus::Serving, Duration::from_secs(60), "after the outage").await;
    report.push(format!(
        "connections refused for 5 s: NOT_SERVING after {noticed:?}; after it, every record in {caught_up:?}, SERVING in {:?}",
        caught_up + healthy
    ));

    check_complete(&head, &bootstrap, &topic);
    check_complete(&catching_up, &bootstrap, &topic);
    for line in report {
        println!("network faults: {line}");
    }
}

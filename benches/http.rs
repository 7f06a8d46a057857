//! The HTTP log: HTTP clients reading a whole topic directly and through nginx's cache, against
//! the tuned raw consumer's read of the same topic in the same run; the gateway's CPU per million
//! records delivered; the time to a snapshot's first byte and from a write to a waiting client.
//! Prints ratios; asserts nothing about speed (the machine is shared and noisy), only that every
//! client ends with the whole state.
//!
//! `scripts/bench.sh http`. Sizing, with defaults: BENCH_HTTP_RECORDS (1,000,000 records of
//! BENCH_VALUE_BYTES = 100, one per key) in 4 partitions, BENCH_HTTP_CLIENTS = 8, BENCH_HTTP_SSE =
//! 5,000 SSE streams at the head (0 skips; two file descriptors each). Clients run on
//! the same 2 cores as the gateway, Kafka and nginx: their JSON parsing is in every wall time,
//! so the gateway's own CPU is the column to compare.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use tributary_testkit::{bench::*, web::*, *};

/// `clients` followers through `addr` from the start of the topic to `ends`; wall time, records
/// delivered and requests made. Every client must end with `want`.
async fn read_all_through(
    clients: usize,
    addr: SocketAddr,
    topic: &str,
    start: &str,
    ends: &[i64],
    want: usize,
) -> (Duration, u64, usize) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (topic, start, ends) = (topic.to_string(), start.to_string(), ends.to_vec());
            tokio::spawn(async move {
                let mut state = State::new();
                let (urls, _, records) = follow_counting(addr, &topic, &start, &ends, &mut state).await;
                assert_eq!(state.len(), want, "a client ended without the whole state");
                (urls, records)
            })
        })
        .collect();
    let (mut requests, mut records) = (0, 0);
    for t in tasks {
        let (urls, n) = t.await.unwrap();
        requests += urls;
        records += n;
    }
    (started.elapsed(), records, requests)
}

/// [`follow`], also counting the records delivered.
async fn follow_counting(
    addr: SocketAddr,
    topic: &str,
    from: &str,
    ends: &[i64],
    state: &mut State,
) -> (usize, String, u64) {
    let (mut next, mut requests, mut records) = (from.to_string(), 0, 0u64);
    loop {
        let reply = get(addr, &format!("/v1/topics/{topic}/log?from={next}&live=1"), &[]).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        let answer = reply.json();
        records += answer["records"].as_array().map_or(0, Vec::len) as u64;
        apply_json(state, &answer);
        requests += 1;
        next = answer["next"].as_str().unwrap().to_string();
        if offsets(&answer).iter().zip(ends).all(|(o, e)| o >= e) {
            return (requests, next, records);
        }
    }
}

/// Milliseconds from a write to a long-polling client through `addr` having it, for `n` writes.
async fn write_to_client(addr: SocketAddr, topic: &str, from: &str, n: usize) -> Vec<f64> {
    let writer = Writer::new(topic);
    writer.warm_up();
    let mut next = from.to_string();
    let mut latencies = Vec::new();
    for i in 0..n {
        let key = format!("latency-{i}");
        let url = format!("/v1/topics/{topic}/log?from={next}&live=1");
        let poll = tokio::spawn(async move { get(addr, &url, &[]).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let written = Instant::now();
        // Not flushed: a flush waits for the producer thread's next poll (~100 ms), which is
        // no part of the delivery; the producer's linger.ms (5) sends it.
        writer.send(&Out { partition: Some((i % 4) as i32), ..Out::kv(&key, Some("x")) });
        let mut answer = poll.await.unwrap().json();
        loop {
            next = answer["next"].as_str().unwrap().to_string();
            if answer["records"].as_array().unwrap().iter().any(|r| r["key"] == key.as_str()) {
                break;
            }
            answer = get(addr, &format!("/v1/topics/{topic}/log?from={next}&live=1"), &[]).await.json();
        }
        latencies.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    latencies
}

/// The position at the head of `topic`, walked to from `from`.
async fn head(addr: SocketAddr, topic: &str, from: &str) -> String {
    let mut position = from.to_string();
    loop {
        let answer = get(addr, &format!("/v1/topics/{topic}/log?from={position}"), &[]).await.json();
        position = answer["next"].as_str().unwrap().to_string();
        if answer["up_to_date"] == true {
            return position;
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let records = env("BENCH_HTTP_RECORDS", 1_000_000);
    let value_bytes = env("BENCH_VALUE_BYTES", 100);
    let clients = env("BENCH_HTTP_CLIENTS", 8);
    let partitions = 4;
    let topic = unique_topic("bench-http");
    create_topic(&topic, partitions).await;
    let started = Instant::now();
    fill(&topic, records, value_bytes, 1);
    println!(
        "setup: {records} records of ~{value_bytes} B, one per key, {partitions} partitions, produced in {:.2?}",
        started.elapsed()
    );
    let ends_map: BTreeMap<(String, i32), i64> = ends(&topic);
    let ends: Vec<i64> = ends_map.values().copied().collect();
    let (baseline, _) = best_raw(&ends_map, records);

    let (http, http_s) = {
        let a = free_addr();
        (a, a.to_string())
    };
    let gateway = Process::spawn(&[&topic], &[("TRIBUTARY__HTTP__LISTEN", http_s.as_str())]).await;
    let pid = gateway.child.id();
    let ready = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    let ttfb = loop {
        let asked = Instant::now();
        let reply = get(http, &format!("/v1/topics/{topic}/log?from=-1"), &[]).await;
        // The whole body was read; the first byte came before it (measured again below).
        if reply.status == 200 {
            break asked.elapsed();
        }
        assert!(Instant::now() < deadline, "the gateway did not load in 10 minutes");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("gateway loaded in {:.2?}; a {records}-key snapshot read whole over HTTP in {ttfb:.2?}", ready.elapsed());
    let nginx = Nginx::start(http).await;
    let start = format!("1_{}", vec!["0"; partitions as usize].join("."));

    println!(
        "\n{:<52} {:>10} {:>13} {:>9} {:>9} {:>16}",
        "what", "time", "records/s", "vs raw", "requests", "gateway CPU/1M"
    );
    println!(
        "{:<52} {baseline:>10.2?} {:>13.0} {:>8.2}x {:>9} {:>16}",
        "raw consumer, best profile = baseline",
        records as f64 / baseline.as_secs_f64(),
        1.0,
        "-",
        "-"
    );
    let runs: [(&str, usize, SocketAddr); 4] = [
        ("1 HTTP client, direct", 1, http),
        ("N HTTP clients, direct", clients, http),
        ("N HTTP clients through nginx, cold cache", clients, nginx.addr),
        ("N HTTP clients through nginx, warm cache", clients, nginx.addr),
    ];
    for (what, n, addr) in runs {
        let cpu = cpu_seconds(pid);
        let (wall, delivered, requests) = read_all_through(n, addr, &topic, &start, &ends, records).await;
        let cpu = cpu_seconds(pid) - cpu;
        println!(
            "{:<52} {wall:>10.2?} {:>13.0} {:>8.2}x {requests:>9} {:>14.2} s",
            what.replace('N', &n.to_string()),
            delivered as f64 / wall.as_secs_f64(),
            baseline.as_secs_f64() * (delivered as f64 / records as f64) / wall.as_secs_f64(),
            cpu / (delivered as f64 / 1e6)
        );
    }

    // Time to first byte of a snapshot, and write-to-client latency at the head.
    let mut firsts = Vec::new();
    for _ in 0..5 {
        let asked = Instant::now();
        let mut body = open(http, "GET", &format!("/v1/topics/{topic}/log?from=-1"), &[]).await.into_body();
        let _first = body.frame().await;
        firsts.push(asked.elapsed().as_secs_f64() * 1000.0);
        drop(body);
    }
    firsts.sort_by(f64::total_cmp);
    println!(
        "\nsnapshot of {records} keys, time to first byte: median {:.1} ms (5 requests)",
        percentile(&firsts, 0.5)
    );
    for (what, addr) in [("direct", http), ("through nginx", nginx.addr)] {
        let position = head(http, &topic, &start).await;
        let mut l = write_to_client(addr, &topic, &position, 100).await;
        l.sort_by(f64::total_cmp);
        println!(
            "write to long-polling client, {what}: p50 {:.1} ms, p99 {:.1} ms (100 writes)",
            percentile(&l, 0.5),
            percentile(&l, 0.99)
        );
    }

    // Many SSE streams at the head (Zilla's froze at ~20 k): memory per stream, and how long one
    // write takes to reach every stream.
    let streams = env("BENCH_HTTP_SSE", 5_000);
    if streams > 0 {
        let position = head(http, &topic, &start).await;
        let rss = gateway.rss_kib();
        let (opened_tx, mut opened) = tokio::sync::mpsc::channel::<()>(streams);
        let (reached_tx, mut reached) = tokio::sync::mpsc::channel::<Instant>(streams);
        for _ in 0..streams {
            let (url, opened_tx, reached_tx) =
                (format!("/v1/topics/{topic}/log?from={position}&live=sse"), opened_tx.clone(), reached_tx.clone());
            tokio::spawn(async move {
                let response = open(http, "GET", &url, &[]).await;
                assert_eq!(response.status(), 200);
                let _ = opened_tx.send(()).await;
                let mut body = response.into_body();
                while let Some(Ok(frame)) = body.frame().await {
                    if frame.data_ref().is_some_and(|d| d.windows(6).any(|w| w == b"event:")) {
                        let _ = reached_tx.send(Instant::now()).await;
                        return;
                    }
                }
            });
        }
        for _ in 0..streams {
            opened.recv().await.unwrap();
        }
        let per_stream = (gateway.rss_kib().saturating_sub(rss)) as f64 / streams as f64;
        let writer = Writer::new(&topic);
        writer.warm_up();
        let written = Instant::now();
        writer.send(&Out::kv("sse-fan-out", Some("x")));
        let mut times = Vec::new();
        for _ in 0..streams {
            times.push((reached.recv().await.unwrap() - written).as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{streams} SSE streams at the head: {per_stream:.1} KiB of gateway RSS each; one write reached them all in {:.0} ms (p50 {:.0} ms)",
            times[times.len() - 1],
            percentile(&times, 0.5)
        );
    }
    drop(nginx);
    drop(gateway);
    delete_topic(&topic).await;
}

//! Issue 11 (first part): the Prometheus endpoint, scraped from a running gateway process while
//! it works against real Kafka.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tributary_server::pb;

use crate::harness::*;

async fn scrape(addr: std::net::SocketAddr) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The sum of every series of `name` whose labels include all of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
            (metric == name && labels.iter().all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn eventually(addr: std::net::SocketAddr, what: &str, check: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = scrape(addr).await;
        if check(&text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last scrape:\n{}",
            text.lines().filter(|l| l.starts_with("tributary")).collect::<Vec<_>>().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Records applied equal what was produced, lag returns to zero, streams-open follows opens and
/// closes, delivered records count, and a failed call counts under its method and code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_what_the_gateway_does() {
    let topic = unique_topic("metrics");
    create_topic(&topic, 2).await;
    produce(&topic, &(0..500).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let metrics_addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let listen = metrics_addr.to_string();
    let env = [("TRIBUTARY__METRICS__LISTEN", listen.as_str()), ("TRIBUTARY__KAFKA__METADATA_REFRESH_MS", "300")];
    let gateway = Process::spawn(&[&topic], &env).await;

    let t = topic.as_str();
    eventually(metrics_addr, "ingest counts every record, lag is 0, Kafka reachable, view ready", |m| {
        metric(m, "tributary_ingest_records_total", &[("topic", t)]) == 500.0
            && metric(m, "tributary_kafka_latest_offset", &[("topic", t)]) == 500.0
            && metric(m, "tributary_view_lag_records", &[("topic", t)]) == 0.0
            && metric(m, "tributary_kafka_reachable", &[]) == 1.0
            && metric(m, "tributary_view_ready", &[]) == 1.0
    })
    .await;

    let mut client = connect(gateway.addr).await;
    let from = vec![
        pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 },
        pb::PartitionOffset { topic: topic.clone(), partition: 1, offset: 0 },
    ];
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await.unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    eventually(metrics_addr, "one open stream that delivered 500 records", |m| {
        metric(m, "tributary_streams_open", &[("kind", "subscribe")]) == 1.0
            && metric(m, "tributary_records_delivered_total", &[("kind", "subscribe")]) == 500.0
    })
    .await;
    produce(&topic, &(0..100).map(|i| Out::kv(&format!("n{i}"), Some("w"))).collect::<Vec<_>>());
    eventually(metrics_addr, "live records are counted too", |m| {
        metric(m, "tributary_ingest_records_total", &[("topic", t)]) == 600.0
    })
    .await;
    drop(follower);
    eventually(metrics_addr, "the stream closed", |m| {
        metric(m, "tributary_streams_open", &[("kind", "subscribe")]) == 0.0
    })
    .await;

    let status =
        client.describe_topics(pb::DescribeTopicsRequest { topics: vec!["no-such-topic".into()] }).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    eventually(metrics_addr, "the failed call counted under its method and code", |m| {
        metric(
            m,
            "tributary_grpc_requests_total",
            &[("method", "tributary.v1.Gateway/DescribeTopics"), ("code", "NotFound")],
        ) == 1.0
            && metric(
                m,
                "tributary_grpc_requests_total",
                &[("method", "tributary.v1.Gateway/Subscribe"), ("code", "Cancelled")],
            ) == 1.0
            && metric(
                m,
                "tributary_grpc_request_duration_seconds_count",
                &[("method", "tributary.v1.Gateway/DescribeTopics")],
            ) >= 1.0
    })
    .await;
}

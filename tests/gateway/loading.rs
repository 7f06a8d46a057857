//! Readiness while the view loads, and read_committed semantics of transactions.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use tonic::Code;
use tonic_health::pb::{health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest};
use tributary_server::{api::status, pb};

use crate::harness::*;

/// Runs one of Kafka's own tools from the jars scripts/kafka.sh installed.
fn kafka_tool(args: &[&str]) {
    let script = repo_root().join("scripts/kafka.sh");
    let out = Command::new("bash").arg(script).arg("tool").args(args).output().unwrap();
    assert!(out.status.success(), "kafka.sh tool {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_wait_for_a_loading_view_and_health_follows_readiness() {
    let topic = unique_topic("loading");
    create_topic(&topic, 1).await;
    let value = "x".repeat(1_000);
    // One record per batch, so that each fetch returns little.
    let producer: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("batch.num.messages", "1")
        .create()
        .unwrap();
    for i in 0..100 {
        let key = format!("k{i}");
        producer.send(BaseRecord::to(&topic).key(&key).payload(&value)).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // A broker quota on this gateway's client id and tiny fetches make the load take seconds.
    // Kafka measures a client's rate over at least 10 s, so the 100 KB must exceed 10 s of quota.
    let client_id = format!("{topic}-gateway");
    kafka_tool(&[
        "configs",
        "--bootstrap-server",
        &bootstrap(),
        "--alter",
        "--add-config",
        "consumer_byte_rate=8000",
        "--entity-type",
        "clients",
        "--entity-name",
        &client_id,
    ]);
    let mut config = config(&[&topic], Default::default());
    config.kafka.properties.insert("client.id".into(), client_id);
    config.kafka.properties.insert("max.partition.fetch.bytes".into(), "4096".into());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let started = Instant::now();
    let server = tokio::spawn(tributary_server::serve(config, listener, async {
        let _ = stopped.await;
    }));
    let channel = loop {
        assert!(!server.is_finished(), "the gateway stopped: {:?}", server.await);
        match tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await {
            Ok(c) => break c,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    };
    let mut health = HealthClient::new(channel.clone());
    let status =
        health.check(HealthCheckRequest { service: "tributary.v1.Gateway".into() }).await.unwrap().into_inner();
    assert_eq!(status.status, ServingStatus::NotServing as i32);

    let mut client = pb::gateway_client::GatewayClient::new(channel);
    let mut request = tonic::Request::new(topic_snapshot(&topic));
    request.set_timeout(Duration::from_millis(500));
    let asked = Instant::now();
    let status = client
        .get_snapshot(request)
        .await
        .err()
        .unwrap_or_else(|| panic!("a snapshot of a loading view fails; loaded in {:?}", started.elapsed()));
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status.message().contains("still loading") && status.message().contains("% caught up"),
        "{}",
        status.message()
    );
    assert_eq!(status::reason(&status).as_deref(), Some("VIEW_LOADING"));
    assert!(asked.elapsed() >= Duration::from_millis(400), "the snapshot waited within its deadline");
    let described = client.describe_topics(pb::DescribeTopicsRequest::default()).await.unwrap().into_inner();
    assert!(!described.ready);

    // A snapshot without a tight deadline waits and is served once the view is ready.
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.expect("served once ready");
    println!("view loaded in {:?}", started.elapsed());
    assert_eq!(snap.entries.len(), 100);
    assert_eq!(snap.offsets[0].offset, 100);
    let status = health.check(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    assert_eq!(status.status, ServingStatus::Serving as i32);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aborted_transactions_are_not_state_and_positions_pass_markers() {
    let topic = unique_topic("txn");
    create_topic(&topic, 1).await;
    let producer: ThreadedProducer<_> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap())
        .set("transactional.id", format!("{topic}-tx"))
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    let write = |key: &str, value: &str| {
        producer.send(BaseRecord::to(&topic).key(key).payload(value)).map_err(|(e, _)| e).unwrap();
    };
    producer.begin_transaction().unwrap();
    write("a", "committed-1");
    write("b", "committed-1");
    producer.commit_transaction(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    write("a", "aborted");
    write("c", "aborted");
    producer.flush(Duration::from_secs(30)).unwrap();
    producer.abort_transaction(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    write("b", "committed-2");
    producer.commit_transaction(Duration::from_secs(30)).unwrap();
    let end = ends(&topic)[&(topic.clone(), 0)];

    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    let state: Vec<(String, String)> = snap
        .entries
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.key).into(), String::from_utf8_lossy(&e.value).into()))
        .collect();
    assert_eq!(state, vec![("a".into(), "committed-1".into()), ("b".into(), "committed-2".into())]);

    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }];
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await.unwrap();
    // The last offset is a commit marker: the position must reach the end anyway.
    follower.until(&[((topic.clone(), 0), end)].into(), Duration::from_secs(30)).await.unwrap();
    let values: Vec<String> =
        follower.records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into()).collect();
    assert_eq!(values, vec!["committed-1", "committed-1", "committed-2"], "aborted records are never delivered");
    let offsets: Vec<i64> = follower.records.iter().map(|r| r.offset).collect();
    assert!(offsets.windows(2).any(|w| w[1] > w[0] + 1), "offsets are not contiguous: {offsets:?}");
}

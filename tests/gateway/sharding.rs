//! `[sharding] group`: two replicas (the real binary) split a topic's partitions through a Kafka
//! consumer group; each serves only its own, names the other as the owner of the rest, and both
//! tell the same topology; when one is killed, the other takes over every partition once the
//! session times out and serves the raw rebuild.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use tonic::Code;
use tributary_server::{api::status, pb};

use crate::harness::*;

/// The broker's `group.min.session.timeout.ms` (Kafka's default; `scripts/kafka.sh` keeps it).
pub(crate) const SESSION_MS: u64 = 6_000;
/// Longest wait for the group to settle (a join, or a session timing out and a reload).
const SETTLE: Duration = Duration::from_secs(60);

/// A replica of the fleet `group`, as the real binary.
pub(crate) async fn replica(topic: &str, group: &str, instance_id: &str) -> Process {
    replica_advertising(topic, group, instance_id, None).await
}

/// A replica advertising `advertise` (default: its listen address).
async fn replica_advertising(topic: &str, group: &str, instance_id: &str, advertise: Option<&str>) -> Process {
    replica_with(topic, group, instance_id, advertise, &[]).await
}

/// A replica with more environment (`extra`).
async fn replica_with(
    topic: &str,
    group: &str,
    instance_id: &str,
    advertise: Option<&str>,
    extra: &[(&str, &str)],
) -> Process {
    let session = SESSION_MS.to_string();
    let mut env = vec![
        ("TRIBUTARY__SHARDING__GROUP", group),
        ("TRIBUTARY__SHARDING__INSTANCE_ID", instance_id),
        ("TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS", session.as_str()),
    ];
    if let Some(advertise) = advertise {
        env.push(("TRIBUTARY__SHARDING__ADVERTISE", advertise));
    }
    env.extend_from_slice(extra);
    Process::spawn(&[topic], &env).await
}

/// Each partition's owner as `replica` reports it; `None` while one is moving or the group is
/// not stable.
async fn owners(replica: &Process, topic: &str) -> Option<BTreeMap<i32, String>> {
    let mut client = connect(replica.addr).await;
    let topology =
        client.get_topology(pb::GetTopologyRequest { topics: vec![topic.to_string()] }).await.ok()?.into_inner();
    assert!(topology.sharded, "{topology:?}");
    assert_eq!(topology.address, replica.addr.to_string(), "a replica advertises its listen address by default");
    if topology.group_state != "Stable" || topology.partitions.iter().any(|p| p.moving || p.owner.is_empty()) {
        return None;
    }
    Some(topology.partitions.iter().map(|p| (p.partition, p.owner.clone())).collect())
}

/// The topology once every one of `replicas` reports it stable and `done` holds for it.
pub(crate) async fn settled(
    replicas: &[&Process],
    topic: &str,
    done: impl Fn(&BTreeMap<i32, String>) -> bool,
) -> BTreeMap<i32, String> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        for replica in replicas {
            seen.push(owners(replica, topic).await);
        }
        if let Some(Some(first)) = seen.first() {
            if seen.iter().all(|s| s.as_ref() == Some(first)) && done(first) {
                return first.clone();
            }
        }
        assert!(start.elapsed() < SETTLE, "the topology did not settle within {SETTLE:?}: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `replica`'s snapshot of `topic`, once every partition it holds has loaded.
async fn loaded_snapshot(replica: &Process, topic: &str) -> Snapshot {
    let mut client = connect(replica.addr).await;
    let start = Instant::now();
    loop {
        match snapshot(&mut client, topic_snapshot(topic)).await {
            Ok(snap) => return snap,
            Err(s) if s.code() == Code::Unavailable && start.elapsed() < SETTLE => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(s) => panic!("snapshot of {topic} at {}: {s:?}", replica.addr),
        }
    }
}

fn partitions_of(snap: &Snapshot) -> BTreeSet<i32> {
    snap.offsets.iter().map(|o| o.partition).collect()
}

/// A Subscribe on `partition` at `replica`, which does not hold it: FAILED_PRECONDITION naming
/// `owner`.
async fn assert_held_elsewhere(replica: &Process, topic: &str, partition: i32, owner: &str) {
    let mut client = connect(replica.addr).await;
    let request = pb::SubscribeRequest {
        from_offsets: vec![pb::PartitionOffset { topic: topic.into(), partition, offset: 0 }],
        ..Default::default()
    };
    let status = client.subscribe(request).await.expect_err("a partition held elsewhere is refused");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("PARTITION_NOT_HELD"));
    let metadata = status::error_metadata(&status);
    assert_eq!(metadata.get("owner").map(String::as_str), Some(owner), "{status:?}");
    assert_eq!(metadata.get("topic").map(String::as_str), Some(topic));
    assert_eq!(metadata.get("partition"), Some(&partition.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_partitions_and_the_survivor_of_a_kill_serves_them_all() {
    let topic = unique_topic("sharding");
    create_topic(&topic, 4).await;
    let records = |round: usize| -> Vec<Out> {
        (0..2_000)
            .map(|i| Out {
                partition: Some(i % 4),
                ..Out::kv(&format!("k{}-{}", i % 4, i % 300), (i % 9 != 0).then(|| format!("v{round}-{i}")).as_deref())
            })
            .collect()
    };
    produce(&topic, &records(0));
    let group = unique_topic("sharding-group");
    let mut a = replica(&topic, &group, "replica-a").await;
    // A stream on every partition of the first replica, open while the second one joins.
    let mut client_a = connect(a.addr).await;
    let subscribe = pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() };
    let mut stream = client_a.subscribe(subscribe).await.unwrap().into_inner();
    let b = replica(&topic, &group, "replica-b").await;
    let (address_a, address_b) = (a.addr.to_string(), b.addr.to_string());

    // Both replicas tell the same topology: two partitions each.
    let topology = settled(&[&a, &b], &topic, |owners| {
        owners.len() == 4 && owners.values().filter(|o| **o == address_a).count() == 2
    })
    .await;
    assert!(topology.values().all(|o| *o == address_a || *o == address_b), "{topology:?}");
    let held_by =
        |address: &str| -> BTreeSet<i32> { topology.iter().filter(|(_, o)| *o == address).map(|(p, _)| *p).collect() };

    // Each serves only its partitions; together they are the raw rebuild at Kafka's end.
    let (snap_a, snap_b) = (loaded_snapshot(&a, &topic).await, loaded_snapshot(&b, &topic).await);
    assert_eq!(partitions_of(&snap_a), held_by(&address_a), "replica a serves its partitions only");
    assert_eq!(partitions_of(&snap_b), held_by(&address_b), "replica b serves its partitions only");
    let mut offsets = offset_map(&snap_a.offsets);
    offsets.extend(offset_map(&snap_b.offsets));
    assert_eq!(offsets, ends(&topic), "the union is at Kafka's end offsets");
    let mut union = snap_a.state();
    let state_b = snap_b.state();
    assert!(union.keys().all(|k| !state_b.contains_key(k)), "no key is served by both");
    union.extend(state_b);
    assert!(union == rebuild(&read_all(&topic)), "the union of the snapshots equals the raw rebuild");

    // The stream ended when half of its partitions moved: UNAVAILABLE, with where it stood.
    let ended = loop {
        match tokio::time::timeout(SETTLE, stream.message()).await.expect("the stream ends") {
            Ok(Some(_)) => {}
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    assert_eq!(status::reason(&ended).as_deref(), Some("PARTITION_MOVING"), "{ended:?}");
    let moved: i32 = status::error_metadata(&ended)["partition"].parse().unwrap();
    assert!(held_by(&address_b).contains(&moved), "partition {moved} went to the other replica");
    let resume = status::offsets_detail(&ended).expect("resume offsets");
    assert_eq!(resume.kind(), pb::offsets_detail::Kind::Resume);
    let resume = offset_map(&resume.offsets);
    assert_eq!(resume.len(), 4, "every partition the stream followed: {resume:?}");
    assert!(resume.iter().all(|(p, o)| *o <= ends(&topic)[p]), "{resume:?}");

    // A call on the other replica's partition is sent there.
    for (partition, owner) in &topology {
        let other = if *owner == address_a { &b } else { &a };
        assert_held_elsewhere(other, &topic, *partition, owner).await;
    }

    // Killed (no goodbye: a static member never leaves): once its session times out, the
    // survivor holds every partition and serves the raw rebuild, new records included.
    a.kill();
    let killed = Instant::now();
    produce(&topic, &records(1));
    settled(&[&b], &topic, |owners| owners.len() == 4 && owners.values().all(|o| *o == address_b)).await;
    let reassigned = killed.elapsed();
    let end = ends(&topic);
    let snap = loop {
        let snap = loaded_snapshot(&b, &topic).await;
        if offset_map(&snap.offsets) == end {
            break snap;
        }
        assert!(killed.elapsed() < SETTLE, "the survivor did not catch up: {:?}", snap.offsets);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let served = killed.elapsed();
    assert!(snap.state() == rebuild(&read_all(&topic)), "the survivor serves the raw rebuild");
    assert!(
        reassigned >= Duration::from_millis(SESSION_MS / 2),
        "partitions moved only once the session timed out ({reassigned:?})"
    );
    println!(
        "sharding: a killed replica's partitions were reassigned after {reassigned:?} and served after {served:?} (session timeout {SESSION_MS} ms)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_fenced_by_another_with_its_identity_drops_its_partitions_and_stops_serving() {
    let topic = unique_topic("sharding-fenced");
    create_topic(&topic, 2).await;
    produce(&topic, &(0..100).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let group = unique_topic("sharding-fenced-group");
    // Two live replicas with one instance id and one advertised address: a misconfigured fleet.
    let first = replica_advertising(&topic, &group, "replica-x", Some("gw-x.fleet:50051")).await;
    let second = replica_advertising(&topic, &group, "replica-x", Some("gw-x.fleet:50051")).await;
    let start = Instant::now();
    loop {
        let channel = tonic::transport::Channel::from_shared(format!("http://{}", first.addr)).unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.connect().await.unwrap());
        let status = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
        if status.into_inner().status() == tonic_health::pb::health_check_response::ServingStatus::NotServing {
            break;
        }
        assert!(start.elapsed() < SETTLE, "the fenced replica still reports SERVING");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It holds nothing any more; the replica that fenced it serves both partitions.
    let mut client = connect(first.addr).await;
    let request = pb::SubscribeRequest {
        from_offsets: vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }],
        ..Default::default()
    };
    let status = client.subscribe(request).await.expect_err("the fenced replica holds no partition");
    assert!(matches!(status.code(), Code::FailedPrecondition | Code::Unavailable), "{status:?}");
    assert!(status::reason(&status).is_some_and(|r| r.starts_with("PARTITION_")), "{status:?}");
    let snap = loaded_snapshot(&second, &topic).await;
    assert_eq!(partitions_of(&snap), [0, 1].into());
    assert_eq!(snap.state().len(), 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_given_no_partition_is_ready_and_names_the_owner() {
    // One partition, two replicas: the second is given nothing. It must still report SERVING
    // (a rollout that waits for every replica's readiness would never finish otherwise) and
    // answer for the partition it does not hold.
    let topic = unique_topic("sharding-idle");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..50).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let group = unique_topic("sharding-idle-group");
    let (http_a, http_b) = (tributary_testkit::web::free_addr(), tributary_testkit::web::free_addr());
    let (http_a_s, http_b_s) = (http_a.to_string(), http_b.to_string());
    let a = replica_with(&topic, &group, "a", None, &[("TRIBUTARY__HTTP__LISTEN", &http_a_s)]).await;
    settled(&[&a], &topic, |owners| owners.len() == 1).await;
    // Process::spawn returns once the replica reports SERVING: this is the assertion.
    let b = replica_with(&topic, &group, "b", None, &[("TRIBUTARY__HTTP__LISTEN", &http_b_s)]).await;
    let owners = settled(&[&a, &b], &topic, |owners| owners.len() == 1).await;
    let owner = owners[&0].clone();
    let (holder, idle) = if owner == a.addr.to_string() { (&a, &b) } else { (&b, &a) };
    assert_eq!(loaded_snapshot(holder, &topic).await.entries.len(), 50);
    let idle_snapshot = loaded_snapshot(idle, &topic).await;
    assert!(idle_snapshot.entries.is_empty() && idle_snapshot.offsets.is_empty(), "it holds nothing");
    assert_held_elsewhere(idle, &topic, 0, &owner).await;

    // The HTTP log answers for a whole topic: the idle replica says who holds the partition.
    let (http_holder, http_idle) = if owner == a.addr.to_string() { (http_a, http_b) } else { (http_b, http_a) };
    let log = format!("/v1/topics/{topic}/log?from=-1");
    let misdirected = tributary_testkit::web::get(http_idle, &log, &[]).await;
    assert_eq!(misdirected.status, 421, "{}", String::from_utf8_lossy(&misdirected.body));
    let error = misdirected.json();
    assert_eq!(error["error"]["reason"], "PARTITION_NOT_HELD");
    assert_eq!(error["error"]["details"]["owner"], owner.as_str());
    let served = tributary_testkit::web::get(http_holder, &log, &[]).await;
    assert_eq!((served.status, served.json()["records"].as_array().map(Vec::len)), (200, Some(50)));
}

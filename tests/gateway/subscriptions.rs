//! Issue 9: durable named subscriptions, with positions kept in Kafka consumer groups.

use std::{collections::BTreeMap, time::Duration};

use tonic::Code;
use tributary_server::{
    api::status,
    pb::{self, offsets_detail::Kind, subscriptions_client::SubscriptionsClient},
};

use crate::{harness::*, translators};

type Subscriptions = SubscriptionsClient<tonic::transport::Channel>;

async fn subscriptions(addr: std::net::SocketAddr) -> Subscriptions {
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    SubscriptionsClient::new(channel)
}

fn named(name: &str, from: Vec<pb::PartitionOffset>) -> pb::SubscribeRequest {
    pb::SubscribeRequest { subscription_name: name.into(), from_offsets: from, ..Default::default() }
}

fn offsets(position: &BTreeMap<(String, i32), i64>) -> Vec<pb::PartitionOffset> {
    position
        .iter()
        .map(|((topic, partition), offset)| pb::PartitionOffset {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect()
}

/// The position after B applied `records` on top of a snapshot taken at `start`.
fn position_after(start: &[pb::PartitionOffset], records: &[pb::Record]) -> BTreeMap<(String, i32), i64> {
    let mut position = offset_map(start);
    for r in records {
        position.insert((r.topic.clone(), r.partition), r.offset + 1);
    }
    position
}

async fn commit(
    client: &mut Subscriptions,
    name: &str,
    offsets: Vec<pb::PartitionOffset>,
) -> Result<pb::SubscriptionInfo, tonic::Status> {
    let response = client.commit(pb::CommitRequest { name: name.into(), offsets }).await?;
    Ok(response.into_inner().subscription.expect("the subscription after the commit"))
}

async fn ended_with(follower: &mut Follower) -> tonic::Status {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), follower.next()).await.expect("the stream ends") {
            Ok(Some(())) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => return status,
        }
    }
}

/// Snapshot, subscribe by name from its offsets, commit part-way, disconnect, resume by name
/// alone: exactly the records after the commit come again, then the rest; the state equals the
/// raw rebuild. Describe and List show the committed position and the lag against Kafka; a newer
/// stream of the name ends the older one ABORTED with its position; Delete removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_subscription_resumes_from_its_last_commit() {
    let topic = unique_topic("named");
    create_topic(&topic, 2).await;
    let first: Vec<Out> = (0..1_000).map(|i| Out::kv(&format!("k{}", i % 100), Some(&format!("a{i}")))).collect();
    produce(&topic, &first);
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let mut subs = subscriptions(gateway.addr).await;
    let name = unique_topic("sub");

    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    let mut state = snap.state();
    let mut follower = Follower::start(&mut client, named(&name, snap.offsets.clone())).await.unwrap();
    let second: Vec<Out> = (0..1_000).map(|i| Out::kv(&format!("k{}", i % 150), Some(&format!("b{i}")))).collect();
    produce(&topic, &second);
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    assert_eq!(follower.records.len(), 1_000);

    // B applied the first 400 records and commits that.
    let applied = &follower.records[..400];
    applied.iter().for_each(|r| apply(&mut state, r));
    let committed = position_after(&snap.offsets, applied);
    let info = commit(&mut subs, &name, offsets(&committed)).await.unwrap();
    assert_eq!(info.name, name);
    assert_eq!(info.topics, vec![topic.clone()]);
    assert!(info.group.ends_with(&name) && info.active_here, "{info:?}");
    drop(follower);

    // Resume by name alone: the records after the commit, and only those.
    let mut resumed = Follower::start(&mut client, named(&name, Vec::new())).await.unwrap();
    resumed.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let expected: Vec<(i32, i64)> = follower_records_after(&topic, &read_all(&topic), &committed);
    let got: Vec<(i32, i64)> = sorted(resumed.records.iter().map(|r| (r.partition, r.offset)).collect());
    assert_eq!(got, expected, "exactly the records after the committed position");
    resumed.records.iter().for_each(|r| apply(&mut state, r));
    assert_eq!(state, rebuild(&read_all(&topic)), "snapshot + applied + resumed = raw rebuild");

    // Describe: the committed position, Kafka's latest offsets and the lag between them.
    let info = subs.describe(pb::DescribeSubscriptionRequest { name: name.clone() }).await.unwrap().into_inner();
    let latest = ends(&topic);
    assert_eq!(info.partitions.len(), 2);
    for p in &info.partitions {
        let key = (p.topic.clone(), p.partition);
        assert_eq!(p.committed_offset, committed[&key]);
        assert_eq!(p.latest_offset, latest[&key]);
        assert_eq!(p.lag, latest[&key] - committed[&key]);
    }
    let listed = subs.list(pb::ListSubscriptionsRequest {}).await.unwrap().into_inner();
    let mine = listed.subscriptions.iter().find(|s| s.name == name).expect("listed");
    assert_eq!(mine.partitions, info.partitions);

    // A second stream of the name takes it over: the first ends ABORTED with its position.
    let mut newer = Follower::start(&mut client, named(&name, Vec::new())).await.unwrap();
    let status = ended_with(&mut resumed).await;
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("SUBSCRIPTION_TAKEN_OVER"));
    let detail = status::offsets_detail(&status).expect("resume offsets");
    assert_eq!(detail.kind, Kind::Resume as i32);
    assert_eq!(offset_map(&detail.offsets), latest, "where the older stream stood");
    newer.until(&latest, Duration::from_secs(30)).await.unwrap();

    // Delete: the group is gone, the stream holding the name ends, resuming needs a snapshot.
    subs.delete(pb::DeleteSubscriptionRequest { name: name.clone() }).await.unwrap();
    assert_eq!(ended_with(&mut newer).await.code(), Code::Aborted);
    let status = subs.describe(pb::DescribeSubscriptionRequest { name: name.clone() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = client.subscribe(named(&name, Vec::new())).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("NO_COMMITTED_POSITION"));
    let listed = subs.list(pb::ListSubscriptionsRequest {}).await.unwrap().into_inner();
    assert!(!listed.subscriptions.iter().any(|s| s.name == name), "deleted from the list");
}

fn sorted(mut v: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
    v.sort();
    v
}

/// Every record of `topic` (`all`) at or after the committed position of its partition.
fn follower_records_after(topic: &str, all: &[Raw], committed: &BTreeMap<(String, i32), i64>) -> Vec<(i32, i64)> {
    sorted(
        all.iter()
            .filter(|r| r.offset >= committed[&(topic.to_string(), r.partition)])
            .map(|r| (r.partition, r.offset))
            .collect(),
    )
}

/// The gateway is killed (SIGKILL) mid-stream; a second gateway process on another port resumes
/// the subscription by name from what B committed: nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_subscription_resumes_on_another_gateway_after_a_kill() {
    let topic = unique_topic("named-kill");
    create_topic(&topic, 3).await;
    produce(&topic, &(0..2_000).map(|i| Out::kv(&format!("k{}", i % 200), Some(&format!("a{i}")))).collect::<Vec<_>>());
    let mut first = Process::spawn(&[&topic], &[]).await;
    let mut client = connect(first.addr).await;
    let mut subs = subscriptions(first.addr).await;
    let name = unique_topic("sub");
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    let mut state = snap.state();
    let mut follower = Follower::start(&mut client, named(&name, snap.offsets.clone())).await.unwrap();
    let writer = Writer::new(&topic);
    for i in 0..3_000 {
        writer.send(&Out::kv(&format!("k{}", i % 200), Some(&format!("b{i}"))));
    }
    writer.flush();
    while follower.records.len() < 1_000 {
        follower.next().await.unwrap().unwrap();
    }
    follower.records.iter().for_each(|r| apply(&mut state, r));
    commit(&mut subs, &name, offsets(&follower.position)).await.unwrap();
    let committed = follower.position.clone();
    first.kill();

    let second = Process::spawn(&[&topic], &[]).await;
    let mut client = connect(second.addr).await;
    let mut resumed = Follower::start(&mut client, named(&name, Vec::new())).await.unwrap();
    resumed.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let got = sorted(resumed.records.iter().map(|r| (r.partition, r.offset)).collect());
    assert_eq!(got, follower_records_after(&topic, &read_all(&topic), &committed), "nothing lost, nothing repeated");
    resumed.records.iter().for_each(|r| apply(&mut state, r));
    assert_eq!(state, rebuild(&read_all(&topic)));
}

/// What a named subscription refuses, with the status a program can act on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_subscriptions_refuse_what_they_cannot_resume() {
    let (topic, other) = (unique_topic("named-err"), unique_topic("named-other"));
    create_topic(&topic, 2).await;
    create_topic(&other, 1).await;
    produce(&topic, &(0..100).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let gateway = Gateway::start(&[&topic, &other]).await;
    let mut client = gateway.client().await;
    let mut subs = subscriptions(gateway.addr).await;
    let name = unique_topic("sub");

    // Nothing committed yet: take a snapshot first.
    let status = client.subscribe(named(&name, Vec::new())).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("NO_COMMITTED_POSITION"));
    assert!(status.message().contains("snapshot"), "{}", status.message());
    let status = commit(&mut subs, &name, vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 1 }])
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    for (request, field) in [
        (named("a b", Vec::new()), "subscription_name"),
        (pb::SubscribeRequest { topics: vec![topic.clone()], auto_commit: true, ..Default::default() }, "auto_commit"),
    ] {
        let status = client.subscribe(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(status::bad_field(&status).as_deref(), Some(field));
    }

    // Start it from explicit offsets: that start is its committed position.
    let start = vec![
        pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 },
        pb::PartitionOffset { topic: topic.clone(), partition: 1, offset: 0 },
    ];
    let mut follower = Follower::start(&mut client, named(&name, start)).await.unwrap();
    follower.next().await.unwrap().unwrap();
    drop(follower);
    let info = subs.describe(pb::DescribeSubscriptionRequest { name: name.clone() }).await.unwrap().into_inner();
    assert!(info.partitions.iter().all(|p| p.committed_offset == 0), "{info:?}");

    // Commits the gateway refuses, naming the field.
    let at =
        |topic: &str, partition: i32, offset: i64| vec![pb::PartitionOffset { topic: topic.into(), partition, offset }];
    let status = commit(&mut subs, &name, at(&other, 0, 0)).await.unwrap_err();
    assert_eq!(
        (status.code(), status::bad_field(&status).as_deref()),
        (Code::InvalidArgument, Some("offsets[0].topic"))
    );
    let status = commit(&mut subs, &name, at(&topic, 0, -5)).await.unwrap_err();
    assert_eq!(
        (status.code(), status::bad_field(&status).as_deref()),
        (Code::InvalidArgument, Some("offsets[0].offset"))
    );
    let status = commit(&mut subs, &name, at(&topic, 7, 0)).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let status = commit(&mut subs, &name, at(&topic, 0, 1_000_000)).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("OFFSET_BEYOND_END"));
    let status = commit(&mut subs, &name, Vec::new()).await.unwrap_err();
    assert_eq!((status.code(), status::bad_field(&status).as_deref()), (Code::InvalidArgument, Some("offsets")));

    // Other topics than it follows, or another translator: refused unless the request says so.
    let request = pb::SubscribeRequest { topics: vec![other.clone()], ..named(&name, Vec::new()) };
    let status = client.subscribe(request).await.unwrap_err();
    assert_eq!(status::reason(&status).as_deref(), Some("SUBSCRIPTION_TOPICS_CHANGED"), "{status:?}");
    let mut reg = translators::registry(&gateway).await;
    translators::upload_bytes(&mut reg, "ident", &translators::artifact("identity.wasm")).await.unwrap();
    let translator = Some(pb::TranslatorRef { name: "ident".into(), ..Default::default() });
    let request = pb::SubscribeRequest { translator: translator.clone(), ..named(&name, Vec::new()) };
    let status = client.subscribe(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("SUBSCRIPTION_TRANSLATOR_CHANGED"));
    assert!(status.message().contains("accept_translator_change"), "{}", status.message());
    let accepted = pb::SubscribeRequest { accept_translator_change: true, ..request.clone() };
    let mut follower = Follower::start(&mut client, accepted).await.unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    assert_eq!(follower.records.len(), 100);
    drop(follower);
    let info = subs.describe(pb::DescribeSubscriptionRequest { name: name.clone() }).await.unwrap().into_inner();
    assert_eq!(info.translator_name, "ident", "resumed with the translator, the position is now stamped with it");
    Follower::start(&mut client, request).await.expect("the same translator resumes without asking");

    // Retention removed the committed position: OUT_OF_RANGE with the earliest offsets.
    let end = ends(&topic)[&(topic.clone(), 0)];
    assert!(end > 0);
    delete_records(&topic, 0, end).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await; // the view learns the new earliest offset
    let status = client.subscribe(pb::SubscribeRequest { translator, ..named(&name, Vec::new()) }).await.unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    let detail = status::offsets_detail(&status).expect("earliest offsets");
    assert_eq!(detail.kind, Kind::Earliest as i32);
    assert_eq!(offset_map(&detail.offsets)[&(topic.clone(), 0)], end);
}

/// A partition added after the commit is followed from its start; `auto_commit` commits what
/// was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_partitions_are_followed_and_auto_commit_commits_what_was_delivered() {
    let topic = unique_topic("named-grow");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..100).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let mut subs = subscriptions(gateway.addr).await;
    let name = unique_topic("sub");
    let start = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 100 }];
    let request = pb::SubscribeRequest { auto_commit: true, ..named(&name, start) };
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    follower.next().await.unwrap().unwrap();
    drop(follower);

    add_partitions(&topic, 2).await;
    produce(&topic, &(0..50).map(|i| Out::kv(&format!("n{i}"), Some("w"))).collect::<Vec<_>>());
    tokio::time::sleep(Duration::from_secs(2)).await; // the gateway sees the new partition
    let request = pb::SubscribeRequest { auto_commit: true, ..named(&name, Vec::new()) };
    let mut resumed = Follower::start(&mut client, request).await.unwrap();
    let latest = ends(&topic);
    resumed.until(&latest, Duration::from_secs(30)).await.unwrap();
    let new_partition: Vec<i64> = resumed.records.iter().filter(|r| r.partition == 1).map(|r| r.offset).collect();
    assert_eq!(new_partition.first(), Some(&0), "the added partition is followed from its start");
    assert_eq!(resumed.records.len() as i64, latest.values().sum::<i64>() - 100, "and everything after the commit");

    // With auto_commit, progress after the records commits the delivered position.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = subs.describe(pb::DescribeSubscriptionRequest { name: name.clone() }).await.unwrap().into_inner();
        if info.partitions.iter().all(|p| p.lag == 0 && p.committed_offset == latest[&(p.topic.clone(), p.partition)]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not committed automatically: {info:?}");
        resumed.next().await.unwrap().unwrap();
    }
}

/// `tributary subscription list|describe|commit|delete` against a running gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_lists_describes_commits_and_deletes_subscriptions() {
    let topic = unique_topic("named-cli");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..10).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let name = unique_topic("sub");
    let start = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }];
    Follower::start(&mut client, named(&name, start)).await.unwrap().next().await.unwrap().unwrap();

    let cli = |args: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(["subscription", "--gateway", &format!("http://{}", gateway.addr)])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&["commit", &name, &format!("{topic}:0=7")]);
    assert!(ok, "{err}");
    assert!(out.contains("committed 7") && out.contains("lag 3"), "{out}");
    let (ok, out, _) = cli(&["describe", &name]);
    assert!(ok && out.contains(&format!("{topic}:0\tcommitted 7\tlatest 10\tlag 3")), "{out}");
    let (ok, out, _) = cli(&["list"]);
    assert!(ok && out.contains(&name), "{out}");
    let (ok, _, err) = cli(&["commit", &name, "nonsense"]);
    assert!(!ok && err.contains("TOPIC:PARTITION=OFFSET"), "{err}");
    let (ok, out, _) = cli(&["delete", &name]);
    assert!(ok && out.contains("deleted"), "{out}");
    let (ok, _, err) = cli(&["describe", &name]);
    assert!(!ok && err.contains("no such subscription"), "{err}");
}

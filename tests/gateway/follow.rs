//! Subscribe behaviour: key filters, resuming, progress on idle topics, new partitions, too-old
//! offsets, and slow subscribers.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tonic::Code;
use tributary_server::{api::status, config::Limits, pb};

use crate::harness::*;

fn assignments(range: std::ops::Range<u32>, round: u32) -> Vec<Out> {
    range
        .flat_map(|i| {
            let value = format!("{{\"round\":{round},\"id\":{i}}}");
            let mut out =
                vec![Out::kv(&format!("media/{i}"), Some(&value)), Out::kv(&format!("other/{i}"), Some(&value))];
            if i % 7 == 0 {
                out.push(Out::kv(&format!("media/{i}"), None));
            }
            out
        })
        .collect()
}

/// A subscription to every partition of `topic` from its end.
async fn follow_topic(client: &mut Client, topic: &str) -> tonic::Streaming<pb::SubscribeResponse> {
    let request = pb::SubscribeRequest { topics: vec![topic.to_string()], ..Default::default() };
    client.subscribe(request).await.unwrap().into_inner()
}

fn restrict(state: &State, keep: impl Fn(&[u8]) -> bool) -> State {
    state.iter().filter(|(k, _)| keep(k)).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_filters_restrict_snapshot_and_stream() {
    let topic = unique_topic("filter");
    create_topic(&topic, 3).await;
    produce(&topic, &assignments(0..60, 0));
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;

    type Keep = Box<dyn Fn(&[u8]) -> bool>;
    let filters: Vec<(pb::KeyFilter, Keep)> = vec![
        (
            pb::KeyFilter { exact: vec![Bytes::from_static(b"media/8")], prefixes: vec![] },
            Box::new(|k: &[u8]| k == b"media/8"),
        ),
        (
            pb::KeyFilter { exact: vec![], prefixes: vec![Bytes::from_static(b"media/1")] },
            Box::new(|k: &[u8]| k.starts_with(b"media/1")),
        ),
    ];
    for (filter, keep) in filters {
        let request = pb::GetSnapshotRequest {
            topics: vec![topic.clone()],
            key_filter: Some(filter.clone()),
            ..Default::default()
        };
        let snap = snapshot(&mut client, request).await.unwrap();
        let expected = restrict(&rebuild(&read_all(&topic)), &keep);
        assert!(!expected.is_empty());
        assert_eq!(snap.state(), expected, "filtered snapshot");

        let mut state = snap.state();
        let request =
            pb::SubscribeRequest { from_offsets: snap.offsets.clone(), key_filter: Some(filter), ..Default::default() };
        let mut follower = Follower::start(&mut client, request).await.unwrap();
        produce(&topic, &assignments(0..60, 1));
        follower.until(&ends(&topic), Duration::from_secs(60)).await.unwrap();
        assert!(follower.records.iter().all(|r| keep(r.key.as_deref().unwrap())), "only matching records are streamed");
        for r in &follower.records {
            apply(&mut state, r);
        }
        assert_eq!(state, restrict(&rebuild(&read_all(&topic)), &keep), "filtered handoff");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_advance_when_every_record_is_filtered_out() {
    let topic = unique_topic("filtered-out");
    create_topic(&topic, 2).await;
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let request = pb::SubscribeRequest {
        topics: vec![topic.clone()],
        key_filter: Some(pb::KeyFilter { exact: vec![Bytes::from_static(b"nothing-has-this-key")], prefixes: vec![] }),
        ..Default::default()
    };
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    produce(&topic, &assignments(0..50, 0));
    let ends = ends(&topic);
    assert!(ends.values().all(|e| *e > 0));
    follower.until(&ends, Duration::from_secs(30)).await.unwrap();
    assert!(follower.records.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_from_last_position_has_no_gap_and_no_duplicate() {
    let topic = unique_topic("resume");
    create_topic(&topic, 3).await;
    produce(&topic, &assignments(0..200, 0));
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let mut delivered = Vec::new();
    let mut request = pb::SubscribeRequest { topics: vec![topic.clone()], max_batch_records: 50, ..Default::default() };
    // Disconnect after a few messages, five times, resuming each time from the last position seen.
    for round in 0..5 {
        let mut follower = Follower::start(&mut client, request.clone()).await.unwrap();
        for _ in 0..3 {
            follower.next().await.unwrap().unwrap();
        }
        if round == 2 {
            produce(&topic, &assignments(0..100, 1));
        }
        delivered.extend(follower.records.clone());
        request.from_offsets = follower
            .position
            .iter()
            .map(|((t, p), o)| pb::PartitionOffset { topic: t.clone(), partition: *p, offset: *o })
            .collect();
    }
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    delivered.extend(follower.records);
    let raw = read_all(&topic);
    let mut got: Vec<(i32, i64)> = delivered.iter().map(|r| (r.partition, r.offset)).collect();
    let mut want: Vec<(i32, i64)> = raw.iter().map(|r| (r.partition, r.offset)).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "resumed streams deliver every record exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_arrives_on_an_idle_topic_with_every_partition() {
    let topic = unique_topic("idle");
    create_topic(&topic, 3).await;
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let mut stream = follow_topic(&mut client, &topic).await;
    let started = Instant::now();
    for _ in 0..3 {
        let message = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap().unwrap();
        let Some(pb::subscribe_response::Message::Progress(progress)) = message.message else {
            panic!("expected progress")
        };
        let partitions: Vec<i32> = progress.offsets.iter().map(|o| o.partition).collect();
        assert_eq!(partitions, vec![0, 1, 2], "progress lists every partition");
        assert!(progress.offsets.iter().all(|o| o.offset == 0));
    }
    assert!(started.elapsed() >= Duration::from_millis(300), "progress is regular, not a flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_partitions_are_followed_from_their_start() {
    let topic = unique_topic("grow");
    create_topic(&topic, 1).await;
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.offsets.len(), 1);
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: snap.offsets, ..Default::default() })
            .await
            .unwrap();
    add_partitions(&topic, 3).await;
    // Wait until the gateway serves the new partitions (they show up in progress messages).
    let deadline = Instant::now() + Duration::from_secs(30);
    while follower.position.len() < 3 {
        assert!(Instant::now() < deadline, "new partitions never appeared in progress");
        follower.next().await.unwrap().unwrap();
    }
    let records: Vec<Out> =
        (0..3).map(|p| Out { partition: Some(p), ..Out::kv(&format!("k{p}"), Some("v")) }).collect();
    produce(&topic, &records);
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let mut partitions: Vec<i32> = follower.records.iter().map(|r| r.partition).collect();
    partitions.sort();
    assert_eq!(partitions, vec![0, 1, 2]);
    let mut client2 = gateway.client().await;
    let snap = snapshot(&mut client2, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.offsets.len(), 3, "snapshots list new partitions too");
    assert_eq!(snap.entries.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_offsets_are_out_of_range_and_a_new_snapshot_recovers() {
    let topic = unique_topic("too-old");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..100).map(|i| Out::kv(&format!("k{}", i % 10), Some(&i.to_string()))).collect::<Vec<_>>());
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    delete_records(&topic, 0, 50).await;

    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 10 }];
    // The gateway learns the new earliest offset on its next metadata refresh.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        match Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from.clone(), ..Default::default() })
            .await
        {
            Err(status) => break status,
            Ok(mut f) => {
                // Served from memory before the refresh; the stream must not silently skip.
                assert!(Instant::now() < deadline, "subscribing below the earliest offset never failed");
                let first = f.next().await;
                drop(first);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("earliest is 50"), "{}", status.message());
    let detail = status::offsets_detail(&status).expect("offsets in the details");
    assert_eq!(detail.kind(), pb::offsets_detail::Kind::Earliest);
    assert_eq!(detail.offsets, vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 50 }]);
    assert_eq!(status::reason(&status).as_deref(), Some("OFFSET_TOO_OLD"));

    // Recover: a new snapshot and a subscription from its offsets.
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.offsets[0].offset, 100);
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: snap.offsets, ..Default::default() })
            .await
            .unwrap();
    produce(&topic, &[Out::kv("k1", Some("after"))]);
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    assert_eq!(follower.records.len(), 1);
    assert_eq!(follower.records[0].offset, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_reader_hitting_deleted_records_ends_out_of_range() {
    let topic = unique_topic("too-old-catchup");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..300).map(|i| Out::kv(&format!("k{i}"), Some("v"))).collect::<Vec<_>>());
    // A tail of 10 records: subscribing from 0 reads from Kafka.
    let limits = Limits { tail_max_records: 10, tail_pool_bytes: 0, ..Limits::default() };
    let gateway = Gateway::start_with(config(&[&topic], limits)).await;
    let mut client = gateway.client().await;
    let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }];
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from.clone(), ..Default::default() })
            .await
            .unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    assert_eq!(follower.records.len(), 300, "catch-up then tail delivers everything");
    delete_records(&topic, 0, 200).await;
    let status = Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from, ..Default::default() })
        .await
        .err()
        .expect("below the earliest offset");
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(status::offsets_detail(&status).unwrap().offsets[0].offset, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_costs_bounded_memory_and_gets_everything_later() {
    let topic = unique_topic("slow");
    create_topic(&topic, 2).await;
    let gateway = Process::spawn(
        &[&topic],
        &[("TRIBUTARY__LIMITS__TAIL_MAX_RECORDS", "1000"), ("TRIBUTARY__LIMITS__STREAM_BUFFER_MESSAGES", "4")],
    )
    .await;
    let mut slow_client = connect(gateway.addr).await;
    let mut slow =
        Follower::start(&mut slow_client, pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() })
            .await
            .unwrap();
    slow.next().await.unwrap().unwrap(); // the first progress message; then it stops reading
    let mut fast_client = connect(gateway.addr).await;
    let mut fast =
        Follower::start(&mut fast_client, pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() })
            .await
            .unwrap();

    let before = gateway.rss_kib();
    let value = "x".repeat(1_000);
    let batch: Vec<Out> = (0..1_000).map(|i| Out::kv(&format!("k{}", i % 500), Some(&value))).collect();
    let writer = Writer::new(&topic);
    for _ in 0..60 {
        for r in &batch {
            writer.send(r);
        }
        // The fast client keeps up while the slow one does not read at all.
        while let Ok(Ok(Some(()))) = tokio::time::timeout(Duration::from_millis(5), fast.next()).await {}
    }
    writer.flush();
    let ends = ends(&topic);
    fast.until(&ends, Duration::from_secs(60)).await.unwrap();
    let after = gateway.rss_kib();
    let grown_mib = after.saturating_sub(before) / 1024;
    println!(
        "gateway RSS {} MiB -> {} MiB with one stalled subscriber after 60 MB of records",
        before / 1024,
        after / 1024
    );
    // What Kafka holds, not what was sent: a record the producer failed to deliver is the
    // harness's loss (its delivery errors are not reported), a record Kafka has and the stream
    // skipped is a gap.
    let in_kafka: Vec<(i32, i64)> = read_all(&topic).iter().map(|r| (r.partition, r.offset)).collect();
    assert_eq!(in_kafka.len(), 60_000, "the producer delivered every record (a harness failure, not the gateway's)");
    let mut fast_got: Vec<(i32, i64)> = fast.records.iter().map(|r| (r.partition, r.offset)).collect();
    fast_got.sort();
    let mut want = in_kafka.clone();
    want.sort();
    let missing: Vec<_> = want.iter().filter(|r| fast_got.binary_search(r).is_err()).take(20).collect();
    assert!(
        fast_got == want,
        "the fast follower got {} of Kafka's {} records; first missing: {missing:?}",
        fast_got.len(),
        want.len()
    );
    // 60 MB went through; the stalled stream holds at most its bounded buffer.
    assert!(grown_mib < 100, "gateway memory grew by {grown_mib} MiB");

    // The slow client reads again and gets everything, in order, without a gap.
    slow.until(&ends, Duration::from_secs(120)).await.unwrap();
    let mut got: Vec<(i32, i64)> = slow.records.iter().map(|r| (r.partition, r.offset)).collect();
    got.sort();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_streams_with_their_resume_offsets() {
    let topic = unique_topic("shutdown");
    create_topic(&topic, 2).await;
    produce(&topic, &assignments(0..20, 0));
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let mut follower =
        Follower::start(&mut client, pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() })
            .await
            .unwrap();
    follower.until(&ends(&topic), Duration::from_secs(30)).await.unwrap();
    let stopping = tokio::spawn(gateway.stop());
    let status = loop {
        match follower.next().await {
            Ok(Some(())) => continue,
            Ok(None) => panic!("the stream ended without a status"),
            Err(status) => break status,
        }
    };
    stopping.await.unwrap();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(status::reason(&status).as_deref(), Some("SHUTTING_DOWN"));
    let detail = status::offsets_detail(&status).expect("resume offsets");
    assert_eq!(detail.kind(), pb::offsets_detail::Kind::Resume);
    assert_eq!(offset_map(&detail.offsets), follower.position, "resume exactly where the stream stood");
}

/// With `limits.head_linger_ms`, a subscription at the head waits that long after an append
/// before it reads: appends that arrive meanwhile go out in one message, and each record arrives
/// at least that late. (Without a linger each of these appends, 5 ms apart, is a message.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linger_at_the_head_sends_appends_together() {
    let topic = unique_topic("linger");
    create_topic(&topic, 1).await;
    let linger = Duration::from_millis(200);
    let limits = Limits { head_linger_ms: linger.as_millis() as u64, ..Limits::default() };
    let gateway = Gateway::start_with(config(&[&topic], limits)).await;
    let mut client = gateway.client().await;
    let mut stream = follow_topic(&mut client, &topic).await;
    stream.message().await.unwrap().unwrap(); // the first progress message: at the head
                                              // Read while writing: (messages, when the first record arrived).
    let reader = tokio::spawn(async move {
        let (mut messages, mut records, mut first) = (0, 0, None);
        while records < 10 {
            let message = stream.message().await.unwrap().unwrap();
            if let Some(pb::subscribe_response::Message::Records(batch)) = message.message {
                first.get_or_insert_with(Instant::now);
                messages += 1;
                records += batch.records.len();
            }
        }
        (messages, first.unwrap())
    });
    let writer = Writer::new(&topic);
    writer.warm_up();
    let started = Instant::now();
    for i in 0..10 {
        writer.send(&Out::kv(&format!("k{i}"), Some("v")));
        writer.flush();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let writing = started.elapsed();
    let (messages, first) = tokio::time::timeout(Duration::from_secs(10), reader).await.unwrap().unwrap();
    // From the moment the first record was sent, before which no one can have it.
    let waited = first - started;
    println!("10 appends over {writing:?}: {messages} messages; the first record arrived {waited:?} after it was sent");
    // One message per linger of writing, and one for the start and end of it.
    let most = (writing.as_secs_f64() / linger.as_secs_f64()).ceil() as usize + 1;
    assert!(messages <= most, "appends within a linger share a message: {messages} messages, at most {most}");
    assert!(waited >= linger, "the first record waited the linger: {waited:?}");
}

/// A conflating subscription whose client stops reading while A rewrites a few keys many times
/// gets far fewer records than were written, and its state, and position, are exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conflating_subscriber_that_falls_behind_gets_the_latest_value_per_key() {
    let topic = unique_topic("conflate");
    create_topic(&topic, 2).await;
    let gateway = Gateway::start_with(config(
        &[&topic],
        Limits { stream_buffer_messages: 1, max_batch_records: 50, ..Limits::default() },
    ))
    .await;
    let mut client = gateway.client().await;
    let request = pb::SubscribeRequest { topics: vec![topic.clone()], conflate: true, ..Default::default() };
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    follower.next().await.unwrap().unwrap(); // the first progress; then it stops reading
                                             // 20 keys rewritten 1000 times each, values of 1 KiB: far more than HTTP/2's windows hold.
    let pad = "x".repeat(1000);
    let records: Vec<Out> =
        (0..20_000).map(|i| Out::kv(&format!("k{}", i % 20), Some(&format!("{i} {pad}")))).collect();
    produce(&topic, &records);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut state = State::new();
    let ends = ends(&topic);
    follower.until(&ends, Duration::from_secs(60)).await.unwrap();
    for r in &follower.records {
        apply(&mut state, r);
    }
    println!("{} of 20000 records delivered", follower.records.len());
    assert_eq!(state, rebuild(&read_all(&topic)), "the state is exact");
    assert!(
        follower.records.len() < 5_000,
        "{} of 20000 records delivered: the slow client got the latest values, not every one",
        follower.records.len()
    );
}

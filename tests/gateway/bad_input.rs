//! Bad requests get the right code, a message that says what to fix, and details a program can
//! act on; nothing is lost and the gateway keeps serving.

use bytes::Bytes;
use tonic::Code;
use tributary_server::{api::status, pb};

use crate::harness::*;

fn po(topic: &str, partition: i32, offset: i64) -> pb::PartitionOffset {
    pb::PartitionOffset { topic: topic.to_string(), partition, offset }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_exact_codes_and_messages() {
    let topic = unique_topic("bad");
    let unexposed = unique_topic("unexposed");
    create_topic(&topic, 2).await;
    create_topic(&unexposed, 1).await;
    produce(&topic, &[Out::kv("a", Some("1")), Out::kv("b", Some("2"))]);
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let latest = ends(&topic);

    // (request, code, reason, message fragment, bad field)
    let cases: Vec<(pb::SubscribeRequest, Code, &str, String, Option<&str>)> = vec![
        (
            pb::SubscribeRequest::default(),
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "name at least one topic".into(),
            Some("topics"),
        ),
        (
            pb::SubscribeRequest { topics: vec!["no-such-topic".into()], ..Default::default() },
            Code::NotFound,
            "UNKNOWN_TOPIC",
            format!("topic 'no-such-topic' is not exposed by this gateway (exposed: {topic})"),
            None,
        ),
        (
            pb::SubscribeRequest { topics: vec![unexposed.clone()], ..Default::default() },
            Code::NotFound,
            "UNKNOWN_TOPIC",
            format!("topic '{unexposed}' is not exposed"),
            None,
        ),
        (
            pb::SubscribeRequest { from_offsets: vec![po(&topic, 5, 0)], ..Default::default() },
            Code::NotFound,
            "UNKNOWN_PARTITION",
            format!("topic '{topic}' has no partition 5 (it has 2"),
            None,
        ),
        (
            pb::SubscribeRequest { from_offsets: vec![po(&topic, -1, 0)], ..Default::default() },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "partition -1 is negative".into(),
            Some("from_offsets[0].partition"),
        ),
        (
            pb::SubscribeRequest { from_offsets: vec![po(&topic, 0, 0), po(&topic, 1, -5)], ..Default::default() },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "offset -5 is negative".into(),
            Some("from_offsets[1].offset"),
        ),
        (
            pb::SubscribeRequest { from_offsets: vec![po(&topic, 0, 0), po(&topic, 0, 1)], ..Default::default() },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            format!("{topic}/0 is listed twice"),
            Some("from_offsets[1]"),
        ),
        (
            pb::SubscribeRequest { topics: vec![topic.clone(), topic.clone()], ..Default::default() },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            format!("topic '{topic}' is listed twice"),
            Some("topics[1]"),
        ),
        (
            pb::SubscribeRequest { from_offsets: vec![po(&topic, 0, 1_000)], ..Default::default() },
            Code::OutOfRange,
            "OFFSET_BEYOND_END",
            format!(
                "offset 1000 of {topic}/0 is beyond the end of the partition (latest is {})",
                latest[&(topic.clone(), 0)]
            ),
            None,
        ),
        (
            pb::SubscribeRequest {
                topics: vec![topic.clone()],
                key_filter: Some(pb::KeyFilter { exact: vec![], prefixes: vec![Bytes::new()] }),
                ..Default::default()
            },
            Code::InvalidArgument,
            "INVALID_ARGUMENT",
            "an empty prefix matches every key".into(),
            Some("key_filter.prefixes"),
        ),
        (
            pb::SubscribeRequest {
                topics: vec![topic.clone()],
                subscription_name: unique_topic("never-started"),
                ..Default::default()
            },
            Code::FailedPrecondition,
            "NO_COMMITTED_POSITION",
            "take a snapshot, then subscribe with its offsets and this name".into(),
            None,
        ),
    ];
    for (request, code, reason, message, field) in cases {
        let status = Follower::start(&mut client, request.clone())
            .await
            .err()
            .unwrap_or_else(|| panic!("{request:?} succeeded"));
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
        assert!(status.message().contains(&message), "{:?} does not contain {message:?}", status.message());
        assert_eq!(status::reason(&status).as_deref(), Some(reason), "{request:?}");
        assert_eq!(status::bad_field(&status).as_deref(), field, "{request:?}");
    }

    // Beyond the end carries the latest offsets so the client can correct itself.
    let request = pb::SubscribeRequest {
        topics: vec![topic.clone()],
        from_offsets: vec![po(&topic, 1, 99)],
        ..Default::default()
    };
    let status = Follower::start(&mut client, request).await.err().unwrap();
    let detail = status::offsets_detail(&status).unwrap();
    assert_eq!(detail.kind(), pb::offsets_detail::Kind::Latest);
    let want: Vec<_> = latest.iter().map(|((t, p), o)| po(t, *p, *o)).collect();
    assert_eq!(detail.offsets, want, "the latest offsets of every partition of the request");

    // Snapshots validate the same way.
    let snapshot_cases: Vec<(pb::GetSnapshotRequest, Code)> = vec![
        (pb::GetSnapshotRequest::default(), Code::InvalidArgument),
        (topic_snapshot("no-such-topic"), Code::NotFound),
        (
            pb::GetSnapshotRequest { topics: vec![topic.clone(), topic.clone()], ..Default::default() },
            Code::InvalidArgument,
        ),
        (
            pb::GetSnapshotRequest {
                topics: vec![topic.clone()],
                translator: Some(pb::TranslatorRef { name: "no-such-translator".into(), ..Default::default() }),
                ..Default::default()
            },
            Code::NotFound,
        ),
        (
            pb::GetSnapshotRequest {
                topics: vec![topic.clone()],
                translator: Some(pb::TranslatorRef::default()),
                ..Default::default()
            },
            Code::InvalidArgument,
        ),
    ];
    for (request, code) in snapshot_cases {
        let status =
            snapshot(&mut client, request.clone()).await.err().unwrap_or_else(|| panic!("{request:?} succeeded"));
        assert_eq!(status.code(), code, "{request:?}: {status:?}");
    }
    let status = client.describe_topics(pb::DescribeTopicsRequest { topics: vec!["nope".into()] }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    // A request above limits.max_request_bytes never reaches the gateway.
    let huge = pb::SubscribeRequest {
        topics: vec![topic.clone()],
        key_filter: Some(pb::KeyFilter { exact: vec![Bytes::from(vec![b'k'; 5 << 20])], prefixes: vec![] }),
        ..Default::default()
    };
    let status = Follower::start(&mut client, huge).await.err().unwrap();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("the limit is: 4194304 bytes"), "{}", status.message());

    // Nothing was lost: the gateway still serves the full state.
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    assert_eq!(snap.state(), rebuild(&read_all(&topic)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_lists_partitions_offsets_and_readiness() {
    let topic = unique_topic("describe");
    create_topic(&topic, 3).await;
    produce(
        &topic,
        &[Out { partition: Some(1), ..Out::kv("a", Some("1")) }, Out { partition: Some(1), ..Out::kv("b", None) }],
    );
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let described = client.describe_topics(pb::DescribeTopicsRequest::default()).await.unwrap().into_inner();
    assert!(described.ready);
    assert_eq!(described.topics.len(), 1);
    let t = &described.topics[0];
    assert_eq!(t.name, topic);
    let p: Vec<(i32, i64, i64, i64, u64)> =
        t.partitions.iter().map(|p| (p.partition, p.earliest_offset, p.latest_offset, p.view_offset, p.keys)).collect();
    assert_eq!(p, vec![(0, 0, 0, 0, 0), (1, 0, 2, 2, 1), (2, 0, 0, 0, 0)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_is_resource_exhausted() {
    let topic = unique_topic("limit");
    create_topic(&topic, 1).await;
    let limits = tributary_server::config::Limits { max_streams: 2, ..Default::default() };
    let gateway = Gateway::start_with(config(&[&topic], limits)).await;
    let mut client = gateway.client().await;
    let request = pb::SubscribeRequest { topics: vec![topic.clone()], ..Default::default() };
    let a = Follower::start(&mut client, request.clone()).await.unwrap();
    let _b = Follower::start(&mut client, request.clone()).await.unwrap();
    let status = Follower::start(&mut client, request.clone()).await.err().unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("limits.max_streams"), "{}", status.message());
    // A stream that ends frees its place.
    drop(a);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Follower::start(&mut client, request.clone()).await {
            Ok(_) => break,
            Err(s) => {
                assert_eq!(s.code(), Code::ResourceExhausted);
                assert!(std::time::Instant::now() < deadline, "the place of a closed stream was never freed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

//! Record filters on headers and JSON fields, for snapshots and streams, checked against a
//! selection computed here from a raw rebuild; and their bad input.

use std::{collections::BTreeMap, time::Duration};

use rand::{Rng, SeedableRng};
use serde_json::Value;
use tonic::Code;
use tributary_server::{api::status, config::Limits, pb};

use crate::harness::*;

/// A's records: orders of a few owners and statuses, typed by a header, some with a tenant
/// header, some deleted, some keyless, some whose value is not JSON.
fn orders(seed: u64, n: usize) -> Vec<Out> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let key = format!("order/{}", rng.random_range(0..60));
            let status = ["open", "closed"][rng.random_range(0..2)];
            let owner = rng.random_range(0..3);
            // Owner 2 is written as 2.0 now and then: numbers compare by value.
            let owner = if owner == 2 && rng.random_bool(0.5) { "2.0".to_string() } else { owner.to_string() };
            let value = match rng.random_range(0..20) {
                0 => None,
                1 => Some("not json".to_string()),
                _ => Some(format!(r#"{{"n":{i},"owner":{{"id":{owner},"name":"o"}},"status":"{status}"}}"#)),
            };
            let mut headers =
                vec![("type".to_string(), Some(if i % 3 == 0 { b"refund".to_vec() } else { b"order".to_vec() }))];
            if rng.random_bool(0.9) {
                headers.push(("tenant".to_string(), None));
            }
            Out {
                partition: None,
                key: (!rng.random_ratio(1, 25)).then(|| key.into_bytes()),
                value: value.map(String::into_bytes),
                headers,
            }
        })
        .collect()
}

/// Type "order", a tenant header, status "open" and owner 1 or 2.
fn filter() -> pb::RecordFilter {
    pb::RecordFilter {
        headers: vec![
            pb::HeaderCondition { key: "type".into(), any_of: vec!["order".into()] },
            pb::HeaderCondition { key: "tenant".into(), any_of: vec![] },
        ],
        fields: vec![
            pb::FieldCondition { pointer: "/status".into(), any_of: vec![r#""open""#.into()] },
            pb::FieldCondition { pointer: "/owner/id".into(), any_of: vec!["1".into(), "2".into()] },
        ],
        tombstone_mismatches: false,
    }
}

/// The same conditions, written here with a parsed JSON tree.
fn meets(r: &Raw) -> bool {
    let typed = r.headers.iter().any(|(k, v)| k == "type" && v.as_deref() == Some(b"order"));
    let tenant = r.headers.iter().any(|(k, _)| k == "tenant");
    let fields = match &r.value {
        None => true,
        Some(v) => serde_json::from_slice::<Value>(v)
            .is_ok_and(|v| v["status"] == "open" && v["owner"]["id"].as_f64().is_some_and(|id| id == 1.0 || id == 2.0)),
    };
    typed && tenant && fields
}

/// The selection's state: keys whose latest record is a value that meets the conditions.
fn selection(raw: &[Raw]) -> State {
    let mut latest: BTreeMap<Vec<u8>, &Raw> = BTreeMap::new();
    for r in raw {
        if let Some(k) = &r.key {
            latest.insert(k.clone(), r);
        }
    }
    latest
        .into_iter()
        .filter(|(_, r)| r.value.is_some() && meets(r))
        .map(|(k, r)| (k, r.value.clone().unwrap()))
        .collect()
}

fn coordinates(records: &[pb::Record]) -> Vec<(i32, i64)> {
    let mut c: Vec<_> = records.iter().map(|r| (r.partition, r.offset)).collect();
    c.sort();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_field_filters_select_in_snapshots_catch_up_and_at_the_head() {
    let topic = unique_topic("record-filter");
    create_topic(&topic, 3).await;
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    produce(&topic, &orders(seed, 1_500));
    // A tail of 50 records per partition: a Subscribe from 0 reads from Kafka first.
    let gateway = Gateway::start_with(config(
        &[&topic],
        Limits { tail_max_records: 50, tail_pool_bytes: 0, ..Limits::default() },
    ))
    .await;
    let mut client = gateway.client().await;

    let request =
        pb::GetSnapshotRequest { topics: vec![topic.clone()], record_filter: Some(filter()), ..Default::default() };
    let snap = snapshot(&mut client, request).await.unwrap();
    let expected = selection(&read_all(&topic));
    assert!(!expected.is_empty() && expected.len() < 60, "the data selects some keys: {}", expected.len());
    assert_eq!(snap.state(), expected, "the snapshot holds the keys whose latest record meets the filter");

    // From 0 (the catch-up reader) and from the snapshot (the head), while A goes on writing.
    let from_zero: Vec<_> = snap.offsets.iter().map(|o| pb::PartitionOffset { offset: 0, ..o.clone() }).collect();
    let subscribe = |from: Vec<pb::PartitionOffset>| pb::SubscribeRequest {
        from_offsets: from,
        record_filter: Some(filter()),
        ..Default::default()
    };
    let mut all = Follower::start(&mut client, subscribe(from_zero)).await.unwrap();
    let mut head = Follower::start(&mut client, subscribe(snap.offsets.clone())).await.unwrap();
    produce(&topic, &orders(seed ^ 1, 500));
    let ends = ends(&topic);
    all.until(&ends, Duration::from_secs(60)).await.unwrap();
    head.until(&ends, Duration::from_secs(60)).await.unwrap();

    let raw = read_all(&topic);
    let wanted = |from: &BTreeMap<(String, i32), i64>| {
        let mut c: Vec<_> = raw
            .iter()
            .filter(|r| r.offset >= from.get(&(topic.clone(), r.partition)).copied().unwrap_or(0) && meets(r))
            .map(|r| (r.partition, r.offset))
            .collect();
        c.sort();
        c
    };
    assert_eq!(coordinates(&all.records), wanted(&BTreeMap::new()), "from 0: exactly the records that meet the filter");
    assert_eq!(coordinates(&head.records), wanted(&offset_map(&snap.offsets)), "from the snapshot");
    let by_coordinates: BTreeMap<_, _> = raw.iter().map(|r| ((r.partition, r.offset), r)).collect();
    for r in &all.records {
        let source = by_coordinates[&(r.partition, r.offset)];
        assert_eq!(r.value.as_deref(), source.value.as_deref(), "records are delivered as A wrote them");
        assert_eq!(r.headers.len(), source.headers.len());
    }
    // Keys whose value left the selection keep their last matching value: what SKIP means.
    let mut state = snap.state();
    for r in &head.records {
        apply(&mut state, r);
    }
    let mut kept = selection(&raw);
    for (k, v) in &state {
        kept.entry(k.clone()).or_insert_with(|| v.clone());
    }
    assert_eq!(state, kept, "the handoff holds every selected key at its latest value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_for_mismatches_keep_a_follower_at_exactly_the_selection() {
    let topic = unique_topic("record-filter-tombstones");
    create_topic(&topic, 2).await;
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    produce(&topic, &orders(seed, 800));
    let gateway = Gateway::start_with(config(
        &[&topic],
        Limits { tail_max_records: 40, tail_pool_bytes: 0, ..Limits::default() },
    ))
    .await;
    let mut client = gateway.client().await;
    let mut reg = crate::translators::registry(&gateway).await;
    upload(&mut reg, "identity", "identity.wasm").await;

    let deleting = pb::RecordFilter { tombstone_mismatches: true, ..filter() };
    let snap = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            topics: vec![topic.clone()],
            record_filter: Some(deleting.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(snap.state(), selection(&read_all(&topic)));

    // Untranslated (encoded straight from Kafka's buffers when catching up) and through the
    // identity translator (tombstones are not the records the translator's shared outcomes are
    // of), each from the snapshot and from 0.
    let translator = Some(pb::TranslatorRef { name: "identity".into(), ..Default::default() });
    let mut followers = Vec::new();
    for translator in [None, translator] {
        for from_zero in [false, true] {
            let from = snap
                .offsets
                .iter()
                .map(|o| pb::PartitionOffset { offset: if from_zero { 0 } else { o.offset }, ..o.clone() });
            let request = pb::SubscribeRequest {
                from_offsets: from.collect(),
                record_filter: Some(deleting.clone()),
                translator: translator.clone(),
                ..Default::default()
            };
            let follower = Follower::start(&mut client, request).await.unwrap();
            followers.push((from_zero, translator.is_some(), follower));
        }
    }
    produce(&topic, &orders(seed ^ 1, 400));
    let ends = ends(&topic);
    let raw = read_all(&topic);
    let expected = selection(&raw);
    let delivered = raw.iter().filter(|r| r.key.is_some() || meets(r)).count();
    for (from_zero, translated, mut follower) in followers {
        follower.until(&ends, Duration::from_secs(60)).await.unwrap();
        let mut state = if from_zero { State::new() } else { snap.state() };
        for r in &follower.records {
            apply(&mut state, r);
        }
        assert_eq!(state, expected, "from 0: {from_zero}, translated: {translated}: the model is the selection");
        if from_zero {
            assert_eq!(follower.records.len(), delivered, "every keyed record comes, as it is or as a tombstone");
        }
        let by_coordinates: BTreeMap<_, _> = raw.iter().map(|r| ((r.partition, r.offset), r)).collect();
        for r in &follower.records {
            let source = by_coordinates[&(r.partition, r.offset)];
            match meets(source) {
                true => assert_eq!(r.value.as_deref(), source.value.as_deref()),
                false => assert_eq!(r.value, None, "a mismatch comes as a tombstone of its key"),
            }
            assert_eq!(r.key.as_deref(), source.key.as_deref());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_record_filters_are_refused_naming_the_field_and_change_nothing() {
    let topic = unique_topic("record-filter-bad");
    create_topic(&topic, 1).await;
    produce(&topic, &[Out::kv("a", Some(r#"{"status":"open"}"#))]);
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let field = |pointer: &str, value: &str| pb::RecordFilter {
        fields: vec![pb::FieldCondition { pointer: pointer.into(), any_of: vec![value.into()] }],
        ..Default::default()
    };
    let cases = vec![
        (field("status", r#""open""#), "record_filter.fields[0].pointer", "starts with \"/\""),
        (field("/a~2b", "1"), "record_filter.fields[0].pointer", "\"~0\""),
        (field("/status", "open"), "record_filter.fields[0].any_of[0]", "a string with its quotes"),
        (
            pb::RecordFilter {
                headers: vec![pb::HeaderCondition { key: String::new(), any_of: vec![] }],
                ..Default::default()
            },
            "record_filter.headers[0].key",
            "a header key is required",
        ),
        (
            pb::RecordFilter {
                headers: (0..65).map(|i| pb::HeaderCondition { key: i.to_string(), any_of: vec![] }).collect(),
                ..Default::default()
            },
            "record_filter.headers",
            "at most 64",
        ),
    ];
    let check = |status: tonic::Status, field: &str, fragment: &str| {
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(fragment), "{:?} lacks {fragment:?}", status.message());
        assert_eq!(status::bad_field(&status).as_deref(), Some(field));
    };
    for (filter, field, fragment) in cases {
        let request = pb::GetSnapshotRequest {
            topics: vec![topic.clone()],
            record_filter: Some(filter.clone()),
            ..Default::default()
        };
        check(snapshot(&mut client, request).await.err().expect("refused"), field, fragment);
        // A named subscription with a start: refused before the start is recorded.
        let from = vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 0 }];
        let request = pb::SubscribeRequest {
            from_offsets: from,
            record_filter: Some(filter),
            subscription_name: "bad-filter".into(),
            ..Default::default()
        };
        check(Follower::start(&mut client, request).await.err().expect("refused"), field, fragment);
    }
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", gateway.addr)).unwrap().connect().await.unwrap();
    let mut subscriptions = pb::subscriptions_client::SubscriptionsClient::new(channel);
    let described = subscriptions.describe(pb::DescribeSubscriptionRequest { name: "bad-filter".into() }).await;
    assert_eq!(described.unwrap_err().code(), Code::NotFound, "nothing was recorded under the name");
    // The gateway keeps serving the same filter written right.
    let snap = snapshot(
        &mut client,
        pb::GetSnapshotRequest {
            topics: vec![topic.clone()],
            record_filter: Some(field("/status", r#""open""#)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(snap.entries.len(), 1);
}

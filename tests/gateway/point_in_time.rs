//! `GetSnapshot(as_of_offsets)`: the state exactly at past offsets, checked against a rebuild of
//! the records below them read by a plain consumer; and what cannot be answered exactly.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use tonic::Code;
use tributary_server::{api::status, config::Limits, pb};

use crate::harness::*;

/// Updates and deletes of a few keys over two partitions.
fn changes(seed: u64, n: usize) -> Vec<Out> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| {
            let k = rng.random_range(0..40);
            let value = (!rng.random_ratio(1, 6)).then(|| format!("v{i}"));
            // A key lives in one partition, as Kafka's partitioner would have it.
            Out { partition: Some(k % 2), ..Out::kv(&format!("k{k}"), value.as_deref()) }
        })
        .collect()
}

fn as_of(topic: &str, offsets: &[(i32, i64)]) -> pb::GetSnapshotRequest {
    pb::GetSnapshotRequest {
        topics: vec![topic.to_string()],
        as_of_offsets: offsets
            .iter()
            .map(|&(partition, offset)| pb::PartitionOffset { topic: topic.to_string(), partition, offset })
            .collect(),
        ..Default::default()
    }
}

/// The state of the records below `at` per partition (the head where `at` names none).
fn rebuilt_at(raw: &[Raw], at: &BTreeMap<i32, i64>) -> State {
    let below: Vec<Raw> =
        raw.iter().filter(|r| at.get(&r.partition).is_none_or(|&end| r.offset < end)).cloned().collect();
    rebuild(&below)
}

#[tokio::test]
async fn a_snapshot_as_of_past_offsets_is_the_state_rebuilt_up_to_them() {
    let topic = unique_topic("as-of");
    create_topic(&topic, 2).await;
    produce(&topic, &changes(7, 400));
    let gateway = Gateway::start(&[&topic]).await;
    let mut client = gateway.client().await;
    let raw = read_all(&topic);
    let end = ends(&topic);
    let (end0, end1) = (end[&(topic.clone(), 0)], end[&(topic.clone(), 1)]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let mut picks = vec![(0, 0), (end0, end1), (end0 / 2, 0)];
    picks.extend((0..8).map(|_| (rng.random_range(0..=end0), rng.random_range(0..=end1))));
    for (at0, at1) in picks {
        let snap = snapshot(&mut client, as_of(&topic, &[(0, at0), (1, at1)])).await.unwrap();
        let at: BTreeMap<i32, i64> = [(0, at0), (1, at1)].into();
        assert_eq!(snap.state(), rebuilt_at(&raw, &at), "as of {at:?}");
        assert_eq!(offset_map(&snap.offsets), [((topic.clone(), 0), at0), ((topic.clone(), 1), at1)].into());
        // Each entry is the very record: its offset is below the snapshot's.
        assert!(snap.entries.iter().all(|e| e.offset < at[&e.partition]));
    }
    // A partition not named is taken at the head; a key filter applies to the past state.
    let mut request = as_of(&topic, &[(1, end1 / 3)]);
    request.key_filter = Some(pb::KeyFilter { prefixes: vec!["k1".into()], ..Default::default() });
    let snap = snapshot(&mut client, request).await.unwrap();
    let expected: State =
        rebuilt_at(&raw, &[(1, end1 / 3)].into()).into_iter().filter(|(k, _)| k.starts_with(b"k1")).collect();
    assert_eq!(snap.state(), expected);
    assert_eq!(offset_map(&snap.offsets), [((topic.clone(), 0), end0), ((topic.clone(), 1), end1 / 3)].into());
    gateway.stop().await;
}

#[tokio::test]
async fn offsets_out_of_reach_are_out_of_range_with_the_offsets_that_can_be_asked_for() {
    let topic = unique_topic("as-of-reach");
    create_topic(&topic, 1).await;
    produce(&topic, &(0..50).map(|i| Out::kv(&format!("k{}", i % 7), Some("v"))).collect::<Vec<_>>());
    let gateway = Gateway::start_with(config(&[&topic], Limits { tail_max_records: 10, ..Limits::default() })).await;
    let mut client = gateway.client().await;

    let too_old = snapshot(&mut client, as_of(&topic, &[(0, 5)])).await.err().expect("too old");
    assert_eq!(too_old.code(), Code::OutOfRange);
    assert_eq!(status::reason(&too_old).as_deref(), Some("AS_OF_TOO_OLD"));
    let earliest = status::offsets_detail(&too_old).expect("the earliest offsets");
    assert_eq!(earliest.offsets, vec![pb::PartitionOffset { topic: topic.clone(), partition: 0, offset: 40 }]);
    assert!(too_old.message().contains("roll it back to offset 40"), "{}", too_old.message());
    let snap = snapshot(&mut client, as_of(&topic, &[(0, 40)])).await.expect("the earliest it names");
    assert_eq!(snap.state(), rebuilt_at(&read_all(&topic), &[(0, 40)].into()));

    let beyond = snapshot(&mut client, as_of(&topic, &[(0, 55)])).await.err().expect("beyond the end");
    assert_eq!(beyond.code(), Code::OutOfRange);
    assert_eq!(status::reason(&beyond).as_deref(), Some("OFFSET_BEYOND_END"));

    for (offsets, code, field) in [
        (vec![(0, -1)], Code::InvalidArgument, Some("as_of_offsets[0].offset")),
        (vec![(0, 45), (0, 46)], Code::InvalidArgument, Some("as_of_offsets[1]")),
        (vec![(3, 1)], Code::NotFound, None),
    ] {
        let e = snapshot(&mut client, as_of(&topic, &offsets)).await.err().expect("refused");
        assert_eq!(e.code(), code, "{offsets:?}: {e:?}");
        assert_eq!(status::bad_field(&e).as_deref(), field, "{offsets:?}");
    }
    gateway.stop().await;
}

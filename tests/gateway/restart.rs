//! A gateway killed mid-stream (SIGKILL) and started again: clients resume with their positions
//! and nothing is lost or repeated.

use std::time::Duration;

use tributary_server::pb;

use crate::harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_resume_after_the_gateway_is_killed() {
    let topic = unique_topic("restart");
    create_topic(&topic, 3).await;
    let first: Vec<Out> = (0..3_000).map(|i| Out::kv(&format!("k{}", i % 300), Some(&format!("a{i}")))).collect();
    produce(&topic, &first);

    let mut gateway = Process::spawn(&[&topic], &[]).await;
    let mut client = connect(gateway.addr).await;
    let snap = snapshot(&mut client, topic_snapshot(&topic)).await.unwrap();
    let mut state = snap.state();
    let request =
        pb::SubscribeRequest { from_offsets: snap.offsets.clone(), max_batch_records: 100, ..Default::default() };
    let mut follower = Follower::start(&mut client, request).await.unwrap();
    let writer = Writer::new(&topic);
    for i in 0..2_000 {
        writer.send(&Out::kv(&format!("k{}", i % 300), Some(&format!("b{i}"))));
    }
    writer.flush();
    // Read part of the change stream, then kill the gateway without warning.
    while follower.records.len() < 500 {
        follower.next().await.unwrap().unwrap();
    }
    gateway.kill();
    let status = loop {
        match follower.next().await {
            Ok(Some(())) => continue,
            Ok(None) => panic!("stream ended cleanly after SIGKILL"),
            Err(status) => break status,
        }
    };
    println!("stream ended with {:?} after {} records", status.code(), follower.records.len());
    let mut delivered = std::mem::take(&mut follower.records);

    // Changes keep coming while the gateway is down.
    for i in 0..1_000 {
        writer.send(&Out::kv(&format!("k{}", i % 300), if i % 10 == 0 { None } else { Some("c") }));
    }
    writer.flush();

    let gateway = Process::spawn(&[&topic], &[]).await;
    let mut client = connect(gateway.addr).await;
    let from: Vec<pb::PartitionOffset> = follower
        .position
        .iter()
        .map(|((t, p), o)| pb::PartitionOffset { topic: t.clone(), partition: *p, offset: *o })
        .collect();
    let mut resumed =
        Follower::start(&mut client, pb::SubscribeRequest { from_offsets: from, ..Default::default() }).await.unwrap();
    resumed.until(&ends(&topic), Duration::from_secs(60)).await.unwrap();
    delivered.extend(resumed.records);

    for r in &delivered {
        apply(&mut state, r);
    }
    let raw = read_all(&topic);
    assert_eq!(state, rebuild(&raw), "state after the restart equals the raw rebuild");
    let start = offset_map(&snap.offsets);
    let mut want: Vec<(i32, i64)> = raw
        .iter()
        .filter(|r| r.offset >= start[&(topic.clone(), r.partition)])
        .map(|r| (r.partition, r.offset))
        .collect();
    let mut got: Vec<(i32, i64)> = delivered.iter().map(|r| (r.partition, r.offset)).collect();
    want.sort();
    got.sort();
    assert_eq!(got, want, "no gap and no duplicate across the restart");
}

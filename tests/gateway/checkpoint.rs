//! `[checkpoint] dir`: a gateway stopped and started again resumes ingest from its checkpoint
//! (reading only the records written since) and serves exactly what a raw rebuild from Kafka
//! gives, also when it was killed (SIGKILL) while writing checkpoints.

use std::{
    collections::BTreeMap,
    path::Path,
    time::{Duration, Instant},
};

use crate::harness::*;

/// The gateway's JSON log lines.
fn log_lines(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log).unwrap().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The first log line with `message`.
fn logged(log: &Path, message: &str) -> Option<serde_json::Value> {
    log_lines(log).into_iter().find(|l| l["fields"]["message"] == message)
}

/// The real binary checkpointing to `dir` every 50 ms, its JSON log in `log`.
async fn gateway(topic: &str, dir: &Path, log: &Path) -> Process {
    let dir = dir.display().to_string();
    let env = [
        ("TRIBUTARY__CHECKPOINT__DIR", dir.as_str()),
        ("TRIBUTARY__CHECKPOINT__INTERVAL_MS", "50"),
        ("TRIBUTARY__CHECKPOINT__MAX_RECORDS", "200"),
        ("TRIBUTARY_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,tributary_checkpoint=debug"),
    ];
    Process::spawn_logging_to(&[topic], &env, std::fs::File::create(log).unwrap().into()).await
}

/// Waits until the gateway logging to `log` has written a checkpoint.
async fn checkpointed(log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while logged(log, "checkpoint written").is_none() {
        assert!(Instant::now() < deadline, "no checkpoint written");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The gateway's snapshot equals a raw rebuild from Kafka, at Kafka's end offsets.
async fn assert_serves_the_raw_rebuild(gateway: &Process, topic: &str) {
    let mut client = connect(gateway.addr).await;
    let snap = snapshot(&mut client, topic_snapshot(topic)).await.unwrap();
    assert_eq!(offset_map(&snap.offsets), ends(topic), "served at Kafka's end offsets");
    let records = read_all(topic);
    // Each key's entry comes from the record that set it, headers included.
    let mut setters = BTreeMap::new();
    for r in records.iter().filter(|r| r.key.is_some()) {
        let at = (r.partition, r.offset, r.headers.clone());
        match r.value {
            Some(_) => setters.insert(r.key.clone().unwrap(), at),
            None => setters.remove(r.key.as_ref().unwrap()),
        };
    }
    let served_setters: BTreeMap<_, _> = snap
        .entries
        .iter()
        .map(|e| {
            let headers = e.headers.iter().map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec()))).collect();
            (e.key.to_vec(), (e.partition, e.offset, headers))
        })
        .collect();
    assert!(served_setters == setters, "every entry has the coordinates and headers of the record that set it");
    let (served, raw) = (snap.state(), rebuild(&records));
    let differ: Vec<_> = served.keys().chain(raw.keys()).filter(|k| served.get(*k) != raw.get(*k)).take(5).collect();
    assert!(differ.is_empty(), "the snapshot differs from the raw rebuild at keys like {differ:?}");
    assert_eq!(served.len(), raw.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_checkpoint_and_serves_the_raw_rebuild() {
    let topic = unique_topic("checkpoint");
    create_topic(&topic, 3).await;
    // Tombstones, and headers (one of them null) on some records: the checkpoint keeps them.
    let first: Vec<Out> = (0..3_000)
        .map(|i| Out {
            headers: if i % 11 == 0 { vec![("h".into(), Some(vec![i as u8])), ("null".into(), None)] } else { vec![] },
            ..Out::kv(&format!("k{}", i % 400), (i % 7 != 0).then(|| format!("a{i}")).as_deref())
        })
        .collect();
    produce(&topic, &first);
    let (dir, logs) = (scratch_dir("checkpoint"), scratch_dir("checkpoint-logs"));

    let log = logs.join("first.log");
    let mut first_run = gateway(&topic, &dir, &log).await;
    assert_serves_the_raw_rebuild(&first_run, &topic).await;
    checkpointed(&log).await;
    first_run.kill();

    // Replaced values, new keys, tombstones and keyless records while the gateway is down; keys
    // k0..k199 keep the values (and headers) the checkpoint has.
    let mut more: Vec<Out> = (0..1_000)
        .map(|i| Out::kv(&format!("k{}", 200 + i % 300), (i % 5 != 0).then(|| format!("b{i}")).as_deref()))
        .collect();
    more.extend((0..10).map(|_| Out { key: None, ..Out::kv("", Some("keyless")) }));
    more.extend((0..50).map(|i| Out {
        headers: vec![("h".into(), Some(format!("x{i}").into_bytes())), ("null".into(), None)],
        ..Out::kv(&format!("h{i}"), Some("with headers"))
    }));
    produce(&topic, &more);

    let log = logs.join("second.log");
    let second_run = gateway(&topic, &dir, &log).await;
    assert_serves_the_raw_rebuild(&second_run, &topic).await;
    let resumed = logged(&log, "resumed from the checkpoint").expect("the restart resumed from the checkpoint");
    assert_eq!(resumed["fields"]["partitions"], 3, "{resumed}");
    let ready = logged(&log, "view caught up with Kafka; serving snapshots").expect("ready");
    let read = ready["fields"]["records"].as_u64().unwrap();
    assert!(read <= more.len() as u64, "read {read} records: only those after the checkpoint, not all 4,060");
    assert!(logged(&log, "a partition's checkpoint cannot be continued; the partition is rebuilt from Kafka").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_while_writing_checkpoints_restarts_with_the_raw_rebuild() {
    let topic = unique_topic("checkpoint-kill");
    create_topic(&topic, 2).await;
    let (dir, logs) = (scratch_dir("checkpoint-kill"), scratch_dir("checkpoint-kill-logs"));
    let writer = Writer::new(&topic);
    let mut written = 0;
    let mut write = |n: usize| {
        for _ in 0..n {
            let i = written;
            written += 1;
            writer.send(&Out::kv(&format!("k{}", i % 700), (i % 9 != 0).then(|| format!("v{i}")).as_deref()));
        }
        writer.flush();
    };
    write(2_000);
    for run in 0..3 {
        let log = logs.join(format!("run-{run}.log"));
        let mut gateway = gateway(&topic, &dir, &log).await;
        // Records keep coming while checkpoints are written (every 50 ms or 200 records); the
        // kill lands at a different point of a write each time.
        for step in 0..(4 + run * 3) {
            write(300 + 50 * step);
            tokio::time::sleep(Duration::from_millis(20 + 13 * step as u64)).await;
        }
        checkpointed(&log).await;
        gateway.kill();
    }
    write(500);
    let log = logs.join("last.log");
    let gateway = gateway(&topic, &dir, &log).await;
    assert_serves_the_raw_rebuild(&gateway, &topic).await;
    assert!(logged(&log, "resumed from the checkpoint").is_some(), "the last start resumed from a checkpoint");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_cannot_be_used_is_reported_and_the_view_is_rebuilt_from_kafka() {
    let topic = unique_topic("checkpoint-bad");
    create_topic(&topic, 2).await;
    let records = |from: usize| -> Vec<Out> {
        (from..from + 1_000)
            .map(|i| Out {
                partition: Some((i % 2) as i32),
                ..Out::kv(&format!("k{}", i % 150), Some(&format!("v{i}")))
            })
            .collect()
    };
    produce(&topic, &records(0));
    let (dir, logs) = (scratch_dir("checkpoint-bad"), scratch_dir("checkpoint-bad-logs"));
    let log = logs.join("first.log");
    let mut first = gateway(&topic, &dir, &log).await;
    checkpointed(&log).await;
    first.kill();

    // Retention passes partition 0's checkpoint (500 records each): that partition is rebuilt,
    // partition 1 resumes.
    produce(&topic, &records(1_000));
    delete_records(&topic, 0, 700).await;
    let log = logs.join("retention.log");
    let mut second = gateway(&topic, &dir, &log).await;
    assert_serves_the_raw_rebuild(&second, &topic).await;
    let discarded = log_lines(&log)
        .into_iter()
        .find(|l| l["fields"]["event"] == "checkpoint_discarded")
        .expect("the discarded partition is reported");
    assert_eq!(discarded["fields"]["partition"], format!("{topic}/0"), "{discarded}");
    assert_eq!(logged(&log, "resumed from the checkpoint").expect("partition 1 resumed")["fields"]["partitions"], 1);
    checkpointed(&log).await;
    second.kill();

    // A damaged file: reported, set aside, and the whole view is loaded from Kafka.
    std::fs::write(dir.join("view.redb"), vec![0x5a; 4096]).unwrap();
    let log = logs.join("damaged.log");
    let third = gateway(&topic, &dir, &log).await;
    assert_serves_the_raw_rebuild(&third, &topic).await;
    let unreadable = log_lines(&log).into_iter().find(|l| l["fields"]["event"] == "checkpoint_unreadable");
    assert!(unreadable.is_some(), "the damaged file is reported");
    assert!(logged(&log, "resumed from the checkpoint").is_none());
    assert!(dir.join("view.redb.bad").exists());
}

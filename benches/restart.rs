//! Start to ready after a restart, with a checkpoint (`[checkpoint] dir`) and without, against
//! the tuned raw consumer's read of the same topic in the same run. Prints ratios; asserts
//! nothing about speed (the machine is shared and noisy), only that every start serves the whole
//! state.
//!
//! `scripts/bench.sh restart`. Sizing, with defaults: BENCH_RESTART_RECORDS ("2000000,20000000":
//! one topic per size, records of BENCH_VALUE_BYTES = 100 in BENCH_PARTITIONS = 4 partitions),
//! BENCH_RESTART_VERSIONS ("1,10": each size once with one record per key, once with 10 versions
//! of each key, where the log holds ten times the state). The 20 M topics need ~2.5 GiB of Kafka
//! log each and the gateway up to ~5 GiB of memory.
//!
//! Per size: the best raw profile reads the topic (the baseline); a gateway without a checkpoint
//! starts (its start to ready is a full read of Kafka); a gateway with a checkpoint directory
//! starts on an empty one, writes its first checkpoint (timed) and is killed (SIGKILL); a third
//! gateway starts on that checkpoint. Each start to ready includes the process start, and each
//! gateway's snapshot is checked to hold every key before its row is printed.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use tributary_testkit::{bench::*, *};

/// The first line of the JSON log at `log` whose message is `message`.
fn logged(log: &Path, message: &str) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["fields"]["message"] == message)
}

/// Starts the real binary on `topic`, its JSON log in `log`; returns it and its start to ready.
async fn start(topic: &str, checkpoint: Option<&Path>, log: &Path) -> (Process, Duration) {
    let dir = checkpoint.map(|d| d.display().to_string());
    let mut env = vec![("TRIBUTARY_LOG_FORMAT", "json"), ("RUST_LOG", "info,tributary_checkpoint=debug")];
    if let Some(dir) = &dir {
        env.push(("TRIBUTARY__CHECKPOINT__DIR", dir));
    }
    let started = Instant::now();
    let gateway = Process::spawn_logging_to(&[topic], &env, std::fs::File::create(log).unwrap().into()).await;
    (gateway, started.elapsed())
}

/// Every key is served (the start was not ready on an empty or partial view).
async fn assert_whole(gateway: &Process, topic: &str, keys: usize) {
    let mut client = connect(gateway.addr).await;
    let snap = snapshot(&mut client, topic_snapshot(topic)).await.unwrap();
    assert_eq!(snap.entries.len(), keys, "the gateway serves every key");
}

/// Bytes of the files under `dir`.
fn size_of(dir: &Path) -> u64 {
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()
}

fn row(what: &str, d: Duration, baseline: Duration) {
    println!("{what:<60} {d:>10.2?} {:>9.2}x", baseline.as_secs_f64() / d.as_secs_f64());
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::var("BENCH_RESTART_RECORDS")
        .unwrap_or_else(|_| "2000000,20000000".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let versions: Vec<usize> = std::env::var("BENCH_RESTART_VERSIONS")
        .unwrap_or_else(|_| "1,10".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|v| *v > 0)
        .collect();
    let value_bytes = env("BENCH_VALUE_BYTES", 100);
    let partitions = env("BENCH_PARTITIONS", 4) as i32;
    let logs = scratch_dir("bench-restart-logs");

    for (records, versions) in sizes.iter().flat_map(|r| versions.iter().map(move |v| (*r, *v))) {
        let keys = records / versions;
        let topic = unique_topic("bench-restart");
        create_topic(&topic, partitions).await;
        let started = Instant::now();
        fill(&topic, records, value_bytes, versions);
        println!(
            "\nsetup: {records} records of ~{value_bytes} B, {keys} keys ({versions} per key), {partitions} partitions, produced in {:.2?}",
            started.elapsed()
        );
        let ends = ends(&topic);
        let (baseline, _) = best_raw(&ends, records);

        println!("\n{:<60} {:>10} {:>10}", format!("{records} records, {keys} keys"), "time", "vs raw");
        row("raw consumer, best profile = baseline", baseline, baseline);

        let (gateway, ready) = start(&topic, None, &logs.join(format!("{records}-full.log"))).await;
        assert_whole(&gateway, &topic, keys).await;
        let rss = gateway.rss_kib();
        drop(gateway);
        row("gateway start to ready, no checkpoint (reads Kafka)", ready, baseline);

        let dir = scratch_dir("bench-restart-checkpoint");
        let log = logs.join(format!("{records}-first.log"));
        let (mut gateway, first_ready) = start(&topic, Some(&dir), &log).await;
        let written = Instant::now();
        let deadline = written + Duration::from_secs(600);
        while logged(&log, "checkpoint written").is_none() {
            assert!(Instant::now() < deadline, "no checkpoint written in 10 minutes");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let write = written.elapsed();
        gateway.kill();
        row("gateway start to ready, empty checkpoint directory", first_ready, baseline);
        println!(
            "{:<60} {write:>10.2?}   (file {:.0} MiB; gateway RSS {:.0} MiB)",
            "first checkpoint written (after ready, off the ingest thread)",
            size_of(&dir) as f64 / (1 << 20) as f64,
            rss as f64 / 1024.0
        );

        let log = logs.join(format!("{records}-resumed.log"));
        let (gateway, resumed) = start(&topic, Some(&dir), &log).await;
        assert!(logged(&log, "resumed from the checkpoint").is_some(), "the restart resumed from the checkpoint");
        assert_whole(&gateway, &topic, keys).await;
        drop(gateway);
        row("gateway start to ready, from the checkpoint", resumed, baseline);
        println!(
            "{:<60} {:>10.2}x   (goal at 20 M records: ready in <= 2 s)",
            "checkpoint vs no checkpoint",
            ready.as_secs_f64() / resumed.as_secs_f64()
        );
        let _ = std::fs::remove_dir_all(&dir);
        // The topic is not needed again: its log goes back to the disk.
        delete_topic(&topic).await;
    }
}

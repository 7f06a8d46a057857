//! One replica against three on the same topic (`[sharding] group`): time until the fleet serves
//! every partition (process starts included) and memory per replica, against the tuned raw
//! consumer's read of the same topic in the same run. Prints ratios; asserts nothing about speed
//! (the machine is shared and noisy), only that the fleet serves every key exactly once.
//!
//! `scripts/bench.sh fleet`. Sizing, with defaults: BENCH_FLEET_RECORDS (2,000,000 records of
//! BENCH_VALUE_BYTES = 100, one per key) in BENCH_FLEET_PARTITIONS = 12 partitions, and
//! BENCH_FLEET_REPLICAS ("1,3"). All replicas run on this machine's 2 cores, so the rate of a fleet
//! here is a floor: what sharding buys is memory per replica, and the rate of replicas on
//! machines of their own.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use tributary_server::pb;
use tributary_testkit::{bench::*, *};

/// The session timeout of the bench's replicas (the broker's minimum).
const SESSION_MS: &str = "6000";

/// Each partition's owner, once `replica` reports the group stable with every partition owned.
async fn stable_owners(replica: &Process, topic: &str) -> Option<BTreeMap<i32, String>> {
    let mut client = connect(replica.addr).await;
    let request = pb::GetTopologyRequest { topics: vec![topic.to_string()] };
    let topology = client.get_topology(request).await.ok()?.into_inner();
    if topology.group_state != "Stable" || topology.partitions.iter().any(|p| p.moving || p.owner.is_empty()) {
        return None;
    }
    Some(topology.partitions.iter().map(|p| (p.partition, p.owner.clone())).collect())
}

/// Keys served by `replica` (its held partitions), or none while one of them still loads.
async fn keys_served(replica: &Process, topic: &str) -> Option<usize> {
    let mut client = connect(replica.addr).await;
    snapshot(&mut client, topic_snapshot(topic)).await.ok().map(|s| s.entries.len())
}

#[tokio::main]
async fn main() {
    let records = env("BENCH_FLEET_RECORDS", 2_000_000);
    let value_bytes = env("BENCH_VALUE_BYTES", 100);
    let partitions = env("BENCH_FLEET_PARTITIONS", 12) as i32;
    let fleets: Vec<usize> = std::env::var("BENCH_FLEET_REPLICAS")
        .unwrap_or_else(|_| "1,3".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    // Each fleet started all at once, then (over 1) one replica at a time: a scale-out, where the
    // first loads every partition and gives some away as each new one joins.
    let runs: Vec<(usize, bool)> =
        fleets.iter().flat_map(|n| [(*n, true)].into_iter().chain((*n > 1).then_some((*n, false)))).collect();

    let topic = unique_topic("bench-fleet");
    create_topic(&topic, partitions).await;
    let started = Instant::now();
    fill(&topic, records, value_bytes, 1);
    println!(
        "setup: {records} records of ~{value_bytes} B, one per key, {partitions} partitions, produced in {:.2?}",
        started.elapsed()
    );
    let ends = ends(&topic);
    let (baseline, _) = best_raw(&ends, records);
    println!("\n{:<44} {:>10} {:>12} {:>9}  memory per replica (RSS)", "what", "time", "records/s", "vs raw");
    println!(
        "{:<44} {baseline:>10.2?} {:>12.0} {:>8.2}x",
        "raw consumer, best profile = baseline",
        records as f64 / baseline.as_secs_f64(),
        1.0
    );

    for (replicas, together) in runs {
        let group = unique_topic("bench-fleet-group");
        let session = SESSION_MS.to_string();
        // Together, as a fleet rolled out at once; else each one once the previous one serves.
        let started = Instant::now();
        let start = |i: usize| {
            let (topic, group, session) = (topic.clone(), group.clone(), session.clone());
            tokio::spawn(async move {
                let id = format!("r{i}");
                let env = [
                    ("TRIBUTARY__SHARDING__GROUP", group.as_str()),
                    ("TRIBUTARY__SHARDING__INSTANCE_ID", id.as_str()),
                    ("TRIBUTARY__SHARDING__SESSION_TIMEOUT_MS", session.as_str()),
                ];
                Process::spawn(&[&topic], &env).await
            })
        };
        let mut fleet = Vec::new();
        if together {
            let starting: Vec<_> = (0..replicas).map(start).collect();
            for replica in starting {
                fleet.push(replica.await.expect("replica start"));
            }
        } else {
            for i in 0..replicas {
                fleet.push(start(i).await.expect("replica start"));
            }
        }
        // Served: the group is stable with every partition owned by one of these replicas, and
        // their snapshots together hold every key once.
        let deadline = Instant::now() + Duration::from_secs(300);
        let owners = loop {
            assert!(Instant::now() < deadline, "the fleet of {replicas} did not settle in 5 minutes");
            if let Some(owners) = stable_owners(&fleet[0], &topic).await {
                let mut served = Vec::new();
                for replica in &fleet {
                    served.push(keys_served(replica, &topic).await);
                }
                if served.iter().all(Option::is_some) && served.iter().flatten().sum::<usize>() == records {
                    break owners;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let ready = started.elapsed();
        let held: Vec<usize> =
            fleet.iter().map(|r| owners.values().filter(|o| **o == r.addr.to_string()).count()).collect();
        let rss: Vec<String> = fleet.iter().map(|r| format!("{:.0} MiB", r.rss_kib() as f64 / 1024.0)).collect();
        println!(
            "{:<44} {ready:>10.2?} {:>12.0} {:>8.2}x  {} (partitions held: {held:?})",
            match (replicas, together) {
                (1, _) => "1 replica: start to every key served".to_string(),
                (n, true) => format!("{n} replicas started together: every key served"),
                (n, false) => format!("{n} replicas started one by one: every key served"),
            },
            records as f64 / ready.as_secs_f64(),
            baseline.as_secs_f64() / ready.as_secs_f64(),
            rss.join(", ")
        );
        drop(fleet);
    }
    delete_topic(&topic).await;
}

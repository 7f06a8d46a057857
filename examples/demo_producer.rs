//! Plays system A for the demo: a media-assignment service that writes its state changes to
//! Kafka (assignments created, moved between stations, and ended with a tombstone).
//!
//! `cargo run --example demo_producer -- [BOOTSTRAP] [TOPIC]`; it knows nothing about Tributary.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rdkafka::{
    config::ClientConfig,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

const STATIONS: &[&str] = &["north", "harbour", "airport", "central", "west"];
const ASSIGNMENTS: u32 = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let bootstrap = args.next().unwrap_or_else(|| "127.0.0.1:9092".into());
    let topic = args.next().unwrap_or_else(|| "media-assignments".into());
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .create()
        .expect("kafka producer");
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut sequence = 0u64;
    let mut send = async |key: String, value: Option<String>| {
        sequence += 1;
        let headers = OwnedHeaders::new().insert(Header { key: "source", value: Some("system-a") });
        let mut record = FutureRecord::to(&topic).key(&key).headers(headers);
        if let Some(v) = &value {
            record = record.payload(v);
        }
        match producer.send(record, Duration::from_secs(5)).await {
            Ok(delivery) => {
                let change = value.as_deref().unwrap_or("(ended)");
                println!("A wrote {key} = {change}  [p{}@{}]", delivery.partition, delivery.offset);
            }
            Err((e, _)) => eprintln!("A could not write {key}: {e}"),
        }
    };
    // Initial state: every assignment exists once.
    for id in 0..ASSIGNMENTS {
        let station = STATIONS[rng.random_range(0..STATIONS.len())];
        send(format!("assignment/{id}"), Some(assignment(id, station, "scheduled", 0))).await;
    }
    // Then a change every 700 ms: a move, a status change, or an assignment ended.
    let mut version = 1;
    loop {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let id = rng.random_range(0..ASSIGNMENTS);
        let key = format!("assignment/{id}");
        version += 1;
        if rng.random_bool(0.1) {
            send(key, None).await;
        } else {
            let station = STATIONS[rng.random_range(0..STATIONS.len())];
            let status = ["scheduled", "on-air", "done"][rng.random_range(0..3)];
            send(key, Some(assignment(id, station, status, version))).await;
        }
    }
}

fn assignment(id: u32, station: &str, status: &str, version: u32) -> String {
    format!(r#"{{"id":{id},"station":"{station}","status":"{status}","version":{version}}}"#)
}

//! Plays system B for the demo: takes a snapshot of A's state through Tributary, then follows
//! every change from the snapshot's offsets, printing both.
//!
//! `cargo run --example demo_client -- [GATEWAY_URL] [TOPIC] [SECONDS]` (0 seconds: forever).

use std::{collections::BTreeMap, time::Duration};

use tributary_server::pb::{self, gateway_client::GatewayClient, subscribe_response::Message};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let topic = args.next().unwrap_or_else(|| "media-assignments".into());
    let seconds: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(0);
    let mut client = GatewayClient::connect(url.clone()).await?;

    // 1. The state, with the offsets it is exact at.
    let mut stream = client
        .get_snapshot(pb::GetSnapshotRequest { topics: vec![topic.clone()], ..Default::default() })
        .await?
        .into_inner();
    let mut state = BTreeMap::new();
    let mut offsets = Vec::new();
    while let Some(chunk) = stream.message().await? {
        if offsets.is_empty() {
            offsets = chunk.offsets;
        }
        for e in chunk.entries {
            state.insert(String::from_utf8_lossy(&e.key).into_owned(), String::from_utf8_lossy(&e.value).into_owned());
        }
    }
    let at: Vec<String> = offsets.iter().map(|o| format!("p{}@{}", o.partition, o.offset)).collect();
    println!("B snapshot: {} assignments, exact at {}", state.len(), at.join(" "));
    for (k, v) in state.iter().take(3) {
        println!("B   {k} = {v}");
    }
    println!("B   ...");

    // 2. Every change after those offsets, live.
    let request = pb::SubscribeRequest { from_offsets: offsets, ..Default::default() };
    let mut stream = client.subscribe(request).await?.into_inner();
    let deadline = (seconds > 0).then(|| tokio::time::Instant::now() + Duration::from_secs(seconds));
    loop {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.message()).await {
                Ok(m) => m?,
                Err(_) => break,
            },
            None => stream.message().await?,
        };
        let Some(message) = next else { break };
        match message.message {
            Some(Message::Records(batch)) => {
                for r in batch.records {
                    let key = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
                    match r.value {
                        Some(v) => {
                            let v = String::from_utf8_lossy(&v).into_owned();
                            println!("B live: {key} = {v}  [p{}@{}]", r.partition, r.offset);
                            state.insert(key, v);
                        }
                        None => {
                            println!("B live: {key} ended  [p{}@{}]", r.partition, r.offset);
                            state.remove(&key);
                        }
                    }
                }
            }
            Some(Message::Progress(p)) => {
                let at: Vec<String> = p.offsets.iter().map(|o| format!("p{}@{}", o.partition, o.offset)).collect();
                println!("B position: {}  ({} assignments)", at.join(" "), state.len());
            }
            None => {}
        }
    }
    Ok(())
}

//! The `tributary subscription` commands: a gRPC client of the gateway's Subscriptions service.

use tributary_client::pb;

use super::{GatewayArgs, SubscriptionCommand};
use crate::translator::{connect, status};

/// Parses `TOPIC:PARTITION=OFFSET`.
fn parse_position(arg: &str) -> Result<pb::PartitionOffset, String> {
    let bad = || format!("{arg:?} is not TOPIC:PARTITION=OFFSET (e.g. orders:0=42)");
    let (at, offset) = arg.rsplit_once('=').ok_or_else(bad)?;
    let (topic, partition) = at.rsplit_once(':').ok_or_else(bad)?;
    Ok(pb::PartitionOffset {
        topic: topic.to_string(),
        partition: partition.parse().map_err(|_| bad())?,
        offset: offset.parse().map_err(|_| bad())?,
    })
}

fn print(s: &pb::SubscriptionInfo) {
    let translator = match s.translator_digest.is_empty() {
        true => "untranslated".to_string(),
        false => format!("translator {} {}", s.translator_name, s.translator_digest),
    };
    let lag: i64 = s.partitions.iter().map(|p| p.lag).sum();
    let active = if s.active_here { "\tactive here" } else { "" };
    println!("{}\tgroup {}\ttopics {}\t{translator}\tlag {lag}{active}", s.name, s.group, s.topics.join(","));
    for p in &s.partitions {
        println!(
            "  {}:{}\tcommitted {}\tlatest {}\tlag {}",
            p.topic, p.partition, p.committed_offset, p.latest_offset, p.lag
        );
    }
}

pub async fn run(gateway: GatewayArgs, command: SubscriptionCommand) -> Result<(), String> {
    let mut client = connect(&gateway).await?.subscriptions;
    match command {
        SubscriptionCommand::List => {
            let list = client.list(pb::ListSubscriptionsRequest {}).await.map_err(status)?.into_inner();
            if list.subscriptions.is_empty() {
                println!("no subscriptions");
            }
            list.subscriptions.iter().for_each(print);
        }
        SubscriptionCommand::Describe { name } => {
            print(&client.describe(pb::DescribeSubscriptionRequest { name }).await.map_err(status)?.into_inner());
        }
        SubscriptionCommand::Commit { name, positions } => {
            let offsets = positions.iter().map(|p| parse_position(p)).collect::<Result<_, _>>()?;
            let response = client.commit(pb::CommitRequest { name, offsets }).await.map_err(status)?.into_inner();
            print(&response.subscription.unwrap_or_default());
        }
        SubscriptionCommand::Delete { name } => {
            client.delete(pb::DeleteSubscriptionRequest { name: name.clone() }).await.map_err(status)?;
            println!("deleted {name}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_parsed() {
        let p = parse_position("a.b:c:3=42").unwrap();
        assert_eq!((p.topic.as_str(), p.partition, p.offset), ("a.b:c", 3, 42));
        for bad in ["orders", "orders:0", "orders=1", "orders:x=1", "orders:0=y"] {
            assert!(parse_position(bad).unwrap_err().contains("TOPIC:PARTITION=OFFSET"), "{bad}");
        }
    }
}

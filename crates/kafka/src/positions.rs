//! [`GroupPositions`]: the core's [`Positions`] port over Kafka consumer groups. A subscription
//! named N keeps its position as the committed offsets of group `<prefix>N`; each partition's
//! commit metadata holds the [`Stamp`] as JSON. The gateway never joins these groups: it commits
//! and fetches offsets with a consumer that has the group's id and no assignment, so the groups
//! stay empty and can be deleted (and inspected with Kafka's own tools).

use std::sync::{Arc, Mutex};

use rdkafka::{
    admin::{AdminClient, AdminOptions},
    client::DefaultClientContext,
    consumer::{BaseConsumer, CommitMode, Consumer},
    types::RDKafkaErrorCode,
    Offset, TopicPartitionList,
};
use tributary_core::{
    positions::{Committed, Positions, Stamp},
    source::Partition,
    Error, PartitionOffset,
};

use crate::{
    metadata::{offsets_of, REQUEST_TIMEOUT},
    settings::{consumer_config, kafka_error, metadata_tuning, KafkaConfig},
};

/// Group clients kept for reuse (each is a librdkafka client with its own threads).
const CACHED_CLIENTS: usize = 8;

pub struct GroupPositions {
    config: KafkaConfig,
    admin: AdminClient<DefaultClientContext>,
    /// For the group list.
    metadata: BaseConsumer,
    /// Group id → a client with that group id, most recently used last.
    clients: Mutex<Vec<(String, Arc<BaseConsumer>)>>,
}

impl GroupPositions {
    pub fn new(config: &KafkaConfig) -> Result<Self, Error> {
        let admin = consumer_config(config, "subscriptions-admin", &[]).create().map_err(kafka_error)?;
        let metadata = consumer_config(config, "subscriptions", &metadata_tuning()).create().map_err(kafka_error)?;
        Ok(Self { config: config.clone(), admin, metadata, clients: Mutex::new(Vec::new()) })
    }

    /// A client whose group id is `group`.
    fn client(&self, group: &str) -> Result<Arc<BaseConsumer>, Error> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = clients.iter().position(|(g, _)| g == group) {
            let entry = clients.remove(i);
            let client = entry.1.clone();
            clients.push(entry);
            return Ok(client);
        }
        let mut config = consumer_config(&self.config, "subscriptions", &metadata_tuning());
        config.set("group.id", group);
        let client: Arc<BaseConsumer> = Arc::new(config.create().map_err(kafka_error)?);
        if clients.len() >= CACHED_CLIENTS {
            clients.remove(0);
        }
        clients.push((group.to_string(), client.clone()));
        Ok(client)
    }
}

impl Positions for GroupPositions {
    fn group(&self, name: &str) -> String {
        format!("{}{name}", self.config.subscription_group_prefix)
    }

    fn committed(&self, name: &str, partitions: &[Partition]) -> Result<Option<Committed>, Error> {
        if partitions.is_empty() {
            return Ok(None);
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        let client = self.client(&self.group(name))?;
        let committed = client.committed_offsets(list, REQUEST_TIMEOUT).map_err(kafka_error)?;
        let offsets = offsets_of(&committed);
        if offsets.is_empty() {
            return Ok(None);
        }
        let elements = committed.elements();
        let at_offsets = elements.iter().filter(|e| matches!(e.offset(), Offset::Offset(_)));
        let stamp = newest_stamp(at_offsets.map(|e| e.metadata())).unwrap_or_default();
        Ok(Some(Committed { offsets, stamp }))
    }

    fn commit(&self, name: &str, offsets: &[PartitionOffset], stamp: &Stamp) -> Result<(), Error> {
        let metadata = stamp_metadata(stamp)?;
        let mut list = TopicPartitionList::new();
        for o in offsets {
            let mut e = list.add_partition(&o.topic, o.partition);
            e.set_offset(Offset::Offset(o.offset)).map_err(kafka_error)?;
            e.set_metadata(&metadata);
        }
        let client = self.client(&self.group(name))?;
        client.commit(&list, CommitMode::Sync).map_err(kafka_error)
    }

    fn names(&self) -> Result<Vec<String>, Error> {
        let prefix = &self.config.subscription_group_prefix;
        let groups = self.metadata.fetch_group_list(None, REQUEST_TIMEOUT).map_err(kafka_error)?;
        let mut names: Vec<String> =
            groups.groups().iter().filter_map(|g| g.name().strip_prefix(prefix.as_str()).map(str::to_string)).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn delete(&self, name: &str) -> Result<bool, Error> {
        let group = self.group(name);
        {
            // Its cached client goes first: a client of the group must not outlive it.
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            clients.retain(|(g, _)| *g != group);
        }
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT));
        let deleted = tokio::runtime::Handle::current()
            .block_on(self.admin.delete_groups(&[&group], &options))
            .map_err(kafka_error)?;
        match deleted.into_iter().next() {
            Some(Ok(_)) => Ok(true),
            Some(Err((_, RDKafkaErrorCode::GroupIdNotFound))) => Ok(false),
            Some(Err((_, code))) => Err(Error::kafka(format!("deleting consumer group {group}: {code}"))),
            None => Err(Error::kafka(format!("deleting consumer group {group}: no answer"))),
        }
    }
}

/// A stamp as the commit metadata of each partition: JSON, readable with Kafka's own tools.
fn stamp_metadata(stamp: &Stamp) -> Result<String, Error> {
    serde_json::to_string(stamp).map_err(|e| Error::Internal(e.to_string()))
}

/// The newest stamp of the partitions' commit metadata: every partition holds the stamp of its
/// last commit, and a commit may have covered only some of them. Metadata that is no stamp
/// (written by another tool) is ignored.
fn newest_stamp<'a>(metadata: impl IntoIterator<Item = &'a str>) -> Option<Stamp> {
    metadata.into_iter().filter_map(|m| serde_json::from_str::<Stamp>(m).ok()).reduce(|newest, s| {
        if s.committed_at_ms > newest.committed_at_ms {
            s
        } else {
            newest
        }
    })
}

impl std::fmt::Debug for GroupPositions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupPositions").field("prefix", &self.config.subscription_group_prefix).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn stamp(committed_at_ms: i64) -> Stamp {
        Stamp {
            topics: vec!["a".into(), "b".into()],
            translator_name: "mapper".into(),
            translator_digest: "sha256:d1".into(),
            config_sha256: "c1".into(),
            committed_at_ms,
        }
    }

    #[test]
    fn a_stamp_round_trips_through_commit_metadata_and_the_newest_wins() {
        let (old, new) = (stamp(1_000), stamp(2_000));
        let (old_m, new_m) = (stamp_metadata(&old).unwrap(), stamp_metadata(&new).unwrap());
        assert_eq!(newest_stamp([old_m.as_str()]), Some(old.clone()));
        assert_eq!(newest_stamp([old_m.as_str(), new_m.as_str(), old_m.as_str()]), Some(new.clone()));
        // Metadata another tool wrote is no stamp, and no metadata is none.
        assert_eq!(newest_stamp(["", "not json", new_m.as_str(), "{\"x\":1}"]), Some(new));
        assert_eq!(newest_stamp(["", "checkpoint"]), None);
        // A stamp written before the translator fields existed still reads.
        let topics_only = newest_stamp([r#"{"topics":["a"]}"#]).unwrap();
        assert_eq!(topics_only, Stamp { topics: vec!["a".into()], ..Stamp::default() });
    }

    #[test]
    fn a_subscription_is_the_group_of_its_name_under_the_prefix() {
        let config = KafkaConfig { subscription_group_prefix: "team-b.".into(), ..testing::config() };
        let positions = GroupPositions::new(&config).unwrap();
        assert_eq!(positions.group("orders.v1"), "team-b.orders.v1");
        assert_eq!(GroupPositions::new(&testing::config()).unwrap().group("x"), "tributary.subscription.x");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commit_committed_names_and_delete_round_trip_through_a_consumer_group() {
        let topic = testing::topic("positions", 3);
        let prefix = format!("{}.", testing::unique("group"));
        // Every method is blocking: called from a blocking thread, as the gateway does.
        tokio::task::spawn_blocking(move || {
            let config = KafkaConfig { subscription_group_prefix: prefix.clone(), ..testing::config() };
            let positions = GroupPositions::new(&config).unwrap();
            let partitions: Vec<Partition> = (0..3).map(|p| (Arc::from(topic.as_str()), p)).collect();
            assert_eq!(positions.committed("orders", &partitions).unwrap(), None, "nothing committed yet");
            assert_eq!(positions.committed("orders", &[]).unwrap(), None);

            let offsets = vec![PartitionOffset::new(&topic, 0, 5), PartitionOffset::new(&topic, 2, 0)];
            positions.commit("orders", &offsets, &stamp(1_000)).unwrap();
            let committed = positions.committed("orders", &partitions).unwrap().expect("a committed position");
            assert_eq!(committed, Committed { offsets: offsets.clone(), stamp: stamp(1_000) }, "partition 1 has none");

            // A later commit of one partition: its stamp is the newest, the other offsets stay.
            let newer = Stamp { topics: vec![topic.clone()], ..stamp(2_000) };
            positions.commit("orders", &[PartitionOffset::new(&topic, 0, 9)], &newer).unwrap();
            let committed = positions.committed("orders", &partitions).unwrap().unwrap();
            assert_eq!(committed.offsets, vec![PartitionOffset::new(&topic, 0, 9), PartitionOffset::new(&topic, 2, 0)]);
            assert_eq!(committed.stamp, newer);

            positions.commit("audit", &offsets, &stamp(3_000)).unwrap();
            assert_eq!(positions.names().unwrap(), vec!["audit".to_string(), "orders".to_string()]);

            assert!(positions.delete("orders").unwrap());
            assert_eq!(positions.committed("orders", &partitions).unwrap(), None);
            assert!(!positions.delete("orders").unwrap(), "a deleted group is gone");
            assert_eq!(positions.names().unwrap(), vec!["audit".to_string()]);
            assert!(positions.delete("audit").unwrap());
        })
        .await
        .unwrap();
    }
}

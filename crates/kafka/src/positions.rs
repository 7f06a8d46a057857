//! [`GroupPositions`]: the core's [`Positions`] port over Kafka consumer groups. A subscription
//! named N keeps its position as the committed offsets of group `<prefix>N`; each partition's
//! commit metadata holds the [`Stamp`] as JSON. The gateway never joins these groups: it commits
//! and fetches offsets with a consumer that has the group's id and no assignment, so the groups
//! stay empty and can be deleted (and inspected with Kafka's own tools).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

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

use crate::settings::{consumer_config, kafka_error, metadata_tuning, KafkaConfig};

/// Timeout of one commit, offset fetch or group request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
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
        let mut offsets = Vec::new();
        let mut stamp: Option<Stamp> = None;
        for e in committed.elements() {
            let Offset::Offset(offset) = e.offset() else { continue };
            offsets.push(PartitionOffset { topic: e.topic().to_string(), partition: e.partition(), offset });
            // Every partition's metadata holds the stamp of its last commit: take the newest.
            if let Ok(s) = serde_json::from_str::<Stamp>(e.metadata()) {
                if stamp.as_ref().is_none_or(|old| s.committed_at_ms > old.committed_at_ms) {
                    stamp = Some(s);
                }
            }
        }
        if offsets.is_empty() {
            return Ok(None);
        }
        Ok(Some(Committed { offsets, stamp: stamp.unwrap_or_default() }))
    }

    fn commit(&self, name: &str, offsets: &[PartitionOffset], stamp: &Stamp) -> Result<(), Error> {
        let metadata = serde_json::to_string(stamp).map_err(|e| Error::Internal(e.to_string()))?;
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

impl std::fmt::Debug for GroupPositions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupPositions").field("prefix", &self.config.subscription_group_prefix).finish()
    }
}

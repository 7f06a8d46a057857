//! The checkpoint writer: a task that, once the view is ready, writes each partition that changed
//! every `interval_ms` (sooner when it has `max_records` new records), off the ingest thread: the
//! changes are taken under the shard's short lock (as a snapshot does) and written on a blocking
//! thread.
//!
//! A partition whose tail still reaches back to its last checkpoint is written as the records
//! since then (upserts and deletes of their keys, appended); otherwise, the first time, and once
//! the changes appended have outgrown the whole (see the store's bounds), as its whole state. Nothing is written while the view loads: during a load from the start every write would
//! be a whole state, growing with it; once ready, one whole write per partition, then changes.

use std::{collections::HashMap, sync::Arc, time::Duration};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tributary_core::{
    events,
    source::Partition,
    view::{Holding, ShardChanges, View},
};

use crate::{
    config::CheckpointConfig,
    store::{PartitionWrite, Store},
};

/// How often the writer looks at the shards' offsets (cheap: one short lock per shard), so that
/// `max_records` is noticed soon after it is reached.
const LOOK: Duration = Duration::from_millis(100);

/// Writes the view's changed partitions to the checkpoint.
pub struct Checkpointer {
    store: Arc<Store>,
    view: Arc<View>,
    interval: Duration,
    max_records: i64,
    /// The offset each partition's checkpoint is exact at.
    written: HashMap<Partition, i64>,
    /// The partitions read from the checkpoint at start; those ingest did not resume are removed
    /// from it once ingest has assigned every partition.
    read: Vec<Partition>,
}

impl Checkpointer {
    /// A writer for `view` into `store`, which held the partitions `read` at start. A shard
    /// restored from the checkpoint continues it; any other is written whole the first time.
    pub fn new(store: Store, read: Vec<Partition>, view: Arc<View>, config: &CheckpointConfig) -> Self {
        Self {
            store: Arc::new(store),
            view,
            interval: Duration::from_millis(config.interval_ms),
            max_records: i64::try_from(config.max_records).unwrap_or(i64::MAX),
            written: HashMap::new(),
            read,
        }
    }

    /// Writes until `shutdown`, then once more, so a clean stop resumes exactly where it stopped.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut last = Instant::now();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(LOOK.min(self.interval)) => {}
            }
            if !self.read.is_empty() && self.view.check_assigned().is_ok() {
                self.forget_discarded().await;
            }
            if !self.view.is_ready() {
                continue;
            }
            let due = last.elapsed() >= self.interval;
            self.write(due).await;
            if due {
                last = Instant::now();
            }
        }
        if self.view.is_ready() {
            self.write(true).await;
        }
    }

    /// Removes from the checkpoint the partitions it held at start that ingest did not resume
    /// (it reported each one). Retried at the next look when it fails. With sharding, a partition
    /// held by another replica keeps its checkpoint: it may be assigned here later and resume
    /// from it (and if it cannot, its first write here is its whole state).
    async fn forget_discarded(&mut self) {
        let view = self.view.clone();
        let discarded = |(topic, partition): &Partition| match view.topic(topic).map(|t| t.holding(*partition)) {
            Ok(Holding::Held(shard) | Holding::Loading(shard)) => shard.restored_at().is_none(),
            Ok(Holding::NotHeld) => false,
            Ok(Holding::Unknown) | Err(_) => true,
        };
        let discarded: Vec<Partition> = self.read.iter().filter(|p| discarded(p)).cloned().collect();
        if discarded.is_empty() {
            self.read.clear();
            return;
        }
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.forget(&discarded)).await {
            Ok(Ok(())) => self.read.clear(),
            Ok(Err(e)) => events::emit(&events::CheckpointWriteFailed { error: e.to_string() }),
            Err(e) => events::emit(&events::CheckpointWriteFailed { error: e.to_string() }),
        }
    }

    /// Writes the partitions with `max_records` new records, or every changed one when `all`.
    /// A failed write is reported and changes nothing: the next one starts from the same offsets.
    pub async fn write(&mut self, all: bool) {
        let mut writes = Vec::new();
        for topic in self.view.topics() {
            for shard in topic.shards() {
                let partition = (topic.name.clone(), shard.partition);
                let written = self.written.get(&partition).copied().or(shard.restored_at());
                let new = written.map(|w| shard.next_offset() - w);
                if new == Some(0) || (!all && new.is_some_and(|n| n < self.max_records)) {
                    continue;
                }
                let changes = match written {
                    Some(from) if !self.store.wants_whole(&partition) => shard.changes_since(from),
                    _ => ShardChanges::Whole(shard.image()),
                };
                writes.push(PartitionWrite { topic: topic.name.clone(), partition: shard.partition, changes });
            }
        }
        if writes.is_empty() {
            return;
        }
        let store = self.store.clone();
        let started = Instant::now();
        let result = tokio::task::spawn_blocking(move || store.write(&writes).map(|()| writes)).await;
        match result {
            Ok(Ok(writes)) => {
                for w in &writes {
                    let offset = match &w.changes {
                        ShardChanges::Whole(image) => image.next_offset,
                        ShardChanges::Records { next_offset, .. } => *next_offset,
                    };
                    self.written.insert((w.topic.clone(), w.partition), offset);
                }
                metrics::counter!("tributary_checkpoint_writes_total").increment(1);
                debug!(partitions = writes.len(), elapsed = ?started.elapsed(), "checkpoint written");
            }
            Ok(Err(e)) => events::emit(&events::CheckpointWriteFailed { error: e.to_string() }),
            Err(e) => events::emit(&events::CheckpointWriteFailed { error: e.to_string() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use tributary_core::{view::Shard, Limits, Record};

    use super::*;

    fn rec(offset: i64, key: &str, value: Option<&str>) -> Record {
        Record::new("t".into(), 0, offset, 0, Some(key.as_bytes()), value.map(str::as_bytes), &[])
    }

    fn state(store: &Store) -> (Vec<(Vec<u8>, i64)>, i64) {
        let images = store.read(&["t".into()]).unwrap();
        let image = &images[&("t".into(), 0)];
        (image.map.iter().map(|k| (k.key().to_vec(), k.0.offset)).collect(), image.next_offset)
    }

    #[tokio::test]
    async fn only_checkpoints_ingest_did_not_resume_are_forgotten_not_those_held_by_another_replica() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = Store::open(dir.path(), &["t".into()]).unwrap();
        let whole = |partition: i32| {
            let shard = Shard::new("t".into(), partition, 0, 0);
            shard.apply(rec(0, "k", Some("v")), &Limits::default());
            PartitionWrite { topic: "t".into(), partition, changes: ShardChanges::Whole(shard.image()) }
        };
        store.write(&(0..4).map(whole).collect::<Vec<_>>()).unwrap();
        // Sharded: 0 resumed here, 1 loaded from Kafka here (its checkpoint was discarded), 2 held
        // by another replica, 3 no longer exists.
        let view = Arc::new(View::new(&["t".to_string()]));
        let topic = view.topic("t").unwrap();
        topic.extend_partitions(3);
        let image = Shard::new("t".into(), 0, 1, 1).image();
        topic.hold(Arc::new(Shard::restored("t".into(), 0, image, 1)));
        topic.hold(Arc::new(Shard::new("t".into(), 1, 0, 0)));
        view.set_assigned();
        let read = (0..4).map(|p| ("t".into(), p)).collect();
        let mut writer = Checkpointer::new(store, read, view, &CheckpointConfig::default());
        writer.forget_discarded().await;
        assert!(writer.read.is_empty());
        let left: Vec<i32> = writer.store.read(&["t".into()]).unwrap().keys().map(|(_, p)| *p).collect();
        assert_eq!(left.into_iter().collect::<std::collections::BTreeSet<_>>(), [0, 2].into());
    }

    #[tokio::test]
    async fn changed_partitions_are_written_when_due_or_at_max_records() {
        let dir = tempfile::tempdir().unwrap();
        let view = Arc::new(View::new(&["t".to_string()]));
        let shard = Arc::new(Shard::new("t".into(), 0, 0, 0));
        view.topic("t").unwrap().add_shard(shard.clone());
        let (l, config) = (
            Limits { tail_max_records: 4, tail_pool_bytes: 0, ..Limits::default() },
            CheckpointConfig { max_records: 3, ..CheckpointConfig::default() },
        );
        let (store, _) = Store::open(dir.path(), &["t".into()]).unwrap();
        let mut writer = Checkpointer::new(store, Vec::new(), view, &config);
        let store = writer.store.clone();
        shard.apply(rec(0, "a", Some("1")), &l);
        shard.apply(rec(1, "b", Some("1")), &l);
        writer.write(false).await;
        assert_eq!(state(&store), (vec![(b"a".to_vec(), 0), (b"b".to_vec(), 1)], 2), "first time: whole");
        shard.apply(rec(2, "a", None), &l);
        writer.write(false).await;
        assert_eq!(state(&store).1, 2, "1 new record, under max_records and not due");
        writer.write(true).await;
        assert_eq!(state(&store), (vec![(b"b".to_vec(), 1)], 3), "due: the tombstone is written");
        for o in 3..6 {
            shard.apply(rec(o, "c", Some("2")), &l);
        }
        writer.write(false).await;
        assert_eq!(state(&store), (vec![(b"b".to_vec(), 1), (b"c".to_vec(), 5)], 6), "max_records reached");
        // More records than the tail holds since the last checkpoint: the whole state is written.
        for o in 6..12 {
            shard.apply(rec(o, if o % 2 == 0 { "d" } else { "b" }, Some("3")), &l);
        }
        assert!(matches!(shard.changes_since(6), ShardChanges::Whole(_)));
        writer.write(false).await;
        assert_eq!(
            state(&store),
            (vec![(b"b".to_vec(), 11), (b"c".to_vec(), 5), (b"d".to_vec(), 10)], 12),
            "whole state after the tail moved on"
        );
    }
}

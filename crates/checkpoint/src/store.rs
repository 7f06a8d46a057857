//! The checkpoint file (`<dir>/view.redb`): per partition, a table of its state as segments (see
//! [`format`]) and a row with the offset the segments are exact at, written in the same write
//! transaction so the two never disagree (a write that does not commit leaves the previous
//! checkpoint whole).
//!
//! Bounds: a segment holds at most [`SEGMENT_BYTES`] (just under 4 MiB) of entries (one record
//! bigger than that is a segment of its own). The changes appended since a partition's last whole write are at most
//! about its whole size or [`CHANGES_FLOOR`], whichever is larger: past that the writer writes
//! the partition whole again ([`Store::wants_whole`]), so the file stays within about twice the
//! state plus the floor per partition.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use redb::{Database, ReadTransaction, ReadableTable, TableDefinition, TableError, WriteTransaction};
use tributary_core::{
    events,
    source::Partition,
    view::{Keyed, ShardChanges, ShardImage, StateMap},
};

use crate::format;

/// `"format"` → the layout version ([`format::VERSION`]).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// (topic, partition) → (next offset the state is exact at, timestamp of the last record).
const OFFSETS: TableDefinition<(&str, i32), (i64, i64)> = TableDefinition::new("offsets");

/// (topic, partition) → (bytes of its last whole write, bytes of the changes appended since).
const SIZES: TableDefinition<(&str, i32), (u64, u64)> = TableDefinition::new("sizes");

/// The most entry bytes in one segment: 4 MiB less room for redb's own bytes in the value's
/// pages.
pub const SEGMENT_BYTES: usize = (4 << 20) - (64 << 10);
/// Changes up to this many bytes are appended whatever the partition's whole size.
pub const CHANGES_FLOOR: u64 = 64 << 20;

/// A partition's state table: segment number → segment, replayed in number order.
fn state_def(name: &str) -> TableDefinition<'_, u64, &'static [u8]> {
    TableDefinition::new(name)
}

/// The name of a partition's state table (topic names have no `/`).
fn state_table(topic: &str, partition: i32) -> String {
    format!("state/{topic}/{partition}")
}

/// The file in the checkpoint directory.
pub const FILE: &str = "view.redb";

/// A checkpoint that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("checkpoint {path}: {message}")]
pub struct CheckpointError {
    pub path: String,
    pub message: String,
}

/// Every partition's image read from the checkpoint.
pub type Images = HashMap<Partition, ShardImage>;

/// What one checkpoint writes for a partition.
#[derive(Debug)]
pub struct PartitionWrite {
    pub topic: Arc<str>,
    pub partition: i32,
    pub changes: ShardChanges,
}

/// Why an existing checkpoint file is not read.
enum Unreadable {
    InUse,
    Damaged(CheckpointError),
}

impl From<CheckpointError> for Unreadable {
    fn from(e: CheckpointError) -> Self {
        Self::Damaged(e)
    }
}

/// The open checkpoint file.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// The [`SIZES`] rows, kept here too so that the writer can ask without a transaction.
    sizes: Mutex<HashMap<Partition, (u64, u64)>>,
    /// [`CHANGES_FLOOR`], smaller in tests.
    changes_floor: u64,
}

impl Store {
    /// Opens (or creates) the checkpoint in `dir` and reads the partitions of `topics` back. A
    /// file that cannot be opened or read (corrupt, truncated, another format) is reported
    /// (`checkpoint_unreadable`), set aside as `view.redb.bad`, and replaced by an empty one: the
    /// view is then rebuilt from Kafka. Fails only when no checkpoint can be created in `dir`.
    pub fn open(dir: &Path, topics: &[Arc<str>]) -> Result<(Self, Images), CheckpointError> {
        let path = dir.join(FILE);
        let fail = |message: String| CheckpointError { path: path.display().to_string(), message };
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("cannot create the directory: {e}")))?;
        match Self::try_open(&path, topics) {
            Ok(opened) => return Ok(opened),
            // Another process has the file open (a second gateway on the same directory): a setup
            // error, not a damaged file to set aside under the first one.
            Err(Unreadable::InUse) => {
                return Err(fail("is open in another process: give each gateway its own checkpoint.dir".into()))
            }
            Err(Unreadable::Damaged(e)) => {
                events::emit(&events::CheckpointUnreadable { path: e.path, error: e.message })
            }
        }
        let bad = dir.join(format!("{FILE}.bad"));
        std::fs::rename(&path, &bad).map_err(|e| fail(format!("cannot set the unreadable file aside: {e}")))?;
        let store = Self::create(&path)?;
        Ok((store, Images::new()))
    }

    /// Opens and reads; redb's own recovery runs first after an unclean stop. A panic inside redb
    /// on a damaged file is caught and reported like any other error.
    fn try_open(path: &Path, topics: &[Arc<str>]) -> Result<(Self, Images), Unreadable> {
        let attempt = std::panic::catch_unwind(|| {
            let db = match Database::create(path) {
                Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Err(Unreadable::InUse),
                opened => opened.map_err(|e| error(path, e))?,
            };
            let store = Self::init(db, path)?;
            let images = store.read(topics)?;
            Ok((store, images))
        });
        attempt.unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "redb panicked".into());
            Err(Unreadable::Damaged(CheckpointError { path: path.display().to_string(), message }))
        })
    }

    /// Creates the file and writes its format version.
    fn create(path: &Path) -> Result<Self, CheckpointError> {
        Self::init(Database::create(path).map_err(|e| error(path, e))?, path)
    }

    /// Checks (or, in a new file, writes) the format version.
    fn init(db: Database, path: &Path) -> Result<Self, CheckpointError> {
        let store = Self { db, path: path.to_path_buf(), sizes: Mutex::default(), changes_floor: CHANGES_FLOOR };
        let txn = store.db.begin_write().map_err(|e| store.error(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| store.error(e))?;
            let version = meta.get("format").map_err(|e| store.error(e))?.map(|v| v.value());
            match version {
                Some(format::VERSION) => {}
                Some(other) => {
                    return Err(store.fail(format!("format {other}; this build reads format {}", format::VERSION)))
                }
                None => {
                    meta.insert("format", format::VERSION).map_err(|e| store.error(e))?;
                }
            }
        }
        txn.commit().map_err(|e| store.error(e))?;
        Ok(store)
    }

    fn fail(&self, message: String) -> CheckpointError {
        CheckpointError { path: self.path.display().to_string(), message }
    }

    fn error(&self, e: impl Into<redb::Error>) -> CheckpointError {
        error(&self.path, e)
    }

    /// Every checkpointed partition of `topics`, each at the offset its state is exact at. The
    /// partitions are decoded in parallel, on at most as many threads as the machine has cores,
    /// all from one read transaction (one consistent checkpoint).
    pub fn read(&self, topics: &[Arc<str>]) -> Result<Images, CheckpointError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let offsets = match txn.open_table(OFFSETS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Images::new()),
            Err(e) => return Err(self.error(e)),
        };
        let mut wanted = Vec::new();
        for row in offsets.iter().map_err(|e| self.error(e))? {
            let (at, offset) = row.map_err(|e| self.error(e))?;
            let ((topic, partition), (next_offset, last_timestamp_ms)) = (at.value(), offset.value());
            if let Some(topic) = topics.iter().find(|t| ***t == *topic) {
                wanted.push((topic.clone(), partition, next_offset, last_timestamp_ms));
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(wanted.len()).max(1);
        let next = std::sync::atomic::AtomicUsize::new(0);
        let read = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut images = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some((topic, partition, next_offset, last_timestamp_ms)) = wanted.get(i) else {
                                return Ok(images);
                            };
                            let map = self.read_state(&txn, topic, *partition, *next_offset)?;
                            let image =
                                ShardImage { map, next_offset: *next_offset, last_timestamp_ms: *last_timestamp_ms };
                            images.push(((topic.clone(), *partition), image));
                        }
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().expect("a checkpoint reader panicked")).collect::<Vec<_>>()
        });
        let mut images = Images::new();
        for part in read {
            images.extend(part?);
        }
        let mut sizes = self.sizes.lock().expect("sizes lock");
        match txn.open_table(SIZES) {
            Ok(table) => {
                for row in table.iter().map_err(|e| self.error(e))? {
                    let (at, size) = row.map_err(|e| self.error(e))?;
                    let (topic, partition) = at.value();
                    if let Some(topic) = topics.iter().find(|t| ***t == *topic) {
                        sizes.insert((topic.clone(), partition), size.value());
                    }
                }
            }
            Err(TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(self.error(e)),
        }
        Ok(images)
    }

    /// Whether `partition`'s next write should be whole: the changes appended since its last
    /// whole write have outgrown it (see the module's bounds). A partition never written is
    /// written whole anyway.
    pub fn wants_whole(&self, partition: &Partition) -> bool {
        let sizes = self.sizes.lock().expect("sizes lock");
        sizes.get(partition).is_some_and(|(whole, changes)| *changes > (*whole).max(self.changes_floor))
    }

    /// The state of one partition: its segments replayed in order, every record checked to be
    /// below `next_offset`.
    fn read_state(
        &self,
        txn: &ReadTransaction,
        topic: &Arc<str>,
        partition: i32,
        next_offset: i64,
    ) -> Result<StateMap, CheckpointError> {
        let name = state_table(topic, partition);
        let mut map = StateMap::new();
        let table = match txn.open_table(state_def(&name)) {
            Ok(table) => table,
            // An empty state has no table.
            Err(TableError::TableDoesNotExist(_)) => return Ok(map),
            Err(e) => return Err(self.error(e)),
        };
        for row in table.iter().map_err(|e| self.error(e))? {
            let (number, segment) = row.map_err(|e| self.error(e))?;
            format::replay(topic, partition, segment.value(), |entry| {
                match entry {
                    format::Entry::Put(record) if record.offset >= next_offset => {
                        return Err(format!("a record at offset {} in a state exact at {next_offset}", record.offset))
                    }
                    format::Entry::Put(record) => map.insert(Keyed(record)),
                    format::Entry::Delete(key) => map.remove(key),
                };
                Ok(())
            })
            .map_err(|e| self.fail(format!("{name}, segment {}: {e}", number.value())))?;
        }
        Ok(map)
    }

    /// Writes every partition's changes and offset in one transaction, durable once it returns.
    pub fn write(&self, writes: &[PartitionWrite]) -> Result<(), CheckpointError> {
        let (txn, written) = self.stage(writes)?;
        txn.commit().map_err(|e| self.error(e))?;
        self.sizes.lock().expect("sizes lock").extend(written);
        Ok(())
    }

    /// Removes `partitions` (their offsets and states) in one transaction: checkpoints that were
    /// discarded, so that a later start cannot take them up again (e.g. once a recreated topic has
    /// grown past their offsets).
    pub fn forget(&self, partitions: &[Partition]) -> Result<(), CheckpointError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
            let mut sizes = txn.open_table(SIZES).map_err(|e| self.error(e))?;
            for (topic, partition) in partitions {
                offsets.remove((&**topic, *partition)).map_err(|e| self.error(e))?;
                sizes.remove((&**topic, *partition)).map_err(|e| self.error(e))?;
                txn.delete_table(state_def(&state_table(topic, *partition))).map_err(|e| self.error(e))?;
            }
        }
        txn.commit().map_err(|e| self.error(e))?;
        let mut sizes = self.sizes.lock().expect("sizes lock");
        for partition in partitions {
            sizes.remove(partition);
        }
        Ok(())
    }

    /// The write transaction of [`Store::write`], not yet committed, and each partition's sizes
    /// once it is.
    #[allow(clippy::type_complexity)]
    fn stage(
        &self,
        writes: &[PartitionWrite],
    ) -> Result<(WriteTransaction, Vec<(Partition, (u64, u64))>), CheckpointError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let mut written = Vec::with_capacity(writes.len());
        {
            let mut offsets = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
            let mut sizes = txn.open_table(SIZES).map_err(|e| self.error(e))?;
            for w in writes {
                let name = state_table(&w.topic, w.partition);
                let at = (&*w.topic, w.partition);
                let before = sizes.get(at).map_err(|e| self.error(e))?.map(|s| s.value());
                let (next_offset, last_timestamp_ms, size) = match &w.changes {
                    ShardChanges::Whole(image) => {
                        txn.delete_table(state_def(&name)).map_err(|e| self.error(e))?;
                        let mut table = txn.open_table(state_def(&name)).map_err(|e| self.error(e))?;
                        let entries =
                            image.map.iter().map(|Keyed(record)| (record.key().unwrap_or_default(), Some(record)));
                        let bytes = append(&mut table, 0, entries).map_err(|e| self.error(e))?;
                        (image.next_offset, image.last_timestamp_ms, (bytes, 0))
                    }
                    ShardChanges::Records { records, next_offset, last_timestamp_ms } => {
                        let mut table = txn.open_table(state_def(&name)).map_err(|e| self.error(e))?;
                        let next = table.last().map_err(|e| self.error(e))?.map_or(0, |(n, _)| n.value() + 1);
                        let entries = records.iter().filter_map(|r| Some((r.key()?, r.value().is_some().then_some(r))));
                        let bytes = append(&mut table, next, entries).map_err(|e| self.error(e))?;
                        let (whole, changes) = before.unwrap_or((0, 0));
                        (*next_offset, *last_timestamp_ms, (whole, changes + bytes))
                    }
                };
                offsets.insert(at, (next_offset, last_timestamp_ms)).map_err(|e| self.error(e))?;
                sizes.insert(at, size).map_err(|e| self.error(e))?;
                written.push(((w.topic.clone(), w.partition), size));
            }
        }
        Ok((txn, written))
    }
}

/// Appends `entries` (a key and its record, or none to delete it) to `table` as segments of at
/// most [`SEGMENT_BYTES`] (an entry bigger than that alone), numbered from `next`; returns the
/// bytes appended. A segment stays under the bound rather than just past it: redb gives a value
/// pages in powers of two, so a segment just past 4 MiB would take 8.
fn append<'r>(
    table: &mut redb::Table<u64, &'static [u8]>,
    mut next: u64,
    entries: impl Iterator<Item = (&'r [u8], Option<&'r tributary_core::Record>)>,
) -> Result<u64, redb::StorageError> {
    let (mut segment, mut bytes) = (Vec::new(), 0);
    for (key, record) in entries {
        let start = segment.len();
        match record {
            Some(record) => format::put_entry(&mut segment, key, record),
            None => format::delete_entry(&mut segment, key),
        }
        if segment.len() > SEGMENT_BYTES && start > 0 {
            table.insert(next, &segment[..start])?;
            (next, bytes) = (next + 1, bytes + start as u64);
            segment.drain(..start);
        }
    }
    if !segment.is_empty() {
        table.insert(next, segment.as_slice())?;
        bytes += segment.len() as u64;
    }
    Ok(bytes)
}

fn error(path: &Path, e: impl Into<redb::Error>) -> CheckpointError {
    CheckpointError { path: path.display().to_string(), message: e.into().to_string() }
}

#[cfg(test)]
mod tests {
    use tributary_core::{view::Shard, Limits, Record};

    use super::*;

    fn rec(offset: i64, key: &str, value: Option<&str>) -> Record {
        let headers: [(&str, Option<&[u8]>); 1] = [("h", Some(b"x"))];
        Record::new("t".into(), 0, offset, 1000 + offset, Some(key.as_bytes()), value.map(str::as_bytes), &headers)
    }

    fn topics() -> Vec<Arc<str>> {
        vec!["t".into()]
    }

    fn whole(shard: &Shard) -> PartitionWrite {
        PartitionWrite { topic: "t".into(), partition: 0, changes: ShardChanges::Whole(shard.image()) }
    }

    fn since(shard: &Shard, from: i64) -> PartitionWrite {
        PartitionWrite { topic: "t".into(), partition: 0, changes: shard.changes_since(from) }
    }

    /// The state as (key, offset, value, headers), to compare images.
    fn contents(image: &ShardImage) -> (Vec<Record>, i64, i64) {
        (image.map.iter().map(|k| k.0.clone()).collect(), image.next_offset, image.last_timestamp_ms)
    }

    #[test]
    fn a_checkpoint_reads_back_as_the_shard_it_was_written_from() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits::default();
        for (o, k, v) in [(0, "a", Some("1")), (1, "b", Some("2")), (2, "c", Some("3")), (3, "a", None)] {
            shard.apply(rec(o, k, v), &l);
        }
        {
            let (store, images) = Store::open(dir.path(), &topics()).unwrap();
            assert!(images.is_empty());
            store.write(&[whole(&shard)]).unwrap();
            // Then only what changed: a replaced value, a new key, a tombstone, a keyless record.
            shard.apply(rec(4, "b", Some("22")), &l);
            shard.apply(rec(5, "d", Some("4")), &l);
            shard.apply(rec(6, "c", None), &l);
            shard.apply(Record::new("t".into(), 0, 7, 1007, None, Some(b"x"), &[]), &l);
            let changes = since(&shard, 4);
            assert!(matches!(changes.changes, ShardChanges::Records { ref records, .. } if records.len() == 4));
            store.write(&[changes]).unwrap();
        }
        let (store, images) = Store::open(dir.path(), &topics()).unwrap();
        let image = &images[&("t".into(), 0)];
        assert_eq!(contents(image), contents(&shard.image()));
        assert_eq!(image.next_offset, 8);
        let keys: Vec<_> = image.map.iter().map(|k| k.key().to_vec()).collect();
        assert_eq!(keys, vec![b"b".to_vec(), b"d".to_vec()]);
        assert_eq!(image.map.iter().next().unwrap().0.headers().collect::<Vec<_>>(), vec![("h", Some(&b"x"[..]))]);
        // Topics no longer exposed are not read.
        drop(store);
        assert!(Store::open(dir.path(), &["other".into()]).unwrap().1.is_empty());
    }

    #[test]
    fn changes_are_appended_until_they_outgrow_the_whole_then_the_partition_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits::default();
        shard.apply(rec(0, "a", Some("1")), &l);
        let p: Partition = ("t".into(), 0);
        let (mut store, _) = Store::open(dir.path(), &topics()).unwrap();
        store.changes_floor = 1_000;
        store.write(&[whole(&shard)]).unwrap();
        assert!(!store.wants_whole(&p));
        let mut appended = 0;
        while !store.wants_whole(&p) {
            let from = shard.next_offset();
            shard.apply(rec(from, &format!("k{}", from % 7), (from % 3 != 0).then_some("v")), &l);
            store.write(&[since(&shard, from)]).unwrap();
            appended += 1;
            assert!(appended < 100, "1,000 bytes of changes never made the partition want a whole write");
        }
        assert!(appended > 5, "a few small changes do not outgrow the floor ({appended})");
        assert_eq!(contents(&store.read(&topics()).unwrap()[&p]), contents(&shard.image()), "segments replayed");
        drop(store);
        let (mut store, images) = Store::open(dir.path(), &topics()).unwrap();
        assert_eq!(contents(&images[&p]), contents(&shard.image()));
        store.changes_floor = 1_000;
        assert!(store.wants_whole(&p), "the sizes are kept in the file");
        store.write(&[whole(&shard)]).unwrap();
        assert!(!store.wants_whole(&p));
        assert_eq!(contents(&store.read(&topics()).unwrap()[&p]), contents(&shard.image()));
    }

    #[test]
    fn a_whole_state_bigger_than_a_segment_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits::default();
        let value = "x".repeat(100_000);
        for o in 0..100 {
            shard.apply(rec(o, &format!("k{o:03}"), Some(&value)), &l);
        }
        let (store, _) = Store::open(dir.path(), &topics()).unwrap();
        store.write(&[whole(&shard)]).unwrap();
        let txn = store.db.begin_read().unwrap();
        let segments =
            redb::ReadableTableMetadata::len(&txn.open_table(state_def(&state_table("t", 0))).unwrap()).unwrap();
        assert!(segments >= 2, "10 MB of entries in {segments} segment(s) of at most {SEGMENT_BYTES} bytes");
        for row in txn.open_table(state_def(&state_table("t", 0))).unwrap().iter().unwrap() {
            let len = row.unwrap().1.value().len();
            assert!(len <= SEGMENT_BYTES, "a segment of {len} bytes, over {SEGMENT_BYTES}");
        }
        assert_eq!(contents(&store.read(&topics()).unwrap()[&("t".into(), 0)]), contents(&shard.image()));
    }

    #[test]
    fn forgotten_partitions_are_not_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::new("t".into(), 0, 0, 0);
        shard.apply(rec(0, "a", Some("1")), &Limits::default());
        let other = PartitionWrite { topic: "t".into(), partition: 1, changes: ShardChanges::Whole(shard.image()) };
        let (store, _) = Store::open(dir.path(), &topics()).unwrap();
        store.write(&[whole(&shard), other]).unwrap();
        store.forget(&[("t".into(), 0), ("t".into(), 5)]).unwrap();
        let images = store.read(&topics()).unwrap();
        assert_eq!(images.keys().collect::<Vec<_>>(), vec![&("t".into(), 1)]);
    }

    #[test]
    fn a_write_that_does_not_commit_leaves_the_previous_checkpoint_whole() {
        let dir = tempfile::tempdir().unwrap();
        let shard = Shard::new("t".into(), 0, 0, 0);
        let l = Limits::default();
        shard.apply(rec(0, "a", Some("1")), &l);
        let (store, _) = Store::open(dir.path(), &topics()).unwrap();
        store.write(&[whole(&shard)]).unwrap();
        let before = contents(&store.read(&topics()).unwrap()[&("t".into(), 0)]);
        shard.apply(rec(1, "a", None), &l);
        shard.apply(rec(2, "b", Some("2")), &l);
        // Staged (records and offset written in the transaction), then dropped, as a crash or an
        // I/O error before the commit would.
        drop(store.stage(&[whole(&shard)]).unwrap().0);
        assert_eq!(contents(&store.read(&topics()).unwrap()[&("t".into(), 0)]), before);
        drop(store);
        let (_, images) = Store::open(dir.path(), &topics()).unwrap();
        assert_eq!(contents(&images[&("t".into(), 0)]), before, "neither the data nor the offset moved");
    }

    #[test]
    fn an_unreadable_file_is_set_aside_and_replaced_by_an_empty_checkpoint() {
        let shard = Shard::new("t".into(), 0, 0, 0);
        shard.apply(rec(0, "a", Some("1")), &Limits::default());
        let garbage = tempfile::tempdir().unwrap();
        std::fs::write(garbage.path().join(FILE), vec![0x5a; 10_000]).unwrap();
        let truncated = tempfile::tempdir().unwrap();
        {
            let (store, _) = Store::open(truncated.path(), &topics()).unwrap();
            store.write(&[whole(&shard)]).unwrap();
        }
        let file = truncated.path().join(FILE);
        let len = std::fs::metadata(&file).unwrap().len();
        std::fs::OpenOptions::new().write(true).open(&file).unwrap().set_len(len / 3).unwrap();
        for dir in [garbage.path(), truncated.path()] {
            let (store, images) = Store::open(dir, &topics()).unwrap();
            assert!(images.is_empty(), "nothing is read from a damaged file");
            assert!(dir.join(format!("{FILE}.bad")).exists(), "the damaged file is kept aside");
            store.write(&[whole(&shard)]).unwrap();
            assert_eq!(store.read(&topics()).unwrap().len(), 1, "the new checkpoint works");
        }
    }

    #[test]
    fn a_file_open_in_another_process_is_an_error_and_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let (first, _) = Store::open(dir.path(), &topics()).unwrap();
        let err = Store::open(dir.path(), &topics()).err().expect("the file is in use");
        assert!(err.to_string().contains("open in another process"), "{err}");
        assert!(!dir.path().join(format!("{FILE}.bad")).exists());
        drop(first);
        assert!(Store::open(dir.path(), &topics()).is_ok());
    }

    #[test]
    fn a_file_of_another_format_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("format", format::VERSION + 1).unwrap();
            txn.commit().unwrap();
        }
        let (_, images) = Store::open(dir.path(), &topics()).unwrap();
        assert!(images.is_empty());
        assert!(dir.path().join(format!("{FILE}.bad")).exists());
    }
}

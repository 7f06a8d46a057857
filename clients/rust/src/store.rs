//! Positions and where the follow helper keeps them.

use std::{
    collections::BTreeMap,
    future::Future,
    io::Write,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{pb::PartitionOffset, BoxError};

/// For every (topic, partition), the next offset to apply: what `from_offsets` and a snapshot's
/// offsets carry.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<Entry>", into = "Vec<Entry>")]
pub struct Position(BTreeMap<(String, i32), i64>);

#[derive(Serialize, Deserialize)]
struct Entry {
    topic: String,
    partition: i32,
    offset: i64,
}

impl From<Vec<Entry>> for Position {
    fn from(entries: Vec<Entry>) -> Self {
        Position(entries.into_iter().map(|e| ((e.topic, e.partition), e.offset)).collect())
    }
}

impl From<Position> for Vec<Entry> {
    fn from(p: Position) -> Self {
        p.0.into_iter().map(|((topic, partition), offset)| Entry { topic, partition, offset }).collect()
    }
}

impl Position {
    pub fn from_offsets(offsets: &[PartitionOffset]) -> Self {
        Position(offsets.iter().map(|o| ((o.topic.clone(), o.partition), o.offset)).collect())
    }

    pub fn to_offsets(&self) -> Vec<PartitionOffset> {
        self.0
            .iter()
            .map(|((topic, partition), offset)| PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect()
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0.get(&(topic.to_string(), partition)).copied()
    }

    pub fn set(&mut self, topic: &str, partition: i32, next_offset: i64) {
        match self.0.get_mut(&(topic.to_string(), partition)) {
            Some(o) => *o = next_offset,
            None => {
                self.0.insert((topic.to_string(), partition), next_offset);
            }
        }
    }

    /// These offsets win over the position's.
    pub fn merge(&mut self, offsets: &[PartitionOffset]) {
        for o in offsets {
            self.set(&o.topic, o.partition, o.offset);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.0.iter().map(|((t, p), o)| (t.as_str(), *p, *o))
    }
}

/// Where the follow helper keeps its position. An application that wants the position in the
/// same transaction as its rows implements this itself and writes the position inside
/// [`crate::Handler::apply`]; `save` then writes the same position again.
pub trait Store: Send {
    fn load(&mut self) -> impl Future<Output = Result<Option<Position>, BoxError>> + Send;
    fn save(&mut self, position: &Position) -> impl Future<Output = Result<(), BoxError>> + Send;
    fn clear(&mut self) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Keeps the position in memory: a restart of the process starts from a snapshot.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore(pub Option<Position>);

impl Store for MemoryStore {
    async fn load(&mut self) -> Result<Option<Position>, BoxError> {
        Ok(self.0.clone())
    }

    async fn save(&mut self, position: &Position) -> Result<(), BoxError> {
        self.0 = Some(position.clone());
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), BoxError> {
        self.0 = None;
        Ok(())
    }
}

/// Keeps the position in a JSON file, replaced atomically (temporary file, fsync, rename).
#[derive(Clone, Debug)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        FileStore { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for FileStore {
    async fn load(&mut self) -> Result<Option<Position>, BoxError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn save(&mut self, position: &Position) -> Result<(), BoxError> {
        let bytes = serde_json::to_vec(position)?;
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("position")));
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        })
        .await??;
        Ok(())
    }

    async fn clear(&mut self) -> Result<(), BoxError> {
        match std::fs::remove_file(&self.path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_store_keeps_the_position_across_instances_and_forgets_it_on_clear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("position.json");
        let mut store = FileStore::new(&path);
        assert_eq!(store.load().await.unwrap(), None);
        let mut position = Position::default();
        position.set("a", 0, 7);
        position.set("a", 1, 0);
        store.save(&position).await.unwrap();
        assert_eq!(FileStore::new(&path).load().await.unwrap(), Some(position));
        store.clear().await.unwrap();
        assert_eq!(store.load().await.unwrap(), None);
        store.clear().await.unwrap();
    }

    #[test]
    fn merge_takes_the_newer_offsets_and_keeps_the_others() {
        let mut position = Position::default();
        position.set("a", 0, 5);
        position.set("a", 1, 9);
        position.merge(&[PartitionOffset { topic: "a".into(), partition: 0, offset: 8 }]);
        assert_eq!(position.get("a", 0), Some(8));
        assert_eq!(position.get("a", 1), Some(9));
        assert_eq!(Position::from_offsets(&position.to_offsets()), position);
    }
}

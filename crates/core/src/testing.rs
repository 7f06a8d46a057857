//! Test doubles the core's unit tests share (compiled for tests only).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use futures::future::BoxFuture;

use crate::{
    error::Error,
    record::{PartitionOffset, Record},
    source::{CatchUpReader, Log, Partition, Read, Watermarks},
};

/// A's log in memory: every record ever appended, per partition.
#[derive(Default)]
pub(crate) struct MemoryLog {
    pub(crate) records: Arc<Mutex<BTreeMap<Partition, Vec<Record>>>>,
    /// Catch-up readers opened so far.
    pub(crate) opened: AtomicUsize,
}

impl Log for MemoryLog {
    fn watermarks(&self, partitions: &[Partition]) -> Result<Vec<Watermarks>, Error> {
        let records = self.records.lock().unwrap();
        Ok(partitions
            .iter()
            .map(|p| {
                let log = records.get(p).map(Vec::as_slice).unwrap_or_default();
                Watermarks {
                    earliest: log.first().map_or(0, |r| r.offset),
                    latest: log.last().map_or(0, |r| r.offset + 1),
                }
            })
            .collect())
    }

    fn catch_up(&self, _prefetch_kbytes: usize) -> Result<Box<dyn CatchUpReader>, Error> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(MemoryReader { records: self.records.clone(), assigned: Mutex::default() }))
    }
}

pub(crate) struct MemoryReader {
    pub(crate) records: Arc<Mutex<BTreeMap<Partition, Vec<Record>>>>,
    pub(crate) assigned: Mutex<BTreeMap<Partition, i64>>,
}

impl MemoryReader {
    fn next(&self) -> Option<Record> {
        let records = self.records.lock().unwrap();
        let mut assigned = self.assigned.lock().unwrap();
        for (partition, pos) in assigned.iter_mut() {
            if let Some(r) = records.get(partition).and_then(|log| log.iter().find(|r| r.offset >= *pos)) {
                *pos = r.offset + 1;
                return Some(r.clone());
            }
        }
        None
    }
}

impl CatchUpReader for MemoryReader {
    fn assign(&self, positions: &[PartitionOffset]) -> Result<(), Error> {
        let mut assigned = self.assigned.lock().unwrap();
        for p in positions {
            assigned.insert((p.topic.as_str().into(), p.partition), p.offset);
        }
        Ok(())
    }

    fn unassign(&self, positions: &[PartitionOffset]) -> Result<(), Error> {
        let mut assigned = self.assigned.lock().unwrap();
        for p in positions {
            assigned.remove(&(p.topic.as_str().into(), p.partition));
        }
        Ok(())
    }

    fn recv(&self) -> BoxFuture<'_, Read> {
        Box::pin(async move {
            match self.next() {
                Some(r) => Read::Record(r),
                // Nothing more is ever written behind the tail in these tests.
                None => futures::future::pending().await,
            }
        })
    }

    fn try_recv(&self) -> Option<Read> {
        self.next().map(Read::Record)
    }

    fn positions(&self) -> Vec<PartitionOffset> {
        self.assigned.lock().unwrap().iter().map(|((t, p), o)| PartitionOffset::new(&**t, *p, *o)).collect()
    }
}

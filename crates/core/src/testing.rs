//! Test doubles the core's unit tests share (compiled for tests only).

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use bytes::BytesMut;
use futures::future::BoxFuture;

use crate::{
    error::Error,
    record::{Encoded, PartitionOffset, Record},
    source::{CatchUpReader, Encoding, Log, Partition, Read, Watermarks},
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

    fn catch_up(
        &self,
        _prefetch_kbytes: usize,
        encoding: Option<Encoding>,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Box<dyn CatchUpReader>, Error> {
        self.opened.fetch_add(1, Ordering::SeqCst);
        let records = self.records.clone();
        Ok(Box::new(MemoryReader { records, assigned: Mutex::default(), encoding, _permit: permit }))
    }
}

pub(crate) struct MemoryReader {
    pub(crate) records: Arc<Mutex<BTreeMap<Partition, Vec<Record>>>>,
    pub(crate) assigned: Mutex<BTreeMap<Partition, i64>>,
    /// Reads are encoded and filtered as the Kafka reader's are.
    pub(crate) encoding: Option<Encoding>,
    /// Held as long as the reader (it lends nothing).
    pub(crate) _permit: tokio::sync::OwnedSemaphorePermit,
}

impl MemoryReader {
    fn next(&self) -> Option<Read> {
        let records = self.records.lock().unwrap();
        let mut assigned = self.assigned.lock().unwrap();
        for (partition, pos) in assigned.iter_mut() {
            let log = records.get(partition).map(Vec::as_slice).unwrap_or_default();
            let from = *pos;
            for r in log.iter().filter(|r| r.offset >= from) {
                *pos = r.offset + 1;
                match &self.encoding {
                    None => return Some(Read::Record(r.clone())),
                    Some(e) => {
                        let mut wire = BytesMut::new();
                        if let Some(data_bytes) = r.with_ref(|r| e.encode(r, &mut wire)) {
                            let (topic, partition, offset) = (r.topic.clone(), r.partition, r.offset);
                            let record = Encoded::bytes(wire.freeze(), data_bytes);
                            return Some(Read::Encoded { topic, partition, offset, record });
                        }
                    }
                }
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
                Some(read) => read,
                // Nothing more is ever written behind the tail in these tests.
                None => futures::future::pending().await,
            }
        })
    }

    fn try_recv(&self) -> Option<Read> {
        self.next()
    }

    fn positions(&self) -> Vec<PartitionOffset> {
        self.assigned.lock().unwrap().iter().map(|((t, p), o)| PartitionOffset::new(&**t, *p, *o)).collect()
    }
}

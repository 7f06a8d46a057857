//! How far behind the view's head each open `Subscribe` stream's client is: every stream keeps
//! the position of the last progress message its client took, and a sampler turns those into
//! `tributary_stream_lag_records` once a second. A client that stops reading stops taking
//! progress messages, so its lag grows with every record A writes.

use std::sync::{
    atomic::{AtomicI64, AtomicU64, Ordering},
    Arc,
};

use dashmap::DashMap;
use tributary_core::{subscribe::Cursor, view::Shard, PartitionOffset};

/// The delivered positions of every open stream.
#[derive(Clone, Default)]
pub struct StreamLags {
    streams: Arc<DashMap<u64, Arc<Delivered>>>,
    next_id: Arc<AtomicU64>,
}

/// One stream's delivered position, per partition.
pub struct Delivered {
    partitions: Vec<(Arc<Shard>, AtomicI64)>,
}

/// A stream's place in [`StreamLags`], given up when the stream ends.
pub struct Registration {
    lags: StreamLags,
    id: u64,
    pub delivered: Arc<Delivered>,
}

impl StreamLags {
    /// Registers a stream starting at `cursors`.
    pub fn register(&self, cursors: &[Cursor]) -> Registration {
        let delivered = Arc::new(Delivered {
            partitions: cursors.iter().map(|c| (c.shard.clone(), AtomicI64::new(c.pos))).collect(),
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.streams.insert(id, delivered.clone());
        Registration { lags: self.clone(), id, delivered }
    }

    /// Records every open stream's lag, in records, into the histogram.
    pub fn sample(&self) {
        for stream in self.streams.iter() {
            metrics::histogram!("tributary_stream_lag_records").record(stream.lag() as f64);
        }
    }
}

impl Delivered {
    /// The client took a progress message with these offsets.
    pub fn progressed(&self, offsets: &[PartitionOffset]) {
        for o in offsets {
            if let Some((_, at)) =
                self.partitions.iter().find(|(s, _)| s.partition == o.partition && *s.topic == *o.topic)
            {
                at.store(o.offset, Ordering::Relaxed);
            }
        }
    }

    /// Records between the delivered position and the view's head, over every partition.
    pub fn lag(&self) -> i64 {
        self.partitions.iter().map(|(s, at)| s.lag(at.load(Ordering::Relaxed))).sum()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.lags.streams.remove(&self.id);
    }
}

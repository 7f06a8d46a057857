//! `Subscribe`: every record after the requested offsets, per partition in offset order, with no
//! gap and no duplicate (rule 4), and regular progress (rule 6).
//!
//! - [`start`]: validates the requested topics and offsets and resolves each partition's start
//!   position (too old and beyond the end are errors, never clamped: rule 7).
//! - [`cursor`]: a partition's next offset to deliver and where it reads from.
//! - [`runner`]: the state machine that moves cursors between the tail buffer and a catch-up
//!   reader, batches, translates, and sends [`Event`]s until the client leaves.

pub mod cursor;
pub mod runner;
pub mod start;

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

pub use cursor::Cursor;
pub use runner::run;
pub use start::{plan, plan_offsets, Plan};

use crate::{
    buffer::Weighed,
    error::Error,
    filter::Filter,
    limits::Limits,
    record::{Output, PartitionOffset},
    source::Log,
    translate::Translation,
    view::TopicView,
    watermarks::WatermarkCache,
};

/// Resources shared by every subscription of a gateway.
#[derive(Clone)]
pub struct Shared {
    pub limits: Limits,
    /// A's log, for watermarks and catch-up readers.
    pub log: Arc<dyn Log>,
    /// Watermarks, shared by every call that needs them.
    pub watermarks: Arc<WatermarkCache>,
    /// Catch-up readers in use (each one is a Kafka consumer).
    pub catchup_pool: Arc<Semaphore>,
    /// Cancelled when the gateway shuts down: every subscription ends with its resume offsets.
    pub shutdown: CancellationToken,
    /// How the delivering layer encodes A's records sent as they are: a tail record is encoded
    /// once for every subscriber that sends it, and catch-up readers encode straight from their
    /// buffers ([`Event::Encoded`]). `None`: such records are sent as [`Event::Records`].
    pub wire: Option<crate::record::Encoder>,
}

/// A validated subscription, ready to run.
pub struct Subscription {
    pub topics: Vec<Arc<TopicView>>,
    pub cursors: Vec<Cursor>,
    pub filter: Filter,
    pub max_batch_records: usize,
    pub translation: Option<Translation>,
    /// Hold the latest record per key while the client falls behind (see the runner).
    pub conflate: bool,
    /// Ends a named subscription's stream from outside.
    pub stop: Stop,
}

/// Ends a stream of a named subscription from outside: a newer stream took the name, or the
/// subscription was deleted. The stream ends ABORTED with its position. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    token: CancellationToken,
    /// The subscription's name and why it stopped, once stopped.
    why: Arc<std::sync::OnceLock<(String, String)>>,
}

impl Stop {
    pub fn stop(&self, name: &str, why: &str) {
        let _ = self.why.set((name.to_string(), why.to_string()));
        self.token.cancel();
    }

    /// Resolves with the error to end the stream with, once stopped.
    pub async fn stopped(&self) -> Error {
        self.token.cancelled().await;
        let (name, why) = self.why.get().cloned().unwrap_or_default();
        Error::SubscriptionTakenOver { name, why, resume: Vec::new() }
    }
}

/// What a subscription sends.
#[derive(Debug)]
pub enum Event {
    /// Records in offset order per partition; never empty.
    Records(Vec<Output>),
    /// A's records sent as they are, encoded by [`Shared::wire`], in offset order per partition;
    /// never empty.
    Encoded(Vec<crate::record::Encoded>),
    /// The position to resume from.
    Progress(Progress),
}

impl Event {
    /// An event with no record (it is not sent).
    pub fn is_empty(&self) -> bool {
        match self {
            Event::Records(records) => records.is_empty(),
            Event::Encoded(records) => records.is_empty(),
            Event::Progress(_) => false,
        }
    }
}

/// A subscription's position: every partition's next offset.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub offsets: Vec<PartitionOffset>,
    /// Records skipped so far because their translation returned an error (`skip_errors`).
    pub skipped_records: u64,
}

/// The bytes an event holds while it waits for its client: its records' sizes, or a progress
/// message's few bytes per partition.
impl Weighed for Result<Event, Error> {
    fn weight(&self) -> usize {
        match self {
            Ok(Event::Records(outputs)) => outputs.iter().map(Output::size).sum(),
            Ok(Event::Encoded(records)) => records.iter().map(crate::record::Encoded::size).sum(),
            Ok(Event::Progress(p)) => 64 * p.offsets.len(),
            Err(_) => 0,
        }
    }
}

/// Where a subscription's events go. A stream that ends early ends with an error that carries the
/// position to resume from.
pub type EventSender = crate::buffer::Sender<Result<Event, Error>>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    #[test]
    fn an_event_weighs_its_records_or_its_positions() {
        let record = Record::new("t".into(), 0, 0, 0, None, Some(&[b'x'; 1000]), &[]);
        let records: Result<Event, Error> = Ok(Event::Records(vec![Output::untranslated(record); 10]));
        assert_eq!(records.weight(), 10 * (1000 + crate::record::RECORD_OVERHEAD));
        let offsets = vec![PartitionOffset { topic: "t".into(), partition: 0, offset: 0 }; 3];
        assert_eq!(Ok(Event::Progress(Progress { offsets, skipped_records: 0 })).weight(), 3 * 64);
        assert_eq!(Err::<Event, _>(Error::Internal("x".into())).weight(), 0);
    }
}

//! The `[checkpoint]` configuration.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where and how often the view is checkpointed. Without `dir` nothing is written or read, and
/// every start loads the view from Kafka (the gateway as it always was).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Directory of the checkpoint file (`view.redb`); unset: no checkpoints.
    pub dir: Option<PathBuf>,
    /// Longest time between checkpoints of a changed partition, in milliseconds.
    pub interval_ms: u64,
    /// A partition with this many new records is written before its interval is over.
    pub max_records: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        Self {
            dir: None,
            // A restart replays at most about this much of each partition, well under a second at
            // the measured load rate (about 1 M records/s); each checkpoint is one fsync'd commit,
            // so once a second costs nothing noticeable.
            interval_ms: 1_000,
            // Well below the default tail buffer (`limits.tail_max_records`, 131,072, and what
            // `tail_max_bytes` leaves of it): a busy partition is written while its new records
            // are still in its tail, so only they are written (otherwise its whole state is).
            max_records: 8_192,
        }
    }
}

impl CheckpointConfig {
    /// What serde cannot check; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.dir.as_ref().is_some_and(|d| d.as_os_str().is_empty()) {
            return Err("`checkpoint.dir` is empty: name a directory, or leave it unset for no checkpoints".into());
        }
        if self.interval_ms == 0 {
            return Err("`checkpoint.interval_ms` must be greater than 0".into());
        }
        if self.max_records == 0 {
            return Err("`checkpoint.max_records` must be greater than 0".into());
        }
        Ok(())
    }
}

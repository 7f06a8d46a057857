//! Named events: every warning and error path of the gateway is one type here. Emitting one
//! counts it in `tributary_events_total{event}` (always) and logs it with an `event` field, at
//! most once per [`QUIET`] for the same event with the same first field (the same error message,
//! the same translator): the lines held back are counted in the next line's `repeated` field, so
//! an outage that fails every poll does not flood the log, while distinct problems each get a line.
//!
//! The catalogue ([`ALL`]) is the table of events in `docs/operations.md`; a unit test keeps them
//! in step. Events that only an adapter emits are declared in that adapter with
//! [`declare_events!`](crate::declare_events) (the server's connections, TLS and auth reloads),
//! with their own catalogue and the same test.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

/// How long an event type stays quiet in the log after a line.
pub const QUIET: Duration = Duration::from_secs(10);

/// One kind of thing that went wrong.
pub trait Event {
    /// Stable snake_case name: the metric's `event` label and the log line's `event` field.
    fn name(&self) -> &'static str;
    /// What tells two events of a type apart in the log: the first field.
    fn detail(&self) -> String;
    /// Logs the event; `repeated` is how many of its type were held back since the last line.
    fn log(&self, repeated: u64);
}

/// Counts the event and logs it unless the same one logged within [`QUIET`].
pub fn emit(event: &impl Event) {
    let name = event.name();
    metrics::counter!("tributary_events_total", "event" => name).increment(1);
    if let Some(repeated) = admit(name, event.detail(), Instant::now()) {
        event.log(repeated);
    }
}

/// Distinct (event, first field) pairs remembered for rate limiting; beyond it the quiet ones
/// are forgotten.
const REMEMBERED: usize = 1024;

/// Per (event, first field): when it last logged and how many were held back since.
fn admit(name: &'static str, detail: String, now: Instant) -> Option<u64> {
    type Seen = HashMap<(&'static str, String), (Instant, u64)>;
    static LAST: OnceLock<Mutex<Seen>> = OnceLock::new();
    let mut last = LAST.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if last.len() >= REMEMBERED {
        last.retain(|_, (at, _)| now.duration_since(*at) < QUIET);
        if last.len() >= REMEMBERED {
            last.clear();
        }
    }
    let key = (name, detail);
    match last.get_mut(&key) {
        Some((at, held)) if now.duration_since(*at) < QUIET => {
            *held += 1;
            None
        }
        Some((at, held)) => {
            let repeated = std::mem::take(held);
            *at = now;
            Some(repeated)
        }
        None => {
            last.insert(key, (now, 0));
            Some(0)
        }
    }
}

/// The log target of every event, whichever crate declares it: one filter
/// (`RUST_LOG=tributary_core::events=...`) reaches them all.
pub const TARGET: &str = "tributary_core::events";

#[doc(hidden)]
pub use tracing as __tracing;

/// Declares events: a struct per event with its fields (all `Display`), its name, its level and
/// its message, each an [`Event`], and the catalogue `ALL` of the module it is used in.
#[macro_export]
macro_rules! declare_events {
    ($(
        $(#[$doc:meta])*
        $ty:ident = $name:literal, $level:ident, $message:literal {
            $first:ident: $first_ty:ty $(, $field:ident: $fty:ty)* $(,)?
        }
    )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone)]
            pub struct $ty { pub $first: $first_ty, $(pub $field: $fty),* }

            impl $crate::events::Event for $ty {
                fn name(&self) -> &'static str {
                    $name
                }

                fn detail(&self) -> String {
                    self.$first.to_string()
                }

                fn log(&self, repeated: u64) {
                    let Self { $first, $($field),* } = self;
                    $crate::events::__tracing::event!(
                        target: $crate::events::TARGET,
                        $crate::events::__tracing::Level::$level,
                        event = $name,
                        $first = %$first,
                        $($field = %$field,)*
                        repeated,
                        $message
                    );
                }
            }
        )*

        /// Every event: (name, level, message, fields).
        pub const ALL: &[(&str, &str, &str, &str)] =
            &[$(($name, stringify!($level), $message, stringify!($first $(, $field)*))),*];
    };
}

declare_events! {
    /// The ingest consumer's poll returned an error (it keeps polling).
    KafkaIngestError = "kafka_ingest_error", WARN, "the ingest consumer got an error from Kafka; it keeps polling" { error: String }
    /// Looking for new partitions of the exposed topics failed (retried at the next refresh).
    KafkaPartitionsRefreshError = "kafka_partitions_refresh_error", WARN, "looking for new partitions failed; retried at the next refresh" { error: String }
    /// A partition's view is behind Kafka and getting further behind: see [`crate::watermarks::falling_behind`].
    ViewFallingBehind = "view_falling_behind", WARN, "the view of a partition is behind Kafka and its lag grew since the last refresh: ingest is not keeping up" { partition: String, lag_records: i64, lag_seconds: f64 }
    /// A watermark refresh failed: Kafka is unreachable or slow (`tributary_kafka_reachable` 0).
    KafkaWatermarksError = "kafka_watermarks_error", WARN, "Kafka did not answer the watermark refresh; the last known offsets stay in use" { error: String }
    /// A catch-up reader (for a subscriber behind the tail buffer) got an error.
    KafkaCatchupError = "kafka_catchup_error", WARN, "a catch-up reader got an error from Kafka; it keeps reading" { error: String }
    /// Ingest could not assign the exposed topics yet (Kafka down, topic missing): retried.
    IngestStartRetry = "ingest_start_retry", WARN, "cannot start ingest yet; retrying" { error: String, attempt: u32, retry_in: String }
    /// The ingest loop ended without being asked to (a panic): the view stops following Kafka.
    IngestStoppedAbnormally = "ingest_stopped_abnormally", ERROR, "the ingest loop ended abnormally; the view no longer follows Kafka" { error: String }
    /// Sharding: the group membership reported an error (librdkafka retries by itself).
    ShardingError = "sharding_error", WARN, "the sharding group membership got an error from Kafka; it keeps trying" { error: String }
    /// Sharding: partitions assigned to this replica could not be set up yet (Kafka did not
    /// answer their offsets): retried until they are, or until they are revoked.
    ShardingHoldRetry = "sharding_hold_retry", WARN, "cannot load the partitions assigned to this replica yet; retrying" { error: String, partitions: String }
    /// Sharding: this replica's membership ended (fenced by another live replica with the same
    /// instance id and address): it drops every partition and reports NOT_SERVING.
    ShardingMembershipEnded = "sharding_membership_ended", ERROR, "this replica left its sharding group; it serves no partition until restarted" { error: String }
    /// An automatic commit of a named subscription failed; the next progress retries.
    AutoCommitFailed = "auto_commit_failed", WARN, "automatic commit failed; the next progress retries" { subscription: String, error: String }
    /// An entry of the translator index is damaged and was skipped.
    TranslatorIndexInvalid = "translator_index_invalid", ERROR, "a translator index entry was skipped: it is damaged" { detail: String }
    /// A translator version's stored component is missing or damaged: disabled until uploaded again.
    TranslatorVersionDisabled = "translator_version_disabled", ERROR, "translator version disabled until it is uploaded again" { name: String, digest: String, reason: String }
    /// A translator's compiled artifact was stale or unreadable and is compiled again.
    TranslatorRecompiled = "translator_recompiled", WARN, "compiled translator not usable; recompiling" { digest: String, reason: String }
    /// A compiled artifact could not be stored; it is compiled again at the next start.
    TranslatorArtifactNotStored = "translator_artifact_not_stored", WARN, "could not store the compiled translator; it is compiled again at the next start" { digest: String, error: String }
    /// The checkpoint file could not be opened or read (corrupt, truncated, another format): it is
    /// set aside and every partition is rebuilt from Kafka.
    CheckpointUnreadable = "checkpoint_unreadable", ERROR, "the checkpoint cannot be read; it is set aside and the view is rebuilt from Kafka" { path: String, error: String }
    /// A partition's checkpoint cannot be continued (its offset is below the log start, past the
    /// end, or the partition is gone): that partition is rebuilt from Kafka.
    CheckpointDiscarded = "checkpoint_discarded", WARN, "a partition's checkpoint cannot be continued; the partition is rebuilt from Kafka" { partition: String, offset: i64, reason: String }
    /// A record's value could not be decoded with its schema and its topic's `on_error` is
    /// `skip`: the record is left out.
    SchemaDecodeSkipped = "schema_decode_skipped", WARN, "a value that cannot be decoded with its schema is skipped (on_error = skip)" { topic: String, record: String, reason: String, error: String }
    /// A record's value could not be decoded with its schema and its topic's `on_error` is
    /// `fail`: ingest of its partition stops at it and tries it again every `schemas.retry_ms`.
    SchemaDecodeStopped = "schema_decode_stopped", ERROR, "a value cannot be decoded with its schema: ingest of its partition waits at it and retries (on_error = fail)" { topic: String, record: String, reason: String, error: String }
    /// Writing a checkpoint failed (disk full, I/O error): the previous checkpoint stays whole and
    /// the next interval tries again.
    CheckpointWriteFailed = "checkpoint_write_failed", WARN, "writing the checkpoint failed; the previous one stays whole and the next interval retries" { error: String }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_logs_once_per_quiet_period_and_counts_what_it_held_back() {
        let start = Instant::now();
        let admit =
            |name, detail: &str, after: u64| admit(name, detail.to_string(), start + Duration::from_secs(after));
        assert_eq!(admit("test_event_a", "down", 0), Some(0));
        assert_eq!(admit("test_event_a", "down", 1), None);
        assert_eq!(admit("test_event_a", "down", 2), None);
        // Another type, or the same type with another first field, is not held back.
        assert_eq!(admit("test_event_b", "down", 2), Some(0));
        assert_eq!(admit("test_event_a", "refused", 2), Some(0));
        assert_eq!(admit("test_event_a", "down", QUIET.as_secs() + 1), Some(2));
        assert_eq!(admit("test_event_a", "down", QUIET.as_secs() + 2), None);
    }

    #[test]
    fn names_are_unique_snake_case_and_the_docs_list_every_one() {
        let docs = include_str!("../../../docs/operations.md");
        let mut seen = std::collections::HashSet::new();
        for (name, level, message, _) in ALL {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!(matches!(*level, "WARN" | "ERROR"));
            assert!(!message.is_empty());
            assert!(docs.contains(&format!("| `{name}` |")), "docs/operations.md's event table lacks {name}");
        }
    }
}

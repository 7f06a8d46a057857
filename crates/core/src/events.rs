//! Named events: every warning and error path of the gateway is one type here. Emitting one
//! counts it in `tributary_events_total{event}` (always) and logs it with an `event` field, at
//! most once per [`QUIET`] for the same event with the same first field (the same error message,
//! the same translator): the lines held back are counted in the next line's `repeated` field, so
//! an outage that fails every poll does not flood the log, while distinct problems each get a line.
//!
//! The catalogue ([`ALL`]) is the README's table of events; a unit test keeps them in step.

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

/// Declares the events: a struct per event with its fields (all `Display`), its name, its level
/// and its message, and the catalogue [`ALL`].
macro_rules! events {
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

            impl Event for $ty {
                fn name(&self) -> &'static str {
                    $name
                }

                fn detail(&self) -> String {
                    self.$first.to_string()
                }

                fn log(&self, repeated: u64) {
                    let Self { $first, $($field),* } = self;
                    tracing::event!(
                        tracing::Level::$level,
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

events! {
    /// The ingest consumer's poll returned an error (it keeps polling).
    KafkaIngestError = "kafka_ingest_error", WARN, "the ingest consumer got an error from Kafka; it keeps polling" { error: String }
    /// Looking for new partitions of the exposed topics failed (retried at the next refresh).
    KafkaPartitionsRefreshError = "kafka_partitions_refresh_error", WARN, "looking for new partitions failed; retried at the next refresh" { error: String }
    /// A watermark refresh failed: Kafka is unreachable or slow (`tributary_kafka_reachable` 0).
    KafkaWatermarksError = "kafka_watermarks_error", WARN, "Kafka did not answer the watermark refresh; the last known offsets stay in use" { error: String }
    /// A catch-up reader (for a subscriber behind the tail buffer) got an error.
    KafkaCatchupError = "kafka_catchup_error", WARN, "a catch-up reader got an error from Kafka; it keeps reading" { error: String }
    /// Ingest could not assign the exposed topics yet (Kafka down, topic missing): retried.
    IngestStartRetry = "ingest_start_retry", WARN, "cannot start ingest yet; retrying" { error: String, attempt: u32, retry_in: String }
    /// The ingest loop ended without being asked to (a panic): the view stops following Kafka.
    IngestStoppedAbnormally = "ingest_stopped_abnormally", ERROR, "the ingest loop ended abnormally; the view no longer follows Kafka" { error: String }
    /// Accepting a TCP connection failed (e.g. out of file descriptors); retried after a pause.
    AcceptFailed = "accept_failed", WARN, "accepting a connection failed; retrying after a pause" { error: String }
    /// A client's TLS handshake failed or timed out (untrusted certificate, plain text on the TLS port).
    TlsHandshakeFailed = "tls_handshake_failed", WARN, "a TLS handshake failed" { error: String }
    /// `TCP_NODELAY` could not be set on an accepted connection.
    TcpNodelayFailed = "tcp_nodelay_failed", WARN, "cannot set TCP_NODELAY on a connection" { error: String }
    /// Plain TCP on a non-loopback address (`allow_plaintext`).
    PlaintextOnNetwork = "plaintext_on_network", WARN, "serving PLAIN TCP on a non-loopback address (allow_plaintext): anyone who reaches this port can read every exposed topic" { listen: String }
    /// Shutdown's drain deadline passed with calls or stream tasks still open.
    DrainTimeout = "drain_timeout", WARN, "still running at the drain deadline; stopping anyway" { what: &'static str, open: usize }
    /// A changed tokens, policy or JWT key file could not be read; the previous one stays in use.
    AuthReloadFailed = "auth_reload_failed", WARN, "an auth file was not reloaded; the previous one stays in use" { file: &'static str, error: String }
    /// Changed TLS certificates could not be loaded; the previous ones stay in use.
    TlsReloadFailed = "tls_reload_failed", WARN, "TLS certificates not reloaded; the previous ones stay in use" { error: String }
    /// An automatic commit of a named subscription failed; the next progress retries.
    AutoCommitFailed = "auto_commit_failed", WARN, "automatic commit failed; the next progress retries" { subscription: String, error: String }
    /// `[metrics] listen` names another address than the exporter this process already runs.
    MetricsListenerConflict = "metrics_listener_conflict", WARN, "metrics are already served by this process elsewhere" { listen: String, already: String }
    /// An entry of the translator index is damaged and was skipped.
    TranslatorIndexInvalid = "translator_index_invalid", ERROR, "a translator index entry was skipped: it is damaged" { detail: String }
    /// A translator version's stored component is missing or damaged: disabled until uploaded again.
    TranslatorVersionDisabled = "translator_version_disabled", ERROR, "translator version disabled until it is uploaded again" { name: String, digest: String, reason: String }
    /// A translator's compiled artifact was stale or unreadable and is compiled again.
    TranslatorRecompiled = "translator_recompiled", WARN, "compiled translator not usable; recompiling" { digest: String, reason: String }
    /// A compiled artifact could not be stored; it is compiled again at the next start.
    TranslatorArtifactNotStored = "translator_artifact_not_stored", WARN, "could not store the compiled translator; it is compiled again at the next start" { digest: String, error: String }
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
    fn names_are_unique_snake_case_and_the_readme_lists_every_one() {
        let readme = include_str!("../../../README.md");
        let mut seen = std::collections::HashSet::new();
        for (name, level, message, _) in ALL {
            assert!(seen.insert(name), "{name} twice");
            assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{name}");
            assert!(matches!(*level, "WARN" | "ERROR"));
            assert!(!message.is_empty());
            assert!(readme.contains(&format!("| `{name}` |")), "README.md's event table lacks {name}");
        }
    }
}

//! Logging for long-running loops that must not flood the log while an outage lasts.

use std::time::{Duration, Instant};

use tracing::warn;

/// How long the same message stays quiet after it was logged.
const QUIET: Duration = Duration::from_secs(10);

/// Logs a recurring error once, then a count at most every 10 s, so a broker outage does not
/// flood the log while the loop keeps going.
#[derive(Debug)]
pub struct ErrorLog {
    /// What fails, for the log line.
    source: &'static str,
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl Default for ErrorLog {
    /// The errors of a Kafka consumer.
    fn default() -> Self {
        Self::new("kafka consumer")
    }
}

impl ErrorLog {
    pub fn new(source: &'static str) -> Self {
        Self { source, last: None, suppressed: 0 }
    }

    pub fn log(&mut self, message: &str) {
        match &self.last {
            Some((m, at)) if m == message && at.elapsed() < QUIET => self.suppressed += 1,
            _ => {
                warn!(source = self.source, error = message, repeated = self.suppressed, "recurring error");
                self.last = Some((message.to_string(), Instant::now()));
                self.suppressed = 0;
            }
        }
    }
}

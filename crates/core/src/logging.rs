//! Logging for long-running loops that must not flood the log while an outage lasts.

use std::time::{Duration, Instant};

use tracing::warn;

/// How long the same message stays quiet after it was logged.
const QUIET: Duration = Duration::from_secs(10);

/// Logs a recurring error once, then a count at most every 10 s, so a broker outage does not
/// flood the log while the loop keeps going.
#[derive(Debug, Default)]
pub struct ErrorLog {
    last: Option<(String, Instant)>,
    suppressed: u64,
}

impl ErrorLog {
    pub fn log(&mut self, message: &str) {
        match &self.last {
            Some((m, at)) if m == message && at.elapsed() < QUIET => self.suppressed += 1,
            _ => {
                warn!(error = message, repeated = self.suppressed, "kafka consumer error");
                self.last = Some((message.to_string(), Instant::now()));
                self.suppressed = 0;
            }
        }
    }
}

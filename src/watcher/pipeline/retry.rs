//! Retrying an apply that failed for a passing reason (the outputs could not be written, or
//! `haproxy -c` could not run): backoff, and one error logged per run of failures.

use crate::core::backoff::Backoff;
use std::time::Duration;
use tokio::time::Instant;

/// When the failed apply is tried again.
#[derive(Debug, Clone)]
pub(super) struct ApplyRetry {
    at: Option<Instant>,
    backoff: Backoff,
    /// Consecutive failures (the first one is logged as an error).
    failures: u32,
}

impl ApplyRetry {
    pub(super) fn new(min: Duration, max: Duration) -> Self {
        Self {
            at: None,
            backoff: Backoff::new(min, max),
            failures: 0,
        }
    }

    /// When the retry is due, if one is scheduled.
    pub(super) fn due(&self) -> Option<Instant> {
        self.at
    }

    /// An apply starts: whatever retry was scheduled is this one.
    pub(super) fn started(&mut self) {
        self.at = None;
    }

    /// The apply failed with `e`: schedules the retry, HAProxy being left as it is.
    pub(super) fn failed(&mut self, e: &str) {
        let delay = self.backoff.next_delay();
        self.at = Some(Instant::now() + delay);
        self.failures += 1;
        if self.failures == 1 {
            tracing::error!(error = %e, retry_in = ?delay, "could not write the new configuration; HAProxy keeps its current one, retrying with backoff");
        } else {
            tracing::debug!(error = %e, attempts = self.failures, retry_in = ?delay, "still cannot write the new configuration");
        }
    }

    /// The apply wrote its outputs.
    pub(super) fn succeeded(&mut self) {
        self.backoff.reset();
        if self.failures > 0 {
            tracing::info!(failed_attempts = self.failures, "outputs written again");
            self.failures = 0;
        }
    }
}

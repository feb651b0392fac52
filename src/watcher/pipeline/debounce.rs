//! When to apply: debounce bursts of changes without delaying an isolated one.
//!
//! A change that arrives after a quiet stretch (no change for `quiet`) is due at once. A change
//! that arrives while others are recent is held until the changes stop for `quiet`, but never
//! longer than `max_wait` after the first held change. Pure logic over tokio's `Instant`s
//! (the clock the pipeline runs on, which tests can pause), unit-tested without a clock.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Debounce {
    quiet: Duration,
    max_wait: Duration,
    /// When the latest change arrived (applied or not).
    last_change: Option<Instant>,
    /// When the oldest change not yet applied arrived.
    first_pending: Option<Instant>,
    /// Whether the pending changes may be applied at once (they followed a quiet stretch).
    leading: bool,
    /// Whether a pending change must settle (a template file being written).
    settling: bool,
}

impl Debounce {
    pub fn new(quiet: Duration, max_wait: Duration) -> Self {
        Self {
            quiet,
            max_wait: max_wait.max(quiet),
            last_change: None,
            first_pending: None,
            leading: false,
            settling: false,
        }
    }

    /// Records a change that arrived at `now`.
    pub fn change(&mut self, now: Instant) {
        let after_quiet = self
            .last_change
            .is_none_or(|t| now.saturating_duration_since(t) >= self.quiet);
        if self.first_pending.is_none() {
            self.first_pending = Some(now);
            self.leading = after_quiet;
        } else {
            // A second change while one is pending: this is a burst, wait for it to settle.
            self.leading = false;
        }
        self.last_change = Some(now);
    }

    /// Records a change that must not be applied at once even after a quiet stretch (a
    /// template file being written: the first event may be its truncation).
    pub fn change_settling(&mut self, now: Instant) {
        self.change(now);
        self.leading = false;
        self.settling = true;
    }

    /// When the pending changes are due, or `None` when nothing is pending.
    pub fn due(&self) -> Option<Instant> {
        let first = self.first_pending?;
        if self.leading {
            return Some(first);
        }
        let last = self.last_change.unwrap_or(first);
        Some((last + self.quiet).min(first + self.max_wait))
    }

    /// Like [`due`](Self::due), but a burst is not held until it settles: it is applied every
    /// `quiet` while it lasts. For changes that are cheap to apply (the runtime API), where
    /// waiting for a quiet stretch would only delay them (up to `max_wait`). Changes that must
    /// settle still wait for it.
    pub fn due_throttled(&self) -> Option<Instant> {
        let due = self.due()?;
        match self.first_pending {
            Some(first) if !self.settling => Some(due.min(first + self.quiet)),
            _ => Some(due),
        }
    }

    /// The pending changes were applied.
    pub fn applied(&mut self) {
        self.first_pending = None;
        self.leading = false;
        self.settling = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_applies_a_long_burst_every_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Q, M);
        d.change(t0);
        d.applied();
        // Changes every 30 ms: never quiet, so `due` waits for max_wait...
        for i in 1..=5 {
            d.change(t0 + ms(30 * i));
        }
        assert_eq!(d.due(), Some(t0 + ms(250)));
        // ...while the throttled form applies 100 ms after the first held change.
        assert_eq!(d.due_throttled(), Some(t0 + ms(30) + Q));
        // A template being written still settles.
        let mut d = Debounce::new(Q, M);
        d.change_settling(t0);
        d.change(t0 + ms(50));
        assert_eq!(d.due_throttled(), d.due());
        assert_eq!(d.due(), Some(t0 + ms(150)));
    }

    const Q: Duration = Duration::from_millis(100);
    const M: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn isolated_change_is_due_at_once() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Q, M);
        assert_eq!(d.due(), None);
        d.change(t0);
        assert_eq!(d.due(), Some(t0));
        d.applied();
        assert_eq!(d.due(), None);
        // Another change after a quiet stretch: again at once.
        d.change(t0 + ms(500));
        assert_eq!(d.due(), Some(t0 + ms(500)));
    }

    #[test]
    fn change_soon_after_an_applied_one_waits_for_quiet() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Q, M);
        d.change(t0);
        d.applied();
        d.change(t0 + ms(10));
        assert_eq!(d.due(), Some(t0 + ms(110)));
    }

    #[test]
    fn burst_is_coalesced_and_bounded_by_max_wait() {
        let t0 = Instant::now();
        let mut d = Debounce::new(Q, M);
        d.change(t0);
        d.change(t0 + ms(5));
        assert_eq!(d.due(), Some(t0 + ms(105)));
        // A steady stream every 50 ms never goes quiet: the max wait caps the delay.
        for i in 2..40 {
            d.change(t0 + ms(50 * i));
        }
        assert_eq!(d.due(), Some(t0 + M));
    }
}

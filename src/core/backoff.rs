//! Exponential backoff for retrying etcd and HAProxy operations for ever, optionally jittered
//! so that many processes that failed together (hundreds of sidekicks losing one etcd) do not
//! retry in lockstep.

use std::time::Duration;

/// Doubling delays from `min` up to `max`; [`Backoff::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
    /// Fraction (0–1) of each delay that is random: a delay `d` becomes one drawn uniformly
    /// from `[d × (1 − jitter), d]`.
    jitter: f64,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
            jitter: 0.0,
        }
    }

    /// The same backoff with each delay shortened by a random part of up to `fraction` of it
    /// (clamped to 0–1): never longer than without jitter, never shorter than `1 − fraction`
    /// of it.
    pub fn with_jitter(mut self, fraction: f64) -> Self {
        self.jitter = if fraction.is_nan() {
            0.0
        } else {
            fraction.clamp(0.0, 1.0)
        };
        self
    }

    /// The delay to wait before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        if self.jitter > 0.0 {
            d.mul_f64(1.0 - self.jitter * fastrand::f64())
        } else {
            d
        }
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 5 s: quick to converge after a blip, gentle on a long outage.
    fn default() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<_> = (0..4).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay().as_millis(), 100);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let base = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let mut b = base.clone().with_jitter(0.5);
            for want in [100u64, 200, 400, 400] {
                let d = b.next_delay();
                let (lo, hi) = (Duration::from_millis(want / 2), Duration::from_millis(want));
                assert!(lo <= d && d <= hi, "{d:?} outside [{lo:?}, {hi:?}]");
                if want == 100 {
                    seen.insert(d.as_micros());
                }
            }
        }
        assert!(seen.len() > 20, "jitter hardly varies: {seen:?}");
        // Out-of-range fractions are clamped: 0 is the plain backoff, above 1 is 1.
        let mut none = base.clone().with_jitter(-1.0);
        assert_eq!(none.next_delay(), Duration::from_millis(100));
        let mut full = base.with_jitter(7.0);
        assert!(full.next_delay() <= Duration::from_millis(100));
    }
}

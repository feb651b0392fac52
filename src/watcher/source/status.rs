//! How the etcd source is doing, for the health endpoints and metrics: whether every prefix and
//! every root is listed and watched (a root's one watch counts like a prefix's), and how many times it had to connect, list or watch again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

/// Shared between the source's tasks (which write it) and the health endpoints (which read it).
#[derive(Debug, Default)]
pub struct SourceStatus {
    listed: AtomicBool,
    /// Watches that broke and are not watching again yet.
    broken: AtomicUsize,
    reconnects: AtomicU64,
}

impl SourceStatus {
    /// Whether every prefix and root is listed and watched (no watch broken).
    pub fn connected(&self) -> bool {
        self.listed.load(Ordering::Relaxed) && self.broken.load(Ordering::Relaxed) == 0
    }

    /// How many times the source connected, listed or watched again after a failure or a
    /// store change.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    /// Connecting and listing everything: `again` after the first time.
    pub(crate) fn listing(&self, again: bool) {
        self.listed.store(false, Ordering::Relaxed);
        self.broken.store(0, Ordering::Relaxed);
        if again {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every prefix and root listed, their watches starting.
    pub(crate) fn listed(&self) {
        self.listed.store(true, Ordering::Relaxed);
    }

    /// A watch broke (`was_ok`: it was watching until now).
    pub(super) fn watch_broken(&self, was_ok: bool) {
        if was_ok {
            self.broken.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A watch that had broken is watching again.
    pub(super) fn watch_back(&self) {
        let _ = self
            .broken
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1));
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_once_listed_and_while_no_watch_is_broken() {
        let s = SourceStatus::default();
        assert!(!s.connected());
        s.listing(false);
        s.listed();
        assert!(s.connected());
        s.watch_broken(true);
        s.watch_broken(false); // the same watch failing again
        assert!(!s.connected());
        s.watch_back();
        assert!(s.connected());
        assert_eq!(s.reconnects(), 1);
        s.listing(true);
        assert!(!s.connected());
        assert_eq!(s.reconnects(), 2);
    }
}

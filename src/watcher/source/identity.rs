//! Which etcd store the watcher is talking to: its cluster id and the highest revision seen.
//!
//! A watcher re-watches from the last revision it saw. If etcd was wiped, or restored from an
//! older snapshot, the store it now reaches has not got that far: etcd accepts the watch and
//! waits, and the watcher would serve the old endpoints for ever. Every response header
//! (listing, watch created, watch events, progress notifications, the periodic check) is
//! therefore [`StoreIdentity::observe`]d: a different cluster id, or a revision below one
//! already seen, means the store is not the one listed.
//!
//! A revision behind can also come from a member that lags the others for a moment, so the
//! watch loop treats an observation from a watch as a suspicion and confirms it with a
//! linearizable read before re-listing; and since even that read was seen one revision behind
//! the watch events on a 3-member cluster under a stream of writes, a revision behind counts
//! only if a second read a quarter of a second later is still behind (`check.rs`).

use etcd_client::ResponseHeader;
use std::fmt;

/// What one response header says about the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub cluster_id: u64,
    pub revision: i64,
}

impl Stamp {
    /// The stamp of a response header.
    pub fn of(header: &ResponseHeader) -> Self {
        Self {
            cluster_id: header.cluster_id(),
            revision: header.revision(),
        }
    }
}

/// Why the store is not the one the watcher listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Another cluster answers (re-created with another member set or token).
    ClusterId { old: u64, new: u64 },
    /// The store's revision is below one already seen (wiped, or restored from a snapshot).
    RevisionBehind { old: i64, new: i64 },
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::ClusterId { old, new } => {
                write!(f, "cluster id changed from {old:#x} to {new:#x}")
            }
            Why::RevisionBehind { old, new } => write!(
                f,
                "revision went back from {old} to {new}: etcd was wiped or restored from a snapshot"
            ),
        }
    }
}

/// The outcome of one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The same store, at this revision or later.
    Same,
    /// Not the store seen so far; what was known from it no longer holds.
    Changed { why: Why },
}

/// The cluster id and highest revision seen since the last listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreIdentity {
    /// `None` until the first header.
    cluster_id: Option<u64>,
    revision: i64,
}

impl StoreIdentity {
    /// An identity that knows the store from a listing's header. (Tests.)
    #[cfg(test)]
    pub fn listed(stamp: Stamp) -> Self {
        Self {
            cluster_id: Some(stamp.cluster_id),
            revision: stamp.revision,
        }
    }

    /// The highest revision seen.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The cluster id seen, if any header was.
    pub fn cluster_id(&self) -> Option<u64> {
        self.cluster_id
    }

    /// Takes in one response header. `Same` raises the highest revision seen; `Changed`
    /// leaves the identity as it was (the caller re-lists and starts a new one with
    /// [`StoreIdentity::listed`]). A cluster id of 0 (a header without one) is ignored.
    pub fn observe(&mut self, cluster_id: u64, revision: i64) -> Observation {
        match self.cluster_id {
            Some(old) if cluster_id != 0 && old != cluster_id => {
                return Observation::Changed {
                    why: Why::ClusterId {
                        old,
                        new: cluster_id,
                    },
                }
            }
            None if cluster_id != 0 => self.cluster_id = Some(cluster_id),
            _ => {}
        }
        if revision < self.revision {
            return Observation::Changed {
                why: Why::RevisionBehind {
                    old: self.revision,
                    new: revision,
                },
            };
        }
        self.revision = revision;
        Observation::Same
    }

    /// [`StoreIdentity::observe`] of a [`Stamp`].
    pub fn observe_stamp(&mut self, stamp: Stamp) -> Observation {
        self.observe(stamp.cluster_id, stamp.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_store_moves_forward() {
        let mut id = StoreIdentity::listed(Stamp {
            cluster_id: 7,
            revision: 10,
        });
        assert_eq!(id.observe(7, 10), Observation::Same);
        assert_eq!(id.observe(7, 12), Observation::Same);
        assert_eq!(id.revision(), 12);
        assert_eq!(id.cluster_id(), Some(7));
    }

    #[test]
    fn revision_behind_is_a_change_and_is_not_taken_in() {
        let mut id = StoreIdentity::listed(Stamp {
            cluster_id: 7,
            revision: 10,
        });
        let seen = id.observe(7, 3);
        assert_eq!(
            seen,
            Observation::Changed {
                why: Why::RevisionBehind { old: 10, new: 3 }
            }
        );
        assert_eq!(id.revision(), 10, "the highest revision is kept");
        assert_eq!(id.observe(7, 9), seen.with_new(9));
    }

    #[test]
    fn another_cluster_is_a_change_even_ahead() {
        let mut id = StoreIdentity::listed(Stamp {
            cluster_id: 7,
            revision: 10,
        });
        assert_eq!(
            id.observe(8, 50),
            Observation::Changed {
                why: Why::ClusterId { old: 7, new: 8 }
            }
        );
        assert_eq!((id.cluster_id(), id.revision()), (Some(7), 10));
    }

    #[test]
    fn first_header_and_headers_without_cluster_id() {
        let mut id = StoreIdentity::default();
        assert_eq!(id.observe(0, 4), Observation::Same);
        assert_eq!(id.cluster_id(), None);
        assert_eq!(id.observe(9, 5), Observation::Same);
        assert_eq!(id.cluster_id(), Some(9));
        assert_eq!(id.observe(0, 6), Observation::Same);
        assert_eq!(
            id.observe_stamp(Stamp {
                cluster_id: 9,
                revision: 6
            }),
            Observation::Same
        );
    }

    #[test]
    fn reasons_name_old_and_new() {
        let w = Why::RevisionBehind { old: 10, new: 3 }.to_string();
        assert!(w.contains("from 10 to 3:"), "{w}");
        let w = Why::ClusterId { old: 255, new: 16 }.to_string();
        assert!(w.contains("0xff") && w.contains("0x10"), "{w}");
    }

    impl Observation {
        fn with_new(self, revision: i64) -> Observation {
            match self {
                Observation::Changed {
                    why: Why::RevisionBehind { old, .. },
                } => Observation::Changed {
                    why: Why::RevisionBehind { old, new: revision },
                },
                other => other,
            }
        }
    }
}

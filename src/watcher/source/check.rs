//! The supervisor's check of the store's identity: a linearizable read of one key, whose
//! answer header is [`StoreIdentity::observe`]d. It runs every [`super::CHECK_EVERY`] (so a
//! watch that is open but silent is covered) and whenever a watch saw a header that does not
//! fit (to confirm it: the read reflects every write any watch can have seen, so a member that
//! lags the others does not pass for a rolled-back store).

use super::identity::{Observation, Stamp, StoreIdentity, Why};
use anyhow::{anyhow, Context as _, Result};
use etcd_client::{Client, GetOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a revision behind has to last to count: a member that lags the others catches up
/// within milliseconds (seen on a 3-member cluster under a stream of writes: a linearizable
/// read one revision behind the watch events, now and then), a rolled-back store does not.
const BEHIND_CONFIRM_AFTER: Duration = Duration::from_millis(250);

/// Failed checks in a row before a warning: an etcd outage is reported by the watches; a
/// check that keeps failing while they work (a role that may not read the key) is not.
const WARN_AFTER_FAILURES: u32 = 3;

/// Why the watches start over from a new listing.
pub(super) enum Restart {
    /// The store is not the one listed: `old` is what was known of it, `new` what answers.
    Store {
        why: Why,
        old: StoreIdentity,
        new: Stamp,
    },
    /// A watch task panicked (logged).
    TaskFailed,
}

/// Reads the store's identity and compares it with what the watches have seen.
pub(super) struct Checker {
    client: Client,
    /// The watch key of the first prefix or root: a point lookup, whatever the number of endpoints,
    /// that the watcher's etcd role may read.
    key: String,
    timeout: Duration,
    identity: Arc<Mutex<StoreIdentity>>,
    failures: u32,
}

impl Checker {
    pub fn new(
        client: Client,
        key: String,
        timeout: Duration,
        identity: Arc<Mutex<StoreIdentity>>,
    ) -> Self {
        Self {
            client,
            key,
            timeout,
            identity,
            failures: 0,
        }
    }

    /// Returns why the store changed, if it did. A failed read changes nothing: the watches
    /// notice an unreachable etcd themselves. A revision behind is read again after
    /// [`BEHIND_CONFIRM_AFTER`] and counts only if it is still behind.
    pub async fn check(&mut self) -> Option<Restart> {
        let mut confirming = false;
        loop {
            match self.check_once().await? {
                (Why::RevisionBehind { old, new }, _, _) if !confirming => {
                    tracing::debug!(
                        old,
                        new,
                        "etcd answered a revision behind one already seen; reading again to tell a lagging member from a rolled-back store"
                    );
                    confirming = true;
                    tokio::time::sleep(BEHIND_CONFIRM_AFTER).await;
                }
                (why, old, new) => return Some(Restart::Store { why, old, new }),
            }
        }
    }

    /// One read: why the store is not the one seen (with what was known and what answered),
    /// or `None` when it is (or the read failed).
    async fn check_once(&mut self) -> Option<(Why, StoreIdentity, Stamp)> {
        match self.read_stamp().await {
            Ok(new) => {
                self.failures = 0;
                let mut identity = self.identity.lock().unwrap_or_else(|p| p.into_inner());
                let old = *identity;
                match identity.observe_stamp(new) {
                    Observation::Same => None,
                    Observation::Changed { why } => Some((why, old, new)),
                }
            }
            Err(e) => {
                self.failures += 1;
                if self.failures == WARN_AFTER_FAILURES {
                    tracing::warn!(key = %self.key, error = %format!("{e:#}"), failures = self.failures, "etcd identity check keeps failing; a wiped or restored etcd is noticed only when a watch is created again");
                } else {
                    tracing::debug!(key = %self.key, error = %format!("{e:#}"), "etcd identity check failed");
                }
                None
            }
        }
    }

    /// A linearizable count-only read of the one key, and the store stamp of its answer.
    async fn read_stamp(&self) -> Result<Stamp> {
        let opts = GetOptions::new().with_count_only();
        let resp = tokio::time::timeout(
            self.timeout,
            self.client.kv_client().get(self.key.as_str(), Some(opts)),
        )
        .await
        .map_err(|_| anyhow!("no answer within {:?}", self.timeout))?
        .with_context(|| format!("count-only read of \"{}\"", self.key))?;
        resp.header()
            .map(Stamp::of)
            .ok_or_else(|| anyhow!("etcd answered without a header"))
    }
}

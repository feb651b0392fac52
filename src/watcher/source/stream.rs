//! Watching one service prefix or root for ever: re-watching from the last revision seen after
//! a broken stream, re-listing it after compaction (its events carry its [`Scope`]), and reporting every response header
//! that does not fit the store identity (see [`super::identity`]) to the supervisor in
//! [`super::watch`], which confirms it and re-lists everything.

use super::identity::{Observation, Stamp, StoreIdentity, Why};
use super::list::list_stamped;
use super::scope::Scope;
use super::watch::{KvChange, WatchEvent};
use crate::core::backoff::Backoff;
use crate::core::keys::ServicePrefix;
use anyhow::{anyhow, Result};
use etcd_client::{Client, EventType, ResponseHeader, WatchOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Largest watch response accepted (a transaction may delete many keys at once).
const MAX_WATCH_MESSAGE: usize = 64 << 20;

/// The store identity every watch checks its headers against, and where a watch reports a
/// header that does not fit.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub identity: Arc<Mutex<StoreIdentity>>,
    pub suspect: mpsc::Sender<Why>,
    /// Whether the watches are watching, for the health endpoints.
    pub status: Arc<super::SourceStatus>,
}

impl Shared {
    /// Observes one store stamp; a change is reported (once is enough: the supervisor reads the
    /// store itself to confirm it).
    pub fn observe(&self, stamp: Stamp) {
        let seen = self
            .identity
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .observe_stamp(stamp);
        if let Observation::Changed { why } = seen {
            let _ = self.suspect.try_send(why);
        }
    }

    fn observe_header(&self, header: Option<&ResponseHeader>) {
        if let Some(h) = header {
            self.observe(Stamp::of(h));
        }
    }
}

/// One prefix's or root's watch: which it is and where its events go.
pub(super) struct PrefixWatch {
    pub client: Client,
    pub scope: Scope,
    /// The prefix or root: every key under it is watched.
    pub prefix: ServicePrefix,
    pub timeout: Duration,
    pub tx: mpsc::Sender<WatchEvent>,
    pub shared: Shared,
}

impl PrefixWatch {
    /// Watches from `revision + 1` for ever; returns when the receiver is gone.
    pub async fn run(self, mut revision: i64) {
        let mut backoff = Backoff::default();
        let mut broken = false;
        loop {
            match self
                .watch_once(&mut revision, &mut backoff, &mut broken)
                .await
            {
                Ok(WatchEnd::ReceiverGone) => return,
                Ok(WatchEnd::Compacted(compact)) => {
                    tracing::warn!(prefix = %self.prefix, revision, compact_revision = compact, "watch fell behind compaction; re-listing");
                    match self.relist(&mut backoff).await {
                        Some(r) => revision = r,
                        None => return,
                    }
                    backoff.reset();
                }
                Err(e) => {
                    self.shared.status.watch_broken(!broken);
                    broken = true;
                    let delay = backoff.next_delay();
                    tracing::warn!(prefix = %self.prefix, revision, error = %format!("{e:#}"), retry_in = ?delay, "etcd watch broken; re-watching from the last revision seen");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Lists this prefix or root again (retrying) and sends it; returns the listing's
    /// revision, or `None` when the receiver is gone.
    async fn relist(&self, backoff: &mut Backoff) -> Option<i64> {
        let one = [(self.scope, self.prefix.clone())];
        loop {
            let listed =
                tokio::time::timeout(self.timeout * 4, list_stamped(&self.client, &one, 0))
                    .await
                    .map_err(|_| anyhow!("re-listing timed out after {:?}", self.timeout * 4))
                    .and_then(|r| r);
            match listed {
                Ok((snap, identity)) => {
                    if let Some(cluster_id) = identity.cluster_id() {
                        self.shared.observe(Stamp {
                            cluster_id,
                            revision: identity.revision(),
                        });
                    }
                    let revision = match &snap {
                        WatchEvent::Snapshot { revision, .. } => *revision,
                        WatchEvent::Changes { revision, .. } => *revision,
                    };
                    return self.tx.send(snap).await.ok().map(|_| revision);
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(prefix = %self.prefix, error = %format!("{e:#}"), retry_in = ?delay, "re-listing failed");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    async fn watch_once(
        &self,
        revision: &mut i64,
        backoff: &mut Backoff,
        broken: &mut bool,
    ) -> Result<WatchEnd> {
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*revision + 1)
            .with_progress_notify();
        let mut wc = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_WATCH_MESSAGE);
        let mut stream =
            tokio::time::timeout(self.timeout, wc.watch(self.prefix.watch_key(), Some(opts)))
                .await
                .map_err(|_| anyhow!("creating the watch timed out"))??;
        while let Some(resp) = stream.message().await? {
            self.shared.observe_header(resp.header());
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return Ok(WatchEnd::Compacted(resp.compact_revision()));
                }
                return Err(anyhow!("watch canceled by etcd: {}", resp.cancel_reason()));
            }
            if resp.created() {
                backoff.reset();
                if std::mem::take(broken) {
                    self.shared.status.watch_back();
                }
                tracing::debug!(prefix = %self.prefix, from = *revision + 1, "watching");
                continue;
            }
            let events = resp.events();
            if events.is_empty() {
                // A progress notification: every later event is newer than its header revision.
                if let Some(h) = resp.header() {
                    *revision = (*revision).max(h.revision());
                }
                continue;
            }
            let mut changes = Vec::with_capacity(events.len());
            for ev in events {
                let Some(kv) = ev.kv() else { continue };
                *revision = (*revision).max(kv.mod_revision());
                changes.push(match ev.event_type() {
                    EventType::Put => KvChange::Put {
                        key: kv.key().to_vec(),
                        value: kv.value().to_vec(),
                    },
                    EventType::Delete => KvChange::Delete {
                        key: kv.key().to_vec(),
                    },
                });
            }
            let ev = WatchEvent::Changes {
                scope: self.scope,
                revision: *revision,
                changes,
            };
            if self.tx.send(ev).await.is_err() {
                return Ok(WatchEnd::ReceiverGone);
            }
        }
        Err(anyhow!("etcd closed the watch stream"))
    }
}

enum WatchEnd {
    ReceiverGone,
    Compacted(i64),
}

//! The watcher's view of etcd: list every service prefix and root at one revision, then watch
//! each from that revision + 1, for ever: one watch per prefix and one per root (however many
//! services the root holds).
//!
//! Nothing is missed: a broken watch is re-created from the last revision seen on it, and a
//! watch whose start revision was compacted away re-lists its prefix and resumes from the new
//! listing ([`super::stream`]). etcd being unreachable, at start or mid-run, is retried with
//! backoff for ever; the consumer keeps what it has until etcd answers again.
//!
//! A supervisor keeps the watches honest about *which* store they watch (see
//! [`super::identity`]): every response header is checked against the cluster id and the
//! highest revision seen, and every [`CHECK_EVERY`] a count-only read checks it too, so a
//! watch that is open but silent is covered. When etcd was wiped or restored from an older
//! snapshot, one warning is logged, every prefix is listed again at the new store's revision
//! (one [`WatchEvent::Snapshot`] that replaces everything known) and watched from there.

use super::check::{Checker, Restart};
use super::identity::StoreIdentity;
use super::list::list_stamped;
use super::scope::{Scope, Watched};
use super::status::SourceStatus;
use super::stream::{PrefixWatch, Shared};
use crate::core::backoff::Backoff;
use crate::core::etcd::EtcdArgs;
use crate::core::keys::ServicePrefix;
use anyhow::anyhow;
use etcd_client::Client;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How often the supervisor reads the store's identity, watches or not.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// One change to one key of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// Raw key/value pairs of one service listing.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What the etcd side tells the change pipeline. A [`Scope`] says which prefix or root the
/// keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The complete contents of the listed prefixes and roots at `revision`; replaces what was
    /// known of them.
    Snapshot {
        revision: i64,
        scopes: Vec<(Scope, Entries)>,
    },
    /// Changes under one prefix or root, in revision order, up to `revision`.
    Changes {
        scope: Scope,
        revision: i64,
        changes: Vec<KvChange>,
    },
}

/// Connects (retrying for ever), sends one snapshot of every prefix and root at one revision,
/// then watches each and sends its changes; starts over with a new snapshot whenever the
/// store turns out to be another one. Returns when the receiver is gone.
pub async fn watch_services(
    args: EtcdArgs,
    watched: Watched,
    tx: mpsc::Sender<WatchEvent>,
    status: Arc<SourceStatus>,
) {
    let all = watched.ranges();
    let mut again = false;
    loop {
        status.listing(again);
        again = true;
        let (client, snapshot, identity) = connect_and_list(&args, &all).await;
        status.listed();
        let WatchEvent::Snapshot { revision, .. } = &snapshot else {
            return;
        };
        let revision = *revision;
        tracing::info!(
            revision,
            store_revision = identity.revision(),
            cluster_id = %hex(identity.cluster_id()),
            prefixes = watched.prefixes.len(),
            roots = watched.roots.len(),
            "listed services from etcd"
        );
        if tx.send(snapshot).await.is_err() {
            return;
        }
        match supervise(&args, &all, client, revision, identity, &tx, &status).await {
            Some(Restart::Store { why, old, new }) => tracing::warn!(
                old_cluster_id = %hex(old.cluster_id()),
                new_cluster_id = %hex(Some(new.cluster_id)),
                old_revision = old.revision(),
                new_revision = new.revision,
                "the etcd store is not the one listed before: {why}; re-listing every service prefix and root at its revision"
            ),
            Some(Restart::TaskFailed) => {}
            None => return,
        }
    }
}

fn hex(cluster_id: Option<u64>) -> String {
    cluster_id.map(|c| format!("{c:#x}")).unwrap_or_default()
}

/// Connects and lists every prefix and root, retrying with backoff until it works.
async fn connect_and_list(
    args: &EtcdArgs,
    all: &[(Scope, ServicePrefix)],
) -> (Client, WatchEvent, StoreIdentity) {
    let mut backoff = Backoff::default();
    let timeout = args.etcd_timeout;
    loop {
        let attempt = async {
            let client = args.connect().await?;
            let (snap, identity) = tokio::time::timeout(timeout * 4, list_stamped(&client, all, 0))
                .await
                .map_err(|_| anyhow!("listing services timed out after {:?}", timeout * 4))??;
            anyhow::Ok((client, snap, identity))
        };
        match attempt.await {
            Ok(ok) => return ok,
            Err(e) => {
                let delay = backoff.next_delay();
                match crate::core::etcd::unreachable_reason(&e) {
                    Some(why) => {
                        tracing::warn!(reason = why, retry_in = ?delay, endpoints = %args.endpoints.join(","), "etcd unreachable ({why}); keeping the last good config")
                    }
                    None => {
                        tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, endpoints = %args.endpoints.join(","), "etcd unreachable; keeping the last good config")
                    }
                }
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Runs one watch per prefix and per root from `revision + 1` and checks the store's identity until it
/// changes (returns why, with every watch stopped) or the receiver is gone (`None`).
/// `revision` is the listing's; `identity` what its headers showed.
async fn supervise(
    args: &EtcdArgs,
    all: &[(Scope, ServicePrefix)],
    client: Client,
    revision: i64,
    identity: StoreIdentity,
    tx: &mpsc::Sender<WatchEvent>,
    status: &Arc<SourceStatus>,
) -> Option<Restart> {
    let (suspect, mut suspicions) = mpsc::channel(1);
    let shared = Shared {
        identity: Arc::new(Mutex::new(identity)),
        suspect,
        status: status.clone(),
    };
    let mut tasks = JoinSet::new();
    for (scope, prefix) in all {
        let watch = PrefixWatch {
            client: client.clone(),
            scope: *scope,
            prefix: prefix.clone(),
            timeout: args.etcd_timeout,
            tx: tx.clone(),
            shared: shared.clone(),
        };
        tasks.spawn(watch.run(revision));
    }
    let mut checker = Checker::new(
        client.clone(),
        all.first().map(|(_, p)| p.watch_key()).unwrap_or_default(),
        args.etcd_timeout,
        shared.identity.clone(),
    );
    let mut ticks =
        tokio::time::interval_at(tokio::time::Instant::now() + CHECK_EVERY, CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let changed = loop {
        tokio::select! {
            ended = tasks.join_next() => match ended {
                // Watches end only when the receiver is gone.
                None | Some(Ok(())) => return None,
                Some(Err(e)) => {
                    tracing::error!(error = %e, "an etcd watch task failed; re-listing and watching again");
                    break Restart::TaskFailed;
                }
            },
            Some(why) = suspicions.recv() => {
                tracing::debug!(why = %why, "a watch saw a header that does not fit the store; checking");
                if let Some(restart) = checker.check().await {
                    break restart;
                }
            }
            _ = ticks.tick() => {
                if let Some(restart) = checker.check().await {
                    break restart;
                }
            }
        }
    };
    tasks.shutdown().await;
    Some(changed)
}

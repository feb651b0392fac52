//! The watcher's view of etcd: list every service prefix at one revision, then watch each from
//! that revision + 1, for ever.
//!
//! Nothing is missed: a broken watch is re-created from the last revision seen on it, and a
//! watch whose start revision was compacted away re-lists its prefix and resumes from the new
//! listing. etcd being unreachable, at start or mid-run, is retried with backoff for ever; the
//! consumer keeps what it has until etcd answers again.

use crate::backoff::Backoff;
use crate::etcd::EtcdArgs;
use crate::keys::ServicePrefix;
use anyhow::{anyhow, Context as _, Result};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Keys per page when listing, well below gRPC's 4 MiB message limit.
const PAGE: i64 = 2000;
/// Largest watch response accepted (a transaction may delete many keys at once).
const MAX_WATCH_MESSAGE: usize = 64 << 20;

/// One change to one key of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
}

/// Raw key/value pairs of one service listing.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// What the etcd side tells the change pipeline. Services are indices into the prefix list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The complete contents of the listed services at `revision`; replaces what was known.
    Snapshot {
        revision: i64,
        services: Vec<(usize, Entries)>,
    },
    /// Changes to one service, in revision order, up to `revision`.
    Changes {
        service: usize,
        revision: i64,
        changes: Vec<KvChange>,
    },
}

/// The key just after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Lists the given services at one revision (the current one when `revision` is 0), page by
/// page, so even 100,000 keys never exceed a message limit.
pub async fn list_services(
    client: &Client,
    prefixes: &[(usize, ServicePrefix)],
    mut revision: i64,
) -> Result<WatchEvent> {
    let mut kv = client.kv_client();
    let mut services = Vec::with_capacity(prefixes.len());
    for (idx, prefix) in prefixes {
        let watch_key = prefix.watch_key().into_bytes();
        let end = prefix_end(&watch_key);
        let mut start = watch_key;
        let mut entries = Vec::new();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut resp = kv
                .get(start.clone(), Some(opts))
                .await
                .with_context(|| format!("listing etcd prefix \"{prefix}\""))?;
            if revision == 0 {
                revision = resp
                    .header()
                    .map(|h| h.revision())
                    .ok_or_else(|| anyhow!("etcd answered without a revision"))?;
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            entries.extend(kvs.into_iter().map(|kv| kv.into_key_value()));
            if !more {
                break;
            }
        }
        services.push((*idx, entries));
    }
    Ok(WatchEvent::Snapshot { revision, services })
}

/// Connects (retrying for ever), sends one snapshot of every prefix at one revision, then
/// watches each prefix and sends its changes. Returns when the receiver is gone.
pub async fn watch_services(
    args: EtcdArgs,
    prefixes: Vec<ServicePrefix>,
    tx: mpsc::Sender<WatchEvent>,
) {
    let mut backoff = Backoff::default();
    let all: Vec<(usize, ServicePrefix)> = prefixes.into_iter().enumerate().collect();
    let timeout = args.etcd_timeout;
    let (client, snapshot) = loop {
        let attempt = async {
            let client = args.connect().await?;
            let snap = tokio::time::timeout(timeout * 4, list_services(&client, &all, 0))
                .await
                .map_err(|_| anyhow!("listing services timed out after {:?}", timeout * 4))??;
            anyhow::Ok((client, snap))
        };
        match attempt.await {
            Ok(ok) => break ok,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, endpoints = %args.endpoints.join(","), "etcd unreachable; keeping the last good config");
                tokio::time::sleep(delay).await;
            }
        }
    };
    let WatchEvent::Snapshot { revision, .. } = &snapshot else {
        return;
    };
    let revision = *revision;
    tracing::info!(revision, services = all.len(), "listed services from etcd");
    if tx.send(snapshot).await.is_err() {
        return;
    }
    let mut tasks = JoinSet::new();
    for (idx, prefix) in all {
        let (client, tx) = (client.clone(), tx.clone());
        tasks.spawn(watch_prefix(client, idx, prefix, revision, timeout, tx));
    }
    while tasks.join_next().await.is_some() {}
}

/// Watches one prefix from `revision + 1` for ever: re-watches from the last revision seen
/// after a broken stream, re-lists after compaction.
async fn watch_prefix(
    client: Client,
    idx: usize,
    prefix: ServicePrefix,
    mut revision: i64,
    timeout: Duration,
    tx: mpsc::Sender<WatchEvent>,
) {
    let mut backoff = Backoff::default();
    loop {
        match watch_once(
            &client,
            idx,
            &prefix,
            &mut revision,
            timeout,
            &tx,
            &mut backoff,
        )
        .await
        {
            Ok(WatchEnd::ReceiverGone) => return,
            Ok(WatchEnd::Compacted(compact)) => {
                tracing::warn!(prefix = %prefix, revision, compact_revision = compact, "watch fell behind compaction; re-listing");
                loop {
                    let listed = tokio::time::timeout(
                        timeout * 4,
                        list_services(&client, &[(idx, prefix.clone())], 0),
                    )
                    .await
                    .map_err(|_| anyhow!("re-listing timed out"))
                    .and_then(|r| r);
                    match listed {
                        Ok(snap) => {
                            if let WatchEvent::Snapshot { revision: r, .. } = &snap {
                                revision = *r;
                            }
                            if tx.send(snap).await.is_err() {
                                return;
                            }
                            break;
                        }
                        Err(e) => {
                            let delay = backoff.next_delay();
                            tracing::warn!(prefix = %prefix, error = %format!("{e:#}"), retry_in = ?delay, "re-listing failed");
                            tokio::time::sleep(delay).await;
                        }
                    }
                }
                backoff.reset();
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(prefix = %prefix, revision, error = %format!("{e:#}"), retry_in = ?delay, "etcd watch broken; re-watching from the last revision seen");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

enum WatchEnd {
    ReceiverGone,
    Compacted(i64),
}

async fn watch_once(
    client: &Client,
    idx: usize,
    prefix: &ServicePrefix,
    revision: &mut i64,
    timeout: Duration,
    tx: &mpsc::Sender<WatchEvent>,
    backoff: &mut Backoff,
) -> Result<WatchEnd> {
    let opts = WatchOptions::new()
        .with_prefix()
        .with_start_revision(*revision + 1)
        .with_progress_notify();
    let mut wc = client
        .watch_client()
        .max_decoding_message_size(MAX_WATCH_MESSAGE);
    let mut stream = tokio::time::timeout(timeout, wc.watch(prefix.watch_key(), Some(opts)))
        .await
        .map_err(|_| anyhow!("creating the watch timed out"))??;
    while let Some(resp) = stream.message().await? {
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Ok(WatchEnd::Compacted(resp.compact_revision()));
            }
            return Err(anyhow!("watch canceled by etcd: {}", resp.cancel_reason()));
        }
        if resp.created() {
            backoff.reset();
            tracing::debug!(prefix = %prefix, from = *revision + 1, "watching");
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
            service: idx,
            revision: *revision,
            changes,
        };
        if tx.send(ev).await.is_err() {
            return Ok(WatchEnd::ReceiverGone);
        }
    }
    Err(anyhow!("etcd closed the watch stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/service/"), b"/service0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}

//! The registration's background tasks: the lease keepalive and the watch on the own key.
//! Both report to the main loop through [`Notice`]s and never end on a mere network failure.

use super::call::{within, CallError};
use crate::core::backoff::Backoff;
use crate::core::etcd::ClusterId;
use etcd_client::{Client, EventType};
use std::time::Duration;
use tokio::sync::mpsc;

/// Something the background tasks noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Notice {
    /// The lease is gone (expired while etcd was unreachable, revoked, or its cluster replaced).
    LeaseLost(i64),
    /// The registered key was deleted (by an operator, a restore, another sidekick).
    KeyDeleted(String),
    /// The key watch was re-established after a break: check the key is still there.
    Resync,
}

/// What the keepalive of one lease needs.
pub(crate) struct KeepAlive {
    pub(crate) client: Client,
    pub(crate) id: i64,
    pub(crate) ttl: Duration,
    /// Deadline for opening the keepalive stream.
    pub(crate) deadline: Duration,
    pub(crate) cluster: ClusterId,
    /// The cluster epoch the lease was granted in.
    pub(crate) epoch: u64,
    pub(crate) notices: mpsc::Sender<Notice>,
}

/// Why a keepalive round ended.
enum Round {
    /// etcd says the lease is gone: report it and stop.
    Lost(&'static str),
    /// The stream broke or went silent: open a new one after a backoff.
    Broken,
}

/// Keeps the lease alive every TTL/3 until it is known gone: etcd answers that it does not
/// exist (TTL 0 or "lease not found"), or a different cluster answers. A broken or silent
/// stream is re-opened with jittered backoff; opening it has a deadline.
pub(crate) async fn keep_alive(k: KeepAlive) {
    let every = (k.ttl / 3).max(Duration::from_millis(500));
    // Retrying a keepalive is cheap (not a raft write): never wait longer than a normal round.
    let mut backoff = Backoff::new(Duration::from_millis(100), every).with_jitter(0.5);
    let lease = format!("{:x}", k.id);
    loop {
        let why = match round(&k, every, &mut backoff).await {
            Round::Lost(why) => why,
            Round::Broken => {
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
        };
        tracing::warn!(lease, why, "lease lost");
        let _ = k.notices.send(Notice::LeaseLost(k.id)).await;
        return;
    }
}

async fn round(k: &KeepAlive, every: Duration, backoff: &mut Backoff) -> Round {
    let mut c = k.client.clone();
    let lease = format!("{:x}", k.id);
    let (mut keeper, mut stream) = match within(
        "opening the lease keepalive",
        k.deadline,
        c.lease_keep_alive(k.id),
    )
    .await
    {
        Ok(pair) => pair,
        Err(e) if e.lease_lost() => return Round::Lost("etcd answered: lease not found"),
        Err(e) => {
            tracing::warn!(lease, error = %e, "lease keepalive: etcd unreachable");
            return Round::Broken;
        }
    };
    loop {
        if k.cluster.epoch() != k.epoch {
            return Round::Lost("a different etcd cluster answers");
        }
        if let Err(e) = keeper.keep_alive().await {
            tracing::warn!(lease, error = %e, "lease keepalive failed");
            return Round::Broken;
        }
        // An answer is due well within the TTL; none means the connection is gone or frozen.
        match within("lease keepalive", k.ttl, stream.message()).await {
            Ok(Some(resp)) => {
                k.cluster.observe(resp.header());
                if resp.ttl() <= 0 {
                    return Round::Lost("keepalive answered with TTL 0");
                }
                backoff.reset();
            }
            Ok(None) => {
                tracing::warn!(lease, "lease keepalive stream ended");
                return Round::Broken;
            }
            Err(e @ CallError::LeaseGone { .. }) => {
                tracing::debug!(lease, error = %e, "keepalive");
                return Round::Lost("etcd answered: lease not found");
            }
            Err(e) => {
                tracing::warn!(lease, error = %e, "lease keepalive failed");
                return Round::Broken;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// Watches `key` and reports its deletion; each time the watch (re)starts, asks for a resync.
/// A different cluster seen in a watch response asks for a resync too.
pub(crate) async fn watch_key(
    client: Client,
    key: String,
    deadline: Duration,
    cluster: ClusterId,
    notices: mpsc::Sender<Notice>,
) {
    let mut backoff =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).with_jitter(0.5);
    loop {
        let mut c = client.clone();
        match within("watching own key", deadline, c.watch(key.as_str(), None)).await {
            Ok(mut stream) => {
                // Whatever happened before the watch existed: have the key checked.
                if notices.send(Notice::Resync).await.is_err() {
                    return;
                }
                // No deadline on the stream itself: it is silent while nothing happens. A
                // frozen connection is ended by the client's HTTP/2 keep-alive.
                while let Ok(Some(resp)) = stream.message().await {
                    backoff.reset();
                    if cluster.observe(resp.header()).is_some()
                        && notices.send(Notice::Resync).await.is_err()
                    {
                        return;
                    }
                    let deleted = resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete);
                    if deleted && notices.send(Notice::KeyDeleted(key.clone())).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(key, error = %e, "watching own key failed"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

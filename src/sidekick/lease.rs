//! One etcd lease, granted when first needed and kept alive by a background task: what the
//! sidekick's registration (one lease per container) and the host agent's registrar (one
//! lease per host) share. A lost lease is a state, not an error: the owner forgets it and the
//! next [`Lease::grant_if_none`] grants a new one.

use super::call::{within, CallError};
use super::tasks::{keep_alive, KeepAlive, Notice};
use crate::core::etcd::ClusterId;
use etcd_client::Client;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A lease and its keepalive task.
pub(crate) struct Lease {
    client: Client,
    ttl: Duration,
    deadline: Duration,
    cluster: ClusterId,
    id: Option<i64>,
    /// The cluster epoch `id` was granted in.
    epoch: u64,
    keepalive: Option<JoinHandle<()>>,
    notices: mpsc::Sender<Notice>,
}

impl Lease {
    /// No lease yet; `cluster` is the owner's view of which cluster answers (shared), the
    /// keepalive reports a lost lease to `notices`.
    pub(crate) fn new(
        client: Client,
        ttl: Duration,
        deadline: Duration,
        cluster: ClusterId,
        notices: mpsc::Sender<Notice>,
    ) -> Self {
        Self {
            client,
            ttl,
            deadline,
            cluster,
            id: None,
            epoch: 0,
            keepalive: None,
            notices,
        }
    }

    /// The lease in use, if any.
    pub(crate) fn id(&self) -> Option<i64> {
        self.id
    }

    /// Whether the lease in use was granted by a cluster that no longer answers.
    pub(crate) fn stale(&self) -> bool {
        self.id.is_some() && self.epoch != self.cluster.epoch()
    }

    /// The lease in use, or a new one granted now (its keepalive started).
    pub(crate) async fn grant_if_none(&mut self) -> Result<i64, CallError> {
        if let Some(id) = self.id {
            return Ok(id);
        }
        let ttl = self.ttl.as_secs().max(1) as i64;
        let mut c = self.client.clone();
        let resp = within("granting a lease", self.deadline, c.lease_grant(ttl, None)).await?;
        self.cluster.observe(resp.header());
        let id = resp.id();
        tracing::info!(lease = format!("{id:x}"), ttl, "lease granted");
        self.id = Some(id);
        self.epoch = self.cluster.epoch();
        self.stop_keepalive();
        self.keepalive = Some(tokio::spawn(keep_alive(KeepAlive {
            client: self.client.clone(),
            id,
            ttl: self.ttl,
            deadline: self.deadline,
            cluster: self.cluster.clone(),
            epoch: self.epoch,
            notices: self.notices.clone(),
        })));
        Ok(id)
    }

    /// Forgets the lease (its keys are gone with it, or left to it) and stops its keepalive;
    /// returns it.
    pub(crate) fn forget(&mut self) -> Option<i64> {
        self.stop_keepalive();
        self.id.take()
    }

    /// Stops keeping the lease alive: it expires one TTL later unless revoked first.
    pub(crate) fn stop_keepalive(&mut self) {
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_keepalive();
    }
}

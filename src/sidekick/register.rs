//! The sidekick's registration in etcd: one lease, kept alive; the key put under it while the
//! app is healthy; deletes fenced by the lease; the own key watched so that a delete by anyone
//! else is undone at once.
//!
//! Steady state costs etcd no writes: lease keepalives are not raft writes. A registration's
//! whole life is grant, put, revoke. A lost lease is a state, not an error: whenever etcd says
//! the lease is gone (or a different cluster answers), the lease is forgotten and the next
//! register grants a new one. Every call has a deadline.

use super::call::{within, CallError};
use super::lease::Lease;
use super::tasks::{watch_key, Notice};
use crate::core::etcd::ClusterId;
use etcd_client::{Client, Compare, CompareOp, PutOptions, ResponseHeader, Txn, TxnOp};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The registration of one key.
pub(crate) struct Registration {
    client: Client,
    /// Deadline of every etcd call but the ones on the stop path.
    deadline: Duration,
    cluster: ClusterId,
    lease: Lease,
    /// Our lease from before a cluster change: a key restored under it is still ours.
    stale_lease: Option<i64>,
    watch: Option<(String, JoinHandle<()>)>,
    /// The key currently held under our lease, if any.
    registered: Option<String>,
    /// The key exists under another lease; wait for it to go away.
    standby: bool,
    notices: mpsc::Sender<Notice>,
}

impl Registration {
    /// A registration using `client`, each call bounded by `deadline`; background tasks
    /// report to `notices`.
    pub(crate) fn new(
        client: Client,
        ttl: Duration,
        deadline: Duration,
        notices: mpsc::Sender<Notice>,
    ) -> Self {
        let cluster = ClusterId::default();
        Self {
            lease: Lease::new(
                client.clone(),
                ttl,
                deadline,
                cluster.clone(),
                notices.clone(),
            ),
            client,
            deadline,
            cluster,
            stale_lease: None,
            watch: None,
            registered: None,
            standby: false,
            notices,
        }
    }

    /// The key held, if any.
    pub(crate) fn registered(&self) -> Option<&str> {
        self.registered.as_deref()
    }

    /// The lease in use, if any.
    pub(crate) fn lease(&self) -> Option<i64> {
        self.lease.id()
    }

    /// Notes the cluster of a response; an error if our lease belongs to another cluster.
    fn check_cluster(
        &mut self,
        what: &str,
        header: Option<&ResponseHeader>,
    ) -> Result<(), CallError> {
        let from = self.cluster.observe(header);
        if let Some(from) = from {
            tracing::warn!(
                from = format!("{from:x}"),
                to = format!("{:x}", self.cluster.get()),
                "a different etcd cluster answers (wiped, recreated or restored)"
            );
        }
        if self.lease.stale() {
            return Err(CallError::ClusterChanged {
                what: what.to_string(),
                from: from.unwrap_or_default(),
                to: self.cluster.get(),
            });
        }
        Ok(())
    }

    async fn ensure_lease(&mut self) -> Result<i64, CallError> {
        if self.lease.stale() {
            self.drop_lease("granted by a cluster that no longer answers");
        }
        self.lease.grant_if_none().await
    }

    /// Puts `key` = `value` under the lease (granting one if needed) and watches the key.
    ///
    /// A key that exists under another live lease (a duplicate sidekick, or this container's
    /// previous sidekick that died without cleaning up) is not taken over: this one stands by
    /// and registers when that key goes away. Returns whether the key is now ours. A lease etcd
    /// no longer has is replaced by a new one at once.
    pub(crate) async fn register(&mut self, key: &str, value: &str) -> Result<bool, CallError> {
        if let Some(old) = self.registered.clone().filter(|k| k != key) {
            // The endpoint moved (new host port after a restart): drop the old key first.
            self.deregister_key(&old).await?;
        }
        self.watch_key(key);
        match self.put(key, value).await {
            Err(e) if e.lease_lost() => {
                self.drop_lease(&e.to_string());
                self.put(key, value).await
            }
            other => other,
        }
    }

    async fn put(&mut self, key: &str, value: &str) -> Result<bool, CallError> {
        let lease = self.ensure_lease().await?;
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let mut ours_if = vec![
            Compare::create_revision(key, CompareOp::Equal, 0),
            Compare::lease(key, CompareOp::Equal, lease),
        ];
        if let Some(stale) = self.stale_lease {
            ours_if.push(Compare::lease(key, CompareOp::Equal, stale));
        }
        let what = format!("putting etcd key \"{key}\"");
        let mut ours = false;
        for cmp in ours_if {
            let txn = Txn::new().when([cmp]).and_then([put.clone()]);
            let mut c = self.client.clone();
            let resp = within(&what, self.deadline, c.txn(txn)).await?;
            self.check_cluster(&what, resp.header())?;
            if resp.succeeded() {
                ours = true;
                break;
            }
        }
        if ours {
            self.registered = Some(key.to_string());
            self.standby = false;
            self.stale_lease = None;
        } else {
            if !self.standby {
                tracing::warn!(
                    key,
                    "key is held under another sidekick's lease; standing by until it goes away"
                );
            }
            self.standby = true;
        }
        Ok(ours)
    }

    /// Whether the key is held by someone else and this sidekick waits for it to go away.
    pub(crate) fn standby(&self) -> bool {
        self.standby
    }

    fn watch_key(&mut self, key: &str) {
        if self.watch.as_ref().is_none_or(|(k, _)| k != key) {
            if let Some((_, old)) = self.watch.take() {
                old.abort();
            }
            let task = tokio::spawn(watch_key(
                self.client.clone(),
                key.to_string(),
                self.deadline,
                self.cluster.clone(),
                self.notices.clone(),
            ));
            self.watch = Some((key.to_string(), task));
        }
    }

    /// Deletes the registered key, but only while it still holds our lease (a key that another
    /// sidekick has taken over is left alone).
    pub(crate) async fn deregister(&mut self) -> Result<(), CallError> {
        match self.registered.clone() {
            Some(key) => self.deregister_key(&key).await,
            None => Ok(()),
        }
    }

    async fn deregister_key(&mut self, key: &str) -> Result<(), CallError> {
        if let Some(lease) = self.lease.id() {
            let txn = Txn::new()
                .when([Compare::lease(key, CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key, None)]);
            let what = format!("deleting etcd key \"{key}\"");
            let mut c = self.client.clone();
            let resp = within(&what, self.deadline, c.txn(txn)).await?;
            self.cluster.observe(resp.header());
            if !resp.succeeded() {
                tracing::info!(key, "key no longer holds our lease; left alone");
            }
        }
        self.registered = None;
        Ok(())
    }

    /// Whether `key` still exists under our lease (after a watch break).
    pub(crate) async fn holds(&mut self, key: &str) -> Result<bool, CallError> {
        let what = format!("reading etcd key \"{key}\"");
        let mut c = self.client.clone();
        let resp = within(&what, self.deadline, c.get(key, None)).await?;
        self.check_cluster(&what, resp.header())?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| Some(kv.lease()) == self.lease.id()))
    }

    /// The key is known gone (deleted, or its lease lost): register again, even from standby.
    pub(crate) fn forget_key(&mut self) {
        self.registered = None;
        self.standby = false;
    }

    /// The lease is known gone: the next register grants a new one.
    pub(crate) fn forget_lease(&mut self, id: i64) {
        if self.lease.id() == Some(id) {
            self.drop_lease("the keepalive says so");
        }
    }

    /// Forgets the lease in use (and the key under it); the next register grants a new one.
    fn drop_lease(&mut self, why: &str) {
        let stale = self.lease.stale();
        if let Some(id) = self.lease.forget() {
            tracing::warn!(
                lease = format!("{id:x}"),
                why,
                "lease lost; registering again under a new one"
            );
            if stale {
                // The old cluster's data may come back (a restored snapshot): still ours.
                self.stale_lease = Some(id);
            }
        }
        self.registered = None;
        self.standby = false;
    }

    /// Revokes the lease within `deadline`: etcd deletes every key under it at once. A lease
    /// etcd no longer has is not an error (its keys are gone with it).
    pub(crate) async fn revoke(&mut self, deadline: Duration) -> Result<(), CallError> {
        if let Some((_, w)) = self.watch.take() {
            w.abort();
        }
        self.registered = None;
        if let Some(id) = self.lease.forget() {
            let what = format!("revoking lease {id:x}");
            let mut c = self.client.clone();
            match within(&what, deadline, c.lease_revoke(id)).await {
                Ok(_) => tracing::info!(lease = format!("{id:x}"), "lease revoked"),
                Err(CallError::LeaseGone { .. }) => {
                    tracing::info!(lease = format!("{id:x}"), "lease already gone")
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((_, w)) = self.watch.take() {
            w.abort();
        }
    }
}

//! The sidekick's registration in etcd: one lease, kept alive; the key put under it while the
//! app is healthy; deletes fenced by the lease; the own key watched so that a delete by anyone
//! else is undone at once.
//!
//! Steady state costs etcd no writes: lease keepalives are not raft writes. A registration's
//! whole life is grant, put, revoke.

use crate::backoff::Backoff;
use anyhow::{anyhow, Context as _, Result};
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Something the background tasks noticed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// etcd says the lease is gone (expired while etcd was unreachable, or revoked).
    LeaseLost(i64),
    /// The registered key was deleted (by an operator, a restore, another sidekick).
    KeyDeleted(String),
    /// The key watch was re-established after a break: check the key is still there.
    Resync,
}

/// The registration of one key.
pub struct Registration {
    client: Client,
    ttl: Duration,
    lease: Option<i64>,
    keepalive: Option<JoinHandle<()>>,
    watch: Option<(String, JoinHandle<()>)>,
    /// The key currently held under our lease, if any.
    registered: Option<String>,
    /// The key exists under another lease; wait for it to go away.
    standby: bool,
    notices: mpsc::Sender<Notice>,
}

impl Registration {
    /// A registration using `client`; background tasks report to `notices`.
    pub fn new(client: Client, ttl: Duration, notices: mpsc::Sender<Notice>) -> Self {
        Self {
            client,
            ttl,
            lease: None,
            keepalive: None,
            watch: None,
            registered: None,
            standby: false,
            notices,
        }
    }

    /// The key held, if any.
    pub fn registered(&self) -> Option<&str> {
        self.registered.as_deref()
    }

    /// The lease in use, if any.
    pub fn lease(&self) -> Option<i64> {
        self.lease
    }

    async fn ensure_lease(&mut self) -> Result<i64> {
        if let Some(id) = self.lease {
            return Ok(id);
        }
        let ttl = self.ttl.as_secs().max(1) as i64;
        let id = self
            .client
            .lease_grant(ttl, None)
            .await
            .context("granting a lease")?
            .id();
        tracing::info!(lease = format!("{id:x}"), ttl, "lease granted");
        self.lease = Some(id);
        if let Some(old) = self.keepalive.take() {
            old.abort();
        }
        self.keepalive = Some(tokio::spawn(keep_alive(
            self.client.clone(),
            id,
            self.ttl,
            self.notices.clone(),
        )));
        Ok(id)
    }

    /// Puts `key` = `value` under the lease (granting one if needed) and watches the key.
    ///
    /// A key that exists under another live lease (a duplicate sidekick, or this container's
    /// previous sidekick that died without cleaning up) is not taken over: this one stands by
    /// and registers when that key goes away. Returns whether the key is now ours.
    pub async fn register(&mut self, key: &str, value: &str) -> Result<bool> {
        if let Some(old) = self.registered.clone().filter(|k| k != key) {
            // The endpoint moved (new host port after a restart): drop the old key first.
            self.deregister_key(&old).await?;
        }
        self.watch_key(key);
        let lease = self.ensure_lease().await?;
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        let free_or_ours = |cmp: Compare| Txn::new().when([cmp]).and_then([put.clone()]);
        let mut ours = false;
        for cmp in [
            Compare::create_revision(key, CompareOp::Equal, 0),
            Compare::lease(key, CompareOp::Equal, lease),
        ] {
            let resp = self
                .client
                .txn(free_or_ours(cmp))
                .await
                .with_context(|| format!("putting etcd key \"{key}\""))?;
            if resp.succeeded() {
                ours = true;
                break;
            }
        }
        if ours {
            self.registered = Some(key.to_string());
            self.standby = false;
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
    pub fn standby(&self) -> bool {
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
                self.notices.clone(),
            ));
            self.watch = Some((key.to_string(), task));
        }
    }

    /// Deletes the registered key, but only while it still holds our lease (a key that another
    /// sidekick has taken over is left alone).
    pub async fn deregister(&mut self) -> Result<()> {
        match self.registered.clone() {
            Some(key) => self.deregister_key(&key).await,
            None => Ok(()),
        }
    }

    async fn deregister_key(&mut self, key: &str) -> Result<()> {
        if let Some(lease) = self.lease {
            let txn = Txn::new()
                .when([Compare::lease(key, CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key, None)]);
            let resp = self
                .client
                .txn(txn)
                .await
                .with_context(|| format!("deleting etcd key \"{key}\""))?;
            if !resp.succeeded() {
                tracing::info!(key, "key no longer holds our lease; left alone");
            }
        }
        self.registered = None;
        Ok(())
    }

    /// Whether `key` still exists under our lease (after a watch break).
    pub async fn holds(&mut self, key: &str) -> Result<bool> {
        let resp = self.client.get(key, None).await?;
        Ok(resp
            .kvs()
            .first()
            .is_some_and(|kv| Some(kv.lease()) == self.lease))
    }

    /// The key is known gone (deleted, or its lease lost): register again, even from standby.
    pub fn forget_key(&mut self) {
        self.registered = None;
        self.standby = false;
    }

    /// The lease is known gone: the next register grants a new one.
    pub fn forget_lease(&mut self, id: i64) {
        if self.lease == Some(id) {
            self.lease = None;
            self.registered = None;
            if let Some(k) = self.keepalive.take() {
                k.abort();
            }
        }
    }

    /// Revokes the lease: etcd deletes every key under it at once.
    pub async fn revoke(&mut self) -> Result<()> {
        if let Some((_, w)) = self.watch.take() {
            w.abort();
        }
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
        self.registered = None;
        if let Some(id) = self.lease.take() {
            self.client
                .lease_revoke(id)
                .await
                .map_err(|e| anyhow!("revoking lease {id:x}: {e}"))?;
            tracing::info!(lease = format!("{id:x}"), "lease revoked");
        }
        Ok(())
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some((_, w)) = self.watch.take() {
            w.abort();
        }
        if let Some(k) = self.keepalive.take() {
            k.abort();
        }
    }
}

/// Keeps lease `id` alive every TTL/3 until etcd says it is gone. A broken keepalive stream
/// is re-opened with backoff; the lease only ends when etcd answers with TTL 0.
async fn keep_alive(client: Client, id: i64, ttl: Duration, notices: mpsc::Sender<Notice>) {
    let every = (ttl / 3).max(Duration::from_millis(500));
    let mut backoff = Backoff::default();
    loop {
        let mut c = client.clone();
        let opened = c.lease_keep_alive(id).await;
        let (mut keeper, mut stream) = match opened {
            Ok(pair) => pair,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "lease keepalive: etcd unreachable");
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        loop {
            if let Err(e) = keeper.keep_alive().await {
                tracing::warn!(error = %e, "lease keepalive failed");
                break;
            }
            match tokio::time::timeout(ttl, stream.message()).await {
                Ok(Ok(Some(resp))) if resp.ttl() > 0 => backoff.reset(),
                Ok(Ok(Some(_))) => {
                    tracing::warn!(lease = format!("{id:x}"), "lease expired");
                    let _ = notices.send(Notice::LeaseLost(id)).await;
                    return;
                }
                Ok(Ok(None)) | Err(_) => {
                    tracing::warn!("lease keepalive stream ended");
                    break;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "lease keepalive failed");
                    break;
                }
            }
            tokio::time::sleep(every).await;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Watches `key` and reports its deletion; each time the watch (re)starts, asks for a resync.
async fn watch_key(client: Client, key: String, notices: mpsc::Sender<Notice>) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    loop {
        let mut c = client.clone();
        match c.watch(key.as_str(), None).await {
            Ok(mut stream) => {
                // Whatever happened before the watch existed: have the key checked.
                if notices.send(Notice::Resync).await.is_err() {
                    return;
                }
                while let Ok(Some(resp)) = stream.message().await {
                    backoff.reset();
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

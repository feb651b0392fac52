//! The agent's side of etcd: one lease for the whole agent, every key of every healthy
//! container put under it, deletes fenced by it.
//!
//! **One lease per agent, not per container.** Keepalives cost the etcd leader work per lease
//! (not raft writes, but one message each every TTL/3): 10,000 containers on 100 hosts are
//! 100 leases — 33 keepalives a second at a 10 s TTL — instead of 3,333 a second. What expires
//! together is the same either way: the agent keeps every lease of its host alive, so when it
//! dies, all its keys go one TTL later. The price is that a lost lease (etcd unreachable for
//! longer than the TTL) takes every key of the host and they are put back together, one put
//! each, when etcd answers again.
//!
//! A restarted agent finds its previous run's keys by the `agent` field of their values and
//! its own host address in the key ([`Registrar::scan_previous`]): a key still wanted is put
//! under the new lease in place (no delete, so no gap); the others are deleted once the first
//! full resync shows their container gone, fenced by their mod revision so that a key someone
//! else took in between is left alone. Keys of other hosts and of sidekicks are never touched.
//!
//! Steady state costs etcd no writes: a put is skipped when the key already holds the value
//! under the lease, and [`Registrar::audit`] compares by reading the lease's key list.

use crate::core::endpoint::EndpointValue;
use crate::core::etcd::ClusterId;
use crate::sidekick::call::{within, CallError};
use crate::sidekick::lease::Lease;
use crate::sidekick::tasks::Notice;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp,
};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keys per page when listing the root.
const PAGE: i64 = 2000;

/// What a put found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Put {
    /// The key holds the value under our lease (written now, or already).
    Held,
    /// The key is held under another lease (a sidekick, another agent): left alone.
    Foreign,
}

/// The agent's lease and the keys under it.
pub(crate) struct Registrar {
    client: Client,
    deadline: Duration,
    cluster: ClusterId,
    lease: Lease,
    /// Key → (value, revision of our put) held under our lease, as far as we know.
    held: HashMap<String, (String, i64)>,
    /// Keys of this agent's previous run, with their mod revision.
    previous: HashMap<String, i64>,
    /// Keys found under another lease (warned about once).
    foreign: HashSet<String>,
    /// Keys under our lease that we did not know we held (a put whose answer was lost).
    stray: HashSet<String>,
}

impl Registrar {
    pub(crate) fn new(
        client: Client,
        ttl: Duration,
        deadline: Duration,
        notices: mpsc::Sender<Notice>,
    ) -> Self {
        let cluster = ClusterId::default();
        Self {
            lease: Lease::new(client.clone(), ttl, deadline, cluster.clone(), notices),
            client,
            deadline,
            cluster,
            held: HashMap::new(),
            previous: HashMap::new(),
            foreign: HashSet::new(),
            stray: HashSet::new(),
        }
    }

    /// The keys held now.
    pub(crate) fn held(&self) -> usize {
        self.held.len()
    }

    /// Whether `key` holds `value` under our lease, as far as we know.
    pub(crate) fn holds(&self, key: &str, value: &str) -> bool {
        self.held.get(key).is_some_and(|(v, _)| v == value)
    }

    /// Whether `key` was this agent's before it restarted (and is not yet adopted or deleted).
    pub(crate) fn is_previous(&self, key: &str) -> bool {
        self.previous.contains_key(key)
    }

    /// Finds the keys under `root` that this agent (`agent_id`, on host address `ip`) wrote
    /// in an earlier run: adopted when wanted again, deleted after the first resync otherwise.
    pub(crate) async fn scan_previous(
        &mut self,
        root: &str,
        agent_id: &str,
        ip: IpAddr,
    ) -> Result<usize, CallError> {
        let prefix = format!("{root}/");
        // `<root>/` ends in '/', so every key under it sorts before `<root>0`.
        let end = format!("{root}0");
        let what = format!("listing etcd prefix \"{prefix}\"");
        self.previous.clear();
        // Page by page: the root holds every host's keys, which can outgrow one message.
        let mut start = prefix.clone().into_bytes();
        let mut revision = 0;
        loop {
            let opts = GetOptions::new()
                .with_range(end.as_str())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut c = self.client.clone();
            let resp = within(&what, self.deadline * 4, c.get(start.clone(), Some(opts))).await?;
            self.cluster.observe(resp.header());
            if revision == 0 {
                revision = resp.header().map(|h| h.revision()).unwrap_or_default();
            }
            self.collect_previous(resp.kvs(), agent_id, ip);
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        Ok(self.previous.len())
    }

    /// Notes the keys among `kvs` that this agent wrote.
    fn collect_previous(&mut self, kvs: &[etcd_client::KeyValue], agent_id: &str, ip: IpAddr) {
        for kv in kvs {
            let Ok(key) = std::str::from_utf8(kv.key()) else {
                continue;
            };
            if !own_address(key, ip) {
                continue;
            }
            let ours = serde_json::from_slice::<EndpointValue>(kv.value())
                .ok()
                .and_then(|v| v.agent)
                .is_some_and(|a| a == agent_id);
            if ours {
                self.previous.insert(key.to_string(), kv.mod_revision());
            }
        }
    }

    async fn ensure_lease(&mut self) -> Result<i64, CallError> {
        if self.lease.stale() {
            self.lease_lost("granted by a cluster that no longer answers");
        }
        self.lease.grant_if_none().await
    }

    /// Puts `key` = `value` under the lease, unless it is already held so. A key that is free,
    /// already under our lease, or our previous run's (unchanged since) is taken; one under
    /// another lease is left alone ([`Put::Foreign`]).
    pub(crate) async fn put(&mut self, key: &str, value: &str) -> Result<Put, CallError> {
        if self.holds(key, value) {
            return Ok(Put::Held);
        }
        match self.try_put(key, value).await {
            Err(e) if e.lease_lost() => {
                self.lease_lost(&e.to_string());
                self.try_put(key, value).await
            }
            other => other,
        }
    }

    async fn try_put(&mut self, key: &str, value: &str) -> Result<Put, CallError> {
        let lease = self.ensure_lease().await?;
        let put = TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease)));
        // The likeliest condition first: each failed transaction is a raft proposal too.
        let free = Compare::create_revision(key, CompareOp::Equal, 0);
        let under_ours = Compare::lease(key, CompareOp::Equal, lease);
        let ours_if = match self.previous.get(key) {
            Some(rev) => vec![
                Compare::mod_revision(key, CompareOp::Equal, *rev),
                free,
                under_ours,
            ],
            None if self.held.contains_key(key) => vec![under_ours, free],
            None => vec![free, under_ours],
        };
        let what = format!("putting etcd key \"{key}\"");
        for cmp in ours_if {
            let txn = Txn::new().when([cmp]).and_then([put.clone()]);
            let mut c = self.client.clone();
            let resp = within(&what, self.deadline, c.txn(txn)).await?;
            self.cluster.observe(resp.header());
            if self.lease.stale() {
                return Err(CallError::ClusterChanged {
                    what,
                    from: 0,
                    to: self.cluster.get(),
                });
            }
            if resp.succeeded() {
                let revision = resp.header().map(|h| h.revision()).unwrap_or_default();
                self.held
                    .insert(key.to_string(), (value.to_string(), revision));
                self.previous.remove(key);
                self.foreign.remove(key);
                return Ok(Put::Held);
            }
        }
        if self.foreign.insert(key.to_string()) {
            tracing::warn!(
                key,
                "key is held under another lease (a sidekick or another agent); left alone"
            );
        }
        Ok(Put::Foreign)
    }

    /// Deletes `key` if it holds our lease (or is our previous run's, unchanged since). A key
    /// under our lease that we did not know we held (a put whose answer was lost) goes too.
    pub(crate) async fn delete(&mut self, key: &str) -> Result<(), CallError> {
        self.foreign.remove(key);
        let ours = self.held.contains_key(key) || self.stray.remove(key);
        let fence = match (self.previous.get(key), self.lease.id()) {
            (Some(rev), _) => Some(Compare::mod_revision(key, CompareOp::Equal, *rev)),
            (None, Some(lease)) if ours => Some(Compare::lease(key, CompareOp::Equal, lease)),
            _ => None,
        };
        let Some(fence) = fence else {
            self.held.remove(key);
            return Ok(());
        };
        let txn = Txn::new()
            .when([fence])
            .and_then([TxnOp::delete(key, None)]);
        let what = format!("deleting etcd key \"{key}\"");
        let mut c = self.client.clone();
        let resp = within(&what, self.deadline, c.txn(txn)).await?;
        self.cluster.observe(resp.header());
        if !resp.succeeded() {
            tracing::info!(key, "key is no longer ours; left alone");
        }
        self.held.remove(key);
        self.previous.remove(key);
        Ok(())
    }

    /// The previous run's keys that nothing adopted: their containers are gone.
    pub(crate) fn unadopted(&self) -> Vec<String> {
        self.previous.keys().cloned().collect()
    }

    /// `key` was deleted at `revision`: if that is after our put, someone else deleted it and
    /// it is no longer held (the next sync puts it back if wanted). A delete from before our
    /// put (our own, seen late) changes nothing.
    pub(crate) fn deleted(&mut self, key: &str, revision: i64) -> bool {
        match self.held.get(key) {
            Some((_, put)) if revision > *put => {
                self.held.remove(key);
                true
            }
            _ => false,
        }
    }

    /// Reads the keys under our lease and forgets those that are gone, so the next sync puts
    /// them back; returns keys under the lease that we do not hold (to delete). One read, no
    /// write.
    pub(crate) async fn audit(&mut self) -> Result<Vec<String>, CallError> {
        let Some(lease) = self.lease.id() else {
            self.held.clear();
            return Ok(Vec::new());
        };
        let mut c = self.client.clone();
        let opts = LeaseTimeToLiveOptions::new().with_keys();
        let resp = match within(
            "reading the lease's keys",
            self.deadline,
            c.lease_time_to_live(lease, Some(opts)),
        )
        .await
        {
            Err(e) if e.lease_lost() => {
                self.lease_lost(&e.to_string());
                return Ok(Vec::new());
            }
            other => other?,
        };
        self.cluster.observe(resp.header());
        if resp.ttl() <= 0 {
            self.lease_lost("the lease has expired");
            return Ok(Vec::new());
        }
        let keys: HashSet<String> = resp
            .keys()
            .iter()
            .filter_map(|k| String::from_utf8(k.clone()).ok())
            .collect();
        let gone: Vec<String> = self
            .held
            .keys()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            tracing::warn!(key = %k, "key is gone from etcd; putting it back");
            self.held.remove(k);
        }
        self.stray = keys
            .into_iter()
            .filter(|k| !self.held.contains_key(k))
            .collect();
        Ok(self.stray.iter().cloned().collect())
    }

    /// The lease is known gone: forget it and every key (they went with it).
    pub(crate) fn lease_lost(&mut self, why: &str) {
        if let Some(id) = self.lease.forget() {
            tracing::warn!(
                lease = format!("{id:x}"),
                why,
                keys = self.held.len(),
                "lease lost; putting every key back under a new one"
            );
        }
        self.held.clear();
    }

    /// The keepalive says lease `id` is gone.
    pub(crate) fn forget_lease(&mut self, id: i64) {
        if self.lease.id() == Some(id) {
            self.lease_lost("the keepalive says so");
        }
    }

    /// Stops the keepalive and leaves the keys to the lease: they expire one TTL later unless
    /// a restarted agent adopts them first.
    pub(crate) fn stop(&mut self) {
        self.lease.stop_keepalive();
    }
}

/// Whether `key` (`<root>/<service>/<ip>:<port>`) names an address of host `ip`.
fn own_address(key: &str, ip: IpAddr) -> bool {
    key.rsplit('/')
        .next()
        .and_then(|last| last.parse::<std::net::SocketAddr>().ok())
        .is_some_and(|addr| addr.ip().to_canonical() == ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_address_compares_the_host_part() {
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert!(own_address("/services/web/10.0.0.5:8080", ip));
        assert!(!own_address("/services/web/10.0.0.50:8080", ip));
        assert!(!own_address("/services/web/garbage", ip));
        let v6: IpAddr = "fd00::5".parse().unwrap();
        assert!(own_address("/services/web/[fd00::5]:80", v6));
    }
}

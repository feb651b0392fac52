//! Applying a plan's server operations through the runtime API: sending their commands, the
//! read-back check against the new configuration, and the bounded drain of removed servers
//! (tracked, so that shutdown can wait for them); and the [`RuntimeUpdate`] seam through which
//! the change pipeline uses all this.

use super::commands;
use super::{
    same_ip, used_connections, AdminError, BoxFuture, RuntimeSocket, ServerState,
    ADMIN_FORCED_MAINT,
};
use crate::haproxy::config::{Config, Server, HAPROXY_DEFAULT_WEIGHT};
use crate::haproxy::plan::Op;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinSet;

/// Why a runtime update did not go through; the caller falls back to a reload.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A command failed or HAProxy refused it (the error names the command and the answer).
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// HAProxy's servers after the update differ from the configuration (which server, and
    /// how).
    #[error("{0}")]
    StateDiffers(String),
}

/// Applies plans through the runtime API and drains removed servers in the background.
///
/// A removed server is put into maintenance at once — no new request reaches it, requests in
/// flight go on (HAProxy's `drain` state would still admit requests that persistence sends
/// there, and `del server` needs maintenance anyway) — and a background task deletes it once
/// HAProxy agrees (it refuses while connections remain), at most `drain_timeout` later; after
/// that the remaining sessions are shut down and the server is deleted. The drain tasks are
/// tracked: [`shutdown`](Self::shutdown) waits for them for a grace period.
#[derive(Debug, Clone)]
pub struct RuntimeApplier {
    pub socket: RuntimeSocket,
    pub drain_timeout: Duration,
    /// Servers being drained, `backend/server` → the drain's generation, so that a server that
    /// comes back before its deletion is revived instead of added twice.
    draining: Arc<Mutex<HashMap<String, u64>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The drain tasks (finished ones are reaped as new ones start).
    drains: Arc<Mutex<JoinSet<()>>>,
    /// Held while a drain moves a server's address away and while a server is revived, so a
    /// revived server never gets the unspecified address after its own is put back.
    revive: Arc<tokio::sync::Mutex<()>>,
}

/// How often a draining server's deletion is tried again.
const DRAIN_POLL: Duration = Duration::from_millis(100);

impl RuntimeApplier {
    pub fn new(socket: RuntimeSocket, drain_timeout: Duration) -> Self {
        Self {
            socket,
            drain_timeout,
            draining: Default::default(),
            generation: Default::default(),
            drains: Default::default(),
            revive: Default::default(),
        }
    }

    /// Servers currently draining, as `backend/server`.
    pub fn draining(&self) -> Vec<String> {
        let map = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<String> = map.keys().cloned().collect();
        v.sort();
        v
    }

    fn take_draining(&self, id: &str) -> bool {
        let mut map = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id).is_some()
    }

    /// Forgets every drain (after a reload, the new worker has none of those servers).
    pub fn forget_drains(&self) {
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Sends the operations' commands, then reads the touched backends back and compares them
    /// with `expected` (each touched backend's servers in the new configuration). `Ok` holds a
    /// summary; `Err` names the command or server at fault — the caller then reloads.
    pub async fn apply(
        &self,
        ops: &[Op],
        expected: &BTreeMap<String, Vec<Server>>,
    ) -> Result<String, ApplyError> {
        let started = Instant::now();
        let mut commands = 0usize;
        for op in ops {
            match op {
                Op::AddServer { backend, server } => {
                    let id = commands::id(backend, &server.name);
                    let revive = self.revive.lock().await;
                    if self.take_draining(&id) {
                        // Still there, in maintenance: bring it back instead of adding it,
                        // with its address (a drain may have moved it away to close idle
                        // connections).
                        let weight = server.weight.unwrap_or(HAPROXY_DEFAULT_WEIGHT);
                        let addr = format!("{} port {}", server.addr, server.port);
                        self.socket.exec(&commands::set_addr(&id, &addr)).await?;
                        self.socket.exec(&commands::set_weight(&id, weight)).await?;
                        if !server.is_disabled() {
                            self.socket.exec(&commands::set_ready(&id)).await?;
                        }
                        commands += 3;
                        continue;
                    }
                    drop(revive);
                    for cmd in commands::add_server(backend, server) {
                        self.socket.exec(&cmd).await?;
                        commands += 1;
                    }
                }
                Op::DelServer { backend, name } => {
                    let id = commands::id(backend, name);
                    self.socket.exec(&commands::set_maint(&id)).await?;
                    commands += 1;
                    self.start_drain(id);
                }
                Op::SetWeight {
                    backend,
                    name,
                    weight,
                } => {
                    let id = commands::id(backend, name);
                    self.socket
                        .exec(&commands::set_weight(&id, *weight))
                        .await?;
                    commands += 1;
                }
            }
        }
        let applied = started.elapsed();
        for (backend, servers) in expected {
            // The drain list is read before the state: a drain that ends in between (an idle
            // server is deleted within a millisecond) leaves a server in the state that is
            // still in this list, never one that is in neither.
            let draining = self.draining();
            let state = self.socket.servers_state(Some(backend)).await?;
            verify(backend, servers, &state, &draining).map_err(ApplyError::StateDiffers)?;
        }
        Ok(format!(
            "{} operation(s), {commands} command(s) in {applied:?}, state verified in {:?}",
            ops.len(),
            started.elapsed() - applied
        ))
    }

    /// Deletes `id` (`backend/server`, already in maintenance) once it has drained.
    pub(super) fn start_drain(&self, id: String) {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), generation);
        let this = self.clone();
        let mut drains = self.drains.lock().unwrap_or_else(|p| p.into_inner());
        while drains.try_join_next().is_some() {}
        drains.spawn(async move { this.drain(id, generation).await });
    }

    /// At shutdown: waits for the running drains to end, for at most `grace`, then abandons
    /// the rest. An abandoned server stays in maintenance in HAProxy (no new request reaches
    /// it) until the next reload drops it.
    pub async fn shutdown(&self, grace: Duration) {
        let mut drains =
            std::mem::take(&mut *self.drains.lock().unwrap_or_else(|p| p.into_inner()));
        let waited =
            tokio::time::timeout(grace, async { while drains.join_next().await.is_some() {} })
                .await;
        if waited.is_err() {
            drains.abort_all();
            let servers = self.draining();
            self.forget_drains();
            tracing::warn!(
                ?servers,
                ?grace,
                "shutting down with servers still draining; HAProxy keeps them in maintenance until the next reload"
            );
        }
    }

    /// Whether `id`'s drain of this generation is still wanted.
    fn still_draining(&self, id: &str, generation: u64) -> bool {
        let map = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        map.get(id) == Some(&generation)
    }

    async fn drain(&self, id: String, generation: u64) {
        let started = Instant::now();
        let deadline = started + self.drain_timeout;
        let mut forced = false;
        loop {
            if !self.still_draining(&id, generation) {
                return; // revived, or forgotten after a reload
            }
            let answer = match self.socket.command(&commands::del_server(&id)).await {
                Ok(answer) => answer,
                Err(e) => {
                    tracing::debug!(server = %id, error = %e, "deletion attempt failed");
                    String::new()
                }
            };
            match answer.trim() {
                "Server deleted." => {
                    tracing::info!(server = %id, drained_in = ?started.elapsed(), forced, "removed server deleted after draining");
                    break;
                }
                "No such server." => {
                    tracing::debug!(server = %id, "draining server already gone (a reload dropped it)");
                    break;
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline && !forced {
                tracing::warn!(server = %id, drain_timeout = ?self.drain_timeout, "server still busy at the drain timeout; shutting its sessions down");
                if let Err(e) = self.socket.exec(&commands::shutdown_sessions(&id)).await {
                    tracing::warn!(server = %id, error = %e, "could not shut the sessions down");
                }
                forced = true;
            } else if forced && now >= deadline + self.drain_timeout {
                tracing::error!(server = %id, last_answer = %answer.trim(), "HAProxy still refuses to delete the server; it stays in maintenance until the next reload");
                break;
            }
            if let Err(e) = self.purge_idle(&id, generation).await {
                tracing::debug!(server = %id, error = %e, "cannot read the server's connections");
            }
            tokio::time::sleep(DRAIN_POLL).await;
        }
        let mut map = self.draining.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(&id) == Some(&generation) {
            map.remove(&id);
        }
    }

    /// Once a draining server serves no request, closes its idle pooled connections, which
    /// would otherwise keep `del server` refused: HAProxy drops them when the address
    /// changes, and the unspecified address is safe on a server in maintenance (no request and
    /// no health check goes to it).
    async fn purge_idle(&self, id: &str, generation: u64) -> Result<(), AdminError> {
        let Some((backend, _)) = id.split_once('/') else {
            return Ok(());
        };
        let cmd = commands::show_servers_conn(backend);
        let text = self.socket.command(&cmd).await?;
        let conns =
            used_connections(&text, id).map_err(|reason| self.socket.unreadable(cmd, reason))?;
        let Some((used, Some(addr))) = conns else {
            return Ok(());
        };
        if used == 0 && !addr.is_unspecified() {
            let _revive = self.revive.lock().await;
            if !self.still_draining(id, generation) {
                return Ok(()); // revived meanwhile: its address stays
            }
            let unspecified = if addr.is_ipv6() { "::" } else { "0.0.0.0" };
            let answer = self
                .socket
                .command(&commands::set_addr(id, unspecified))
                .await?;
            tracing::debug!(server = %id, answer = %answer.trim(), "idle connections of a drained server closed");
        }
        Ok(())
    }
}

/// The runtime fast path as the change pipeline sees it (a fake in its unit tests).
pub trait RuntimeUpdate: Send + Sync {
    /// Applies `ops` and checks HAProxy's state against `expected` (the new servers of each
    /// touched backend); `Err` names what failed, and the caller falls back to a reload.
    fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        expected: &'a BTreeMap<String, Vec<Server>>,
    ) -> BoxFuture<'a, Result<String, ApplyError>>;

    /// Runs before each reload of `configs` (the files, parsed): saves the server state for
    /// the next worker.
    fn before_reload<'a>(&'a self, configs: &'a [&'a Config]) -> BoxFuture<'a, ()>;

    /// Runs after a reload worked: the new worker holds no draining server.
    fn after_reload(&self);

    /// At shutdown: waits for work still running in the background (the drains of removed
    /// servers) for at most `grace`, then abandons it.
    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, ()> {
        let _ = grace;
        Box::pin(async {})
    }
}

/// The real fast path: a [`RuntimeApplier`] and, optionally, HAProxy's server-state file.
#[derive(Debug, Clone)]
pub struct RuntimePath {
    pub applier: RuntimeApplier,
    /// Where `show servers state` is saved before a reload (`--server-state-file`).
    pub state_file: Option<PathBuf>,
}

impl RuntimeUpdate for RuntimePath {
    fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        expected: &'a BTreeMap<String, Vec<Server>>,
    ) -> BoxFuture<'a, Result<String, ApplyError>> {
        Box::pin(self.applier.apply(ops, expected))
    }

    fn before_reload<'a>(&'a self, configs: &'a [&'a Config]) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let Some(path) = &self.state_file else {
                return;
            };
            match self.applier.socket.save_state(path, configs).await {
                Ok((saved, 0)) => {
                    tracing::debug!(file = %path.display(), servers = saved, "server state saved")
                }
                Ok((saved, dropped)) => tracing::warn!(
                    file = %path.display(),
                    servers = saved,
                    left_out = dropped,
                    "server state saved without servers whose address in HAProxy differs from the configuration"
                ),
                // The reload goes on: servers then start as the configuration says.
                Err(e) => tracing::warn!(error = %e, "could not save the server state"),
            }
        })
    }

    fn after_reload(&self) {
        self.applier.forget_drains();
    }

    fn shutdown(&self, grace: Duration) -> BoxFuture<'_, ()> {
        Box::pin(self.applier.shutdown(grace))
    }
}

/// Compares `backend`'s servers in HAProxy (`state`) with the configuration's (`want`);
/// addresses as parsed IPs ([`same_ip`]). Servers in `draining` (`backend/server`) may linger
/// in maintenance.
pub(crate) fn verify(
    backend: &str,
    want: &[Server],
    state: &[ServerState],
    draining: &[String],
) -> Result<(), String> {
    let have: HashMap<&str, &ServerState> = state
        .iter()
        .filter(|s| s.backend == backend)
        .map(|s| (s.name.as_str(), s))
        .collect();
    for w in want {
        let Some(h) = have.get(w.name.as_str()) else {
            return Err(format!(
                "server {backend}/{} is missing from HAProxy after the runtime update",
                w.name
            ));
        };
        let weight = w.weight.unwrap_or(HAPROXY_DEFAULT_WEIGHT);
        if !same_ip(&h.addr, &w.addr) || h.port != w.port {
            return Err(format!(
                "server {backend}/{}: HAProxy has {}:{}, the configuration {}",
                w.name,
                h.addr,
                h.port,
                w.address()
            ));
        }
        if h.weight != weight {
            return Err(format!(
                "server {backend}/{}: HAProxy has weight {}, the configuration {weight}",
                w.name, h.weight
            ));
        }
        if h.admin_state & ADMIN_FORCED_MAINT != 0 && !w.is_disabled() {
            return Err(format!(
                "server {backend}/{} is in maintenance in HAProxy but enabled in the configuration",
                w.name
            ));
        }
    }
    for (name, h) in &have {
        if want.iter().any(|w| w.name == *name) {
            continue;
        }
        let id = format!("{backend}/{name}");
        if !(h.in_maintenance() && draining.contains(&id)) {
            return Err(format!(
                "server {id} is in HAProxy but not in the configuration"
            ));
        }
    }
    Ok(())
}

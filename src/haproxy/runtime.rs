//! HAProxy's runtime API (the admin stats socket, `--runtime-socket`): sending one command,
//! reading `show servers state`, and applying a [`plan`](super::plan) of server operations
//! with its read-back check and the bounded drain of removed servers.
//!
//! Each command uses its own connection (HAProxy's non-interactive mode: one line in, the
//! answer until HAProxy closes); a command costs about 0.07 ms on loopback, so there is no
//! gain in a session. HAProxy 2.6 answers a successful command with nothing or with one of a
//! few fixed sentences ([`SUCCESS_ANSWERS`]); anything else is its error message.

use super::plan::{Op, Server};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What HAProxy 2.6 answers to a command that worked (`add server`, `del server`; the others
/// answer nothing).
pub const SUCCESS_ANSWERS: [&str; 2] = ["New server registered.", "Server deleted."];

/// `srv_admin_state` bit: forced maintenance (`set server … state maint`, `disable server`).
pub const ADMIN_FORCED_MAINT: u32 = 0x01;
/// `srv_admin_state` bit: maintenance from the configuration (`disabled`).
pub const ADMIN_CONFIG_MAINT: u32 = 0x04;

/// A client of the admin socket.
#[derive(Debug, Clone)]
pub struct RuntimeSocket {
    pub path: PathBuf,
    /// How long one command may take.
    pub timeout: Duration,
}

impl RuntimeSocket {
    /// Sends one command and returns HAProxy's whole answer.
    pub async fn command(&self, cmd: &str) -> Result<String, String> {
        let attempt = async {
            let mut s = UnixStream::connect(&self.path).await?;
            s.write_all(cmd.as_bytes()).await?;
            s.write_all(b"\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(e)) => Err(format!(
                "--runtime-socket {}: `{cmd}`: {e}",
                self.path.display()
            )),
            Err(_) => Err(format!(
                "--runtime-socket {}: `{cmd}`: no answer within {:?}",
                self.path.display(),
                self.timeout
            )),
        }
    }

    /// Sends a command that changes state; `Err` carries HAProxy's refusal.
    pub async fn exec(&self, cmd: &str) -> Result<(), String> {
        let answer = self.command(cmd).await?;
        let answer = answer.trim();
        if answer.is_empty() || SUCCESS_ANSWERS.contains(&answer) {
            Ok(())
        } else {
            Err(format!("`{cmd}`: HAProxy answered {answer:?}"))
        }
    }

    /// `show servers state [<backend>]`, parsed.
    pub async fn servers_state(&self, backend: Option<&str>) -> Result<Vec<ServerState>, String> {
        let cmd = match backend {
            Some(b) => format!("show servers state {b}"),
            None => "show servers state".to_string(),
        };
        let text = self.command(&cmd).await?;
        ServerState::parse_all(&text).map_err(|e| format!("`{cmd}`: {e}"))
    }

    /// Writes `show servers state` to `path` (atomically), for HAProxy's
    /// `load-server-state-from-file` at the next reload, keeping only what agrees with
    /// `configs` (see [`state_for`]). Returns the servers saved and left out.
    pub async fn save_state(
        &self,
        path: &Path,
        configs: &[&str],
    ) -> Result<(usize, usize), String> {
        let dump = self.command("show servers state").await?;
        // Check it is the state dump and not an error before it replaces the last good one.
        let (text, dropped) = state_for(&dump, configs).map_err(|e| {
            format!(
                "--runtime-socket {}: `show servers state`: {e}",
                self.path.display()
            )
        })?;
        let saved = text.lines().count().saturating_sub(2);
        crate::output::Staged::write(path, &text)
            .and_then(|s| s.commit())
            .map_err(|e| format!("--server-state-file {}: {e}", path.display()))?;
        Ok((saved, dropped))
    }
}

/// One line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u32,
    /// Bit field; see [`ADMIN_FORCED_MAINT`].
    pub admin_state: u32,
    /// The weight the user set (`srv_uweight`).
    pub weight: u16,
}

impl ServerState {
    /// Whether the server takes no new requests because of maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.admin_state & (ADMIN_FORCED_MAINT | ADMIN_CONFIG_MAINT) != 0
    }

    /// Parses the dump (format version 1, columns found by their names in the header line).
    pub fn parse_all(text: &str) -> Result<Vec<ServerState>, String> {
        let mut lines = text.lines();
        let Some(columns) = Columns::read(&mut lines)? else {
            return Ok(Vec::new());
        };
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| columns.parse(l))
            .collect()
    }
}

/// Where the fields are in `show servers state` lines.
struct Columns {
    backend: usize,
    name: usize,
    addr: usize,
    op: usize,
    admin: usize,
    weight: usize,
    port: usize,
}

impl Columns {
    /// Reads the version line and the header; `None` for an empty answer.
    fn read<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Result<Option<Columns>, String> {
        match lines.next().map(str::trim) {
            Some("1") => {}
            Some("") | None => return Ok(None),
            Some(other) => return Err(format!("unexpected answer {other:?}")),
        }
        let header = lines.next().ok_or("no header line")?;
        let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
        let col = |name: &str| {
            cols.iter()
                .position(|c| *c == name)
                .ok_or_else(|| format!("no column {name} in the header"))
        };
        Ok(Some(Columns {
            backend: col("be_name")?,
            name: col("srv_name")?,
            addr: col("srv_addr")?,
            op: col("srv_op_state")?,
            admin: col("srv_admin_state")?,
            weight: col("srv_uweight")?,
            port: col("srv_port")?,
        }))
    }

    fn parse(&self, line: &str) -> Result<ServerState, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("short line {line:?}"))
        };
        let num = |i: usize| -> Result<u32, String> {
            get(i)?
                .parse()
                .map_err(|_| format!("not a number in column {i} of {line:?}"))
        };
        Ok(ServerState {
            backend: get(self.backend)?.to_string(),
            name: get(self.name)?.to_string(),
            addr: get(self.addr)?.to_string(),
            port: u16::try_from(num(self.port)?).map_err(|_| format!("bad port in {line:?}"))?,
            op_state: num(self.op)?,
            admin_state: num(self.admin)?,
            weight: u16::try_from(num(self.weight)?)
                .map_err(|_| format!("bad weight in {line:?}"))?,
        })
    }
}

/// Keeps the lines of a `show servers state` dump that agree with `configs` (the files the
/// next worker loads): a server whose address or port there differs from HAProxy's is left
/// out, because HAProxy would restore the saved port over the configured one. Returns the
/// text and how many servers were left out.
pub fn state_for(dump: &str, configs: &[&str]) -> Result<(String, usize), String> {
    let mut want: HashMap<(String, String), (String, u16)> = HashMap::new();
    for config in configs {
        for section in super::plan::parse(config).sections {
            if !section.has_servers() {
                continue;
            }
            let Some(backend) = section.name else {
                continue;
            };
            for s in section.servers {
                want.insert((backend.clone(), s.name), (s.addr, s.port));
            }
        }
    }
    let mut lines = dump.lines();
    let mut out = String::with_capacity(dump.len());
    let Some(columns) = Columns::read(&mut lines.clone())? else {
        return Ok((String::new(), 0));
    };
    for header in lines.by_ref().take(2) {
        out.push_str(header);
        out.push('\n');
    }
    let mut dropped = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let s = columns.parse(line)?;
        let agrees = want
            .get(&(s.backend, s.name))
            .is_none_or(|(addr, port)| *addr == s.addr && *port == s.port);
        if agrees {
            out.push_str(line);
            out.push('\n');
        } else {
            dropped += 1;
        }
    }
    Ok((out, dropped))
}

/// Applies plans through the runtime API and drains removed servers in the background.
///
/// A removed server is put into maintenance at once — no new request reaches it, requests in
/// flight go on (HAProxy's `drain` state would still admit requests that persistence sends
/// there, and `del server` needs maintenance anyway) — and a background task deletes it once
/// HAProxy agrees (it refuses while connections remain), at most `drain_timeout` later; after
/// that the remaining sessions are shut down and the server is deleted.
#[derive(Debug, Clone)]
pub struct RuntimeApplier {
    pub socket: RuntimeSocket,
    pub drain_timeout: Duration,
    /// Servers being drained, `backend/server` → the drain's generation, so that a server that
    /// comes back before its deletion is revived instead of added twice.
    draining: Arc<Mutex<HashMap<String, u64>>>,
    generation: Arc<std::sync::atomic::AtomicU64>,
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
    ) -> Result<String, String> {
        let started = Instant::now();
        let mut commands = 0usize;
        for op in ops {
            match op {
                Op::AddServer { backend, server } => {
                    let id = format!("{backend}/{}", server.name);
                    if self.take_draining(&id) {
                        // Still there, in maintenance: bring it back instead of adding it.
                        let weight = server.weight.unwrap_or(super::plan::DEFAULT_WEIGHT);
                        self.socket
                            .exec(&format!("set server {id} weight {weight}"))
                            .await?;
                        if !server.is_disabled() {
                            self.socket
                                .exec(&format!("set server {id} state ready"))
                                .await?;
                        }
                        commands += 2;
                        continue;
                    }
                    for cmd in op.commands() {
                        self.socket.exec(&cmd).await?;
                        commands += 1;
                    }
                }
                Op::DelServer { backend, name } => {
                    let id = format!("{backend}/{name}");
                    self.socket
                        .exec(&format!("set server {id} state maint"))
                        .await?;
                    commands += 1;
                    self.start_drain(id);
                }
                Op::SetWeight { .. } => {
                    for cmd in op.commands() {
                        self.socket.exec(&cmd).await?;
                        commands += 1;
                    }
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
            verify(backend, servers, &state, &draining)?;
        }
        Ok(format!(
            "{} operation(s), {commands} command(s) in {applied:?}, state verified in {:?}",
            ops.len(),
            started.elapsed() - applied
        ))
    }

    /// Deletes `id` (`backend/server`, already in maintenance) once it has drained.
    fn start_drain(&self, id: String) {
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.draining
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), generation);
        let this = self.clone();
        tokio::spawn(async move { this.drain(id, generation).await });
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
            let answer = match self.socket.command(&format!("del server {id}")).await {
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
                tracing::warn!(server = %id, drain_timeout = ?self.drain_timeout, "server still busy at --drain-timeout; shutting its sessions down");
                if let Err(e) = self
                    .socket
                    .exec(&format!("shutdown sessions server {id}"))
                    .await
                {
                    tracing::warn!(server = %id, error = %e, "could not shut the sessions down");
                }
                forced = true;
            } else if forced && now >= deadline + self.drain_timeout {
                tracing::error!(server = %id, last_answer = %answer.trim(), "HAProxy still refuses to delete the server; it stays in maintenance until the next reload");
                break;
            }
            if let Err(e) = self.purge_idle(&id).await {
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
    async fn purge_idle(&self, id: &str) -> Result<(), String> {
        let Some((backend, _)) = id.split_once('/') else {
            return Ok(());
        };
        let text = self
            .socket
            .command(&format!("show servers conn {backend}"))
            .await?;
        let Some((used, addr)) = used_connections(&text, id)? else {
            return Ok(());
        };
        if used == 0 && addr != "0.0.0.0" && addr != "::" {
            let unspecified = if addr.contains(':') { "::" } else { "0.0.0.0" };
            let answer = self
                .socket
                .command(&format!("set server {id} addr {unspecified}"))
                .await?;
            tracing::debug!(server = %id, answer = %answer.trim(), "idle connections of a drained server closed");
        }
        Ok(())
    }
}

/// The requests in progress on server `id` (`backend/server`) and its address, from
/// `show servers conn`; `None` if it is not listed.
pub fn used_connections(text: &str, id: &str) -> Result<Option<(u32, String)>, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if !header.starts_with('#') {
        return Err(format!("`show servers conn`: unexpected answer {header:?}"));
    }
    let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let at = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show servers conn`: no column {name}"))
    };
    let (used, addr) = (at("used_cur")?, at("addr")?);
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() != Some(&id) {
            continue;
        }
        let n = f
            .get(used)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("`show servers conn`: bad line {line:?}"))?;
        return Ok(Some((
            n,
            f.get(addr).copied().unwrap_or_default().to_string(),
        )));
    }
    Ok(None)
}

/// A boxed future, for the object-safe [`RuntimeUpdate`] seam.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// The runtime fast path as the change pipeline sees it (a fake in its unit tests).
pub trait RuntimeUpdate: Send + Sync {
    /// Applies `ops` and checks HAProxy's state against `expected` (the new servers of each
    /// touched backend); `Err` names what failed, and the caller falls back to a reload.
    fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        expected: &'a BTreeMap<String, Vec<Server>>,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// Runs before each reload of `configs` (the files' texts): saves the server state for
    /// the next worker.
    fn before_reload<'a>(&'a self, configs: &'a [&'a str]) -> BoxFuture<'a, ()>;

    /// Runs after a reload worked: the new worker holds no draining server.
    fn after_reload(&self);
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
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(self.applier.apply(ops, expected))
    }

    fn before_reload<'a>(&'a self, configs: &'a [&'a str]) -> BoxFuture<'a, ()> {
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
}

/// Compares `backend`'s servers in HAProxy (`state`) with the configuration's (`want`).
/// Servers in `draining` (`backend/server`) may linger in maintenance.
pub fn verify(
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
        let weight = w.weight.unwrap_or(super::plan::DEFAULT_WEIGHT);
        if h.addr != w.addr || h.port != w.port {
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

#[cfg(test)]
mod tests {
    use super::*;

    const STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
4 service 1 127.0.0.1_9101 127.0.0.1 2 0 1 1 1 6 3 3 6 0 0 0 - 9101 - 0 0 - - 0
4 service 2 127.0.0.1_9102 127.0.0.1 0 1 7 1 0 1 0 0 2 0 0 0 - 9102 - 0 0 - - 0

";

    fn server(name: &str, addr: &str, port: u16, weight: Option<u16>) -> Server {
        Server {
            name: name.into(),
            addr: addr.into(),
            port,
            weight,
            rest: vec!["check".into()],
        }
    }

    #[test]
    fn parses_show_servers_state() {
        let s = ServerState::parse_all(STATE).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].name, "127.0.0.1_9101");
        assert_eq!((s[0].port, s[0].op_state, s[0].weight), (9101, 2, 1));
        assert!(!s[0].in_maintenance());
        assert!(s[1].in_maintenance());
        assert_eq!(s[1].weight, 7);
        assert!(ServerState::parse_all("").unwrap().is_empty());
        assert!(ServerState::parse_all("Unknown command.\n").is_err());
        assert!(ServerState::parse_all("1\n# be_name\n").is_err());
    }

    #[test]
    fn saved_state_leaves_out_servers_the_configuration_moved() {
        let config = "backend service\n    server 127.0.0.1_9101 127.0.0.1:9101 check\n    server 127.0.0.1_9102 127.0.0.1:9999 check\n";
        let (text, dropped) = state_for(STATE, &[config]).unwrap();
        assert_eq!(dropped, 1);
        assert!(text.starts_with("1\n# be_id"), "{text}");
        assert!(text.contains("127.0.0.1_9101"));
        assert!(!text.contains("127.0.0.1_9102"));
        // Servers the configuration does not name are kept (HAProxy ignores them).
        let (text, dropped) = state_for(STATE, &[]).unwrap();
        assert_eq!(
            (dropped, ServerState::parse_all(&text).unwrap().len()),
            (0, 2)
        );
        assert!(state_for("Permission denied.\n", &[]).is_err());
    }

    #[test]
    fn reads_connections_in_use() {
        let text = "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]
service/s1 4/1 127.0.0.1 9201 - 5000 2 3 1 1 0 -1 1 1 0
service/s2 4/2 ::1 9202 - 5000 0 1 1 1 0 -1 1 1 0
";
        assert_eq!(
            used_connections(text, "service/s1").unwrap(),
            Some((2, "127.0.0.1".into()))
        );
        assert_eq!(
            used_connections(text, "service/s2").unwrap(),
            Some((0, "::1".into()))
        );
        assert_eq!(used_connections(text, "service/s3").unwrap(), None);
        assert!(used_connections("Can't find backend.\n", "b/s").is_err());
    }

    #[test]
    fn verify_accepts_the_intended_state() {
        let s = ServerState::parse_all(STATE).unwrap();
        let want = [server("127.0.0.1_9101", "127.0.0.1", 9101, Some(1))];
        // 9102 is in maintenance: fine while it drains, an error otherwise.
        verify("service", &want, &s, &["service/127.0.0.1_9102".into()]).unwrap();
        let err = verify("service", &want, &s, &[]).unwrap_err();
        assert!(err.contains("service/127.0.0.1_9102"), "{err}");
    }

    #[test]
    fn verify_names_each_mismatch() {
        let s = ServerState::parse_all(STATE).unwrap();
        let drain = ["service/127.0.0.1_9102".to_string()];
        let cases = [
            (
                server("127.0.0.1_9101", "127.0.0.1", 9101, Some(3)),
                "weight",
            ),
            (
                server("127.0.0.1_9101", "127.0.0.2", 9101, None),
                "127.0.0.2",
            ),
            (server("127.0.0.1_9103", "127.0.0.1", 9103, None), "missing"),
        ];
        for (w, needle) in cases {
            let err = verify("service", &[w], &s, &drain).unwrap_err();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        // Wanted enabled but in forced maintenance.
        let want = [
            server("127.0.0.1_9101", "127.0.0.1", 9101, None),
            server("127.0.0.1_9102", "127.0.0.1", 9102, Some(7)),
        ];
        let err = verify("service", &want, &s, &[]).unwrap_err();
        assert!(err.contains("maintenance"), "{err}");
    }

    #[tokio::test]
    async fn exec_tells_success_from_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            for answer in ["New server registered.\n\n", "\n", "No such server.\n\n"] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await.unwrap();
                s.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        let sock = RuntimeSocket {
            path,
            timeout: Duration::from_secs(2),
        };
        sock.exec("add server b/s 10.0.0.1:80").await.unwrap();
        sock.exec("enable server b/s").await.unwrap();
        let err = sock.exec("del server b/x").await.unwrap_err();
        assert!(
            err.contains("del server b/x") && err.contains("No such server"),
            "{err}"
        );
    }
}

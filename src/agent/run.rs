//! The agent's main loop: one task owns every registration of the host and reconciles it
//! whenever something happens — a Docker event, a health check result, a key deleted in etcd,
//! a lost lease, the periodic resync — so every path ends in the same place: etcd holds
//! exactly the healthy, running, opted-in containers' keys.
//!
//! A container event is handled by inspecting the container again (a `die` or `destroy` takes
//! its keys away at once, without asking), so a missed or duplicated event does no harm; every
//! (re)connection to the engine and every `--resync` lists and inspects all containers. etcd
//! work that fails is retried with backoff; until it works, the keys that etcd holds stay.

use super::args::AgentArgs;
use super::engine::{DockerAddr, Engine};
use super::follow::{follow_docker, watch_deletes, Deleted, DockerInput};
use super::labels::{plan, CheckKind, Defaults, DockerHealth, Facts, Problem, Wanted};
use super::metrics::AgentMetrics;
use super::registrar::{Put, Registrar};
use crate::core::backoff::Backoff;
use crate::core::endpoint::EndpointValue;
use crate::core::keys::ServicePrefix;
use crate::core::process::Fatal;
use crate::sidekick::check::{probe, Check, Health, Hysteresis};
use crate::sidekick::tasks::Notice;
use anyhow::{anyhow, Context as _};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How often a container that has not passed a check yet is probed (up to its interval), so a
/// new container is registered moments after its app listens.
const FIRST_PROBE_EVERY: Duration = Duration::from_millis(50);
/// Inspections in flight during a full resync.
const INSPECT_CONCURRENCY: usize = 16;
/// Signals that stop a container (SIGINT, SIGKILL, SIGTERM; not SIGQUIT, a JVM's thread
/// dump): a `kill` event with one of them takes the container's keys away at once.
const STOP_SIGNALS: [i32; 3] = [2, 9, 15];
/// How long a container sent a stop signal stays out while it keeps running: one that is
/// still running after this survived the signal (it traps it) and is registered again.
const STOP_HOLD: Duration = Duration::from_secs(30);

/// One check result of one registration.
struct CheckResult {
    key: String,
    generation: u64,
    outcome: Result<(), String>,
}

/// One key the agent registers while its container is healthy.
struct Entry {
    container: String,
    name: String,
    wanted: Wanted,
    value: String,
    health: Hysteresis,
    /// Whether a check has ever passed: before that a failure keeps it unknown (the app is
    /// starting), not down.
    seen_up: bool,
    generation: u64,
    checker: Option<JoinHandle<()>>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        if let Some(c) = self.checker.take() {
            c.abort();
        }
    }
}

/// What the agent tracks of one container.
#[derive(Default)]
struct Tracked {
    keys: Vec<String>,
    problems: Vec<Problem>,
}

struct Agent {
    root: String,
    agent_id: String,
    ip: IpAddr,
    defaults: Defaults,
    registrar: Registrar,
    entries: HashMap<String, Entry>,
    containers: HashMap<String, Tracked>,
    /// Keys whose etcd state may differ from what is wanted.
    dirty: BTreeSet<String>,
    results: mpsc::Sender<CheckResult>,
    generation: u64,
    engine: Option<Engine>,
    /// Whether the previous run's keys have been settled (after the first full resync).
    adopted: bool,
    /// Containers sent a stop signal, and when: not registered until they start again, die,
    /// or are still running [`STOP_HOLD`] later.
    stopping: HashMap<String, Instant>,
    metrics: std::sync::Arc<AgentMetrics>,
    /// Connections to the engine so far.
    connections: u64,
}

/// Runs the agent until `shutdown` completes. Stopping leaves the keys to the lease: they
/// expire one TTL later unless a restarted agent adopts them first (an upgrade keeps them).
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> Result<(), Fatal> {
    args.etcd.validate().map_err(Fatal::usage)?;
    let root = ServicePrefix::parse(&args.root)
        .map_err(|e| Fatal::usage(anyhow!("--root: {e}")))?
        .as_str()
        .to_string();
    let docker = DockerAddr::parse(&args.docker).map_err(|e| Fatal::usage(anyhow!(e)))?;
    let ip = args.ip;
    if ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
    {
        return Err(Fatal::usage(anyhow!(
            "--ip {ip} cannot be reached from other hosts: pass the host address the proxy connects to"
        )));
    }
    let agent_id = args.agent_id.clone().unwrap_or_else(|| ip.to_string());
    crate::core::endpoint::check_tag(&agent_id).map_err(|_| {
        Fatal::usage(anyhow!(
            "--agent-id {agent_id:?}: may hold only ASCII letters, digits and . _ - : = / +"
        ))
    })?;
    if let Some(bad) = args
        .label_filter
        .iter()
        .find(|f| f.split('=').next().is_none_or(|k| k.trim().is_empty()))
    {
        return Err(Fatal::usage(anyhow!(
            "--label-filter {bad:?}: expected KEY or KEY=VALUE"
        )));
    }
    if args.ttl < Duration::from_secs(2) {
        return Err(Fatal::usage(anyhow!("--ttl must be at least 2s")));
    }
    let defaults = Defaults {
        interval: args.interval,
        timeout: args.timeout,
        rise: args.rise,
        fall: args.fall,
    };

    let metrics = std::sync::Arc::new(AgentMetrics::new());
    let (server_stop, server_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = match args.metrics_addr {
        Some(addr) => {
            let listener = crate::core::serve::bind(addr).await.map_err(Fatal::usage)?;
            let status: std::sync::Arc<dyn crate::core::serve::Status> = metrics.clone();
            let stop = async {
                let _ = server_stopped.await;
            };
            Some(tokio::spawn(async move {
                if let Err(e) = crate::core::serve::serve(listener, status, stop).await {
                    tracing::error!(error = %format!("{e:#}"), "metrics server failed");
                }
            }))
        }
        None => None,
    };
    let (notice_tx, mut notices) = mpsc::channel(64);
    let client = connect(&args).await;
    let deadline = args.etcd.etcd_timeout;
    let mut registrar = Registrar::new(client.clone(), args.ttl, deadline, notice_tx.clone());
    let mut backoff = Backoff::default();
    loop {
        match registrar.scan_previous(&root, &agent_id, ip).await {
            Ok(n) => {
                tracing::info!(
                    root,
                    agent_id,
                    keys = n,
                    "found this agent's keys from before"
                );
                break;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, "etcd not answering; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
    let (results_tx, mut results) = mpsc::channel(256);
    let mut agent = Agent {
        root: root.clone(),
        agent_id,
        ip,
        defaults,
        registrar,
        entries: HashMap::new(),
        containers: HashMap::new(),
        dirty: BTreeSet::new(),
        results: results_tx,
        generation: 0,
        engine: None,
        adopted: false,
        stopping: HashMap::new(),
        metrics: metrics.clone(),
        connections: 0,
    };

    let (docker_tx, mut docker_rx) = mpsc::channel(1024);
    let follower = tokio::spawn(follow_docker(docker, args.label_filter.clone(), docker_tx));
    let (deleted_tx, mut deleted) = mpsc::channel(256);
    let watcher = tokio::spawn(watch_deletes(client, root, deadline, notice_tx, deleted_tx));
    let mut resync = tokio::time::interval_at(Instant::now() + args.resync, args.resync);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut retry_at: Option<Instant> = None;
    // SIGHUP never stops the agent: it resyncs everything at once.
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    tokio::pin!(shutdown);
    loop {
        let hup = async {
            match hangup.as_mut() {
                Some(h) => {
                    h.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        let retry_sleep = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            Some(input) = docker_rx.recv() => agent.docker_input(input).await,
            Some(r) = results.recv() => agent.check_result(r),
            Some(n) = notices.recv() => agent.notice(n).await,
            Some(d) = deleted.recv() => agent.deleted(d),
            _ = resync.tick() => agent.resync().await,
            () = hup => {
                tracing::info!("SIGHUP: resyncing every container");
                agent.resync().await;
            }
            () = retry_sleep => {}
        }
        // Take whatever else is already waiting before talking to etcd (a burst of events).
        while let Ok(r) = results.try_recv() {
            agent.check_result(r);
        }
        let synced = agent.sync().await;
        agent.observe(synced.is_err());
        match synced {
            Ok(()) => {
                retry.reset();
                retry_at = None;
            }
            Err(e) => {
                agent.metrics.etcd_retries.inc();
                let delay = retry.next_delay();
                tracing::warn!(error = %e, retry_in = ?delay, pending = agent.dirty.len(), "etcd update failed; retrying (the keys etcd holds stay)");
                retry_at = Some(Instant::now() + delay);
            }
        }
    }
    tracing::info!(
        keys = agent.registrar.held(),
        "stopping; the keys stay until the lease expires or a restarted agent adopts them"
    );
    follower.abort();
    watcher.abort();
    agent.registrar.stop();
    let _ = server_stop.send(());
    if let Some(server) = server {
        let _ = server.await;
    }
    Ok(())
}

/// Connects to etcd, retrying until it answers.
async fn connect(args: &AgentArgs) -> etcd_client::Client {
    let mut backoff = Backoff::default();
    loop {
        match args.etcd.connect().await {
            Ok(c) => return c,
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, endpoints = %args.etcd.endpoints.join(","), "etcd unreachable; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

impl Agent {
    async fn docker_input(&mut self, input: DockerInput) {
        match input {
            DockerInput::Connected(engine) => {
                tracing::info!(docker = %engine.addr().shown().display(), "connected to the Docker engine");
                self.engine = Some(engine);
                self.connections += 1;
                if self.connections > 1 {
                    self.metrics.docker_reconnects.inc();
                }
                self.metrics.docker_connected.set(1);
                self.metrics.synced.set(0);
                self.resync().await;
            }
            DockerInput::Lost => {
                self.engine = None;
                self.metrics.docker_connected.set(0);
            }
            DockerInput::Event { id, action, signal } => {
                tracing::debug!(container = %short(&id), action, ?signal, "Docker event");
                match action.as_str() {
                    // `docker stop`, `docker kill` and Ctrl-C: out of rotation before the app
                    // even sees the signal, so it drains instead of failing requests.
                    "kill" if signal.is_some_and(|s| STOP_SIGNALS.contains(&s)) => {
                        self.stopping.entry(id.clone()).or_insert_with(Instant::now);
                    }
                    "start" => {
                        self.stopping.remove(&id);
                    }
                    _ => {}
                }
                // Every event is answered by what the engine says now, so an event seen late,
                // twice or out of order changes nothing wrong.
                let facts = match self.engine.clone() {
                    Some(engine) => match engine.facts(&id).await {
                        Ok(facts) => facts,
                        Err(e) if action == "die" || action == "destroy" => {
                            tracing::debug!(container = %short(&id), error = %e, "inspect failed after die");
                            None
                        }
                        Err(e) => {
                            tracing::warn!(container = %short(&id), error = %e, "inspecting a container failed; the next resync tries again");
                            return;
                        }
                    },
                    None if action == "die" || action == "destroy" => None,
                    None => return,
                };
                if facts.as_ref().is_none_or(|f| !f.running) {
                    self.stopping.remove(&id);
                }
                self.container(&id, facts);
            }
        }
    }

    /// Lists and inspects every container and reconciles all of them, then compares the
    /// lease's keys in etcd with what is wanted.
    async fn resync(&mut self) {
        let Some(engine) = self.engine.clone() else {
            return;
        };
        let started = Instant::now();
        let ids = match engine.running().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing containers failed; the next resync tries again");
                return;
            }
        };
        let mut facts: Vec<(String, Option<Facts>)> = Vec::with_capacity(ids.len());
        let mut tasks = JoinSet::new();
        let mut queue = ids.into_iter();
        let mut failed = false;
        loop {
            while tasks.len() < INSPECT_CONCURRENCY {
                let Some(id) = queue.next() else { break };
                let engine = engine.clone();
                tasks.spawn(async move {
                    let f = engine.facts(&id).await;
                    (id, f)
                });
            }
            match tasks.join_next().await {
                Some(Ok((id, Ok(f)))) => facts.push((id, f)),
                Some(Ok((id, Err(e)))) => {
                    tracing::warn!(container = %short(&id), error = %e, "inspecting a container failed");
                    failed = true;
                }
                Some(Err(_)) => failed = true,
                None => break,
            }
        }
        if failed {
            // A partial view must not remove the containers that could not be inspected.
            for (id, f) in facts {
                self.container(&id, f);
            }
            return;
        }
        let seen: HashSet<String> = facts.iter().map(|(id, _)| id.clone()).collect();
        let n = facts.len();
        for (id, f) in facts {
            self.container(&id, f);
        }
        let gone: Vec<String> = self
            .containers
            .keys()
            .filter(|id| !seen.contains(*id))
            .cloned()
            .collect();
        for id in gone {
            self.container(&id, None);
        }
        if !self.adopted {
            self.adopted = true;
            for key in self.registrar.unadopted() {
                if self.entries.contains_key(&key) {
                    continue;
                }
                tracing::info!(
                    key,
                    "container gone while the agent was down; deleting its key"
                );
                self.dirty.insert(key);
            }
        }
        // Keys wanted but not held (another lease had them) are tried again.
        for (key, e) in &self.entries {
            if e.health.health() == Health::Up && !self.registrar.holds(key, &e.value) {
                self.dirty.insert(key.clone());
            }
        }
        self.audit().await;
        self.metrics.synced.set(1);
        self.metrics
            .resync_seconds
            .observe(started.elapsed().as_secs_f64());
        tracing::debug!(containers = n, took = ?started.elapsed(), "resynced");
    }

    /// Compares the lease's keys in etcd with what is held.
    async fn audit(&mut self) {
        match self.registrar.audit().await {
            Ok(extra) => {
                for key in extra {
                    self.dirty.insert(key);
                }
                for (key, e) in &self.entries {
                    if e.health.health() == Health::Up && !self.registrar.holds(key, &e.value) {
                        self.dirty.insert(key.clone());
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the lease's keys failed"),
        }
    }

    async fn notice(&mut self, notice: Notice) {
        match notice {
            Notice::LeaseLost(id) => {
                self.registrar.forget_lease(id);
                let up: Vec<String> = self.wanted_up().collect();
                self.dirty.extend(up);
            }
            // The agent's deletes come from its own watch ([`Agent::deleted`]).
            Notice::KeyDeleted(_) => {}
            Notice::Resync => self.audit().await,
        }
    }

    fn deleted(&mut self, d: Deleted) {
        if self.registrar.deleted(&d.key, d.revision) {
            tracing::warn!(key = d.key, "key deleted by someone else; putting it back");
            self.dirty.insert(d.key);
        }
    }

    /// Sets the gauges from the state after a reconcile.
    fn observe(&self, behind: bool) {
        let m = &self.metrics;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        m.containers.set(gauge(
            self.containers
                .values()
                .filter(|t| !t.keys.is_empty())
                .count(),
        ));
        m.refused.set(gauge(
            self.containers
                .values()
                .filter(|t| !t.problems.is_empty())
                .count(),
        ));
        m.endpoints.set(gauge(self.entries.len()));
        m.registered.set(gauge(self.registrar.held()));
        m.behind.set(i64::from(behind));
    }

    fn wanted_up(&self) -> impl Iterator<Item = String> + '_ {
        self.entries
            .iter()
            .filter(|(_, e)| e.health.health() == Health::Up)
            .map(|(k, _)| k.clone())
    }

    /// Reconciles one container with what Docker said of it (`None`: gone).
    fn container(&mut self, id: &str, facts: Option<Facts>) {
        if let Some(since) = self.stopping.get(id).copied() {
            if since.elapsed() >= STOP_HOLD && facts.as_ref().is_some_and(|f| f.running) {
                tracing::warn!(container = %short(id), after = ?since.elapsed(), "container still running after a stop signal (it traps it); registering it again");
                self.stopping.remove(id);
            }
        }
        let selected = |f: &&Facts| self.engine.as_ref().is_none_or(|e| e.selects(f));
        let plan = facts
            .as_ref()
            .filter(|_| !self.stopping.contains_key(id))
            .filter(selected)
            .map(|f| plan(f, &self.defaults, self.ip))
            .unwrap_or_default();
        let tracked = self.containers.remove(id).unwrap_or_default();
        if plan.problems != tracked.problems {
            for p in &plan.problems {
                tracing::warn!(container = %short(id), "{p}");
            }
        }
        let mut keys = Vec::with_capacity(plan.wanted.len());
        for wanted in plan.wanted {
            let Some(facts) = facts.as_ref() else { break };
            let Some(key) = self.key(&wanted) else {
                continue;
            };
            let value = self.value(facts, &wanted);
            keys.push(key.clone());
            let same = self
                .entries
                .get(&key)
                .is_some_and(|e| e.container == id && e.wanted == wanted && e.value == value);
            if !same {
                self.add(key.clone(), facts, wanted, value);
            }
            if let Some(e) = self.entries.get_mut(&key) {
                let changed = match e.wanted.check.kind {
                    CheckKind::Docker => {
                        let ok = facts.health == Some(DockerHealth::Healthy);
                        e.health.observe(ok).is_some()
                    }
                    _ => false,
                };
                if changed {
                    tracing::info!(key, container = %e.name, health = ?e.health.health(), "Docker health changed");
                    self.dirty.insert(key.clone());
                }
            }
        }
        for old in &tracked.keys {
            if !keys.contains(old) && self.entries.get(old).is_some_and(|e| e.container == id) {
                if let Some(e) = self.entries.remove(old) {
                    if e.health.health() == Health::Up {
                        tracing::info!(key = %old, container = %e.name, "container stopped, paused or relabelled; deregistering");
                    }
                }
                self.dirty.insert(old.clone());
            }
        }
        if !keys.is_empty() || !plan.problems.is_empty() {
            self.containers.insert(
                id.to_string(),
                Tracked {
                    keys,
                    problems: plan.problems,
                },
            );
        }
    }

    fn key(&self, wanted: &Wanted) -> Option<String> {
        let prefix = ServicePrefix::parse(&format!("{}/{}", self.root, wanted.service)).ok()?;
        Some(prefix.endpoint_key(wanted.addr))
    }

    fn value(&self, facts: &Facts, wanted: &Wanted) -> String {
        let hostname =
            Some(facts.hostname.clone()).filter(|h| crate::core::endpoint::check_tag(h).is_ok());
        let value = EndpointValue {
            agent: Some(self.agent_id.clone()),
            container: Some(facts.short_id().to_string())
                .filter(|c| crate::core::endpoint::check_tag(c).is_ok()),
            hostname,
            tags: wanted.tags.clone(),
            weight: wanted.weight.map(u64::from),
        };
        value.to_json().unwrap_or_else(|_| "running".to_string())
    }

    /// Starts tracking `key`: adopted at once when the previous run held it, registered at
    /// once when the check needs no probe, else probed.
    fn add(&mut self, key: String, facts: &Facts, wanted: Wanted, value: String) {
        self.generation += 1;
        let mut entry = Entry {
            container: facts.id.clone(),
            name: facts.name.clone(),
            // Docker applies its own retries; its status is taken as it is.
            health: match wanted.check.kind {
                CheckKind::Docker => Hysteresis::new(1, 1),
                _ => Hysteresis::new(wanted.check.rise, wanted.check.fall),
            },
            seen_up: false,
            generation: self.generation,
            checker: None,
            wanted,
            value,
        };
        let adopted = self.registrar.is_previous(&key);
        match &entry.wanted.check.kind {
            CheckKind::None => {
                entry.health.observe(true);
            }
            CheckKind::Docker => {}
            CheckKind::Probe(check) => {
                if adopted {
                    entry.health.observe(true);
                    entry.seen_up = true;
                }
                // An adopted key's container has passed its checks already: its first probe
                // comes at a random point of the interval, so a restarted agent does not probe
                // every container at the same moment.
                let first = if adopted {
                    entry.wanted.check.interval.mul_f64(fastrand::f64())
                } else {
                    Duration::ZERO
                };
                entry.checker = Some(tokio::spawn(checker(
                    key.clone(),
                    entry.generation,
                    check.clone(),
                    entry.wanted.addr,
                    (first, entry.wanted.check.interval),
                    entry.wanted.check.timeout,
                    self.results.clone(),
                )));
            }
        }
        if adopted {
            tracing::info!(key, container = %entry.name, "adopting the key registered before the agent restarted");
        }
        self.dirty.insert(key.clone());
        self.entries.insert(key, entry);
    }

    fn check_result(&mut self, r: CheckResult) {
        let Some(e) = self.entries.get_mut(&r.key) else {
            return;
        };
        if e.generation != r.generation {
            return;
        }
        let ok = r.outcome.is_ok();
        self.metrics.check(ok);
        if !ok && !e.seen_up {
            return;
        }
        e.seen_up |= ok;
        if let Some(now) = e.health.observe(ok) {
            match (&now, &r.outcome) {
                (Health::Up, _) => {
                    tracing::info!(key = %r.key, container = %e.name, "healthy; registering")
                }
                (_, Err(why)) => {
                    tracing::warn!(key = %r.key, container = %e.name, why, "unhealthy; deregistering")
                }
                _ => {}
            }
            self.dirty.insert(r.key);
        }
    }

    /// Brings etcd in line with what is wanted for every dirty key.
    async fn sync(&mut self) -> anyhow::Result<()> {
        while let Some(key) = self.dirty.pop_first() {
            let want = self
                .entries
                .get(&key)
                .filter(|e| e.health.health() == Health::Up)
                .map(|e| e.value.clone());
            let done = match &want {
                Some(value) => self.registrar.put(&key, value).await.map(|p| {
                    if p == Put::Held {
                        tracing::debug!(key, "registered");
                    }
                }),
                None => self.registrar.delete(&key).await,
            };
            if let Err(e) = done {
                self.dirty.insert(key.clone());
                return Err(e).with_context(|| format!("etcd key \"{key}\""));
            }
        }
        Ok(())
    }
}

/// Probes `addr` for ever after `first`, every `interval` (every [`FIRST_PROBE_EVERY`] until
/// the first success), reporting each result.
async fn checker(
    key: String,
    generation: u64,
    check: Check,
    addr: SocketAddr,
    (first, interval): (Duration, Duration),
    timeout: Duration,
    results: mpsc::Sender<CheckResult>,
) {
    tokio::time::sleep(first).await;
    let mut passed = false;
    loop {
        let outcome = probe(&check, addr, timeout).await;
        passed |= outcome.is_ok();
        let r = CheckResult {
            key: key.clone(),
            generation,
            outcome,
        };
        if results.send(r).await.is_err() {
            return;
        }
        let next = if passed {
            interval
        } else {
            interval.min(FIRST_PROBE_EVERY)
        };
        tokio::time::sleep(next).await;
    }
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

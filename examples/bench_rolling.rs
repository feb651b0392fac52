//! Benchmark of a rolling restart of 1,000 instances, end to end: a three-member etcd cluster,
//! HAProxy 2.6 in master-worker mode (`haproxy/haproxy.cfg` plus the rendered file), the release
//! `dockreg-haproxy` with the runtime API (`--runtime-socket`, every etcd member in `--etcd`),
//! and 1,000 simulated instances, all on this machine. Prints Markdown tables and the command
//! lines used; asserts nothing.
//!
//! ```text
//! cargo build --release --bin dockreg-haproxy --examples
//! target/release/examples/bench_rolling                     # 1,000 instances in 60 s (≈ 2 min)
//! BENCH_ROLLING_INSTANCES=200 BENCH_ROLLING_SECS=12 target/release/examples/bench_rolling
//! ```
//!
//! Run it from the repository root. `BENCH_KEEP=1` keeps the run's folder (logs of etcd,
//! HAProxy and the watcher) and prints where it is.
//!
//! **The instances** are not containers: a harness in this process registers each one the way
//! the sidekick does (`src/sidekick/register.rs`, `tasks.rs`): its own lease with the
//! sidekick's default TTL (10 s), kept alive every TTL/3 on a keepalive stream of its own, a
//! watch on its own key, and the key `/<service>/127.0.0.1:<port>` put under the lease in a
//! transaction that succeeds only while the key is free, with the JSON value the sidekick
//! writes (`EndpointValue`: container id and host name). Stopping one revokes its lease, as
//! the sidekick does on SIGTERM: etcd deletes the key with it. The instances share 10 etcd
//! connections (a real fleet opens one per sidekick). Instance `i` belongs to service
//! `i mod 50`: `service` (the base config's frontend routes there), whose 20 instances are
//! real HTTP servers (`demo_backend`, one process each), and `svc01`…`svc49` on closed ports
//! of 127.0.0.1, rendered by the shipped per-service template (`templates/per-service.cfg.tera`;
//! `BENCH_ROLLING_TEMPLATE=<file>` renders another) with ` check` left out for them, so no
//! health check and no request ever reaches a closed port.
//!
//! **The run.** etcd idles for 10 s (its own cost, raft heartbeats and the like, is not counted
//! as the instances'). All instances register, then the watcher starts (one reload: every
//! backend is new). A quiet phase of 20 s runs nothing but keepalives: keepalive requests per
//! second and etcd's CPU. Then `wrk` loads the frontend (`service`) and every instance is restarted once,
//! one every 60 ms (`BENCH_ROLLING_SECS` / `BENCH_ROLLING_INSTANCES`), like a rolling deploy
//! with a surge of one: the new instance (a new port; for `service`, a new `demo_backend`
//! already listening) registers, 30 ms later the old one revokes its lease; an old
//! `demo_backend` keeps serving until HAProxy no longer lists its server (the watcher deletes a
//! removed server once its connections are done), then stops.
//!
//! **What is measured.** Change → routed: from issuing each etcd write (the put of a new
//! instance's key, the revoke of an old one's lease) until HAProxy's admin socket
//! (`show servers state <backend>`, polled by a thread of its own with this benchmark's own
//! parser) shows the server in rotation or out of it. `wrk`'s failed requests (socket errors +
//! non-2xx), HAProxy's reloads (`show proc` on the master socket) during the restart, etcd's CPU
//! (utime + stime of the three members from `/proc/<pid>/stat`), the watcher's CPU and peak
//! RSS (`VmHWM`), the keepalive load, and under the tables an extrapolation on paper to 10,000
//! and 100,000 instances from these figures.

#[path = "common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use common::rig::{admin, check_built, EtcdKind, Rig, BACKEND_BIN, BASE_CONFIG, ID_PREFIX};
use common::server_state::{all_servers, server_state};
use common::wrk::Wrk;
use common::{cpu_seconds, max, ms, p50_p99, peak_rss_kb, WATCHER};
use dockreg::core::endpoint::EndpointValue;
use dockreg_testkit::backends::DemoBackends;
use etcd_client::{Client, Compare, CompareOp, PutOptions, Txn, TxnOp};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::task::{JoinHandle, JoinSet};

/// The template the watcher renders, before ` check` is made conditional.
const PER_SERVICE_TEMPLATE: &str = "templates/per-service.cfg.tera";

/// The template to render: `BENCH_ROLLING_TEMPLATE`, or the shipped per-service one.
fn template_source() -> String {
    std::env::var("BENCH_ROLLING_TEMPLATE").unwrap_or_else(|_| PER_SERVICE_TEMPLATE.into())
}

const DEFAULT_INSTANCES: usize = 1000;
const DEFAULT_SECS: f64 = 60.0;
/// `service` and `svc01`…`svc49`.
const SERVICES: usize = 50;
/// The sidekick's default `--ttl` (src/sidekick/args.rs); it keeps the lease alive every TTL/3.
const TTL: Duration = Duration::from_secs(10);
/// etcd connections the simulated instances share.
const CONNECTIONS: usize = 10;
/// Registrations at once while the fleet starts.
const START_CONCURRENCY: usize = 64;
/// The phase with nothing but keepalives.
const QUIET: Duration = Duration::from_secs(20);
/// etcd alone, before any instance: the cluster's own cost (raft heartbeats and the like).
const IDLE: Duration = Duration::from_secs(10);
/// How long a change may take to show in HAProxy before it counts as missed.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an old `demo_backend` waits for HAProxy to delete its server (the watcher's
/// `--drain-timeout` is 30 s) before it stops anyway.
const DRAIN_WAIT: Duration = Duration::from_secs(40);
/// Closed ports of the simulated instances: `BASE + generation × instances + i`, below the
/// ephemeral range the real backends' free ports come from.
const CLOSED_PORT_BASE: usize = 10_000;
const EPHEMERAL_START: usize = 32_768;
/// `wrk` runs this long before the first change, and after the last one.
const WRK_LEAD: Duration = Duration::from_secs(2);
const WRK_TAIL: Duration = Duration::from_secs(5);
const WRK_CONNECTIONS: &str = "-c10";
/// Extrapolation: instances, and how many watchers (HAProxy hosts) the changes fan out to.
const PAPER_SIZES: [usize; 2] = [10_000, 100_000];
const PAPER_WATCHERS: [usize; 3] = [1, 10, 100];

fn service_name(s: usize) -> String {
    if s == 0 {
        "service".to_string()
    } else {
        format!("svc{s:02}")
    }
}

// ---------------------------------------------------------------------------------------------
// The simulated sidekicks.

/// The instances' etcd connections and what their keepalives did.
struct Fleet {
    clients: Vec<Client>,
    next: AtomicUsize,
    /// Keepalive requests sent.
    keepalives: Arc<AtomicU64>,
    /// Keepalive streams that failed (a lease no longer kept alive).
    keepalive_failures: Arc<AtomicU64>,
}

/// One incarnation of an instance: its key under its own lease, and the tasks that keep the
/// lease alive and watch the key; a real HTTP server for an instance of `service`.
struct Instance {
    service: usize,
    key: String,
    /// Its server name in HAProxy (`127.0.0.1_<port>`).
    server: String,
    lease: i64,
    client: Client,
    tasks: Vec<JoinHandle<()>>,
    backend: Option<DemoBackends>,
}

impl Fleet {
    async fn connect(urls: &[String]) -> Result<Fleet> {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(
                Client::connect(urls, None)
                    .await
                    .context("connecting to etcd")?,
            );
        }
        Ok(Fleet {
            clients,
            next: AtomicUsize::new(0),
            keepalives: Arc::new(AtomicU64::new(0)),
            keepalive_failures: Arc::new(AtomicU64::new(0)),
        })
    }

    fn client(&self) -> Client {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.clients.len();
        self.clients[i].clone()
    }

    /// Starts incarnation `generation` of instance `i`: for `service` a `demo_backend` first,
    /// listening before anything is registered; then registers it as the sidekick does (lease,
    /// keepalive, watch on the own key, the key put only while it is free). `before_put` is
    /// called just before the put is issued.
    async fn start(
        &self,
        i: usize,
        generation: usize,
        n: usize,
        before_put: impl FnOnce(&str, &str),
    ) -> Result<Instance> {
        let service = i % SERVICES.min(n);
        let (addr, backend) = if service == 0 {
            let b = DemoBackends::start(Path::new(BACKEND_BIN), ID_PREFIX, 1).await;
            (b.addrs[0].to_string(), Some(b))
        } else {
            let port = CLOSED_PORT_BASE + generation * n + i;
            (format!("127.0.0.1:{port}"), None)
        };
        let name = service_name(service);
        let key = format!("/{name}/{addr}");
        let value = EndpointValue {
            container: Some(format!("{:012x}", 0xc0de_0000_0000 + generation * n + i)),
            hostname: Some(format!("{name}-{i}-{generation}")),
            ..EndpointValue::default()
        }
        .to_json()?;
        let mut client = self.client();
        let lease = client
            .lease_grant(TTL.as_secs() as i64, None)
            .await
            .context("granting a lease")?
            .id();
        let mut tasks = vec![tokio::spawn(keep_alive(
            client.clone(),
            lease,
            self.keepalives.clone(),
            self.keepalive_failures.clone(),
        ))];
        tasks.push(tokio::spawn(watch_key(client.clone(), key.clone())));
        let server = addr.replace(':', "_");
        before_put(&name, &server);
        let put = TxnOp::put(
            key.as_str(),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([put]);
        let resp = client.txn(txn).await.context("putting a key")?;
        if !resp.succeeded() {
            bail!("{key} exists already");
        }
        Ok(Instance {
            service,
            key,
            server,
            lease,
            client,
            tasks,
            backend,
        })
    }
}

impl Instance {
    /// Stops as the sidekick does on SIGTERM: keepalive and watch stopped, the lease revoked
    /// (etcd deletes the key with it). The HTTP server, if any, is left running.
    async fn revoke(&mut self) -> Result<()> {
        for t in &self.tasks {
            t.abort();
        }
        self.client
            .lease_revoke(self.lease)
            .await
            .with_context(|| format!("revoking the lease of {}", self.key))?;
        Ok(())
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The sidekick's keepalive: one stream per lease, a request every TTL/3, each answer awaited.
async fn keep_alive(mut client: Client, lease: i64, sent: Arc<AtomicU64>, failed: Arc<AtomicU64>) {
    let every = TTL / 3;
    let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
        failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    loop {
        if keeper.keep_alive().await.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        sent.fetch_add(1, Ordering::Relaxed);
        match tokio::time::timeout(TTL, stream.message()).await {
            Ok(Ok(Some(r))) if r.ttl() > 0 => {}
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// The sidekick's watch on its own key (it puts the key back if someone else deletes it; here
/// nobody does, so the events are only read).
async fn watch_key(mut client: Client, key: String) {
    if let Ok(mut stream) = client.watch(key, None).await {
        while let Ok(Some(_)) = stream.message().await {}
    }
}

// ---------------------------------------------------------------------------------------------
// Measuring HAProxy: a thread polls `show servers state <backend>` for the changes in flight.

/// A change to be seen in HAProxy.
struct Expect {
    backend: String,
    server: String,
    /// In rotation (a put), or out of it (a revoke).
    add: bool,
    t0: Instant,
}

/// When a change was seen: milliseconds from its write, `None` when not within the timeout.
struct Seen {
    backend: String,
    add: bool,
    ms: Option<f64>,
}

struct Monitor {
    tx: mpsc::Sender<Expect>,
    thread: std::thread::JoinHandle<Vec<Seen>>,
}

impl Monitor {
    fn start(admin: PathBuf) -> Monitor {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || monitor(&admin, &rx));
        Monitor { tx, thread }
    }

    /// Waits until every change sent has been seen or timed out (every sender is dropped).
    fn finish(self) -> Result<Vec<Seen>> {
        drop(self.tx);
        self.thread
            .join()
            .map_err(|_| anyhow!("the monitor thread panicked"))
    }
}

/// One command on the admin socket, blocking (the monitor's own thread).
fn admin_blocking(path: &Path, cmd: &str) -> std::io::Result<String> {
    let mut s = UnixStream::connect(path)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(format!("{cmd}\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn monitor(admin: &Path, rx: &mpsc::Receiver<Expect>) -> Vec<Seen> {
    let mut pending: Vec<Expect> = Vec::new();
    let mut seen = Vec::new();
    let mut open = true;
    loop {
        if pending.is_empty() {
            if !open {
                return seen;
            }
            match rx.recv() {
                Ok(e) => pending.push(e),
                Err(_) => open = false,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(e) => pending.push(e),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
        }
        let backends: BTreeSet<String> = pending.iter().map(|e| e.backend.clone()).collect();
        for b in backends {
            let Ok(text) = admin_blocking(admin, &format!("show servers state {b}")) else {
                continue;
            };
            let now = Instant::now();
            pending.retain(|e| {
                if e.backend != b {
                    return true;
                }
                let routed = server_state(&text, &e.server).is_some_and(|s| s.in_rotation());
                let took = if routed == e.add {
                    Some(ms(now - e.t0))
                } else if now - e.t0 > CHANGE_TIMEOUT {
                    None
                } else {
                    return true;
                };
                seen.push(Seen {
                    backend: e.backend.clone(),
                    add: e.add,
                    ms: took,
                });
                false
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

// ---------------------------------------------------------------------------------------------
// CPU over a phase.

/// CPU seconds of a set of processes at one instant.
struct CpuMark {
    at: Instant,
    secs: Vec<f64>,
}

fn cpu_mark(pids: &[u32]) -> CpuMark {
    CpuMark {
        at: Instant::now(),
        secs: pids
            .iter()
            .map(|&p| cpu_seconds(p).unwrap_or(f64::NAN))
            .collect(),
    }
}

/// Each process's CPU between two marks, in % of one core.
fn cpu_percent(from: &CpuMark, to: &CpuMark) -> Vec<f64> {
    let wall = (to.at - from.at).as_secs_f64();
    from.secs
        .iter()
        .zip(&to.secs)
        .map(|(a, b)| (b - a) / wall * 100.0)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Figures {
    n: usize,
    secs: f64,
    command: String,
    wrk_command: String,
    /// etcd members: which one leads.
    leader: Option<usize>,
    start_to_reload_s: f64,
    quiet_keepalives_per_s: f64,
    idle_etcd: Vec<f64>,
    quiet_etcd: Vec<f64>,
    quiet_watcher: f64,
    seen: Vec<Seen>,
    restart_took_s: f64,
    restart_keepalives_per_s: f64,
    restart_etcd: Vec<f64>,
    restart_watcher: f64,
    wrk: common::wrk::WrkResult,
    wrk_secs: f64,
    reloads: u64,
    failed_reloads: u64,
    runtime_applies: usize,
    reload_applies: usize,
    warnings: usize,
    errors: usize,
    problems: Vec<String>,
    keepalive_failures: u64,
    watcher_peak_mb: f64,
    drains: Vec<f64>,
    drains_timed_out: usize,
    end_in_rotation: usize,
    end_old_listed: usize,
}

async fn run(n: usize, secs: f64) -> Result<Figures> {
    let services = SERVICES.min(n);
    let rig = Rig::start_with("rolling", EtcdKind::Cluster).await?;
    let urls: Vec<String> = rig.etcd.iter().map(|e| e.url()).collect();
    let etcd_pids: Vec<u32> = rig.etcd.iter().filter_map(|e| e.pid()).collect();
    let leader = etcd_leader(&urls).await;
    eprintln!(
        "bench: rolling: {} s of an idle etcd cluster ...",
        IDLE.as_secs()
    );
    let i0 = cpu_mark(&etcd_pids);
    tokio::time::sleep(IDLE).await;
    let idle_etcd = cpu_percent(&i0, &cpu_mark(&etcd_pids));

    // The shipped per-service template (`BENCH_ROLLING_TEMPLATE` names another, e.g. the
    // whole-services default for a watcher older than per-service rendering), with ` check`
    // only for `service` (the real backends).
    let source = template_source();
    let text = std::fs::read_to_string(&source).with_context(|| format!("reading {source}"))?;
    let template_text = text.replace(
        " check weight ",
        "{% if name == \"service\" %} check{% endif %} weight ",
    );
    if template_text == text {
        bail!("{source}: no ` check weight ` to make conditional");
    }
    let template = rig.dir.join("templates").join("rolling.cfg.tera");
    std::fs::create_dir_all(template.parent().unwrap_or(&rig.dir))?;
    std::fs::write(&template, template_text)?;

    // The fleet, generation 0.
    eprintln!("bench: rolling: registering {n} instances ...");
    let fleet = Arc::new(Fleet::connect(&urls).await?);
    let mut starting = JoinSet::new();
    let permits = Arc::new(tokio::sync::Semaphore::new(START_CONCURRENCY));
    for i in 0..n {
        let (fleet, permits) = (fleet.clone(), permits.clone());
        starting.spawn(async move {
            let _permit = permits.acquire_owned().await?;
            let inst = fleet.start(i, 0, n, |_, _| {}).await?;
            Ok::<_, anyhow::Error>((i, inst))
        });
    }
    let mut instances: Vec<Option<Instance>> = (0..n).map(|_| None).collect();
    while let Some(r) = starting.join_next().await {
        let (i, inst) = r??;
        instances[i] = Some(inst);
    }

    // The watcher: every service prefix, the template, the runtime API.
    let prefixes = (0..services)
        .map(|s| format!("/{}", service_name(s)))
        .collect::<Vec<_>>()
        .join(",");
    let args = rig.watcher_args_with(true, &prefixes, &template);
    let before = rig.show_proc().await?.reloads;
    let t_spawn = Instant::now();
    let mut watcher = rig.spawn_watcher(args)?;
    let command = watcher.shown.clone();
    rig.wait_reload(&mut watcher, before, Duration::from_secs(120))
        .await?;
    let start_to_reload_s = t_spawn.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = admin(&rig.admin, "show servers state").await?;
        let listed = all_servers(&text)
            .iter()
            .filter(|(_, _, s)| s.in_rotation())
            .count();
        if listed == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("HAProxy has {listed} servers in rotation, not {n}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let watcher_pid = watcher.guard.pid();
    let mut pids = etcd_pids.clone();
    pids.push(watcher_pid);

    // Quiet: keepalives only.
    eprintln!(
        "bench: rolling: {} s with keepalives only ...",
        QUIET.as_secs()
    );
    let (k0, c0) = (fleet.keepalives.load(Ordering::Relaxed), cpu_mark(&pids));
    tokio::time::sleep(QUIET).await;
    let (k1, c1) = (fleet.keepalives.load(Ordering::Relaxed), cpu_mark(&pids));
    let quiet = cpu_percent(&c0, &c1);
    let quiet_keepalives_per_s = (k1 - k0) as f64 / (c1.at - c0.at).as_secs_f64();

    // The rolling restart under wrk.
    let wrk_secs = (WRK_LEAD + Duration::from_secs_f64(secs) + WRK_TAIL).as_secs();
    let duration = format!("-d{wrk_secs}s");
    let url = format!("http://{}/", rig.http);
    let wrk = Wrk::start(
        &["-t1", WRK_CONNECTIONS, duration.as_str(), url.as_str()],
        rig.http.port(),
    )?;
    let wrk_command = wrk.shown.clone();
    tokio::time::sleep(WRK_LEAD).await;
    eprintln!("bench: rolling: restarting {n} instances in {secs} s under wrk ...");
    let proc_before = rig.show_proc().await?;
    let log_before = watcher.counts();
    let monitor = Monitor::start(rig.admin.clone());
    let spacing = Duration::from_secs_f64(secs / n as f64);
    let overlap = spacing / 2;
    let (k2, c2) = (fleet.keepalives.load(Ordering::Relaxed), cpu_mark(&pids));
    let t_start = Instant::now();
    let mut restarts = JoinSet::new();
    for (i, slot) in instances.iter_mut().enumerate() {
        let Some(old) = slot.take() else { continue };
        let (fleet, tx, admin_path) = (fleet.clone(), monitor.tx.clone(), rig.admin.clone());
        let at = t_start + spacing * i as u32;
        restarts.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            restart(&fleet, old, i, n, overlap, &tx, &admin_path).await
        });
    }
    let (mut renewed, mut drains, mut drains_timed_out) = (Vec::new(), Vec::new(), 0);
    while let Some(r) = restarts.join_next().await {
        let (inst, drain) = r??;
        renewed.push(inst);
        match drain {
            Some(Some(d)) => drains.push(d),
            Some(None) => drains_timed_out += 1,
            None => {}
        }
    }
    let seen = tokio::task::spawn_blocking(move || monitor.finish()).await??;
    let (k3, c3) = (fleet.keepalives.load(Ordering::Relaxed), cpu_mark(&pids));
    let restart_took_s = t_start.elapsed().as_secs_f64();
    let restart_cpu = cpu_percent(&c2, &c3);

    // The end: HAProxy lists exactly the new servers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let text = admin(&rig.admin, "show servers state").await?;
    let servers = all_servers(&text);
    let new: BTreeSet<(String, &str)> = renewed
        .iter()
        .map(|i| (service_name(i.service), i.server.as_str()))
        .collect();
    let end_in_rotation = servers
        .iter()
        .filter(|(b, s, st)| st.in_rotation() && new.contains(&(b.to_string(), *s)))
        .count();
    let end_old_listed = servers
        .iter()
        .filter(|(b, s, _)| !new.contains(&(b.to_string(), *s)))
        .count();

    let wrk = wrk.finish().await?;
    let proc_after = rig.show_proc().await?;
    watcher.check_running()?;
    let log_after = watcher.counts();
    let figures = Figures {
        n,
        secs,
        command,
        wrk_command,
        leader,
        start_to_reload_s,
        quiet_keepalives_per_s,
        idle_etcd,
        quiet_etcd: quiet[..etcd_pids.len()].to_vec(),
        quiet_watcher: quiet[etcd_pids.len()],
        seen,
        restart_took_s,
        restart_keepalives_per_s: (k3 - k2) as f64 / (c3.at - c2.at).as_secs_f64(),
        restart_etcd: restart_cpu[..etcd_pids.len()].to_vec(),
        restart_watcher: restart_cpu[etcd_pids.len()],
        wrk,
        wrk_secs: wrk_secs as f64,
        reloads: proc_after.reloads.saturating_sub(proc_before.reloads),
        failed_reloads: proc_after.failed.saturating_sub(proc_before.failed),
        runtime_applies: log_after.runtime - log_before.runtime,
        reload_applies: log_after.reload - log_before.reload,
        warnings: log_after.warnings,
        errors: log_after.errors,
        problems: log_after.problems,
        keepalive_failures: fleet.keepalive_failures.load(Ordering::Relaxed),
        watcher_peak_mb: peak_rss_kb(watcher_pid).unwrap_or(0) as f64 / 1024.0,
        drains,
        drains_timed_out,
        end_in_rotation,
        end_old_listed,
    };
    // The HTTP servers stop on their own threads (a guard waits for its process).
    let backends: Vec<DemoBackends> = renewed
        .iter_mut()
        .filter_map(|i| i.backend.take())
        .collect();
    drop(renewed);
    tokio::task::spawn_blocking(move || drop(backends)).await?;
    Ok(figures)
}

/// Restarts instance `i`: the new incarnation registers (a new `demo_backend` listening first
/// for `service`), `overlap` later the old one revokes its lease; an old `demo_backend` serves
/// until HAProxy no longer lists its server, then stops. Returns the new incarnation and, for
/// a real backend, how long that drain took in seconds (`None`: not within [`DRAIN_WAIT`]).
async fn restart(
    fleet: &Fleet,
    mut old: Instance,
    i: usize,
    n: usize,
    overlap: Duration,
    tx: &mpsc::Sender<Expect>,
    admin_path: &Path,
) -> Result<(Instance, Option<Option<f64>>)> {
    let expect = |backend: &str, server: &str, add: bool| {
        let _ = tx.send(Expect {
            backend: backend.to_string(),
            server: server.to_string(),
            add,
            t0: Instant::now(),
        });
    };
    let new = fleet
        .start(i, 1, n, |backend, server| expect(backend, server, true))
        .await?;
    tokio::time::sleep(overlap).await;
    let backend = service_name(old.service);
    expect(&backend, &old.server, false);
    old.revoke().await?;
    let Some(http) = old.backend.take() else {
        return Ok((new, None));
    };
    // Drain: serve until HAProxy has deleted the server, then stop.
    let gone = Instant::now();
    let cmd = format!("show servers state {backend}");
    let drained = loop {
        let listed = admin(admin_path, &cmd)
            .await
            .map(|t| server_state(&t, &old.server).is_some())
            .unwrap_or(true);
        if !listed {
            break Some(gone.elapsed().as_secs_f64());
        }
        if gone.elapsed() > DRAIN_WAIT {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::task::spawn_blocking(move || drop(http)).await?;
    Ok((new, Some(drained)))
}

/// Which member (index into `urls`) leads the cluster, as the members say.
async fn etcd_leader(urls: &[String]) -> Option<usize> {
    for (i, url) in urls.iter().enumerate() {
        let mut c = Client::connect([url.as_str()], None).await.ok()?;
        let s = c.status().await.ok()?;
        if s.header().map(|h| h.member_id()) == Some(s.leader()) {
            return Some(i);
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// The report.

fn stats(v: &[f64]) -> String {
    let (p50, p99) = p50_p99(v.to_vec());
    format!("{p50:.2} / {p99:.2} / {:.2}", max(v))
}

/// etcd's CPU: the members' sum, then each (`4.9 (m0 (leader) 1.8, m1 1.5, m2 1.5)`).
fn etcd_cpu(cpu: &[f64], leader: Option<usize>) -> String {
    let each = cpu
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mark = if Some(i) == leader { " (leader)" } else { "" };
            format!("m{i}{mark} {c:.1}")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!("{:.1} ({each})", cpu.iter().sum::<f64>())
}

/// CPU (% of one core) of etcd's members and of the watcher, as a function of the instances:
/// a fixed part, a part per keepalive per second, a part per change per second, each from
/// the phase that adds it (idle, keepalives only, the restart).
struct Model {
    /// The restart window the paper keeps (s).
    secs: f64,
    idle: Vec<f64>,
    /// Per keepalive/s, each member.
    keepalive: Vec<f64>,
    /// Per change/s, each member.
    change: Vec<f64>,
    watcher_fixed: f64,
    watcher_change: f64,
    leader: usize,
}

impl Model {
    fn new(f: &Figures) -> Model {
        let restart_changes = (2 * f.n) as f64 / f.restart_took_s;
        let members = f.idle_etcd.len();
        let keepalive: Vec<f64> = (0..members)
            .map(|m| ((f.quiet_etcd[m] - f.idle_etcd[m]) / f.quiet_keepalives_per_s).max(0.0))
            .collect();
        let change = (0..members)
            .map(|m| {
                let rest =
                    f.restart_etcd[m] - f.idle_etcd[m] - keepalive[m] * f.restart_keepalives_per_s;
                (rest / restart_changes).max(0.0)
            })
            .collect();
        Model {
            secs: f.secs,
            idle: f.idle_etcd.clone(),
            keepalive,
            change,
            watcher_fixed: f.quiet_watcher,
            watcher_change: ((f.restart_watcher - f.quiet_watcher) / restart_changes).max(0.0),
            leader: f.leader.unwrap_or(0),
        }
    }

    fn keepalives(&self, n: f64) -> f64 {
        n / (TTL / 3).as_secs_f64()
    }

    /// Changes per second of a rolling restart of `n` instances in the window.
    fn changes(&self, n: f64) -> f64 {
        2.0 * n / self.secs
    }

    fn sum(v: &[f64]) -> f64 {
        v.iter().sum()
    }

    /// Instances at which `fixed + per_instance × n` reaches one core.
    fn one_core(fixed: f64, per_instance: f64) -> f64 {
        if per_instance > 0.0 {
            (100.0 - fixed).max(0.0) / per_instance
        } else {
            f64::INFINITY
        }
    }
}

fn report(f: &Figures) -> Result<String> {
    let mut out = String::new();
    let n = f.n;
    let services = SERVICES.min(n);
    let real = n.div_ceil(services);
    writeln!(
        out,
        "### Rolling restart of {n} instances in {} s\n",
        f.secs
    )?;
    writeln!(out, "- `{}`", f.command)?;
    writeln!(
        out,
        "- `$ETCD`: the three members of the etcd cluster; template: `{}` with ` check` only \
         for `service`",
        template_source()
    )?;
    writeln!(
        out,
        "- {n} instances in {services} services: `service` = {real} real `demo_backend`s (one \
         process each), `svc01`…: closed ports; each its own lease (TTL {} s, keepalive every \
         {:.2} s), own-key watch, key put under the lease while free, JSON value; {CONNECTIONS} \
         shared etcd connections",
        TTL.as_secs(),
        (TTL / 3).as_secs_f64()
    )?;
    writeln!(
        out,
        "- restart: one instance every {:.0} ms — new one registers, {:.0} ms later the old \
         one's lease is revoked (key gone); old `demo_backend`s serve until HAProxy deleted \
         their server",
        f.secs * 1000.0 / n as f64,
        f.secs * 500.0 / n as f64
    )?;
    writeln!(
        out,
        "- load: `{}` through HAProxy's frontend (`service`), from {} s before the first change",
        f.wrk_command,
        WRK_LEAD.as_secs()
    )?;
    writeln!(
        out,
        "- change → routed: from issuing the etcd write (put / lease revoke) until `show servers \
         state <backend>` on the admin socket shows the server in rotation (running, no \
         maintenance or drain flag, weight > 0) / out of it; polled by a thread of its own"
    )?;
    writeln!(out)?;
    let pick = |add: Option<bool>, real: Option<bool>| -> Vec<f64> {
        f.seen
            .iter()
            .filter(|s| add.is_none_or(|a| s.add == a))
            .filter(|s| real.is_none_or(|r| (s.backend == "service") == r))
            .filter_map(|s| s.ms)
            .collect()
    };
    let missed = f.seen.iter().filter(|s| s.ms.is_none()).count();
    writeln!(out, "| measure | result | samples | goal |")?;
    writeln!(out, "|---|---:|---:|---|")?;
    for (what, add, real, goal) in [
        ("change → routed, every change", None, None, "p99 ≤ 50"),
        ("put → in rotation", Some(true), None, ""),
        ("revoke → out of rotation", Some(false), None, ""),
        (
            "`service` (real backends): put → in rotation",
            Some(true),
            Some(true),
            "",
        ),
        (
            "`service`: revoke → out of rotation",
            Some(false),
            Some(true),
            "",
        ),
    ] {
        let v = pick(add, real);
        writeln!(
            out,
            "| {what}, p50 / p99 / max (ms) | {} | {} | {goal} |",
            stats(&v),
            v.len()
        )?;
    }
    writeln!(
        out,
        "| changes not seen in HAProxy within {} s | {missed} | {} | 0 |",
        CHANGE_TIMEOUT.as_secs(),
        f.seen.len()
    )?;
    writeln!(
        out,
        "| restart: planned / from the first change until every change was seen and drained (s) | {:.0} / {:.1} | | |",
        f.secs, f.restart_took_s
    )?;
    let w = &f.wrk;
    writeln!(
        out,
        "| wrk: requests ({:.0} req/s over {} s) | {} | | |",
        w.requests as f64 / f.wrk_secs,
        f.wrk_secs,
        w.requests
    )?;
    writeln!(
        out,
        "| wrk: socket errors connect / read / write / timeout; non-2xx | {} / {} / {} / {}; {} | | |",
        w.connect, w.read, w.write, w.timeout, w.non_2xx_3xx
    )?;
    writeln!(
        out,
        "| **failed requests** (socket errors + non-2xx) | {} | | 0 |",
        w.errors()
    )?;
    writeln!(
        out,
        "| HAProxy reloads during the restart (`show proc`) / failed | {} / {} | | 0 |",
        f.reloads, f.failed_reloads
    )?;
    writeln!(
        out,
        "| watcher log during the restart: `path=runtime` / `path=reload` | {} / {} | | |",
        f.runtime_applies, f.reload_applies
    )?;
    writeln!(
        out,
        "| etcd CPU during the restart, 3 members (% of one core) | {} | | |",
        etcd_cpu(&f.restart_etcd, f.leader)
    )?;
    writeln!(
        out,
        "| watcher CPU during the restart (% of one core) | {:.1} | | |",
        f.restart_watcher
    )?;
    writeln!(
        out,
        "| watcher peak RSS, `VmHWM` (MB) | {:.1} | | |",
        f.watcher_peak_mb
    )?;
    writeln!(
        out,
        "| old real backends: lease revoked → HAProxy deleted the server, p50 / max (s) | {} | {} | |",
        if f.drains.is_empty() {
            "–".to_string()
        } else {
            format!("{:.2} / {:.2}", p50_p99(f.drains.clone()).0, max(&f.drains))
        },
        f.drains.len()
    )?;
    writeln!(
        out,
        "| … not deleted within {} s (stopped anyway) | {} | | 0 |",
        DRAIN_WAIT.as_secs(),
        f.drains_timed_out
    )?;
    writeln!(
        out,
        "| HAProxy at the end: new servers in rotation / other servers listed | {} of {n} / {} | | {n} / 0 |",
        f.end_in_rotation, f.end_old_listed
    )?;
    writeln!(
        out,
        "| watcher start → HAProxy runs all {services} backends (initial reload, s) | {:.2} | | |",
        f.start_to_reload_s
    )?;
    writeln!(
        out,
        "| watcher log, whole run: warnings / errors | {} / {} | | |",
        f.warnings, f.errors
    )?;
    writeln!(out)?;
    for p in &f.problems {
        writeln!(out, "- `{p}`")?;
    }
    if !f.problems.is_empty() {
        writeln!(out)?;
    }

    // Keepalives.
    let per_1000 = f.quiet_keepalives_per_s * 1000.0 / n as f64;
    let expected = n as f64 / (TTL / 3).as_secs_f64();
    let m = Model::new(f);
    let leader = m.leader;
    writeln!(
        out,
        "### Lease keepalives: {} s with nothing else running\n",
        QUIET.as_secs()
    )?;
    writeln!(out, "| measure | result |")?;
    writeln!(out, "|---|---:|")?;
    writeln!(out, "| leases (one per instance) | {n} |")?;
    writeln!(
        out,
        "| keepalive requests per second, counted / N ÷ (TTL/3) | {:.1} / {expected:.1} |",
        f.quiet_keepalives_per_s
    )?;
    writeln!(out, "| … per 1,000 instances | {per_1000:.1} |")?;
    writeln!(
        out,
        "| … during the restart (old and new leases) | {:.1} |",
        f.restart_keepalives_per_s
    )?;
    writeln!(
        out,
        "| keepalive streams that failed, whole run | {} |",
        f.keepalive_failures
    )?;
    writeln!(
        out,
        "| etcd CPU with the keepalives, 3 members (% of one core) | {} |",
        etcd_cpu(&f.quiet_etcd, f.leader)
    )?;
    writeln!(
        out,
        "| etcd CPU before any instance ({} s idle), 3 members | {} |",
        IDLE.as_secs(),
        etcd_cpu(&f.idle_etcd, f.leader)
    )?;
    writeln!(
        out,
        "| etcd CPU the keepalives add, per 1,000 keepalives/s: all members / leader | {:.1} / {:.1} |",
        Model::sum(&m.keepalive) * 1000.0,
        m.keepalive[leader] * 1000.0
    )?;
    writeln!(
        out,
        "| watcher CPU (% of one core) | {:.2} |",
        f.quiet_watcher
    )?;
    writeln!(out)?;

    // On paper.
    writeln!(
        out,
        "### On paper: 10,000 and 100,000 instances\n\nLinear in what grows with the instances, \
         from the figures above. Keepalives/s = N ÷ (TTL/3). A rolling restart in {:.0} s makes 2N \
         changes (a put and a revoke; with the lease grant, 3N raft writes), each delivered to \
         every watcher of the prefix. etcd: {:.1} % idle (leader {:.1}), + {:.2} % per 1,000 \
         keepalives/s (leader {:.2}), + {:.2} % per change/s (leader {:.2}), from the idle, \
         keepalive and restart phases. Watcher: {:.3} % per change/s (with a per-service \
         template a change renders one service, so this holds while services stay this size). % are of one core of this machine.\n",
        m.secs,
        Model::sum(&m.idle),
        m.idle[leader],
        Model::sum(&m.keepalive) * 1000.0,
        m.keepalive[leader] * 1000.0,
        Model::sum(&m.change),
        m.change[leader],
        m.watcher_change
    )?;
    writeln!(out, "| instances | keepalives/s | etcd CPU for keepalives, all / leader | changes/s | raft writes/s | etcd CPU for changes, all / leader | etcd leader in all | watch events/s to 1 / 10 / 100 watchers | watcher CPU |")?;
    writeln!(out, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for size in std::iter::once(n).chain(PAPER_SIZES) {
        let x = size as f64;
        let (ka, ch) = (m.keepalives(x), m.changes(x));
        let events = PAPER_WATCHERS
            .iter()
            .map(|w| thousands(ch * *w as f64))
            .collect::<Vec<_>>()
            .join(" / ");
        let label = if size == n {
            format!("{} (as measured)", thousands(x))
        } else {
            thousands(x)
        };
        writeln!(
            out,
            "| {label} | {} | {:.1} / {:.1} | {} | {} | {:.1} / {:.1} | {:.1} | {events} | {:.1} |",
            thousands(ka),
            Model::sum(&m.keepalive) * ka,
            m.keepalive[leader] * ka,
            thousands(ch),
            thousands(1.5 * ch),
            Model::sum(&m.change) * ch,
            m.change[leader] * ch,
            m.idle[leader] + m.keepalive[leader] * ka + m.change[leader] * ch,
            m.watcher_fixed + m.watcher_change * ch
        )?;
    }
    writeln!(out)?;
    // The first bottleneck: what reaches one core at the fewest instances.
    let per_ka = 1.0 / (TTL / 3).as_secs_f64();
    let per_change = 2.0 / m.secs;
    let candidates = [
        (
            "the etcd leader during the restart",
            Model::one_core(
                m.idle[leader],
                m.keepalive[leader] * per_ka + m.change[leader] * per_change,
            ),
        ),
        (
            "the etcd leader with keepalives alone",
            Model::one_core(m.idle[leader], m.keepalive[leader] * per_ka),
        ),
        (
            "the watcher during the restart",
            Model::one_core(m.watcher_fixed, m.watcher_change * per_change),
        ),
    ];
    let first = candidates
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .ok_or_else(|| anyhow!("no candidates"))?;
    writeln!(
        out,
        "First bottleneck on paper: **{}**, at one core's worth from about {} instances \
         restarted in {:.0} s (every write of the cluster goes through its leader, which \
         also answers every lease keepalive; more members add no capacity for either). The others: {}. Watch \
         fan-out comes on top and grows with N × watchers: at 100,000 instances restarted in \
         {:.0} s, etcd sends {} events/s to 100 watchers, and each watcher has {} changes/s \
         to apply.",
        first.0,
        thousands(first.1),
        m.secs,
        candidates
            .iter()
            .filter(|c| c.0 != first.0)
            .map(|c| format!("{} at {}", c.0, thousands(c.1)))
            .collect::<Vec<_>>()
            .join("; "),
        m.secs,
        thousands(m.changes(100_000.0) * 100.0),
        thousands(m.changes(100_000.0))
    )?;
    Ok(out)
}

/// A count rounded to a whole number, with thousands separated by commas (`1,666,667`).
fn thousands(x: f64) -> String {
    if !x.is_finite() {
        return "∞".to_string();
    }
    let digits = format!("{:.0}", x.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if x < -0.5 {
        out.insert(0, '-');
    }
    out
}

fn env_number<T: std::str::FromStr>(name: &str, default: T) -> Result<T> {
    match std::env::var(name) {
        Ok(s) => s.parse().map_err(|_| anyhow!("{name}={s:?}: not a number")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let n: usize = env_number("BENCH_ROLLING_INSTANCES", DEFAULT_INSTANCES)?;
    let secs: f64 = env_number("BENCH_ROLLING_SECS", DEFAULT_SECS)?;
    if n == 0 || CLOSED_PORT_BASE + 2 * n > EPHEMERAL_START {
        bail!(
            "BENCH_ROLLING_INSTANCES={n}: use 1 to {}",
            (EPHEMERAL_START - CLOSED_PORT_BASE) / 2
        );
    }
    if secs <= 0.0 {
        bail!("BENCH_ROLLING_SECS={secs}: must be above 0");
    }
    check_built(&[WATCHER, BACKEND_BIN, BASE_CONFIG, PER_SERVICE_TEMPLATE])?;
    let started = Instant::now();
    let mut command = String::from("target/release/examples/bench_rolling");
    for var in ["BENCH_ROLLING_INSTANCES", "BENCH_ROLLING_SECS"] {
        if let Ok(v) = std::env::var(var) {
            command = format!("{var}={v} {command}");
        }
    }
    let figures = run(n, secs).await?;
    println!("## bench_rolling\n\n`{command}`\n");
    println!("{}", report(&figures)?);
    println!("Total: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

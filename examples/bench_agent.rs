//! Benchmark of `dockreg agent` (one registration agent per host) with 200 labelled containers
//! of the local Docker engine, against a real etcd on the host. Prints figures; asserts nothing.
//!
//! ```text
//! cargo build --release --bin dockreg
//! cargo run --release --example bench_agent
//! ```
//!
//! It builds a throw-away image (`FROM scratch`: Debian's static `/bin/busybox` and a `/www` with
//! `index.html` and `health`; nothing is pulled, no dockreg inside: the agent runs on the host),
//! starts etcd on 127.0.0.1 and the release agent on the host as
//! `target/release/dockreg agent --etcd <url> --ip 127.0.0.1 --log-format json
//! --log-level info,dockreg=debug` (its defaults otherwise: `--interval 5s`, `--ttl 10s`,
//! `--resync 60s`; the debug lines are per event and per resync, none at rest), and runs the
//! containers as `docker run -d -p 127.0.0.1::8000 -l dockreg.service=bench
//! -l dockreg.check=http:/health --no-healthcheck --entrypoint /bin/busybox <image> httpd -f
//! -p 8000 -h /www`. Then, in this order:
//!
//! 1. starts 200 containers one after another, each once the previous one's key is in etcd:
//!    `docker run -d` issued → returned, returned → key in etcd (the agent's share: Docker's
//!    `start` event, an inspect, the first HTTP check, one txn) and issued → key;
//! 2. at rest with the 200 registered, for 20 s starting just after a periodic resync (so that
//!    none falls in the window; step 4 measures them): the agent's `VmRSS`, `VmHWM` and CPU
//!    (utime + stime from /proc, % of one core), and etcd's counters from its `/metrics`
//!    (`etcd_mvcc_put_total`, `…_delete_total`, `…_txn_total`,
//!    `etcd_server_proposals_committed_total`) and store revision per second (goal 0), with the
//!    puts and deletes the watch saw of the bench's keys and of others (someone else's);
//! 3. restart, 3 times: SIGKILL the agent and start it again. Start → every key put again under
//!    the new lease (adoption; stamped by the etcd watch, and checked with a read: all 200 keys
//!    there under one new lease), the first full resync's `took` (its debug log line: list and
//!    inspect every container; the puts follow it), and etcd's writes from the kill until the
//!    dead agent's lease has expired (asked of etcd), with the deletes the watch saw (goal 0);
//!    (every restart below waits for that expiry too);
//! 4. periodic resync: the agent restarted with `--resync 2s`, then 12 s: the `took` of each
//!    resync in the window (its debug log line: list + 200 inspects + the lease audit), the CPU
//!    each costs the agent and dockerd (CPU over the window less the at-rest rate, per resync),
//!    and etcd's writes in the window (goal 0);
//! 5. restarted with the defaults again: `docker stop -t 1` of 50 containers one after another,
//!    issued → key gone (the agent deletes at the `kill` event, before the app exits: busybox
//!    httpd as PID 1 ignores SIGTERM, so the CLI returns after the 1 s grace) and issued →
//!    returned; then whether etcd holds exactly the 150 running containers' keys.
//!
//! Key times come from an etcd watch on `/services/` (etcd-client), stamped when each event
//! arrives. Every container (also found by this run's label) and the image are removed at the
//! end, on error and on Ctrl-C. Takes about 5 minutes on 2 cores, most of it `docker run`,
//! `docker stop` and the waits for a resync and for the old leases. The agent registers every
//! container of the host that opts in, not only the bench's: etcd's totals include those
//! (someone else's tests on a shared engine); the watch's counts tell them apart, and the
//! host's load average at the start and the end is printed.
//!
//! `BENCH_AGENT_CONTAINERS=N` runs N containers instead of 200 (a quick try);
//! `BENCH_AGENT_BIN=<path>` measures another `dockreg` build.

#[path = "common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use common::{cpu_seconds, ms, p50_p99, proc_status_kb};
use dockreg_testkit::docker::{build_image as docker_build, try_docker, BUSYBOX};
use dockreg_testkit::etcd::Etcd;
use dockreg_testkit::{repo_root, Guard};
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const ROOT: &str = "/services";
const SERVICE: &str = "bench";
/// Containers started one after another (`BENCH_AGENT_CONTAINERS` overrides).
const CONTAINERS: usize = 200;
/// Containers stopped one after another at the end.
const STOPS: usize = 50;
const REST_WINDOW: Duration = Duration::from_secs(20);
/// Restarts (SIGKILL, start) measured with the default flags.
const RESTARTS: usize = 3;
/// `--resync` of the periodic-resync step, and how long it runs.
const RESYNC_EVERY: &str = "2s";
const RESYNC_WINDOW: Duration = Duration::from_secs(12);
/// The agent's default `--resync` (the at-rest window waits for one to pass).
const DEFAULT_RESYNC: Duration = Duration::from_secs(60);
const KEY_TIMEOUT: Duration = Duration::from_secs(15);
/// The agent's flags besides `--etcd`; the log is parsed for `resynced … took`.
const AGENT_FLAGS: [&str; 6] = [
    "--ip",
    "127.0.0.1",
    "--log-format",
    "json",
    "--log-level",
    "info,dockreg=debug",
];

/// Runs `docker <args>`; returns its trimmed stdout, or Docker's message as the error.
fn docker(args: &[&str]) -> Result<String> {
    try_docker(args).map_err(|e| anyhow!(e))
}

/// Everything this benchmark created in Docker; removed on drop (containers first).
struct DockerGuard {
    /// `dockreg-bench=<pid>`, on every container this run starts.
    label: String,
    image: Option<String>,
    containers: Vec<String>,
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        let mut ids = self.containers.clone();
        // A container whose `docker run` was interrupted has no id here, but has the label.
        let filter = format!("label={}", self.label);
        if let Ok(out) = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter]) {
            for id in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
                if !ids.iter().any(|i| i == id) {
                    ids.push(id.to_string());
                }
            }
        }
        if !ids.is_empty() {
            eprintln!("bench: removing {} containers ...", ids.len());
            for chunk in ids.chunks(50) {
                let mut args = vec!["rm", "-f"];
                args.extend(chunk.iter().map(String::as_str));
                if let Err(e) = docker(&args) {
                    eprintln!("bench: cleanup: {e:#}");
                }
            }
        }
        if let Some(image) = &self.image {
            if let Err(e) = docker(&["rmi", image]) {
                eprintln!("bench: cleanup: {e:#}");
            }
        }
    }
}

/// Builds the app image (busybox and /www, nothing else); returns its tag.
fn build_image(dir: &Path, guard: &mut DockerGuard) -> Result<String> {
    let ctx = dir.join("image");
    std::fs::create_dir_all(ctx.join("www"))?;
    std::fs::copy(BUSYBOX, ctx.join("busybox")).with_context(|| format!("copying {BUSYBOX}"))?;
    std::fs::write(ctx.join("www/index.html"), "hello from the app\n")?;
    std::fs::write(ctx.join("www/health"), "ok\n")?;
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n",
    )?;
    let tag = format!("dockreg-agent-bench:run{}", std::process::id());
    docker_build(&ctx, &tag).map_err(|e| anyhow!(e))?;
    guard.image = Some(tag.clone());
    Ok(tag)
}

/// One event of the watch on `/services/`: when it arrived, what, which key, its lease.
struct Seen {
    at: Instant,
    kind: EventType,
    key: String,
    lease: i64,
}

/// Every event of a watch on `/services/`, stamped on arrival.
struct Events {
    rx: UnboundedReceiver<Seen>,
    log: Vec<Seen>,
    /// Key → index in `log` of its last put / delete.
    puts: HashMap<String, usize>,
    deletes: HashMap<String, usize>,
}

impl Events {
    async fn start(client: &Client) -> Result<Events> {
        let mut stream = client
            .clone()
            .watch(format!("{ROOT}/"), Some(WatchOptions::new().with_prefix()))
            .await?;
        let (tx, rx) = unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let at = Instant::now();
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        let seen = Seen {
                            at,
                            kind: ev.event_type(),
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            lease: kv.lease(),
                        };
                        let _ = tx.send(seen);
                    }
                }
            }
        });
        Ok(Events {
            rx,
            log: Vec::new(),
            puts: HashMap::new(),
            deletes: HashMap::new(),
        })
    }

    /// Takes in the events that arrived so far.
    fn drain(&mut self) {
        while let Ok(seen) = self.rx.try_recv() {
            self.record(seen);
        }
    }

    fn record(&mut self, seen: Seen) {
        let map = match seen.kind {
            EventType::Put => &mut self.puts,
            EventType::Delete => &mut self.deletes,
        };
        map.insert(seen.key.clone(), self.log.len());
        self.log.push(seen);
    }

    /// The last put of `key` if it arrived at or after `since`: when, and under which lease.
    fn put_since(&self, key: &str, since: Instant) -> Option<(Instant, i64)> {
        let seen = &self.log[*self.puts.get(key)?];
        (seen.at >= since).then_some((seen.at, seen.lease))
    }

    /// When `key` was last deleted, if at or after `since`.
    fn deleted_since(&self, key: &str, since: Instant) -> Option<Instant> {
        let seen = &self.log[*self.deletes.get(key)?];
        (seen.at >= since).then_some(seen.at)
    }

    /// Events of `kind` that arrived at or after `since`, under `prefix`.
    fn count_since(&self, kind: EventType, prefix: &str, since: Instant) -> usize {
        self.log
            .iter()
            .filter(|s| s.kind == kind && s.at >= since && s.key.starts_with(prefix))
            .count()
    }

    /// Events (puts and deletes) that arrived between `from` and `to`: of the bench's keys, and
    /// of any other key (containers of someone else that opt in too).
    fn between(&mut self, from: Instant, to: Instant) -> (usize, usize) {
        self.drain();
        let bench = format!("{ROOT}/{SERVICE}/");
        let (mut ours, mut others) = (0, 0);
        for s in self.log.iter().filter(|s| s.at >= from && s.at <= to) {
            if s.key.starts_with(&bench) {
                ours += 1;
            } else {
                others += 1;
            }
        }
        (ours, others)
    }

    /// Takes in the events until `done` says so; fails after `timeout`.
    async fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Self) -> bool,
    ) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            self.drain();
            if done(self) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(seen)) => self.record(seen),
                Ok(None) => bail!("the etcd watch ended"),
                Err(_) => bail!("{what}: not within {timeout:?}"),
            }
        }
    }
}

/// A line of the agent's JSON log.
struct LogLine {
    at: SystemTime,
    level: String,
    message: String,
    fields: serde_json::Value,
}

/// The agent on the host, its stderr (JSON lines) in a file.
struct Agent {
    child: Guard,
    log: PathBuf,
    spawned: Instant,
    spawned_wall: SystemTime,
    command: String,
}

impl Agent {
    fn start(bin: &Path, dir: &Path, etcd: &str, run: usize, extra: &[&str]) -> Result<Agent> {
        let log = dir.join(format!("agent-{run}.log"));
        let file = File::create(&log)?;
        let mut args = vec!["agent", "--etcd", etcd];
        args.extend(AGENT_FLAGS);
        args.extend(extra);
        let spawned_wall = SystemTime::now();
        let spawned = Instant::now();
        let child = Command::new(bin)
            .args(&args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        Ok(Agent {
            child: Guard(child),
            log,
            spawned,
            spawned_wall,
            command: format!("{} {}", bin.display(), args.join(" ")),
        })
    }

    fn pid(&self) -> u32 {
        self.child.pid()
    }

    fn kill9(&mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }

    /// The lines whose message is `message`.
    fn find(&self, message: &str) -> Vec<LogLine> {
        read_log(&self.log)
            .into_iter()
            .filter(|l| l.message == message)
            .collect()
    }

    /// Milliseconds from the spawn to a log line's timestamp.
    fn since_spawn(&self, line: &LogLine) -> f64 {
        line.at
            .duration_since(self.spawned_wall)
            .map(ms)
            .unwrap_or(0.0)
    }

    /// Waits until a line with `message` logged at or after `after` appears; returns it.
    async fn wait_line(
        &mut self,
        message: &str,
        after: SystemTime,
        timeout: Duration,
    ) -> Result<LogLine> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.find(message).into_iter().find(|l| l.at >= after) {
                return Ok(line);
            }
            if let Ok(Some(status)) = self.child.0.try_wait() {
                bail!("the agent exited ({status}):\n{}", self.tail());
            }
            if Instant::now() > deadline {
                bail!(
                    "no \"{message}\" in the agent's log within {timeout:?}:\n{}",
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The last lines of the log, for errors.
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// The lines of an agent's JSON log.
fn read_log(path: &Path) -> Vec<LogLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            let at = parse_utc(v.get("timestamp")?.as_str()?)?;
            let level = v.get("level")?.as_str()?.to_string();
            let fields = v.get("fields")?.clone();
            let message = fields.get("message")?.as_str()?.to_string();
            Some(LogLine {
                at,
                level,
                message,
                fields,
            })
        })
        .collect()
}

/// The warnings and errors of every agent log in `dir`: message → how many.
fn warnings(dir: &Path, runs: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for run in 0..=runs {
        for line in read_log(&dir.join(format!("agent-{run}.log"))) {
            if line.level == "WARN" || line.level == "ERROR" {
                *seen
                    .entry(format!("{} {}", line.level, line.message))
                    .or_insert(0) += 1;
            }
        }
    }
    seen
}

/// `2025-01-31T12:34:56.123456Z` (tracing-subscriber's timestamps) as a time.
fn parse_utc(s: &str) -> Option<SystemTime> {
    let (date, time) = s.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (h, min, sec) = (t.next()??, t.next()??, t.next()??);
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_secs_f64(frac))
}

/// A `Duration`'s `Debug` text (`512.3ms`, `1.2s`, `950µs`), as the agent logs `took`.
fn parse_debug_duration(s: &str) -> Option<Duration> {
    let i = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(i);
    let n: f64 = num.parse().ok()?;
    let secs = match unit {
        "s" => n,
        "ms" => n / 1e3,
        "µs" | "us" => n / 1e6,
        "ns" => n / 1e9,
        _ => return None,
    };
    Some(Duration::from_secs_f64(secs))
}

/// The `took` of a `resynced` line, in ms.
fn took_ms(line: &LogLine) -> Option<f64> {
    let took = line.fields.get("took")?.as_str()?;
    parse_debug_duration(took).map(ms)
}

/// etcd's Prometheus counters from `/metrics` on its client URL.
fn etcd_metrics(url: &str) -> Result<HashMap<String, f64>> {
    let addr = url.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        conn,
        "GET /metrics HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    Ok(text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect())
}

/// The keys under `/services/bench/` with their leases.
async fn bench_keys(client: &Client) -> Result<HashMap<String, i64>> {
    let resp = client
        .kv_client()
        .get(
            format!("{ROOT}/{SERVICE}/"),
            Some(GetOptions::new().with_prefix()),
        )
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease()))
        .collect())
}

/// etcd's counters and the agent's and dockerd's CPU time at one moment.
struct Snapshot {
    at: Instant,
    metrics: HashMap<String, f64>,
    agent_cpu: f64,
    dockerd_cpu: Option<f64>,
}

impl Snapshot {
    fn take(url: &str, agent: &Agent, dockerd: Option<u32>) -> Result<Self> {
        Ok(Snapshot {
            at: Instant::now(),
            metrics: etcd_metrics(url)?,
            agent_cpu: cpu_seconds(agent.pid()).ok_or_else(|| anyhow!("the agent is gone"))?,
            dockerd_cpu: dockerd.and_then(cpu_seconds),
        })
    }
}

/// What changed between two snapshots.
struct Delta {
    secs: f64,
    counters: HashMap<&'static str, f64>,
    agent_cpu: f64,
    dockerd_cpu: Option<f64>,
}

/// The counters compared, and the store revision (a gauge; it grows by one per write that
/// changed a key), read from `/metrics` so that measuring it costs etcd no request.
const COUNTERS: [&str; 7] = [
    "etcd_mvcc_put_total",
    "etcd_mvcc_delete_total",
    "etcd_mvcc_txn_total",
    "etcd_server_proposals_committed_total",
    "etcd_debugging_lease_renewed_total",
    "etcd_mvcc_range_total",
    "etcd_debugging_mvcc_current_revision",
];

impl Delta {
    fn between(a: &Snapshot, b: &Snapshot) -> Delta {
        let counters = COUNTERS
            .iter()
            .map(|&n| {
                let d = b.metrics.get(n).unwrap_or(&0.0) - a.metrics.get(n).unwrap_or(&0.0);
                (n, d)
            })
            .collect();
        Delta {
            secs: (b.at - a.at).as_secs_f64(),
            counters,
            agent_cpu: b.agent_cpu - a.agent_cpu,
            dockerd_cpu: a.dockerd_cpu.zip(b.dockerd_cpu).map(|(a, b)| b - a),
        }
    }

    fn get(&self, name: &str) -> f64 {
        self.counters.get(name).copied().unwrap_or(0.0)
    }

    fn rate(&self, name: &str) -> f64 {
        self.get(name) / self.secs
    }

    /// Writes that changed a key (store revisions).
    fn revisions(&self) -> f64 {
        self.get("etcd_debugging_mvcc_current_revision")
    }
}

/// One restart (SIGKILL, start) and what it took.
struct Restart {
    /// Start → every key put again under the new lease (ms).
    adopted: f64,
    /// Start → the first resync's log line (ms), and its `took`.
    resynced_at: f64,
    resync_took: f64,
    /// Keys the agent found of its previous run.
    found: u64,
    /// etcd's counters from just before the kill until the old lease expired.
    writes: Delta,
    /// Puts (bench keys, others) and deletes (any key) the watch saw in that time.
    bench_puts: usize,
    other_puts: usize,
    deletes: usize,
}

/// SIGKILLs `agent`, starts it again with `extra` flags, waits until every key of `keys` is put
/// again under one new lease and until the dead agent's lease expired; returns what it took.
async fn restart(
    agent: &mut Agent,
    extra: &[&str],
    keys: &[String],
    ctx: &mut Ctx<'_>,
    events: &mut Events,
) -> Result<Restart> {
    let before = bench_keys(ctx.client).await?;
    let old: BTreeSet<i64> = before.values().copied().collect();
    let s0 = Snapshot::take(ctx.url, agent, None)?;
    let killed = Instant::now();
    agent.kill9();
    ctx.runs += 1;
    *agent = Agent::start(ctx.bin, ctx.dir, ctx.url, ctx.runs, extra)?;
    let t0 = agent.spawned;
    events
        .wait_for(KEY_TIMEOUT, "every key adopted after the restart", |e| {
            keys.iter()
                .all(|k| e.put_since(k, t0).is_some_and(|(_, l)| !old.contains(&l)))
        })
        .await
        .with_context(|| agent.tail())?;
    let last = keys
        .iter()
        .filter_map(|k| events.put_since(k, t0))
        .map(|(at, _)| at)
        .max()
        .unwrap_or(t0);
    let adopted = ms(last - t0);
    let now = bench_keys(ctx.client).await?;
    let leases: BTreeSet<i64> = now.values().copied().collect();
    let wanted: BTreeSet<&String> = keys.iter().collect();
    if now.keys().collect::<BTreeSet<_>>() != wanted || leases.len() != 1 {
        bail!(
            "after the restart etcd holds {} keys under {} leases, want {} under one",
            now.len(),
            leases.len(),
            keys.len()
        );
    }
    let resynced = agent
        .wait_line("resynced", agent.spawned_wall, KEY_TIMEOUT)
        .await?;
    let found = agent
        .find("found this agent's keys from before")
        .first()
        .and_then(|l| l.fields.get("keys")?.as_u64())
        .unwrap_or(0);
    // The dead agent's lease: gone one TTL after its last keepalive, deleting what it still had.
    let mut lease = ctx.client.lease_client();
    for &id in &old {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ttl = lease.time_to_live(id, None).await?.ttl();
            if ttl < 0 {
                break;
            }
            if Instant::now() > deadline {
                bail!("lease {id:x} of the killed agent still alive (ttl {ttl})");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Take in the watch's events up to now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    events.drain();
    let s1 = Snapshot::take(ctx.url, agent, None)?;
    let bench_prefix = format!("{ROOT}/{SERVICE}/");
    let all_puts = events.count_since(EventType::Put, ROOT, killed);
    let bench_puts = events.count_since(EventType::Put, &bench_prefix, killed);
    Ok(Restart {
        adopted,
        resynced_at: agent.since_spawn(&resynced),
        resync_took: took_ms(&resynced).unwrap_or(f64::NAN),
        found,
        writes: Delta::between(&s0, &s1),
        bench_puts,
        other_puts: all_puts - bench_puts,
        deletes: events.count_since(EventType::Delete, ROOT, killed),
    })
}

/// What every step needs.
struct Ctx<'a> {
    bin: &'a Path,
    dir: &'a Path,
    url: &'a str,
    client: &'a Client,
    /// Agents started so far (each logs to `agent-<n>.log`).
    runs: usize,
}

/// A started app container.
struct App {
    id: String,
    key: String,
}

fn p50_p99_text(v: &[f64]) -> String {
    let (p50, p99) = p50_p99(v.to_vec());
    format!("{p50:.1} / {p99:.1}")
}

fn mean_max_text(v: &[f64]) -> String {
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    format!("{mean:.0} / {max:.0}")
}

/// A `kB` field of /proc/<pid>/status in MB.
fn status_mb(pid: u32, field: &str) -> Result<f64> {
    proc_status_kb(pid, field)
        .map(|kb| kb as f64 / 1024.0)
        .ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// The 1-minute load average (other work on the host shows in the figures).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn dockerd_pid() -> Option<u32> {
    let out = Command::new("pidof").arg("dockerd").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn run() -> Result<()> {
    let n = containers();
    let stops = STOPS.min(n);
    let bin = agent_bin();
    let dir = tempfile::tempdir()?;
    let mut guard = DockerGuard {
        label: format!("dockreg-bench={}", std::process::id()),
        image: None,
        containers: Vec::new(),
    };
    eprintln!("bench: building the app image ...");
    let image = build_image(dir.path(), &mut guard)?;
    let etcd = Etcd::start(dir.path()).await;
    let url = etcd.url();
    let client = Client::connect([url.as_str()], None).await?;
    let mut events = Events::start(&client).await?;
    let mut ctx = Ctx {
        bin: &bin,
        dir: dir.path(),
        url: &url,
        client: &client,
        runs: 0,
    };
    let dockerd = dockerd_pid();
    let load_start = loadavg();
    let others = docker(&["ps", "-q", "--filter", "label=dockreg.service"])?
        .lines()
        .count();
    if others > 0 {
        eprintln!("bench: note: {others} other running container(s) opt in (dockreg.service); the agent registers them too");
    }
    let mut agent = Agent::start(&bin, dir.path(), &url, ctx.runs, &[])?;
    let first_command = agent.command.clone();
    agent
        .wait_line("connected to the Docker engine", UNIX_EPOCH, KEY_TIMEOUT)
        .await?;
    eprintln!("bench: etcd on {url}; agent {}", bin.display());

    // 1. docker run → key in etcd, one after another.
    let run_args: Vec<String> = [
        "run",
        "-d",
        "--label",
        &guard.label,
        "-p",
        "127.0.0.1::8000",
        "-l",
        &format!("dockreg.service={SERVICE}"),
        "-l",
        "dockreg.check=http:/health",
        "--no-healthcheck",
        "--entrypoint",
        "/bin/busybox",
        &image,
        "httpd",
        "-f",
        "-p",
        "8000",
        "-h",
        "/www",
    ]
    .map(String::from)
    .to_vec();
    let run_args: Vec<&str> = run_args.iter().map(String::as_str).collect();
    let (mut run_ms, mut key_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut apps = Vec::new();
    for i in 0..n {
        let t0 = Instant::now();
        let id = docker(&run_args)?;
        let returned = Instant::now();
        guard.containers.push(id.clone());
        let ports = docker(&["port", &id, "8000/tcp"])?;
        let port = ports
            .lines()
            .find_map(|l| l.strip_prefix("127.0.0.1:"))
            .ok_or_else(|| anyhow!("no 127.0.0.1 binding for 8000/tcp: {ports}"))?;
        let key = format!("{ROOT}/{SERVICE}/127.0.0.1:{port}");
        // The key may appear before `docker run` returns; count from issuing the command.
        events
            .wait_for(KEY_TIMEOUT, &format!("key {key} put"), |e| {
                e.put_since(&key, t0).is_some()
            })
            .await
            .with_context(|| agent.tail())?;
        let put = events.put_since(&key, t0).map_or(t0, |(at, _)| at);
        run_ms.push(ms(returned - t0));
        key_ms.push(ms(put.saturating_duration_since(returned)));
        total_ms.push(ms(put - t0));
        if (i + 1) % 20 == 0 || i + 1 == n {
            eprintln!(
                "bench: {}/{n} registered (last: {:.0} ms after docker run returned)",
                i + 1,
                key_ms[i]
            );
        }
        apps.push(App { id, key });
    }
    let keys: Vec<String> = apps.iter().map(|a| a.key.clone()).collect();

    // 2. At rest, starting just after a periodic resync.
    eprintln!("bench: waiting for the next periodic resync (at most {DEFAULT_RESYNC:?}) ...");
    agent
        .wait_line(
            "resynced",
            SystemTime::now(),
            DEFAULT_RESYNC + Duration::from_secs(10),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!("bench: at rest for {REST_WINDOW:?} with {n} registered ...");
    let r0 = Snapshot::take(&url, &agent, dockerd)?;
    let rest_wall = SystemTime::now();
    tokio::time::sleep(REST_WINDOW).await;
    let r1 = Snapshot::take(&url, &agent, dockerd)?;
    let rest = Delta::between(&r0, &r1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest_events = events.between(r0.at, r1.at);
    let rest_resyncs = agent
        .find("resynced")
        .iter()
        .filter(|l| l.at >= rest_wall)
        .count();
    let pid = agent.pid();
    let (rss, hwm) = (status_mb(pid, "VmRSS")?, status_mb(pid, "VmHWM")?);
    let (anon, file) = (status_mb(pid, "RssAnon")?, status_mb(pid, "RssFile")?);
    let threads = proc_status_kb(pid, "Threads").unwrap_or(0);
    let held = bench_keys(&client).await?.len();

    // 3. Restarts: SIGKILL, start, every key adopted.
    let mut restarts = Vec::new();
    for r in 0..RESTARTS {
        eprintln!("bench: restart {}/{RESTARTS} (SIGKILL, start) ...", r + 1);
        let s = restart(&mut agent, &[], &keys, &mut ctx, &mut events).await?;
        eprintln!(
            "bench: adopted {} keys {:.0} ms after the start; first resync took {:.0} ms",
            s.found, s.adopted, s.resync_took
        );
        restarts.push(s);
    }

    // 4. Periodic resyncs with --resync 2s.
    eprintln!("bench: agent with --resync {RESYNC_EVERY} for {RESYNC_WINDOW:?} ...");
    let resync_flags = ["--resync", RESYNC_EVERY];
    restart(&mut agent, &resync_flags, &keys, &mut ctx, &mut events).await?;
    let resync_command = agent.command.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let p0 = Snapshot::take(&url, &agent, dockerd)?;
    let window_wall = SystemTime::now();
    tokio::time::sleep(RESYNC_WINDOW).await;
    let p1 = Snapshot::take(&url, &agent, dockerd)?;
    let periodic = Delta::between(&p0, &p1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let periodic_events = events.between(p0.at, p1.at);
    let tooks: Vec<f64> = agent
        .find("resynced")
        .iter()
        .filter(|l| l.at >= window_wall)
        .filter_map(took_ms)
        .collect();
    let per_resync = |window: f64, rest_rate: f64| -> f64 {
        (window - rest_rate * periodic.secs) / tooks.len().max(1) as f64 * 1000.0
    };
    let agent_per_resync = per_resync(periodic.agent_cpu, rest.agent_cpu / rest.secs);
    let dockerd_per_resync = periodic
        .dockerd_cpu
        .zip(rest.dockerd_cpu)
        .map(|(w, r)| per_resync(w, r / rest.secs));

    // 5. docker stop → key gone, with the default flags again.
    eprintln!("bench: restart with the defaults ...");
    restart(&mut agent, &[], &keys, &mut ctx, &mut events).await?;
    eprintln!("bench: docker stop -t 1 of {stops} containers, one after another ...");
    let (mut gone_ms, mut stop_ms) = (Vec::new(), Vec::new());
    for app in &apps[..stops] {
        let t0 = Instant::now();
        let mut cli = Command::new("docker")
            .args(["stop", "-t", "1", &app.id])
            .stdout(Stdio::null())
            .spawn()
            .context("running docker stop")?;
        let gone = events
            .wait_for(KEY_TIMEOUT, &format!("key {} deleted", app.key), |e| {
                e.deleted_since(&app.key, t0).is_some()
            })
            .await;
        let status = tokio::task::spawn_blocking(move || cli.wait()).await??;
        let returned = Instant::now();
        gone.with_context(|| agent.tail())?;
        if !status.success() {
            bail!("docker stop {} failed", app.id);
        }
        let at = events.deleted_since(&app.key, t0).unwrap_or(t0);
        gone_ms.push(ms(at - t0));
        stop_ms.push(ms(returned - t0));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after: BTreeSet<String> = bench_keys(&client).await?.into_keys().collect();
    let running: BTreeSet<String> = apps[stops..].iter().map(|a| a.key.clone()).collect();
    let matches = if after == running {
        format!("yes ({} keys)", after.len())
    } else {
        format!(
            "**no**: {} keys, {} running; extra {:?}, missing {:?}",
            after.len(),
            running.len(),
            after.difference(&running).collect::<Vec<_>>(),
            running.difference(&after).collect::<Vec<_>>()
        )
    };
    drop(agent);
    let warned = warnings(dir.path(), ctx.runs);
    for (message, count) in &warned {
        eprintln!("bench: agent logged {count} × {message}");
    }

    let rs = RESTARTS;
    let w = REST_WINDOW.as_secs();
    let pw = RESYNC_WINDOW.as_secs();
    let of = |f: fn(&Restart) -> f64| restarts.iter().map(f).collect::<Vec<f64>>();
    let mean_of = |f: fn(&Restart) -> f64| of(f).iter().sum::<f64>() / rs as f64;
    println!("| measure | result | samples |");
    println!("|---|---:|---:|");
    println!(
        "| `docker run -d` issued → returned, p50 / p99 (ms) | {} | {n} |",
        p50_p99_text(&run_ms)
    );
    println!(
        "| `docker run -d` returned → key in etcd (the agent's share), p50 / p99 (ms) | {} | {n} |",
        p50_p99_text(&key_ms)
    );
    println!(
        "| `docker run -d` issued → key in etcd, p50 / p99 (ms) | {} | {n} |",
        p50_p99_text(&total_ms)
    );
    println!(
        "| `docker stop -t 1` issued → key gone, p50 / p99 (ms) | {} | {stops} |",
        p50_p99_text(&gone_ms)
    );
    println!(
        "| `docker stop -t 1` issued → returned, p50 / p99 (ms) | {} | {stops} |",
        p50_p99_text(&stop_ms)
    );
    println!("| etcd holds exactly the running containers' keys after the stops | {matches} | |");
    println!(
        "| agent warnings and errors logged (all runs) | {} | {} agents |",
        warned.values().sum::<usize>(),
        ctx.runs + 1
    );
    println!("| agent RSS at rest, `VmRSS` / `VmHWM` (MB) | {rss:.1} / {hwm:.1} | {held} keys |");
    println!("| … of it anonymous (`RssAnon`) / file-backed (`RssFile`) (MB) | {anon:.1} / {file:.1} | |");
    println!("| agent threads | {threads} | |");
    println!(
        "| agent CPU at rest (% of one core) | {:.2} | {w} s, {rest_resyncs} resyncs in it |",
        rest.agent_cpu / rest.secs * 100.0
    );
    if let Some(d) = rest.dockerd_cpu {
        println!(
            "| dockerd CPU at rest (% of one core) | {:.2} | {w} s |",
            d / rest.secs * 100.0
        );
    }
    println!(
        "| etcd writes per second at rest: put / delete / txn | {:.3} / {:.3} / {:.3} | {w} s |",
        rest.rate("etcd_mvcc_put_total"),
        rest.rate("etcd_mvcc_delete_total"),
        rest.rate("etcd_mvcc_txn_total")
    );
    println!(
        "| etcd raft proposals committed / store revisions per second at rest | {:.3} / {:.3} | {w} s |",
        rest.rate("etcd_server_proposals_committed_total"),
        rest.revisions() / rest.secs
    );
    println!(
        "| key events the watch saw at rest: bench keys / other keys | {} / {} | {w} s |",
        rest_events.0, rest_events.1
    );
    println!(
        "| lease keepalives / reads (range) per second at rest | {:.3} / {:.3} | {w} s |",
        rest.rate("etcd_debugging_lease_renewed_total"),
        rest.rate("etcd_mvcc_range_total")
    );
    println!(
        "| restart (SIGKILL, start) → all {n} keys adopted under the new lease, mean / max (ms) | {} | {rs} |",
        mean_max_text(&of(|r| r.adopted))
    );
    println!(
        "| … start → first resync done (log), mean / max (ms) | {} | {rs} |",
        mean_max_text(&of(|r| r.resynced_at))
    );
    println!(
        "| … the first resync's `took` (list + {n} inspects), mean / max (ms) | {} | {rs} |",
        mean_max_text(&of(|r| r.resync_took))
    );
    println!(
        "| … keys found of the previous run, per restart | {} | {rs} |",
        restarts
            .iter()
            .map(|r| r.found.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "| etcd per restart (kill → old lease expired): store revisions / raft proposals, mean | {:.0} / {:.0} | {rs} |",
        mean_of(|r| r.writes.revisions()),
        mean_of(|r| r.writes.get("etcd_server_proposals_committed_total"))
    );
    println!(
        "| … put / delete / txn counters, mean | {:.0} / {:.0} / {:.0} | {rs} |",
        mean_of(|r| r.writes.get("etcd_mvcc_put_total")),
        mean_of(|r| r.writes.get("etcd_mvcc_delete_total")),
        mean_of(|r| r.writes.get("etcd_mvcc_txn_total"))
    );
    println!(
        "| … puts seen by the watch (bench keys / other keys), deletes, per restart | {} | {rs} |",
        restarts
            .iter()
            .map(|r| format!("{} / {}, {}", r.bench_puts, r.other_puts, r.deletes))
            .collect::<Vec<_>>()
            .join("; ")
    );
    println!(
        "| periodic resync (`--resync {RESYNC_EVERY}`) `took`, p50 / max (ms) | {} | {} |",
        {
            let (p50, _) = p50_p99(tooks.clone());
            let max = tooks.iter().copied().fold(f64::NAN, f64::max);
            format!("{p50:.0} / {max:.0}")
        },
        tooks.len()
    );
    println!(
        "| CPU with a resync every {RESYNC_EVERY}, agent / dockerd (% of one core) | {:.1} / {} | {pw} s |",
        periodic.agent_cpu / periodic.secs * 100.0,
        periodic
            .dockerd_cpu
            .map_or("–".to_string(), |d| format!("{:.1}", d / periodic.secs * 100.0))
    );
    println!(
        "| … CPU per periodic resync (less the at-rest rate), agent / dockerd (ms) | {agent_per_resync:.0} / {} | {} |",
        dockerd_per_resync.map_or("–".to_string(), |d| format!("{d:.0}")),
        tooks.len()
    );
    println!(
        "| etcd per second during periodic resyncs: writes (put + delete + txn) / proposals / revisions | {:.3} / {:.3} / {:.3} | {pw} s |",
        periodic.rate("etcd_mvcc_put_total")
            + periodic.rate("etcd_mvcc_delete_total")
            + periodic.rate("etcd_mvcc_txn_total"),
        periodic.rate("etcd_server_proposals_committed_total"),
        periodic.revisions() / periodic.secs
    );
    println!(
        "| key events the watch saw during periodic resyncs: bench keys / other keys | {} / {} | {pw} s |",
        periodic_events.0, periodic_events.1
    );
    println!(
        "| host load average (1 min) at the start / end | {load_start} / {} | |",
        loadavg()
    );
    println!();
    println!("```sh");
    println!("{first_command}");
    println!("{resync_command}   # step 4");
    println!("docker {}", run_args.join(" "));
    println!("docker stop -t 1 <id>");
    println!("```");
    if others > 0 {
        println!("\n{others} other opted-in container(s) were running; etcd's counters include their keys.");
    }
    Ok(())
}

fn containers() -> usize {
    std::env::var("BENCH_AGENT_CONTAINERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(CONTAINERS)
}

/// The `dockreg` to run as the agent.
fn agent_bin() -> PathBuf {
    std::env::var_os("BENCH_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/release/dockreg"))
}

fn prerequisites() -> Result<()> {
    let bin = agent_bin();
    if !bin.is_file() {
        bail!(
            "{} not found: build it first:\n    cargo build --release --bin dockreg\n(from the repository root)",
            bin.display()
        );
    }
    if !Path::new(BUSYBOX).exists() {
        bail!("{BUSYBOX} not found: apt-get install busybox-static");
    }
    docker(&["version", "--format", "{{.Server.Version}}"])
        .context("no Docker engine reachable (the benchmark runs real containers)")?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let result = match prerequisites() {
        Err(e) => Err(e),
        // Ctrl-C drops the benchmark, whose guards stop the agent and remove the containers
        // and the image.
        Ok(()) => tokio::select! {
            r = run() => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        },
    };
    if let Err(e) = result {
        eprintln!("bench_agent: {e:#}");
        std::process::exit(1);
    }
}

//! Benchmark of hitless changes: how fast an etcd change reaches live traffic through HAProxy,
//! and whether anything fails while servers and templates churn under load. Runs a real etcd,
//! a real HAProxy 2.6 in master-worker mode (`haproxy/haproxy.cfg` plus the rendered file), the
//! release `dockreg-haproxy` and `demo_backend` HTTP servers, all on 127.0.0.0/8. Prints
//! Markdown tables and the command lines used; asserts nothing.
//!
//! ```text
//! cargo build --release --bin dockreg-haproxy --examples
//! target/release/examples/bench_hitless [latency|churn|scale|all]   # default: all (≈ 6 min)
//! BENCH_CHURN_SECS=10 target/release/examples/bench_hitless churn   # shorter churn runs
//! ```
//!
//! Run it from the repository root. `BENCH_KEEP=1` keeps each run's folder (logs of etcd,
//! HAProxy and the watcher) and prints where it is.
//!
//! 1. **latency** — one server of `/service` is put and deleted again and again (spaced
//!    beyond the debounce); a keep-alive client polls `GET /` through HAProxy's frontend back to
//!    back and takes the time from issuing the etcd write until the first answer from that
//!    server (after a put) or the first `503` (after a delete). Once with the runtime-API fast
//!    path (`--runtime-socket`), once through reloads only; the watcher's log tells how many
//!    applies took `path=runtime` and `path=reload`.
//! 2. **churn** — two `wrk` at once (keep-alive, and a new connection per request) against
//!    the frontend while (a) servers of a pool are added and removed every 10–50 ms beside two
//!    stable ones, or (b) the template is rewritten every 570 ms with an option that forces a
//!    reload (`--min-reload-interval 250ms` there, so that none coalesce). Counts requests, socket errors and non-2xx answers; reloads and surviving old
//!    workers come from the master socket's `show proc`.
//! 3. **scale** — 10,000 servers in 1,000 backends (closed loopback ports, the per-service
//!    default template without `check`, so no health check and no traffic ever reaches them;
//!    `BENCH_SCALE_TEMPLATE=<file>` renders another template instead): time from the first put
//!    until HAProxy's initial reload, HAProxy's and the watcher's memory, then single-server
//!    adds and deletes in one backend, timed on the admin socket (`show servers state`) and on
//!    the output file.

#[path = "common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use common::{p50_p99, peak_rss_kb, rss_kb, start_etcd, WATCHER};
use dockreg::haproxy::{MasterSocket, ProcList};
use dockreg_testkit::backends::DemoBackends;
use dockreg_testkit::etcd::Etcd;
use dockreg_testkit::haproxy::{admin_command, Haproxy};
use dockreg_testkit::{free_port, Guard};
use etcd_client::{Client, Txn, TxnOp};
use std::fmt::Write as _;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BACKEND_BIN: &str = "target/release/examples/demo_backend";
const BASE_CONFIG: &str = "haproxy/haproxy.cfg";
const DEFAULT_TEMPLATE: &str = "templates/haproxy-backends.cfg.tera";
/// The default template in its per-service form (rendered per service, only what changed).
const PER_SERVICE_TEMPLATE: &str = "templates/per-service.cfg.tera";
/// First word of every backend answer (`bench <address>`).
const ID_PREFIX: &str = "bench";

/// Spacing of changes in the fast-path latency run (the debounce is 100 ms).
const FAST_GAP: Duration = Duration::from_millis(150);
/// Spacing in the reload-path run: beyond the 500 ms minimum reload interval.
const RELOAD_GAP: Duration = Duration::from_millis(700);
const FAST_PAIRS: usize = 100;
const RELOAD_PAIRS: usize = 30;
/// How long one change may take to show before it counts as missed.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(10);

const CHURN_POOL: usize = 20;
const CHURN_STABLE: usize = 2;
const TEMPLATE_PERIOD: Duration = Duration::from_millis(570);
/// `retries` values the template churn cycles through (the shipped template says 2).
const TEMPLATE_RETRIES: [u32; 3] = [2, 3, 4];
/// The template churn run's minimum reload interval: with the default 500 ms, a reload cycle
/// (interval, `haproxy -c`, reload under load) takes 600–700 ms, fewer than 100 a minute.
const TEMPLATE_MIN_RELOAD_INTERVAL: &str = "250ms";

const SCALE_BACKENDS: usize = 1000;
const SCALE_PER_BACKEND: usize = 10;
const SCALE_SAMPLES: usize = 30;
const SCALE_DRAIN: &str = "2s";
/// etcd's default limit of operations in one transaction.
const TXN_OPS: usize = 128;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------------------------------------
// The rig: etcd, HAProxy, the watcher, backends.

/// One run's world: a folder, etcd and HAProxy (master-worker, base config + rendered file).
struct Rig {
    _tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    _etcd: Etcd,
    /// etcd's client URL.
    url: String,
    client: Client,
    _haproxy: Haproxy,
    http: SocketAddr,
    master: MasterSocket,
    admin: PathBuf,
    output: PathBuf,
    env: Vec<(String, String)>,
}

impl Rig {
    async fn start(name: &str) -> Result<Rig> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("bench-hitless-{name}-"))
            .tempdir()
            .context("creating a temporary folder")?;
        let (tmp, dir) = if std::env::var_os("BENCH_KEEP").is_some() {
            let dir = tmp.keep();
            eprintln!("bench: {name}: files kept in {}", dir.display());
            (None, dir)
        } else {
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        };
        let etcd = start_etcd(&dir).await;
        let (url, client) = (etcd.url(), etcd.client().await);
        let output = dir.join("backends.cfg");
        let haproxy = Haproxy::start_with(&dir, PathBuf::from(BASE_CONFIG), output.clone()).await;
        Ok(Rig {
            _tmp: tmp,
            admin: haproxy.admin_socket.clone(),
            dir,
            _etcd: etcd,
            url,
            client,
            http: haproxy.http,
            master: MasterSocket {
                path: haproxy.master_socket.clone(),
                timeout: Duration::from_secs(10),
            },
            output,
            env: haproxy.env.clone(),
            _haproxy: haproxy,
        })
    }

    async fn show_proc(&self) -> Result<ProcList> {
        self.master.show_proc().await.map_err(|e| anyhow!(e))
    }

    /// The watcher's arguments for this rig, runtime flags included when `runtime`.
    fn watcher_args(&self, runtime: bool) -> Vec<String> {
        let mut args = vec![
            "--etcd".to_string(),
            self.url.clone(),
            "--haproxy-config".into(),
            BASE_CONFIG.into(),
            "--master-socket".into(),
            self.master.path.display().to_string(),
            "--output".into(),
            self.output.display().to_string(),
        ];
        if runtime {
            args.extend([
                "--runtime-socket".into(),
                self.admin.display().to_string(),
                "--server-state-file".into(),
                self.dir.join("server-state").display().to_string(),
            ]);
        }
        args
    }

    /// Starts the watcher with `args`; its log (text, `RUST_LOG=info`) goes to a file.
    fn spawn_watcher(&self, args: Vec<String>) -> Result<Watcher> {
        let log = self.dir.join(format!("watcher-{}.log", free_port()));
        let file = File::create(&log).context("creating the watcher log")?;
        let child = Command::new(WATCHER)
            .args(&args)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {WATCHER} (cargo build --release first)"))?;
        let shown = self.shown(&args);
        Ok(Watcher {
            guard: Guard(child),
            log,
            shown,
        })
    }

    /// Starts the watcher and waits until HAProxy runs its first configuration (the watcher
    /// always reloads once at start) and the minimum reload interval has passed.
    async fn start_watcher(&self, args: Vec<String>) -> Result<Watcher> {
        let before = self.show_proc().await?.reloads;
        let mut watcher = self.spawn_watcher(args)?;
        self.wait_reload(&mut watcher, before, Duration::from_secs(60))
            .await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        Ok(watcher)
    }

    /// Waits until the master has reloaded more than `before` times; returns when it saw it.
    async fn wait_reload(
        &self,
        watcher: &mut Watcher,
        before: u64,
        timeout: Duration,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = self.show_proc().await {
                if p.reloads > before && p.current_workers().next().is_some() {
                    return Ok(Instant::now());
                }
            }
            watcher.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "HAProxy did not reload within {timeout:?}; watcher log:\n{}",
                    watcher.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A command line as printed: temporary paths as `$DIR`, etcd's URL as `$ETCD`, long
    /// comma lists shortened.
    fn shown(&self, args: &[String]) -> String {
        let dir = self.dir.display().to_string();
        let mut out = String::from("dockreg-haproxy");
        for a in args {
            let mut a = a.replace(&dir, "$DIR").replace(&self.url, "$ETCD");
            let items: Vec<&str> = a.split(',').collect();
            if items.len() > 4 {
                a = format!(
                    "{},{},…,{} ({} items)",
                    items[0],
                    items[1],
                    items[items.len() - 1],
                    items.len()
                );
            }
            out.push(' ');
            out.push_str(&a);
        }
        out
    }

    /// Puts `value` under every key, in transactions of at most [`TXN_OPS`] operations.
    async fn put_all(&mut self, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::put(k.as_str(), "running", None))
                .collect();
            self.client
                .txn(Txn::new().and_then(ops))
                .await
                .context("etcd txn")?;
        }
        Ok(())
    }

    async fn put(&mut self, key: &str) -> Result<()> {
        self.client
            .put(key, "running", None)
            .await
            .with_context(|| format!("etcd put {key}"))?;
        Ok(())
    }

    async fn delete(&mut self, key: &str) -> Result<()> {
        self.client
            .delete(key, None)
            .await
            .with_context(|| format!("etcd delete {key}"))?;
        Ok(())
    }
}

/// The running watcher.
struct Watcher {
    guard: Guard,
    log: PathBuf,
    /// Its command line as printed.
    shown: String,
}

/// What the watcher's log says.
#[derive(Debug, Default)]
struct LogCounts {
    runtime: usize,
    reload: usize,
    warnings: usize,
    errors: usize,
    /// The first few distinct warning and error lines.
    problems: Vec<String>,
}

impl Watcher {
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.guard.0.try_wait()? {
            bail!(
                "the watcher exited ({status}); its log:\n{}",
                self.log_tail(20)
            );
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    fn counts(&self) -> LogCounts {
        let mut c = LogCounts::default();
        for line in self.log_text().lines() {
            c.runtime += usize::from(line.contains("path=runtime"));
            c.reload += usize::from(line.contains("path=reload"));
            let warn = line.contains(" WARN ");
            let error = line.contains(" ERROR ");
            c.warnings += usize::from(warn);
            c.errors += usize::from(error);
            if (warn || error) && c.problems.len() < 3 {
                // Without the timestamp, so repeats of one message count once.
                let msg = line.split_once(' ').map_or(line, |(_, rest)| rest);
                let msg: String = msg.chars().take(240).collect();
                if !c.problems.contains(&msg) {
                    c.problems.push(msg);
                }
            }
        }
        c
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `demo_backend` serving `n` free loopback ports; answers `bench <address>`. The servers keep
/// running whatever etcd says, so requests in flight on a removed server finish.
async fn start_backends(n: usize) -> Result<(Guard, Vec<SocketAddr>)> {
    let b = DemoBackends::start(Path::new(BACKEND_BIN), ID_PREFIX, n).await;
    Ok((b.guard, b.addrs))
}

/// One command on HAProxy's admin socket (non-interactive: HAProxy answers, then closes).
async fn admin(path: &Path, cmd: &str) -> Result<String> {
    admin_command(path, cmd, Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!(e))
}

// ---------------------------------------------------------------------------------------------
// An HTTP client through HAProxy's frontend.

/// Who answered a `GET /`.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A backend's `200` body.
    Ok(String),
    /// Any other status (HAProxy's `503` when no server is up).
    Status(u16),
    /// No answer: connection refused, reset, or a timeout.
    Failed,
}

/// A keep-alive HTTP/1.1 client that reconnects when HAProxy closes the connection.
struct Probe {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    requests: u64,
    /// Requests retried on a new connection because a kept-alive one was closed under them.
    retried: u64,
    failed: u64,
    /// Time spent in requests.
    busy: Duration,
}

impl Probe {
    fn new(addr: SocketAddr) -> Probe {
        Probe {
            addr,
            conn: None,
            buf: Vec::with_capacity(4096),
            requests: 0,
            retried: 0,
            failed: 0,
            busy: Duration::ZERO,
        }
    }

    async fn get(&mut self) -> Answer {
        let started = Instant::now();
        let answer = self.get_once().await;
        self.busy += started.elapsed();
        answer
    }

    async fn get_once(&mut self) -> Answer {
        self.requests += 1;
        let reused = self.conn.is_some();
        if let Some(a) = self.attempt().await {
            return a;
        }
        // A kept-alive connection may be closed by an old worker just as we send: retry once
        // on a new one, as HTTP clients do for idempotent requests.
        if reused {
            self.retried += 1;
            if let Some(a) = self.attempt().await {
                return a;
            }
        }
        self.failed += 1;
        Answer::Failed
    }

    async fn attempt(&mut self) -> Option<Answer> {
        match tokio::time::timeout(Duration::from_secs(2), self.exchange()).await {
            Ok(Ok(a)) => Some(a),
            _ => {
                self.conn = None;
                None
            }
        }
    }

    async fn exchange(&mut self) -> std::io::Result<Answer> {
        use std::io::{Error, ErrorKind};
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = TcpStream::connect(self.addr).await?;
                c.set_nodelay(true)?;
                self.conn.insert(c)
            }
        };
        conn.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await?;
        let buf = &mut self.buf;
        buf.clear();
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if read_more(conn, buf).await? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status line"))?;
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no content-length"))?;
        let close = header("connection").is_some_and(|v| v.contains("close"));
        while buf.len() < head_end + length {
            if read_more(conn, buf).await? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        if close {
            self.conn = None;
        }
        Ok(if status == 200 {
            Answer::Ok(body)
        } else {
            Answer::Status(status)
        })
    }

    /// Sends requests back to back until `want` holds; the instant of that answer.
    async fn until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&Answer) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.get().await;
            let now = Instant::now();
            if want(&a) {
                return Some(now);
            }
            if now > deadline {
                return None;
            }
        }
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = conn.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// 1. Routing latency.

struct LatencyRun {
    fast: bool,
    command: String,
    puts: Vec<f64>,
    deletes: Vec<f64>,
    missed: usize,
    probe: (u64, u64, u64),
    poll_us: f64,
    counts: LogCounts,
}

async fn latency_run(fast: bool, pairs: usize, gap: Duration) -> Result<LatencyRun> {
    let name = if fast {
        "latency-fast"
    } else {
        "latency-reload"
    };
    let mut rig = Rig::start(name).await?;
    let (_backends, addrs) = start_backends(1).await?;
    let server = addrs[0];
    let watcher = rig.start_watcher(rig.watcher_args(fast)).await?;
    let key = format!("/service/{server}");
    let from_server = Answer::Ok(format!("{ID_PREFIX} {server}\n"));
    let mut probe = Probe::new(rig.http);
    let first = probe.get().await;
    if first != Answer::Status(503) {
        bail!("{name}: before the first put HAProxy should answer 503, got {first:?}");
    }
    let (mut puts, mut deletes, mut missed) = (Vec::new(), Vec::new(), 0);
    for i in 0..pairs {
        for put in [true, false] {
            let t0 = Instant::now();
            if put {
                rig.put(&key).await?;
            } else {
                rig.delete(&key).await?;
            }
            let seen = probe
                .until(CHANGE_TIMEOUT, |a| {
                    if put {
                        *a == from_server
                    } else {
                        *a == Answer::Status(503)
                    }
                })
                .await;
            match seen {
                Some(t) if put => puts.push(ms(t - t0)),
                Some(t) => deletes.push(ms(t - t0)),
                None => {
                    missed += 1;
                    eprintln!(
                        "bench: {name}: change {i} ({}) not seen within {CHANGE_TIMEOUT:?}",
                        if put { "put" } else { "delete" }
                    );
                }
            }
            tokio::time::sleep(gap).await;
        }
    }
    Ok(LatencyRun {
        fast,
        command: watcher.shown.clone(),
        puts,
        deletes,
        missed,
        probe: (probe.requests, probe.retried, probe.failed),
        poll_us: probe.busy.as_secs_f64() * 1e6 / probe.requests.max(1) as f64,
        counts: watcher.counts(),
    })
}

async fn latency(runtime_available: bool) -> Result<String> {
    let mut runs = Vec::new();
    if runtime_available {
        eprintln!("bench: latency, fast path: {FAST_PAIRS} puts + {FAST_PAIRS} deletes ...");
        runs.push(latency_run(true, FAST_PAIRS, FAST_GAP).await?);
    }
    eprintln!("bench: latency, reload path: {RELOAD_PAIRS} puts + {RELOAD_PAIRS} deletes ...");
    runs.push(latency_run(false, RELOAD_PAIRS, RELOAD_GAP).await?);

    let mut out = String::new();
    writeln!(
        out,
        "### 1. Routing latency: etcd write → traffic through HAProxy\n"
    )?;
    for r in &runs {
        let path = if r.fast { "fast path" } else { "reload path" };
        writeln!(out, "- {path}: `{}`", r.command)?;
    }
    writeln!(
        out,
        "- one server of `/service` put and deleted in turn, changes {} ms (fast) / {} ms \
         (reload) apart; a keep-alive client polls `GET /` through the frontend back to back \
         until the first `200` from that server (put) or the first `503` (delete)",
        FAST_GAP.as_millis(),
        RELOAD_GAP.as_millis()
    )?;
    if !runtime_available {
        writeln!(
            out,
            "- **fast path not run**: `{WATCHER} --help` has no `--runtime-socket`"
        )?;
    }
    writeln!(out)?;
    writeln!(out, "| path | change | samples | p50 (ms) | p99 (ms) | max (ms) | target | missed | watcher log: `path=runtime` / `path=reload` |")?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---|---:|---:|")?;
    for r in &runs {
        let (path, target) = if r.fast {
            ("fast (runtime API)", "p50 ≤ 5, p99 ≤ 10")
        } else {
            ("reload", "p50 ≤ 150")
        };
        for (change, v) in [("put → 200 from it", &r.puts), ("delete → 503", &r.deletes)] {
            let (p50, p99) = p50_p99(v.clone());
            let max = v.iter().copied().fold(f64::NAN, f64::max);
            writeln!(
                out,
                "| {path} | {change} | {} | {p50:.2} | {p99:.2} | {max:.2} | {target} | {} | {} / {} |",
                v.len(),
                r.missed,
                r.counts.runtime,
                r.counts.reload
            )?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "- the log counts include the watcher's reload at start; a `path=reload` beyond it in the \
         fast-path run is a fallback"
    )?;
    for r in &runs {
        let path = if r.fast { "fast path" } else { "reload path" };
        let (requests, retried, failed) = r.probe;
        writeln!(
            out,
            "- {path}: {requests} polls, {:.0} µs each on average, {retried} retried on a new \
             connection, {failed} without answer; watcher log: {} warnings, {} errors",
            r.poll_us, r.counts.warnings, r.counts.errors
        )?;
        for p in &r.counts.problems {
            writeln!(out, "  - `{p}`")?;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 2. Churn under load.

/// Figures `wrk` prints; absent lines mean 0.
#[derive(Debug, Default)]
struct WrkResult {
    requests: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    non_2xx_3xx: u64,
}

impl WrkResult {
    fn parse(text: &str) -> Result<WrkResult> {
        let mut r = WrkResult::default();
        let mut saw_requests = false;
        for line in text.lines().map(str::trim) {
            if line.contains(" requests in ") {
                r.requests = first_number(line)?;
                saw_requests = true;
            } else if let Some(rest) = line.strip_prefix("Socket errors:") {
                for part in rest.split(',') {
                    let mut w = part.split_whitespace();
                    let (Some(kind), Some(n)) = (w.next(), w.next()) else {
                        continue;
                    };
                    let n: u64 = n.parse().with_context(|| format!("wrk: {line:?}"))?;
                    match kind {
                        "connect" => r.connect = n,
                        "read" => r.read = n,
                        "write" => r.write = n,
                        "timeout" => r.timeout = n,
                        _ => {}
                    }
                }
            } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
                r.non_2xx_3xx = first_number(rest)?;
            }
        }
        if !saw_requests {
            bail!("no request count in wrk's output:\n{text}");
        }
        Ok(r)
    }

    fn errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.non_2xx_3xx
    }
}

fn first_number(text: &str) -> Result<u64> {
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("no number at the start of {text:?}"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChurnKind {
    Backends,
    Template,
}

struct ChurnRun {
    kind: ChurnKind,
    command: String,
    wrk_commands: [String; 2],
    secs: u64,
    changes: usize,
    wrk: [WrkResult; 2],
    reloads: u64,
    failed_reloads: u64,
    old_workers_max: usize,
    old_workers_end: usize,
    counts: LogCounts,
}

/// A small deterministic PRNG (xorshift64*), enough to space and pick changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn old_workers(p: &ProcList) -> usize {
    p.workers.iter().filter(|(_, r)| *r > 0).count()
}

/// Writes `text` to `path` the way editors do: a new file renamed over the old one.
fn replace_file(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming over {}", path.display()))
}

async fn churn_run(kind: ChurnKind, secs: u64, runtime: bool) -> Result<ChurnRun> {
    let name = match kind {
        ChurnKind::Backends => "churn-backends",
        ChurnKind::Template => "churn-template",
    };
    let mut rig = Rig::start(name).await?;
    let (_backends, addrs) = start_backends(CHURN_STABLE + CHURN_POOL).await?;
    let (stable, pool) = addrs.split_at(CHURN_STABLE);
    let stable_keys: Vec<String> = stable.iter().map(|a| format!("/service/{a}")).collect();
    rig.put_all(&stable_keys).await?;

    let mut args = rig.watcher_args(runtime);
    let template = rig.dir.join("templates").join("backends.cfg.tera");
    let original = std::fs::read_to_string(DEFAULT_TEMPLATE)
        .with_context(|| format!("reading {DEFAULT_TEMPLATE}"))?;
    // Three variants in turn, so that even two rewrites coalesced into one apply change the
    // output (two alternating ones would cancel out).
    let variants = TEMPLATE_RETRIES
        .map(|n| original.replacen("    retries 2\n", &format!("    retries {n}\n"), 1));
    if kind == ChurnKind::Template {
        if variants[1] == original {
            bail!("{DEFAULT_TEMPLATE} has no `retries 2` line to vary");
        }
        std::fs::create_dir_all(template.parent().unwrap_or(&rig.dir))?;
        std::fs::write(&template, &variants[0])?;
        args.extend([
            "--template".into(),
            template.display().to_string(),
            "--min-reload-interval".into(),
            TEMPLATE_MIN_RELOAD_INTERVAL.into(),
        ]);
    }
    let watcher = rig.start_watcher(args).await?;

    // Two wrk at once: keep-alive, and a new connection per request.
    let url = format!("http://{}/", rig.http);
    let duration = format!("-d{secs}s");
    let wrk_args: [Vec<&str>; 2] = [
        vec!["-t1", "-c20", &duration, &url],
        vec!["-t1", "-c20", &duration, "-H", "Connection: close", &url],
    ];
    let wrk_commands = wrk_args.clone().map(|a| {
        let shown: Vec<String> = a
            .iter()
            .map(|w| {
                if w.contains(' ') {
                    format!("'{w}'")
                } else {
                    w.replace(&rig.http.port().to_string(), "$PORT")
                }
            })
            .collect();
        format!("wrk {}", shown.join(" "))
    });
    let before = rig.show_proc().await?;
    let mut wrk = Vec::new();
    for a in &wrk_args {
        let child = tokio::process::Command::new("wrk")
            .args(a)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting wrk (apt-get install wrk)")?;
        wrk.push(child);
    }

    // Old workers, sampled twice a second while the load runs.
    let stop = Arc::new(AtomicBool::new(false));
    let max_old = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (stop, max_old, master) = (stop.clone(), max_old.clone(), rig.master.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(p) = master.show_proc().await {
                    max_old.fetch_max(old_workers(&p), Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rng = Rng(0x5eed_1e55_c0ff_ee00);
    let mut changes = 0;
    match kind {
        ChurnKind::Backends => {
            let keys: Vec<String> = pool.iter().map(|a| format!("/service/{a}")).collect();
            let mut registered = vec![false; keys.len()];
            loop {
                let wait = Duration::from_millis(10 + rng.below(41) as u64);
                if Instant::now() + wait >= deadline {
                    break;
                }
                tokio::time::sleep(wait).await;
                let i = rng.below(keys.len());
                if registered[i] {
                    rig.delete(&keys[i]).await?;
                } else {
                    rig.put(&keys[i]).await?;
                }
                registered[i] = !registered[i];
                changes += 1;
            }
        }
        ChurnKind::Template => loop {
            if Instant::now() + TEMPLATE_PERIOD >= deadline {
                break;
            }
            tokio::time::sleep(TEMPLATE_PERIOD).await;
            changes += 1;
            replace_file(&template, &variants[changes % variants.len()])?;
        },
    }

    let mut wrk_results = Vec::new();
    for child in wrk {
        let out = child.wait_with_output().await.context("waiting for wrk")?;
        let text = String::from_utf8_lossy(&out.stdout);
        wrk_results.push(WrkResult::parse(&text)?);
    }
    let after = rig.show_proc().await?;
    stop.store(true, Ordering::Relaxed);
    sampler.await?;
    let old_workers_end = old_workers(&after);
    let [keep_alive, close]: [WrkResult; 2] = wrk_results
        .try_into()
        .map_err(|_| anyhow!("expected two wrk results"))?;
    Ok(ChurnRun {
        kind,
        command: watcher.shown.clone(),
        wrk_commands,
        secs,
        changes,
        wrk: [keep_alive, close],
        reloads: after.reloads.saturating_sub(before.reloads),
        failed_reloads: after.failed.saturating_sub(before.failed),
        old_workers_max: max_old.load(Ordering::Relaxed).max(old_workers_end),
        old_workers_end,
        counts: watcher.counts(),
    })
}

async fn churn(runtime_available: bool) -> Result<String> {
    let secs: u64 = match std::env::var("BENCH_CHURN_SECS") {
        Ok(s) => s
            .parse()
            .with_context(|| format!("BENCH_CHURN_SECS={s:?}: not a number of seconds"))?,
        Err(_) => 60,
    };
    let mut runs = Vec::new();
    for kind in [ChurnKind::Backends, ChurnKind::Template] {
        eprintln!("bench: churn {kind:?}, {secs} s under two wrk ...");
        runs.push(churn_run(kind, secs, runtime_available).await?);
    }

    let mut out = String::new();
    writeln!(out, "### 2. Churn under load ({secs} s each)\n")?;
    for r in &runs {
        let what = match r.kind {
            ChurnKind::Backends => format!(
                "(a) backend churn: {CHURN_STABLE} stable servers, one of {CHURN_POOL} others \
                 added or removed every 10–50 ms"
            ),
            ChurnKind::Template => format!(
                "(b) template churn: the template rewritten every {} ms, `retries` cycling \
                 through {TEMPLATE_RETRIES:?} (a reload each; `--min-reload-interval \
                 {TEMPLATE_MIN_RELOAD_INTERVAL}` so that HAProxy can do them all)",
                TEMPLATE_PERIOD.as_millis()
            ),
        };
        writeln!(out, "- {what}: `{}`", r.command)?;
    }
    if let Some(r) = runs.first() {
        writeln!(
            out,
            "- load, both at once: `{}` and `{}`",
            r.wrk_commands[0], r.wrk_commands[1]
        )?;
    }
    if !runtime_available {
        writeln!(
            out,
            "- **runtime flags not given**: `{WATCHER} --help` has no `--runtime-socket`"
        )?;
    }
    writeln!(out)?;
    writeln!(out, "| run | changes | HAProxy reloads (`show proc`) / failed | old workers max / at end | log `path=runtime` / `path=reload` | client | requests | connect | read | write | timeout | non-2xx/3xx | target |")?;
    writeln!(
        out,
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for r in &runs {
        let run = match r.kind {
            ChurnKind::Backends => "(a) backends",
            ChurnKind::Template => "(b) template",
        };
        for (client, w) in ["keep-alive", "Connection: close"].iter().zip(&r.wrk) {
            writeln!(
                out,
                "| {run} | {} | {} / {} | {} / {} | {} / {} | {client} | {} | {} | {} | {} | {} | {} | 0 errors |",
                r.changes,
                r.reloads,
                r.failed_reloads,
                r.old_workers_max,
                r.old_workers_end,
                r.counts.runtime,
                r.counts.reload,
                w.requests,
                w.connect,
                w.read,
                w.write,
                w.timeout,
                w.non_2xx_3xx
            )?;
        }
    }
    writeln!(out)?;
    for r in &runs {
        let errors: u64 = r.wrk.iter().map(WrkResult::errors).sum();
        let requests: u64 = r.wrk.iter().map(|w| w.requests).sum();
        writeln!(
            out,
            "- {:?}: {errors} errors in {requests} requests ({:.0} req/s); {} changes applied in \
             {} applies (`--debounce` coalesces, `--debounce-max` 1 s; log counts include the \
             reload at start); watcher log: {} warnings, {} errors",
            r.kind,
            requests as f64 / r.secs as f64,
            r.changes,
            r.counts.runtime + r.counts.reload,
            r.counts.warnings,
            r.counts.errors
        )?;
        for p in &r.counts.problems {
            writeln!(out, "  - `{p}`")?;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 3. Scale.

/// Endpoint `i` of the scale run: a closed port on 127.1.0.0/16 (nothing listens there and no
/// health check runs, so no traffic is ever sent to it).
fn scale_endpoint(i: usize) -> String {
    format!(
        "127.{}.{}.{}:{}",
        1 + i / 65536,
        (i / 256) % 256,
        i % 256,
        20000 + i % SCALE_PER_BACKEND
    )
}

/// A server's state in `show servers state`: operational state, admin flags, user weight.
#[derive(Debug, Clone, Copy)]
struct ServerState {
    op: u32,
    admin: u32,
    weight: u32,
}

impl ServerState {
    /// Taking new requests: running, no maintenance or drain flag, a weight above 0.
    fn in_rotation(&self) -> bool {
        self.op == 2 && self.admin & 0x3f == 0 && self.weight > 0
    }
}

/// Server `name` in a `show servers state <backend>` answer (fields: be_id be_name srv_id
/// srv_name srv_addr srv_op_state srv_admin_state srv_uweight …); `None` when not listed.
///
/// Deliberately the benchmark's own parser, not `dockreg::haproxy::admin`'s nor the test kit's:
/// the scale run times how soon HAProxy shows a change, and must not measure with the code it
/// measures.
fn server_state(text: &str, name: &str) -> Option<ServerState> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 8 || f[3] != name || f[0].starts_with('#') {
            return None;
        }
        Some(ServerState {
            op: f[5].parse().ok()?,
            admin: f[6].parse().ok()?,
            weight: f[7].parse().ok()?,
        })
    })
}

/// Watches the output file: its text when its size or modification time changed.
struct FileWatch {
    path: PathBuf,
    last: Option<(u64, Option<std::time::SystemTime>)>,
    text: String,
}

impl FileWatch {
    fn new(path: &Path) -> FileWatch {
        FileWatch {
            path: path.to_path_buf(),
            last: None,
            text: String::new(),
        }
    }

    fn text(&mut self) -> &str {
        let meta = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.len(), m.modified().ok()));
        if meta != self.last {
            if let Ok(t) = std::fs::read_to_string(&self.path) {
                self.text = t;
                self.last = meta;
            }
        }
        &self.text
    }
}

#[derive(Default)]
struct ScaleRun {
    command: String,
    load_s: f64,
    start_to_reload_s: f64,
    first_put_to_reload_s: f64,
    servers_rendered: usize,
    haproxy_rss_mb: f64,
    watcher_peak_mb: f64,
    add_rotation: Vec<f64>,
    add_file: Vec<f64>,
    del_rotation: Vec<f64>,
    del_gone: Vec<f64>,
    del_file: Vec<f64>,
    missed: usize,
    counts: LogCounts,
}

async fn scale_run(runtime: bool) -> Result<ScaleRun> {
    let mut rig = Rig::start("scale").await?;
    let mut run = ScaleRun::default();
    // The default template, per service (`BENCH_SCALE_TEMPLATE` names another), without
    // `check`: 10,000 health checks would only measure them.
    let source = std::env::var("BENCH_SCALE_TEMPLATE").unwrap_or(PER_SERVICE_TEMPLATE.into());
    let template_text =
        std::fs::read_to_string(&source).with_context(|| format!("reading {source}"))?;
    let no_check = template_text.replace(" check weight ", " weight ");
    if no_check == template_text {
        bail!("{source}: no ` check weight ` to drop");
    }
    let template = rig.dir.join("templates").join("no-check.cfg.tera");
    std::fs::create_dir_all(template.parent().unwrap_or(&rig.dir))?;
    std::fs::write(&template, no_check)?;

    let names: Vec<String> = (0..SCALE_BACKENDS).map(|b| format!("svc{b:04}")).collect();
    // `/service` too: the base config's frontend needs its backend.
    let prefixes = std::iter::once("/service".to_string())
        .chain(names.iter().map(|n| format!("/{n}")))
        .collect::<Vec<_>>()
        .join(",");
    let keys: Vec<String> = (0..SCALE_BACKENDS * SCALE_PER_BACKEND)
        .map(|i| format!("/{}/{}", names[i / SCALE_PER_BACKEND], scale_endpoint(i)))
        .collect();

    // All keys first, then the watcher: its start lists them at one revision, renders once and
    // reloads HAProxy with every server.
    let before = rig.show_proc().await?.reloads;
    let t0 = Instant::now();
    rig.put_all(&keys).await?;
    run.load_s = t0.elapsed().as_secs_f64();
    let mut args = rig.watcher_args(runtime);
    args.extend([
        "--prefix".into(),
        prefixes,
        "--template".into(),
        template.display().to_string(),
    ]);
    if runtime {
        args.extend(["--drain-timeout".into(), SCALE_DRAIN.into()]);
    }
    let t_spawn = Instant::now();
    let mut watcher = rig.spawn_watcher(args)?;
    run.command = watcher.shown.clone();
    let done = rig
        .wait_reload(&mut watcher, before, Duration::from_secs(120))
        .await?;
    run.start_to_reload_s = (done - t_spawn).as_secs_f64();
    run.first_put_to_reload_s = (done - t0).as_secs_f64();
    let mut file = FileWatch::new(&rig.output);
    run.servers_rendered = file.text().matches("\n    server ").count();

    tokio::time::sleep(Duration::from_secs(1)).await;
    let procs = rig.show_proc().await?;
    let worker = procs
        .current_workers()
        .next()
        .ok_or_else(|| anyhow!("`show proc` lists no current worker"))?;
    run.haproxy_rss_mb = rss_kb(worker).unwrap_or(0) as f64 / 1024.0;

    // Single-server adds and deletes in one backend, each a new address.
    let backend = &names[SCALE_BACKENDS / 2];
    let gone_timeout = CHANGE_TIMEOUT + humantime::parse_duration(SCALE_DRAIN)?;
    for s in 0..SCALE_SAMPLES {
        let addr = scale_endpoint(SCALE_BACKENDS * SCALE_PER_BACKEND + s);
        let key = format!("/{backend}/{addr}");
        let server = addr.replace(':', "_");
        let line = format!("    server {server} ");
        let cmd = format!("show servers state {backend}");

        let t0 = Instant::now();
        rig.put(&key).await?;
        let (mut rotation, mut in_file) = (None, None);
        while rotation.is_none() || in_file.is_none() {
            let state = server_state(&admin(&rig.admin, &cmd).await?, &server);
            let now = Instant::now();
            if rotation.is_none() && state.is_some_and(|s| s.in_rotation()) {
                rotation = Some(ms(now - t0));
            }
            if in_file.is_none() && file.text().contains(&line) {
                in_file = Some(ms(now - t0));
            }
            if now - t0 > CHANGE_TIMEOUT {
                break;
            }
        }
        match (rotation, in_file) {
            (Some(r), Some(f)) => {
                run.add_rotation.push(r);
                run.add_file.push(f);
            }
            _ => {
                run.missed += 1;
                eprintln!("bench: scale: add {s} not seen within {CHANGE_TIMEOUT:?}");
            }
        }
        tokio::time::sleep(FAST_GAP).await;

        let t0 = Instant::now();
        rig.delete(&key).await?;
        let (mut out, mut gone, mut off_file) = (None, None, None);
        while gone.is_none() || off_file.is_none() {
            let state = server_state(&admin(&rig.admin, &cmd).await?, &server);
            let now = Instant::now();
            if out.is_none() && !state.is_some_and(|s| s.in_rotation()) {
                out = Some(ms(now - t0));
            }
            if gone.is_none() && state.is_none() {
                gone = Some(ms(now - t0));
            }
            if off_file.is_none() && !file.text().contains(&line) {
                off_file = Some(ms(now - t0));
            }
            if now - t0 > gone_timeout {
                break;
            }
        }
        match (out, gone, off_file) {
            (Some(o), Some(g), Some(f)) => {
                run.del_rotation.push(o);
                run.del_gone.push(g);
                run.del_file.push(f);
            }
            _ => {
                run.missed += 1;
                eprintln!("bench: scale: delete {s} not complete within {gone_timeout:?}");
            }
        }
        tokio::time::sleep(FAST_GAP).await;
    }
    watcher.check_running()?;
    run.watcher_peak_mb = peak_rss_kb(watcher.guard.pid()).unwrap_or(0) as f64 / 1024.0;
    run.counts = watcher.counts();
    Ok(run)
}

async fn scale(runtime_available: bool) -> Result<String> {
    eprintln!(
        "bench: scale, {} servers in {SCALE_BACKENDS} backends ...",
        SCALE_BACKENDS * SCALE_PER_BACKEND
    );
    let r = scale_run(runtime_available).await?;
    let mut out = String::new();
    writeln!(
        out,
        "### 3. Scale: {} servers in {SCALE_BACKENDS} backends\n",
        SCALE_BACKENDS * SCALE_PER_BACKEND
    )?;
    writeln!(out, "- `{}`", r.command)?;
    writeln!(
        out,
        "- template: `{DEFAULT_TEMPLATE}` without `check`; endpoints on closed ports of \
         127.1.0.0/16 (no traffic, no health check); all keys put first, then the watcher started"
    )?;
    writeln!(
        out,
        "- adds and deletes: `/svc{:04}`, a new address each time, {} ms apart; \"in rotation\" = \
         listed by `show servers state` on the admin socket as running with no maintenance or \
         drain flag and a weight > 0; \"gone\" = no longer listed; \"file\" = the output file \
         has / lacks its `server` line",
        SCALE_BACKENDS / 2,
        FAST_GAP.as_millis()
    )?;
    if !runtime_available {
        writeln!(
            out,
            "- **runtime flags not given**: `{WATCHER} --help` has no `--runtime-socket`"
        )?;
    }
    writeln!(out)?;
    writeln!(out, "| measure | result | samples |")?;
    writeln!(out, "|---|---:|---:|")?;
    writeln!(
        out,
        "| etcd load: {} puts in transactions of {TXN_OPS} (s) | {:.2} | 1 |",
        SCALE_BACKENDS * SCALE_PER_BACKEND,
        r.load_s
    )?;
    writeln!(
        out,
        "| watcher start → HAProxy runs the config, initial reload (s) | {:.2} | 1 |",
        r.start_to_reload_s
    )?;
    writeln!(
        out,
        "| first put batch → HAProxy runs the config (s) | {:.2} | 1 |",
        r.first_put_to_reload_s
    )?;
    writeln!(
        out,
        "| `server` lines in the output at that reload | {} | 1 |",
        r.servers_rendered
    )?;
    writeln!(
        out,
        "| HAProxy current worker RSS, `VmRSS` (MB) | {:.1} | 1 |",
        r.haproxy_rss_mb
    )?;
    writeln!(
        out,
        "| watcher peak RSS, `VmHWM` (MB) | {:.1} | 1 |",
        r.watcher_peak_mb
    )?;
    for (what, v) in [
        ("add: put → in rotation (admin socket)", &r.add_rotation),
        ("add: put → in the output file", &r.add_file),
        (
            "delete: delete → out of rotation (admin socket)",
            &r.del_rotation,
        ),
        (
            "delete: delete → gone from `show servers state`",
            &r.del_gone,
        ),
        ("delete: delete → out of the output file", &r.del_file),
    ] {
        let (p50, p99) = p50_p99(v.clone());
        writeln!(
            out,
            "| {what}, p50 / p99 (ms) | {p50:.2} / {p99:.2} | {} |",
            v.len()
        )?;
    }
    writeln!(out, "| changes not complete in time | {} | |", r.missed)?;
    writeln!(
        out,
        "| watcher log: `path=runtime` / `path=reload` | {} / {} | |",
        r.counts.runtime, r.counts.reload
    )?;
    writeln!(
        out,
        "| watcher log: warnings / errors | {} / {} | |",
        r.counts.warnings, r.counts.errors
    )?;
    if !r.counts.problems.is_empty() {
        writeln!(out)?;
    }
    for p in &r.counts.problems {
        writeln!(out, "- `{p}`")?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

/// Whether the built watcher has the runtime-API flags.
fn runtime_flags_available() -> Result<bool> {
    let out = Command::new(WATCHER)
        .arg("--help")
        .output()
        .with_context(|| format!("running {WATCHER} --help (cargo build --release first)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--runtime-socket"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let all = sections.is_empty() || sections.iter().any(|s| s == "all");
    for s in &sections {
        if !["latency", "churn", "scale", "all"].contains(&s.as_str()) {
            bail!("unknown section {s:?}: use latency, churn, scale or all");
        }
    }
    let wanted = |s: &str| all || sections.iter().any(|x| x == s);
    for f in [WATCHER, BACKEND_BIN, BASE_CONFIG, DEFAULT_TEMPLATE] {
        if !Path::new(f).exists() {
            bail!(
                "{f} not found: run from the repository root after \
                 `cargo build --release --bin dockreg-haproxy --examples`"
            );
        }
    }
    let runtime = runtime_flags_available()?;
    if !runtime {
        eprintln!("bench: {WATCHER} has no --runtime-socket yet: fast-path runs are skipped");
    }
    let started = Instant::now();
    let command = std::iter::once("target/release/examples/bench_hitless".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    println!("## bench_hitless\n\n`{command}`\n");
    if wanted("latency") {
        println!("{}", latency(runtime).await?);
    }
    if wanted("churn") {
        println!("{}", churn(runtime).await?);
    }
    if wanted("scale") {
        println!("{}", scale(runtime).await?);
    }
    println!("Total: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

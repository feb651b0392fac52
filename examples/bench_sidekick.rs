//! Benchmark of the `dockreg` sidekick in real containers of the local Docker engine, against a
//! real etcd on the host. Prints figures; asserts nothing.
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile sidekick --bin dockreg \
//!     --target x86_64-unknown-linux-gnu --target-dir target/static
//! cargo run --release --example bench_sidekick
//! ```
//!
//! It builds the image of `examples/sidekick/` (the static `dockreg` and Debian's static
//! `/bin/busybox` copied into a temporary build context; nothing is pulled), starts etcd on
//! 127.0.0.1 and on the Docker bridge's address, and runs the containers as the original
//! sidekick was run: `docker run -d -p 8000 -v /var/run/docker.sock:… -e IP=127.0.0.1
//! -e DOCKREG_ETCD=http://<bridge>:<port> <image>`, with the image's default flags (wrapper
//! mode, `--check http`, `--interval 5s`, `--ttl 10s`, `--drain 2s`). Then:
//!
//! 1. starts 10 containers one after another: `docker run -d` issued → returned, and returned
//!    → the key is in etcd;
//! 2. `docker stop`s 5 of them, one after another: issued → the key is gone;
//! 3. with the other 5 registered and idle for 20 s: the sidekick's (the container's PID 1)
//!    `VmRSS` and `VmHWM`, its CPU time over the window (utime + stime from /proc/<pid>/stat, as
//!    a percentage of one core), and etcd's writes in that window from its `/metrics`
//!    (`etcd_mvcc_put_total`, `…_delete_total`, `…_txn_total` and
//!    `etcd_server_proposals_committed_total`), per instance and second — along with the lease
//!    keepalives and reads, which are not writes;
//! 4. `docker stop`s the last 5 (more samples for step 2).
//!
//! Key times come from an etcd watch on `/service/` (etcd-client), stamped when each event
//! arrives. Every container and the image are removed at the end, on error and on Ctrl-C.
//! Takes about a minute.
//!
//! `BENCH_SIDEKICK_BIN=<path>` measures another static `dockreg` build instead (another
//! profile, say) in the same image.

#[path = "common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use common::{p50_p99, proc_status_kb};
use dockreg_testkit::docker::{
    build_image as docker_build, stage_binaries, static_dockreg_path, try_bridge_gateway,
    try_docker, BUSYBOX, TRIPLE,
};
use dockreg_testkit::etcd::Etcd;
use etcd_client::{Client, EventType, WatchOptions};
use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const IMAGE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/sidekick");
/// Containers started (and stopped) one after another.
const CONTAINERS: usize = 10;
/// Containers left registered for the idle window.
const IDLE_CONTAINERS: usize = 5;
const IDLE_WINDOW: Duration = Duration::from_secs(20);
const KEY_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `docker <args>`; returns its trimmed stdout, or Docker's message as the error.
fn docker(args: &[&str]) -> Result<String> {
    try_docker(args).map_err(|e| anyhow!(e))
}

/// Everything this benchmark created in Docker; removed on drop (containers first).
struct DockerGuard {
    image: Option<String>,
    containers: Vec<String>,
}

impl Drop for DockerGuard {
    fn drop(&mut self) {
        if !self.containers.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(self.containers.iter().map(String::as_str));
            if let Err(e) = docker(&args) {
                eprintln!("bench: cleanup: {e:#}");
            }
        }
        if let Some(image) = &self.image {
            if let Err(e) = docker(&["rmi", image]) {
                eprintln!("bench: cleanup: {e:#}");
            }
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Builds the image of examples/sidekick/ with the static binaries; returns its tag.
fn build_image(dir: &Path, guard: &mut DockerGuard) -> Result<String> {
    let ctx = dir.join("image");
    copy_dir(Path::new(IMAGE_DIR), &ctx).context("copying examples/sidekick")?;
    stage_binaries(&ctx, Path::new(&sidekick_bin())).map_err(|e| anyhow!(e))?;
    let tag = format!("dockreg-sidekick-bench:run{}", std::process::id());
    docker_build(&ctx, &tag).map_err(|e| anyhow!(e))?;
    guard.image = Some(tag.clone());
    Ok(tag)
}

/// When each key was last put and deleted, from a watch on `/service/`.
struct Events {
    rx: UnboundedReceiver<(Instant, EventType, String)>,
    puts: HashMap<String, Instant>,
    deletes: HashMap<String, Instant>,
}

impl Events {
    async fn start(client: &mut Client) -> Result<Events> {
        let mut stream = client
            .watch("/service/", Some(WatchOptions::new().with_prefix()))
            .await?;
        let (tx, rx) = unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(resp)) = stream.message().await {
                let now = Instant::now();
                for ev in resp.events() {
                    if let Some(kv) = ev.kv() {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let _ = tx.send((now, ev.event_type(), key));
                    }
                }
            }
        });
        Ok(Events {
            rx,
            puts: HashMap::new(),
            deletes: HashMap::new(),
        })
    }

    /// Waits until `key` was put (or deleted) at or after `since`; returns when that was seen.
    async fn wait(&mut self, key: &str, put: bool, since: Instant) -> Result<Instant> {
        let deadline = tokio::time::Instant::now() + KEY_TIMEOUT;
        loop {
            let seen = if put { &self.puts } else { &self.deletes };
            if let Some(&t) = seen.get(key).filter(|&&t| t >= since) {
                return Ok(t);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((t, kind, k))) => {
                    let map = match kind {
                        EventType::Put => &mut self.puts,
                        EventType::Delete => &mut self.deletes,
                    };
                    map.insert(k, t);
                }
                Ok(None) => bail!("the etcd watch ended"),
                Err(_) => bail!(
                    "key {key} not {} within {KEY_TIMEOUT:?}",
                    if put { "put" } else { "deleted" }
                ),
            }
        }
    }
}

/// A started app container.
struct App {
    id: String,
    key: String,
    pid: u32,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `docker stop`s `app` and returns the time from issuing it until the key was deleted.
async fn stop(app: &App, events: &mut Events) -> Result<f64> {
    let t0 = Instant::now();
    let mut cli = Command::new("docker")
        .args(["stop", &app.id])
        .stdout(Stdio::null())
        .spawn()
        .context("running docker stop")?;
    let gone = events.wait(&app.key, false, t0).await;
    let status = tokio::task::spawn_blocking(move || cli.wait()).await??;
    if !status.success() {
        bail!("docker stop {} failed", app.id);
    }
    Ok(ms(gone?.duration_since(t0)))
}

/// A `kB` field of /proc/<pid>/status (`VmRSS`, ...).
fn status_kb(pid: u32, field: &str) -> Result<u64> {
    proc_status_kb(pid, field).ok_or_else(|| anyhow!("no {field} in /proc/{pid}/status"))
}

/// utime + stime of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14,
    // stime 15.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or_else(|| anyhow!("unexpected /proc/{pid}/stat"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Ok(utime + stime)
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

/// Median and 99th percentile, as printed.
fn p50_p99_text(v: Vec<f64>) -> String {
    let (p50, p99) = p50_p99(v);
    format!("{p50:.1} / {p99:.1}")
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn mean_max(v: &[f64], digits: usize) -> String {
    let mean = mean(v);
    let max = v.iter().copied().fold(f64::NAN, f64::max);
    format!("{mean:.digits$} / {max:.digits$}")
}

async fn run() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut guard = DockerGuard {
        image: None,
        containers: Vec::new(),
    };
    let bridge = try_bridge_gateway().map_err(|e| anyhow!(e))?;
    eprintln!("bench: building the image of examples/sidekick/ ...");
    let image = build_image(dir.path(), &mut guard)?;
    let etcd = Etcd::start_reachable(dir.path(), &bridge).await;
    let (url, container_url) = (etcd.url(), etcd.container_url());
    let size = std::fs::metadata(sidekick_bin())?.len() as f64 / 1e6;
    eprintln!(
        "bench: etcd on {url} and {container_url}; image {image} with {} ({size:.1} MB)",
        sidekick_bin()
    );
    let mut client = Client::connect([url.as_str()], None).await?;
    let mut events = Events::start(&mut client).await?;
    let etcd_env = format!("DOCKREG_ETCD={container_url}");
    let label = format!("dockreg-bench={}", std::process::id());

    // 1. Start → key present.
    let (mut run_ms, mut key_ms, mut total_ms) = (Vec::new(), Vec::new(), Vec::new());
    let mut apps = Vec::new();
    for i in 0..CONTAINERS {
        let t0 = Instant::now();
        let id = docker(&[
            "run",
            "-d",
            "--label",
            &label,
            "-p",
            "8000",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-e",
            "IP=127.0.0.1",
            "-e",
            &etcd_env,
            &image,
        ])?;
        let returned = Instant::now();
        guard.containers.push(id.clone());
        let ports = docker(&["port", &id, "8000/tcp"])?;
        let port = ports
            .lines()
            .find_map(|l| l.strip_prefix("0.0.0.0:"))
            .ok_or_else(|| anyhow!("no IPv4 binding for 8000/tcp: {ports}"))?;
        let key = format!("/service/127.0.0.1:{port}");
        // The key may appear before `docker run` returns; count from issuing the command.
        let put = events.wait(&key, true, t0).await.with_context(|| {
            format!(
                "container {id}: {}",
                docker(&["logs", &id]).unwrap_or_default()
            )
        })?;
        run_ms.push(ms(returned - t0));
        key_ms.push(put.saturating_duration_since(returned).as_secs_f64() * 1000.0);
        total_ms.push(ms(put - t0));
        let pid: u32 = docker(&["inspect", "--format", "{{.State.Pid}}", &id])?.parse()?;
        eprintln!(
            "bench: container {}/{CONTAINERS} {} registered {key} {:.0} ms after docker run returned",
            i + 1,
            &id[..12],
            key_ms[i]
        );
        apps.push(App { id, key, pid });
    }

    // 2. Stop half of them → key gone.
    let mut stop_ms = Vec::new();
    let idle = apps.split_off(CONTAINERS - IDLE_CONTAINERS);
    for app in &apps {
        let t = stop(app, &mut events).await?;
        eprintln!(
            "bench: docker stop {} → key gone in {t:.1} ms",
            &app.id[..12]
        );
        stop_ms.push(t);
    }

    // 3. Idle window with the other half registered.
    eprintln!(
        "bench: idle window of {IDLE_WINDOW:?} with {IDLE_CONTAINERS} sidekicks registered ..."
    );
    let ticks0: Vec<u64> = idle
        .iter()
        .map(|a| cpu_ticks(a.pid))
        .collect::<Result<_>>()?;
    let m0 = etcd_metrics(&url)?;
    let t0 = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await;
    let m1 = etcd_metrics(&url)?;
    let secs = t0.elapsed().as_secs_f64();
    let ticks1: Vec<u64> = idle
        .iter()
        .map(|a| cpu_ticks(a.pid))
        .collect::<Result<_>>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu: Vec<f64> = ticks0
        .iter()
        .zip(&ticks1)
        .map(|(a, b)| (b - a) as f64 / hz / secs * 100.0)
        .collect();
    let mut rss = Vec::new();
    let mut hwm = Vec::new();
    let mut anon = Vec::new();
    let mut file = Vec::new();
    for app in &idle {
        rss.push(status_kb(app.pid, "VmRSS")? as f64 / 1024.0);
        hwm.push(status_kb(app.pid, "VmHWM")? as f64 / 1024.0);
        anon.push(status_kb(app.pid, "RssAnon")? as f64 / 1024.0);
        file.push(status_kb(app.pid, "RssFile")? as f64 / 1024.0);
    }
    let rate = |names: &[&str]| -> f64 {
        let delta: f64 = names
            .iter()
            .map(|n| m1.get(*n).unwrap_or(&0.0) - m0.get(*n).unwrap_or(&0.0))
            .sum();
        delta / IDLE_CONTAINERS as f64 / secs
    };
    let writes = rate(&[
        "etcd_mvcc_put_total",
        "etcd_mvcc_delete_total",
        "etcd_mvcc_txn_total",
    ]);
    let puts = rate(&["etcd_mvcc_put_total"]);
    let proposals = rate(&["etcd_server_proposals_committed_total"]);
    let keepalives = rate(&["etcd_debugging_lease_renewed_total"]);
    let reads = rate(&["etcd_mvcc_range_total"]);

    // 4. Stop the rest → more samples.
    for app in &idle {
        let t = stop(app, &mut events).await?;
        eprintln!(
            "bench: docker stop {} → key gone in {t:.1} ms",
            &app.id[..12]
        );
        stop_ms.push(t);
    }

    let n = CONTAINERS;
    let m = IDLE_CONTAINERS;
    let w = IDLE_WINDOW.as_secs();
    println!("| measure | result | target | samples |");
    println!("|---|---:|---:|---:|");
    println!(
        "| `docker run -d` issued → returned, p50 / p99 (ms) | {} | | {n} |",
        p50_p99_text(run_ms)
    );
    println!(
        "| `docker run -d` returned → key in etcd, p50 / p99 (ms) | {} | | {n} |",
        p50_p99_text(key_ms)
    );
    println!(
        "| `docker run -d` issued → key in etcd, p50 / p99 (ms) | {} | | {n} |",
        p50_p99_text(total_ms)
    );
    println!(
        "| `docker stop` issued → key gone, p50 / p99 (ms) | {} | ≤ 100 | {n} |",
        p50_p99_text(stop_ms)
    );
    println!(
        "| sidekick RSS (`VmRSS`), mean / max (MB) | {} | ≤ 5 | {m} |",
        mean_max(&rss, 2)
    );
    println!(
        "| sidekick peak RSS (`VmHWM`), mean / max (MB) | {} | ≤ 5 | {m} |",
        mean_max(&hwm, 2)
    );
    println!(
        "| … of it anonymous (`RssAnon`) / file-backed (`RssFile`), mean (MB) | {:.2} / {:.2} | | {m} |",
        mean(&anon),
        mean(&file)
    );
    println!(
        "| sidekick idle CPU, mean / max (% of one core) | {} | | {m} × {w} s |",
        mean_max(&cpu, 3)
    );
    println!("| etcd writes (put + delete + txn) per instance per second, idle | {writes:.3} | 0 | {m} × {w} s |");
    println!("| etcd puts per instance per second, idle | {puts:.3} | 0 | {m} × {w} s |");
    println!("| etcd raft proposals committed per instance per second, idle | {proposals:.3} | 0 | {m} × {w} s |");
    println!("| lease keepalives per instance per second, idle (not writes) | {keepalives:.3} | | {m} × {w} s |");
    println!("| etcd reads (range) per instance per second, idle | {reads:.3} | | {m} × {w} s |");
    Ok(())
}

/// The static `dockreg` the tests and the README build (`target/static/…/sidekick/dockreg`).
fn static_dockreg() -> String {
    static_dockreg_path().display().to_string()
}

/// The static `dockreg` to put in the image.
fn sidekick_bin() -> String {
    std::env::var("BENCH_SIDEKICK_BIN").unwrap_or_else(|_| static_dockreg())
}

fn prerequisites() -> Result<()> {
    let bin = sidekick_bin();
    if bin != static_dockreg() && !Path::new(&bin).exists() {
        bail!("BENCH_SIDEKICK_BIN={bin} not found");
    }
    if !Path::new(&bin).exists() {
        bail!(
            "{bin} not found: build the static sidekick first:\n    \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --profile sidekick --bin dockreg \
             --target {TRIPLE} --target-dir target/static\n(from the repository root)"
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
        // Ctrl-C drops the benchmark, whose guards remove the containers and the image.
        Ok(()) => tokio::select! {
            r = run() => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        },
    };
    if let Err(e) = result {
        eprintln!("bench_sidekick: {e:#}");
        std::process::exit(1);
    }
}

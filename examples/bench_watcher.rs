//! Benchmark of `dockreg-haproxy` against a real etcd: the time from an etcd put or delete
//! until the live output file reflects it, with 1 to 100,000 endpoints registered, and the
//! watcher's peak RSS. Prints figures; asserts nothing.
//!
//! Two modes of isolated changes:
//! - `render`: rendering alone (`--no-validate`, no reload), endpoints on 10.0.0.0/8 — no
//!   traffic is ever sent to them, nothing but the watcher reads them;
//! - `full`: `haproxy -c` validation and a reload through the master socket of a real HAProxy
//!   (endpoints on closed 127.0.0.0/8 ports, so health checks stay on loopback); here the
//!   latency is until HAProxy's new worker runs, and HAProxy's own start-up sets the floor.
//!
//! ```text
//! cargo run --release --example bench_watcher                 # both modes, default sizes
//! cargo run --release --example bench_watcher -- render 1 10000
//! cargo run --release --example bench_watcher -- full 1 1000
//! cargo run --release --example bench_watcher -- stream      # a change every 50 ms
//! ```
//!
//! Besides the latency from issuing the put/delete, it prints etcd's own share — from issuing
//! the change until an independent watch of the bench sees the event — and the watcher's
//! share, from that event until the file reflects it.
//!
//! In `render` and `full`, changes are spaced 150 ms apart, so each one is an isolated change
//! (before etcd changes applied at once, that was longer than the 100 ms debounce then).
//!
//! A third mode, `stream`, is what a rolling deploy looks like to one service: one endpoint key
//! under `/service`, put and deleted in turn, a change every 50 ms (200 changes), render only
//! as `render`. Each write is issued 50 ms after the previous one, or as soon as the previous
//! one reached the file if that took longer, and is timed until the file reflects it.

#[path = "common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use common::{max, ms, p50_p99, peak_rss_kb, start_etcd, WATCHER};
use dockreg_testkit::haproxy::Haproxy;
use dockreg_testkit::Guard;
use etcd_client::{Client, Txn, TxnOp};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const GAP: Duration = Duration::from_millis(150);
/// The stream mode: a change every 50 ms (closer together than the old debounce), 200 changes.
const STREAM_PERIOD: Duration = Duration::from_millis(50);
const STREAM_CHANGES: usize = 200;

/// Address of endpoint `i`: 10.x.y.z for render mode, closed loopback ports for full mode.
fn endpoint(i: usize, full: bool) -> String {
    if full {
        format!(
            "127.{}.{}.{}:{}",
            1 + (i >> 16) % 250,
            (i >> 8) & 255,
            i & 255,
            1 + i % 1000
        )
    } else {
        format!("10.{}.{}.{}:8080", (i >> 16) & 255, (i >> 8) & 255, i & 255)
    }
}

fn server_name(addr: &str) -> String {
    addr.replace(':', "_")
}

async fn load(client: &mut Client, from: usize, to: usize, full: bool) -> Result<()> {
    let mut i = from;
    while i < to {
        let end = (i + 128).min(to);
        let ops: Vec<TxnOp> = (i..end)
            .map(|j| TxnOp::put(format!("/service/{}", endpoint(j, full)), "running", None))
            .collect();
        client.txn(Txn::new().and_then(ops)).await?;
        i = end;
    }
    Ok(())
}

/// Waits until the output file's content satisfies `check`; returns when it was first seen.
/// Polls every 50 µs on a blocking thread (tokio's timers tick in milliseconds).
async fn wait_file(path: &Path, check: impl Fn(&str) -> bool + Send + 'static) -> Result<Instant> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = None;
        loop {
            // Cheap change detection first: size and mtime, then the content.
            let meta = std::fs::metadata(&path)
                .ok()
                .map(|m| (m.len(), m.modified().ok()));
            if meta != last {
                let seen = Instant::now();
                if let Ok(text) = std::fs::read_to_string(&path) {
                    if check(&text) {
                        return Ok(seen);
                    }
                }
                last = meta;
            }
            if Instant::now() > deadline {
                bail!("output {} never reflected the change", path.display());
            }
            std::thread::sleep(Duration::from_micros(50));
        }
    })
    .await?
}

struct Row {
    mode: &'static str,
    n: usize,
    total: (f64, f64),
    etcd: (f64, f64),
    watcher: (f64, f64),
    samples: usize,
    rss_mb: f64,
}

/// One run's etcd (with its `n` endpoints), HAProxy in full mode, and the watcher, which has
/// rendered them. Fields drop in this order: the watcher stops first.
struct Setup {
    _watcher: Guard,
    pid: u32,
    client: Client,
    output: PathBuf,
    haproxy: Option<Haproxy>,
    _etcd: dockreg_testkit::etcd::Etcd,
    _dir: tempfile::TempDir,
    /// The watcher's arguments, temporary paths as `$DIR` and etcd's URL as `$ETCD`.
    shown: String,
}

async fn setup(full: bool, n: usize) -> Result<Setup> {
    let dir = tempfile::tempdir()?;
    let etcd = start_etcd(dir.path()).await;
    let (url, mut client) = (etcd.url(), etcd.client().await);
    load(&mut client, 0, n, full).await?;
    let output = dir.path().join("backends.cfg");
    let mut args: Vec<String> = vec![
        "--etcd".into(),
        url.clone(),
        "--output".into(),
        output.display().to_string(),
    ];
    let mut env = Vec::new();
    let mut haproxy = None;
    if full {
        let base = PathBuf::from("haproxy/haproxy.cfg");
        let h = Haproxy::start_with(dir.path(), base, output.clone()).await;
        args.extend([
            "--haproxy-config".into(),
            h.base.display().to_string(),
            "--master-socket".into(),
            h.master_socket.display().to_string(),
        ]);
        env = h.env.clone();
        haproxy = Some(h);
    } else {
        args.push("--no-validate".into());
    }
    let watcher = Command::new(WATCHER)
        .args(&args)
        .envs(env)
        .env(
            "RUST_LOG",
            std::env::var("BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {WATCHER} (cargo build --release first)"))?;
    let pid = watcher.id();
    let watcher = Guard(watcher);
    let count_servers = move |t: &str| t.matches("\n    server ").count();
    wait_file(&output, move |t| count_servers(t) == n).await?;
    let shown = std::iter::once("dockreg-haproxy".to_string())
        .chain(args.iter().map(|a| {
            a.replace(&dir.path().display().to_string(), "$DIR")
                .replace(&url, "$ETCD")
        }))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Setup {
        _dir: dir,
        _etcd: etcd,
        client,
        output,
        haproxy,
        pid,
        _watcher: watcher,
        shown,
    })
}

/// An independent watch of `/service/`: when etcd delivers each change to a watcher.
async fn watch_events(
    client: &mut Client,
) -> Result<tokio::sync::mpsc::UnboundedReceiver<Instant>> {
    let mut stream = client
        .watch(
            "/service/",
            Some(etcd_client::WatchOptions::new().with_prefix()),
        )
        .await?;
    let (ev_tx, ev_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some(resp)) = stream.message().await {
            let now = Instant::now();
            for _ in resp.events() {
                let _ = ev_tx.send(now);
            }
        }
    });
    Ok(ev_rx)
}

/// Puts `key` (or deletes it) and waits until the output file holds `needle` (or no longer
/// does): when the write was issued, when the file showed it, and when etcd delivered the
/// event to the independent watch.
async fn change(
    client: &mut Client,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Instant>,
    output: &Path,
    key: &str,
    needle: &str,
    put: bool,
) -> Result<(Instant, Instant, Instant)> {
    let t0 = Instant::now();
    if put {
        client.put(key, "running", None).await?;
    } else {
        client.delete(key, None).await?;
    }
    let want = needle.to_string();
    let seen = wait_file(output, move |t| t.contains(&want) == put).await?;
    let event = events
        .recv()
        .await
        .ok_or_else(|| anyhow!("bench watch ended"))?;
    Ok((t0, seen, event))
}

async fn bench(mode: &'static str, n: usize, samples: usize) -> Result<Row> {
    let full = mode == "full";
    let mut world = setup(full, n).await?;
    let (output, pid) = (world.output.clone(), world.pid);
    let master = world
        .haproxy
        .as_ref()
        .map(|h| dockreg::haproxy::MasterSocket {
            path: h.master_socket.clone(),
            timeout: Duration::from_secs(30),
        });
    let client = &mut world.client;
    let mut ev_rx = watch_events(client).await?;
    let (mut lat, mut etcd_lat, mut own_lat) = (Vec::new(), Vec::new(), Vec::new());
    tokio::time::sleep(Duration::from_millis(if full { 1000 } else { 300 })).await;
    for s in 0..samples {
        let addr = endpoint(n + 1 + s, full);
        let key = format!("/service/{addr}");
        let needle = format!("server {} ", server_name(&addr));
        for put in [true, false] {
            let reloads = match &master {
                Some(m) => Some(m.show_proc().await.map_err(|e| anyhow!(e))?.reloads),
                None => None,
            };
            let (t0, seen, event) = change(client, &mut ev_rx, &output, &key, &needle, put).await?;
            etcd_lat.push(event.duration_since(t0).as_secs_f64() * 1000.0);
            let mut done = seen;
            if let (Some(m), Some(before)) = (&master, reloads) {
                // Until HAProxy runs the new configuration.
                loop {
                    if let Ok(p) = m.show_proc().await {
                        if p.reloads > before {
                            done = Instant::now();
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            lat.push(done.duration_since(t0).as_secs_f64() * 1000.0);
            own_lat.push(done.saturating_duration_since(event).as_secs_f64() * 1000.0);
            // Isolated changes, and (full mode) beyond the minimum reload interval.
            tokio::time::sleep(if full {
                Duration::from_millis(600)
            } else {
                GAP
            })
            .await;
        }
    }
    let rss_mb = peak_rss_kb(pid).unwrap_or(0) as f64 / 1024.0;
    Ok(Row {
        mode,
        n,
        samples: lat.len(),
        total: p50_p99(lat),
        etcd: p50_p99(etcd_lat),
        watcher: p50_p99(own_lat),
        rss_mb,
    })
}

/// What the stream mode measured.
struct StreamRun {
    command: String,
    /// Per change: whether it was a put, write → file, write → etcd's event (ms).
    changes: Vec<(bool, f64, f64)>,
    /// Changes issued per second.
    rate: f64,
    rss_mb: f64,
}

/// One endpoint key under `/service`, put and deleted in turn: each change 50 ms after the
/// previous write, or as soon as the previous one is in the file if that took longer; the time
/// from issuing each write until the output file reflects it.
async fn stream() -> Result<StreamRun> {
    let mut world = setup(false, 0).await?;
    let output = world.output.clone();
    let client = &mut world.client;
    let mut ev_rx = watch_events(client).await?;
    let addr = endpoint(0, false);
    let key = format!("/service/{addr}");
    let needle = format!("server {} ", server_name(&addr));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut changes = Vec::new();
    let started = Instant::now();
    for i in 0..STREAM_CHANGES {
        let put = i % 2 == 0;
        let (t0, seen, event) = change(client, &mut ev_rx, &output, &key, &needle, put).await?;
        changes.push((put, ms(seen - t0), ms(event.saturating_duration_since(t0))));
        tokio::time::sleep_until((t0 + STREAM_PERIOD).into()).await;
    }
    let rate = STREAM_CHANGES as f64 / started.elapsed().as_secs_f64();
    Ok(StreamRun {
        command: world.shown.clone(),
        changes,
        rate,
        rss_mb: peak_rss_kb(world.pid).unwrap_or(0) as f64 / 1024.0,
    })
}

fn print_stream(r: &StreamRun) {
    println!(
        "### A stream of changes: etcd write → output file, a change every {} ms\n",
        STREAM_PERIOD.as_millis()
    );
    println!("- `{}`", r.command);
    println!(
        "- one endpoint key under `/service`, put and deleted in turn; each write {} ms after \
         the previous one, or at once when the previous change took longer to reach the file; \
         {:.1} changes/s; watcher peak RSS {:.1} MB",
        STREAM_PERIOD.as_millis(),
        r.rate,
        r.rss_mb
    );
    println!();
    println!("| change | samples | p50 (ms) | p99 (ms) | max (ms) | etcd: write → watch event, p50 / p99 (ms) | target (p50) |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for (what, pick) in [("put", Some(true)), ("delete", Some(false)), ("all", None)] {
        let rows: Vec<&(bool, f64, f64)> = r
            .changes
            .iter()
            .filter(|c| pick.is_none_or(|p| c.0 == p))
            .collect();
        let file: Vec<f64> = rows.iter().map(|c| c.1).collect();
        let etcd: Vec<f64> = rows.iter().map(|c| c.2).collect();
        let (p50, p99) = p50_p99(file.clone());
        let (e50, e99) = p50_p99(etcd);
        println!(
            "| {what} → file | {} | {p50:.2} | {p99:.2} | {:.2} | {e50:.2} / {e99:.2} | ≤ 5 |",
            file.len(),
            max(&file)
        );
    }
    println!();
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let modes: Vec<&'static str> = match args.first().map(String::as_str) {
        Some("render") => vec!["render"],
        Some("full") => vec!["full"],
        Some("stream") => vec![],
        _ => vec!["render", "full"],
    };
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    if !Path::new(WATCHER).exists() {
        bail!("{WATCHER} not found: run `cargo build --release` first");
    }
    if modes.is_empty() {
        eprintln!("bench: stream, a change every {STREAM_PERIOD:?}: {STREAM_CHANGES} changes ...");
        let run = stream().await?;
        println!("`target/release/examples/bench_watcher stream`\n");
        print_stream(&run);
        return Ok(());
    }
    let mut rows = Vec::new();
    for mode in modes {
        let default_sizes = if mode == "full" {
            vec![1, 1_000, 10_000]
        } else {
            vec![1, 1_000, 10_000, 100_000]
        };
        for &n in if sizes.is_empty() {
            &default_sizes
        } else {
            &sizes
        } {
            let samples = match (mode, n) {
                ("full", _) => 25,
                (_, n) if n >= 100_000 => 50,
                _ => 100,
            };
            eprintln!("bench: {mode} with {n} endpoints, {samples} puts + {samples} deletes ...");
            let row = bench(mode, n, samples).await?;
            eprintln!(
                "bench: {mode} n={n}: p50 {:.2} ms, p99 {:.2} ms, peak RSS {:.1} MB",
                row.total.0, row.total.1, row.rss_mb
            );
            rows.push(row);
        }
    }
    println!("| mode | endpoints | change → done, p50 / p99 (ms) | etcd: change → watch event | watcher: event → done | samples | watcher peak RSS (MB) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let mode = if r.mode == "full" {
            "validate + reload"
        } else {
            "render only"
        };
        println!(
            "| {mode} | {} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} / {:.2} | {} | {:.1} |",
            r.n,
            r.total.0,
            r.total.1,
            r.etcd.0,
            r.etcd.1,
            r.watcher.0,
            r.watcher.1,
            r.samples,
            r.rss_mb
        );
    }
    Ok(())
}

//! Benchmark of hitless changes: how fast an etcd change reaches live traffic through HAProxy,
//! and whether anything fails while servers and templates churn under load. Runs a real etcd,
//! a real HAProxy 2.6 in master-worker mode (`haproxy/haproxy.cfg` plus the rendered file), the
//! release `dockreg-haproxy` and `demo_backend` HTTP servers, all on 127.0.0.0/8. Prints
//! Markdown tables and the command lines used; asserts nothing.
//!
//! ```text
//! cargo build --release --bin dockreg-haproxy --examples
//! target/release/examples/bench_hitless [latency|churn|scale|stream|all]   # default: all (≈ 6 min)
//! BENCH_CHURN_SECS=10 target/release/examples/bench_hitless churn   # shorter churn runs
//! ```
//!
//! Run it from the repository root. `BENCH_KEEP=1` keeps each run's folder (logs of etcd,
//! HAProxy and the watcher) and prints where it is.
//!
//! 1. **latency** — one server of `/service` is put and deleted again and again (spaced
//!    apart, each an isolated change); a keep-alive client polls `GET /` through HAProxy's frontend back to
//!    back and takes the time from issuing the etcd write until the first answer from that
//!    server (after a put) or the first `503` (after a delete). Once with the runtime-API fast
//!    path (`--runtime-socket`), once through reloads only; the watcher's log tells how many
//!    applies took `path=runtime` and `path=reload`.
//! 2. **churn** — two `wrk` at once (keep-alive, and a new connection per request) against
//!    the frontend while (a) servers of a pool are added and removed every 10–50 ms beside two
//!    stable ones, or (b) the template is rewritten every 570 ms with an option that forces a
//!    reload (`--min-reload-interval 250ms` there, so that none coalesce). Counts requests, socket
//!    errors and non-2xx answers; reloads and surviving old workers come from the master
//!    socket's `show proc`.
//! 3. **scale** — 10,000 servers in 1,000 backends (closed loopback ports, the per-service
//!    default template without `check`, so no health check and no traffic ever reaches them;
//!    `BENCH_SCALE_TEMPLATE=<file>` renders another template instead): time from the first put
//!    until HAProxy's initial reload, HAProxy's and the watcher's memory, then single-server
//!    adds and deletes in one backend, timed on the admin socket (`show servers state`) and on
//!    the output file.
//! 4. **stream** — as the fast-path latency run, but a change every 50 ms (closer together than
//!    what used to be the 100 ms debounce), each change issued 50 ms after the previous write or, when that one
//!    took longer, as soon as it was seen.
//!
//! The rig (etcd, HAProxy, the watcher and its log), the polling client, `wrk`'s figures and
//! the reading of `show servers state` are in `examples/common/`, shared with the other
//! benchmarks.

#[path = "common/mod.rs"]
mod common;

use anyhow::{anyhow, bail, Context as _, Result};
use common::probe::{Answer, Probe};
use common::rig::{
    admin, check_built, runtime_flags_available, start_backends, LogCounts, Rig, BACKEND_BIN,
    BASE_CONFIG, DEFAULT_TEMPLATE, ID_PREFIX, TXN_OPS,
};
use common::server_state::server_state;
use common::wrk::{Wrk, WrkResult};
use common::{max, ms, p50_p99, peak_rss_kb, rss_kb, WATCHER};
use dockreg::haproxy::ProcList;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The default template in its per-service form (rendered per service, only what changed).
const PER_SERVICE_TEMPLATE: &str = "templates/per-service.cfg.tera";

/// Spacing of changes in the fast-path latency run: each change an isolated one.
const FAST_GAP: Duration = Duration::from_millis(150);
/// Spacing in the reload-path run: beyond the 500 ms minimum reload interval.
const RELOAD_GAP: Duration = Duration::from_millis(700);
const FAST_PAIRS: usize = 100;
const RELOAD_PAIRS: usize = 30;
/// The stream run: a change every 50 ms (closer together than the old 100 ms debounce).
const STREAM_PERIOD: Duration = Duration::from_millis(50);
const STREAM_PAIRS: usize = 100;
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

// ---------------------------------------------------------------------------------------------
// 1. Routing latency.

/// How the changes of a latency run follow each other.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// Each change `gap` after the previous one was seen: every change is isolated.
    After(Duration),
    /// A change every `period` from the previous write, or as soon as the previous one was seen
    /// if that took longer: a stream of changes.
    Every(Duration),
}

struct LatencyRun {
    /// The path as the table shows it.
    label: &'static str,
    target: &'static str,
    fast: bool,
    command: String,
    puts: Vec<f64>,
    deletes: Vec<f64>,
    missed: usize,
    probe: (u64, u64, u64),
    poll_us: f64,
    counts: LogCounts,
    /// Changes issued per second.
    rate: f64,
}

async fn latency_run(name: &str, fast: bool, pairs: usize, pace: Pace) -> Result<LatencyRun> {
    let mut rig = Rig::start(&format!("hitless-{name}")).await?;
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
    let started = Instant::now();
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
            match pace {
                Pace::After(gap) => tokio::time::sleep(gap).await,
                Pace::Every(period) => {
                    tokio::time::sleep_until((t0 + period).into()).await;
                }
            }
        }
    }
    let rate = (2 * pairs) as f64 / started.elapsed().as_secs_f64();
    Ok(LatencyRun {
        label: "",
        target: "",
        fast,
        command: watcher.shown.clone(),
        puts,
        deletes,
        missed,
        probe: (probe.requests, probe.retried, probe.failed),
        poll_us: probe.busy.as_secs_f64() * 1e6 / probe.requests.max(1) as f64,
        counts: watcher.counts(),
        rate,
    })
}

/// The table of latency runs: put and delete of each, and what the probe and the log say.
fn latency_table(out: &mut String, runs: &[LatencyRun]) -> Result<()> {
    writeln!(out, "| path | change | samples | p50 (ms) | p99 (ms) | max (ms) | target | missed | watcher log: `path=runtime` / `path=reload` |")?;
    writeln!(out, "|---|---|---:|---:|---:|---:|---|---:|---:|")?;
    for r in runs {
        for (change, v) in [("put → 200 from it", &r.puts), ("delete → 503", &r.deletes)] {
            let (p50, p99) = p50_p99(v.clone());
            writeln!(
                out,
                "| {} | {change} | {} | {p50:.2} | {p99:.2} | {:.2} | {} | {} | {} / {} |",
                r.label,
                v.len(),
                max(v),
                r.target,
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
    for r in runs {
        let (requests, retried, failed) = r.probe;
        writeln!(
            out,
            "- {}: {:.1} changes/s; {requests} polls, {:.0} µs each on average, {retried} retried \
             on a new connection, {failed} without answer; watcher log: {} warnings, {} errors",
            r.label, r.rate, r.poll_us, r.counts.warnings, r.counts.errors
        )?;
        for p in &r.counts.problems {
            writeln!(out, "  - `{p}`")?;
        }
    }
    Ok(())
}

async fn latency(runtime_available: bool) -> Result<String> {
    let mut runs = Vec::new();
    if runtime_available {
        eprintln!("bench: latency, fast path: {FAST_PAIRS} puts + {FAST_PAIRS} deletes ...");
        let run = latency_run("latency-fast", true, FAST_PAIRS, Pace::After(FAST_GAP)).await?;
        runs.push(LatencyRun {
            label: "fast (runtime API)",
            target: "p50 ≤ 5, p99 ≤ 10",
            ..run
        });
    }
    eprintln!("bench: latency, reload path: {RELOAD_PAIRS} puts + {RELOAD_PAIRS} deletes ...");
    let run = latency_run(
        "latency-reload",
        false,
        RELOAD_PAIRS,
        Pace::After(RELOAD_GAP),
    )
    .await?;
    runs.push(LatencyRun {
        label: "reload",
        target: "p50 ≤ 150",
        ..run
    });

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
        "- one server of `/service` put and deleted in turn, each change {} ms (fast) / {} ms \
         (reload) after the previous one was seen; a keep-alive client polls `GET /` through the \
         frontend back to back until the first `200` from that server (put) or the first `503` \
         (delete)",
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
    latency_table(&mut out, &runs)?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// 2. Churn under load.

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
    let mut rig = Rig::start(&format!("hitless-{name}")).await?;
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
    let before = rig.show_proc().await?;
    let mut wrk = Vec::new();
    for a in &wrk_args {
        wrk.push(Wrk::start(a, rig.http.port())?);
    }
    let wrk_commands = [wrk[0].shown.clone(), wrk[1].shown.clone()];

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
    for w in wrk {
        wrk_results.push(w.finish().await?);
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
             {} applies (changes arriving during an apply go together in the next; log counts \
             include the reload at start); watcher log: {} warnings, {} errors",
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
    let mut rig = Rig::start("hitless-scale").await?;
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
    let mut args = rig.watcher_args_with(runtime, &prefixes, &template);
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
// 4. A stream of changes.

async fn stream(runtime_available: bool) -> Result<String> {
    let mut out = String::new();
    writeln!(
        out,
        "### 4. A stream of changes: etcd write → traffic through HAProxy, a change every {} ms\n",
        STREAM_PERIOD.as_millis()
    )?;
    if !runtime_available {
        writeln!(
            out,
            "- **not run**: `{WATCHER} --help` has no `--runtime-socket`"
        )?;
        return Ok(out);
    }
    eprintln!(
        "bench: stream, a change every {} ms: {STREAM_PAIRS} puts + {STREAM_PAIRS} deletes ...",
        STREAM_PERIOD.as_millis()
    );
    let run = latency_run("stream", true, STREAM_PAIRS, Pace::Every(STREAM_PERIOD)).await?;
    let run = LatencyRun {
        label: "fast (runtime API), stream",
        target: "p50 ≤ 5, p99 ≤ 15",
        ..run
    };
    writeln!(out, "- `{}`", run.command)?;
    writeln!(
        out,
        "- as in 1 (fast path), but a change every {} ms from the previous write — closer than \
         the old 100 ms debounce — or at once when the previous change took longer to be seen \
         (each change is timed alone)",
        STREAM_PERIOD.as_millis()
    )?;
    writeln!(out)?;
    latency_table(&mut out, std::slice::from_ref(&run))?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> Result<()> {
    let sections: Vec<String> = std::env::args().skip(1).collect();
    let all = sections.is_empty() || sections.iter().any(|s| s == "all");
    for s in &sections {
        if !["latency", "churn", "scale", "stream", "all"].contains(&s.as_str()) {
            bail!("unknown section {s:?}: use latency, churn, scale, stream or all");
        }
    }
    let wanted = |s: &str| all || sections.iter().any(|x| x == s);
    check_built(&[WATCHER, BACKEND_BIN, BASE_CONFIG, DEFAULT_TEMPLATE])?;
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
    if wanted("stream") {
        println!("{}", stream(runtime).await?);
    }
    println!("Total: {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

//! Helpers the benchmarks in `examples/` share: free loopback ports, child processes that die
//! with their handle, a single-node etcd in a temporary folder, percentiles, and memory
//! figures from `/proc/<pid>/status`.
//!
//! Not an example of its own (Cargo only discovers `examples/*.rs` and `examples/*/main.rs`);
//! a benchmark includes it with `#[path = "common/mod.rs"] mod common;`.

// Each benchmark uses its own subset of these helpers.
#![allow(dead_code)]

use anyhow::{bail, Context as _, Result};
use etcd_client::Client;
use std::fs::File;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The release watcher binary, relative to the repository root (benchmarks run from there).
pub const WATCHER: &str = "target/release/dockreg-haproxy";

/// A child process that is stopped when the guard drops: SIGTERM first (HAProxy's master takes
/// its workers down with it), SIGKILL if it is still there after two seconds.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.0.id()) {
            // SAFETY: kill(2) takes no pointers; the PID is our own child, not yet reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A single-member etcd on free loopback ports with its data (and its log, `etcd.log`) in
/// `dir`, started and answering.
pub struct Etcd {
    pub guard: Guard,
    pub url: String,
    pub client: Client,
}

/// Starts etcd and waits (up to 20 s) until it answers a read.
pub async fn start_etcd(dir: &Path) -> Result<Etcd> {
    let (client_port, peer_port) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let log = File::create(dir.join("etcd.log")).context("creating etcd.log")?;
    let child = Command::new("etcd")
        .arg("--data-dir")
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("default={peer}")])
        .args(["--quota-backend-bytes", "4294967296"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting etcd (apt-get install etcd-server)")?;
    let guard = Guard(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut client) = Client::connect([url.as_str()], None).await {
            let probe = tokio::time::timeout(Duration::from_secs(1), client.get("/probe", None));
            if let Ok(Ok(_)) = probe.await {
                return Ok(Etcd { guard, url, client });
            }
        }
        if Instant::now() > deadline {
            bail!("etcd at {url} did not answer within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value at quantile `p` (0–1) of ascending `sorted` values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// Median and 99th percentile.
pub fn p50_p99(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

/// A `kB` field of `/proc/<pid>/status` (`VmRSS`, `VmHWM`, `RssAnon`, ...).
pub fn proc_status_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Peak resident set size (`VmHWM`) in kB.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmHWM")
}

/// Current resident set size (`VmRSS`) in kB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    proc_status_kb(pid, "VmRSS")
}

//! Helpers the benchmarks in `examples/` share beside the test kit (`dockreg_testkit`, in
//! `tests/kit`, which starts etcd, HAProxy, backends and containers for them): the release
//! watcher's path, etcd sized for them, percentiles, and memory and CPU figures from `/proc`;
//! in modules of their own:
//!
//! - [`rig`]: one run's etcd (a member or a cluster), HAProxy and watcher, and its log;
//! - [`probe`]: an HTTP client polling through HAProxy's frontend;
//! - [`server_state`]: the benchmarks' own reading of HAProxy's `show servers state`;
//! - [`wrk`]: `wrk` in the background and what it printed.
//!
//! Not an example of its own (Cargo only discovers `examples/*.rs` and `examples/*/main.rs`);
//! a benchmark includes it with `#[path = "common/mod.rs"] mod common;`.

// Each benchmark uses its own subset of these helpers.
#![allow(dead_code)]

pub mod probe;
pub mod rig;
pub mod server_state;
pub mod wrk;

use dockreg_testkit::etcd::{Etcd, Options};
use std::path::Path;
use std::time::Duration;

/// The release watcher binary, relative to the repository root (benchmarks run from there).
pub const WATCHER: &str = "target/release/dockreg-haproxy";

/// A single-member etcd for the benchmarks: the kit's, with a 4 GiB backend quota (100,000
/// endpoints and their history outgrow the default 2 GiB).
pub async fn start_etcd(dir: &Path) -> Etcd {
    let opts = Options {
        quota_backend_bytes: Some(4 << 30),
        ..Options::default()
    };
    Etcd::start_with(dir, opts).await
}

/// The value at quantile `p` (0–1) of ascending `sorted` values, nearest rank; NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

/// A duration in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The largest value; NaN when empty.
pub fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
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

/// CPU time a process has used so far (user + system, `utime` + `stime` of `/proc/<pid>/stat`),
/// in seconds; `None` when it is gone.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis,
    // where field 3 (state) comes first, so utime (14) and stime (15) are the 12th and 13th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / clock_ticks() as f64)
}

/// The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on Linux when it cannot be asked).
fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100)
    })
}

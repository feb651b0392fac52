//! Helpers the benchmarks in `examples/` share beside the test kit (`dockreg_testkit`, in
//! `tests/kit`, which starts etcd, HAProxy, backends and containers for them): the release
//! watcher's path, etcd sized for them, percentiles, and memory figures from
//! `/proc/<pid>/status`.
//!
//! Not an example of its own (Cargo only discovers `examples/*.rs` and `examples/*/main.rs`);
//! a benchmark includes it with `#[path = "common/mod.rs"] mod common;`.

// Each benchmark uses its own subset of these helpers.
#![allow(dead_code)]

use dockreg_testkit::etcd::{Etcd, Options};
use std::path::Path;

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

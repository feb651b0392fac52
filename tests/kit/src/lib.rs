//! The test kit of dockreg: everything the integration tests (`tests/it`) and the benchmarks
//! (`examples/bench_*`) run against, in one place.
//!
//! - [`etcd`]: a real etcd on free loopback ports (single member or a cluster), restart, wipe
//!   and snapshot helpers; [`tls`]: a CA and certificates made with `openssl`, and an etcd
//!   that requires them;
//! - [`haproxy`]: a real HAProxy in master-worker mode with the shipped base configuration and
//!   one rendered file, and its admin socket;
//! - [`backends`]: HTTP backends that answer with their own identity, in-process (tests) or
//!   as `demo_backend` processes (benchmarks);
//! - [`docker`]: the Docker CLI, the bridge address containers reach the host on, the static
//!   sidekick and the test image, containers removed on drop;
//! - [`tcpproxy`]: a TCP proxy that can be frozen (a network partition);
//! - here: [`free_port`], [`eventually`] and [`Guard`], the process guard.
//!
//! Every process is started on free ports with its files in a folder the caller owns and is
//! stopped when its handle drops, so tests run in parallel and leave nothing behind. A
//! failure to start something panics with what to install: the kit is for tests and
//! benchmarks, where that is the end of the run.
//!
//! The kit does not depend on `dockreg`: what it starts and observes does not go through the
//! code under test.

#![forbid(unsafe_code)]

pub mod backends;
pub mod docker;
pub mod etcd;
pub mod haproxy;
pub mod tcpproxy;
pub mod tls;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/kit`).
pub fn repo_root() -> PathBuf {
    let kit = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    kit.parent()
        .and_then(std::path::Path::parent)
        .map(std::path::Path::to_path_buf)
        .expect("tests/kit has a repository root")
}

/// A TCP port on 127.0.0.1 that nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `check` every 50 ms until it returns true; panics when `timeout` passes first.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    if !poll(timeout, Duration::from_millis(50), check).await {
        panic!("timed out after {timeout:?} waiting for: {what}");
    }
}

/// Polls `check` every `every` until it returns true (`true`) or `timeout` passes (`false`).
pub async fn poll<F, Fut>(timeout: Duration, every: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}

/// A child process that is stopped when the guard drops: SIGTERM first (HAProxy's master takes
/// its workers down with it), SIGKILL if it is still there after two seconds.
pub struct Guard(pub Child);

impl Guard {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Stops the child (SIGTERM, then SIGKILL after two seconds) and reaps it.
    pub fn stop(&mut self) {
        let pid = i32::try_from(self.0.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            if let Ok(None) = self.0.try_wait() {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
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

impl Drop for Guard {
    fn drop(&mut self) {
        self.stop();
    }
}

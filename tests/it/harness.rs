//! Shared test harness on top of the test kit (`dockreg_testkit`, in `tests/kit`): a test's
//! world (a folder, etcd, HAProxy and a client), the watcher binary, and helpers to send real
//! requests through HAProxy and assert who answers.
//!
//! Every process is started on free loopback ports with its files in a temporary folder and
//! is killed when its handle drops, so tests run in parallel and leave nothing behind.

#![allow(dead_code)]

pub use dockreg_testkit::backends::Backends;
pub use dockreg_testkit::etcd::Etcd;
pub use dockreg_testkit::haproxy::Haproxy;
pub use dockreg_testkit::{eventually, free_port, Guard as ChildGuard};
use etcd_client::Client;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const WATCHER: &str = env!("CARGO_BIN_EXE_dockreg-haproxy");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// What the tests read from HAProxy through dockreg's own master-socket client.
pub trait HaproxyExt {
    /// `show proc` through the master socket: (master reloads, failed reloads, current worker
    /// pids).
    async fn show_proc(&self) -> dockreg::haproxy::ProcList;
}

impl HaproxyExt for Haproxy {
    async fn show_proc(&self) -> dockreg::haproxy::ProcList {
        let m = dockreg::haproxy::MasterSocket {
            path: self.master_socket.clone(),
            timeout: Duration::from_secs(10),
        };
        m.show_proc().await.expect("show proc")
    }
}

/// One response: status code, headers (lowercased names) and body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    pub body: String,
}

/// A `GET /` on a new connection; `None` on a socket error.
pub async fn get(addr: SocketAddr) -> Option<Response> {
    get_path(addr, "/").await
}

/// A `GET <path>` on a new connection (backends answer `/slow/<ms>` that much later); `None`
/// on a socket error or after 5 s.
pub async fn get_path(addr: SocketAddr, path: &str) -> Option<Response> {
    get_host_path(addr, "test", path).await
}

/// A `GET <path>` with `Host: <host>` on a new connection; `None` on a socket error or after
/// 5 s.
pub async fn get_host_path(addr: SocketAddr, host: &str, path: &str) -> Option<Response> {
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n")?;
        let mut lines = head.lines();
        let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        Some(Response {
            status,
            headers,
            body: body.to_string(),
        })
    };
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .ok()
        .flatten()
}

/// Sends `n` requests and returns who answered: backend identities, or `status NNN` for
/// other answers, or `socket error`.
pub async fn who_answers(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    who_answers_host(addr, "test", n).await
}

/// [`who_answers`] for requests with `Host: <host>`.
pub async fn who_answers_host(addr: SocketAddr, host: &str, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let who = match get_host_path(addr, host, "/").await {
            Some(r) if r.status == 200 => r.body,
            Some(r) => format!("status {}", r.status),
            None => "socket error".to_string(),
        };
        *seen.entry(who).or_insert(0) += 1;
    }
    seen
}

/// Waits until requests through HAProxy reach exactly `want` (backend identities; an empty
/// list means every request gets a 503) and nothing else, then checks two more rounds in which
/// nothing outside `want` answers (a low-weight server may miss a round; a stray one may not).
///
/// Answers cannot see a leftover server that a template's retries and redispatch hide, nor
/// weights: tests that end in a steady state also check `endstate::converged`.
pub async fn assert_routes_exactly(addr: SocketAddr, want: &[SocketAddr]) {
    assert_routes_exactly_host(addr, "test", want).await
}

/// [`assert_routes_exactly`] for requests with `Host: <host>`.
pub async fn assert_routes_exactly_host(addr: SocketAddr, host: &str, want: &[SocketAddr]) {
    let want_ids: Vec<String> = if want.is_empty() {
        vec!["status 503".to_string()]
    } else {
        want.iter().map(|a| Backends::id(*a)).collect()
    };
    let rounds = (want.len() * 4).max(6);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = who_answers_host(addr, host, rounds).await;
        if seen.len() == want_ids.len() && want_ids.iter().all(|w| seen.contains_key(w)) {
            break;
        }
        if Instant::now() > deadline {
            panic!("HAProxy should route Host {host} to exactly {want_ids:?}; saw {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..2 {
        let seen = who_answers_host(addr, host, rounds).await;
        let stray: Vec<&String> = seen.keys().filter(|k| !want_ids.contains(k)).collect();
        assert!(
            stray.is_empty(),
            "HAProxy routed to exactly {want_ids:?}, then also to {stray:?}"
        );
    }
}

/// Checks over `window` that requests through HAProxy keep reaching `want` and nothing else
/// (a fault must not take anything out of, or put anything into, rotation).
pub async fn assert_keeps_routing(addr: SocketAddr, want: &[SocketAddr], window: Duration) {
    let want_ids: Vec<String> = want.iter().map(|a| Backends::id(*a)).collect();
    let until = Instant::now() + window;
    let mut seen_all = std::collections::BTreeSet::new();
    while Instant::now() < until {
        let seen = who_answers(addr, want.len().max(2)).await;
        let stray: Vec<&String> = seen.keys().filter(|k| !want_ids.contains(k)).collect();
        assert!(
            stray.is_empty(),
            "HAProxy should keep routing to {want_ids:?}; also saw {stray:?}"
        );
        seen_all.extend(seen.into_keys());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen_all.len(),
        want_ids.len(),
        "every one of {want_ids:?} answered within {window:?}"
    );
}

/// The watcher binary, logging to a file in the test folder.
pub struct Watcher {
    pub log: PathBuf,
    child: ChildGuard,
}

impl Watcher {
    /// Starts `dockreg-haproxy` with the standard wiring for `haproxy` and `etcd_urls`, plus
    /// `extra` flags.
    pub fn start(dir: &Path, haproxy: &Haproxy, etcd_urls: &str, extra: &[&str]) -> Watcher {
        Self::start_with_env(dir, haproxy, etcd_urls, extra, &[])
    }

    /// [`Watcher::start`] with `env` variables set too.
    pub fn start_with_env(
        dir: &Path,
        haproxy: &Haproxy,
        etcd_urls: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Watcher {
        let log = dir.join(format!("watcher-{}.log", free_port()));
        let file = File::create(&log).expect("create watcher log");
        let mut cmd = Command::new(WATCHER);
        cmd.arg("--etcd")
            .arg(etcd_urls)
            .arg("--haproxy-config")
            .arg(&haproxy.base)
            .arg("--master-socket")
            .arg(&haproxy.master_socket)
            .arg("--template-settle")
            .arg("50ms")
            .arg("--min-reload-interval")
            .arg("200ms")
            .args(extra)
            .envs(haproxy.env.iter().cloned())
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        if !extra.contains(&"--output") {
            cmd.arg("--output").arg(&haproxy.output);
        }
        let child = cmd.spawn().expect("start dockreg-haproxy");
        Watcher {
            log,
            child: ChildGuard(child),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log holds `needle`.
    pub async fn wait_log(&self, needle: &str) {
        eventually(
            Duration::from_secs(15),
            &format!("watcher log to contain {needle:?}"),
            || async { self.log_text().contains(needle) },
        )
        .await;
    }

    /// Sends a signal (`STOP`, `CONT`, `TERM`, ...) to the watcher.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.pid().to_string())
            .status();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.pid().to_string())
            .status();
        self.child.0.wait().expect("wait for watcher")
    }
}

/// A test's world: a folder, etcd, HAProxy and a client.
pub struct World {
    pub dir: tempfile::TempDir,
    pub etcd: Etcd,
    pub haproxy: Haproxy,
    pub client: Client,
}

impl World {
    pub async fn new() -> World {
        Self::with_output(|dir| dir.join("backends.cfg")).await
    }

    /// A world whose rendered file is `output(dir)` (the folder must exist).
    pub async fn with_output(output: impl FnOnce(&Path) -> PathBuf) -> World {
        let dir = tempfile::tempdir().expect("temp dir");
        let etcd = Etcd::start(dir.path()).await;
        let out = output(dir.path());
        let haproxy = Haproxy::start_with_output(dir.path(), out).await;
        let client = etcd.client().await;
        World {
            dir,
            etcd,
            haproxy,
            client,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn watcher(&self, extra: &[&str]) -> Watcher {
        Watcher::start(self.dir.path(), &self.haproxy, &self.etcd.url(), extra)
    }

    /// [`World::watcher`] with `env` variables set too.
    pub fn watcher_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Watcher {
        let url = self.etcd.url();
        Watcher::start_with_env(self.dir.path(), &self.haproxy, &url, extra, env)
    }

    pub async fn put(&mut self, key: &str, value: &str) {
        self.client.put(key, value, None).await.expect("etcd put");
    }

    pub async fn del(&mut self, key: &str) {
        self.client.delete(key, None).await.expect("etcd delete");
    }

    /// The `server` lines of the rendered output: `(name, address)`.
    pub fn rendered_servers(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(&self.haproxy.output).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&"server")).then(|| (f[1].to_string(), f[2].to_string()))
            })
            .collect()
    }
}

//! Shared test harness: a real etcd, a real HAProxy in master-worker mode, sturdy HTTP
//! backends that answer with their own identity, the watcher binary, and helpers to send
//! real requests through HAProxy.
//!
//! Every process is started on free loopback ports with its files in a temporary folder and
//! is killed when its handle drops, so tests run in parallel and leave nothing behind.

#![allow(dead_code)]

use etcd_client::Client;
use std::collections::BTreeMap;
use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const WATCHER: &str = env!("CARGO_BIN_EXE_dockreg-haproxy");
pub const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Polls `check` every 50 ms until it returns true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn kill(child: &mut Child) {
    // SIGTERM first so HAProxy's master takes its workers down with it.
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    for _ in 0..40 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A single-member etcd with its data in `dir`.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    name: String,
    cluster: String,
    data: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    extra_ip: Option<String>,
}

impl Etcd {
    pub async fn start(dir: &Path) -> Etcd {
        Self::start_on(dir, free_port()).await
    }

    /// A single-member etcd that containers reach too: it also listens on `ip` (the Docker
    /// bridge gateway), same port.
    pub async fn start_reachable(dir: &Path, ip: &str) -> Etcd {
        let mut e = Self::start(dir).await;
        e.extra_ip = Some(ip.to_string());
        e.restart().await;
        e
    }

    /// The client URL containers use.
    pub fn container_url(&self) -> String {
        match &self.extra_ip {
            Some(ip) => format!("http://{ip}:{}", self.client_port),
            None => self.url(),
        }
    }

    /// A single-member etcd serving clients on `client_port`.
    pub async fn start_on(dir: &Path, client_port: u16) -> Etcd {
        let peer_port = free_port();
        let name = "default".to_string();
        let cluster = format!("{name}=http://127.0.0.1:{peer_port}");
        let mut e = Etcd {
            client_port,
            peer_port,
            data: dir.join(format!("etcd-{name}")),
            log: dir.join(format!("etcd-{name}.log")),
            name,
            cluster,
            child: None,
            extra_ip: None,
        };
        e.spawn();
        e.wait_ready().await;
        e
    }

    /// A three-member cluster; returns the members.
    pub async fn cluster(dir: &Path) -> Vec<Etcd> {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster = (0..3)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peers[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = (0..3)
            .map(|i| Etcd {
                client_port: free_port(),
                peer_port: peers[i],
                data: dir.join(format!("etcd-m{i}")),
                log: dir.join(format!("etcd-m{i}.log")),
                name: format!("m{i}"),
                cluster: cluster.clone(),
                child: None,
                extra_ip: None,
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_ready().await;
        }
        members
    }

    fn spawn(&mut self) {
        let log = File::create(&self.log).expect("create etcd log");
        let mut urls = self.url();
        if let Some(ip) = &self.extra_ip {
            urls = format!("{urls},http://{ip}:{}", self.client_port);
        }
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--listen-client-urls")
            .arg(&urls)
            .arg("--advertise-client-urls")
            .arg(&urls)
            .arg("--listen-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_port))
            .arg("--initial-advertise-peer-urls")
            .arg(format!("http://127.0.0.1:{}", self.peer_port))
            .arg("--initial-cluster")
            .arg(&self.cluster)
            .arg("--initial-cluster-state")
            .arg("new")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd not found: install etcd-server (tests/run.sh does)");
        self.child = Some(child);
    }

    async fn wait_ready(&self) {
        let url = self.url();
        eventually(Duration::from_secs(20), &format!("etcd at {url}"), || {
            let url = url.clone();
            async move {
                match Client::connect([url.as_str()], None).await {
                    Ok(mut c) => {
                        tokio::time::timeout(Duration::from_secs(1), c.get("/ready-probe", None))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    pub async fn client(&self) -> Client {
        Client::connect([self.url()], None)
            .await
            .expect("connect to test etcd")
    }

    /// Kills etcd without any cleanup (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills etcd (SIGKILL) and deletes its data: the next [`Etcd::restart`] starts a new, empty
    /// cluster on the same ports (etcd wiped and recreated).
    pub fn kill_and_wipe(&mut self) {
        self.kill();
        if let Err(e) = std::fs::remove_dir_all(&self.data) {
            assert!(
                e.kind() == std::io::ErrorKind::NotFound,
                "wiping {}: {e}",
                self.data.display()
            );
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// `etcdctl snapshot save <path>` of this member.
    pub fn snapshot_save(&self, path: &Path) {
        etcdctl(
            Command::new("etcdctl")
                .arg("--endpoints")
                .arg(self.url())
                .arg("snapshot")
                .arg("save")
                .arg(path),
        );
    }

    /// Kills etcd, replaces its data with `snapshot` (`etcdctl snapshot restore` with the same
    /// name, cluster and peer URL) and starts it again on the same ports.
    pub async fn restore_from(&mut self, snapshot: &Path) {
        self.kill_and_wipe();
        etcdctl(
            Command::new("etcdctl")
                .arg("snapshot")
                .arg("restore")
                .arg(snapshot)
                .arg("--data-dir")
                .arg(&self.data)
                .arg("--name")
                .arg(&self.name)
                .arg("--initial-cluster")
                .arg(&self.cluster)
                .arg("--initial-advertise-peer-urls")
                .arg(format!("http://127.0.0.1:{}", self.peer_port)),
        );
        self.spawn();
        self.wait_ready().await;
    }
}

/// Runs an `etcdctl` command (API v3) and panics with its output if it fails.
fn etcdctl(cmd: &mut Command) {
    let out = cmd
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl not found: install etcd-client (tests/run.sh does)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// HAProxy in master-worker mode, loading the shipped base config and one rendered file.
pub struct Haproxy {
    pub http: SocketAddr,
    pub master_socket: PathBuf,
    pub admin_socket: PathBuf,
    pub base: PathBuf,
    pub output: PathBuf,
    pub env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Child>,
}

impl Haproxy {
    /// Starts HAProxy with `haproxy/haproxy.cfg` and `dir/backends.cfg` (an empty `service`
    /// backend until the watcher renders it).
    pub async fn start(dir: &Path) -> Haproxy {
        Self::start_with_output(dir, dir.join("backends.cfg")).await
    }

    /// Like [`start`](Self::start), with the rendered file at `output` (another folder, e.g.
    /// a tiny tmpfs).
    pub async fn start_with_output(dir: &Path, output: PathBuf) -> Haproxy {
        if !output.exists() {
            std::fs::write(&output, "backend service\n").expect("write backends.cfg");
        }
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let env = vec![
            ("DOCKREG_RUN_DIR".to_string(), dir.display().to_string()),
            ("DOCKREG_HTTP_BIND".to_string(), http.to_string()),
            (
                "DOCKREG_STATS_BIND".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ];
        let base = Path::new(REPO).join("haproxy/haproxy.cfg");
        let master_socket = dir.join("master.sock");
        let mut h = Haproxy {
            http,
            master_socket,
            admin_socket: dir.join("admin.sock"),
            base,
            output,
            env,
            dir: dir.to_path_buf(),
            child: None,
        };
        h.spawn().await;
        h
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("haproxy.log"))
            .expect("open haproxy log");
        let child = Command::new("haproxy")
            .arg("-W")
            .arg("-S")
            .arg(&self.master_socket)
            .arg("-f")
            .arg(&self.base)
            .arg("-f")
            .arg(&self.output)
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy not found: install haproxy (tests/run.sh does)");
        self.child = Some(child);
        let http = self.http;
        eventually(Duration::from_secs(10), "HAProxy listening", || async {
            TcpStream::connect(http).await.is_ok()
        })
        .await;
    }

    /// Stops HAProxy (master and workers) and removes its sockets, as a stopped service
    /// leaves them.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
        let _ = std::fs::remove_file(&self.master_socket);
        let _ = std::fs::remove_file(&self.admin_socket);
    }

    /// Starts HAProxy again with the same files, ports and sockets.
    pub async fn start_again(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// HAProxy's own log (its master's stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// `show proc` through the master socket: (master reloads, failed reloads, current worker pids).
    pub async fn show_proc(&self) -> dockreg::haproxy::ProcList {
        let m = dockreg::haproxy::MasterSocket {
            path: self.master_socket.clone(),
            timeout: Duration::from_secs(10),
        };
        m.show_proc().await.expect("show proc")
    }

    /// A command on the admin (runtime API) socket.
    pub async fn admin(&self, cmd: &str) -> String {
        let mut s = tokio::net::UnixStream::connect(&self.admin_socket)
            .await
            .expect("admin socket");
        s.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill(&mut c);
        }
    }
}

/// HTTP backends that answer every request with `200` and their name; keep-alive, a deep
/// listen backlog and one task per connection, so load never overflows them.
pub struct Backends {
    pub addrs: Vec<SocketAddr>,
    pub hits: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Backends {
    pub async fn start(n: usize) -> Backends {
        let hits = Arc::new(AtomicU64::new(0));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let sock = TcpSocket::new_v4().unwrap();
            sock.set_reuseaddr(true).unwrap();
            sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            let listener = sock.listen(1024).unwrap();
            let addr = listener.local_addr().unwrap();
            addrs.push(addr);
            let hits = hits.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    tokio::spawn(serve(conn, addr, hits.clone()));
                }
            }));
        }
        Backends { addrs, hits, tasks }
    }

    /// Identity each backend answers with.
    pub fn id(addr: SocketAddr) -> String {
        format!("backend {addr}")
    }

    /// The etcd key under `/service` for backend `i`.
    pub fn key(&self, i: usize) -> String {
        format!("/service/{}", self.addrs[i])
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn serve(mut conn: TcpStream, me: SocketAddr, hits: Arc<AtomicU64>) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        let close = head.contains("connection: close");
        buf.drain(..end);
        // `GET /slow/<ms>` answers after that many milliseconds (an in-flight request).
        let delay = head
            .split_whitespace()
            .nth(1)
            .and_then(|path| path.strip_prefix("/slow/"))
            .and_then(|ms| ms.parse().ok());
        hits.fetch_add(1, Ordering::Relaxed);
        if let Some(ms) = delay {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let body = Backends::id(me);
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{}\r\n{}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" },
            body
        );
        if conn.write_all(resp.as_bytes()).await.is_err() || close {
            return;
        }
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
    let fut = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
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
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let who = match get(addr).await {
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
    let want_ids: Vec<String> = if want.is_empty() {
        vec!["status 503".to_string()]
    } else {
        want.iter().map(|a| Backends::id(*a)).collect()
    };
    let rounds = (want.len() * 4).max(6);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let seen = who_answers(addr, rounds).await;
        if seen.len() == want_ids.len() && want_ids.iter().all(|w| seen.contains_key(w)) {
            break;
        }
        if Instant::now() > deadline {
            panic!("HAProxy should route to exactly {want_ids:?}; saw {seen:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..2 {
        let seen = who_answers(addr, rounds).await;
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
    child: Child,
}

impl Watcher {
    /// Starts `dockreg-haproxy` with the standard wiring for `haproxy` and `etcd_urls`, plus
    /// `extra` flags.
    pub fn start(dir: &Path, haproxy: &Haproxy, etcd_urls: &str, extra: &[&str]) -> Watcher {
        let log = dir.join(format!("watcher-{}.log", free_port()));
        let file = File::create(&log).expect("create watcher log");
        let mut cmd = Command::new(WATCHER);
        cmd.arg("--etcd")
            .arg(etcd_urls)
            .arg("--haproxy-config")
            .arg(&haproxy.base)
            .arg("--master-socket")
            .arg(&haproxy.master_socket)
            .arg("--debounce")
            .arg("50ms")
            .arg("--min-reload-interval")
            .arg("200ms")
            .args(extra)
            .envs(haproxy.env.iter().cloned())
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file);
        if !extra.contains(&"--output") {
            cmd.arg("--output").arg(&haproxy.output);
        }
        let child = cmd.spawn().expect("start dockreg-haproxy");
        Watcher { log, child }
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
            .arg(self.child.id().to_string())
            .status();
    }

    /// Sends SIGTERM and returns the exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait for watcher");
        std::mem::forget(self);
        status
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// Kills a child process when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        kill(&mut self.0);
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

//! HTTP backends that answer every request with `200` and their own identity: in-process
//! ([`Backends`], for the tests) or `demo_backend` processes ([`DemoBackends`], for the
//! benchmarks, so that serving traffic takes no CPU from the measuring process).

use crate::{eventually, free_port, Guard};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

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

/// `demo_backend` (the example) serving `n` free loopback ports, each answering
/// `<id_prefix> <address>`; stopped when dropped. The servers keep running whatever etcd
/// says, so requests in flight on a removed server finish.
pub struct DemoBackends {
    pub addrs: Vec<SocketAddr>,
    pub guard: Guard,
}

impl DemoBackends {
    /// Starts the `demo_backend` binary `bin` and waits until every address accepts
    /// connections.
    pub async fn start(bin: &Path, id_prefix: &str, n: usize) -> DemoBackends {
        let addrs: Vec<SocketAddr> = (0..n)
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port())))
            .collect();
        let mut cmd = Command::new(bin);
        cmd.args(["--id-prefix", id_prefix]);
        for a in &addrs {
            cmd.arg("--listen").arg(a.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting {} (cargo build --release --examples): {e}",
                    bin.display()
                )
            });
        let guard = Guard(child);
        for &a in &addrs {
            eventually(
                Duration::from_secs(10),
                "demo_backend listening",
                || async { TcpStream::connect(a).await.is_ok() },
            )
            .await;
        }
        DemoBackends { addrs, guard }
    }
}

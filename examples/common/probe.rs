//! An HTTP/1.1 client through HAProxy's frontend for the latency runs: keep-alive, one
//! request at a time, telling which backend answered.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Who answered a `GET /`.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// A backend's `200` body.
    Ok(String),
    /// Any other status (HAProxy's `503` when no server is up).
    Status(u16),
    /// No answer: connection refused, reset, or a timeout.
    Failed,
}

/// A keep-alive HTTP/1.1 client that reconnects when HAProxy closes the connection.
pub struct Probe {
    addr: SocketAddr,
    conn: Option<TcpStream>,
    buf: Vec<u8>,
    pub requests: u64,
    /// Requests retried on a new connection because a kept-alive one was closed under them.
    pub retried: u64,
    pub failed: u64,
    /// Time spent in requests.
    pub busy: Duration,
}

impl Probe {
    pub fn new(addr: SocketAddr) -> Probe {
        Probe {
            addr,
            conn: None,
            buf: Vec::with_capacity(4096),
            requests: 0,
            retried: 0,
            failed: 0,
            busy: Duration::ZERO,
        }
    }

    pub async fn get(&mut self) -> Answer {
        let started = Instant::now();
        let answer = self.get_once().await;
        self.busy += started.elapsed();
        answer
    }

    async fn get_once(&mut self) -> Answer {
        self.requests += 1;
        let reused = self.conn.is_some();
        if let Some(a) = self.attempt().await {
            return a;
        }
        // A kept-alive connection may be closed by an old worker just as we send: retry once
        // on a new one, as HTTP clients do for idempotent requests.
        if reused {
            self.retried += 1;
            if let Some(a) = self.attempt().await {
                return a;
            }
        }
        self.failed += 1;
        Answer::Failed
    }

    async fn attempt(&mut self) -> Option<Answer> {
        match tokio::time::timeout(Duration::from_secs(2), self.exchange()).await {
            Ok(Ok(a)) => Some(a),
            _ => {
                self.conn = None;
                None
            }
        }
    }

    async fn exchange(&mut self) -> std::io::Result<Answer> {
        use std::io::{Error, ErrorKind};
        let conn = match &mut self.conn {
            Some(c) => c,
            None => {
                let c = TcpStream::connect(self.addr).await?;
                c.set_nodelay(true)?;
                self.conn.insert(c)
            }
        };
        conn.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .await?;
        let buf = &mut self.buf;
        buf.clear();
        let head_end = loop {
            if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p + 4;
            }
            if read_more(conn, buf).await? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no status line"))?;
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim() == name)
                .map(|(_, v)| v.trim().to_string())
        };
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| Error::new(ErrorKind::InvalidData, "no content-length"))?;
        let close = header("connection").is_some_and(|v| v.contains("close"));
        while buf.len() < head_end + length {
            if read_more(conn, buf).await? == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
        }
        let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
        if close {
            self.conn = None;
        }
        Ok(if status == 200 {
            Answer::Ok(body)
        } else {
            Answer::Status(status)
        })
    }

    /// Sends requests back to back until `want` holds; the instant of that answer.
    pub async fn until(
        &mut self,
        timeout: Duration,
        want: impl Fn(&Answer) -> bool,
    ) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let a = self.get().await;
            let now = Instant::now();
            if want(&a) {
                return Some(now);
            }
            if now > deadline {
                return None;
            }
        }
    }
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 4096];
    let n = conn.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

//! A tiny HTTP/1.1 server that answers every request with its own identity, for the demo
//! (`examples/demo.sh`) and for benchmarks behind HAProxy.
//!
//! ```text
//! cargo run --release --example demo_backend -- \
//!     --listen 127.0.0.1:9001 --listen 127.0.0.1:9002 --id-prefix demo
//! ```
//!
//! Each `--listen` address is served by its own task (listen backlog 1024). Every request gets
//! `200 OK`, `Content-Type: text/plain` and the body `<id-prefix> <address>\n`, e.g.
//! `demo 127.0.0.1:9001\n`, so a client can tell which backend answered.
//!
//! The HTTP handling is deliberately small but correct enough for curl, wrk and HAProxy:
//! requests are read up to the blank line (`\r\n\r\n`, at most 64 KiB of head), request bodies
//! (`Content-Length` or `chunked`) are read and discarded, connections are kept alive (HTTP/1.1
//! default, or HTTP/1.0 with `Connection: keep-alive`) until the client sends
//! `Connection: close`, closes, or stays idle for a minute. Pipelined requests are answered in
//! order. Malformed requests get `400` and the connection is closed.
//!
//! SIGINT or SIGTERM stops the server; it exits with status 0.

use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Listen backlog for each address.
const BACKLOG: u32 = 1024;
/// Largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 8 * 1024;
/// A connection that sends nothing for this long is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Size of each socket read.
const READ_SIZE: usize = 16 * 1024;

/// Serve `200 OK` with the server's identity on each address.
#[derive(Debug, Parser)]
#[command(name = "demo_backend", about, long_about = None)]
struct Args {
    /// Address to listen on; repeat for several (each answers with its own address).
    #[arg(long = "listen", required = true)]
    listen: Vec<SocketAddr>,

    /// First word of each answer: `<id-prefix> <address>`.
    #[arg(long, default_value = "demo")]
    id_prefix: String,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();

    // Bind every address before serving any, so a taken port fails at start.
    let mut listeners = Vec::with_capacity(args.listen.len());
    for addr in &args.listen {
        let listener = bind(*addr).with_context(|| format!("listen on {addr}"))?;
        let local = listener
            .local_addr()
            .with_context(|| format!("address of {addr}"))?;
        listeners.push((listener, local));
    }

    for (listener, local) in listeners {
        let body: Arc<[u8]> = format!("{} {local}\n", args.id_prefix).into_bytes().into();
        eprintln!("demo_backend: listening on {local}");
        tokio::spawn(serve(listener, local, body));
    }

    shutdown_signal().await?;
    eprintln!("demo_backend: shutting down");
    Ok(())
}

/// A listening socket with address reuse and a large backlog.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Accepts connections forever, one task per connection.
async fn serve(listener: TcpListener, local: SocketAddr, body: Arc<[u8]>) {
    loop {
        match listener.accept().await {
            Ok((stream, _peer)) => {
                // Small answers: send them at once rather than waiting for Nagle.
                let _ = stream.set_nodelay(true);
                let body = Arc::clone(&body);
                tokio::spawn(async move {
                    // A client going away mid-request is normal; nothing to report.
                    let _ = Connection::new(stream).run(&body).await;
                });
            }
            Err(e) => {
                // Typically EMFILE/ENFILE under load: back off instead of spinning.
                eprintln!("demo_backend: {local}: accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Why a connection ends early.
#[derive(Debug)]
enum Fail {
    /// The peer closed, timed out or the socket failed: just drop the connection.
    Gone,
    /// The request is malformed: answer with this status, then close.
    Bad(&'static str),
}

impl From<std::io::Error> for Fail {
    fn from(_: std::io::Error) -> Self {
        Fail::Gone
    }
}

/// What the request head says about the connection and the body that follows.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    keep_alive: bool,
    head_only: bool,
    body: Body,
    expect_continue: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    Length(u64),
    Chunked,
}

/// One client connection with its read buffer (which may hold pipelined requests).
struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::with_capacity(READ_SIZE),
        }
    }

    /// Answers requests until the client closes or asks to.
    async fn run(mut self, body: &[u8]) -> Result<(), Fail> {
        loop {
            let head = match self.read_head().await {
                Ok(Some(head)) => head,
                Ok(None) => return Ok(()),
                Err(Fail::Bad(status)) => {
                    self.respond(status, b"bad request\n", false, false).await?;
                    return Ok(());
                }
                Err(Fail::Gone) => return Ok(()),
            };
            let has_body = head.body != Body::Length(0);
            if head.expect_continue && has_body {
                self.stream
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await?;
            }
            match head.body {
                Body::Length(n) => self.discard(n).await?,
                Body::Chunked => self.discard_chunked().await?,
            }
            self.respond("200 OK", body, head.keep_alive, head.head_only)
                .await?;
            if !head.keep_alive {
                return Ok(());
            }
        }
    }

    /// Reads more bytes into the buffer; `Gone` on EOF, error or idle timeout.
    async fn fill(&mut self) -> Result<(), Fail> {
        let start = self.buf.len();
        self.buf.resize(start + READ_SIZE, 0);
        let read =
            tokio::time::timeout(IDLE_TIMEOUT, self.stream.read(&mut self.buf[start..])).await;
        let n = match read {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => 0,
        };
        self.buf.truncate(start + n);
        if n == 0 {
            Err(Fail::Gone)
        } else {
            Ok(())
        }
    }

    /// Reads and parses the next request head; `None` when the client closed between requests.
    async fn read_head(&mut self) -> Result<Option<Head>, Fail> {
        loop {
            // Robustness (RFC 9112 §2.2): ignore empty lines before a request line.
            let blank = self
                .buf
                .iter()
                .take_while(|&&b| b == b'\r' || b == b'\n')
                .count();
            self.buf.drain(..blank);
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..end]);
                self.buf.drain(..end + 4);
                return head.map(Some);
            }
            if self.buf.len() > MAX_HEAD {
                return Err(Fail::Bad("431 Request Header Fields Too Large"));
            }
            let was_empty = self.buf.is_empty();
            match self.fill().await {
                Ok(()) => {}
                // Closing between requests is the normal end of a keep-alive connection.
                Err(Fail::Gone) if was_empty => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    /// Skips `n` body bytes.
    async fn discard(&mut self, mut n: u64) -> Result<(), Fail> {
        loop {
            let take = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
            self.buf.drain(..take);
            n -= take as u64;
            if n == 0 {
                return Ok(());
            }
            self.fill().await?;
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF) of a chunked body.
    async fn line(&mut self) -> Result<Vec<u8>, Fail> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line = self.buf[..end].to_vec();
                self.buf.drain(..end + 2);
                return Ok(line);
            }
            if self.buf.len() > MAX_LINE {
                return Err(Fail::Gone);
            }
            self.fill().await?;
        }
    }

    /// Skips a chunked body, trailers included.
    async fn discard_chunked(&mut self) -> Result<(), Fail> {
        loop {
            let line = self.line().await?;
            let size = line.split(|&b| b == b';').next().unwrap_or_default();
            let size = std::str::from_utf8(size)
                .ok()
                .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                .ok_or(Fail::Gone)?;
            if size == 0 {
                // Trailer fields up to an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(());
            }
            self.discard(size).await?;
            if !self.line().await?.is_empty() {
                return Err(Fail::Gone);
            }
        }
    }

    async fn respond(
        &mut self,
        status: &str,
        body: &[u8],
        keep_alive: bool,
        head_only: bool,
    ) -> Result<(), Fail> {
        let connection = if keep_alive { "keep-alive" } else { "close" };
        let mut out = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        if !head_only {
            out.extend_from_slice(body);
        }
        self.stream.write_all(&out).await?;
        if !keep_alive {
            // Tell the client we are done; it closes, so we do not linger in TIME_WAIT.
            let _ = self.stream.shutdown().await;
        }
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Parses a request head (without the final blank line).
fn parse_head(raw: &[u8]) -> Result<Head, Fail> {
    const BAD: Fail = Fail::Bad("400 Bad Request");
    let text = std::str::from_utf8(raw).map_err(|_| BAD)?;
    let mut lines = text.split("\r\n");
    let request_line = lines.next().ok_or(BAD)?;
    let mut parts = request_line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    if method.is_empty() || target.is_empty() {
        return Err(BAD);
    }
    let mut keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err(Fail::Bad("505 HTTP Version Not Supported")),
    };

    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut expect_continue = false;
    for line in lines {
        let (name, value) = line.split_once(':').ok_or(BAD)?;
        if name.is_empty() || name.ends_with([' ', '\t']) {
            return Err(BAD);
        }
        let value = value.trim_matches([' ', '\t']);
        if name.eq_ignore_ascii_case("content-length") {
            let n: u64 = value.parse().map_err(|_| BAD)?;
            if length.is_some_and(|l| l != n) {
                return Err(BAD);
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` coding delimits a request body (RFC 9112 §6.3).
            let last = value.rsplit(',').next().unwrap_or_default().trim();
            if !last.eq_ignore_ascii_case("chunked") {
                return Err(BAD);
            }
            chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    keep_alive = false;
                } else if token.eq_ignore_ascii_case("keep-alive") && version == "HTTP/1.0" {
                    keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("expect") {
            expect_continue = value.eq_ignore_ascii_case("100-continue");
        }
    }
    if chunked && length.is_some() {
        // Ambiguous framing, a request-smuggling pattern: refuse it.
        return Err(BAD);
    }
    Ok(Head {
        keep_alive,
        head_only: method == "HEAD",
        body: if chunked {
            Body::Chunked
        } else {
            Body::Length(length.unwrap_or(0))
        },
        expect_continue,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        match parse_head(raw.as_bytes()) {
            Ok(h) => h,
            Err(e) => panic!("{raw:?}: {e:?}"),
        }
    }

    #[test]
    fn keep_alive_rules() {
        assert!(head("GET / HTTP/1.1\r\nHost: x").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: Close").keep_alive);
        assert!(!head("GET / HTTP/1.0").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: keep-alive").keep_alive);
        assert!(head("HEAD / HTTP/1.1").head_only);
    }

    #[test]
    fn bodies() {
        assert_eq!(
            head("POST / HTTP/1.1\r\nContent-Length: 5").body,
            Body::Length(5)
        );
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked").body,
            Body::Chunked
        );
        assert!(parse_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6").is_err());
        assert!(
            parse_head(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked")
                .is_err()
        );
    }

    #[test]
    fn malformed() {
        assert!(parse_head(b"GET /").is_err());
        assert!(parse_head(b"GET / HTTP/1.1 x").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nno colon").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost : x").is_err());
        assert!(matches!(parse_head(b"GET / HTTP/2.0"), Err(Fail::Bad(s)) if s.starts_with("505")));
    }
}

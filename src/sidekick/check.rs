//! Health checks for the app the sidekick registers: one [`probe`] of its port (a TCP connect,
//! or an HTTP GET answered with an accepted status) bounded by `--timeout`, and the
//! [`Hysteresis`] that turns a stream of probe results into Up/Down decisions with `--rise` and
//! `--fall`.
//!
//! The HTTP check is a deliberately minimal HTTP/1.1 client over a plain [`TcpStream`]: it sends
//! `GET <path> HTTP/1.1` with `Host`, `Connection: close` and `User-Agent: dockreg`, reads until
//! the status line is complete and judges the status code alone. Headers and body are never
//! waited for; interim `1xx` responses (other than `101`) are skipped, as HTTP/1.1 requires.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The most bytes read from an HTTP response before giving up on finding its final status
/// line (interim `1xx` responses and their headers included).
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Accepted HTTP statuses, parsed from "200-399,404".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatusSet(Vec<(u16, u16)>);

impl StatusSet {
    /// Whether `code` is one of the accepted statuses.
    pub(crate) fn contains(&self, code: u16) -> bool {
        self.0.iter().any(|&(lo, hi)| lo <= code && code <= hi)
    }
}

impl FromStr for StatusSet {
    type Err = String;

    /// Comma-separated codes (`404`) and inclusive ranges (`200-399`); spaces around either are
    /// ignored. Every status must lie in 100-599 and a range must not be reversed.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(format!("--check-status {s:?}: no status given"));
        }
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let bad = |why: &str| format!("--check-status {part:?}: {why}");
            if part.is_empty() {
                return Err(format!("--check-status {s:?}: empty entry"));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (part, part),
            };
            let (Some(lo), Some(hi)) = (parse_status(lo), parse_status(hi)) else {
                return Err(bad("not a status or range"));
            };
            if !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
                return Err(bad("HTTP statuses are 100-599"));
            }
            if lo > hi {
                return Err(bad("reversed range"));
            }
            ranges.push((lo, hi));
        }
        Ok(Self(ranges))
    }
}

/// A status code: ASCII digits only (no sign), at most three of them.
fn parse_status(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for StatusSet {
    /// The set as it is written on the command line: `200-399,404`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, &(lo, hi)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if lo == hi {
                write!(f, "{lo}")?;
            } else {
                write!(f, "{lo}-{hi}")?;
            }
        }
        Ok(())
    }
}

/// What one probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    /// The port accepts a TCP connection.
    Tcp,
    /// `GET <path>` answers with a status in `statuses`.
    Http { path: String, statuses: StatusSet },
}

impl Check {
    /// An HTTP check, refusing a path that cannot go into a request line (it must start with
    /// `/` and hold no whitespace or control characters). Use it at start-up so a bad
    /// `--check-path` is a clear error there rather than a failure of every probe.
    pub(crate) fn http(path: impl Into<String>, statuses: StatusSet) -> Result<Self, String> {
        let path = path.into();
        validate_path(&path)?;
        Ok(Self::Http { path, statuses })
    }
}

fn validate_path(path: &str) -> Result<(), String> {
    if !path.starts_with('/') {
        return Err(format!("--check-path {path:?}: must start with '/'"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "--check-path {path:?}: must not contain spaces or control characters"
        ));
    }
    Ok(())
}

/// One probe of `addr`, bounded by `timeout` in total. Err says why, e.g. "tcp 127.0.0.1:8000: connection refused", "http GET /health on 127.0.0.1:8000: status 503 not in 200-399", "...: timed out after 3s".
pub(crate) async fn probe(
    check: &Check,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<(), String> {
    let (what, outcome) = match check {
        Check::Tcp => (
            format!("tcp {addr}"),
            tokio::time::timeout(timeout, async {
                TcpStream::connect(addr).await.map(drop).map_err(io_reason)
            })
            .await,
        ),
        Check::Http { path, statuses } => (
            format!("http GET {path} on {addr}"),
            tokio::time::timeout(timeout, http_probe(path, statuses, addr)).await,
        ),
    };
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(why)) => Err(format!("{what}: {why}")),
        Err(_elapsed) => Err(format!(
            "{what}: timed out after {}",
            humantime::format_duration(timeout)
        )),
    }
}

/// The HTTP exchange; the caller bounds it in time and prefixes the error.
async fn http_probe(path: &str, statuses: &StatusSet, addr: SocketAddr) -> Result<(), String> {
    validate_path(path)?;
    let mut stream = TcpStream::connect(addr).await.map_err(io_reason)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: dockreg\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        host_header(addr)
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("sending the request: {}", io_reason(e)))?;
    let code = read_final_status(&mut stream).await?;
    if statuses.contains(code) {
        Ok(())
    } else {
        Err(format!("status {code} not in {statuses}"))
    }
}

/// `Host` header value: the address without an IPv6 scope id, which has no place there.
fn host_header(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// Reads the response up to its final status line and returns the status code, skipping
/// interim `1xx` responses (except `101`, which is final).
async fn read_final_status<R: AsyncReadExt + Unpin>(stream: &mut R) -> Result<u16, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(512);
    // Where the first unparsed line starts in `buf`.
    let mut start = 0;
    // Inside an interim response: skipping its header lines up to the blank one.
    let mut in_interim = false;
    loop {
        while let Some(eol) = buf[start..].iter().position(|&b| b == b'\n') {
            let line = &buf[start..start + eol];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            start += eol + 1;
            if in_interim {
                in_interim = !line.is_empty();
                continue;
            }
            let code = parse_status_line(line)?;
            if (100..200).contains(&code) && code != 101 {
                in_interim = true;
                continue;
            }
            return Ok(code);
        }
        if buf.len() >= MAX_RESPONSE_HEAD {
            return Err(format!(
                "no status line in the first {MAX_RESPONSE_HEAD} bytes of the response"
            ));
        }
        let mut chunk = [0u8; 1024];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the response: {}", io_reason(e)))?;
        if n == 0 {
            return Err(if buf.is_empty() {
                "connection closed without a response".to_string()
            } else {
                "connection closed before the status line was complete".to_string()
            });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// `HTTP/1.1 200 OK` → 200. The reason phrase may be empty or missing.
fn parse_status_line(line: &[u8]) -> Result<u16, String> {
    let malformed = || {
        let shown: String = String::from_utf8_lossy(line).chars().take(80).collect();
        format!("malformed status line {shown:?}")
    };
    let rest = line.strip_prefix(b"HTTP/").ok_or_else(malformed)?;
    let sp = rest.iter().position(|&b| b == b' ').ok_or_else(malformed)?;
    let (version, rest) = (&rest[..sp], &rest[sp + 1..]);
    if version.is_empty() || !version.iter().all(|&b| b.is_ascii_digit() || b == b'.') {
        return Err(malformed());
    }
    let digits = rest.get(..3).ok_or_else(malformed)?;
    if !digits.iter().all(u8::is_ascii_digit) || rest.get(3).is_some_and(|&b| b != b' ') {
        return Err(malformed());
    }
    Ok(digits
        .iter()
        .fold(0u16, |n, &d| n * 10 + u16::from(d - b'0')))
}

/// An I/O error as a short reason: the OS message without its "(os error N)" suffix and in
/// lower case at the start, e.g. "connection refused".
fn io_reason(e: io::Error) -> String {
    let text = e.to_string();
    let text = match e.raw_os_error() {
        Some(code) => text
            .strip_suffix(&format!(" (os error {code})"))
            .unwrap_or(&text)
            .to_string(),
        None => text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => format!("{:?}", e.kind()),
    }
}

/// The app's health as the sidekick sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// No check has run yet.
    Unknown,
    Up,
    Down,
}

/// Rise/fall hysteresis. From Unknown the first result decides at once (a first success is Up right away: registration must not wait for `rise` checks at start; a first failure is Down). From Up, `fall` consecutive failures make it Down; from Down, `rise` consecutive successes make it Up. A result that breaks a streak resets it.
#[derive(Debug, Clone)]
pub(crate) struct Hysteresis {
    rise: u32,
    fall: u32,
    health: Health,
    /// Consecutive results against the current health (failures while Up, successes while
    /// Down).
    streak: u32,
}

impl Hysteresis {
    /// `rise` and `fall` of 0 are treated as 1.
    pub(crate) fn new(rise: u32, fall: u32) -> Self {
        Self {
            rise: rise.max(1),
            fall: fall.max(1),
            health: Health::Unknown,
            streak: 0,
        }
    }

    /// Records one result; returns the new health when it changed.
    pub(crate) fn observe(&mut self, ok: bool) -> Option<Health> {
        let (against, threshold, flipped) = match self.health {
            Health::Unknown => {
                self.health = if ok { Health::Up } else { Health::Down };
                self.streak = 0;
                return Some(self.health);
            }
            Health::Up => (!ok, self.fall, Health::Down),
            Health::Down => (ok, self.rise, Health::Up),
        };
        if !against {
            self.streak = 0;
            return None;
        }
        self.streak = self.streak.saturating_add(1);
        if self.streak < threshold {
            return None;
        }
        self.streak = 0;
        self.health = flipped;
        Some(flipped)
    }

    pub(crate) fn health(&self) -> Health {
        self.health
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tokio::net::TcpListener;

    fn set(s: &str) -> StatusSet {
        s.parse().unwrap()
    }

    #[test]
    fn status_set_single_and_ranges() {
        let s = set("200");
        assert!(s.contains(200));
        assert!(!s.contains(201));

        let s = set("200-399,404");
        for ok in [200, 204, 301, 399, 404] {
            assert!(s.contains(ok), "{ok}");
        }
        for bad in [199, 400, 403, 405, 500] {
            assert!(!s.contains(bad), "{bad}");
        }
        assert_eq!(s.to_string(), "200-399,404");
    }

    #[test]
    fn status_set_allows_spaces() {
        let s = set(" 200 - 299 , 404 ,418");
        assert_eq!(s, set("200-299,404,418"));
        assert!(s.contains(250) && s.contains(418) && !s.contains(300));
    }

    #[test]
    fn status_set_rejects_bad_input_naming_the_part() {
        let err = "200,20x".parse::<StatusSet>().unwrap_err();
        assert_eq!(err, "--check-status \"20x\": not a status or range");
        for bad in [
            "",
            " ",
            "abc",
            "200-",
            "-200",
            "200-300-400",
            "+200",
            "2000",
            "200,,300",
        ] {
            assert!(bad.parse::<StatusSet>().is_err(), "{bad:?} accepted");
        }
        let err = "600".parse::<StatusSet>().unwrap_err();
        assert!(err.contains("\"600\""), "{err}");
        let err = "99-200".parse::<StatusSet>().unwrap_err();
        assert!(err.contains("\"99-200\""), "{err}");
    }

    #[test]
    fn status_set_rejects_reversed_range() {
        let err = "200-299,399-300".parse::<StatusSet>().unwrap_err();
        assert_eq!(err, "--check-status \"399-300\": reversed range");
    }

    #[test]
    fn check_http_validates_path() {
        assert!(Check::http("/health", set("200")).is_ok());
        assert!(Check::http("health", set("200")).is_err());
        assert!(Check::http("/a b", set("200")).is_err());
        assert!(Check::http("/a\r\nX: y", set("200")).is_err());
    }

    #[test]
    fn hysteresis_first_result_decides_at_once() {
        let mut h = Hysteresis::new(3, 3);
        assert_eq!(h.health(), Health::Unknown);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.health(), Health::Up);

        let mut h = Hysteresis::new(3, 3);
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.health(), Health::Down);
    }

    #[test]
    fn hysteresis_fall_needs_consecutive_failures() {
        let mut h = Hysteresis::new(2, 2);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(false), None);
        assert_eq!(h.health(), Health::Up);
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.health(), Health::Down);
        // Further failures change nothing.
        assert_eq!(h.observe(false), None);
    }

    #[test]
    fn hysteresis_success_in_between_resets_fall() {
        let mut h = Hysteresis::new(2, 2);
        h.observe(true);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None);
        assert_eq!(h.health(), Health::Up);
        assert_eq!(h.observe(false), Some(Health::Down));
    }

    #[test]
    fn hysteresis_rise_needs_consecutive_successes() {
        let mut h = Hysteresis::new(3, 1);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(false), None); // breaks the streak
        assert_eq!(h.observe(true), None);
        assert_eq!(h.observe(true), None);
        assert_eq!(h.health(), Health::Down);
        assert_eq!(h.observe(true), Some(Health::Up));
        assert_eq!(h.observe(true), None);
    }

    #[test]
    fn hysteresis_zero_thresholds_act_as_one() {
        let mut h = Hysteresis::new(0, 0);
        h.observe(true);
        assert_eq!(h.observe(false), Some(Health::Down));
        assert_eq!(h.observe(true), Some(Health::Up));
    }

    fn http(path: &str, statuses: &str) -> Check {
        Check::http(path, set(statuses)).unwrap()
    }

    /// Reads a request head (up to the blank line) and returns it.
    async fn read_request(sock: &mut TcpStream) -> String {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 512];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = sock.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before the end of its request");
            buf.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8(buf).unwrap()
    }

    /// A one-connection HTTP server writing `parts` (pausing between them) after the request;
    /// the request head is returned by the join handle.
    async fn serve_once(parts: Vec<&'static str>) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let request = read_request(&mut sock).await;
            for (i, part) in parts.iter().enumerate() {
                if i > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                // The client may hang up as soon as it has the status line.
                if sock.write_all(part.as_bytes()).await.is_err() {
                    break;
                }
            }
            request
        });
        (addr, task)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn tcp_ok() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        probe(&Check::Tcp, addr, T).await.unwrap();
    }

    #[tokio::test]
    async fn tcp_refused() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let err = probe(&Check::Tcp, addr, T).await.unwrap_err();
        assert_eq!(err, format!("tcp {addr}: connection refused"));
    }

    #[tokio::test]
    async fn http_200_ok_and_request_is_well_formed() {
        let (addr, server) =
            serve_once(vec!["HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"]).await;
        probe(&http("/health?x=1", "200-399"), addr, T)
            .await
            .unwrap();
        let request = server.await.unwrap();
        assert!(
            request.starts_with("GET /health?x=1 HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains(&format!("\r\nHost: {addr}\r\n")),
            "{request}"
        );
        assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        assert!(request.contains("\r\nUser-Agent: dockreg\r\n"), "{request}");
    }

    #[tokio::test]
    async fn http_503_rejected_with_status_in_message() {
        let (addr, _server) = serve_once(vec!["HTTP/1.1 503 Service Unavailable\r\n\r\n"]).await;
        let err = probe(&http("/health", "200-399"), addr, T)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!("http GET /health on {addr}: status 503 not in 200-399")
        );
    }

    #[tokio::test]
    async fn http_accepted_status_outside_2xx() {
        let (addr, _server) = serve_once(vec!["HTTP/1.0 404 Not Found\r\n\r\n"]).await;
        probe(&http("/", "200-299,404"), addr, T).await.unwrap();
    }

    #[tokio::test]
    async fn http_never_answering_times_out_within_the_timeout() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            // Hold the connection open, silent, until the test ends.
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(sock);
        });
        let timeout = Duration::from_millis(200);
        let started = Instant::now();
        let err = probe(&http("/health", "200-399"), addr, timeout)
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert_eq!(
            err,
            format!("http GET /health on {addr}: timed out after 200ms")
        );
        assert!(took >= timeout, "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn http_status_line_split_across_writes() {
        let (addr, _server) = serve_once(vec!["HTTP/1.1 20", "0 OK\r\n", "\r\n"]).await;
        probe(&http("/", "200"), addr, T).await.unwrap();
    }

    #[tokio::test]
    async fn http_interim_response_is_skipped() {
        let (addr, _server) = serve_once(vec![
            "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 500 Oops\r\n\r\n",
        ])
        .await;
        let err = probe(&http("/", "200-399"), addr, T).await.unwrap_err();
        assert!(err.ends_with("status 500 not in 200-399"), "{err}");

        // Bare line feeds, and an interim response without headers.
        let (addr, _server) =
            serve_once(vec!["HTTP/1.1 100 Continue\n\nHTTP/1.1 204 No Content\n\n"]).await;
        probe(&http("/", "200-399"), addr, T).await.unwrap();
    }

    #[tokio::test]
    async fn http_closed_or_garbage_is_an_error() {
        let (addr, _server) = serve_once(vec![]).await;
        let err = probe(&http("/", "200"), addr, T).await.unwrap_err();
        assert!(
            err.ends_with("connection closed without a response"),
            "{err}"
        );

        let (addr, _server) = serve_once(vec!["SSH-2.0-OpenSSH\r\n"]).await;
        let err = probe(&http("/", "200"), addr, T).await.unwrap_err();
        assert!(err.contains("malformed status line"), "{err}");
    }

    #[test]
    fn status_line_parsing() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Ok(200));
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Ok(204));
        assert_eq!(parse_status_line(b"HTTP/1.0 301 "), Ok(301));
        assert!(parse_status_line(b"HTTP/1.1 2000 OK").is_err());
        assert!(parse_status_line(b"HTTP/1.1 20 OK").is_err());
        assert!(parse_status_line(b"HTTP/1.1  200 OK").is_err());
        assert!(parse_status_line(b"ICY 200 OK").is_err());
    }
}

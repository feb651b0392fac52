//! What `wrk` prints: requests, socket errors, non-2xx/3xx answers.

use anyhow::{anyhow, bail, Context as _, Result};
use std::process::Stdio;

/// A `wrk` run in the background.
pub struct Wrk {
    child: tokio::process::Child,
    /// Its command line as printed (the frontend's port as `$PORT`).
    pub shown: String,
}

impl Wrk {
    /// Starts `wrk args…`; `port` (the frontend's) is printed as `$PORT`.
    pub fn start(args: &[&str], port: u16) -> Result<Wrk> {
        let shown: Vec<String> = args
            .iter()
            .map(|w| {
                if w.contains(' ') {
                    format!("'{w}'")
                } else {
                    w.replace(&port.to_string(), "$PORT")
                }
            })
            .collect();
        let child = tokio::process::Command::new("wrk")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting wrk (apt-get install wrk)")?;
        Ok(Wrk {
            child,
            shown: format!("wrk {}", shown.join(" ")),
        })
    }

    /// Waits for `wrk` to end; what it printed.
    pub async fn finish(self) -> Result<WrkResult> {
        let out = self
            .child
            .wait_with_output()
            .await
            .context("waiting for wrk")?;
        WrkResult::parse(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Figures `wrk` prints; absent lines mean 0.
#[derive(Debug, Default)]
pub struct WrkResult {
    pub requests: u64,
    pub connect: u64,
    pub read: u64,
    pub write: u64,
    pub timeout: u64,
    pub non_2xx_3xx: u64,
}

impl WrkResult {
    pub fn parse(text: &str) -> Result<WrkResult> {
        let mut r = WrkResult::default();
        let mut saw_requests = false;
        for line in text.lines().map(str::trim) {
            if line.contains(" requests in ") {
                r.requests = first_number(line)?;
                saw_requests = true;
            } else if let Some(rest) = line.strip_prefix("Socket errors:") {
                for part in rest.split(',') {
                    let mut w = part.split_whitespace();
                    let (Some(kind), Some(n)) = (w.next(), w.next()) else {
                        continue;
                    };
                    let n: u64 = n.parse().with_context(|| format!("wrk: {line:?}"))?;
                    match kind {
                        "connect" => r.connect = n,
                        "read" => r.read = n,
                        "write" => r.write = n,
                        "timeout" => r.timeout = n,
                        _ => {}
                    }
                }
            } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
                r.non_2xx_3xx = first_number(rest)?;
            }
        }
        if !saw_requests {
            bail!("no request count in wrk's output:\n{text}");
        }
        Ok(r)
    }

    pub fn errors(&self) -> u64 {
        self.connect + self.read + self.write + self.timeout + self.non_2xx_3xx
    }
}

fn first_number(text: &str) -> Result<u64> {
    text.split_whitespace()
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| anyhow!("no number at the start of {text:?}"))
}

//! HAProxy's master CLI (`-S <socket>` in master-worker mode): `show proc` and `reload`.
//!
//! HAProxy 2.6's `reload` answers nothing, and the master refuses connections while it
//! re-executes, so the outcome is read back from `show proc`: the master's reload counter
//! must move, its failed-reload counter must not, and a new worker must be there.

use super::reload::ReloadError;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// How long the master may take to answer before a reload: it answers in microseconds, so
/// longer means it is not there (or hung), and the reload fails fast.
const MASTER_CHECK: Duration = Duration::from_millis(500);

/// What went wrong on the master socket. Each message names the socket; the watcher's
/// reload path turns these into [`ReloadError`]s by kind.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The socket is missing or refuses connections throughout: HAProxy is not running.
    #[error("master socket {}: {error} (is HAProxy running?)", socket.display())]
    Unreachable {
        socket: PathBuf,
        error: std::io::Error,
    },
    /// No usable answer in time (`last` says what the last attempt got).
    #[error("master socket {}: {last}", socket.display())]
    NoAnswer { socket: PathBuf, last: String },
    /// The answer to `show proc` is not a process list.
    #[error("master socket {}: {reason} (is it HAProxy's master socket, -S?)", socket.display())]
    Unreadable { socket: PathBuf, reason: String },
    /// `reload` could not be sent.
    #[error("master socket {}: sending reload: {error}", socket.display())]
    Send {
        socket: PathBuf,
        error: std::io::Error,
    },
    /// The master counted a failed reload: HAProxy refused the files at load time.
    #[error(
        "HAProxy refused the files at load time although `haproxy -c` accepted them (its master \
         reports {failed} failed reload(s)); the previous worker keeps serving"
    )]
    Refused { failed: u64 },
    /// The reload was sent, but no new worker came up in time.
    #[error(
        "no new HAProxy worker within {timeout:?} after reload (master socket {})",
        socket.display()
    )]
    NoNewWorker { socket: PathBuf, timeout: Duration },
}

impl MasterError {
    /// Whether trying again soon may work: HAProxy is not there yet, or did not answer.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            MasterError::Unreachable { .. } | MasterError::NoAnswer { .. }
        )
    }
}

impl From<MasterError> for ReloadError {
    fn from(e: MasterError) -> Self {
        let msg = e.to_string();
        match e {
            MasterError::Refused { .. } => ReloadError::Refused(msg),
            MasterError::Unreachable { .. } => ReloadError::Unreachable(msg),
            _ => ReloadError::Failed(msg),
        }
    }
}

/// What `show proc` says about the master and its workers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProcList {
    pub master_pid: u32,
    pub reloads: u64,
    pub failed: u64,
    /// Workers as `(pid, reloads survived)`; a fresh worker has 0.
    pub workers: Vec<(u32, u64)>,
}

impl ProcList {
    /// Parses `show proc` output (HAProxy 2.6 and later).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut list = ProcList::default();
        let mut saw_master = false;
        for line in text.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.is_empty() || fields[0].starts_with('#') {
                continue;
            }
            let Ok(pid) = fields[0].parse::<u32>() else {
                continue;
            };
            match fields.get(1).copied() {
                Some("master") => {
                    saw_master = true;
                    list.master_pid = pid;
                    list.reloads = fields.get(2).and_then(|r| r.parse().ok()).unwrap_or(0);
                    list.failed = fields
                        .get(4)
                        .map(|f| f.trim_end_matches(']'))
                        .and_then(|f| f.parse().ok())
                        .unwrap_or(0);
                }
                Some("worker") => {
                    let reloads = fields.get(2).and_then(|r| r.parse().ok()).unwrap_or(0);
                    list.workers.push((pid, reloads));
                }
                _ => {}
            }
        }
        if saw_master {
            Ok(list)
        } else {
            Err(format!(
                "unexpected `show proc` answer: {:?}",
                text.lines().next().unwrap_or("")
            ))
        }
    }

    /// The newest workers (those that have survived no reload).
    pub fn current_workers(&self) -> impl Iterator<Item = u32> + '_ {
        self.workers
            .iter()
            .filter(|(_, r)| *r == 0)
            .map(|(p, _)| *p)
    }
}

/// A client of the master CLI socket.
#[derive(Debug, Clone)]
pub struct MasterSocket {
    pub path: PathBuf,
    /// How long to wait for a reload's outcome.
    pub timeout: Duration,
}

impl MasterSocket {
    /// Sends one command and reads the answer until the master closes the connection; one
    /// attempt takes at most a second (the master answers in microseconds when it answers).
    pub async fn command(&self, cmd: &str) -> std::io::Result<String> {
        let attempt = async {
            let mut s = UnixStream::connect(&self.path).await?;
            s.write_all(cmd.as_bytes()).await?;
            s.write_all(b"\n").await?;
            // The master answers once the request side is closed, then closes its side.
            s.shutdown().await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok(out)
        };
        tokio::time::timeout(Duration::from_secs(1).min(self.timeout), attempt)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
    }

    /// `show proc`, retried while the master is re-executing (connection refused).
    pub async fn show_proc(&self) -> Result<ProcList, MasterError> {
        self.show_proc_within(self.timeout).await
    }

    /// `show proc`, retried for at most `limit`. A socket that is missing or refuses
    /// connections throughout is [`MasterError::Unreachable`]: HAProxy is not running.
    async fn show_proc_within(&self, limit: Duration) -> Result<ProcList, MasterError> {
        let deadline = Instant::now() + limit;
        let mut last = String::from("empty answer to `show proc`");
        // The last attempt's error, when it says the socket is missing or refused.
        let mut absent;
        loop {
            match self.command("show proc").await {
                Ok(text) if !text.trim().is_empty() => {
                    return ProcList::parse(&text).map_err(|reason| MasterError::Unreadable {
                        socket: self.path.clone(),
                        reason,
                    })
                }
                Ok(_) => absent = None,
                Err(e) => {
                    last = e.to_string();
                    absent = matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    )
                    .then_some(e);
                }
            }
            if Instant::now() >= deadline {
                let socket = self.path.clone();
                return Err(match absent {
                    Some(error) => MasterError::Unreachable { socket, error },
                    None => MasterError::NoAnswer { socket, last },
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Sends `reload`. HAProxy 2.6 closes the connection without an answer (or resets it as
    /// the master re-executes), so only connecting and writing can fail.
    async fn send_reload(&self) -> std::io::Result<()> {
        let mut s = UnixStream::connect(&self.path).await?;
        s.write_all(b"reload\n").await?;
        let _ = s.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(1), s.read_to_end(&mut sink)).await;
        Ok(())
    }

    /// Reloads and waits for the outcome; returns the new worker's PID and how many older
    /// workers are still finishing their connections.
    ///
    /// A master that is not there fails within half a second, not `timeout`: while HAProxy
    /// is down, the caller keeps the files following etcd and tries again soon.
    pub async fn reload(&self) -> Result<(u32, usize), MasterError> {
        let before = self
            .show_proc_within(MASTER_CHECK.min(self.timeout))
            .await?;
        self.send_reload()
            .await
            .map_err(|error| MasterError::Send {
                socket: self.path.clone(),
                error,
            })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            // While the master re-executes it refuses connections: keep polling.
            let now = match self.command("show proc").await {
                Ok(text) => ProcList::parse(&text).ok(),
                Err(_) => None,
            };
            if let Some(now) = now {
                if now.failed > before.failed {
                    return Err(MasterError::Refused { failed: now.failed });
                }
                if now.reloads > before.reloads {
                    let old: Vec<u32> = before.workers.iter().map(|(p, _)| *p).collect();
                    if let Some(pid) = now.current_workers().find(|p| !old.contains(p)) {
                        let lingering = now.workers.len() - now.current_workers().count();
                        return Ok((pid, lingering));
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(MasterError::NoNewWorker {
                    socket: self.path.clone(),
                    timeout: self.timeout,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AFTER_FAILED: &str =
        "#<PID>          <type>          <reloads>       <uptime>        <version>
4225            master          2 [failed: 1]   0d00h00m04s     2.6.12-1+deb12u4
# workers
4339            worker          1               0d00h00m01s     2.6.12-1+deb12u4
4227            worker          2               0d00h00m05s     2.6.12-1+deb12u4
# programs
";

    #[test]
    fn parses_show_proc() {
        let p = ProcList::parse(AFTER_FAILED).unwrap();
        assert_eq!(p.master_pid, 4225);
        assert_eq!((p.reloads, p.failed), (2, 1));
        assert_eq!(p.workers, vec![(4339, 1), (4227, 2)]);
        assert_eq!(p.current_workers().count(), 0);
    }

    #[test]
    fn rejects_other_answers() {
        assert!(ProcList::parse("Unknown command").is_err());
    }

    #[tokio::test]
    async fn a_missing_socket_is_unreachable_and_named_by_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let m = MasterSocket {
            path: dir.path().join("no-master.sock"),
            timeout: Duration::from_millis(50),
        };
        let e = m.reload().await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("no-master.sock") && !msg.contains("--master-socket"),
            "{msg}"
        );
        assert!(matches!(
            ReloadError::from(e),
            ReloadError::Unreachable(m) if m == msg
        ));
    }
}

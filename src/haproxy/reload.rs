//! How HAProxy is told to load the new configuration: the master CLI or an operator's
//! command; and [`ReloadError`], the kinds of failure the pipeline retries differently.

use super::master::MasterSocket;
use std::time::Duration;
use tokio::process::Command;

/// More old workers than this after a reload earn a warning.
const OLD_WORKERS_WARN: usize = 5;

/// Why a reload did not happen; each kind is retried differently by the pipeline. The
/// message names the socket or command at fault and what HAProxy said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReloadError {
    /// HAProxy refused the files at load time although `haproxy -c` accepted them (a bind on
    /// a busy port, a file-descriptor limit…); the previous worker keeps serving. Retrying
    /// the same files only pauses its listeners again.
    #[error("{0}")]
    Refused(String),
    /// HAProxy's master is not there: its socket is missing or refuses connections (HAProxy
    /// stopped). Cheap to retry; the files keep following etcd meanwhile.
    #[error("{0}")]
    Unreachable(String),
    /// Anything else: no new worker in time, the reload command failed.
    #[error("{0}")]
    Failed(String),
}

/// Makes HAProxy load the files on disk; `Ok` only once the reload is known to have worked.
pub trait Reload {
    fn reload(&self) -> impl std::future::Future<Output = Result<String, ReloadError>> + Send;
}

/// The reload methods the watcher supports.
#[derive(Debug, Clone)]
pub enum Reloader {
    /// HAProxy's master CLI socket, confirmed through `show proc`.
    Master(MasterSocket),
    /// An operator's command, run with `sh -c`; exit status 0 means success.
    Command { cmd: String, timeout: Duration },
}

impl Reload for Reloader {
    async fn reload(&self) -> Result<String, ReloadError> {
        match self {
            Reloader::Master(m) => {
                let (pid, old) = m.reload().await?;
                if old > OLD_WORKERS_WARN {
                    // hard-stop-after and mworker-max-reloads in the base config bound them.
                    tracing::warn!(
                        old_workers = old,
                        "old HAProxy workers are piling up (long-lived connections?); check hard-stop-after and mworker-max-reloads"
                    );
                }
                Ok(format!(
                    "new worker pid {pid}, {old} old worker(s) finishing"
                ))
            }
            Reloader::Command { cmd, timeout } => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                match tokio::time::timeout(*timeout, c.output()).await {
                    Err(_) => Err(ReloadError::Failed(format!(
                        "reload command {cmd:?} timed out after {timeout:?}"
                    ))),
                    Ok(Err(e)) => Err(ReloadError::Failed(format!(
                        "reload command {cmd:?}: cannot run: {e}"
                    ))),
                    Ok(Ok(out)) if out.status.success() => {
                        Ok("reload command exited 0".to_string())
                    }
                    Ok(Ok(out)) => Err(ReloadError::Failed(format!(
                        "reload command {cmd:?} failed ({}): {}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))),
                }
            }
        }
    }
}

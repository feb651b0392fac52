//! Validation of candidate configurations with HAProxy itself (`haproxy -c`), behind the
//! [`Validate`] seam the change pipeline uses.

use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

/// Why a candidate did not pass. A refusal holds HAProxy's own message; a transient failure
/// names the binary and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// HAProxy refused the configuration; checking it again unchanged is pointless.
    #[error("{0}")]
    Refused(String),
    /// The check could not run (timeout, missing binary, I/O); worth retrying.
    #[error("{0}")]
    Transient(String),
}

impl CheckError {
    /// Whether checking the same files again may pass (the check did not run to its end).
    pub fn is_transient(&self) -> bool {
        matches!(self, CheckError::Transient(_))
    }
}

/// Checks a set of configuration files the way HAProxy will load them.
pub trait Validate: Send + Sync + 'static {
    /// `files` are passed in order as `-f`, after the base configuration. A refusal holds
    /// HAProxy's own message.
    fn validate(
        &self,
        files: &[PathBuf],
    ) -> impl std::future::Future<Output = Result<(), CheckError>> + Send;

    /// Something that changes when the base configuration does (so a refused candidate is
    /// checked again after the operator fixed the base).
    fn base_fingerprint(&self) -> Option<std::time::SystemTime> {
        None
    }

    /// The base configuration checked before the candidates, if any.
    fn base_path(&self) -> Option<&Path> {
        None
    }
}

/// `haproxy -c -f <base> -f <file>...`.
#[derive(Debug, Clone)]
pub struct Validator {
    pub haproxy_bin: PathBuf,
    pub base: Option<PathBuf>,
    pub timeout: Duration,
}

/// HAProxy's output, without the noise: trimmed lines joined with ` | `.
fn summarize(out: &[u8]) -> String {
    String::from_utf8_lossy(out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}

impl Validate for Validator {
    async fn validate(&self, files: &[PathBuf]) -> Result<(), CheckError> {
        let mut cmd = Command::new(&self.haproxy_bin);
        cmd.arg("-c");
        for f in self.base.iter().chain(files) {
            cmd.arg("-f").arg(f);
        }
        cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
        let out = match tokio::time::timeout(self.timeout, cmd.output()).await {
            Err(_) => {
                return Err(CheckError::Transient(format!(
                    "`{} -c` timed out after {:?}",
                    self.haproxy_bin.display(),
                    self.timeout
                )))
            }
            Ok(Err(e)) => {
                return Err(CheckError::Transient(format!(
                    "cannot run {}: {e}",
                    self.haproxy_bin.display()
                )))
            }
            Ok(Ok(out)) => out,
        };
        if out.status.success() {
            return Ok(());
        }
        // Without a base configuration the candidates are backends alone, which HAProxy finds
        // valid but could not start on its own: its verdict says so, and that is a pass.
        if self.base.is_none() && out.status.code() == Some(2) && says_no_listener(&out.stdout) {
            return Ok(());
        }
        let mut msg = summarize(&out.stderr);
        let stdout = summarize(&out.stdout);
        if !stdout.is_empty() {
            if !msg.is_empty() {
                msg.push_str(" | ");
            }
            msg.push_str(&stdout);
        }
        Err(CheckError::Refused(format!(
            "haproxy -c rejected the candidate ({}): {msg}",
            out.status
        )))
    }

    fn base_fingerprint(&self) -> Option<std::time::SystemTime> {
        let base = self.base.as_ref()?;
        std::fs::metadata(base).and_then(|m| m.modified()).ok()
    }

    fn base_path(&self) -> Option<&Path> {
        self.base.as_deref()
    }
}

/// Whether `haproxy -c`'s output is its "no error, but no listener" verdict.
fn says_no_listener(stdout: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stdout);
    text.contains("Configuration file has no error but will not start (no listener)")
}

/// Whether `path` looks runnable: used to fail early with a clear message.
pub fn find_binary(bin: &Path) -> bool {
    if bin.components().count() > 1 {
        return bin.exists();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(bin).exists()))
        .unwrap_or(false)
}

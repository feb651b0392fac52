//! HAProxy's runtime API (the admin stats socket): sending one command, reading
//! `show servers state` and `show servers conn`, and saving the server state before a reload.
//! Applying a plan of server operations (`haproxy::plan`), with its read-back check and the
//! bounded drain of removed servers, is in `apply`; the command text, in `commands`.
//!
//! Each command uses its own connection (HAProxy's non-interactive mode: one line in, the
//! answer until HAProxy closes); a command costs about 0.07 ms on loopback, so there is no
//! gain in a session. HAProxy 2.6 answers a successful command with nothing or with one of a
//! few fixed sentences (`SUCCESS_ANSWERS`, and `set server … addr`'s answers ending `by 'stats
//! socket command'`); anything else is its error message.

pub(crate) mod apply;
pub(crate) mod commands;
#[cfg(test)]
mod tests;

pub use apply::{ApplyError, RuntimeUpdate};
pub(crate) use apply::{RuntimeApplier, RuntimePath};

use super::config::Config;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// What HAProxy 2.6 answers to a command that worked (`add server`, `del server`; the others
/// answer nothing).
pub(crate) const SUCCESS_ANSWERS: [&str; 2] = ["New server registered.", "Server deleted."];

/// How `set server <id> addr …` ends each answer that means it was done (`IP changed from
/// '0.0.0.0' to '10.0.0.1', no need to change the port by 'stats socket command'`, or `no need
/// to change the addr, …`).
pub(crate) const SET_ADDR_DONE: &str = "by 'stats socket command'";

/// `srv_admin_state` bit: forced maintenance (`set server … state maint`, `disable server`).
pub(crate) const ADMIN_FORCED_MAINT: u32 = 0x01;
/// `srv_admin_state` bit: maintenance from the configuration (`disabled`).
pub(crate) const ADMIN_CONFIG_MAINT: u32 = 0x04;

/// A boxed future, for the object-safe [`RuntimeUpdate`] seam.
pub(crate) type BoxFuture<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// What went wrong with a command on the admin socket. Each message names the socket or the
/// command, and HAProxy's answer when there is one.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The socket could not be reached, or the exchange broke off.
    #[error("admin socket {}: `{cmd}`: {error}", socket.display())]
    Io {
        socket: PathBuf,
        cmd: String,
        error: std::io::Error,
    },
    /// HAProxy did not answer in time.
    #[error("admin socket {}: `{cmd}`: no answer within {timeout:?}", socket.display())]
    Timeout {
        socket: PathBuf,
        cmd: String,
        timeout: Duration,
    },
    /// HAProxy refused a command that changes state.
    #[error("`{cmd}`: HAProxy answered {answer:?}")]
    Refused { cmd: String, answer: String },
    /// HAProxy's answer is not what the command returns (an error message, another format).
    #[error("admin socket {}: `{cmd}`: {reason}", socket.display())]
    Unreadable {
        socket: PathBuf,
        cmd: String,
        reason: String,
    },
    /// The server state was read but could not be saved.
    #[error("server-state file {}: {error}", path.display())]
    StateFile {
        path: PathBuf,
        error: std::io::Error,
    },
}

/// A client of the admin socket.
#[derive(Debug, Clone)]
pub(crate) struct RuntimeSocket {
    pub path: PathBuf,
    /// How long one command may take.
    pub timeout: Duration,
}

impl RuntimeSocket {
    /// Sends one command and returns HAProxy's whole answer.
    pub async fn command(&self, cmd: &str) -> Result<String, AdminError> {
        let attempt = async {
            let mut s = UnixStream::connect(&self.path).await?;
            s.write_all(cmd.as_bytes()).await?;
            s.write_all(b"\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(Ok(out)) => Ok(out),
            Ok(Err(error)) => Err(AdminError::Io {
                socket: self.path.clone(),
                cmd: cmd.to_string(),
                error,
            }),
            Err(_) => Err(AdminError::Timeout {
                socket: self.path.clone(),
                cmd: cmd.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    /// An answer to `cmd` that is not what the command returns.
    pub(crate) fn unreadable(&self, cmd: String, reason: String) -> AdminError {
        AdminError::Unreadable {
            socket: self.path.clone(),
            cmd,
            reason,
        }
    }

    /// Sends a command that changes state; `Err` carries HAProxy's refusal.
    pub async fn exec(&self, cmd: &str) -> Result<(), AdminError> {
        let answer = self.command(cmd).await?;
        let answer = answer.trim();
        if answer.is_empty() || SUCCESS_ANSWERS.contains(&answer) || answer.ends_with(SET_ADDR_DONE)
        {
            Ok(())
        } else {
            Err(AdminError::Refused {
                cmd: cmd.to_string(),
                answer: answer.to_string(),
            })
        }
    }

    /// `show servers state [<backend>]`, parsed.
    pub async fn servers_state(
        &self,
        backend: Option<&str>,
    ) -> Result<Vec<ServerState>, AdminError> {
        let cmd = commands::show_servers_state(backend);
        let text = self.command(&cmd).await?;
        ServerState::parse_all(&text).map_err(|reason| self.unreadable(cmd, reason))
    }

    /// Writes `show servers state` to `path` (atomically), for HAProxy's
    /// `load-server-state-from-file` at the next reload, keeping only what agrees with
    /// `configs` (see [`state_for`]). Returns the servers saved and left out.
    pub async fn save_state(
        &self,
        path: &Path,
        configs: &[&Config],
    ) -> Result<(usize, usize), AdminError> {
        let cmd = commands::show_servers_state(None);
        let dump = self.command(&cmd).await?;
        // Check it is the state dump and not an error before it replaces the last good one.
        let (text, dropped) =
            state_for(&dump, configs).map_err(|reason| self.unreadable(cmd, reason))?;
        let saved = text.lines().count().saturating_sub(2);
        crate::core::files::Staged::write(path, &text)
            .and_then(|s| s.commit())
            .map_err(|error| AdminError::StateFile {
                path: path.to_path_buf(),
                error,
            })?;
        Ok((saved, dropped))
    }
}

/// Whether HAProxy's text of an address (`show servers state`, `show servers conn`) and the
/// configuration's name the same IP. Compared as parsed addresses, never as text: HAProxy
/// prints with `inet_ntop`, which spells `::/96` addresses with an embedded IPv4 part
/// (`[::a00:1]` comes back as `::10.0.0.1`). Text that is not an IP on either side (a name
/// HAProxy has not resolved) is compared as it is.
pub(crate) fn same_ip(haproxy: &str, config: &str) -> bool {
    match (haproxy.parse::<IpAddr>(), config.parse::<IpAddr>()) {
        (Ok(a), Ok(b)) => a == b,
        _ => haproxy == config,
    }
}

/// One line of `show servers state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub backend: String,
    pub name: String,
    pub addr: String,
    pub port: u16,
    /// 0 stopped, 1 starting, 2 running, 3 stopping.
    pub op_state: u32,
    /// Bit field; see `ADMIN_FORCED_MAINT`.
    pub admin_state: u32,
    /// The weight the user set (`srv_uweight`).
    pub weight: u16,
}

impl ServerState {
    /// Whether the server takes no new requests because of maintenance.
    pub fn in_maintenance(&self) -> bool {
        self.admin_state & (ADMIN_FORCED_MAINT | ADMIN_CONFIG_MAINT) != 0
    }

    /// Parses the dump (format version 1, columns found by their names in the header line).
    pub fn parse_all(text: &str) -> Result<Vec<ServerState>, String> {
        let mut lines = text.lines();
        let Some(columns) = Columns::read(&mut lines)? else {
            return Ok(Vec::new());
        };
        lines
            .filter(|l| !l.trim().is_empty())
            .map(|l| columns.parse(l))
            .collect()
    }
}

/// Where the fields are in `show servers state` lines.
struct Columns {
    backend: usize,
    name: usize,
    addr: usize,
    op: usize,
    admin: usize,
    weight: usize,
    port: usize,
}

impl Columns {
    /// Reads the version line and the header; `None` for an empty answer.
    fn read<'a>(lines: &mut impl Iterator<Item = &'a str>) -> Result<Option<Columns>, String> {
        match lines.next().map(str::trim) {
            Some("1") => {}
            Some("") | None => return Ok(None),
            Some(other) => return Err(format!("unexpected answer {other:?}")),
        }
        let header = lines.next().ok_or("no header line")?;
        let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
        let col = |name: &str| {
            cols.iter()
                .position(|c| *c == name)
                .ok_or_else(|| format!("no column {name} in the header"))
        };
        Ok(Some(Columns {
            backend: col("be_name")?,
            name: col("srv_name")?,
            addr: col("srv_addr")?,
            op: col("srv_op_state")?,
            admin: col("srv_admin_state")?,
            weight: col("srv_uweight")?,
            port: col("srv_port")?,
        }))
    }

    fn parse(&self, line: &str) -> Result<ServerState, String> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let get = |i: usize| {
            f.get(i)
                .copied()
                .ok_or_else(|| format!("short line {line:?}"))
        };
        let num = |i: usize| -> Result<u32, String> {
            get(i)?
                .parse()
                .map_err(|_| format!("not a number in column {i} of {line:?}"))
        };
        Ok(ServerState {
            backend: get(self.backend)?.to_string(),
            name: get(self.name)?.to_string(),
            addr: get(self.addr)?.to_string(),
            port: u16::try_from(num(self.port)?).map_err(|_| format!("bad port in {line:?}"))?,
            op_state: num(self.op)?,
            admin_state: num(self.admin)?,
            weight: u16::try_from(num(self.weight)?)
                .map_err(|_| format!("bad weight in {line:?}"))?,
        })
    }
}

/// Keeps the lines of a `show servers state` dump that agree with `configs` (the files the
/// next worker loads, parsed): a server whose address (compared with [`same_ip`]) or port there
/// differs from HAProxy's is left out, because HAProxy would restore the saved port over the
/// configured one. Returns the text and how many servers were left out.
pub(crate) fn state_for(dump: &str, configs: &[&Config]) -> Result<(String, usize), String> {
    let mut want: HashMap<(&str, &str), (&str, u16)> = HashMap::new();
    for config in configs {
        for section in config.sections.iter().filter(|s| s.has_servers()) {
            let Some(backend) = section.name.as_deref() else {
                continue;
            };
            for s in &section.servers {
                want.insert((backend, &s.name), (&s.addr, s.port));
            }
        }
    }
    let mut lines = dump.lines();
    let mut out = String::with_capacity(dump.len());
    let Some(columns) = Columns::read(&mut lines.clone())? else {
        return Ok((String::new(), 0));
    };
    for header in lines.by_ref().take(2) {
        out.push_str(header);
        out.push('\n');
    }
    let mut dropped = 0;
    for line in lines.filter(|l| !l.trim().is_empty()) {
        let s = columns.parse(line)?;
        let agrees = want
            .get(&(s.backend.as_str(), s.name.as_str()))
            .is_none_or(|(addr, port)| same_ip(&s.addr, addr) && *port == s.port);
        if agrees {
            out.push_str(line);
            out.push('\n');
        } else {
            dropped += 1;
        }
    }
    Ok((out, dropped))
}

/// The requests in progress on server `id` (`backend/server`) and its address (`None` when
/// HAProxy's text is not an IP), from `show servers conn`; `None` if it is not listed.
pub(crate) fn used_connections(
    text: &str,
    id: &str,
) -> Result<Option<(u32, Option<IpAddr>)>, String> {
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    if !header.starts_with('#') {
        return Err(format!("`show servers conn`: unexpected answer {header:?}"));
    }
    let cols: Vec<&str> = header.trim_start_matches('#').split_whitespace().collect();
    let at = |name: &str| {
        cols.iter()
            .position(|c| *c == name)
            .ok_or_else(|| format!("`show servers conn`: no column {name}"))
    };
    let (used, addr) = (at("used_cur")?, at("addr")?);
    for line in lines {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first() != Some(&id) {
            continue;
        }
        let n = f
            .get(used)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("`show servers conn`: bad line {line:?}"))?;
        return Ok(Some((n, f.get(addr).and_then(|a| a.parse().ok()))));
    }
    Ok(None)
}

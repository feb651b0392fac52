//! Process plumbing shared by both binaries: logging setup, the shutdown signal, and how a
//! fatal error ends the process (exit status 2 for usage errors, 1 for runtime failures).

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr; `RUST_LOG` overrides the default level (`info`). Colours only
/// when stderr is a terminal, so log files and journald get plain `key=value` text.
pub fn init_logging(format: LogFormat, level: Option<&str>) {
    let filter = level
        .and_then(|l| tracing_subscriber::EnvFilter::try_new(l).ok())
        .or_else(|| tracing_subscriber::EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Tells systemd about the service's state (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) when it
/// runs under a `Type=notify` unit (`NOTIFY_SOCKET` set); does nothing otherwise. Returns
/// whether the message was sent.
pub fn sd_notify(state: &str) -> bool {
    use std::os::unix::net::UnixDatagram;
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    let path = path.to_string_lossy().into_owned();
    let sent = match path.strip_prefix('@') {
        // An abstract socket (Linux).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .and_then(|addr| socket.send_to_addr(state.as_bytes(), &addr))
        }
        None => socket.send_to(state.as_bytes(), &path),
    };
    sent.is_ok()
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process), if any.
pub fn sd_watchdog_interval() -> Option<std::time::Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| std::time::Duration::from_micros(usec))
}

/// Checks a `--log-level` value: a level (`debug`) or a filter (`dockreg=debug,info`).
pub fn parse_log_level(value: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let simple = !value.contains(['=', ',', '[']);
    if simple && !LEVELS.contains(&value.trim().to_ascii_lowercase().as_str()) {
        return Err(format!(
            "\"{value}\" is not a level; use one of {} or a filter such as dockreg=debug,info",
            LEVELS.join(", ")
        ));
    }
    match tracing_subscriber::EnvFilter::try_new(value) {
        Ok(_) => Ok(value.to_string()),
        Err(e) => Err(format!(
            "not a level or filter ({e}); use e.g. info, debug, warn"
        )),
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; stop with SIGKILL");
            return std::future::pending().await;
        };
        let which = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(signal = which, "shutting down");
    }
}

/// Exit status of a usage error: what clap itself uses for a command line it cannot parse.
pub const EXIT_USAGE: u8 = 2;
/// Exit status of a runtime failure.
pub const EXIT_FAILURE: u8 = 1;

/// Why a program stops before its work is done, which decides its exit status and how the
/// error is shown. A program reports its fatal error once, through [`Fatal::report`].
#[derive(Debug)]
pub enum Fatal {
    /// The command line cannot work: a bad flag value, flags that conflict, a file a flag
    /// names that is missing or unusable. Exit status 2, like clap's own parse errors.
    Usage(anyhow::Error),
    /// Something failed while running (etcd, HAProxy, files). Exit status 1.
    Runtime(anyhow::Error),
}

impl Fatal {
    /// A usage error.
    pub fn usage(e: impl Into<anyhow::Error>) -> Self {
        Self::Usage(e.into())
    }

    /// The exit status this error ends the process with.
    pub fn exit_status(&self) -> u8 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Runtime(_) => EXIT_FAILURE,
        }
    }

    /// Shows the error once and returns the exit status. A usage error is printed the way
    /// clap prints its own (`error: …`, the usage line, a pointer to `--help`); a runtime
    /// failure is one error line of the log, in the log format the flags chose.
    pub fn report(self, mut command: clap::Command) -> std::process::ExitCode {
        let status = self.exit_status();
        match self {
            Self::Usage(e) => {
                let _ = command
                    .error(clap::error::ErrorKind::ValueValidation, format!("{e:#}"))
                    .print();
            }
            Self::Runtime(e) => tracing::error!("{e:#}"),
        }
        std::process::ExitCode::from(status)
    }
}

/// Any error not marked as a usage error is a runtime failure.
impl From<anyhow::Error> for Fatal {
    fn from(e: anyhow::Error) -> Self {
        Self::Runtime(e)
    }
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Usage(e) | Self::Runtime(e) => write!(f, "{e:#}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd_notify_sends_to_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // The only test that sets NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(sd_notify("READY=1"));
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(!sd_notify("READY=1"), "nothing to tell outside systemd");
    }

    #[test]
    fn log_levels_and_filters_are_taken_and_typos_refused() {
        for ok in [
            "debug",
            "WARN",
            "off",
            "dockreg=debug,info",
            "info,tower=warn",
        ] {
            assert_eq!(parse_log_level(ok).as_deref(), Ok(ok), "{ok}");
        }
        for bad in ["debg", "", "verbose"] {
            let e = parse_log_level(bad).unwrap_err();
            assert!(
                e.contains("not a level") && e.contains("debug"),
                "{bad}: {e}"
            );
        }
    }
}

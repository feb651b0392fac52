//! The watcher's conversation with its supervisor: SIGHUP (`systemctl reload`) re-reads the
//! templates and the config file, applying a changed one that works; and systemd's watchdog is
//! fed while the pipeline answers.

use crate::watcher::args::WatcherArgs;
use crate::watcher::build::build;
use crate::watcher::pipeline::Input;
use crate::watcher::run::send_or_stop;
use anyhow::Result;
use std::path::PathBuf;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The configuration as the process's command line, environment and config file give it now:
/// `--print-config`'s text and the flags, or why it is refused.
fn reread_config() -> Result<(String, WatcherArgs), String> {
    use clap::{CommandFactory, FromArgMatches};
    let cmd = WatcherArgs::command();
    let parsed = match crate::core::config::get_matches(cmd.clone(), std::env::args_os().collect())
    {
        Ok(parsed) => parsed,
        Err(crate::core::config::ParseError::Config(e)) => return Err(e.to_string()),
        Err(crate::core::config::ParseError::Clap(e)) => return Err(e.to_string()),
    };
    let args = WatcherArgs::from_arg_matches(&parsed.matches).map_err(|e| e.to_string())?;
    Ok((crate::core::config::print_config(&cmd, &parsed), args))
}

/// SIGHUP on a config file: the new configuration if it changed and works (`build` takes it);
/// otherwise why not is logged, and the configuration that runs keeps running.
fn changed_config(started_with: &str) -> Option<WatcherArgs> {
    let (now, args) = match reread_config() {
        Ok(read) => read,
        Err(why) => {
            tracing::error!(error = %why, "SIGHUP: the config file is refused; the running configuration stays");
            return None;
        }
    };
    if now == started_with {
        tracing::info!("SIGHUP: the config file is unchanged");
        return None;
    }
    let changed: Vec<&str> = now
        .lines()
        .filter(|l| !started_with.lines().any(|t| t == *l))
        .filter_map(|l| l.split(" = ").next())
        .collect();
    if args.once || args.dry_run {
        tracing::error!(?changed, "SIGHUP: the config file now asks for --once or --dry-run, which a running watcher cannot do; the running configuration stays");
        return None;
    }
    // The metrics address is bound when the next generation starts: make sure it can be.
    if let Some(addr) = args.metrics_addr {
        // (The running generation holds the address it serves on: only a new one is tried.)
        if !started_with.contains(&format!("metrics-addr = \"{addr}\"")) {
            if let Err(e) = std::net::TcpListener::bind(addr) {
                tracing::error!(?changed, error = %e, "SIGHUP: the changed config file's --metrics-addr {addr} cannot be bound; the running configuration stays");
                return None;
            }
        }
    }
    match build(&args) {
        Ok(_) => {
            tracing::info!(?changed, "SIGHUP: the config file changed; applying it");
            Some(args)
        }
        Err(e) => {
            tracing::error!(?changed, error = %e, "SIGHUP: the changed config file does not work; the running configuration stays");
            None
        }
    }
}

/// SIGHUP (`systemctl reload`): re-reads every template, as if each had changed on disk
/// (a broken one keeps its last good version, as always); with a config file, a changed one
/// that works is applied through `restart` (see [`changed_config`]). Never stops the watcher.
pub(super) async fn reread_on_hangup(
    mut hup: tokio::signal::unix::Signal,
    templates: Vec<PathBuf>,
    restart: Option<mpsc::Sender<WatcherArgs>>,
    tx: mpsc::Sender<Input>,
    token: CancellationToken,
) -> Result<()> {
    let started_with = reread_config().map(|(text, _)| text).unwrap_or_default();
    loop {
        tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(()),
            got = hup.recv() => if got.is_none() { return Ok(()) },
        }
        if let Some(restart) = &restart {
            if let Some(new) = changed_config(&started_with) {
                // The generation ends (the token is cancelled) and the next one starts with
                // `new`; this worker waits for that like any other.
                let _ = restart.send(new).await;
                token.cancelled().await;
                return Ok(());
            }
        }
        if templates.is_empty() {
            tracing::info!("SIGHUP: nothing to re-read (the built-in template)");
            continue;
        }
        tracing::info!(
            templates = templates.len(),
            "SIGHUP: re-reading the templates"
        );
        for path in &templates {
            if !send_or_stop(&tx, Input::Template(path.clone()), &token).await? {
                return Ok(());
            }
        }
    }
}

/// Tells systemd's watchdog the watcher is alive, every third of its interval, as long as the
/// pipeline answers a heartbeat (it answers between steps; a reload takes at most
/// `--reload-timeout`, so the unit's WatchdogSec is longer than that).
pub(super) async fn watchdog(
    interval: std::time::Duration,
    tx: mpsc::Sender<Input>,
    token: CancellationToken,
) -> Result<()> {
    let every = interval / 3;
    loop {
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        let (reply, answered) = tokio::sync::oneshot::channel();
        if !send_or_stop(&tx, Input::Heartbeat(reply), &token).await? {
            return Ok(());
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            got = answered => if got.is_ok() {
                crate::core::process::sd_notify("WATCHDOG=1");
            },
        }
    }
}

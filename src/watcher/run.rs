//! Watch mode wiring, and the watcher's entry point [`run`].
//!
//! Five supervised workers ([`Workers`]) share one cancellation token:
//!
//! ```text
//! etcd source ──WatchEvent──► etcd forwarder ──┐
//!                                              ├──Input──► pipeline ──► files, HAProxy
//! notify thread ──path──► template watch ──────┘
//! ```
//!
//! - **etcd source**: [`watch_services`], list then watch every prefix, for ever;
//! - **etcd forwarder**: its events into the pipeline's input channel;
//! - **template watch**: owns the notify watcher; the changed template paths its callback
//!   queues into the pipeline's input channel (only when `--template` is given);
//! - **SIGHUP**: re-reads every template on `systemctl reload` (a SIGHUP never stops it);
//! - **pipeline**: [`Pipeline::run`](crate::watcher::pipeline::Pipeline::run), the one task
//!   that owns all state.
//!
//! Shutdown: SIGTERM or SIGINT cancels the token. The source, forwarder and template watch
//! stop at once; the pipeline finishes the step in progress and lets the runtime path's
//! drains end, both within the shutdown grace period (`Timing::shutdown_grace`, 5 s, short
//! of the 10 s a container runtime waits before SIGKILL); then the process exits 0. A worker
//! that ends or fails before that cancels the others the same way, and the process exits 1
//! with its error.

use crate::core::process::Fatal;
use crate::watcher::args::WatcherArgs;
use crate::watcher::build::{build, prepare_state_file, remove_stale_temporaries, WatcherPipeline};
use crate::watcher::metrics::WatcherMetrics;
use crate::watcher::oneshot::one_shot;
use crate::watcher::pipeline::Input;
use crate::watcher::source::{watch_services, SourceStatus, WatchEvent};
use crate::watcher::supervise::Workers;
use crate::watcher::templates::watch_templates;
use anyhow::{anyhow, Result};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Runs the watcher as the flags say until `shutdown` resolves (watch mode) or the one run is
/// done (`--once`, `--dry-run`). `Ok` carries the exit status of a completed run (non-zero
/// for a `--once`/`--dry-run` failure); `Err` is a fatal error, a usage error or a runtime
/// failure, for [`Fatal::report`].
pub async fn run(args: WatcherArgs, shutdown: impl Future<Output = ()>) -> Result<ExitCode, Fatal> {
    let mut pipeline = build(&args)?;
    if !args.dry_run {
        remove_stale_temporaries(&args, &pipeline)?;
    }
    if args.once || args.dry_run {
        return Ok(one_shot(&args, pipeline).await?);
    }
    prepare_state_file(&args)?;
    // Watch mode, one generation per configuration: a SIGHUP with a changed, working config
    // file ends the generation like a stop (the step in progress finishes) and starts the
    // next one with the new settings; HAProxy keeps serving in between.
    let (restart_tx, mut restart_rx) = mpsc::channel::<WatcherArgs>(1);
    tokio::pin!(shutdown);
    let mut args = args;
    let mut first = true;
    loop {
        let listener = match args.metrics_addr {
            None => None,
            Some(addr) => match crate::core::serve::bind(addr).await {
                Ok(l) => Some(l),
                Err(e) if first => return Err(Fatal::usage(e)),
                // A configuration applied at SIGHUP: keep watching, without the endpoints.
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "serving no metrics or health until the next restart");
                    None
                }
            },
        };
        first = false;
        let next = std::cell::RefCell::new(None);
        let stop = async {
            tokio::select! {
                _ = &mut shutdown => {}
                Some(new) = restart_rx.recv() => *next.borrow_mut() = Some(new),
            }
        };
        watch(&args, pipeline, listener, restart_tx.clone(), stop).await?;
        let Some(new) = next.into_inner() else {
            crate::core::process::sd_notify("STOPPING=1");
            break;
        };
        tracing::info!("applying the changed config file");
        args = new;
        pipeline = build(&args)?;
        remove_stale_temporaries(&args, &pipeline)?;
        prepare_state_file(&args)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Watch mode: the workers, supervised until `shutdown` or a worker's failure.
async fn watch(
    args: &WatcherArgs,
    pipeline: WatcherPipeline,
    listener: Option<tokio::net::TcpListener>,
    restart: mpsc::Sender<WatcherArgs>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let token = CancellationToken::new();
    let mut workers = Workers::new(token.clone(), args.timing().shutdown_grace);
    let (tx, rx) = mpsc::channel::<Input>(1024);
    let (etcd_tx, etcd_rx) = mpsc::channel(1024);

    let status = Arc::new(SourceStatus::default());
    let mut pipeline = pipeline;
    if let Some(listener) = listener {
        let addr = listener.local_addr()?;
        let metrics = Arc::new(WatcherMetrics::new(status.clone()));
        pipeline = pipeline.with_metrics(metrics.clone());
        if let Some(path) = &args.master_socket {
            let master = crate::haproxy::MasterSocket {
                path: path.clone(),
                timeout: args.reload_timeout,
            };
            let work = watch_old_workers(master, metrics.clone(), token.clone());
            workers.spawn("HAProxy workers", work);
        }
        let t = token.clone();
        workers.spawn("metrics and health", async move {
            crate::core::serve::serve(listener, metrics, t.cancelled_owned()).await
        });
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let source = watch_services(args.etcd.clone(), args.service_prefixes()?, etcd_tx, status);
    let t = token.clone();
    workers.spawn("etcd source", async move {
        tokio::select! {
            biased;
            _ = t.cancelled() => Ok(()),
            () = source => Err(anyhow!("the etcd watch ended")),
        }
    });
    workers.spawn(
        "etcd forwarder",
        forward_etcd(etcd_rx, tx.clone(), token.clone()),
    );
    let tx_watchdog = tx.clone();

    let templates: Vec<PathBuf> = pipeline
        .renderer()
        .template_paths()
        .map(Into::into)
        .collect();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => {
            let has_config = args.config.is_some();
            let work = reread_on_hangup(
                hup,
                templates.clone(),
                has_config.then_some(restart),
                tx.clone(),
                token.clone(),
            );
            workers.spawn("SIGHUP", work);
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; a SIGHUP would stop the watcher")
        }
    }
    let (changed_tx, changed_rx) = mpsc::unbounded_channel();
    if let Some(watcher) = watch_templates(templates, changed_tx)? {
        let work = forward_templates(watcher, changed_rx, tx, token.clone());
        workers.spawn("template watch", work);
    }

    tracing::info!(
        etcd = %args.etcd.endpoints.join(","),
        services = ?pipeline.catalog().services().iter().map(|s| s.prefix.to_string()).collect::<Vec<_>>(),
        outputs = ?pipeline.renderer().specs().iter().map(|s| s.output.display().to_string()).collect::<Vec<_>>(),
        "dockreg-haproxy started"
    );
    if let Some(interval) = crate::core::process::sd_watchdog_interval() {
        workers.spawn(
            "systemd watchdog",
            watchdog(interval, tx_watchdog, token.clone()),
        );
    }
    let t = token.clone();
    workers.spawn("pipeline", async move {
        let stats = pipeline.run(rx, t.clone().cancelled_owned()).await;
        tracing::info!(?stats, "stopped");
        if t.is_cancelled() {
            Ok(())
        } else {
            Err(anyhow!("its input closed"))
        }
    });
    workers.supervise(shutdown).await
}

/// Tells systemd's watchdog the watcher is alive, every third of its interval, as long as the
/// pipeline answers a heartbeat (it answers between steps; a reload takes at most
/// `--reload-timeout`, so the unit's WatchdogSec is longer than that).
async fn watchdog(
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

/// Sends `item` on `tx` unless the token is cancelled first; `Ok(false)` when cancelled.
async fn send_or_stop<T>(tx: &mpsc::Sender<T>, item: T, token: &CancellationToken) -> Result<bool> {
    tokio::select! {
        biased;
        _ = token.cancelled() => Ok(false),
        sent = tx.send(item) => match sent {
            Ok(()) => Ok(true),
            Err(_) => Err(anyhow!("the pipeline stopped taking input")),
        },
    }
}

/// The etcd forwarder: the source's events into the pipeline's input.
async fn forward_etcd(
    mut events: mpsc::Receiver<WatchEvent>,
    tx: mpsc::Sender<Input>,
    token: CancellationToken,
) -> Result<()> {
    loop {
        let event = tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(()),
            event = events.recv() => event.ok_or_else(|| anyhow!("the etcd source stopped sending"))?,
        };
        if !send_or_stop(&tx, Input::Etcd(event), &token).await? {
            return Ok(());
        }
    }
}

/// Every 5 s, how many HAProxy workers from before a reload are still finishing their
/// connections (`show proc` on the master socket), for the metrics. HAProxy away is no error
/// here: the reloads report it.
async fn watch_old_workers(
    master: crate::haproxy::MasterSocket,
    metrics: Arc<WatcherMetrics>,
    token: CancellationToken,
) -> Result<()> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    loop {
        match master.show_proc().await {
            Ok(procs) => {
                let current = procs.current_workers().count();
                let old = procs.workers.len().saturating_sub(current);
                metrics
                    .old_workers
                    .set(i64::try_from(old).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "show proc for the metrics failed"),
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

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
async fn reread_on_hangup(
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

/// The template watch: keeps the notify watcher alive and forwards the template paths its
/// callback queued into the pipeline's input.
async fn forward_templates(
    watcher: notify::RecommendedWatcher,
    mut changed: mpsc::UnboundedReceiver<PathBuf>,
    tx: mpsc::Sender<Input>,
    token: CancellationToken,
) -> Result<()> {
    let _watcher = watcher;
    loop {
        let path = tokio::select! {
            biased;
            _ = token.cancelled() => return Ok(()),
            path = changed.recv() => path.ok_or_else(|| anyhow!("the template file watcher stopped"))?,
        };
        if !send_or_stop(&tx, Input::Template(path), &token).await? {
            return Ok(());
        }
    }
}

//! Watch mode wiring, and the watcher's entry point [`run`].
//!
//! Supervised workers ([`Workers`]) share one cancellation token:
//!
//! ```text
//! etcd source ──WatchEvent──► etcd forwarder ──┐
//!                                              ├──Input──► pipeline ──► files, HAProxy
//! notify thread ──path──► template watch ──────┘
//! ```
//!
//! - **etcd source**: [`watch_services`], list then watch every prefix and root, for ever;
//! - **etcd forwarder**: its events into the pipeline's input channel;
//! - **template watch**: owns the notify watcher; the changed template paths its callback
//!   queues into the pipeline's input channel (only when `--template` is given);
//! - **SIGHUP**: re-reads every template and the config file on `systemctl reload` (see
//!   `signals.rs`; a SIGHUP never stops it);
//! - **systemd watchdog** (under a unit with `WatchdogSec`), **metrics and health** and
//!   **HAProxy workers** (with `--metrics-addr`);
//! - **pipeline**: [`Pipeline::run`](crate::watcher::pipeline::Pipeline::run), the one task
//!   that owns all state.
//!
//! One generation of workers runs per configuration: a SIGHUP that brings a changed config
//! file that works ends the generation like a stop and [`run`] starts the next one.
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
use crate::watcher::signals;
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
            let work =
                crate::watcher::metrics::watch_old_workers(master, metrics.clone(), token.clone());
            workers.spawn("HAProxy workers", work);
        }
        let t = token.clone();
        workers.spawn("metrics and health", async move {
            crate::core::serve::serve(listener, metrics, t.cancelled_owned()).await
        });
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let source = watch_services(args.etcd.clone(), args.watched()?, etcd_tx, status);
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
            let work = signals::reread_on_hangup(
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
        roots = ?args.roots,
        outputs = ?pipeline.renderer().specs().iter().map(|s| s.output.display().to_string()).collect::<Vec<_>>(),
        "dockreg-haproxy started"
    );
    if let Some(interval) = crate::core::process::sd_watchdog_interval() {
        workers.spawn(
            "systemd watchdog",
            signals::watchdog(interval, tx_watchdog, token.clone()),
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

/// Sends `item` on `tx` unless the token is cancelled first; `Ok(false)` when cancelled.
pub(super) async fn send_or_stop<T>(
    tx: &mpsc::Sender<T>,
    item: T,
    token: &CancellationToken,
) -> Result<bool> {
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

//! `dockreg-haproxy`: wiring of the etcd watch, the template watch, the change pipeline and
//! its runtime API fast path, and the one-shot `--once` and `--dry-run` modes.

pub mod args;
pub mod catalog;
pub mod pipeline;
pub mod render;
pub mod source;
mod templates;

pub use args::WatcherArgs;

use crate::core::files::unified_diff;
use crate::haproxy::{
    MasterSocket, Reloader, RuntimeApplier, RuntimePath, RuntimeSocket, Validator,
};
use crate::watcher::catalog::Catalog;
use crate::watcher::pipeline::{Applied, Input, Pipeline};
use crate::watcher::render::Renderer;
use crate::watcher::source::{list_services, watch_services};
use anyhow::{anyhow, bail, Context as _, Result};
use std::process::ExitCode;
use tokio::sync::mpsc;

fn reloader(args: &WatcherArgs) -> Reloader {
    if let Some(path) = &args.master_socket {
        Reloader::Master(MasterSocket {
            path: path.clone(),
            timeout: args.reload_timeout,
        })
    } else if let Some(cmd) = &args.reload_cmd {
        Reloader::Command {
            cmd: cmd.clone(),
            timeout: args.reload_timeout,
        }
    } else {
        Reloader::None
    }
}

fn validator(args: &WatcherArgs) -> Result<Option<Validator>> {
    if args.no_validate {
        return Ok(None);
    }
    if !crate::haproxy::find_binary(&args.haproxy_bin) {
        bail!(
            "--haproxy-bin {}: not found (install HAProxy, or pass --no-validate to skip `haproxy -c`)",
            args.haproxy_bin.display()
        );
    }
    if let Some(base) = &args.haproxy_config {
        if !base.is_file() {
            bail!("--haproxy-config {}: no such file", base.display());
        }
    }
    Ok(Some(Validator {
        haproxy_bin: args.haproxy_bin.clone(),
        base: args.haproxy_config.clone(),
        timeout: args.reload_timeout,
    }))
}

/// Builds the pipeline from the flags; every bad flag is an error naming it.
fn build(args: &WatcherArgs) -> Result<Pipeline<Validator, Reloader>> {
    args.etcd.validate()?;
    let renderer = Renderer::new(args.template_specs()?)?;
    let catalog = Catalog::with_views(args.service_prefixes()?, renderer.views())?;
    for spec in renderer.specs() {
        if let Some(dir) = spec.output.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                bail!(
                    "--output {}: folder {} does not exist",
                    spec.output.display(),
                    dir.display()
                );
            }
        }
    }
    let reloader = reloader(args);
    let enabled = !reloader.is_none();
    let runtime = runtime_path(args, enabled)?;
    let pipeline = Pipeline::new(
        catalog,
        renderer,
        validator(args)?,
        reloader,
        enabled,
        args.timing(),
    )
    .context("reading the live output files")?;
    Ok(match runtime {
        Some(rt) => pipeline.with_runtime(Box::new(rt)),
        None => pipeline,
    })
}

/// The runtime fast path, if `--runtime-socket` is given.
fn runtime_path(args: &WatcherArgs, reload_enabled: bool) -> Result<Option<RuntimePath>> {
    let Some(socket) = &args.runtime_socket else {
        return Ok(None);
    };
    if !reload_enabled {
        bail!(
            "--runtime-socket {}: needs --master-socket or --reload-cmd too (changes the runtime API cannot make, and failed runtime updates, reload HAProxy)",
            socket.display()
        );
    }
    if let Some(dir) = args
        .server_state_file
        .as_ref()
        .and_then(|f| f.parent())
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        bail!(
            "--server-state-file: folder {} does not exist",
            dir.display()
        );
    }
    let socket = RuntimeSocket {
        path: socket.clone(),
        timeout: RUNTIME_COMMAND_TIMEOUT,
    };
    Ok(Some(RuntimePath {
        applier: RuntimeApplier::new(socket, args.drain_timeout),
        state_file: args.server_state_file.clone(),
    }))
}

/// Creates an empty `--server-state-file` (format version 1) if there is none, so HAProxy's
/// `load-server-state-from-file` finds a valid file before the first save.
fn prepare_state_file(args: &WatcherArgs) -> Result<()> {
    if let Some(path) = args.server_state_file.as_ref().filter(|p| !p.exists()) {
        std::fs::write(path, "1\n")
            .with_context(|| format!("--server-state-file {}", path.display()))?;
    }
    if let (Some(_), Some(base)) = (&args.runtime_socket, &args.haproxy_config) {
        warn_on_default_server(base);
    }
    Ok(())
}

/// Servers added through the runtime API do not inherit `default-server`: one in the base
/// configuration's `defaults` makes them differ from the same servers after a reload.
fn warn_on_default_server(base: &std::path::Path) {
    let Ok(text) = std::fs::read_to_string(base) else {
        return;
    };
    let config = crate::haproxy::config::parse(&text);
    for section in config.sections.iter().filter(|s| s.kind == "defaults") {
        if section
            .directives
            .iter()
            .any(|d| d.words.first().is_some_and(|w| w == "default-server"))
        {
            tracing::warn!(
                file = %base.display(),
                section = %section.ident(),
                "--haproxy-config has a `default-server` line; servers added through the runtime API do not inherit it (put those settings on the template's server lines)"
            );
        }
    }
}

/// How long one runtime API command may take (HAProxy answers in well under a millisecond).
const RUNTIME_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the watcher as the flags say; the exit code reflects `--once`/`--dry-run` failures.
pub async fn run(args: WatcherArgs) -> Result<ExitCode> {
    let pipeline = build(&args)?;
    if !args.dry_run {
        remove_stale_temporaries(&args, &pipeline)?;
    }
    if args.once || args.dry_run {
        return one_shot(args, pipeline).await;
    }
    prepare_state_file(&args)?;
    let (tx, rx) = mpsc::channel::<Input>(1024);
    let (etcd_tx, mut etcd_rx) = mpsc::channel(1024);
    let prefixes = args.service_prefixes()?;
    let source = tokio::spawn(watch_services(args.etcd.clone(), prefixes, etcd_tx));
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = etcd_rx.recv().await {
                if tx.send(Input::Etcd(ev)).await.is_err() {
                    break;
                }
            }
        })
    };
    let templates: Vec<_> = pipeline.renderer.template_paths().map(Into::into).collect();
    let _template_watch = templates::watch_templates(templates, tx)?;
    tracing::info!(
        etcd = %args.etcd.endpoints.join(","),
        services = ?pipeline.catalog.services().iter().map(|s| s.prefix.to_string()).collect::<Vec<_>>(),
        outputs = ?pipeline.renderer.specs().iter().map(|s| s.output.display().to_string()).collect::<Vec<_>>(),
        "dockreg-haproxy started"
    );
    let stats = pipeline
        .run(rx, crate::core::process::shutdown_signal())
        .await;
    source.abort();
    forward.abort();
    tracing::info!(?stats, "stopped");
    Ok(ExitCode::SUCCESS)
}

/// Removes the temporary files a killed watcher left beside the outputs and the server-state
/// file (before anything is staged for them).
fn remove_stale_temporaries(
    args: &WatcherArgs,
    pipeline: &Pipeline<Validator, Reloader>,
) -> Result<()> {
    let outputs = pipeline.renderer.specs().iter().map(|s| s.output.as_path());
    for target in outputs.chain(args.server_state_file.as_deref()) {
        crate::core::files::remove_stale_temporaries(target)?;
    }
    Ok(())
}

/// `--once` and `--dry-run`: one listing, one render, then exit.
async fn one_shot(
    args: WatcherArgs,
    mut pipeline: Pipeline<Validator, Reloader>,
) -> Result<ExitCode> {
    let client = args.etcd.connect().await?;
    let prefixes: Vec<_> = args.service_prefixes()?.into_iter().enumerate().collect();
    let snapshot = tokio::time::timeout(
        args.etcd.etcd_timeout * 4,
        list_services(&client, &prefixes, 0),
    )
    .await
    .map_err(|_| {
        anyhow!(
            "listing services from etcd at {} timed out (4 × --etcd-timeout)",
            args.etcd.endpoints.join(",")
        )
    })??;
    pipeline.handle(Input::Etcd(snapshot), std::time::Instant::now());
    if args.dry_run {
        let mut failed = false;
        let rendered = pipeline.renderer.render_all(&mut pipeline.catalog);
        for (spec, r) in pipeline.renderer.specs().iter().zip(rendered) {
            match r {
                Ok(text) => {
                    let live = crate::core::files::read_live(&spec.output)?;
                    if live.as_deref() == Some(text.as_str()) {
                        println!("{}: unchanged", spec.output.display());
                    } else {
                        print!("{}", unified_diff(&spec.output, live.as_deref(), &text));
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    failed = true;
                }
            }
        }
        return Ok(if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        });
    }
    match pipeline.apply().await {
        Applied::Rejected(e) => {
            tracing::error!(error = %e, "--once: nothing written");
            return Ok(ExitCode::FAILURE);
        }
        Applied::Unchanged => tracing::info!("--once: outputs already up to date"),
        Applied::Written(paths) => tracing::info!(?paths, "--once: written"),
        Applied::NotSynced => bail!("--once: no data from etcd"),
    }
    if !pipeline.render_errors.is_empty() {
        tracing::error!(errors = ?pipeline.render_errors, "--once: a template did not render");
        return Ok(ExitCode::FAILURE);
    }
    if pipeline.reload_pending() && !pipeline.reload().await {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

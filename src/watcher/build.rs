//! From the flags to a pipeline: the renderer, catalog, validator, reloader and runtime path
//! the flags describe, checked before anything runs. A flag that cannot work is a usage
//! error ([`Fatal::Usage`], exit status 2) naming it; reading the live outputs is the one
//! runtime failure here.

use crate::core::process::Fatal;
use crate::haproxy::{
    MasterSocket, Reloader, RuntimeApplier, RuntimePath, RuntimeSocket, Validator,
};
use crate::watcher::args::WatcherArgs;
use crate::watcher::catalog::Catalog;
use crate::watcher::pipeline::Pipeline;
use crate::watcher::render::Renderer;
use anyhow::{anyhow, bail, Context as _, Result};

/// The pipeline the watcher runs: `haproxy -c` and the configured reload.
pub(crate) type WatcherPipeline = Pipeline<Validator, Reloader>;

/// How long one runtime API command may take (HAProxy answers in well under a millisecond).
const RUNTIME_COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Builds the pipeline from the flags; every bad flag is a usage error naming it.
pub(crate) fn build(args: &WatcherArgs) -> Result<WatcherPipeline, Fatal> {
    args.etcd.validate().map_err(Fatal::usage)?;
    let renderer =
        Renderer::new(args.template_specs().map_err(Fatal::usage)?).map_err(Fatal::usage)?;
    let watched = args.watched().map_err(Fatal::usage)?;
    let catalog = Catalog::with_views(watched, renderer.views())
        .map_err(Fatal::usage)?
        .with_grace(args.service_grace);
    // --dry-run touches nothing: a missing folder only means there is no live file yet.
    if !args.dry_run {
        for spec in renderer.specs() {
            create_output_folder(&spec.output).map_err(Fatal::usage)?;
        }
    }
    for warning in args.deprecations() {
        tracing::warn!("{warning}");
    }
    let reloader = reloader(args);
    if reloader.is_none() && !args.dry_run {
        tracing::warn!("no reload method (--master-socket or --reload-cmd): the outputs are written, but HAProxy is not told; it loads them only when something else reloads it");
    }
    let runtime = runtime_path(args, reloader.is_some()).map_err(Fatal::usage)?;
    let validator = validator(args).map_err(Fatal::usage)?;
    let pipeline = Pipeline::new(catalog, renderer, validator, reloader, args.timing())
        .context("reading the live output files")?;
    Ok(match runtime {
        Some(rt) => pipeline.with_runtime(Box::new(rt)),
        None => pipeline,
    })
}

/// Creates the folder of an `--output` if it is missing (the default, under `/etc/haproxy`,
/// on a machine where it was never used).
fn create_output_folder(output: &std::path::Path) -> Result<()> {
    let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return Ok(());
    };
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|e| {
        anyhow!(
            "--output {}: cannot create its folder {}: {e}",
            output.display(),
            dir.display()
        )
    })?;
    tracing::info!(folder = %dir.display(), output = %output.display(), "created the output folder");
    Ok(())
}

/// How HAProxy is reloaded, if at all (`--master-socket` or `--reload-cmd`).
fn reloader(args: &WatcherArgs) -> Option<Reloader> {
    if let Some(path) = &args.master_socket {
        Some(Reloader::Master(MasterSocket {
            path: path.clone(),
            timeout: args.reload_timeout,
        }))
    } else {
        args.reload_cmd.as_ref().map(|cmd| Reloader::Command {
            cmd: cmd.clone(),
            timeout: args.reload_timeout,
        })
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
pub(crate) fn prepare_state_file(args: &WatcherArgs) -> Result<()> {
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

/// Removes the temporary files a killed watcher left beside the outputs and the server-state
/// file (before anything is staged for them).
pub(crate) fn remove_stale_temporaries(
    args: &WatcherArgs,
    pipeline: &WatcherPipeline,
) -> Result<()> {
    let outputs = pipeline
        .renderer()
        .specs()
        .iter()
        .map(|s| s.output.as_path());
    for target in outputs.chain(args.server_state_file.as_deref()) {
        crate::core::files::remove_stale_temporaries(target)?;
    }
    Ok(())
}

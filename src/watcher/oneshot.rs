//! `--once` and `--dry-run`: one listing of etcd (every prefix and root), one render, then
//! exit. `--once` writes,
//! validates and reloads like one apply of watch mode; `--dry-run` prints the diff between
//! the live files and what would be written, and touches nothing. Either exits 1 when any
//! step fails (a template that does not render, a refused candidate, a failed reload).

use crate::core::etcd::unreachable_reason;
use crate::core::files::unified_diff;
use crate::watcher::args::WatcherArgs;
use crate::watcher::build::WatcherPipeline;
use crate::watcher::pipeline::{Applied, Input};
use crate::watcher::source::list_services;
use anyhow::{anyhow, bail, Result};
use std::process::ExitCode;

/// `--once` and `--dry-run`: one listing, one render, then exit.
pub(crate) async fn one_shot(
    args: &WatcherArgs,
    mut pipeline: WatcherPipeline,
) -> Result<ExitCode> {
    let endpoints = args.etcd.endpoints.join(",");
    let unreachable = |e: anyhow::Error| match unreachable_reason(&e) {
        Some(why) => anyhow!(
            "etcd unreachable at {endpoints}: {why} (is etcd running, and is --etcd right?)"
        ),
        None => e,
    };
    let client = args.etcd.connect().await.map_err(unreachable)?;
    let ranges = args.watched()?.ranges();
    let snapshot = tokio::time::timeout(
        args.etcd.etcd_timeout * 4,
        list_services(&client, &ranges, 0),
    )
    .await
    .map_err(|_| {
        anyhow!("etcd unreachable at {endpoints}: listing timed out (4 × --etcd-timeout)")
    })?
    .map_err(unreachable)?;
    pipeline.handle(Input::Etcd(snapshot), tokio::time::Instant::now());
    if args.dry_run {
        let mut failed = false;
        let rendered = pipeline.render_preview();
        for (spec, r) in pipeline.renderer().specs().iter().zip(rendered) {
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
    if !pipeline.render_errors().is_empty() {
        tracing::error!(errors = ?pipeline.render_errors(), "--once: a template did not render");
        return Ok(ExitCode::FAILURE);
    }
    if pipeline.reload_pending() && !pipeline.reload().await {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

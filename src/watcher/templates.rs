//! Watching template files on disk (notify) and telling the pipeline when one changed.
//!
//! The folders are watched rather than the files: editors and `mv` replace a file with a new
//! inode, which a watch on the file itself would lose.

use crate::watcher::pipeline::Input;
use anyhow::{Context as _, Result};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Starts watching `templates` (canonical paths); keep the returned watcher alive.
pub fn watch_templates(
    templates: Vec<PathBuf>,
    tx: mpsc::Sender<Input>,
) -> Result<Option<notify::RecommendedWatcher>> {
    if templates.is_empty() {
        return Ok(None);
    }
    let wanted: BTreeSet<PathBuf> = templates.iter().cloned().collect();
    let dirs: BTreeSet<PathBuf> = templates
        .iter()
        .filter_map(|t| t.parent().map(PathBuf::from))
        .collect();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        if event.kind.is_access() {
            return;
        }
        for path in event.paths {
            if wanted.contains(&path) {
                // The pipeline re-reads the file and ignores it when its text did not change.
                let _ = tx.blocking_send(Input::Template(path));
            }
        }
    })
    .context("starting the template file watcher")?;
    for d in &dirs {
        watcher
            .watch(d, RecursiveMode::NonRecursive)
            .with_context(|| format!("watching template folder {}", d.display()))?;
    }
    Ok(Some(watcher))
}

//! Watching template files on disk (notify) and telling the pipeline when one changed.
//!
//! The folders are watched rather than the files: editors and `mv` replace a file with a new
//! inode, which a watch on the file itself would lose.
//!
//! The callback runs on notify's own thread and never blocks it: it hands each changed path to
//! an unbounded channel (a send that cannot wait or fail while the receiver lives), and the
//! watcher's template worker forwards them to the pipeline. No change is lost while the
//! pipeline is busy; the queue holds one small path per event meanwhile.

use anyhow::{Context as _, Result};
use notify::{RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// Starts watching `templates` (canonical paths) and sends each one that changes to `tx`;
/// keep the returned watcher alive.
pub(crate) fn watch_templates(
    templates: Vec<PathBuf>,
    tx: mpsc::UnboundedSender<PathBuf>,
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
                // Never blocks; fails only once the receiver is gone (shutting down).
                let _ = tx.send(path);
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

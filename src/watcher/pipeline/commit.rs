//! An apply's slow half, off the routing path: fsync the staged candidates, check them with
//! `haproxy -c`, rename them over the live files, then settle what HAProxy should do next.
//!
//! At most one commit runs at a time and at most one waits behind it: an apply prepared while
//! a commit runs replaces the one waiting (its staged files are dropped, so removed), since
//! the newer candidates hold every change the older ones did. Runtime commands therefore
//! never queue behind `haproxy -c`, and a stream of changes costs one check per check's
//! duration, not one per change. A commit that fails drops the one waiting behind it (it was
//! staged against files that were not written) and the next apply stages again against the
//! files on disk.

use super::apply::Path;
use super::{write, Applied, Pipeline};
use crate::core::files::Staged;
use crate::haproxy::admin::BoxFuture;
use crate::haproxy::{CheckError, Reload, Validate};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The content of an output, shared between the candidates, the commit queue and the record
/// of what is on disk without copying it.
pub(super) type Content = Arc<String>;

/// The staged candidate files of a commit, by output index.
pub(super) type Files = Vec<(usize, Staged)>;

/// What the check and write of a commit came to: the outputs replaced (some, if a rename
/// failed midway) and the outcome.
pub(super) type Outcome = (Vec<usize>, Result<(), CheckError>);

/// What the runtime API was sent for an apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RuntimeSent {
    Nothing,
    Applied,
    Failed,
}

/// Everything about an apply its commit needs besides the files.
pub(super) struct CommitMeta {
    /// Every output's candidate (what `haproxy -c` refused, if it does).
    pub(super) candidates: Vec<Option<Content>>,
    /// The outputs staged.
    pub(super) changed: Vec<usize>,
    /// The base configuration's fingerprint when the candidates were made.
    pub(super) base: Option<SystemTime>,
    pub(super) runtime: RuntimeSent,
    pub(super) path: Path,
    pub(super) reason: String,
    /// Why a reload is needed once the files are written, if one is.
    pub(super) reload_why: Option<String>,
    /// The etcd revision the candidates reflect.
    pub(super) revision: i64,
    pub(super) started: Instant,
    pub(super) render_time: Duration,
    pub(super) route_time: Duration,
}

/// A prepared apply waiting for its files to be checked and written.
pub(super) struct Commit {
    files: Files,
    meta: CommitMeta,
}

impl Commit {
    pub(super) fn new(files: Files, meta: CommitMeta) -> Self {
        Self { files, meta }
    }

    pub(super) fn split(self) -> (Files, CommitMeta) {
        (self.files, self.meta)
    }
}

/// The commit running and the one waiting behind it.
#[derive(Default)]
pub(super) struct Commits {
    running: Option<CommitMeta>,
    waiting: Option<Commit>,
}

impl Commits {
    /// Whether a commit runs or waits (a reload waits for both: it must load whole files).
    pub(super) fn busy(&self) -> bool {
        self.running.is_some() || self.waiting.is_some()
    }
}

impl<V: Validate, R: Reload> Pipeline<V, R> {
    /// Queues `commit` behind the one running, replacing any that waits.
    pub(super) fn enqueue(&mut self, commit: Commit) {
        if let Some(old) = self.commits.waiting.replace(commit) {
            tracing::debug!(path = %old.meta.path, reason = %old.meta.reason, "a newer apply supersedes the commit waiting");
        }
    }

    /// Starts the commit waiting if none runs: the future that checks and writes its files,
    /// owning all it needs, so the pipeline keeps applying changes meanwhile.
    pub(super) fn start_commit(&mut self) -> Option<BoxFuture<'static, Outcome>> {
        if self.commits.running.is_some() {
            return None;
        }
        let (files, meta) = self.commits.waiting.take()?.split();
        self.commits.running = Some(meta);
        Some(self.check_and_write(files))
    }

    /// The running commit ended with `outcome`.
    pub(super) fn commit_done(&mut self, outcome: Outcome) -> Option<Applied> {
        let meta = self.commits.running.take()?;
        Some(self.committed(meta, outcome))
    }

    /// Fsyncs, checks and renames `files`, with the live outputs they do not replace.
    pub(super) fn check_and_write(&self, files: Files) -> BoxFuture<'static, Outcome> {
        let specs = self.renderer.specs().to_vec();
        let validator = self.validator.clone();
        let present: Vec<bool> = self.disk.iter().map(Option::is_some).collect();
        Box::pin(async move {
            write::validate_and_commit(&specs, validator.as_deref(), &present, files).await
        })
    }

    /// Settles what a commit's outcome calls for: the record of what is on disk, a reload, a
    /// retry, or the fallback when `haproxy -c` refused what the runtime API already applied.
    pub(super) fn committed(&mut self, meta: CommitMeta, outcome: Outcome) -> Applied {
        let (path, revision) = (meta.path, meta.revision);
        let applied = self.settle_commit(meta, outcome);
        let outcome = match &applied {
            Applied::Written(_) | Applied::Unchanged | Applied::NotSynced => "written",
            Applied::Rejected(_) if self.refused.is_some() => "rejected",
            Applied::Rejected(_) => "failed",
        };
        self.observe(|m| {
            m.count_apply(&path.to_string(), outcome);
            m.applied(outcome == "written", revision);
            if outcome == "rejected" {
                m.validation_failures.inc();
            }
        });
        self.observe_endpoints();
        self.apply_ended();
        applied
    }

    fn settle_commit(&mut self, mut meta: CommitMeta, outcome: Outcome) -> Applied {
        let (written, result) = outcome;
        for &i in &written {
            self.disk[i] = meta.candidates[i].clone();
        }
        if result.is_err() {
            // Stage the next apply against what is on disk; what waited was staged against
            // files that were not written.
            self.target.clone_from(&self.disk);
            if self.commits.waiting.take().is_some() {
                self.pending.etcd_changed(Instant::now());
            }
        }
        let sent_ok = meta.runtime == RuntimeSent::Applied;
        if matches!(result, Err(CheckError::Refused(_))) && sent_ok {
            // HAProxy has servers the files will not hold: reload the files.
            self.forget_running(
                &meta.changed,
                "haproxy -c refused what the runtime API applied",
            );
            self.schedule_reload("haproxy -c refused a candidate already applied at runtime");
        }
        match result {
            Ok(()) => {
                let paths: Vec<PathBuf> = written
                    .iter()
                    .map(|&i| self.renderer.specs()[i].output.clone())
                    .collect();
                self.refused = None;
                self.retry.succeeded();
                self.stats.writes += 1;
                if let Some(why) = &meta.reload_why {
                    self.schedule_reload(why);
                } else if meta.path == Path::Runtime {
                    self.stats.runtime_applies += 1;
                }
                tracing::info!(
                    path = %meta.path,
                    reason = %meta.reason,
                    outputs = ?paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    endpoints = self.catalog.endpoint_count(),
                    render_time = ?meta.render_time,
                    route_time = ?meta.route_time,
                    total_time = ?meta.started.elapsed(),
                    "configuration updated"
                );
                Applied::Written(paths)
            }
            Err(CheckError::Refused(e)) => {
                self.refused = Some((std::mem::take(&mut meta.candidates), meta.base));
                self.stats.validation_failures += 1;
                tracing::error!(error = %e, "candidate configuration rejected; the live configuration keeps serving");
                Applied::Rejected(e)
            }
            Err(CheckError::Transient(e)) => {
                if let Some(why) = meta.reload_why {
                    if meta.runtime == RuntimeSent::Failed {
                        // HAProxy's state is unknown: bring it back to the files on disk.
                        self.schedule_reload(&why);
                    } else {
                        // Retried with the write: a reload now would load files that lack
                        // the change, and HAProxy stays as it is meanwhile.
                        tracing::debug!(%why, "reload deferred until the outputs are written");
                    }
                }
                self.write_failed(e)
            }
        }
    }
}

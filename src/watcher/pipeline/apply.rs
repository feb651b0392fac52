//! One apply's fast half: render, compare, stage, route and send the runtime commands — and
//! the bookkeeping of what HAProxy runs that the next apply plans against. The slow half
//! (fsync, `haproxy -c`, rename) is a [`Commit`] that `commit.rs` finishes off the routing
//! path.

use super::commit::{Commit, Content, RuntimeSent};
use super::route::{self, Routed};
use super::{write, Applied, Pipeline, Running};
use crate::haproxy::config::Config;
use crate::haproxy::{ApplyError, Reload, Validate};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::time::Instant;

/// How the fast half of an apply ended.
pub(super) enum Prepared {
    /// Nothing is left to do (no change, a refusal, a failure to stage).
    Done(Applied),
    /// The runtime commands went out; the candidates wait to be checked and written.
    Commit(Commit),
}

impl<V: Validate, R: Reload> Pipeline<V, R> {
    /// Applies everything pending, settled or not, and waits for its files to be checked and
    /// written (`--once`, tests). The watch loop instead finishes the commit off the routing
    /// path (`run.rs`).
    pub async fn apply(&mut self) -> Applied {
        let templates = self.pending.take_all();
        self.apply_waiting(templates).await
    }

    /// Applies the pending changes with `templates` re-read, and waits for the commit.
    pub(super) async fn apply_waiting(&mut self, templates: Vec<PathBuf>) -> Applied {
        self.retry.started();
        match self.prepare(templates).await {
            Prepared::Done(applied) => applied,
            Prepared::Commit(commit) => {
                let (files, meta) = commit.split();
                let outcome = self.check_and_write(files).await;
                self.committed(meta, outcome)
            }
        }
    }

    /// Renders every template (re-reading `templates` first) and, if any output changed from
    /// what is written or about to be, stages the changed outputs, routes them and sends the
    /// runtime commands.
    ///
    /// The order keeps one invariant: **HAProxy never routes by anything the files on disk
    /// will not hold.** The changed outputs are staged (written beside the live files) before
    /// any runtime command goes out, so a full disk or a read-only folder stops the apply
    /// before HAProxy changes; the runtime commands come next (HAProxy routes the new way
    /// before the fsync and `haproxy -c` end); a candidate `haproxy -c` refuses after all
    /// makes HAProxy reload the files on disk; a fsync or rename that fails after the runtime
    /// commands is retried, never reverted; a reload only ever loads files completely written
    /// (it waits for the commits in flight).
    pub(super) async fn prepare(&mut self, templates: Vec<PathBuf>) -> Prepared {
        let prepared = self.prepare_inner(templates).await;
        if let Prepared::Done(applied) = &prepared {
            let outcome = match applied {
                Applied::NotSynced => return prepared,
                Applied::Unchanged => "unchanged",
                Applied::Written(_) => "written",
                Applied::Rejected(_) => "rejected",
            };
            let ok = outcome == "unchanged";
            let revision = self.revision;
            self.observe(|m| {
                m.count_apply("none", outcome);
                m.applied(ok, revision);
            });
            self.observe_endpoints();
            self.apply_ended();
        }
        prepared
    }

    /// The endpoints per service, for the metrics.
    pub(super) fn observe_endpoints(&self) {
        let Some(m) = &self.metrics else { return };
        for s in self.catalog.services() {
            m.endpoints
                .get_or_create(&crate::watcher::metrics::ServiceLabels {
                    service: s.prefix.name().to_string(),
                })
                .set(i64::try_from(s.endpoints.len()).unwrap_or(i64::MAX));
        }
        let (keys, values) = self.catalog.skipped_by_reason();
        for (reason, n) in [("key", keys), ("value", values)] {
            m.keys_skipped
                .get_or_create(&crate::watcher::metrics::ReasonLabels {
                    reason: reason.to_string(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    async fn prepare_inner(&mut self, templates: Vec<PathBuf>) -> Prepared {
        if !self.synced {
            return Prepared::Done(Applied::NotSynced);
        }
        self.stats.applies += 1;
        if self.reload_templates(templates) {
            self.reloads.operator_changed("a template changed");
        }
        let started = Instant::now();
        let rendered = self.renderer.render_all(&mut self.catalog);
        let render_time = started.elapsed();
        let mut candidates: Vec<Option<Content>> = Vec::with_capacity(rendered.len());
        self.render_errors.clear();
        for (i, r) in rendered.into_iter().enumerate() {
            match r {
                Ok(text) => candidates.push(Some(Arc::new(text))),
                Err(e) => {
                    self.observe(|m| m.template_errors.inc());
                    tracing::error!(error = %e, output = %self.renderer.specs()[i].output.display(), "render failed; keeping the live file");
                    self.render_errors.push(e.0);
                    candidates.push(self.target[i].clone());
                }
            }
        }
        let changed: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].is_some() && candidates[i] != self.target[i])
            .collect();
        let first = !self.started;
        self.started = true;
        if changed.is_empty() {
            tracing::debug!(?render_time, "rendered; no output changed");
            if first && self.reload_enabled() {
                // The files may be newer than what HAProxy runs (a previous watcher stopped
                // between writing and reloading): reload once at start to be sure.
                tracing::info!("outputs already up to date; reloading once at start");
                self.schedule_reload("first update since start");
            }
            return Prepared::Done(if self.render_errors.is_empty() {
                Applied::Unchanged
            } else {
                Applied::Rejected(self.render_errors.join("; "))
            });
        }
        let base = self.validator.as_ref().and_then(|v| v.base_fingerprint());
        if self.reloads.base_changed(base) {
            self.reloads
                .operator_changed("the base configuration changed");
        }
        if self
            .refused
            .as_ref()
            .is_some_and(|(c, b)| *c == candidates && *b == base)
        {
            return Prepared::Done(Applied::Rejected(
                "candidate unchanged since haproxy -c refused it".into(),
            ));
        }
        // 1. Stage: nothing reaches HAProxy before the new files are safely beside the live
        //    ones.
        let staged = match write::stage(self.renderer.specs(), &candidates, &changed) {
            Ok(staged) => staged,
            Err(e) => return Prepared::Done(self.write_failed(e)),
        };
        // 2. Route, and send what the runtime API can apply now.
        let route_started = Instant::now();
        let routed = self.route(&candidates, &changed);
        let route_time = route_started.elapsed();
        let runtime_outcome = match (&routed, &self.runtime) {
            (Some(r), Some(rt)) if !r.ops.is_empty() => {
                let result = rt.apply(&r.ops, &r.expected).await;
                tracing::debug!(?render_time, ?route_time, runtime_done = ?started.elapsed(), "runtime update sent");
                Some(result)
            }
            _ => None,
        };
        let (path, reason, reload_why) = self.path_taken(&routed, &runtime_outcome);
        for &i in &changed {
            self.target[i] = candidates[i].clone();
        }
        let apply_time = started.elapsed();
        self.observe(|m| m.apply_seconds.observe(apply_time.as_secs_f64()));
        // 3. The rest (fsync, `haproxy -c`, rename) is the commit's.
        Prepared::Commit(Commit::new(
            staged,
            super::commit::CommitMeta {
                candidates,
                base,
                runtime: match runtime_outcome {
                    None => RuntimeSent::Nothing,
                    Some(Ok(_)) => RuntimeSent::Applied,
                    Some(Err(_)) => RuntimeSent::Failed,
                },
                path,
                reason,
                reload_why,
                changed,
                revision: self.revision,
                started,
                render_time,
                route_time,
            },
        ))
    }

    /// The outputs could not be staged or written: HAProxy is left as it is, and the apply is
    /// retried with backoff.
    pub(super) fn write_failed(&mut self, e: String) -> Applied {
        self.retry.failed(&e);
        Applied::Rejected(e)
    }

    /// Plans the changed outputs against what HAProxy runs (see [`route::choose`]); `None`
    /// without a runtime API (every written change reloads).
    fn route(&mut self, candidates: &[Option<Content>], changed: &[usize]) -> Option<Routed> {
        if self.runtime.is_none() || !self.reload_enabled() {
            return None;
        }
        let parsed: Vec<(usize, Arc<Config>)> = changed
            .iter()
            .filter_map(|&i| Some((i, candidates[i].clone()?)))
            .map(|(i, text)| (i, self.parse_output(i, &text)))
            .collect();
        let running: Vec<Result<Arc<Config>, String>> = (0..self.running.len())
            .map(|i| {
                if !changed.contains(&i) {
                    return Err(String::new());
                }
                self.running_config(i)
            })
            .collect();
        let specs = self.renderer.specs();
        Some(route::choose(&running, &parsed, |i| {
            format!("--output {}", specs[i].output.display())
        }))
    }

    /// What HAProxy runs for output `i`, parsing the file on disk if that is what it runs.
    fn running_config(&mut self, i: usize) -> Result<Arc<Config>, String> {
        match &self.running[i] {
            Running::Unknown(why) => Err(why.to_string()),
            Running::Parsed(c) => Ok(c.clone()),
            Running::Disk => match self.disk[i].clone() {
                Some(text) => {
                    let c = self.parse_output(i, &text);
                    self.running[i] = Running::Parsed(c.clone());
                    Ok(c)
                }
                None => Err("a new output file".to_string()),
            },
        }
    }

    pub(super) fn forget_running(&mut self, which: &[usize], why: &'static str) {
        for &i in which {
            self.running[i] = Running::Unknown(why);
        }
    }

    /// The path an apply took and why, from its route and the runtime update's outcome, and
    /// what the reload it needs is for; keeps what HAProxy runs up to date.
    fn path_taken(
        &mut self,
        routed: &Option<Routed>,
        runtime_outcome: &Option<Result<String, ApplyError>>,
    ) -> (Path, String, Option<String>) {
        let Some(routed) = routed else {
            if !self.reload_enabled() {
                let why = "no reload method: HAProxy is not told".to_string();
                return (Path::NotTold, why, None);
            }
            let why = "no --runtime-socket".to_string();
            return (Path::Reload, why.clone(), Some(why));
        };
        match runtime_outcome {
            Some(Err(e)) => {
                self.stats.runtime_fallbacks += 1;
                self.observe(|m| m.runtime_fallbacks.inc());
                tracing::warn!(error = %e, ops = %describe(&routed.ops), "runtime update failed; falling back to a reload");
                let changed: Vec<usize> = routed.after.iter().map(|(i, _)| *i).collect();
                self.forget_running(&changed, "a runtime update failed");
                let why = format!("fallback: the runtime update failed: {e}");
                (Path::Reload, why.clone(), Some(why))
            }
            outcome => {
                for (i, after) in &routed.after {
                    self.running[*i] = Running::Parsed(after.clone());
                }
                let detail = match outcome {
                    Some(Ok(detail)) => format!("{}; {detail}", describe(&routed.ops)),
                    _ => String::new(),
                };
                match (&routed.reload, detail.is_empty()) {
                    (Some(why), true) => (Path::Reload, why.clone(), Some(why.clone())),
                    (Some(why), false) => (
                        Path::Reload,
                        format!("{why}; meanwhile applied at runtime: {detail}"),
                        Some(why.clone()),
                    ),
                    (None, false) => (Path::Runtime, detail, None),
                    (None, true) => (
                        Path::Unseen,
                        "the outputs changed in ways HAProxy does not see".into(),
                        None,
                    ),
                }
            }
        }
    }

    /// Marks a reload as wanted (see [`reload::Schedule`]).
    pub(super) fn schedule_reload(&mut self, why: &str) {
        if self.reload_enabled() {
            self.reloads.want(why);
        }
    }
}

/// Which way an apply reached HAProxy (logged as `path=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Path {
    /// Runtime API commands, read back; no reload.
    Runtime,
    /// A reload of the files on disk.
    Reload,
    /// Neither: the outputs changed only in ways HAProxy does not see (comments, order).
    Unseen,
    /// Neither: no reload method is configured, so HAProxy is not told.
    NotTold,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Runtime => "runtime",
            Path::Reload => "reload",
            Path::Unseen | Path::NotTold => "none",
        })
    }
}

/// The first few operations, for logs.
fn describe(ops: &[crate::haproxy::plan::Op]) -> String {
    const SHOWN: usize = 5;
    let mut text = ops
        .iter()
        .take(SHOWN)
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if ops.len() > SHOWN {
        text.push_str(&format!(" and {} more", ops.len() - SHOWN));
    }
    text
}

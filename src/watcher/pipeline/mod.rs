//! The change pipeline: etcd events and template edits in; rendered, staged, validated,
//! atomically written configuration, runtime updates and HAProxy reloads out.
//!
//! ```text
//! etcd watch ─┐                     ┌─ render all templates (incremental catalog, no copy)
//!             ├─► Input ─► debounce ┤  unchanged? stop.  changed? stage (write)
//! notify ─────┘                     ├─ runtime commands for server changes (route.rs)
//!                                   └─ fsync, `haproxy -c` ─► rename ─► reload if still needed
//! ```
//!
//! One task owns all state, so there is exactly one render and at most one reload in flight;
//! whatever arrives meanwhile waits in the channel and is coalesced into the next apply. The
//! I/O at the edges (validation, reload, the runtime API) sits behind the [`Validate`],
//! [`Reload`] and [`RuntimeUpdate`] seams.
//!
//! With a runtime API ([`Pipeline::with_runtime`]), the pipeline keeps what HAProxy runs per
//! output and plans each change against it, backend by backend ([`route::choose`]): server
//! additions, removals and weights go out as runtime commands and are read back at once, even
//! while a reload for another backend waits or fails; everything else waits for a reload. A
//! runtime command HAProxy refuses, a read-back that differs, or a candidate `haproxy -c`
//! refuses after all ends in a reload of the files on disk, so HAProxy never stays diverged
//! from them. Failures are isolated: a file that cannot be written leaves HAProxy as it is
//! (retried with backoff, never reverted by a reload); a reload HAProxy refuses at load time
//! is not repeated for changes that need none (see `reload.rs`); a stopped HAProxy
//! fails a reload in milliseconds, so the files keep following etcd meanwhile.

mod apply;
mod debounce;
mod diagnose;
mod reload;
mod retry;
mod route;
mod write;

use crate::core::files::read_live;
use crate::haproxy::config::Config;
use crate::haproxy::{Reload, RuntimeUpdate, Validate};
use crate::watcher::catalog::Catalog;
use crate::watcher::render::Renderer;
use crate::watcher::source::WatchEvent;
use debounce::Debounce;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Something the pipeline reacts to.
#[derive(Debug)]
pub enum Input {
    Etcd(WatchEvent),
    /// A template file changed on disk.
    Template(PathBuf),
}

/// Timing of the pipeline.
#[derive(Debug, Clone)]
pub struct Timing {
    /// A change is applied once no other change arrived for this long...
    pub debounce: Duration,
    /// ...but never later than this after the first change held back.
    pub debounce_max: Duration,
    /// Least time between two reloads.
    pub min_reload_interval: Duration,
    /// Backoff for retrying a failed reload.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// At shutdown, how long the step in progress and the runtime path's drains may take
    /// together.
    pub shutdown_grace: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            debounce_max: Duration::from_secs(1),
            min_reload_interval: Duration::from_millis(500),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub applies: u64,
    pub writes: u64,
    pub validation_failures: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Applies done through the runtime API alone (no reload).
    pub runtime_applies: u64,
    /// Runtime applies that failed or read back wrong, and fell back to a reload.
    pub runtime_fallbacks: u64,
}

/// What one apply did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// No etcd data yet: nothing rendered.
    NotSynced,
    /// Every output already held the rendered content.
    Unchanged,
    /// These outputs were replaced.
    Written(Vec<PathBuf>),
    /// `haproxy -c` (or a template) refused the candidate; the live files were kept.
    Rejected(String),
}

/// What HAProxy runs for one output, as far as the pipeline knows.
#[derive(Debug, Clone)]
enum Running {
    /// Not known (why): at start, after a runtime update that failed, after a reload that
    /// may or may not have happened. Changes to the output wait for a reload.
    Unknown(&'static str),
    /// Exactly the file on disk (after a reload); parsed when first needed.
    Disk,
    /// This configuration: the file as last reloaded, plus the runtime updates since.
    Parsed(Arc<Config>),
}

/// The pipeline's state. `V` validates candidates, `R` reloads HAProxy.
pub struct Pipeline<V, R> {
    pub catalog: Catalog,
    pub renderer: Renderer,
    validator: Option<V>,
    /// How HAProxy is reloaded; `None` when nothing is to be reloaded (render and validate
    /// only).
    reloader: Option<R>,
    /// The runtime API fast path, if configured.
    runtime: Option<Box<dyn RuntimeUpdate>>,
    timing: Timing,
    debounce: Debounce,
    /// Content of each output on disk, as last written (or found at start).
    disk: Vec<Option<String>>,
    /// What HAProxy runs, per output (used with a runtime API only).
    running: Vec<Running>,
    /// The candidate set HAProxy last refused (with the base config's fingerprint then), so
    /// it is not re-checked unchanged.
    refused: Option<(Vec<Option<String>>, Option<std::time::SystemTime>)>,
    /// When to retry an apply that failed for a passing reason (I/O, a check that timed out).
    retry: retry::ApplyRetry,
    /// Render errors of the last apply (an output whose template failed keeps its live file).
    pub render_errors: Vec<String>,
    synced: bool,
    /// Template files changed on disk since the last apply.
    templates_touched: std::collections::BTreeSet<PathBuf>,
    /// Whether an apply has run yet (the first one reloads even when nothing changed).
    started: bool,
    reloads: reload::Schedule,
    pub stats: Stats,
}

impl<V: Validate, R: Reload> Pipeline<V, R> {
    /// A pipeline over `catalog` and `renderer`. `validator` is `None` to skip `haproxy -c`;
    /// `reload_enabled` is false when nothing is to be reloaded.
    pub fn new(
        catalog: Catalog,
        renderer: Renderer,
        validator: Option<V>,
        reloader: Option<R>,
        timing: Timing,
    ) -> std::io::Result<Self> {
        let disk = renderer
            .specs()
            .iter()
            .map(|s| read_live(&s.output))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            catalog,
            renderer,
            validator,
            reloader,
            runtime: None,
            debounce: Debounce::new(timing.debounce, timing.debounce_max),
            retry: retry::ApplyRetry::new(timing.retry_min, timing.retry_max),
            reloads: reload::Schedule::new(&timing),
            timing,
            running: vec![Running::Unknown("first update since start"); disk.len()],
            disk,
            refused: None,
            render_errors: Vec::new(),
            synced: false,
            templates_touched: Default::default(),
            started: false,
            stats: Stats::default(),
        })
    }

    /// Applies server-set changes through `runtime` instead of reloading (needs a reloader, for
    /// every other change and for the fallback).
    pub fn with_runtime(mut self, runtime: Box<dyn RuntimeUpdate>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Takes one input into the state; returns whether it calls for a new render.
    pub fn handle(&mut self, input: Input, now: Instant) -> bool {
        let dirty = match input {
            Input::Etcd(ev) => {
                let first = !self.synced && matches!(ev, WatchEvent::Snapshot { .. });
                self.synced |= first;
                self.catalog.apply(ev) || first
            }
            Input::Template(path) => {
                // Read it once it has settled: the first event may be its truncation.
                self.templates_touched.insert(path);
                self.debounce.change_settling(now);
                return true;
            }
        };
        if dirty {
            self.debounce.change(now);
        }
        dirty
    }

    /// Re-reads the templates touched on disk; a broken one keeps its last good version.
    /// Returns whether any template changed.
    fn reload_templates(&mut self) -> bool {
        let mut changed = false;
        for path in std::mem::take(&mut self.templates_touched) {
            match self.renderer.reload(&path) {
                Ok(true) => {
                    changed = true;
                    tracing::info!(template = %path.display(), "template changed on disk")
                }
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(template = %path.display(), error = %e, "template rejected; the last good version stays in use")
                }
            }
        }
        changed
    }

    /// When the pending changes should be rendered: debounced and, while reloads are rate
    /// limited, held back too so that they coalesce.
    fn apply_due(&self) -> Option<Instant> {
        // With the runtime API, a change is cheap to apply: a long burst goes out every
        // --debounce instead of waiting up to --debounce-max for a quiet stretch.
        let debounced = if self.runtime_ready() {
            self.debounce.due_throttled()
        } else {
            self.debounce.due()
        };
        let due = match (debounced, self.retry.due()) {
            (Some(d), Some(r)) => d.min(r),
            (d, r) => d.or(r)?,
        };
        // Without a runtime API every apply reloads: hold it for the reload interval. With
        // one, a server change goes through at once, even while a reload waits.
        Some(
            match (
                self.reload_enabled() && self.runtime.is_none(),
                self.reloads.last(),
            ) {
                (true, Some(last)) => due.max(last + self.timing.min_reload_interval),
                _ => due,
            },
        )
    }

    /// Whether HAProxy is reloaded at all.
    fn reload_enabled(&self) -> bool {
        self.reloader.is_some()
    }

    /// Whether changes may take the runtime path at all.
    fn runtime_ready(&self) -> bool {
        self.runtime.is_some() && self.reload_enabled() && self.started
    }

    /// When the next piece of work is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        let reload = self.reloads.due();
        match (self.apply_due(), reload) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }

    /// Does whatever is due at `now`.
    pub async fn tick(&mut self, now: Instant) {
        if self.apply_due().is_some_and(|d| d <= now) {
            self.debounce.applied();
            self.retry.started();
            self.apply().await;
        }
        if self.reloads.due().is_some_and(|t| t <= Instant::now()) {
            self.reload().await;
        }
    }

    /// Whether a reload is waiting (written but not yet loaded by HAProxy).
    pub fn reload_pending(&self) -> bool {
        self.reloads.pending()
    }

    /// Runs until `rx` closes or `shutdown` resolves. At shutdown the step in progress (an
    /// apply, a reload) is finished rather than cut short, so the files and HAProxy are left
    /// consistent; it and the runtime path's drains get [`Timing::shutdown_grace`] together.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Stats {
        tokio::pin!(shutdown);
        let grace = self.timing.shutdown_grace;
        let deadline = loop {
            let due = self.next_due();
            if due.is_some_and(|d| d <= Instant::now()) {
                // Due now: no timer (tokio's have millisecond granularity). A shutdown waits
                // for the step in progress, for at most the grace period.
                let stopping = {
                    let tick = self.tick(Instant::now());
                    tokio::pin!(tick);
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => {
                            let deadline = Instant::now() + grace;
                            if tokio::time::timeout_at(deadline, &mut tick).await.is_err() {
                                tracing::warn!(?grace, "the step in progress did not finish within the shutdown grace period; stopping anyway");
                            }
                            Some(deadline)
                        }
                        _ = &mut tick => None,
                    }
                };
                match stopping {
                    Some(deadline) => break deadline,
                    None => continue,
                }
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break Instant::now() + grace,
                msg = rx.recv() => {
                    let Some(input) = msg else { break Instant::now() + grace };
                    let now = Instant::now();
                    self.handle(input, now);
                    // Take everything already queued before deciding: a burst is one apply.
                    while let Ok(more) = rx.try_recv() {
                        self.handle(more, now);
                    }
                }
                // Due: the top of the loop runs it.
                _ = sleep_until_opt(due) => {}
            }
        };
        self.finish_drains(deadline.saturating_duration_since(Instant::now()))
            .await;
        self.stats
    }

    /// At shutdown: lets the runtime path's drains (servers removed at runtime, finishing
    /// their requests before they are deleted) end within `grace`.
    async fn finish_drains(&self, grace: Duration) {
        let Some(runtime) = &self.runtime else {
            return;
        };
        runtime.shutdown(grace).await;
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod tests;

//! The change pipeline: etcd events and template edits in; rendered, staged, validated,
//! atomically written configuration, runtime updates and HAProxy reloads out.
//!
//! ```text
//! etcd watch ─┐                ┌─ render all templates (incremental catalog, no copy)
//!             ├─► Input ─► due ┤  unchanged? stop.  changed? stage (write beside the live file)
//! notify ─────┘   (pending.rs) ├─ runtime commands for server changes (route.rs)      ── fast
//!                              └─ commit: fsync, `haproxy -c`, rename (commit.rs)     ── slow,
//!                                 then a reload if still needed (reload.rs)   off the routing path
//! ```
//!
//! **When:** an etcd change is applied as soon as no apply is running, and the changes that
//! arrive while one runs are applied together right after it; a template edit waits until its
//! file has settled. Reloads never come closer than `--min-reload-interval` and coalesce
//! everything that arrives meanwhile. One task owns all state, so there is one render at a
//! time; the commit of one apply (`haproxy -c`, seconds at worst) runs beside the next applies,
//! one at a time, so runtime commands never queue behind a check.
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
//! fails a reload in milliseconds, so the files keep following etcd meanwhile. The I/O at the
//! edges (validation, reload, the runtime API) sits behind the [`Validate`], [`Reload`] and
//! [`RuntimeUpdate`] seams.

mod apply;
mod commit;
mod diagnose;
mod pending;
mod reload;
mod retry;
mod route;
mod run;
mod write;

use crate::core::files::read_live;
use crate::haproxy::config::{Config, Parsed};
use crate::haproxy::{Reload, RuntimeUpdate, Validate};
use crate::watcher::catalog::Catalog;
use crate::watcher::metrics::WatcherMetrics;
use crate::watcher::render::Renderer;
use crate::watcher::source::WatchEvent;
use commit::{Commits, Content};
use pending::Pending;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Something the pipeline reacts to.
#[derive(Debug)]
pub enum Input {
    Etcd(WatchEvent),
    /// A template file changed on disk.
    Template(PathBuf),
    /// Answer at once (the systemd watchdog asking whether the pipeline still takes input).
    Heartbeat(tokio::sync::oneshot::Sender<()>),
}

/// Timing of the pipeline.
#[derive(Debug, Clone)]
pub struct Timing {
    /// A template edit is applied once its file saw no other event for this long...
    pub template_settle: Duration,
    /// ...but never later than this after its first event.
    pub template_settle_max: Duration,
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
            template_settle: Duration::from_millis(100),
            template_settle_max: Duration::from_secs(1),
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
    catalog: Catalog,
    renderer: Renderer,
    validator: Option<Arc<V>>,
    /// How HAProxy is reloaded; `None` when nothing is to be reloaded (render and validate
    /// only).
    reloader: Option<R>,
    /// The runtime API fast path, if configured.
    runtime: Option<Box<dyn RuntimeUpdate>>,
    timing: Timing,
    /// What is waiting to be applied, and when it is due.
    pending: Pending,
    /// Content of each output on disk, as last written (or found at start).
    disk: Vec<Option<Content>>,
    /// Content of each output once the commits running and waiting are written: what the
    /// next apply compares its candidates with.
    target: Vec<Option<Content>>,
    /// The commit running and the one waiting.
    commits: Commits,
    /// The last text of each output parsed (a candidate, or the file on disk), kept so the
    /// next one is parsed at the cost of what changed.
    parsed: Vec<Option<Parsed>>,
    /// What HAProxy runs, per output (used with a runtime API only).
    running: Vec<Running>,
    /// The candidate set HAProxy last refused (with the base config's fingerprint then), so
    /// it is not re-checked unchanged.
    refused: Option<(Vec<Option<Content>>, Option<std::time::SystemTime>)>,
    /// When to retry an apply that failed for a passing reason (I/O, a check that timed out).
    retry: retry::ApplyRetry,
    /// Render errors of the last apply (an output whose template failed keeps its live file).
    render_errors: Vec<String>,
    synced: bool,
    /// Whether an apply has run yet (the first one reloads even when nothing changed).
    started: bool,
    reloads: reload::Schedule,
    stats: Stats,
    /// The latest etcd revision received.
    revision: i64,
    /// Whether systemd was told the watcher is ready (after the first apply).
    told_ready: bool,
    /// Where the counters and durations go for `--metrics-addr`, if anywhere.
    metrics: Option<Arc<WatcherMetrics>>,
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
            .map(|s| read_live(&s.output).map(|text| text.map(Arc::new)))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            catalog,
            renderer,
            validator: validator.map(Arc::new),
            reloader,
            runtime: None,
            pending: Pending::new(timing.template_settle, timing.template_settle_max),
            retry: retry::ApplyRetry::new(timing.retry_min, timing.retry_max),
            reloads: reload::Schedule::new(&timing),
            timing,
            running: vec![Running::Unknown("first update since start"); disk.len()],
            target: disk.clone(),
            commits: Commits::default(),
            parsed: vec![None; disk.len()],
            disk,
            refused: None,
            render_errors: Vec::new(),
            synced: false,
            started: false,
            stats: Stats::default(),
            revision: 0,
            told_ready: false,
            metrics: None,
        })
    }

    /// Applies server-set changes through `runtime` instead of reloading (needs a reloader, for
    /// every other change and for the fallback).
    pub fn with_runtime(mut self, runtime: Box<dyn RuntimeUpdate>) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Reports counters, durations and readiness to `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<WatcherMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Tells the metrics, if any.
    fn observe<T>(&self, f: impl FnOnce(&WatcherMetrics) -> T) {
        if let Some(m) = &self.metrics {
            f(m);
        }
    }

    /// An apply ended (`ok` or not): the first one makes the watcher ready for systemd
    /// (`Type=notify`), whatever its outcome, since the live configuration keeps serving.
    fn apply_ended(&mut self) {
        if !self.told_ready {
            self.told_ready = true;
            if crate::core::process::sd_notify("READY=1") {
                tracing::debug!("told systemd the watcher is ready");
            }
        }
    }

    /// The services watched and their endpoints.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The templates and their outputs.
    pub fn renderer(&self) -> &Renderer {
        &self.renderer
    }

    /// Render errors of the last apply (an output whose template failed keeps its live file).
    pub fn render_errors(&self) -> &[String] {
        &self.render_errors
    }

    /// Renders every template against the catalog as it is, touching nothing (`--dry-run`).
    pub fn render_preview(&mut self) -> Vec<Result<String, crate::watcher::render::TemplateError>> {
        self.renderer.render_all(&mut self.catalog)
    }

    /// Output `i`'s `text`, parsed: incrementally from the last text of `i` parsed.
    fn parse_output(&mut self, i: usize, text: &Content) -> Arc<Config> {
        let parsed = match &self.parsed[i] {
            Some(prev) => prev.update(text.clone()),
            None => Parsed::new(text.clone()),
        };
        let config = parsed.config().clone();
        self.parsed[i] = Some(parsed);
        config
    }

    /// Takes one input into the state; returns whether it calls for a new render.
    pub fn handle(&mut self, input: Input, now: Instant) -> bool {
        let dirty = match input {
            Input::Etcd(ev) => {
                let revision = match &ev {
                    WatchEvent::Snapshot { revision, .. }
                    | WatchEvent::Changes { revision, .. } => *revision,
                };
                self.revision = self.revision.max(revision);
                self.observe(|m| m.revision_seen.set(revision));
                let first = !self.synced && matches!(ev, WatchEvent::Snapshot { .. });
                self.synced |= first;
                self.catalog.apply(ev, now) || first
            }
            Input::Heartbeat(reply) => {
                let _ = reply.send(());
                return false;
            }
            Input::Template(path) => {
                // Read it once it has settled: the first event may be its truncation.
                self.pending.template_touched(path, now);
                self.observe(WatcherMetrics::changes_pending);
                return true;
            }
        };
        if dirty {
            self.pending.etcd_changed(now);
            self.observe(WatcherMetrics::changes_pending);
        }
        dirty
    }

    /// Re-reads the templates touched on disk; a broken one keeps its last good version.
    /// Returns whether any template changed.
    fn reload_templates(&mut self, templates: Vec<PathBuf>) -> bool {
        let mut changed = false;
        for path in templates {
            match self.renderer.reload(&path) {
                Ok(true) => {
                    changed = true;
                    tracing::info!(template = %path.display(), "template changed on disk")
                }
                Ok(false) => {}
                Err(e) => {
                    self.observe(|m| m.template_errors.inc());
                    tracing::error!(template = %path.display(), error = %e, "template rejected; the last good version stays in use")
                }
            }
        }
        changed
    }

    /// When the pending changes are due: at once (or when a retry or a template's settling
    /// says), except while a due reload waits for the commits to drain — changes coalesce
    /// behind it then, so a stream of changes cannot hold a reload off for ever.
    fn apply_due(&self) -> Option<Instant> {
        if self.commits.busy() && self.reloads.due().is_some_and(|d| d <= Instant::now()) {
            return None;
        }
        match (self.pending.due(), self.retry.due()) {
            (Some(d), Some(r)) => Some(d.min(r)),
            (d, r) => d.or(r),
        }
    }

    /// When the pending reload may run: it loads the files on disk, so never while a commit
    /// is about to replace them.
    fn reload_due(&self) -> Option<Instant> {
        if self.commits.busy() {
            return None;
        }
        self.reloads.due()
    }

    /// Whether HAProxy is reloaded at all.
    fn reload_enabled(&self) -> bool {
        self.reloader.is_some()
    }

    /// When the next piece of work is due, if any: an apply, a reload, or the end of a root
    /// service's grace.
    pub fn next_due(&self) -> Option<Instant> {
        [
            self.apply_due(),
            self.reload_due(),
            self.catalog.next_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Removes the root services whose grace has ended by `now` (a change like any other:
    /// due at once; a removed backend reloads HAProxy) and their metrics.
    fn expire_services(&mut self, now: Instant) {
        if self.catalog.next_expiry().is_none_or(|t| t > now) {
            return;
        }
        let removed = self.catalog.expire(now);
        if removed.is_empty() {
            return;
        }
        self.observe(|m| {
            for name in &removed {
                m.endpoints.remove(&crate::watcher::metrics::ServiceLabels {
                    service: name.clone(),
                });
            }
        });
        self.pending.etcd_changed(now);
        self.observe(WatcherMetrics::changes_pending);
    }

    /// Does whatever is due at `now`, waiting for an apply's commit (tests; the watch loop
    /// in `run.rs` lets commits run beside the next applies).
    #[cfg(test)]
    pub async fn tick(&mut self, now: Instant) {
        self.expire_services(now);
        if self.apply_due().is_some_and(|d| d <= now) {
            let templates = self.pending.take_due(now);
            self.apply_waiting(templates).await;
        }
        if self.reload_due().is_some_and(|t| t <= Instant::now()) {
            self.reload().await;
        }
    }

    /// Whether a reload is waiting (written but not yet loaded by HAProxy).
    pub fn reload_pending(&self) -> bool {
        self.reloads.pending()
    }
}

#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod schedule_tests;
#[cfg(test)]
mod tests;

//! The change pipeline: etcd events and template edits in; rendered, staged, validated,
//! atomically written configuration, runtime updates and HAProxy reloads out.
//!
//! ```text
//! etcd watch ─┐                     ┌─ render all templates (incremental catalog, no copy)
//!             ├─► Input ─► debounce ┤  unchanged? stop.  changed? stage (write + fsync)
//! notify ─────┘                     ├─ runtime commands for server changes (route.rs)
//!                                   └─ `haproxy -c` ─► rename ─► reload if still needed
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

mod debounce;
mod diagnose;
mod reload;
mod route;
mod write;

use crate::core::backoff::Backoff;
use crate::core::files::read_live;
use crate::haproxy::config::Config;
use crate::haproxy::{CheckError, Reload, ReloadError, RuntimeUpdate, Validate};
use crate::watcher::catalog::Catalog;
use crate::watcher::render::Renderer;
use crate::watcher::source::WatchEvent;
use debounce::Debounce;
use route::Routed;
use std::path::{Path as FsPath, PathBuf};
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
    reloader: R,
    reload_enabled: bool,
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
    apply_retry_at: Option<Instant>,
    apply_retry: Backoff,
    /// Consecutive applies that could not write the outputs (the first one is logged).
    write_failures: u32,
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
        reloader: R,
        reload_enabled: bool,
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
            reload_enabled,
            runtime: None,
            debounce: Debounce::new(timing.debounce, timing.debounce_max),
            apply_retry: Backoff::new(timing.retry_min, timing.retry_max),
            reloads: reload::Schedule::new(&timing),
            timing,
            running: vec![Running::Unknown("first update since start"); disk.len()],
            disk,
            refused: None,
            apply_retry_at: None,
            write_failures: 0,
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
        let due = match (debounced, self.apply_retry_at) {
            (Some(d), Some(r)) => d.min(r),
            (d, r) => d.or(r)?,
        };
        // Without a runtime API every apply reloads: hold it for the reload interval. With
        // one, a server change goes through at once, even while a reload waits.
        Some(
            match (
                self.reload_enabled && self.runtime.is_none(),
                self.reloads.last(),
            ) {
                (true, Some(last)) => due.max(last + self.timing.min_reload_interval),
                _ => due,
            },
        )
    }

    /// Whether changes may take the runtime path at all.
    fn runtime_ready(&self) -> bool {
        self.runtime.is_some() && self.reload_enabled && self.started
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
            self.apply_retry_at = None;
            self.apply().await;
        }
        if self.reloads.due().is_some_and(|t| t <= Instant::now()) {
            self.reload().await;
        }
    }

    /// Renders every template and, if any output changed, stages, routes, validates and
    /// writes the set.
    ///
    /// The order keeps one invariant: **HAProxy never routes by anything the files on disk
    /// will not hold.** The changed outputs are staged (written and fsynced beside the live
    /// files) before any runtime command goes out, so a full disk or a read-only folder stops
    /// the apply before HAProxy changes; the runtime commands come next (HAProxy routes the new
    /// way before `haproxy -c` ends); a candidate `haproxy -c` refuses after all makes HAProxy
    /// reload the files on disk; a reload only ever loads files completely written.
    pub async fn apply(&mut self) -> Applied {
        if !self.synced {
            return Applied::NotSynced;
        }
        self.stats.applies += 1;
        if self.reload_templates() {
            self.reloads.operator_changed("a template changed");
        }
        let started = Instant::now();
        let rendered = self.renderer.render_all(&mut self.catalog);
        let render_time = started.elapsed();
        let mut candidates: Vec<Option<String>> = Vec::with_capacity(rendered.len());
        self.render_errors.clear();
        for (i, r) in rendered.into_iter().enumerate() {
            match r {
                Ok(text) => candidates.push(Some(text)),
                Err(e) => {
                    tracing::error!(error = %e, output = %self.renderer.specs()[i].output.display(), "render failed; keeping the live file");
                    self.render_errors.push(e.0);
                    candidates.push(self.disk[i].clone());
                }
            }
        }
        let changed: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].is_some() && candidates[i] != self.disk[i])
            .collect();
        let first = !self.started;
        self.started = true;
        if changed.is_empty() {
            tracing::debug!(?render_time, "rendered; no output changed");
            if first && self.reload_enabled {
                // The files may be newer than what HAProxy runs (a previous watcher stopped
                // between writing and reloading): reload once at start to be sure.
                tracing::info!("outputs already up to date; reloading once at start");
                self.schedule_reload("first update since start");
            }
            return if self.render_errors.is_empty() {
                Applied::Unchanged
            } else {
                Applied::Rejected(self.render_errors.join("; "))
            };
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
            return Applied::Rejected("candidate unchanged since haproxy -c refused it".into());
        }
        // 1. Stage: nothing reaches HAProxy before the new files are safely beside the live
        //    ones.
        let staged = match write::stage(self.renderer.specs(), &candidates, &changed) {
            Ok(staged) => staged,
            Err(e) => return self.write_failed(e),
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
        // 3. Validate the staged set and rename it over the live files.
        let (written, result) = write::validate_and_commit(
            self.renderer.specs(),
            self.validator.as_ref(),
            &self.disk,
            staged,
        )
        .await;
        for &i in &written {
            self.disk[i] = candidates[i].take();
        }
        let sent_ok = matches!(runtime_outcome, Some(Ok(_)));
        match &result {
            Err(CheckError::Refused(_)) if sent_ok => {
                // HAProxy has servers the files will not hold: reload the files.
                self.forget_running(&changed, "haproxy -c refused what the runtime API applied");
                self.schedule_reload("haproxy -c refused a candidate already applied at runtime");
            }
            _ => {}
        }
        match result {
            Ok(()) => {
                let paths: Vec<PathBuf> = written
                    .iter()
                    .map(|&i| self.renderer.specs()[i].output.clone())
                    .collect();
                self.refused = None;
                self.apply_retry.reset();
                self.writable_again();
                self.stats.writes += 1;
                if let Some(why) = &reload_why {
                    self.schedule_reload(why);
                } else if path == Path::Runtime {
                    self.stats.runtime_applies += 1;
                }
                tracing::info!(
                    path = %path,
                    %reason,
                    outputs = ?paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                    endpoints = self.catalog.endpoint_count(),
                    ?render_time,
                    ?route_time,
                    total_time = ?started.elapsed(),
                    "configuration updated"
                );
                Applied::Written(paths)
            }
            Err(CheckError::Refused(e)) => {
                self.refused = Some((candidates, base));
                self.stats.validation_failures += 1;
                tracing::error!(error = %e, "candidate configuration rejected; the live configuration keeps serving");
                Applied::Rejected(e)
            }
            Err(CheckError::Transient(e)) => {
                if let Some(why) = reload_why {
                    if matches!(runtime_outcome, Some(Err(_))) {
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

    /// The outputs could not be staged or written: HAProxy is left as it is, the apply is
    /// retried with backoff, and only the first failure in a row is logged as an error.
    fn write_failed(&mut self, e: String) -> Applied {
        let delay = self.apply_retry.next_delay();
        self.apply_retry_at = Some(Instant::now() + delay);
        self.write_failures += 1;
        if self.write_failures == 1 {
            tracing::error!(error = %e, retry_in = ?delay, "could not write the new configuration; HAProxy keeps its current one, retrying with backoff");
        } else {
            tracing::debug!(error = %e, attempts = self.write_failures, retry_in = ?delay, "still cannot write the new configuration");
        }
        Applied::Rejected(e)
    }

    fn writable_again(&mut self) {
        if self.write_failures > 0 {
            tracing::info!(
                failed_attempts = self.write_failures,
                "outputs written again"
            );
            self.write_failures = 0;
        }
    }

    /// Plans the changed outputs against what HAProxy runs (see [`route::choose`]); `None`
    /// without a runtime API (every written change reloads).
    fn route(&mut self, candidates: &[Option<String>], changed: &[usize]) -> Option<Routed> {
        if self.runtime.is_none() || !self.reload_enabled {
            return None;
        }
        let parsed: Vec<(usize, Arc<Config>)> = changed
            .iter()
            .map(|&i| {
                let text = candidates[i].as_deref().unwrap_or_default();
                (i, Arc::new(crate::haproxy::config::parse(text)))
            })
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
            Running::Disk => match self.disk[i].as_deref() {
                Some(text) => {
                    let c = Arc::new(crate::haproxy::config::parse(text));
                    self.running[i] = Running::Parsed(c.clone());
                    Ok(c)
                }
                None => Err("a new output file".to_string()),
            },
        }
    }

    fn forget_running(&mut self, which: &[usize], why: &'static str) {
        for &i in which {
            self.running[i] = Running::Unknown(why);
        }
    }

    /// The path an apply took and why, from its route and the runtime update's outcome, and
    /// what the reload it needs is for; keeps what HAProxy runs up to date.
    fn path_taken(
        &mut self,
        routed: &Option<Routed>,
        runtime_outcome: &Option<Result<String, String>>,
    ) -> (Path, String, Option<String>) {
        let Some(routed) = routed else {
            let why = "no --runtime-socket".to_string();
            return (Path::Reload, why.clone(), Some(why));
        };
        match runtime_outcome {
            Some(Err(e)) => {
                self.stats.runtime_fallbacks += 1;
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
    fn schedule_reload(&mut self, why: &str) {
        if self.reload_enabled {
            self.reloads.want(why);
        }
    }

    /// Reloads HAProxy; on failure schedules a retry as the kind of failure calls for.
    pub async fn reload(&mut self) -> bool {
        let started = Instant::now();
        // The files HAProxy is about to load. With a runtime API they are parsed: the server
        // state is saved against them, and they are what HAProxy runs afterwards.
        let loading: Vec<Option<Arc<Config>>> = match &self.runtime {
            Some(_) => self
                .disk
                .iter()
                .map(|d| {
                    d.as_deref()
                        .map(|t| Arc::new(crate::haproxy::config::parse(t)))
                })
                .collect(),
            None => vec![None; self.disk.len()],
        };
        if let Some(rt) = &self.runtime {
            let refs: Vec<&Config> = loading.iter().flatten().map(|c| c.as_ref()).collect();
            rt.before_reload(&refs).await;
        }
        let base = self
            .validator
            .as_ref()
            .and_then(|v| v.base_path())
            .map(FsPath::to_path_buf);
        let binds = diagnose::binds_of(base.as_deref(), &self.disk);
        match self.reloader.reload().await {
            Ok(detail) => {
                self.stats.reloads += 1;
                for (i, config) in loading.into_iter().enumerate() {
                    self.running[i] = match (config, &self.disk[i]) {
                        (Some(c), _) => Running::Parsed(c),
                        (None, Some(_)) => Running::Disk,
                        (None, None) => Running::Unknown("a new output file"),
                    };
                }
                self.reloads.succeeded(binds);
                if let Some(rt) = &self.runtime {
                    rt.after_reload();
                }
                tracing::info!(took = ?started.elapsed(), %detail, "HAProxy reloaded");
                true
            }
            Err(e) => {
                self.stats.reload_failures += 1;
                if !matches!(e, ReloadError::Refused(_)) {
                    // HAProxy is down, or may have loaded the files or not: only a reload
                    // that works makes what it runs known again. (A refused reload leaves the
                    // previous worker serving what it ran.)
                    let all: Vec<usize> = (0..self.running.len()).collect();
                    self.forget_running(&all, "the last reload did not complete");
                }
                self.reloads.failed(e, &binds);
                false
            }
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

/// Which way an apply reached HAProxy (logged as `path=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    /// Runtime API commands, read back; no reload.
    Runtime,
    /// A reload of the files on disk.
    Reload,
    /// Neither: the outputs changed only in ways HAProxy does not see (comments, order).
    Unseen,
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Path::Runtime => "runtime",
            Path::Reload => "reload",
            Path::Unseen => "none",
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

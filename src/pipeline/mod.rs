//! The change pipeline: etcd events and template edits in; rendered, validated, atomically
//! written configuration and HAProxy reloads out.
//!
//! ```text
//! etcd watch ─┐                     ┌─ render all templates (incremental catalog, no copy)
//!             ├─► Input ─► debounce ┤  unchanged? stop.  changed? stage + `haproxy -c`
//! notify ─────┘                     └─ rename over live files ─► reload (≥ min interval, retried)
//! ```
//!
//! One task owns all state, so there is exactly one render and at most one reload in flight;
//! whatever arrives meanwhile waits in the channel and is coalesced into the next apply. The
//! I/O at the edges (validation, reload, the runtime API) sits behind the [`Validate`],
//! [`Reload`] and [`RuntimeUpdate`] seams.
//!
//! With a runtime API ([`Pipeline::with_runtime`]), each apply first chooses its path
//! ([`route::choose`]): a change that only adds, removes or re-weights servers of backends
//! HAProxy already runs is sent as runtime commands and read back at once, then the candidate
//! is validated and written as usual so that the next reload starts HAProxy in the same state;
//! anything else — or a runtime command HAProxy refuses, or a read-back that differs, or a
//! candidate `haproxy -c` refuses after all — ends in a reload of the files on disk, so
//! HAProxy never stays diverged from them.

pub mod debounce;
pub mod route;

use crate::backoff::Backoff;
use crate::catalog::Catalog;
use crate::etcd::WatchEvent;
use crate::haproxy::{CheckError, Reload, RuntimeUpdate, Validate};
use crate::output::{read_live, Staged};
use crate::render::Renderer;
use debounce::Debounce;
use route::Route;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

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
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            debounce: Duration::from_millis(100),
            debounce_max: Duration::from_secs(1),
            min_reload_interval: Duration::from_millis(500),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
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
    /// Content of each output as last written (or found at start).
    live: Vec<Option<String>>,
    /// `live`, parsed for the runtime path's planning (filled when first needed, then kept from
    /// the parsed candidates).
    live_parsed: Vec<Option<crate::haproxy::plan::Config>>,
    /// The candidate set HAProxy last refused (with the base config's fingerprint then), so
    /// it is not re-checked unchanged.
    refused: Option<(Vec<Option<String>>, Option<std::time::SystemTime>)>,
    /// When to retry an apply that failed for a passing reason (I/O, a check that timed out).
    apply_retry_at: Option<Instant>,
    apply_retry: Backoff,
    /// Render errors of the last apply (an output whose template failed keeps its live file).
    pub render_errors: Vec<String>,
    synced: bool,
    /// Template files changed on disk since the last apply.
    templates_touched: std::collections::BTreeSet<PathBuf>,
    /// Whether an apply has run yet (the first one reloads even when nothing changed).
    started: bool,
    reload_pending: bool,
    reload_at: Option<Instant>,
    last_reload: Option<Instant>,
    retry: Backoff,
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
        let live = renderer
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
            retry: Backoff::new(timing.retry_min, timing.retry_max),
            apply_retry: Backoff::new(timing.retry_min, timing.retry_max),
            timing,
            live_parsed: vec![None; live.len()],
            live,
            refused: None,
            apply_retry_at: None,
            render_errors: Vec::new(),
            synced: false,
            templates_touched: Default::default(),
            started: false,
            reload_pending: false,
            reload_at: None,
            last_reload: None,
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
    fn reload_templates(&mut self) {
        for path in std::mem::take(&mut self.templates_touched) {
            match self.renderer.reload(&path) {
                Ok(true) => tracing::info!(template = %path.display(), "template changed on disk"),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(template = %path.display(), error = %e, "template rejected; the last good version stays in use")
                }
            }
        }
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
        // Without a runtime API every apply reloads; with one, only a pending reload is worth
        // coalescing into (a server change goes through at once).
        let holds_back = self.runtime.is_none() || self.reload_pending;
        Some(
            match (self.reload_enabled && holds_back, self.last_reload) {
                (true, Some(last)) => due.max(last + self.timing.min_reload_interval),
                _ => due,
            },
        )
    }

    /// Whether the next apply may take the runtime path (see [`route`](Self::route)).
    fn runtime_ready(&self) -> bool {
        self.runtime.is_some() && self.reload_enabled && self.started && !self.reload_pending
    }

    /// When the next piece of work is due, if any.
    pub fn next_due(&self) -> Option<Instant> {
        let reload = self.reload_at.filter(|_| self.reload_pending);
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
        if self.reload_pending && self.reload_at.is_some_and(|t| t <= Instant::now()) {
            self.reload().await;
        }
    }

    /// Renders every template and, if any output changed, validates and writes the set.
    pub async fn apply(&mut self) -> Applied {
        if !self.synced {
            return Applied::NotSynced;
        }
        self.stats.applies += 1;
        self.reload_templates();
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
                    candidates.push(self.live[i].clone());
                }
            }
        }
        let changed: Vec<usize> = (0..candidates.len())
            .filter(|&i| candidates[i].is_some() && candidates[i] != self.live[i])
            .collect();
        let first = !self.started;
        self.started = true;
        if changed.is_empty() {
            tracing::debug!(?render_time, "rendered; no output changed");
            if first && self.reload_enabled {
                // The files may be newer than what HAProxy runs (a previous watcher stopped
                // between writing and reloading): reload once at start to be sure.
                tracing::info!("outputs already up to date; reloading once at start");
                self.schedule_reload();
            }
            return if self.render_errors.is_empty() {
                Applied::Unchanged
            } else {
                Applied::Rejected(self.render_errors.join("; "))
            };
        }
        let base = self.validator.as_ref().and_then(|v| v.base_fingerprint());
        if self
            .refused
            .as_ref()
            .is_some_and(|(c, b)| *c == candidates && *b == base)
        {
            return Applied::Rejected("candidate unchanged since haproxy -c refused it".into());
        }
        let route_started = Instant::now();
        let (route, mut parsed) = self.route(&candidates, &changed, first);
        let route_time = route_started.elapsed();
        // The fast path goes first: HAProxy routes by the new servers before `haproxy -c` ends.
        let runtime_outcome = match (&route, &self.runtime) {
            (Route::Runtime { ops, expected }, Some(rt)) if !ops.is_empty() => {
                let result = rt.apply(ops, expected).await;
                tracing::debug!(?render_time, ?route_time, runtime_done = ?started.elapsed(), "runtime update sent");
                Some(result)
            }
            _ => None,
        };
        let (written, result) = self.validate_and_write(&candidates, &changed).await;
        for &i in &written {
            self.live[i] = candidates[i].take();
            self.live_parsed[i] = parsed
                .iter()
                .position(|(j, _)| *j == i)
                .map(|at| parsed.swap_remove(at).1);
        }
        let (path, reason) = self.path_taken(&route, &runtime_outcome);
        let reload = match path {
            Path::Reload => !written.is_empty() || runtime_outcome.is_some(),
            // Applied at runtime but not written: reload the files so HAProxy matches them.
            Path::Runtime => result.is_err(),
            Path::Unseen => false,
        };
        if reload && self.reload_enabled {
            self.schedule_reload();
        }
        match result {
            Ok(()) => {
                let paths: Vec<PathBuf> = written
                    .iter()
                    .map(|&i| self.renderer.specs()[i].output.clone())
                    .collect();
                self.refused = None;
                self.apply_retry.reset();
                self.stats.writes += 1;
                if path == Path::Runtime {
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
                let delay = self.apply_retry.next_delay();
                self.apply_retry_at = Some(Instant::now() + delay);
                tracing::error!(error = %e, retry_in = ?delay, "could not apply the new configuration; will retry");
                Applied::Rejected(e)
            }
        }
    }

    /// The path this apply takes (see [`route::choose`]); always a reload without a runtime API,
    /// at the first apply, and while a reload is pending anyway (HAProxy does not run the live
    /// files yet, so they are no base to compare with).
    fn route(
        &mut self,
        candidates: &[Option<String>],
        changed: &[usize],
        first: bool,
    ) -> (Route, Vec<(usize, crate::haproxy::plan::Config)>) {
        let why_not = if self.runtime.is_none() || !self.reload_enabled {
            Some("no --runtime-socket")
        } else if first {
            Some("first update since start")
        } else if self.reload_pending {
            Some("a reload is pending")
        } else {
            None
        };
        if let Some(why) = why_not {
            return (Route::Reload(why.into()), Vec::new());
        }
        self.parse_live(changed.iter().copied());
        let specs = self.renderer.specs();
        route::choose(&self.live_parsed, candidates, changed, |i| {
            format!("--output {}", specs[i].output.display())
        })
    }

    /// The path an apply took and why, from its route and the runtime update's outcome.
    fn path_taken(
        &mut self,
        route: &Route,
        runtime_outcome: &Option<Result<String, String>>,
    ) -> (Path, String) {
        match (route, runtime_outcome) {
            (Route::Reload(reason), _) => (Path::Reload, reason.clone()),
            (Route::Runtime { ops, .. }, Some(Ok(detail))) => {
                (Path::Runtime, format!("{}; {detail}", describe(ops)))
            }
            (Route::Runtime { ops, .. }, Some(Err(e))) => {
                self.stats.runtime_fallbacks += 1;
                tracing::warn!(error = %e, ops = %describe(ops), "runtime update failed; falling back to a reload");
                let reason = format!("fallback: the runtime update failed: {e}");
                (Path::Reload, reason)
            }
            (Route::Runtime { ops, .. }, None) if ops.is_empty() => (
                Path::Unseen,
                "the outputs changed in ways HAProxy does not see".into(),
            ),
            (Route::Runtime { .. }, None) => (Path::Reload, "no runtime API".into()),
        }
    }

    /// Parses the live outputs `which` that are not parsed yet.
    fn parse_live(&mut self, which: impl IntoIterator<Item = usize>) {
        for i in which {
            if self.live_parsed[i].is_none() {
                self.live_parsed[i] = self.live[i].as_deref().map(crate::haproxy::plan::parse);
            }
        }
    }

    /// Stages the changed outputs, validates the whole set, then renames each over its live
    /// file. Returns the outputs replaced (some, if a rename failed midway) and the outcome.
    async fn validate_and_write(
        &self,
        candidates: &[Option<String>],
        changed: &[usize],
    ) -> (Vec<usize>, Result<(), CheckError>) {
        let specs = self.renderer.specs();
        let mut staged = Vec::with_capacity(changed.len());
        for &i in changed {
            let out = &specs[i].output;
            let text = candidates[i].as_deref().unwrap_or_default();
            match Staged::write(out, text) {
                Ok(s) => staged.push((i, s)),
                Err(e) => {
                    let msg = format!("--output {}: cannot write a candidate: {e}", out.display());
                    return (Vec::new(), Err(CheckError::Transient(msg)));
                }
            }
        }
        if let Some(v) = &self.validator {
            let files: Vec<PathBuf> = (0..specs.len())
                .filter_map(|i| match staged.iter().find(|(j, _)| *j == i) {
                    Some((_, s)) => Some(s.path().to_path_buf()),
                    None if self.live[i].is_some() => Some(specs[i].output.clone()),
                    None => None,
                })
                .collect();
            if let Err(e) = v.validate(&files).await {
                // Name the output and template instead of the temporary file, which is gone.
                let name = |msg: String| {
                    staged.iter().fold(msg, |m, (i, s)| {
                        m.replace(
                            &s.path().display().to_string(),
                            &format!(
                                "{} (candidate from {})",
                                specs[*i].output.display(),
                                specs[*i].name()
                            ),
                        )
                    })
                };
                let e = match e {
                    CheckError::Refused(m) => CheckError::Refused(name(m)),
                    CheckError::Transient(m) => CheckError::Transient(name(m)),
                };
                return (Vec::new(), Err(e));
            }
        }
        let mut written = Vec::with_capacity(staged.len());
        for (i, s) in staged {
            if let Err(e) = s.commit() {
                let msg = format!(
                    "--output {}: cannot replace: {e}",
                    specs[i].output.display()
                );
                return (written, Err(CheckError::Transient(msg)));
            }
            written.push(i);
        }
        (written, Ok(()))
    }

    /// Marks a reload as wanted, as soon as the minimum interval allows (a pending retry keeps
    /// its backoff).
    fn schedule_reload(&mut self) {
        self.reload_pending = true;
        if self.reload_at.is_none() {
            let earliest = self
                .last_reload
                .map_or(Instant::now(), |t| t + self.timing.min_reload_interval);
            self.reload_at = Some(earliest);
        }
    }

    /// Reloads HAProxy; on failure schedules a retry with backoff.
    pub async fn reload(&mut self) -> bool {
        let started = Instant::now();
        if self.runtime.is_some() {
            self.parse_live(0..self.live.len());
        }
        if let Some(rt) = &self.runtime {
            let configs: Vec<&_> = self.live_parsed.iter().flatten().collect();
            rt.before_reload(&configs).await;
        }
        let result = self.reloader.reload().await;
        self.last_reload = Some(Instant::now());
        match result {
            Ok(detail) => {
                self.stats.reloads += 1;
                self.reload_pending = false;
                self.reload_at = None;
                self.retry.reset();
                if let Some(rt) = &self.runtime {
                    rt.after_reload();
                }
                tracing::info!(took = ?started.elapsed(), %detail, "HAProxy reloaded");
                true
            }
            Err(e) => {
                self.stats.reload_failures += 1;
                // Each retry is a real reload for HAProxy: never faster than the interval.
                let delay = self.retry.next_delay().max(self.timing.min_reload_interval);
                self.reload_at = Some(Instant::now() + delay);
                tracing::error!(error = %e, retry_in = ?delay, "HAProxy reload failed; will retry");
                false
            }
        }
    }

    /// Whether a reload is waiting (written but not yet loaded by HAProxy).
    pub fn reload_pending(&self) -> bool {
        self.reload_pending
    }

    /// Runs until `rx` closes or `shutdown` resolves.
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Stats {
        tokio::pin!(shutdown);
        loop {
            let due = self.next_due();
            if due.is_some_and(|d| d <= Instant::now()) {
                // Due now: no timer (tokio's have millisecond granularity). A stuck
                // validation or reload still gives way to a shutdown.
                tokio::select! {
                    biased;
                    _ = &mut shutdown => break,
                    _ = self.tick(Instant::now()) => {}
                }
                continue;
            }
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                msg = rx.recv() => {
                    let Some(input) = msg else { break };
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
        }
        self.stats
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
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod runtime_tests;
#[cfg(test)]
mod tests;

//! When to reload HAProxy, and what to do when a reload fails.
//!
//! - A wanted reload waits for `--min-reload-interval` since the last one; whatever else
//!   arrives meanwhile is coalesced into it.
//! - **HAProxy stopped** (its master socket missing or refusing): the attempt fails in
//!   milliseconds and is retried at least every second, so the reload happens as soon as
//!   HAProxy is back, while the files keep following etcd.
//! - **HAProxy refused the files at load time** (they passed `haproxy -c`: a bind on a busy
//!   port, a file-descriptor limit): every attempt pauses HAProxy's listeners, so the same
//!   change is not reloaded again until something that may fix it happens — a template or
//!   the base configuration changes, or a change that needs a reload for another reason
//!   arrives — or a long backoff (30 s doubling to 5 minutes) ends. Server changes keep going
//!   out through the runtime API meanwhile. The error names a probable cause when one can be
//!   found ([`diagnose`](super::diagnose)).
//! - Any other failure (no new worker in time): retried with `retry_min` doubling to
//!   `retry_max`, never faster than the reload interval.

use super::diagnose;
use super::{Pipeline, Running, Timing};
use crate::core::backoff::Backoff;
use crate::haproxy::config::Config;
use crate::haproxy::{Reload, ReloadError, Validate};
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

/// The fastest retry while HAProxy is not there (an attempt costs a failed `connect`).
const UNREACHABLE_RETRY_MAX: Duration = Duration::from_secs(1);
/// Backoff after HAProxy refused a reload at load time.
const REFUSED_RETRY_MIN: Duration = Duration::from_secs(30);
const REFUSED_RETRY_MAX: Duration = Duration::from_secs(300);

/// A reload HAProxy refused, and what it takes to try it again.
#[derive(Debug, Clone)]
struct Blocked {
    until: Instant,
    /// What the refused reload was for; a reload wanted for anything else is tried at once.
    why: String,
}

/// The reload schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    min_interval: Duration,
    pending: bool,
    /// What the pending reload is for (the latest reason).
    why: String,
    at: Option<Instant>,
    last: Option<Instant>,
    retry: Backoff,
    refused_retry: Backoff,
    blocked: Option<Blocked>,
    /// Consecutive attempts that found HAProxy stopped (the first one is logged as an error).
    unreachable: u32,
    /// The `bind` addresses of the configuration HAProxy last loaded.
    loaded_binds: Option<BTreeSet<String>>,
    /// The base configuration's fingerprint when last looked at.
    base: Option<Option<SystemTime>>,
}

impl Schedule {
    pub fn new(timing: &Timing) -> Self {
        Self {
            min_interval: timing.min_reload_interval,
            pending: false,
            why: String::new(),
            at: None,
            last: None,
            retry: Backoff::new(timing.retry_min, timing.retry_max),
            refused_retry: Backoff::new(REFUSED_RETRY_MIN, REFUSED_RETRY_MAX),
            blocked: None,
            unreachable: 0,
            loaded_binds: None,
            base: None,
        }
    }

    /// Whether a reload is waiting.
    pub fn pending(&self) -> bool {
        self.pending
    }

    /// When the pending reload is due.
    pub fn due(&self) -> Option<Instant> {
        self.at.filter(|_| self.pending)
    }

    /// When the last reload was attempted.
    #[cfg(test)]
    pub fn last(&self) -> Option<Instant> {
        self.last
    }

    /// Wants a reload, for `why`, as soon as the minimum interval allows (a pending retry
    /// keeps its backoff; a refused reload is only retried early for a new reason).
    pub fn want(&mut self, why: &str) {
        self.pending = true;
        if self.blocked.as_ref().is_some_and(|b| b.why != why) {
            tracing::info!(%why, "a change that needs a reload arrived; trying the reload HAProxy refused again");
            self.unblock();
        }
        self.why = why.to_string();
        if self.at.is_none() {
            let earliest = self.last.map_or(Instant::now(), |t| t + self.min_interval);
            self.at = Some(earliest);
        }
        if let Some(b) = &self.blocked {
            self.at = self.at.max(Some(b.until));
        }
    }

    /// An operator changed something that may fix a refused reload (`what`).
    pub fn operator_changed(&mut self, what: &str) {
        if self.blocked.is_some() {
            tracing::info!(change = what, "trying the reload HAProxy refused again");
            self.unblock();
        }
    }

    /// Whether the base configuration changed since the last call (`fingerprint` now).
    pub fn base_changed(&mut self, fingerprint: Option<SystemTime>) -> bool {
        let changed = self.base.is_some_and(|b| b != fingerprint);
        self.base = Some(fingerprint);
        changed
    }

    fn unblock(&mut self) {
        if self.blocked.take().is_some() && self.pending {
            let earliest = self.last.map_or(Instant::now(), |t| t + self.min_interval);
            self.at = Some(earliest);
        }
    }

    /// The reload worked; `binds` are the addresses of the configuration now loaded.
    pub fn succeeded(&mut self, binds: BTreeSet<String>) {
        self.last = Some(Instant::now());
        self.pending = false;
        self.at = None;
        self.retry.reset();
        self.refused_retry.reset();
        self.blocked = None;
        if self.unreachable > 0 {
            tracing::info!(
                attempts = self.unreachable,
                "HAProxy is back; it runs the current files"
            );
            self.unreachable = 0;
        }
        self.loaded_binds = Some(binds);
    }

    /// The reload failed; schedules the retry its kind calls for. `binds` are the addresses of
    /// the configuration HAProxy was asked to load.
    pub fn failed(&mut self, e: ReloadError, binds: &BTreeSet<String>) {
        let now = Instant::now();
        self.last = Some(now);
        match e {
            ReloadError::Refused(msg) => {
                let delay = self.refused_retry.next_delay();
                let cause = self
                    .loaded_binds
                    .as_ref()
                    .and_then(|loaded| diagnose::busy_binds(binds, loaded))
                    .unwrap_or_else(|| {
                        "HAProxy 2.6 reports the cause only on its master's stderr (the journal \
                         under systemd)"
                            .to_string()
                    });
                tracing::error!(
                    error = %msg,
                    cause = %cause,
                    reload_for = %self.why,
                    retry_in = ?delay,
                    "HAProxy refused the reload; server changes keep going through the runtime API, and this reload is retried when a template, the base configuration or a change needing a reload arrives"
                );
                self.blocked = Some(Blocked {
                    until: now + delay,
                    why: self.why.clone(),
                });
                self.at = Some(now + delay);
            }
            ReloadError::Unreachable(msg) => {
                let delay = self.retry.next_delay().min(UNREACHABLE_RETRY_MAX);
                self.unreachable += 1;
                if self.unreachable == 1 {
                    tracing::error!(error = %msg, retry_every = ?delay, "HAProxy is not running; the files keep following etcd, and HAProxy is reloaded as soon as it is back");
                } else {
                    tracing::debug!(error = %msg, attempts = self.unreachable, "HAProxy still not running");
                }
                self.at = Some(now + delay);
            }
            ReloadError::Failed(msg) => {
                // Each retry is a real reload for HAProxy: never faster than the interval.
                let delay = self.retry.next_delay().max(self.min_interval);
                tracing::error!(error = %msg, retry_in = ?delay, "HAProxy reload failed; will retry");
                self.at = Some(now + delay);
            }
        }
    }

    /// Whether a refused reload is holding back until its backoff ends.
    #[cfg(test)]
    pub fn blocked(&self) -> bool {
        self.blocked
            .as_ref()
            .is_some_and(|b| b.until > Instant::now())
    }
}

impl<V: Validate, R: Reload> Pipeline<V, R> {
    /// Reloads HAProxy; on failure schedules a retry as the kind of failure calls for.
    pub async fn reload(&mut self) -> bool {
        let started = Instant::now();
        // The files HAProxy is about to load. With a runtime API they are parsed: the server
        // state is saved against them, and they are what HAProxy runs afterwards.
        let loading: Vec<Option<Arc<Config>>> = match &self.runtime {
            Some(_) => (0..self.disk.len())
                .map(|i| {
                    let text = self.disk[i].clone()?;
                    Some(self.parse_output(i, &text))
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
            .map(Path::to_path_buf);
        let binds = diagnose::binds_of(base.as_deref(), &self.disk);
        let Some(reloader) = &self.reloader else {
            return true;
        };
        let result = reloader.reload().await;
        let took = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ReloadError::Refused(_)) => "refused",
            Err(ReloadError::Unreachable(_)) => "unreachable",
            Err(_) => "failed",
        };
        self.observe(|m| {
            m.reload_seconds.observe(took.as_secs_f64());
            m.reloads
                .get_or_create(&crate::watcher::metrics::OutcomeLabels {
                    outcome: outcome.to_string(),
                })
                .inc();
        });
        match result {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing() -> Timing {
        Timing {
            min_reload_interval: Duration::from_millis(200),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            ..Timing::default()
        }
    }

    fn delay(s: &Schedule) -> Duration {
        s.due().expect("a reload is due") - s.last().expect("an attempt")
    }

    #[test]
    fn failed_reloads_back_off_from_retry_min_doubling_to_retry_max() {
        let mut s = Schedule::new(&timing());
        s.want("a change");
        let mut seen = Vec::new();
        for _ in 0..8 {
            s.failed(ReloadError::Failed("no worker".into()), &BTreeSet::new());
            seen.push(delay(&s).as_millis());
        }
        assert_eq!(
            seen,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000],
            "500 ms doubling to 30 s"
        );
        s.succeeded(BTreeSet::new());
        assert!(!s.pending() && s.due().is_none());
        s.want("again");
        s.failed(ReloadError::Failed("no worker".into()), &BTreeSet::new());
        assert_eq!(delay(&s).as_millis(), 500, "a success resets the backoff");
    }

    #[test]
    fn a_stopped_haproxy_is_tried_again_at_least_every_second() {
        let mut s = Schedule::new(&timing());
        s.want("a change");
        let seen: Vec<u128> = (0..4)
            .map(|_| {
                s.failed(ReloadError::Unreachable("gone".into()), &BTreeSet::new());
                delay(&s).as_millis()
            })
            .collect();
        assert_eq!(seen, [500, 1000, 1000, 1000]);
    }

    #[test]
    fn a_refused_reload_waits_for_a_new_reason_or_an_operator_change() {
        let mut s = Schedule::new(&timing());
        s.want("backend b: options changed");
        s.failed(ReloadError::Refused("busy".into()), &BTreeSet::new());
        assert_eq!(delay(&s), REFUSED_RETRY_MIN);
        assert!(s.blocked());
        // The same reason again (a server change elsewhere went out at runtime): still held.
        s.want("backend b: options changed");
        assert!(s.blocked());
        assert_eq!(delay(&s), REFUSED_RETRY_MIN);
        // Another reason: tried once the reload interval allows.
        s.want("backend c: section added");
        assert!(!s.blocked());
        assert_eq!(delay(&s), Duration::from_millis(200));
        s.failed(ReloadError::Refused("busy".into()), &BTreeSet::new());
        assert_eq!(delay(&s), REFUSED_RETRY_MIN * 2, "the backoff doubles");
        s.operator_changed("a template changed");
        assert!(!s.blocked());
        assert_eq!(delay(&s), Duration::from_millis(200));
    }

    #[test]
    fn the_base_fingerprint_change_is_seen_once() {
        let mut s = Schedule::new(&timing());
        let t = SystemTime::UNIX_EPOCH;
        assert!(!s.base_changed(Some(t)), "the first look is no change");
        assert!(!s.base_changed(Some(t)));
        assert!(s.base_changed(Some(t + Duration::from_secs(1))));
        assert!(!s.base_changed(Some(t + Duration::from_secs(1))));
    }
}

//! What the watcher tells Prometheus and its health endpoints (`--metrics-addr`): the change
//! pipeline's counters and durations, the etcd source's state, and readiness.
//!
//! Label values come from small fixed sets (a path, an outcome, a reason) or from the services:
//! the prefixes the operator configured, and the services of the roots, whose names pass the
//! rules of a prefix segment and whose series is removed with the service (after
//! `--service-grace`) — never from a raw etcd key, so the series stay bounded by the services
//! that exist.

use crate::core::serve::Status;
use crate::watcher::source::SourceStatus;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a change may wait before the watcher counts as not ready.
pub const READY_MAX_PENDING: Duration = Duration::from_secs(30);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApplyLabels {
    /// `runtime`, `reload` or `none`.
    pub path: String,
    /// `written`, `unchanged`, `rejected` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or a failure kind (`refused`, `unreachable`, `failed`).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// `key` (not an endpoint key of the layout) or `value` (not a valid value).
    pub reason: String,
}

/// Every metric of the watcher, and what readiness is made of.
pub struct WatcherMetrics {
    registry: Registry,
    pub applies: Family<ApplyLabels, Counter>,
    pub apply_seconds: Histogram,
    pub reloads: Family<OutcomeLabels, Counter>,
    pub reload_seconds: Histogram,
    pub validation_failures: Counter,
    pub runtime_fallbacks: Counter,
    pub template_errors: Counter,
    pub revision_seen: Gauge,
    pub revision_applied: Gauge,
    pub last_success: Gauge<f64, AtomicU64>,
    pub endpoints: Family<ServiceLabels, Gauge>,
    pub keys_skipped: Family<ReasonLabels, Gauge>,
    pending_age: Gauge<f64, AtomicU64>,
    /// HAProxy workers from before the last reload, still finishing their connections.
    pub old_workers: Gauge,
    etcd_connected: Gauge,
    etcd_reconnects: Counter<u64, AtomicU64>,
    /// When the oldest change not yet applied arrived (ms since the epoch; 0: none).
    pending_since_ms: AtomicI64,
    first_apply_done: AtomicBool,
    last_apply_failed: AtomicBool,
    source: Arc<SourceStatus>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl WatcherMetrics {
    /// Every metric registered, reading the etcd source's state from `source`.
    pub fn new(source: Arc<SourceStatus>) -> Self {
        let mut registry = Registry::with_prefix("dockreg_watcher");
        let m = Self {
            applies: Family::default(),
            apply_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            reloads: Family::default(),
            reload_seconds: Histogram::new(exponential_buckets(0.01, 2.0, 12)),
            validation_failures: Counter::default(),
            runtime_fallbacks: Counter::default(),
            template_errors: Counter::default(),
            revision_seen: Gauge::default(),
            revision_applied: Gauge::default(),
            last_success: Gauge::default(),
            endpoints: Family::default(),
            keys_skipped: Family::default(),
            pending_age: Gauge::default(),
            old_workers: Gauge::default(),
            etcd_connected: Gauge::default(),
            etcd_reconnects: Counter::default(),
            pending_since_ms: AtomicI64::new(0),
            first_apply_done: AtomicBool::new(false),
            last_apply_failed: AtomicBool::new(false),
            source,
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register("applies", "Applies by path (runtime, reload, none) and outcome (written, unchanged, rejected, failed)", m.applies.clone());
        r.register("apply_duration_seconds", "Time from the start of an apply until its runtime commands are confirmed (render, stage, route, runtime API)", m.apply_seconds.clone());
        r.register(
            "reloads",
            "HAProxy reloads by outcome (ok, refused, unreachable, failed)",
            m.reloads.clone(),
        );
        r.register(
            "reload_duration_seconds",
            "Time a reload took, from the request until HAProxy's new worker runs",
            m.reload_seconds.clone(),
        );
        r.register(
            "validation_failures",
            "Candidates haproxy -c refused (the live files kept serving)",
            m.validation_failures.clone(),
        );
        r.register(
            "runtime_fallbacks",
            "Runtime updates that failed or read back wrong and fell back to a reload",
            m.runtime_fallbacks.clone(),
        );
        r.register(
            "template_errors",
            "Renders that failed (the output kept its live file) and template edits refused",
            m.template_errors.clone(),
        );
        r.register(
            "etcd_revision_seen",
            "The latest etcd revision the watcher received",
            m.revision_seen.clone(),
        );
        r.register(
            "etcd_revision_applied",
            "The etcd revision the last successful apply reflects",
            m.revision_applied.clone(),
        );
        r.register("last_success_timestamp_seconds", "When an apply last succeeded (written or already up to date), in seconds since the epoch", m.last_success.clone());
        r.register(
            "endpoints",
            "Valid endpoints per service",
            m.endpoints.clone(),
        );
        r.register(
            "keys_skipped",
            "etcd keys skipped under the service prefixes and roots, by reason (key, value)",
            m.keys_skipped.clone(),
        );
        r.register(
            "oldest_pending_change_age_seconds",
            "How long the oldest change not yet applied has waited (0: none)",
            m.pending_age.clone(),
        );
        r.register(
            "haproxy_old_workers",
            "HAProxy workers from before a reload still finishing their connections (from the master's show proc, every 5 s)",
            m.old_workers.clone(),
        );
        r.register(
            "etcd_connected",
            "1 while every prefix and root is listed and watched, else 0",
            m.etcd_connected.clone(),
        );
        r.register(
            "etcd_reconnects",
            "Times the etcd source connected, listed or watched again",
            m.etcd_reconnects.clone(),
        );
        Self { registry, ..m }
    }

    /// Changes arrived and wait to be applied.
    pub fn changes_pending(&self) {
        let _ = self.pending_since_ms.compare_exchange(
            0,
            now_ms(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// An apply ended; `ok`: its outputs are written (or were already), `revision` the etcd
    /// revision it reflects.
    pub fn applied(&self, ok: bool, revision: i64) {
        self.pending_since_ms.store(0, Ordering::Relaxed);
        self.first_apply_done.store(true, Ordering::Relaxed);
        self.last_apply_failed.store(!ok, Ordering::Relaxed);
        if ok {
            self.revision_applied.set(revision);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.last_success.set(now);
        }
    }

    /// Counts one apply that took `path` and ended with `outcome`.
    pub fn count_apply(&self, path: &str, outcome: &str) {
        self.applies
            .get_or_create(&ApplyLabels {
                path: path.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn pending_for(&self) -> Duration {
        match self.pending_since_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(u64::try_from(now_ms() - since).unwrap_or(0)),
        }
    }
}

impl Status for WatcherMetrics {
    fn metrics(&self) -> String {
        self.pending_age.set(self.pending_for().as_secs_f64());
        self.etcd_connected.set(i64::from(self.source.connected()));
        let reconnects = self.source.reconnects();
        let counted = self.etcd_reconnects.get();
        if reconnects > counted {
            self.etcd_reconnects.inc_by(reconnects - counted);
        }
        crate::core::serve::encode(&self.registry)
    }

    fn ready(&self) -> Result<(), String> {
        if !self.source.connected() {
            return Err("the etcd watch is not connected".into());
        }
        if !self.first_apply_done.load(Ordering::Relaxed) {
            return Err("the first apply has not run yet".into());
        }
        if self.last_apply_failed.load(Ordering::Relaxed) {
            return Err(
                "the last apply failed (see the log); the live configuration keeps serving".into(),
            );
        }
        let waited = self.pending_for();
        if waited > READY_MAX_PENDING {
            return Err(format!("a change has waited {waited:?} to be applied"));
        }
        Ok(())
    }
}

/// Every 5 s, how many HAProxy workers from before a reload are still finishing their
/// connections (`show proc` on the master socket), for the metrics. HAProxy away is no error
/// here: the reloads report it.
pub(crate) async fn watch_old_workers(
    master: crate::haproxy::MasterSocket,
    metrics: Arc<WatcherMetrics>,
    token: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);
    loop {
        match master.show_proc().await {
            Ok(procs) => {
                let current = procs.current_workers().count();
                let old = procs.workers.len().saturating_sub(current);
                metrics
                    .old_workers
                    .set(i64::try_from(old).unwrap_or(i64::MAX));
            }
            Err(e) => tracing::debug!(error = %e, "show proc for the metrics failed"),
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(()),
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions_and_readiness_says_why() {
        let source = Arc::new(SourceStatus::default());
        let m = WatcherMetrics::new(source.clone());
        assert_eq!(m.ready(), Err("the etcd watch is not connected".into()));
        source.listing(false);
        source.listed();
        assert!(m.ready().unwrap_err().contains("first apply"));
        m.changes_pending();
        m.count_apply("runtime", "written");
        m.applied(true, 42);
        assert_eq!(m.ready(), Ok(()));
        m.applied(false, 43);
        assert!(m.ready().unwrap_err().contains("last apply failed"));
        let text = m.metrics();
        for line in [
            r#"dockreg_watcher_applies_total{path="runtime",outcome="written"} 1"#,
            "dockreg_watcher_etcd_revision_applied 42",
            "dockreg_watcher_etcd_connected 1",
            "dockreg_watcher_oldest_pending_change_age_seconds 0.0",
            "# TYPE dockreg_watcher_apply_duration_seconds histogram",
            "dockreg_watcher_validation_failures_total 0",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} in:\n{text}");
        }
    }
}

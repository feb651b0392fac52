//! What is waiting to be applied, and when it is due.
//!
//! The rule: **an etcd change is due at once** — the pipeline applies it as soon as no apply
//! is running, and whatever arrives while one runs is applied together right after it (see
//! `run.rs`). **A template edit is due once its file has settled**: no further event for
//! `settle`, but never later than `settle_max` after the first one, because the first event of
//! a rewrite may be its truncation. Reloads have their own schedule (`reload.rs`). Pure logic
//! over tokio's `Instant`s, which tests can pause.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;

/// Changes not yet applied.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    settle: Duration,
    settle_max: Duration,
    /// Since when etcd changes have been waiting, if any are.
    etcd: Option<Instant>,
    /// Template files touched on disk and not yet re-read: when first and last touched.
    templates: BTreeMap<PathBuf, (Instant, Instant)>,
}

impl Pending {
    pub(super) fn new(settle: Duration, settle_max: Duration) -> Self {
        Self {
            settle,
            settle_max: settle_max.max(settle),
            etcd: None,
            templates: BTreeMap::new(),
        }
    }

    /// An etcd change arrived at `now`.
    pub(super) fn etcd_changed(&mut self, now: Instant) {
        self.etcd.get_or_insert(now);
    }

    /// A template file was touched at `now`.
    pub(super) fn template_touched(&mut self, path: PathBuf, now: Instant) {
        self.templates
            .entry(path)
            .and_modify(|(_, last)| *last = now)
            .or_insert((now, now));
    }

    fn settled_at(&self, (first, last): (Instant, Instant)) -> Instant {
        (last + self.settle).min(first + self.settle_max)
    }

    /// When the next pending change is due, or `None` when nothing is pending.
    pub(super) fn due(&self) -> Option<Instant> {
        let templates = self.templates.values().map(|t| self.settled_at(*t));
        self.etcd.into_iter().chain(templates).min()
    }

    /// Takes what is due at `now`: the etcd changes, and the templates that have settled (the
    /// others stay pending). Returns the templates to re-read.
    pub(super) fn take_due(&mut self, now: Instant) -> Vec<PathBuf> {
        self.etcd = None;
        let settled: Vec<PathBuf> = self
            .templates
            .iter()
            .filter(|(_, t)| self.settled_at(**t) <= now)
            .map(|(p, _)| p.clone())
            .collect();
        for p in &settled {
            self.templates.remove(p);
        }
        settled
    }

    /// Takes everything pending, settled or not (an apply asked for explicitly).
    pub(super) fn take_all(&mut self) -> Vec<PathBuf> {
        self.etcd = None;
        std::mem::take(&mut self.templates).into_keys().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTLE: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn an_etcd_change_is_due_at_once_even_in_a_stream() {
        let t0 = Instant::now();
        let mut p = Pending::new(SETTLE, MAX);
        assert_eq!(p.due(), None);
        for i in 0..20 {
            let now = t0 + ms(10 * i);
            p.etcd_changed(now);
            assert_eq!(p.due(), Some(now), "change {i} waits for nothing");
            assert!(p.take_due(now).is_empty());
            assert_eq!(p.due(), None);
        }
    }

    #[test]
    fn changes_that_wait_keep_the_time_of_the_oldest() {
        let t0 = Instant::now();
        let mut p = Pending::new(SETTLE, MAX);
        p.etcd_changed(t0);
        p.etcd_changed(t0 + ms(5));
        assert_eq!(p.due(), Some(t0));
    }

    #[test]
    fn a_template_edit_settles_and_a_burst_of_edits_is_bounded() {
        let t0 = Instant::now();
        let mut p = Pending::new(SETTLE, MAX);
        let tpl = PathBuf::from("t.tera");
        p.template_touched(tpl.clone(), t0);
        assert_eq!(p.due(), Some(t0 + SETTLE));
        assert!(p.take_due(t0 + ms(50)).is_empty(), "not settled yet");
        // An editor writing every 50 ms: held until it stops, at most MAX after the first.
        for i in 1..40 {
            p.template_touched(tpl.clone(), t0 + ms(50 * i));
        }
        assert_eq!(p.due(), Some(t0 + MAX));
        assert_eq!(p.take_due(t0 + MAX), [tpl]);
        assert_eq!(p.due(), None);
    }

    #[test]
    fn an_etcd_change_does_not_wait_for_a_template_to_settle() {
        let t0 = Instant::now();
        let mut p = Pending::new(SETTLE, MAX);
        p.template_touched("t.tera".into(), t0);
        p.etcd_changed(t0 + ms(10));
        assert_eq!(p.due(), Some(t0 + ms(10)));
        assert!(
            p.take_due(t0 + ms(10)).is_empty(),
            "the template still settles"
        );
        assert_eq!(p.due(), Some(t0 + SETTLE));
        assert_eq!(p.take_all(), [PathBuf::from("t.tera")]);
    }
}

//! The pipeline's loop: inputs in, applies as soon as they are due, each apply's commit
//! running beside the next applies, reloads when the commits have drained; and a shutdown that
//! finishes the step in progress.

use super::{Input, Pipeline, Stats};
use crate::haproxy::admin::BoxFuture;
use crate::haproxy::{Reload, Validate};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

impl<V: Validate, R: Reload> Pipeline<V, R> {
    /// Runs until `rx` closes or `shutdown` resolves. At shutdown the step in progress (an
    /// apply, a reload) and the commits running and waiting are finished rather than cut
    /// short, so the files hold what HAProxy routes; they and the runtime path's drains get
    /// [`Timing::shutdown_grace`](super::Timing::shutdown_grace) together.
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::Receiver<Input>,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Stats {
        tokio::pin!(shutdown);
        let grace = self.timing.shutdown_grace;
        let mut checking: Option<BoxFuture<'static, super::commit::Outcome>> = None;
        let deadline = loop {
            if checking.is_none() {
                checking = self.start_commit();
            }
            let due = self.next_due();
            if due.is_some_and(|d| d <= Instant::now()) {
                // Due now: no timer (tokio's have millisecond granularity). A shutdown waits
                // for the step in progress, for at most the grace period.
                let stopping = {
                    let step = self.step(Instant::now());
                    tokio::pin!(step);
                    tokio::select! {
                        biased;
                        _ = &mut shutdown => {
                            let deadline = Instant::now() + grace;
                            if tokio::time::timeout_at(deadline, &mut step).await.is_err() {
                                tracing::warn!(?grace, "the step in progress did not finish within the shutdown grace period; stopping anyway");
                            }
                            Some(deadline)
                        }
                        _ = &mut step => None,
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
                outcome = poll_opt(&mut checking) => {
                    checking = None;
                    self.commit_done(outcome);
                }
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
        let commits = self.finish_commits(checking);
        if tokio::time::timeout_at(deadline, commits).await.is_err() {
            tracing::warn!(
                ?grace,
                "the configuration check in progress did not finish within the shutdown grace period; stopping anyway"
            );
        }
        self.finish_drains(deadline.saturating_duration_since(Instant::now()))
            .await;
        self.stats
    }

    /// Does what is due at `now`: removes the root services whose grace ended, applies the
    /// pending changes (queueing the commit), or reloads.
    async fn step(&mut self, now: Instant) {
        self.expire_services(now);
        if self.apply_due().is_some_and(|d| d <= now) {
            self.retry.started();
            let templates = self.pending.take_due(now);
            if let super::apply::Prepared::Commit(commit) = self.prepare(templates).await {
                self.enqueue(commit);
            }
        }
        if self.reload_due().is_some_and(|t| t <= Instant::now()) {
            self.reload().await;
        }
    }

    /// At shutdown: the commit running, then the one waiting, so the files hold what the
    /// runtime API already applied.
    async fn finish_commits(
        &mut self,
        checking: Option<BoxFuture<'static, super::commit::Outcome>>,
    ) {
        let mut checking = checking;
        loop {
            let Some(check) = checking.take().or_else(|| self.start_commit()) else {
                return;
            };
            let outcome = check.await;
            self.commit_done(outcome);
        }
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

/// The outcome of `fut`, or never when there is none.
async fn poll_opt<T>(fut: &mut Option<BoxFuture<'static, T>>) -> T {
    match fut {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

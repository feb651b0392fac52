//! Supervised workers: named tasks in one [`JoinSet`] under one [`CancellationToken`].
//!
//! A worker runs until the token is cancelled and then returns `Ok(())`. A worker that ends
//! on its own before that, returns an error or panics has failed for good: the token is
//! cancelled, the other workers stop, and [`Workers::supervise`] returns that first failure
//! (the process then exits 1 with it). The shutdown future (SIGTERM, SIGINT) cancels the token
//! too, for a clean stop. Workers get a grace period to stop once the token is cancelled;
//! whatever still runs after it is aborted.

use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tokio::task::{Id, JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

/// Extra time, beyond the workers' own grace period, before the supervisor aborts a worker
/// that has not stopped.
const ABORT_MARGIN: Duration = Duration::from_secs(1);

/// A set of named workers sharing one cancellation token.
pub(crate) struct Workers {
    set: JoinSet<Result<()>>,
    names: HashMap<Id, &'static str>,
    token: CancellationToken,
    grace: Duration,
}

impl Workers {
    /// Workers stopped by `token`; each gets `grace` to stop once it is cancelled.
    pub(crate) fn new(token: CancellationToken, grace: Duration) -> Self {
        Self {
            set: JoinSet::new(),
            names: HashMap::new(),
            token,
            grace,
        }
    }

    /// Starts `work` as the worker `name`.
    pub(crate) fn spawn(
        &mut self,
        name: &'static str,
        work: impl Future<Output = Result<()>> + Send + 'static,
    ) {
        let handle = self.set.spawn(work);
        self.names.insert(handle.id(), name);
    }

    /// Runs until every worker has ended. `shutdown` resolving cancels them all: a clean stop,
    /// `Ok(())`. A worker that ends or fails before that cancels the others, and its failure
    /// is returned once they have stopped.
    pub(crate) async fn supervise(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        tokio::pin!(shutdown);
        let mut failure: Option<anyhow::Error> = None;
        let mut abort_at: Option<tokio::time::Instant> = None;
        loop {
            if self.token.is_cancelled() && abort_at.is_none() {
                abort_at = Some(tokio::time::Instant::now() + self.grace + ABORT_MARGIN);
            }
            tokio::select! {
                _ = &mut shutdown, if !self.token.is_cancelled() => self.token.cancel(),
                _ = sleep_until_opt(abort_at), if abort_at.is_some() && !self.set.is_empty() => {
                    let left: Vec<_> = self.names.values().copied().collect();
                    tracing::warn!(workers = ?left, grace = ?self.grace, "workers did not stop in time; aborting them");
                    self.set.abort_all();
                    abort_at = None;
                }
                joined = self.set.join_next_with_id() => {
                    let Some(joined) = joined else { break };
                    let (name, outcome) = match joined {
                        Ok((id, outcome)) => (self.names.remove(&id), outcome),
                        Err(e) => (self.names.remove(&e.id()), Err(join_error(e))),
                    };
                    let name = name.unwrap_or("a worker");
                    match outcome {
                        Ok(()) if self.token.is_cancelled() => {
                            tracing::debug!(worker = name, "stopped");
                        }
                        outcome => {
                            let e = match outcome {
                                Ok(()) => anyhow!("{name} ended on its own"),
                                Err(e) => e.context(format!("{name} failed")),
                            };
                            if failure.is_none() {
                                if !self.token.is_cancelled() {
                                    tracing::info!(worker = name, "a worker stopped for good; stopping the others");
                                    self.token.cancel();
                                }
                                failure = Some(e);
                            } else {
                                tracing::warn!(error = %format!("{e:#}"), "another worker failed while stopping");
                            }
                        }
                    }
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// A worker that panicked or was aborted.
fn join_error(e: JoinError) -> anyhow::Error {
    if e.is_cancelled() {
        return anyhow!("aborted");
    }
    let panic = e.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    anyhow!("panicked: {message}")
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_shutdown_stops_every_worker_cleanly() {
        let token = CancellationToken::new();
        let mut w = Workers::new(token.clone(), Duration::from_secs(1));
        for name in ["a", "b"] {
            let t = token.clone();
            w.spawn(name, async move {
                t.cancelled().await;
                Ok(())
            });
        }
        w.supervise(async {}).await.expect("a clean stop");
        assert!(token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_worker_stops_the_others_and_is_returned() {
        let token = CancellationToken::new();
        let mut w = Workers::new(token.clone(), Duration::from_secs(1));
        let t = token.clone();
        w.spawn("waits", async move {
            t.cancelled().await;
            Ok(())
        });
        w.spawn("fails", async { Err(anyhow!("boom")) });
        let e = w.supervise(std::future::pending()).await.unwrap_err();
        assert_eq!(format!("{e:#}"), "fails failed: boom");
        assert!(token.is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_ends_or_panics_is_a_failure() {
        let token = CancellationToken::new();
        let mut w = Workers::new(token.clone(), Duration::from_secs(1));
        w.spawn("quits", async { Ok(()) });
        let e = w.supervise(std::future::pending()).await.unwrap_err();
        assert_eq!(e.to_string(), "quits ended on its own");

        let mut w = Workers::new(CancellationToken::new(), Duration::from_secs(1));
        w.spawn("panics", async { panic!("oops") });
        let e = w.supervise(std::future::pending()).await.unwrap_err();
        assert_eq!(format!("{e:#}"), "panics failed: panicked: oops");
    }

    #[tokio::test(start_paused = true)]
    async fn a_worker_that_ignores_the_token_is_aborted_after_the_grace_period() {
        let token = CancellationToken::new();
        let mut w = Workers::new(token.clone(), Duration::from_secs(2));
        w.spawn("stuck", std::future::pending());
        let started = tokio::time::Instant::now();
        let e = w.supervise(async {}).await.unwrap_err();
        assert_eq!(format!("{e:#}"), "stuck failed: aborted");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }
}

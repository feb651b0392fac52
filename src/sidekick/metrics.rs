//! What the sidekick tells Prometheus and its health endpoints (`--metrics-addr`), and the
//! `dockreg healthcheck` client that asks them (a Docker `HEALTHCHECK` for an image with
//! nothing but the binaries: `HEALTHCHECK CMD ["/dockreg", "healthcheck"]`).

use crate::core::serve::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// `ok` or `failed`.
    result: String,
}

/// Every metric of the sidekick; readiness is "the app is healthy and its key registered".
pub(crate) struct SidekickMetrics {
    registry: Registry,
    checks: Family<ResultLabels, Counter>,
    check_seconds: Histogram,
    pub(crate) healthy: Gauge,
    pub(crate) registered: Gauge,
    pub(crate) lease_grants: Counter,
    pub(crate) etcd_retries: Counter,
}

impl SidekickMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("dockreg_sidekick");
        let m = Self {
            checks: Family::default(),
            check_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            healthy: Gauge::default(),
            registered: Gauge::default(),
            lease_grants: Counter::default(),
            etcd_retries: Counter::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "checks",
            "Health checks of the app, by result (ok, failed)",
            m.checks.clone(),
        );
        r.register(
            "check_duration_seconds",
            "How long a health check of the app took",
            m.check_seconds.clone(),
        );
        r.register(
            "app_healthy",
            "1 while the app passes its checks (after rise/fall), else 0",
            m.healthy.clone(),
        );
        r.register(
            "registered",
            "1 while the app's key is in etcd, else 0",
            m.registered.clone(),
        );
        r.register(
            "lease_grants",
            "Leases granted (more than one: the lease was lost and granted again)",
            m.lease_grants.clone(),
        );
        r.register(
            "etcd_retries",
            "etcd updates that failed and were retried (etcd unreachable or slow)",
            m.etcd_retries.clone(),
        );
        Self { registry, ..m }
    }

    /// One health check ended (`ok`) after `took`.
    pub(crate) fn check(&self, ok: bool, took: Duration) {
        let result = if ok { "ok" } else { "failed" };
        self.checks
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
        self.check_seconds.observe(took.as_secs_f64());
    }
}

impl Status for SidekickMetrics {
    fn metrics(&self) -> String {
        crate::core::serve::encode(&self.registry)
    }

    fn ready(&self) -> Result<(), String> {
        match (self.healthy.get(), self.registered.get()) {
            (1, 1) => Ok(()),
            (1, _) => Err("the app is healthy but its key is not registered (etcd?)".into()),
            _ => Err("the app does not pass its health check".into()),
        }
    }
}

/// `dockreg healthcheck`: asks the sidekick's `/readyz` at `addr`; `Ok` with its answer when
/// ready, `Err` with why not (not ready, or nothing answering).
pub async fn healthcheck(addr: SocketAddr, timeout: Duration) -> Result<String, String> {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
            format!("{addr}: {e} (is the sidekick running with --metrics-addr {addr}?)")
        })?;
        let req = format!("GET /readyz HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .map_err(|e| format!("{addr}: {e}"))?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or_default();
        match status {
            "200" => Ok(body.trim().to_string()),
            _ => Err(body.trim().to_string()),
        }
    };
    tokio::time::timeout(timeout, ask)
        .await
        .unwrap_or_else(|_| Err(format!("{addr}: no answer within {timeout:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_healthy_and_registered() {
        let m = SidekickMetrics::new();
        assert!(m.ready().unwrap_err().contains("health check"));
        m.healthy.set(1);
        assert!(m.ready().unwrap_err().contains("not registered"));
        m.registered.set(1);
        assert_eq!(m.ready(), Ok(()));
        m.check(true, Duration::from_millis(2));
        let text = m.metrics();
        assert!(
            text.contains(r#"dockreg_sidekick_checks_total{result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains("dockreg_sidekick_registered 1"), "{text}");
    }
}

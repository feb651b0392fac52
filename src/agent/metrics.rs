//! What the agent tells Prometheus and its health endpoints (`--metrics-addr`): the
//! containers and endpoints it tracks, its checks, the Docker connection, etcd retries and
//! resync durations. Ready means: the engine answers, every container has been looked at,
//! and etcd holds what the agent wants.

use crate::core::serve::Status;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ResultLabels {
    /// `ok` or `failed`.
    result: String,
}

/// Every metric of the agent.
pub(crate) struct AgentMetrics {
    registry: Registry,
    checks: Family<ResultLabels, Counter>,
    pub(crate) containers: Gauge,
    pub(crate) endpoints: Gauge,
    pub(crate) registered: Gauge,
    pub(crate) refused: Gauge,
    pub(crate) docker_connected: Gauge,
    pub(crate) docker_reconnects: Counter,
    pub(crate) etcd_retries: Counter,
    /// 1 once every container has been listed and inspected (after each reconnect).
    pub(crate) synced: Gauge,
    /// 1 while etcd updates are pending after a failure.
    pub(crate) behind: Gauge,
    pub(crate) resync_seconds: Histogram,
}

impl AgentMetrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("dockreg_agent");
        let m = Self {
            checks: Family::default(),
            containers: Gauge::default(),
            endpoints: Gauge::default(),
            registered: Gauge::default(),
            refused: Gauge::default(),
            docker_connected: Gauge::default(),
            docker_reconnects: Counter::default(),
            etcd_retries: Counter::default(),
            synced: Gauge::default(),
            behind: Gauge::default(),
            resync_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 14)),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "checks",
            "Health checks of containers, by result (ok, failed)",
            m.checks.clone(),
        );
        r.register(
            "containers",
            "Containers with at least one endpoint to register",
            m.containers.clone(),
        );
        r.register(
            "endpoints",
            "Endpoints of running, opted-in containers (healthy or not)",
            m.endpoints.clone(),
        );
        r.register(
            "registered",
            "Keys held in etcd under the agent's lease",
            m.registered.clone(),
        );
        r.register(
            "refused_containers",
            "Containers whose labels were refused (see the warnings)",
            m.refused.clone(),
        );
        r.register(
            "docker_connected",
            "1 while the Docker engine's event stream is open",
            m.docker_connected.clone(),
        );
        r.register(
            "docker_reconnects",
            "Connections to the Docker engine after the first",
            m.docker_reconnects.clone(),
        );
        r.register(
            "etcd_retries",
            "etcd updates that failed and were retried",
            m.etcd_retries.clone(),
        );
        r.register(
            "resync_duration_seconds",
            "How long a full resync took (list, inspect every container, compare the lease's keys)",
            m.resync_seconds.clone(),
        );
        Self { registry, ..m }
    }

    /// One check ended.
    pub(crate) fn check(&self, ok: bool) {
        let result = if ok { "ok" } else { "failed" };
        self.checks
            .get_or_create(&ResultLabels {
                result: result.to_string(),
            })
            .inc();
    }
}

impl Status for AgentMetrics {
    fn metrics(&self) -> String {
        crate::core::serve::encode(&self.registry)
    }

    fn ready(&self) -> Result<(), String> {
        if self.docker_connected.get() != 1 {
            return Err("the Docker engine does not answer".into());
        }
        if self.synced.get() != 1 {
            return Err("the containers have not all been inspected yet".into());
        }
        if self.behind.get() == 1 {
            return Err("etcd updates are failing (etcd unreachable?)".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_connected_synced_and_in_step() {
        let m = AgentMetrics::new();
        assert!(m.ready().unwrap_err().contains("Docker"));
        m.docker_connected.set(1);
        assert!(m.ready().unwrap_err().contains("inspected"));
        m.synced.set(1);
        assert_eq!(m.ready(), Ok(()));
        m.behind.set(1);
        assert!(m.ready().unwrap_err().contains("etcd"));
        m.check(true);
        let text = m.metrics();
        assert!(
            text.contains(r#"dockreg_agent_checks_total{result="ok"} 1"#),
            "{text}"
        );
    }
}

//! The agent's Docker Engine API client: where the engine is (`--docker`: a Unix socket path,
//! `unix://…`, or `tcp://host:port` for a socket proxy that allows only reads), the running
//! containers, one container's [`Facts`], and the stream of container events.
//!
//! Only read requests are made (`GET /version`, `/containers/json`, `/containers/<id>/json`,
//! `/events`), so a socket proxy that refuses everything else serves the agent.

use super::labels::{DockerHealth, Facts};
use crate::sidekick::docker::engine::{map_error, supported_api_version};
use crate::sidekick::docker::{check_socket, DockerError};
use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, EventMessage, HealthStatusEnum};
use bollard::query_parameters::{EventsOptions, ListContainersOptions};
use bollard::Docker;
use std::collections::HashMap;
use std::path::PathBuf;
use tokio_stream::Stream;

/// Timeout of every request but the event stream, in seconds.
const TIMEOUT_SECS: u64 = 5;

/// The container events that can change what is registered.
pub(crate) const EVENTS: [&str; 8] = [
    "start",
    "die",
    "stop",
    "kill",
    "pause",
    "unpause",
    "health_status",
    "destroy",
];

/// Where the Docker engine listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DockerAddr {
    Unix(PathBuf),
    /// `host:port` of a plain-HTTP endpoint (a socket proxy on the host).
    Tcp(String),
}

impl DockerAddr {
    /// Parses `--docker` (or `DOCKER_HOST`): `/var/run/docker.sock`, `unix:///path`,
    /// `tcp://127.0.0.1:2375` or `http://…`.
    pub(crate) fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        if let Some(path) = raw.strip_prefix("unix://") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if let Some(rest) = raw
            .strip_prefix("tcp://")
            .or_else(|| raw.strip_prefix("http://"))
        {
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() || rest.contains('/') {
                return Err(format!("--docker {raw:?}: expected tcp://host:port"));
            }
            return Ok(Self::Tcp(rest.to_string()));
        }
        if raw.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(raw)));
        }
        Err(format!(
            "--docker {raw:?}: expected a socket path, unix:///path or tcp://host:port \
             (https is not supported: put a local socket proxy in front of a remote engine)"
        ))
    }

    /// How the address appears in messages (and in [`DockerError`]s, which name a path).
    pub(crate) fn shown(&self) -> PathBuf {
        match self {
            Self::Unix(p) => p.clone(),
            Self::Tcp(a) => PathBuf::from(format!("tcp://{a}")),
        }
    }
}

/// A connected engine.
#[derive(Clone)]
pub(crate) struct Engine {
    docker: Docker,
    addr: DockerAddr,
    /// `--label-filter`: Docker's `label` filter for the listing and the events.
    labels: Vec<String>,
}

impl Engine {
    /// Connects and agrees on an API version with the engine.
    pub(crate) async fn connect(addr: &DockerAddr, labels: &[String]) -> Result<Self, DockerError> {
        let shown = addr.shown();
        let docker = match addr {
            DockerAddr::Unix(path) => {
                check_socket(path).await?;
                let text = path
                    .to_str()
                    .ok_or_else(|| DockerError::EngineUnreachable {
                        socket: shown.clone(),
                        reason: "the socket path is not valid UTF-8".to_string(),
                    })?;
                Docker::connect_with_unix(text, TIMEOUT_SECS, bollard::API_DEFAULT_VERSION)
            }
            DockerAddr::Tcp(hostport) => Docker::connect_with_http(
                &format!("tcp://{hostport}"),
                TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
        }
        .map_err(|e| map_error(e, &shown, ""))?;
        let docker = match docker.clone().negotiate_version().await {
            Ok(d) => d,
            Err(BollardError::DockerResponseServerError {
                status_code: 400,
                message,
            }) => match supported_api_version(&message) {
                Some(v) => match addr {
                    DockerAddr::Unix(path) => {
                        Docker::connect_with_unix(&path.to_string_lossy(), TIMEOUT_SECS, &v)
                    }
                    DockerAddr::Tcp(hostport) => {
                        Docker::connect_with_http(&format!("tcp://{hostport}"), TIMEOUT_SECS, &v)
                    }
                }
                .map_err(|e| map_error(e, &shown, ""))?,
                None => docker,
            },
            Err(e) => return Err(map_error(e, &shown, "")),
        };
        Ok(Self {
            docker,
            addr: addr.clone(),
            labels: labels.to_vec(),
        })
    }

    /// The ids of the running containers (paused ones included).
    pub(crate) async fn running(&self) -> Result<Vec<String>, DockerError> {
        let filters = (!self.labels.is_empty())
            .then(|| HashMap::from([("label".to_string(), self.labels.clone())]));
        let opts = ListContainersOptions {
            all: false,
            filters,
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| map_error(e, &self.addr.shown(), ""))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// What the agent needs to know of container `id`; `None` when it no longer exists.
    pub(crate) async fn facts(&self, id: &str) -> Result<Option<Facts>, DockerError> {
        let info = match self.docker.inspect_container(id, None).await {
            Ok(info) => info,
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(map_error(e, &self.addr.shown(), id)),
        };
        let mut facts = facts_of(&info);
        if let Some(owner) = info
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref())
            .and_then(|m| m.strip_prefix("container:"))
            .filter(|o| !o.is_empty())
        {
            // Ports are published on the container whose network namespace this one shares.
            match self.docker.inspect_container(owner, None).await {
                Ok(other) => {
                    facts.ports = ports_of(&other);
                    facts.host_network = network_mode(&other) == "host";
                }
                Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                }) => facts.ports = HashMap::new(),
                Err(e) => return Err(map_error(e, &self.addr.shown(), owner)),
            }
        }
        Ok(Some(facts))
    }

    /// The container events of [`EVENTS`], from `since` (Unix seconds; now when `None`) on.
    /// The stream ends (or fails) when the engine goes away.
    pub(crate) fn events(
        &self,
        since: Option<u64>,
    ) -> impl Stream<Item = Result<EventMessage, BollardError>> + use<> {
        let mut filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            (
                "event".to_string(),
                EVENTS.iter().map(|e| (*e).to_string()).collect(),
            ),
        ]);
        if !self.labels.is_empty() {
            filters.insert("label".to_string(), self.labels.clone());
        }
        self.docker.clone().events(Some(EventsOptions {
            since: since.map(|s| s.to_string()),
            filters: Some(filters),
            ..Default::default()
        }))
    }

    /// Whether `facts` carry every label of `--label-filter` (`KEY` or `KEY=VALUE`).
    pub(crate) fn selects(&self, facts: &Facts) -> bool {
        self.labels.iter().all(|f| match f.split_once('=') {
            Some((k, v)) => facts.labels.get(k).is_some_and(|have| have == v),
            None => facts.labels.contains_key(f.as_str()),
        })
    }

    /// Where the engine is, for messages.
    pub(crate) fn addr(&self) -> &DockerAddr {
        &self.addr
    }
}

fn network_mode(info: &ContainerInspectResponse) -> &str {
    info.host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .unwrap_or_default()
}

fn ports_of(
    info: &ContainerInspectResponse,
) -> HashMap<String, Option<Vec<bollard::models::PortBinding>>> {
    info.network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default()
}

/// The facts of an inspect answer (ports of this container itself).
pub(crate) fn facts_of(info: &ContainerInspectResponse) -> Facts {
    let config = info.config.as_ref();
    let state = info.state.as_ref();
    let env = config
        .and_then(|c| c.env.as_ref())
        .map(|env| {
            env.iter()
                .filter_map(|e| e.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let health = state
        .and_then(|s| s.health.as_ref())
        .and_then(|h| match h.status? {
            HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
            HealthStatusEnum::STARTING => Some(DockerHealth::Starting),
            HealthStatusEnum::HEALTHY => Some(DockerHealth::Healthy),
            HealthStatusEnum::UNHEALTHY => Some(DockerHealth::Unhealthy),
        });
    Facts {
        id: info.id.clone().unwrap_or_default(),
        name: info
            .name
            .as_deref()
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        hostname: config.and_then(|c| c.hostname.clone()).unwrap_or_default(),
        labels: config.and_then(|c| c.labels.clone()).unwrap_or_default(),
        env,
        ports: ports_of(info),
        running: state.and_then(|s| s.running).unwrap_or(false),
        paused: state.and_then(|s| s.paused).unwrap_or(false),
        host_network: network_mode(info) == "host",
        health,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_addresses() {
        assert_eq!(
            DockerAddr::parse("/var/run/docker.sock").unwrap(),
            DockerAddr::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            DockerAddr::parse("unix:///run/d.sock").unwrap(),
            DockerAddr::Unix("/run/d.sock".into())
        );
        assert_eq!(
            DockerAddr::parse("tcp://127.0.0.1:2375").unwrap(),
            DockerAddr::Tcp("127.0.0.1:2375".into())
        );
        let e = DockerAddr::parse("ssh://host").unwrap_err();
        assert!(e.contains("--docker"), "{e}");
        assert!(DockerAddr::parse("tcp://").is_err());
    }
}

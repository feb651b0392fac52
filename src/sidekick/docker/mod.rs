//! Docker port discovery: which container am I, and on which host address and port did Docker
//! publish the app's container port?
//!
//! The sidekick runs inside the app container. [`own_container_id`] finds that container's id
//! (an explicit override, then `/proc/self/mountinfo`, then `/proc/self/cgroup`, then the
//! hostname: [`container_id`]); [`discover`] asks the Docker Engine API over its Unix socket to
//! inspect the container ([`engine`]) and [`select_binding`] picks the `<port>/tcp` binding to
//! register, by a fixed, documented rule ([`bindings`]).
//!
//! Every failure is a [`DockerError`] whose message names what is at fault (the socket, the
//! container, the port) and what the user can do about it; nothing here panics.
//!
//! API version: bollard 0.21 sends unversioned paths (`/containers/<id>/json`), which every
//! engine answers in its own version, so Docker 20.10 (API 1.41) works although bollard's
//! default is newer. Should a bollard release put its version into the path, an engine that
//! answers "client version ... is too new/old. Maximum/Minimum supported API version is X" gets
//! the request again, once, with version X.

mod bindings;
mod container_id;
pub(crate) mod engine;

pub(crate) use bindings::select_binding;
use bollard::models::{ContainerInspectResponse, PortBinding};
pub(crate) use engine::check_socket;
use engine::Engine;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

pub(crate) use container_id::own_container_id;

/// Why the published port could not be found: the one error type of discovery, shared by
/// [`container_id`], [`bindings`] and [`engine`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum DockerError {
    #[error(
        "Docker socket {} does not exist: mount the engine's socket into the container \
         (-v /var/run/docker.sock:/var/run/docker.sock) or point --docker at it",
        socket.display()
    )]
    SocketMissing { socket: PathBuf },

    #[error(
        "Docker socket {} is {what}: mount the engine's socket there \
         (-v /var/run/docker.sock:/var/run/docker.sock) or point --docker at it",
        socket.display()
    )]
    NotASocket { socket: PathBuf, what: &'static str },

    #[error(
        "permission denied on Docker socket {}: run the sidekick as root or as a member of the \
         socket's group (docker run --group-add <gid of the socket on the host>)",
        socket.display()
    )]
    SocketPermission { socket: PathBuf },

    #[error(
        "Docker engine not answering at {}: {reason}; check that dockerd is running and that \
         --docker names its socket",
        socket.display()
    )]
    EngineUnreachable { socket: PathBuf, reason: String },

    #[error(
        "Docker engine at {} could not inspect container {container}: {reason}",
        socket.display()
    )]
    Api {
        socket: PathBuf,
        container: String,
        reason: String,
    },

    #[error(
        "container {container} not found by the Docker engine at {}: pass the sidekick's own \
         container id or name with --container (or -e DOCKREG_CONTAINER=<id or name>)",
        socket.display()
    )]
    ContainerNotFound { socket: PathBuf, container: String },

    #[error(
        "container {container} uses host networking, so container port {port}/tcp is not \
         published: pass --host-port {port} and --ip <host address> instead"
    )]
    HostNetwork { container: String, port: u16 },

    #[error("container port {port}/tcp is not published: run the container with -p {port}")]
    PortNotPublished { port: u16 },

    #[error(
        "container port {port}/tcp is published on {bindings}, i.e. on every address of the \
         host, so the address to register is unknown: pass --ip, or -e IP=<host address>"
    )]
    WildcardOnly { port: u16, bindings: String },

    #[error(
        "container port {port}/tcp is published on {bindings}, not on --ip {ip}: pass one of \
         those addresses as --ip, or publish the port on {ip} or on all addresses (-p {port})"
    )]
    IpNotBound {
        port: u16,
        ip: IpAddr,
        bindings: String,
    },

    #[error(
        "--ip {ip} cannot be reached from other hosts (unspecified, multicast or broadcast): \
         pass the host address the proxy should connect to"
    )]
    UnroutableIp { ip: IpAddr },

    #[error(
        "--container {id:?} is not a container id or name (letters, digits, '_', '.', '-'): pass \
         the id (docker ps) or the name given with docker run --name"
    )]
    InvalidContainer { id: String },

    #[error(
        "cannot find the own container id ({tried}): pass it with --container <id or name> \
         (or -e DOCKREG_CONTAINER=<id or name>), e.g. the name given with docker run --name"
    )]
    ContainerIdNotFound { tried: String },
}

impl DockerError {
    /// Whether asking again later can succeed without the user changing anything (the engine
    /// restarting or briefly failing); every other error needs a fix of the command line or of
    /// the way the container is run.
    // Only the unit tests ask today: `run` retries every failed re-resolve alike and fails the
    // start on any. Kept as the classification the other edges mirror.
    #[cfg_attr(
        not(test),
        expect(dead_code, reason = "no caller outside the tests yet")
    )]
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, Self::EngineUnreachable { .. } | Self::Api { .. })
    }
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Discovered {
    /// The address to register: `<host ip>:<host port>`.
    pub(crate) addr: SocketAddr,
    /// The container's full id, as the engine reports it.
    pub(crate) container_id: String,
    /// The container's host name (`Config.Hostname`).
    pub(crate) hostname: String,
}

/// Connects to the socket, inspects the container, selects the binding.
///
/// A container that shares another one's network namespace (`--network container:<other>`)
/// has its ports published on that other container, which is inspected for them (one hop).
pub(crate) async fn discover(
    socket: &Path,
    container: &str,
    port: u16,
    ip: Option<IpAddr>,
) -> Result<Discovered, DockerError> {
    check_socket(socket).await?;
    let path = socket
        .to_str()
        .ok_or_else(|| DockerError::EngineUnreachable {
            socket: socket.to_path_buf(),
            reason: "the socket path is not valid UTF-8".to_string(),
        })?;
    let mut engine = Engine::connect(socket, path)?;

    let info = engine.inspect(container).await?;
    let container_id = info.id.clone().unwrap_or_else(|| container.to_string());
    let hostname = info
        .config
        .as_ref()
        .and_then(|c| c.hostname.clone())
        .unwrap_or_default();

    let network_mode = info
        .host_config
        .as_ref()
        .and_then(|h| h.network_mode.as_deref())
        .unwrap_or_default();
    if network_mode == "host" {
        return Err(DockerError::HostNetwork {
            container: container_id,
            port,
        });
    }
    let ports = match network_mode.strip_prefix("container:") {
        Some(owner) if !owner.is_empty() => ports_of(&engine.inspect(owner).await?),
        _ => ports_of(&info),
    };

    let addr = select_binding(&ports, port, ip)?;
    Ok(Discovered {
        addr,
        container_id,
        hostname,
    })
}

fn ports_of(info: &ContainerInspectResponse) -> HashMap<String, Option<Vec<PortBinding>>> {
    info.network_settings
        .as_ref()
        .and_then(|n| n.ports.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;

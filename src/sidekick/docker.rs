//! Docker port discovery: which container am I, and on which host address and port did Docker
//! publish the app's container port?
//!
//! The sidekick runs inside the app container. [`own_container_id`] finds that container's id
//! (an explicit override, then `/proc/self/mountinfo`, then `/proc/self/cgroup`, then the
//! hostname); [`discover`] asks the Docker Engine API over its Unix socket to inspect the
//! container and [`select_binding`] picks the `<port>/tcp` binding to register, by a fixed,
//! documented rule.
//!
//! Every failure is a [`DockerError`] whose message names what is at fault (the socket, the
//! container, the port) and what the user can do about it; nothing here panics.
//!
//! API version: bollard 0.21 sends unversioned paths (`/containers/<id>/json`), which every
//! engine answers in its own version, so Docker 20.10 (API 1.41) works although bollard's
//! default is newer. Should a bollard release put its version into the path, an engine that
//! answers "client version ... is too new/old. Maximum/Minimum supported API version is X" gets
//! the request again, once, with version X.

use bollard::errors::Error as BollardError;
use bollard::models::{ContainerInspectResponse, PortBinding};
use bollard::{ClientVersion, Docker};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Timeout of every Docker Engine API request (and of the socket pre-check), in seconds.
pub const DOCKER_TIMEOUT_SECS: u64 = 5;

const DOCKER_TIMEOUT: Duration = Duration::from_secs(DOCKER_TIMEOUT_SECS);

/// Where the own container id is looked for, in this order (after `--container`).
const MOUNTINFO: &str = "/proc/self/mountinfo";
const CGROUP: &str = "/proc/self/cgroup";
const HOSTNAME_FILES: [&str; 2] = ["/proc/sys/kernel/hostname", "/etc/hostname"];

/// Why the published port could not be found.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
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
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::EngineUnreachable { .. } | Self::Api { .. })
    }
}

/// What discovery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    /// The address to register: `<host ip>:<host port>`.
    pub addr: SocketAddr,
    /// The container's full id, as the engine reports it.
    pub container_id: String,
    /// The container's host name (`Config.Hostname`).
    pub hostname: String,
}

// ---------------------------------------------------------------------------------------------
// The own container id
// ---------------------------------------------------------------------------------------------

/// Own container id: `override_id` if given (an id, a unique id prefix or a container name),
/// then `/proc/self/mountinfo` (the files Docker bind-mounts from
/// `/var/lib/docker/containers/<id>/`: `hostname`, `hosts`, `resolv.conf`; works under cgroup
/// v2), then `/proc/self/cgroup` (cgroup v1: `12:cpu:/docker/<id>`, or
/// `.../docker-<id>.scope` with the systemd driver), then the hostname when it looks like the
/// 12-character short id Docker gives a container by default.
pub fn own_container_id(override_id: Option<&str>) -> Result<String, DockerError> {
    own_container_id_with(override_id, |path| std::fs::read_to_string(path))
}

/// [`own_container_id`] over an injectable file reader (for tests).
fn own_container_id_with(
    override_id: Option<&str>,
    read: impl Fn(&str) -> io::Result<String>,
) -> Result<String, DockerError> {
    if let Some(raw) = override_id {
        return validate_override(raw);
    }
    let mut tried = Vec::new();

    match read(MOUNTINFO) {
        Ok(text) => match container_id_from_mountinfo(&text) {
            Some(id) => return Ok(id),
            None => tried.push(format!(
                "{MOUNTINFO} shows no mount from /var/lib/docker/containers/<id>/"
            )),
        },
        Err(e) => tried.push(format!("{MOUNTINFO}: {e}")),
    }

    match read(CGROUP) {
        Ok(text) => match container_id_from_cgroup(&text) {
            Some(id) => return Ok(id),
            None => tried.push(format!("{CGROUP} names no container")),
        },
        Err(e) => tried.push(format!("{CGROUP}: {e}")),
    }

    let mut hostname_read = false;
    for path in HOSTNAME_FILES {
        match read(path) {
            Ok(text) => {
                let name = text.trim();
                if let Some(id) = id_from_hostname(name) {
                    return Ok(id);
                }
                tried.push(format!("the hostname {name:?} is not a container id"));
                hostname_read = true;
                break;
            }
            Err(e) => tried.push(format!("{path}: {e}")),
        }
    }
    if !hostname_read {
        tried.push("no hostname".to_string());
    }

    Err(DockerError::ContainerIdNotFound {
        tried: tried.join("; "),
    })
}

/// Accepts what Docker accepts as a container reference in a URL path: an id, an id prefix or a
/// name (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`, a leading `/` as in `docker inspect`'s `Name` dropped).
fn validate_override(raw: &str) -> Result<String, DockerError> {
    let id = raw.trim();
    let id = id.strip_prefix('/').unwrap_or(id);
    let valid = id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if valid {
        Ok(id.to_string())
    } else {
        Err(DockerError::InvalidContainer {
            id: raw.to_string(),
        })
    }
}

/// A full container id: 64 lowercase hex digits.
fn is_full_id(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The container id in `/proc/self/mountinfo` text: the root (4th field) of a mount of
/// `<...>/containers/<64 hex>/hostname`, `hosts` or `resolv.conf`, the files Docker bind-mounts
/// into every container. A mount onto `/etc/hostname`, `/etc/hosts` or `/etc/resolv.conf` wins
/// over one elsewhere (which could be another container's file mounted in on purpose).
pub fn container_id_from_mountinfo(text: &str) -> Option<String> {
    let mut elsewhere = None;
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let (Some(root), Some(mount_point)) = (fields.nth(3), fields.next()) else {
            continue;
        };
        let Some(id) = id_in_container_file(root) else {
            continue;
        };
        if matches!(
            mount_point,
            "/etc/hostname" | "/etc/hosts" | "/etc/resolv.conf"
        ) {
            return Some(id);
        }
        elsewhere.get_or_insert(id);
    }
    elsewhere
}

/// `<...>/containers/<64 hex>/{hostname,hosts,resolv.conf}` → the id.
fn id_in_container_file(path: &str) -> Option<String> {
    let (dir, file) = path.rsplit_once('/')?;
    if !matches!(file, "hostname" | "hosts" | "resolv.conf") {
        return None;
    }
    let (parent, id) = dir.rsplit_once('/')?;
    let under_containers = parent == "/containers" || parent.ends_with("/containers");
    (under_containers && is_full_id(id)).then(|| id.to_string())
}

/// The container id in `/proc/self/cgroup` text (cgroup v1, or v2 without a cgroup namespace):
/// the innermost path segment that is a full id, bare (`/docker/<id>`) or as a systemd scope
/// (`/system.slice/docker-<id>.scope`). Under cgroup v2 with a private cgroup namespace the
/// only line is `0::/`, which names nothing.
pub fn container_id_from_cgroup(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.rsplit('/').find_map(|segment| {
            let segment = segment.strip_suffix(".scope").unwrap_or(segment);
            let id = segment.rsplit_once('-').map_or(segment, |(_, id)| id);
            is_full_id(id).then(|| id.to_string())
        })
    })
}

/// Docker names a container's host after its short id (12 hex digits) unless `--hostname` is
/// given; anything else is not trusted as an id (it could name another container).
fn id_from_hostname(name: &str) -> Option<String> {
    ((name.len() == 12 || name.len() == 64) && is_lower_hex(name)).then(|| name.to_string())
}

// ---------------------------------------------------------------------------------------------
// Binding selection
// ---------------------------------------------------------------------------------------------

/// A binding's host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostAddr {
    /// A specific address such as `192.168.1.10`.
    Specific(IpAddr),
    /// `0.0.0.0` or `::`: every address of that family.
    Wildcard(IpAddr),
    /// `HostIp` empty or absent: every address.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Binding {
    host: HostAddr,
    port: u16,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            HostAddr::Specific(ip) | HostAddr::Wildcard(ip) => {
                write!(f, "{}", SocketAddr::new(ip, self.port))
            }
            HostAddr::Any => write!(f, "*:{}", self.port),
        }
    }
}

/// The usable bindings of one port, deduplicated and sorted.
fn parse_bindings(list: &[PortBinding]) -> BTreeSet<Binding> {
    list.iter()
        .filter_map(|b| {
            let port = b
                .host_port
                .as_deref()
                .and_then(|p| p.trim().parse::<u16>().ok())
                .filter(|&p| p != 0)?;
            let host = match b.host_ip.as_deref().map(str::trim) {
                None | Some("") => HostAddr::Any,
                Some(text) => {
                    let text = text.strip_prefix('[').unwrap_or(text);
                    let text = text.strip_suffix(']').unwrap_or(text);
                    let ip: IpAddr = text.parse().ok()?;
                    if ip.is_unspecified() {
                        HostAddr::Wildcard(ip)
                    } else {
                        HostAddr::Specific(ip)
                    }
                }
            };
            Some(Binding { host, port })
        })
        .collect()
}

fn list(bindings: &BTreeSet<Binding>) -> String {
    let texts: Vec<String> = bindings.iter().map(Binding::to_string).collect();
    texts.join(" and ")
}

/// Picks the binding of `<port>/tcp` to register from inspect's `NetworkSettings.Ports`.
///
/// The rule:
///
/// - Every binding of `<port>/tcp` is read: IPv4 and IPv6 bindings can carry different host
///   ports, and Docker may list a binding twice (duplicates count once). `HostIp` `""` (or
///   absent) means all addresses, as do `0.0.0.0` (all IPv4) and `::` (all IPv6); a binding
///   whose `HostPort` is missing, unparsable or `0`, or whose `HostIp` is not an address, is
///   skipped.
/// - With `--ip` given, the port registered is that of, in order of preference: a binding on
///   exactly that address; a wildcard of the same family (`0.0.0.0` for an IPv4 `--ip`, `::`
///   for IPv6); a binding with an empty `HostIp`; a wildcard of the other family. Ties go to
///   the lowest host port. The key is `<--ip>:<that port>`. If the port is published only on
///   other specific addresses, that is an error naming them.
/// - Without `--ip`, only bindings on a specific address count: IPv4 before IPv6, then the
///   lowest host port (then the lowest address); the key is that `<HostIp>:<HostPort>`. If the
///   port is published only on wildcard addresses (`-p 8000` publishes `0.0.0.0` and `::`), the
///   host address is unknown: an error asks for `--ip` (or `-e IP=<host address>`).
/// - No binding at all (`Ports` lacking the key, or holding null or an empty list): the port is
///   not published, an error asks to run the container with `-p <port>`.
///
/// An `ip` that no other host can reach (unspecified, multicast, broadcast) is refused.
pub fn select_binding(
    ports: &HashMap<String, Option<Vec<PortBinding>>>,
    port: u16,
    ip: Option<IpAddr>,
) -> Result<SocketAddr, DockerError> {
    if let Some(ip) = ip {
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(DockerError::UnroutableIp { ip });
        }
    }
    let bindings = ports
        .get(&format!("{port}/tcp"))
        .and_then(Option::as_deref)
        .map(parse_bindings)
        .unwrap_or_default();
    if bindings.is_empty() {
        return Err(DockerError::PortNotPublished { port });
    }

    match ip {
        Some(ip) => {
            let preference = |host: HostAddr| match host {
                HostAddr::Specific(addr) if addr == ip => Some(0u8),
                HostAddr::Specific(_) => None,
                HostAddr::Wildcard(w) if w.is_ipv4() == ip.is_ipv4() => Some(1),
                HostAddr::Any => Some(2),
                HostAddr::Wildcard(_) => Some(3),
            };
            bindings
                .iter()
                .filter_map(|b| preference(b.host).map(|rank| (rank, b.port)))
                .min()
                .map(|(_, host_port)| SocketAddr::new(ip, host_port))
                .ok_or_else(|| DockerError::IpNotBound {
                    port,
                    ip,
                    bindings: list(&bindings),
                })
        }
        None => bindings
            .iter()
            .filter_map(|b| match b.host {
                HostAddr::Specific(addr) => Some((addr.is_ipv6(), b.port, addr)),
                HostAddr::Wildcard(_) | HostAddr::Any => None,
            })
            .min()
            .map(|(_, host_port, addr)| SocketAddr::new(addr, host_port))
            .ok_or_else(|| DockerError::WildcardOnly {
                port,
                bindings: list(&bindings),
            }),
    }
}

// ---------------------------------------------------------------------------------------------
// The Docker Engine API
// ---------------------------------------------------------------------------------------------

/// Connects to the socket, inspects the container, selects the binding.
///
/// A container that shares another one's network namespace (`--network container:<other>`)
/// has its ports published on that other container, which is inspected for them (one hop).
pub async fn discover(
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

/// Clear errors before bollard turns them into generic connection failures: the path missing,
/// a directory (what `-v` creates when the host path did not exist), not a socket, permission
/// denied, nothing listening.
async fn check_socket(socket: &Path) -> Result<(), DockerError> {
    let owned = || socket.to_path_buf();
    match tokio::fs::metadata(socket).await {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DockerError::SocketMissing { socket: owned() })
        }
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err(DockerError::SocketPermission { socket: owned() })
        }
        Err(e) => {
            return Err(DockerError::EngineUnreachable {
                socket: owned(),
                reason: format!("cannot read the socket's metadata: {e}"),
            })
        }
        Ok(meta) if meta.is_dir() => {
            return Err(DockerError::NotASocket {
                socket: owned(),
                what: "a directory (docker run -v creates one when the host path does not exist)",
            })
        }
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(DockerError::NotASocket {
                socket: owned(),
                what: "not a Unix socket",
            })
        }
        Ok(_) => {}
    }
    match tokio::time::timeout(DOCKER_TIMEOUT, tokio::net::UnixStream::connect(socket)).await {
        Ok(Ok(_stream)) => Ok(()),
        Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
            Err(DockerError::SocketPermission { socket: owned() })
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            Err(DockerError::EngineUnreachable {
                socket: owned(),
                reason: "connection refused, nothing listens on the socket (a socket mounted \
                         with -v goes stale when dockerd restarts while the container runs)"
                    .to_string(),
            })
        }
        Ok(Err(e)) => Err(DockerError::EngineUnreachable {
            socket: owned(),
            reason: e.to_string(),
        }),
        Err(_) => Err(DockerError::EngineUnreachable {
            socket: owned(),
            reason: format!("no connection within {DOCKER_TIMEOUT_SECS} s"),
        }),
    }
}

/// A bollard client that renegotiates the API version once when the engine refuses it.
struct Engine<'a> {
    socket: &'a Path,
    path: &'a str,
    docker: Docker,
    renegotiated: bool,
}

impl<'a> Engine<'a> {
    fn connect(socket: &'a Path, path: &'a str) -> Result<Self, DockerError> {
        let docker = connect_with(socket, path, bollard::API_DEFAULT_VERSION)?;
        Ok(Self {
            socket,
            path,
            docker,
            renegotiated: false,
        })
    }

    async fn inspect(&mut self, container: &str) -> Result<ContainerInspectResponse, DockerError> {
        let mut result = self.docker.inspect_container(container, None).await;
        if !self.renegotiated {
            let wanted = match &result {
                Err(BollardError::DockerResponseServerError {
                    status_code: 400,
                    message,
                }) => supported_api_version(message),
                _ => None,
            };
            if let Some(version) = wanted {
                tracing::debug!(
                    socket = %self.socket.display(),
                    version = %version,
                    "Docker engine asks for another API version"
                );
                self.docker = connect_with(self.socket, self.path, &version)?;
                self.renegotiated = true;
                result = self.docker.inspect_container(container, None).await;
            }
        }
        result.map_err(|e| map_error(e, self.socket, container))
    }
}

fn connect_with(socket: &Path, path: &str, version: &ClientVersion) -> Result<Docker, DockerError> {
    Docker::connect_with_unix(path, DOCKER_TIMEOUT_SECS, version)
        .map_err(|e| map_error(e, socket, ""))
}

/// The version in the engine's answer to a client version it does not support:
/// `client version 1.53 is too new. Maximum supported API version is 1.41`, or
/// `... is too old. Minimum supported API version is 1.44, please upgrade ...`.
fn supported_api_version(message: &str) -> Option<ClientVersion> {
    const MARKER: &str = "supported API version is ";
    let start = message.find(MARKER)? + MARKER.len();
    let rest = message.get(start..)?;
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let version = rest.get(..end)?.trim_end_matches('.');
    let (major, minor) = version.split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// Maps a bollard error to what the user needs to know.
fn map_error(err: BollardError, socket: &Path, container: &str) -> DockerError {
    let socket = socket.to_path_buf();
    match err {
        BollardError::DockerResponseServerError {
            status_code: 404, ..
        } => DockerError::ContainerNotFound {
            socket,
            container: container.to_string(),
        },
        BollardError::DockerResponseServerError {
            status_code,
            message,
        } => DockerError::Api {
            socket,
            container: container.to_string(),
            reason: format!("HTTP {status_code}: {message}"),
        },
        BollardError::RequestTimeoutError => DockerError::EngineUnreachable {
            socket,
            reason: format!("no answer within {DOCKER_TIMEOUT_SECS} s"),
        },
        BollardError::SocketNotFoundError(_) => DockerError::SocketMissing { socket },
        BollardError::IOError { err } => io_error(err.kind(), &err.to_string(), socket),
        other @ (BollardError::HyperLegacyError { .. }
        | BollardError::HyperResponseError { .. }) => match io_kind_in_chain(&other) {
            Some(kind) => io_error(kind, &error_chain(&other), socket),
            None => DockerError::EngineUnreachable {
                socket,
                reason: error_chain(&other),
            },
        },
        other => DockerError::Api {
            socket,
            container: container.to_string(),
            reason: error_chain(&other),
        },
    }
}

fn io_error(kind: io::ErrorKind, text: &str, socket: PathBuf) -> DockerError {
    match kind {
        io::ErrorKind::PermissionDenied => DockerError::SocketPermission { socket },
        io::ErrorKind::NotFound => DockerError::SocketMissing { socket },
        _ => DockerError::EngineUnreachable {
            socket,
            reason: text.to_string(),
        },
    }
}

/// The kind of the first I/O error among `err`'s sources.
fn io_kind_in_chain(err: &(dyn std::error::Error + 'static)) -> Option<io::ErrorKind> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(io.kind());
        }
        current = e.source();
    }
    None
}

/// `err` and its sources as one line (hyper's own message alone says little: "client error
/// (Connect)").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const ID: &str = "dae6f77ee4581d58b9317585caf177d4ebf929451e344c47b38532a49a14cdd5";
    const OTHER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    // ---- mountinfo -------------------------------------------------------------------------

    fn docker_mountinfo(id: &str) -> String {
        format!(
            "\
1130 1034 0:109 / / rw,relatime master:471 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X4J5:/var/lib/docker/overlay2/l/Q2ZP,upperdir=/var/lib/docker/overlay2/9f0c5c0a2b1d4e3f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f/diff,workdir=/var/lib/docker/overlay2/9f0c5c0a2b1d4e3f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f/work
1131 1130 0:112 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1132 1130 0:113 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
1133 1132 0:114 / /dev/pts rw,nosuid,noexec,relatime - devpts devpts rw,gid=5,mode=620,ptmxmode=666
1134 1130 0:115 / /sys ro,nosuid,nodev,noexec,relatime - sysfs sysfs ro
1135 1134 0:28 / /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime - cgroup2 cgroup rw,nsdelegate,memory_recursiveprot
1136 1132 0:111 / /dev/mqueue rw,nosuid,nodev,noexec,relatime - mqueue mqueue rw
1137 1132 0:116 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm rw,size=65536k
1138 1130 259:2 /var/lib/docker/containers/{id}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
1139 1130 259:2 /var/lib/docker/containers/{id}/hostname /etc/hostname rw,relatime - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
1140 1130 259:2 /var/lib/docker/containers/{id}/hosts /etc/hosts rw,relatime - ext4 /dev/nvme0n1p2 rw,errors=remount-ro
1035 1131 0:112 /bus /proc/bus ro,nosuid,nodev,noexec,relatime - proc proc rw
1036 1131 0:112 /sys /proc/sys ro,nosuid,nodev,noexec,relatime - proc proc rw
1037 1131 0:117 / /proc/acpi ro,relatime - tmpfs tmpfs ro
1038 1131 0:113 /null /proc/kcore rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755
"
        )
    }

    #[test]
    fn mountinfo_cgroup_v2_docker() {
        assert_eq!(
            container_id_from_mountinfo(&docker_mountinfo(ID)).as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn mountinfo_separate_data_root_filesystem() {
        // /var/lib/docker on its own filesystem: the root field is relative to it.
        let text = format!(
            "36 25 8:17 /containers/{ID}/hostname /etc/hostname rw,relatime - xfs /dev/sdb1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&text).as_deref(), Some(ID));
    }

    #[test]
    fn mountinfo_prefers_the_etc_mounts() {
        // Another container's file mounted elsewhere (a log shipper, say) must not win.
        let text = format!(
            "40 30 8:1 /var/lib/docker/containers/{OTHER}/hosts /other/hosts rw - ext4 /dev/sda1 rw\n\
             41 30 8:1 /var/lib/docker/containers/{ID}/hosts /etc/hosts rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&text).as_deref(), Some(ID));
    }

    #[test]
    fn mountinfo_without_docker_paths() {
        let host = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
23 22 0:21 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 22 0:22 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
25 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
26 22 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=8119500k
";
        assert_eq!(container_id_from_mountinfo(host), None);
        assert_eq!(container_id_from_mountinfo(""), None);
        // overlay2 layer ids are 64 hex digits too, but not container files.
        let layer = format!(
            "50 1 0:40 /var/lib/docker/overlay2/{OTHER}/merged/etc/hostname /x rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(container_id_from_mountinfo(&layer), None);
        // cgroup v1 mounts inside a container carry /docker/<id>: that is /proc/self/cgroup's job.
        let cgroup_mount = format!(
            "75 74 0:29 /docker/{ID} /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu\n"
        );
        assert_eq!(container_id_from_mountinfo(&cgroup_mount), None);
        // A short or upper-case id is not a container directory.
        let bad = "60 1 8:1 /var/lib/docker/containers/dae6f77ee458/hosts /etc/hosts rw - ext4 /dev/sda1 rw\n";
        assert_eq!(container_id_from_mountinfo(bad), None);
    }

    // ---- cgroup ----------------------------------------------------------------------------

    #[test]
    fn cgroup_v1_cgroupfs_driver() {
        let text = format!(
            "12:cpu,cpuacct:/docker/{ID}\n11:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/docker/{ID}\n"
        );
        assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_v1_systemd_driver() {
        let text = format!(
            "12:pids:/system.slice/docker-{ID}.scope\n1:name=systemd:/system.slice/docker-{ID}.scope\n"
        );
        assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_nested_takes_the_innermost() {
        let text = format!("4:memory:/docker/{OTHER}/docker/{ID}\n");
        assert_eq!(container_id_from_cgroup(&text).as_deref(), Some(ID));
    }

    #[test]
    fn cgroup_without_container() {
        assert_eq!(container_id_from_cgroup("0::/\n"), None);
        assert_eq!(
            container_id_from_cgroup("0::/user.slice/user-1000.slice/session-3.scope\n12:cpu:/\n"),
            None
        );
        assert_eq!(container_id_from_cgroup(""), None);
        assert_eq!(container_id_from_cgroup("garbage without colons\n"), None);
    }

    // ---- own_container_id ------------------------------------------------------------------

    fn files(entries: &[(&str, String)]) -> impl Fn(&str) -> io::Result<String> {
        let map: HashMap<String, String> = entries
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        move |path| {
            map.get(path)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
    }

    #[test]
    fn own_id_override_wins_and_is_validated() {
        let read = files(&[(MOUNTINFO, docker_mountinfo(ID))]);
        assert_eq!(
            own_container_id_with(Some("web-1"), &read).unwrap(),
            "web-1"
        );
        assert_eq!(own_container_id_with(Some("/web"), &read).unwrap(), "web");
        for bad in ["", " ", "../containers/x", "a/b", "web?x=1", "-x"] {
            let err = own_container_id_with(Some(bad), &read).unwrap_err();
            assert!(
                matches!(err, DockerError::InvalidContainer { .. }),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn own_id_falls_back_in_order() {
        let cgroup = format!("1:cpu:/docker/{OTHER}\n");
        let read = files(&[
            (MOUNTINFO, docker_mountinfo(ID)),
            (CGROUP, cgroup.clone()),
            ("/proc/sys/kernel/hostname", "abcdefabcdef\n".into()),
        ]);
        assert_eq!(own_container_id_with(None, &read).unwrap(), ID);

        let read = files(&[
            (MOUNTINFO, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".into()),
            (CGROUP, cgroup),
            ("/proc/sys/kernel/hostname", "abcdefabcdef\n".into()),
        ]);
        assert_eq!(own_container_id_with(None, &read).unwrap(), OTHER);

        let read = files(&[
            (CGROUP, "0::/\n".into()),
            ("/etc/hostname", "abcdefabcdef\n".into()),
        ]);
        assert_eq!(own_container_id_with(None, &read).unwrap(), "abcdefabcdef");
    }

    #[test]
    fn own_id_not_found_says_what_was_tried() {
        let read = files(&[
            (MOUNTINFO, "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n".into()),
            (CGROUP, "0::/\n".into()),
            ("/proc/sys/kernel/hostname", "web\n".into()),
        ]);
        let err = own_container_id_with(None, &read).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DockerError::ContainerIdNotFound { .. }));
        for part in [MOUNTINFO, CGROUP, "\"web\"", "--container"] {
            assert!(text.contains(part), "{part} missing in: {text}");
        }
    }

    // ---- select_binding --------------------------------------------------------------------

    fn pb(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.to_string()),
            host_port: Some(port.to_string()),
        }
    }

    fn ports(port: &str, bindings: Vec<PortBinding>) -> HashMap<String, Option<Vec<PortBinding>>> {
        HashMap::from([(port.to_string(), Some(bindings))])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn specific_v4_and_v6_with_different_ports() {
        let p = ports(
            "8000/tcp",
            vec![pb("2001:db8::10", "32769"), pb("192.168.1.10", "32770")],
        );
        // Without --ip: IPv4 before IPv6, even with a higher port.
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("192.168.1.10:32770")
        );
        // --ip picks the binding on that address, with its own port.
        assert_eq!(
            select_binding(&p, 8000, Some(ip("2001:db8::10"))).unwrap(),
            sa("[2001:db8::10]:32769")
        );
        assert_eq!(
            select_binding(&p, 8000, Some(ip("192.168.1.10"))).unwrap(),
            sa("192.168.1.10:32770")
        );
    }

    #[test]
    fn wildcards_v4_and_v6_with_different_ports_follow_the_ip_family() {
        let p = ports("8000/tcp", vec![pb("::", "32769"), pb("0.0.0.0", "32770")]);
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.5"))).unwrap(),
            sa("10.0.0.5:32770")
        );
        assert_eq!(
            select_binding(&p, 8000, Some(ip("2001:db8::5"))).unwrap(),
            sa("[2001:db8::5]:32769")
        );
        // Only the other family's wildcard: still used.
        let v6_only = ports("8000/tcp", vec![pb("::", "32769")]);
        assert_eq!(
            select_binding(&v6_only, 8000, Some(ip("10.0.0.5"))).unwrap(),
            sa("10.0.0.5:32769")
        );
    }

    #[test]
    fn ip_override_preference_order() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("", "30001"),
                pb("0.0.0.0", "30002"),
                pb("10.0.0.5", "30003"),
                pb("::", "30000"),
            ],
        );
        // Exact address first, whatever the port.
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.5"))).unwrap(),
            sa("10.0.0.5:30003")
        );
        // Another v4 address: the v4 wildcard beats "" and the v6 wildcard.
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap(),
            sa("10.0.0.6:30002")
        );
        // "" beats the other family's wildcard.
        let p = ports("8000/tcp", vec![pb("::", "30000"), pb("", "30001")]);
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap(),
            sa("10.0.0.6:30001")
        );
        // Ties: the lowest port.
        let p = ports(
            "8000/tcp",
            vec![pb("0.0.0.0", "30009"), pb("0.0.0.0", "30004")],
        );
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap(),
            sa("10.0.0.6:30004")
        );
    }

    #[test]
    fn ip_override_not_among_specific_bindings() {
        let p = ports("8000/tcp", vec![pb("10.0.0.5", "30003")]);
        let err = select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap_err();
        assert!(matches!(err, DockerError::IpNotBound { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("10.0.0.5:30003") && text.contains("--ip 10.0.0.6"),
            "{text}"
        );
    }

    #[test]
    fn unroutable_ip_is_refused() {
        let p = ports("8000/tcp", vec![pb("0.0.0.0", "30002")]);
        for bad in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1"] {
            let err = select_binding(&p, 8000, Some(ip(bad))).unwrap_err();
            assert!(
                matches!(err, DockerError::UnroutableIp { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn duplicates_count_once() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("192.168.1.10", "32768"),
                pb("192.168.1.10", "32768"),
                pb("0.0.0.0", "32768"),
                pb("0.0.0.0", "32768"),
            ],
        );
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("192.168.1.10:32768")
        );
        let wild = ports(
            "8000/tcp",
            vec![pb("0.0.0.0", "32768"), pb("0.0.0.0", "32768")],
        );
        let text = select_binding(&wild, 8000, None).unwrap_err().to_string();
        assert_eq!(text.matches("0.0.0.0:32768").count(), 1, "{text}");
    }

    #[test]
    fn without_ip_lowest_port_then_lowest_address() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("192.168.1.11", "32768"),
                pb("192.168.1.10", "32769"),
                pb("192.168.1.9", "32768"),
            ],
        );
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("192.168.1.9:32768")
        );
    }

    #[test]
    fn only_wildcards_without_ip_asks_for_ip() {
        // What `docker run -p 8000` gives on Docker 20.10.
        let p = ports("8000/tcp", vec![pb("0.0.0.0", "32768"), pb("::", "32768")]);
        let err = select_binding(&p, 8000, None).unwrap_err();
        assert!(matches!(err, DockerError::WildcardOnly { port: 8000, .. }));
        let text = err.to_string();
        for part in [
            "8000/tcp",
            "0.0.0.0:32768",
            "[::]:32768",
            "pass --ip",
            "-e IP=",
        ] {
            assert!(text.contains(part), "{part} missing in: {text}");
        }
    }

    #[test]
    fn empty_host_ip_means_all_addresses() {
        let mut no_ip = pb("", "32768");
        no_ip.host_ip = None;
        for binding in [pb("", "32768"), no_ip] {
            let p = ports("8000/tcp", vec![binding]);
            let err = select_binding(&p, 8000, None).unwrap_err();
            assert!(err.to_string().contains("*:32768"), "{err}");
            assert_eq!(
                select_binding(&p, 8000, Some(ip("10.0.0.5"))).unwrap(),
                sa("10.0.0.5:32768")
            );
            assert_eq!(
                select_binding(&p, 8000, Some(ip("2001:db8::5"))).unwrap(),
                sa("[2001:db8::5]:32768")
            );
        }
    }

    #[test]
    fn not_published() {
        let cases = [
            HashMap::new(),
            HashMap::from([("8000/tcp".to_string(), None)]),
            ports("8000/tcp", vec![]),
            // Another port, or the same port over UDP.
            ports("8001/tcp", vec![pb("10.0.0.5", "32768")]),
            ports("8000/udp", vec![pb("10.0.0.5", "32768")]),
            // Only unusable bindings.
            ports(
                "8000/tcp",
                vec![
                    pb("10.0.0.5", "0"),
                    pb("10.0.0.5", ""),
                    pb("nonsense", "32768"),
                ],
            ),
        ];
        for p in cases {
            for with_ip in [None, Some(ip("10.0.0.5"))] {
                let err = select_binding(&p, 8000, with_ip).unwrap_err();
                assert!(
                    matches!(err, DockerError::PortNotPublished { port: 8000 }),
                    "{p:?}: {err}"
                );
                assert_eq!(
                    err.to_string(),
                    "container port 8000/tcp is not published: run the container with -p 8000"
                );
            }
        }
    }

    #[test]
    fn unusable_bindings_are_skipped() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("10.0.0.4", "0"),
                pb("10.0.0.3", "nope"),
                pb("not-an-ip", "30000"),
                pb("10.0.0.5", " 32768 "),
            ],
        );
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("10.0.0.5:32768")
        );
    }

    // ---- API version and errors ------------------------------------------------------------

    #[test]
    fn parses_the_engines_supported_version() {
        let v = supported_api_version(
            "client version 1.53 is too new. Maximum supported API version is 1.41",
        )
        .unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        let v = supported_api_version(
            "client version 1.24 is too old. Minimum supported API version is 1.44, please \
             upgrade your client to a newer version",
        )
        .unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 44));
        assert!(supported_api_version("page not found").is_none());
        assert!(supported_api_version("supported API version is x").is_none());
    }

    #[test]
    fn transient_errors() {
        let socket = PathBuf::from("/var/run/docker.sock");
        assert!(DockerError::EngineUnreachable {
            socket: socket.clone(),
            reason: "x".into()
        }
        .is_transient());
        assert!(!DockerError::PortNotPublished { port: 1 }.is_transient());
        assert!(!DockerError::SocketPermission { socket }.is_transient());
    }

    // ---- discover against a stand-in engine ------------------------------------------------

    #[tokio::test]
    async fn discover_socket_missing() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let err = discover(&socket, ID, 8000, None).await.unwrap_err();
        assert!(matches!(err, DockerError::SocketMissing { .. }), "{err}");
        assert!(err.to_string().contains(&socket.display().to_string()));
    }

    #[tokio::test]
    async fn discover_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let err = discover(dir.path(), ID, 8000, None).await.unwrap_err();
        assert!(matches!(err, DockerError::NotASocket { .. }), "{err}");
        assert!(err.to_string().contains("directory"), "{err}");
        let file = dir.path().join("plain");
        std::fs::write(&file, b"").unwrap();
        let err = discover(&file, ID, 8000, None).await.unwrap_err();
        assert!(matches!(err, DockerError::NotASocket { .. }), "{err}");
    }

    #[tokio::test]
    async fn discover_nothing_listening() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let err = discover(&socket, ID, 8000, None).await.unwrap_err();
        assert!(
            matches!(err, DockerError::EngineUnreachable { .. }),
            "{err}"
        );
        assert!(err.is_transient());
    }

    /// A stand-in engine: answers each connection with the next canned (status, body) and
    /// records the request lines. The pre-check connection sends nothing and gets nothing.
    async fn fake_engine(
        responses: Vec<(u16, String)>,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        tokio::task::JoinHandle<Vec<String>>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut responses = responses.into_iter();
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                if request.is_empty() {
                    continue; // the socket pre-check
                }
                let text = String::from_utf8_lossy(&request);
                seen.push(text.lines().next().unwrap_or_default().to_string());
                let Some((status, body)) = responses.next() else {
                    break;
                };
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(reply.as_bytes()).await.unwrap();
                stream.shutdown().await.ok();
                if responses.len() == 0 {
                    break;
                }
            }
            seen
        });
        (dir, socket, task)
    }

    fn inspect_json(network_mode: &str, ports: &str) -> String {
        format!(
            r#"{{"Id":"{ID}","Name":"/web","Config":{{"Hostname":"dae6f77ee458"}},
               "HostConfig":{{"NetworkMode":"{network_mode}"}},
               "NetworkSettings":{{"Ports":{ports}}}}}"#
        )
    }

    #[tokio::test]
    async fn discover_finds_the_binding() {
        let body = inspect_json(
            "default",
            r#"{"8000/tcp":[{"HostIp":"0.0.0.0","HostPort":"32768"},{"HostIp":"::","HostPort":"32768"}]}"#,
        );
        let (_dir, socket, task) = fake_engine(vec![(200, body)]).await;
        let found = discover(&socket, "dae6f77ee458", 8000, Some(ip("192.168.1.10")))
            .await
            .unwrap();
        assert_eq!(
            found,
            Discovered {
                addr: sa("192.168.1.10:32768"),
                container_id: ID.to_string(),
                hostname: "dae6f77ee458".to_string(),
            }
        );
        let seen = task.await.unwrap();
        assert_eq!(seen.len(), 1);
        assert!(
            seen[0].contains("/containers/dae6f77ee458/json"),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn discover_renegotiates_the_api_version() {
        let too_new = r#"{"message":"client version 1.53 is too new. Maximum supported API version is 1.41"}"#;
        let body = inspect_json(
            "default",
            r#"{"8000/tcp":[{"HostIp":"10.0.0.5","HostPort":"32768"}]}"#,
        );
        let (_dir, socket, task) = fake_engine(vec![(400, too_new.to_string()), (200, body)]).await;
        let found = discover(&socket, ID, 8000, None).await.unwrap();
        assert_eq!(found.addr, sa("10.0.0.5:32768"));
        let seen = task.await.unwrap();
        // Asked again once (bollard 0.21 sends unversioned paths, so the version in the path
        // is not asserted).
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert!(
            seen[1].contains(&format!("/containers/{ID}/json")),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn discover_container_not_found() {
        let (_dir, socket, _task) = fake_engine(vec![(
            404,
            r#"{"message":"No such container: abc"}"#.to_string(),
        )])
        .await;
        let err = discover(&socket, "abc", 8000, None).await.unwrap_err();
        assert!(
            matches!(err, DockerError::ContainerNotFound { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("container abc") && text.contains("--container"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn discover_server_error() {
        let (_dir, socket, _task) =
            fake_engine(vec![(500, r#"{"message":"boom"}"#.to_string())]).await;
        let err = discover(&socket, "abc", 8000, None).await.unwrap_err();
        assert!(matches!(err, DockerError::Api { .. }), "{err}");
        assert!(err.to_string().contains("HTTP 500: boom"), "{err}");
    }

    #[tokio::test]
    async fn discover_host_network_and_unpublished() {
        let (_dir, socket, _task) = fake_engine(vec![(200, inspect_json("host", "{}"))]).await;
        let err = discover(&socket, ID, 8000, None).await.unwrap_err();
        assert!(matches!(err, DockerError::HostNetwork { .. }), "{err}");
        assert!(err.to_string().contains("--host-port 8000"), "{err}");

        let (_dir, socket, _task) = fake_engine(vec![(200, inspect_json("default", "null"))]).await;
        let err = discover(&socket, ID, 8000, None).await.unwrap_err();
        assert!(
            matches!(err, DockerError::PortNotPublished { port: 8000 }),
            "{err}"
        );
    }

    #[tokio::test]
    async fn discover_follows_a_shared_network_namespace() {
        let own = inspect_json(&format!("container:{OTHER}"), "{}");
        let owner = format!(
            r#"{{"Id":"{OTHER}","HostConfig":{{"NetworkMode":"default"}},
                "NetworkSettings":{{"Ports":{{"8000/tcp":[{{"HostIp":"10.0.0.5","HostPort":"32770"}}]}}}}}}"#
        );
        let (_dir, socket, task) = fake_engine(vec![(200, own), (200, owner)]).await;
        let found = discover(&socket, ID, 8000, None).await.unwrap();
        assert_eq!(found.addr, sa("10.0.0.5:32770"));
        assert_eq!(found.container_id, ID);
        let seen = task.await.unwrap();
        assert!(
            seen[1].contains(&format!("/containers/{OTHER}/json")),
            "{seen:?}"
        );
    }
}

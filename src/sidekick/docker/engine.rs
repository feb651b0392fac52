//! The Docker Engine API client: a pre-check of the socket (clear errors before bollard turns
//! them into generic connection failures), the bollard client that inspects a container and
//! renegotiates the API version once when the engine refuses it, and the mapping of bollard's
//! errors onto [`DockerError`]s that say what is at fault.

use super::DockerError;
use crate::core::errors::error_chain;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerInspectResponse;
use bollard::{ClientVersion, Docker};
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Timeout of every Docker Engine API request (and of the socket pre-check), in seconds.
const DOCKER_TIMEOUT_SECS: u64 = 5;

const DOCKER_TIMEOUT: Duration = Duration::from_secs(DOCKER_TIMEOUT_SECS);

/// Clear errors before bollard turns them into generic connection failures: the path missing,
/// a directory (what `-v` creates when the host path did not exist), not a socket, permission
/// denied, nothing listening.
pub(crate) async fn check_socket(socket: &Path) -> Result<(), DockerError> {
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
pub(super) struct Engine<'a> {
    socket: &'a Path,
    path: &'a str,
    docker: Docker,
    renegotiated: bool,
}

impl<'a> Engine<'a> {
    pub(super) fn connect(socket: &'a Path, path: &'a str) -> Result<Self, DockerError> {
        let docker = connect_with(socket, path, bollard::API_DEFAULT_VERSION)?;
        Ok(Self {
            socket,
            path,
            docker,
            renegotiated: false,
        })
    }

    pub(super) async fn inspect(
        &mut self,
        container: &str,
    ) -> Result<ContainerInspectResponse, DockerError> {
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
pub(crate) fn supported_api_version(message: &str) -> Option<ClientVersion> {
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
pub(crate) fn map_error(err: BollardError, socket: &Path, container: &str) -> DockerError {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}

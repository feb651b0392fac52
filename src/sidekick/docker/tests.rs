//! `discover` against a stand-in engine (a Unix socket answering canned HTTP), and the
//! classification of [`DockerError`]s.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ID: &str = "dae6f77ee4581d58b9317585caf177d4ebf929451e344c47b38532a49a14cdd5";
const OTHER: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
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

// ---- discover against a stand-in engine ----------------------------------------------------

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
    let too_new =
        r#"{"message":"client version 1.53 is too new. Maximum supported API version is 1.41"}"#;
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
    let (_dir, socket, _task) = fake_engine(vec![(500, r#"{"message":"boom"}"#.to_string())]).await;
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

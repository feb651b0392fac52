//! A real HAProxy in master-worker mode (`haproxy -W -S <master socket>`), loading the shipped
//! base configuration (`haproxy/haproxy.cfg`) and one rendered file, with the environment the
//! base configuration reads (`DOCKREG_RUN_DIR`, `DOCKREG_HTTP_BIND`, `DOCKREG_STATS_BIND`).

use crate::{eventually, free_port, repo_root, Guard};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// HAProxy, stopped (master and workers) when dropped. Its log (the master's stderr) is
/// `dir/haproxy.log`; its sockets are `dir/master.sock` and `dir/admin.sock`.
pub struct Haproxy {
    /// The frontend's address.
    pub http: SocketAddr,
    pub master_socket: PathBuf,
    /// The admin socket (runtime API) the base configuration opens.
    pub admin_socket: PathBuf,
    /// The base configuration.
    pub base: PathBuf,
    /// The rendered file.
    pub output: PathBuf,
    /// The environment HAProxy runs with; the watcher needs it too (it runs `haproxy -c`).
    pub env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<Guard>,
}

impl Haproxy {
    /// Starts HAProxy with `haproxy/haproxy.cfg` and `dir/backends.cfg` (an empty `service`
    /// backend until the watcher renders it).
    pub async fn start(dir: &Path) -> Haproxy {
        Self::start_with_output(dir, dir.join("backends.cfg")).await
    }

    /// Like [`start`](Self::start), with the rendered file at `output` (another folder, e.g.
    /// a tiny tmpfs).
    pub async fn start_with_output(dir: &Path, output: PathBuf) -> Haproxy {
        Self::start_with(dir, repo_root().join("haproxy/haproxy.cfg"), output).await
    }

    /// Starts HAProxy with the base configuration `base` and the rendered file `output`
    /// (created with an empty `service` backend when missing); returns once the frontend
    /// accepts connections.
    pub async fn start_with(dir: &Path, base: PathBuf, output: PathBuf) -> Haproxy {
        Self::start_with_env(dir, base, output, &[]).await
    }

    /// [`start_with`](Self::start_with), with `extra` variables in HAProxy's environment too
    /// (a rendered file may read them, e.g. to bind a frontend of its own; they are in
    /// [`Haproxy::env`], which the watcher gets for `haproxy -c`).
    pub async fn start_with_env(
        dir: &Path,
        base: PathBuf,
        output: PathBuf,
        extra: &[(String, String)],
    ) -> Haproxy {
        if !output.exists() {
            std::fs::write(&output, "backend service\n").expect("write backends.cfg");
        }
        let http: SocketAddr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let env = vec![
            ("DOCKREG_RUN_DIR".to_string(), dir.display().to_string()),
            ("DOCKREG_HTTP_BIND".to_string(), http.to_string()),
            (
                "DOCKREG_STATS_BIND".to_string(),
                format!("127.0.0.1:{}", free_port()),
            ),
        ]
        .into_iter()
        .chain(extra.iter().cloned())
        .collect();
        let mut h = Haproxy {
            http,
            master_socket: dir.join("master.sock"),
            admin_socket: dir.join("admin.sock"),
            base,
            output,
            env,
            dir: dir.to_path_buf(),
            child: None,
        };
        h.spawn().await;
        h
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("haproxy.log"))
            .expect("open haproxy log");
        let child = Command::new("haproxy")
            .args(["-W", "-S"])
            .args([&self.master_socket, Path::new("-f"), &self.base])
            .args([Path::new("-f"), &self.output])
            .envs(self.env.iter().cloned())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("haproxy not found: install haproxy (tests/run.sh does)");
        self.child = Some(Guard(child));
        let http = self.http;
        eventually(Duration::from_secs(10), "HAProxy listening", || async {
            TcpStream::connect(http).await.is_ok()
        })
        .await;
    }

    /// The master's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guard::pid)
    }

    /// Stops HAProxy (master and workers) and removes its sockets, as a stopped service
    /// leaves them.
    pub fn stop(&mut self) {
        drop(self.child.take());
        let _ = std::fs::remove_file(&self.master_socket);
        let _ = std::fs::remove_file(&self.admin_socket);
    }

    /// Starts HAProxy again with the same files, ports and sockets.
    pub async fn start_again(&mut self) {
        self.stop();
        self.spawn().await;
    }

    /// HAProxy's own log (its master's stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
    }

    /// A command on the admin (runtime API) socket; panics when the socket does not answer
    /// within 10 s.
    pub async fn admin(&self, cmd: &str) -> String {
        admin_command(&self.admin_socket, cmd, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// One command on an admin socket at `path` (non-interactive: HAProxy answers, then closes);
/// the error names the socket, and says so when there was no answer within `timeout`.
pub async fn admin_command(path: &Path, cmd: &str, timeout: Duration) -> Result<String, String> {
    let exchange = async {
        let mut s = UnixStream::connect(path).await?;
        s.write_all(format!("{cmd}\n").as_bytes()).await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok::<_, std::io::Error>(out)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(out)) => Ok(out),
        Ok(Err(e)) => Err(format!("admin socket {}: {e} ({cmd:?})", path.display())),
        Err(_) => Err(format!(
            "admin socket {}: no answer to {cmd:?} in {timeout:?}",
            path.display()
        )),
    }
}

//! A real etcd on free loopback ports: one member or a three-member cluster, with its data and
//! log in a folder the caller owns; kill, wipe, restart and snapshot helpers.

use crate::{eventually, free_port, Guard};
use etcd_client::Client;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// How to start a single member (see [`Etcd::start_with`]).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The client port; a free one when `None`.
    pub client_port: Option<u16>,
    /// Another address to serve clients on, same port (the Docker bridge gateway, which
    /// containers reach).
    pub also_on: Option<String>,
    /// `--quota-backend-bytes` (etcd's default, 2 GiB, when `None`).
    pub quota_backend_bytes: Option<u64>,
}

/// One etcd member, killed when dropped. Its data is `dir/etcd-<name>`, its log
/// `dir/etcd-<name>.log`.
pub struct Etcd {
    pub client_port: u16,
    peer_port: u16,
    name: String,
    cluster: String,
    data: PathBuf,
    log: PathBuf,
    extra_ip: Option<String>,
    quota: Option<u64>,
    child: Option<Guard>,
}

impl Etcd {
    /// A single member on free ports, started and answering.
    pub async fn start(dir: &Path) -> Etcd {
        Self::start_with(dir, Options::default()).await
    }

    /// A single member serving clients on `client_port`.
    pub async fn start_on(dir: &Path, client_port: u16) -> Etcd {
        let opts = Options {
            client_port: Some(client_port),
            ..Options::default()
        };
        Self::start_with(dir, opts).await
    }

    /// A single member that containers reach too: it also listens on `ip` (the Docker bridge
    /// gateway), same port.
    pub async fn start_reachable(dir: &Path, ip: &str) -> Etcd {
        let opts = Options {
            also_on: Some(ip.to_string()),
            ..Options::default()
        };
        Self::start_with(dir, opts).await
    }

    /// A single member as `opts` say, started and answering.
    pub async fn start_with(dir: &Path, opts: Options) -> Etcd {
        let peer_port = free_port();
        let name = "default".to_string();
        let mut e = Etcd {
            client_port: opts.client_port.unwrap_or_else(free_port),
            peer_port,
            cluster: format!("{name}=http://127.0.0.1:{peer_port}"),
            data: dir.join(format!("etcd-{name}")),
            log: dir.join(format!("etcd-{name}.log")),
            name,
            extra_ip: opts.also_on,
            quota: opts.quota_backend_bytes,
            child: None,
        };
        e.spawn();
        e.wait_ready().await;
        e
    }

    /// A three-member cluster on free ports; returns the members, all answering.
    pub async fn cluster(dir: &Path) -> Vec<Etcd> {
        let peers: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let cluster = (0..3)
            .map(|i| format!("m{i}=http://127.0.0.1:{}", peers[i]))
            .collect::<Vec<_>>()
            .join(",");
        let mut members: Vec<Etcd> = (0..3)
            .map(|i| Etcd {
                client_port: free_port(),
                peer_port: peers[i],
                data: dir.join(format!("etcd-m{i}")),
                log: dir.join(format!("etcd-m{i}.log")),
                name: format!("m{i}"),
                cluster: cluster.clone(),
                extra_ip: None,
                quota: None,
                child: None,
            })
            .collect();
        for m in &mut members {
            m.spawn();
        }
        for m in &members {
            m.wait_ready().await;
        }
        members
    }

    fn spawn(&mut self) {
        let log = File::create(&self.log).expect("create etcd log");
        let mut urls = self.url();
        if let Some(ip) = &self.extra_ip {
            urls = format!("{urls},http://{ip}:{}", self.client_port);
        }
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--listen-client-urls", &urls])
            .args(["--advertise-client-urls", &urls])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-cluster-state", "new"]);
        if let Some(bytes) = self.quota {
            cmd.arg("--quota-backend-bytes").arg(bytes.to_string());
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd not found: install etcd-server (tests/run.sh does)");
        self.child = Some(Guard(child));
    }

    async fn wait_ready(&self) {
        let url = self.url();
        eventually(Duration::from_secs(20), &format!("etcd at {url}"), || {
            let url = url.clone();
            async move {
                match Client::connect([url.as_str()], None).await {
                    Ok(mut c) => {
                        tokio::time::timeout(Duration::from_secs(1), c.get("/ready-probe", None))
                            .await
                            .is_ok_and(|r| r.is_ok())
                    }
                    Err(_) => false,
                }
            }
        })
        .await;
    }

    /// The client URL on loopback.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// The client URL containers use (the extra address, when there is one).
    pub fn container_url(&self) -> String {
        match &self.extra_ip {
            Some(ip) => format!("http://{ip}:{}", self.client_port),
            None => self.url(),
        }
    }

    /// The process id of the running member, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Guard::pid)
    }

    /// A client of this member.
    pub async fn client(&self) -> Client {
        Client::connect([self.url()], None)
            .await
            .expect("connect to test etcd")
    }

    /// Kills etcd without any cleanup (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut g) = self.child.take() {
            let _ = g.0.kill();
            let _ = g.0.wait();
        }
    }

    /// Kills etcd (SIGKILL) and deletes its data: the next [`Etcd::restart`] starts a new, empty
    /// cluster on the same ports (etcd wiped and recreated).
    pub fn kill_and_wipe(&mut self) {
        self.kill();
        if let Err(e) = std::fs::remove_dir_all(&self.data) {
            assert!(
                e.kind() == std::io::ErrorKind::NotFound,
                "wiping {}: {e}",
                self.data.display()
            );
        }
    }

    /// Starts etcd again on the same ports and data.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready().await;
    }

    /// `etcdctl snapshot save <path>` of this member.
    pub fn snapshot_save(&self, path: &Path) {
        let mut cmd = Command::new("etcdctl");
        cmd.args(["--endpoints", &self.url(), "snapshot", "save"])
            .arg(path);
        etcdctl(&mut cmd);
    }

    /// Kills etcd, replaces its data with `snapshot` (`etcdctl snapshot restore` with the same
    /// name, cluster and peer URL) and starts it again on the same ports.
    pub async fn restore_from(&mut self, snapshot: &Path) {
        self.kill_and_wipe();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new("etcdctl");
        cmd.args(["snapshot", "restore"])
            .arg(snapshot)
            .arg("--data-dir")
            .arg(&self.data)
            .args(["--name", &self.name])
            .args(["--initial-cluster", &self.cluster])
            .args(["--initial-advertise-peer-urls", &peer]);
        etcdctl(&mut cmd);
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs an `etcdctl` command (API v3) and panics with its output if it fails.
fn etcdctl(cmd: &mut Command) {
    let out = cmd
        .env("ETCDCTL_API", "3")
        .output()
        .expect("etcdctl not found: install etcd-client (tests/run.sh does)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

//! TLS for the tests: a CA with a server and a client certificate made by `openssl`, and a
//! single-member etcd that serves clients over TLS only (and requires a client certificate).
//!
//! The server certificate names every address etcd listens on: 127.0.0.1 for the tests, and
//! the Docker bridge gateway when containers must reach it too.

use crate::{eventually, free_port, Guard};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

/// `ca.pem`, `server.pem`/`server.key` and `client.pem`/`client.key` in one folder.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// Makes a new CA in `dir` (created if missing) and a server and a client certificate it
    /// signed, both valid for the IP addresses `ips`.
    pub fn make(dir: &Path, ips: &[&str]) -> Certs {
        std::fs::create_dir_all(dir).expect("certificate folder");
        let san = ips
            .iter()
            .map(|ip| format!("IP:{ip}"))
            .collect::<Vec<_>>()
            .join(",");
        let script = format!(
            "openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=test-ca \
               -addext basicConstraints=critical,CA:TRUE \
               -addext keyUsage=critical,keyCertSign,cRLSign \
               -keyout ca.key -out ca.pem 2>/dev/null
             for n in server client; do
               openssl req -newkey rsa:2048 -nodes -subj /CN=dockreg-$n \
                 -keyout $n.key -out $n.csr 2>/dev/null
               printf 'subjectAltName={san}\\nbasicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth,clientAuth\\n' > $n.ext
               openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                 -extfile $n.ext -out $n.pem 2>/dev/null
             done
             chmod 0644 *.pem *.key"
        );
        let out = Command::new("sh")
            .arg("-ec")
            .arg(script)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    /// The path of one of the files (`ca.pem`, `client.key`, …).
    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    /// Client TLS options trusting this CA and presenting the client certificate.
    pub fn client_tls(&self) -> TlsOptions {
        let read = |f: &str| std::fs::read(self.dir.join(f)).expect("read certificate");
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(read("ca.pem")))
            .identity(Identity::from_pem(read("client.pem"), read("client.key")))
    }
}

/// A single-member etcd serving clients over TLS on one port, on each of `ips`; clients must
/// present a certificate of the same CA.
pub struct TlsEtcd {
    pub port: u16,
    pub certs: Certs,
    _child: Guard,
}

impl TlsEtcd {
    /// Starts it with its data and log in `dir`; `certs` must name all of `ips`.
    pub async fn start(dir: &Path, certs: Certs, ips: &[&str]) -> TlsEtcd {
        let (port, peer) = (free_port(), free_port());
        let urls = ips
            .iter()
            .map(|ip| format!("https://{ip}:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.join("etcd-tls"))
            .args(["--listen-client-urls", &urls])
            .args(["--advertise-client-urls", &urls])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("default={peer_url}")])
            .args(["--cert-file", &certs.path("server.pem")])
            .args(["--key-file", &certs.path("server.key")])
            .args(["--trusted-ca-file", &certs.path("ca.pem")])
            .arg("--client-cert-auth")
            .stderr(std::fs::File::create(dir.join("etcd-tls.log")).expect("etcd log"))
            .spawn()
            .expect("etcd not found: install etcd-server (tests/run.sh does)");
        let e = TlsEtcd {
            port,
            certs,
            _child: Guard(child),
        };
        eventually(Duration::from_secs(20), "etcd with TLS up", || async {
            e.etcdctl(&["endpoint", "health"]).status.success()
        })
        .await;
        e
    }

    /// The client URL on `ip`.
    pub fn url_on(&self, ip: &str) -> String {
        format!("https://{ip}:{}", self.port)
    }

    /// `etcdctl` (API v3) against the loopback URL, with the client certificate.
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url_on("127.0.0.1")])
            .args(["--cacert", &self.certs.path("ca.pem")])
            .args(["--cert", &self.certs.path("client.pem")])
            .args(["--key", &self.certs.path("client.key")])
            .args(args)
            .output()
            .expect("etcdctl not found: install etcd-client (tests/run.sh does)")
    }

    /// A client over TLS on the loopback URL.
    pub async fn client(&self) -> Client {
        let opts = ConnectOptions::new().with_tls(self.certs.client_tls());
        Client::connect([self.url_on("127.0.0.1")], Some(opts))
            .await
            .expect("connect to the TLS etcd")
    }
}

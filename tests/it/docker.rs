//! Docker helpers for the sidekick tests: a local image built `FROM scratch` with a statically
//! linked `dockreg` and a static busybox (its `httpd` is the app), containers that are removed
//! when their handle drops, and an etcd reachable from containers through the bridge gateway.
//!
//! Without a reachable Docker engine the tests skip with a message, except under `CI=true`,
//! where they fail: CI must run them.

#![allow(dead_code)]

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Runs `docker <args>`; panics with Docker's message on failure.
pub fn docker(args: &[&str]) -> String {
    let out = docker_output(args);
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

pub fn docker_output(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker CLI not found")
}

/// Whether the Docker tests can run here; `false` means skip (never under CI).
pub fn docker_available() -> bool {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no Docker engine is reachable: the sidekick tests must run");
        }
        eprintln!("SKIPPED: no Docker engine reachable (docker version failed)");
    }
    ok
}

/// The Docker bridge gateway: the host address containers reach. Older engines leave the
/// gateway out of `network inspect`; then it is the bridge interface's own address.
pub fn bridge_gateway() -> String {
    let gw = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ]);
    if !gw.is_empty() {
        return gw;
    }
    let iface = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    ]);
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &iface])
        .output()
        .expect("ip (iproute2) not found");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no IPv4 address on the Docker bridge {iface}: {text}"))
}

/// Builds `dockreg` statically (its own target folder) once per test run.
fn static_dockreg() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let target_dir = Path::new(REPO).join("target/static");
        let triple = "x86_64-unknown-linux-gnu";
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--profile",
                "sidekick",
                "--bin",
                "dockreg",
                "--target",
                triple,
            ])
            .arg("--target-dir")
            .arg(&target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(REPO)
            .status()
            .expect("run cargo");
        assert!(status.success(), "static build of dockreg failed");
        target_dir.join(triple).join("sidekick/dockreg")
    })
    .clone()
}

/// The test image: `dockreg` as entrypoint, busybox for the app. Built once per run.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox missing: apt-get install busybox-static (tests/run.sh does)"
        );
        let ctx = tempfile::tempdir().expect("build context");
        let c = ctx.path();
        std::fs::copy(static_dockreg(), c.join("dockreg")).expect("copy dockreg");
        std::fs::copy(busybox, c.join("busybox")).expect("copy busybox");
        std::fs::create_dir_all(c.join("www")).unwrap();
        std::fs::write(c.join("www/index.html"), "hello from the app\n").unwrap();
        std::fs::write(c.join("www/health"), "ok\n").unwrap();
        std::fs::write(
            c.join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY dockreg /bin/dockreg\nCOPY www /www\nENTRYPOINT [\"/bin/dockreg\"]\n",
        )
        .unwrap();
        let tag = "dockreg-test:latest".to_string();
        docker(&["build", "-q", "-t", &tag, &c.display().to_string()]);
        tag
    })
}

/// A running container, force-removed on drop.
pub struct Container {
    pub id: String,
}

impl Container {
    /// `docker run -d <docker_args> <image> <args>`.
    pub fn run(docker_args: &[&str], args: &[&str]) -> Container {
        let mut all = vec!["run", "-d"];
        all.extend_from_slice(docker_args);
        all.push(image());
        all.extend_from_slice(args);
        Container { id: docker(&all) }
    }

    /// The host port Docker published `port/tcp` on (IPv4 binding).
    pub fn host_port(&self, port: u16) -> u16 {
        let out = docker_output(&["port", &self.id, &format!("{port}/tcp")]);
        if !out.status.success() {
            panic!(
                "docker port {port}/tcp: {}; container state {}; log:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                docker(&["inspect", "--format", "{{json .State}}", &self.id]),
                self.logs()
            );
        }
        let out = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.lines()
            .find(|l| l.starts_with("0.0.0.0:"))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no IPv4 binding in `docker port`: {out}"))
    }

    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["exec", self.id.as_str()];
        all.extend_from_slice(args);
        docker(&all);
    }

    pub fn logs(&self) -> String {
        let out = docker_output(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn running(&self) -> bool {
        docker(&["inspect", "--format", "{{.State.Running}}", &self.id]) == "true"
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_output(&["rm", "-f", &self.id]);
    }
}

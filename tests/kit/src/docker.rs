//! The local Docker engine: the CLI, the bridge address containers reach the host on, the
//! statically linked sidekick, the test image and containers that are removed when their
//! handle drops.
//!
//! The test image is built `FROM scratch` with the static `dockreg` as entrypoint and Debian's
//! static busybox (its `httpd` is the app). Its tag is per checkout ([`image_tag`]), so test
//! runs in two checkouts never use each other's image; `tests/run.sh` removes it at the end.
//!
//! Without a reachable Docker engine the tests skip with a message ([`docker_available`]),
//! except under `CI=true`, where they fail: CI must run them.

use crate::repo_root;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The target the static sidekick is built for.
pub const TRIPLE: &str = "x86_64-unknown-linux-gnu";
/// Debian's statically linked busybox (package busybox-static): the app in the images.
pub const BUSYBOX: &str = "/bin/busybox";
/// Names the static sidekick to use instead of building it (`tests/run.sh` sets it to the
/// binary it built up front).
pub const STATIC_BIN_ENV: &str = "DOCKREG_TEST_STATIC_BIN";
/// Names the test image's tag (`tests/run.sh` sets it, and removes that image at the end).
pub const IMAGE_ENV: &str = "DOCKREG_TEST_IMAGE";

/// Runs `docker <args>`; returns its trimmed stdout, or the command and Docker's message.
pub fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .map_err(|e| format!("running the docker CLI: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs `docker <args>`; panics with Docker's message on failure.
pub fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `docker <args>` and returns what it did, whatever that was.
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

/// The Docker bridge gateway: the host address containers reach; panics when there is none.
pub fn bridge_gateway() -> String {
    try_bridge_gateway().unwrap_or_else(|e| panic!("{e}"))
}

/// The Docker bridge gateway. Older engines leave the gateway out of `network inspect`; then
/// it is the bridge interface's own address.
pub fn try_bridge_gateway() -> Result<String, String> {
    let gw = try_docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ])?;
    if !gw.is_empty() {
        return Ok(gw);
    }
    let iface = try_docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
    ])?;
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", &iface])
        .output()
        .map_err(|e| format!("running ip (apt-get install iproute2): {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|cidr| cidr.split('/').next())
        .map(str::to_string)
        .ok_or_else(|| format!("no IPv4 address on the Docker bridge {iface}: {text}"))
}

/// Where the static sidekick is built: its own target folder, `target/static`, with the
/// `sidekick` profile (what `tests/run.sh` and the README build).
pub fn static_dockreg_path() -> PathBuf {
    repo_root()
        .join("target/static")
        .join(TRIPLE)
        .join("sidekick/dockreg")
}

/// The statically linked `dockreg` for the images, once per process: the binary named by
/// [`STATIC_BIN_ENV`] when set (`tests/run.sh` built it up front), else built here with
/// `cargo build --profile sidekick` (a no-op when it is up to date).
///
/// The nested cargo runs with the environment `cargo test` gave this process minus what
/// cargo sets for the test itself (`CARGO_MANIFEST_DIR`, `CARGO_PKG_*`, …): some build
/// scripts (ring's) rerun when one of those changes, and the same build started from a shell
/// has none of them, so inheriting them would build everything a second time.
pub fn static_dockreg() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os(STATIC_BIN_ENV) {
            let bin = PathBuf::from(bin);
            assert!(
                bin.is_file(),
                "{STATIC_BIN_ENV}={} is not a file",
                bin.display()
            );
            return bin;
        }
        let root = repo_root();
        let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
        cmd.args(["build", "--profile", "sidekick", "--bin", "dockreg"])
            .args(["--target", TRIPLE])
            .arg("--target-dir")
            .arg(root.join("target/static"))
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .current_dir(&root);
        for (key, _) in std::env::vars_os() {
            if key.to_str().is_some_and(set_by_cargo_for_the_test) {
                cmd.env_remove(key);
            }
        }
        let status = cmd.status().expect("run cargo");
        assert!(status.success(), "static build of dockreg failed");
        static_dockreg_path()
    })
    .clone()
}

/// Whether `cargo test` sets `var` for the test process (the crate's metadata and paths), as
/// opposed to configuration the user gave cargo (`CARGO_HOME`, `CARGO_TARGET_DIR`, …).
fn set_by_cargo_for_the_test(var: &str) -> bool {
    const EXACT: [&str; 8] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    EXACT.contains(&var) || var.starts_with("CARGO_PKG_") || var.starts_with("CARGO_BIN_EXE_")
}

/// The test image's tag: [`IMAGE_ENV`] when set, else `dockreg-test:<hash of the checkout's
/// path>`, so that two checkouts never share (or remove) one image.
pub fn image_tag() -> String {
    if let Ok(tag) = std::env::var(IMAGE_ENV) {
        return tag;
    }
    // FNV-1a: stable across Rust releases, unlike the std hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in repo_root().as_os_str().as_encoded_bytes() {
        h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("dockreg-test:{h:016x}")
}

/// Copies the static sidekick `dockreg` (as `dockreg`) and [`BUSYBOX`] (as `busybox`) into
/// the image build context `ctx`.
pub fn stage_binaries(ctx: &Path, dockreg: &Path) -> Result<(), String> {
    std::fs::copy(dockreg, ctx.join("dockreg"))
        .map_err(|e| format!("copying the static dockreg {}: {e}", dockreg.display()))?;
    std::fs::copy(BUSYBOX, ctx.join("busybox")).map_err(|e| {
        format!("copying {BUSYBOX} (apt-get install busybox-static; tests/run.sh does): {e}")
    })?;
    Ok(())
}

/// `docker build -q -t <tag> <ctx>`.
pub fn build_image(ctx: &Path, tag: &str) -> Result<(), String> {
    try_docker(&["build", "-q", "-t", tag, &ctx.display().to_string()]).map(drop)
}

/// The test image: `dockreg` as entrypoint, busybox for the app, `/www` with an index page
/// and `/health`, and a Docker `HEALTHCHECK` through `dockreg healthcheck`. Built once per
/// process.
pub fn image() -> &'static str {
    static IMAGE: OnceLock<String> = OnceLock::new();
    IMAGE.get_or_init(|| {
        assert!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} missing: apt-get install busybox-static (tests/run.sh does)"
        );
        let ctx = tempfile::tempdir().expect("build context");
        let c = ctx.path();
        stage_binaries(c, &static_dockreg()).unwrap_or_else(|e| panic!("{e}"));
        std::fs::create_dir_all(c.join("www")).unwrap();
        std::fs::write(c.join("www/index.html"), "hello from the app\n").unwrap();
        std::fs::write(c.join("www/health"), "ok\n").unwrap();
        std::fs::write(
            c.join("Dockerfile"),
            concat!(
                "FROM scratch\nCOPY busybox /bin/busybox\nCOPY dockreg /bin/dockreg\nCOPY www /www\n",
                // Healthy once a sidekick started with --metrics-addr 127.0.0.1:9477 is ready;
                // the containers of the other tests serve no health and show as unhealthy.
                "HEALTHCHECK --interval=1s --timeout=3s --retries=1 ",
                "CMD [\"/bin/dockreg\", \"healthcheck\", \"--metrics-addr\", \"127.0.0.1:9477\"]\n",
                "ENTRYPOINT [\"/bin/dockreg\"]\n",
            ),
        )
        .unwrap();
        let tag = image_tag();
        build_image(c, &tag).unwrap_or_else(|e| panic!("{e}"));
        tag
    })
}

/// A running container of the test image, force-removed on drop.
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

    /// The host port Docker published `port/tcp` on for host address `ip` (`-p ip::port`).
    pub fn host_port_on(&self, ip: &str, port: u16) -> u16 {
        let out = docker(&["port", &self.id, &format!("{port}/tcp")]);
        out.lines()
            .find(|l| l.starts_with(&format!("{ip}:")))
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no binding on {ip} in `docker port`: {out}"))
    }

    /// `docker exec <id> <args>`.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["exec", self.id.as_str()];
        all.extend_from_slice(args);
        docker(&all);
    }

    /// The container's output so far (stdout, then stderr).
    pub fn logs(&self) -> String {
        let out = docker_output(&["logs", &self.id]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Whether the container is running.
    pub fn running(&self) -> bool {
        docker(&["inspect", "--format", "{{.State.Running}}", &self.id]) == "true"
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker_output(&["rm", "-f", &self.id]);
    }
}

//! One benchmark run's world: a folder, etcd (one member or a three-member cluster), HAProxy in
//! master-worker mode (the shipped base config plus the rendered file), and the release watcher
//! started against them with its log in the folder; what that log says.

use super::{start_etcd, WATCHER};
use anyhow::{anyhow, bail, Context as _, Result};
use dockreg::haproxy::{MasterSocket, ProcList};
use dockreg_testkit::backends::DemoBackends;
use dockreg_testkit::etcd::Etcd;
use dockreg_testkit::haproxy::{admin_command, Haproxy};
use dockreg_testkit::{free_port, Guard};
use etcd_client::{Client, Txn, TxnOp};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `demo_backend` example binary, relative to the repository root.
pub const BACKEND_BIN: &str = "target/release/examples/demo_backend";
/// The shipped base configuration HAProxy and the watcher load.
pub const BASE_CONFIG: &str = "haproxy/haproxy.cfg";
/// The shipped template (what the built-in renderer renders too).
pub const DEFAULT_TEMPLATE: &str = "templates/haproxy-backends.cfg.tera";
/// First word of every backend answer (`bench <address>`).
pub const ID_PREFIX: &str = "bench";
/// etcd's default limit of operations in one transaction.
pub const TXN_OPS: usize = 128;

/// Which etcd a rig runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EtcdKind {
    /// One member with a 4 GiB quota ([`start_etcd`]).
    Single,
    /// The kit's three-member cluster; the watcher gets every member in `--etcd`.
    Cluster,
}

/// One run's world: a folder, etcd and HAProxy (master-worker, base config + rendered file).
pub struct Rig {
    _tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    /// The etcd members (one, or three for a cluster).
    pub etcd: Vec<Etcd>,
    /// etcd's client URLs, comma-separated (as `--etcd` takes them).
    pub url: String,
    /// A client of every member.
    pub client: Client,
    _haproxy: Haproxy,
    pub http: SocketAddr,
    pub master: MasterSocket,
    pub admin: PathBuf,
    pub output: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Rig {
    /// A rig with a single etcd member; its folder is named `bench-<name>-…`.
    pub async fn start(name: &str) -> Result<Rig> {
        Self::start_with(name, EtcdKind::Single).await
    }

    /// A rig with the etcd `kind` says; its folder is named `bench-<name>-…`. `BENCH_KEEP=1`
    /// keeps the folder (logs of etcd, HAProxy and the watcher) and prints where it is.
    pub async fn start_with(name: &str, kind: EtcdKind) -> Result<Rig> {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("bench-{name}-"))
            .tempdir()
            .context("creating a temporary folder")?;
        let (tmp, dir) = if std::env::var_os("BENCH_KEEP").is_some() {
            let dir = tmp.keep();
            eprintln!("bench: {name}: files kept in {}", dir.display());
            (None, dir)
        } else {
            let dir = tmp.path().to_path_buf();
            (Some(tmp), dir)
        };
        let etcd = match kind {
            EtcdKind::Single => vec![start_etcd(&dir).await],
            EtcdKind::Cluster => Etcd::cluster(&dir).await,
        };
        let urls: Vec<String> = etcd.iter().map(Etcd::url).collect();
        let client = Client::connect(&urls, None)
            .await
            .context("connecting to etcd")?;
        let output = dir.join("backends.cfg");
        let haproxy = Haproxy::start_with(&dir, PathBuf::from(BASE_CONFIG), output.clone()).await;
        Ok(Rig {
            _tmp: tmp,
            admin: haproxy.admin_socket.clone(),
            dir,
            etcd,
            url: urls.join(","),
            client,
            http: haproxy.http,
            master: MasterSocket {
                path: haproxy.master_socket.clone(),
                timeout: Duration::from_secs(10),
            },
            output,
            env: haproxy.env.clone(),
            _haproxy: haproxy,
        })
    }

    pub async fn show_proc(&self) -> Result<ProcList> {
        self.master.show_proc().await.map_err(|e| anyhow!(e))
    }

    /// The watcher's arguments for this rig, runtime flags included when `runtime`.
    pub fn watcher_args(&self, runtime: bool) -> Vec<String> {
        let mut args = vec![
            "--etcd".to_string(),
            self.url.clone(),
            "--haproxy-config".into(),
            BASE_CONFIG.into(),
            "--master-socket".into(),
            self.master.path.display().to_string(),
            "--output".into(),
            self.output.display().to_string(),
        ];
        if runtime {
            args.extend([
                "--runtime-socket".into(),
                self.admin.display().to_string(),
                "--server-state-file".into(),
                self.dir.join("server-state").display().to_string(),
            ]);
        }
        args
    }

    /// [`watcher_args`](Self::watcher_args) with the service prefixes `prefixes`
    /// (comma-separated) and the template `template`.
    pub fn watcher_args_with(&self, runtime: bool, prefixes: &str, template: &Path) -> Vec<String> {
        let mut args = self.watcher_args(runtime);
        args.extend([
            "--prefix".into(),
            prefixes.to_string(),
            "--template".into(),
            template.display().to_string(),
        ]);
        args
    }

    /// Starts the watcher with `args`; its log (text, `RUST_LOG=info`) goes to a file.
    pub fn spawn_watcher(&self, args: Vec<String>) -> Result<Watcher> {
        let log = self.dir.join(format!("watcher-{}.log", free_port()));
        let file = File::create(&log).context("creating the watcher log")?;
        let child = Command::new(WATCHER)
            .args(&args)
            .envs(self.env.iter().cloned())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {WATCHER} (cargo build --release first)"))?;
        let shown = self.shown(&args);
        Ok(Watcher {
            guard: Guard(child),
            log,
            shown,
        })
    }

    /// Starts the watcher and waits until HAProxy runs its first configuration (the watcher
    /// always reloads once at start) and the minimum reload interval has passed.
    pub async fn start_watcher(&self, args: Vec<String>) -> Result<Watcher> {
        let before = self.show_proc().await?.reloads;
        let mut watcher = self.spawn_watcher(args)?;
        self.wait_reload(&mut watcher, before, Duration::from_secs(60))
            .await?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        Ok(watcher)
    }

    /// Waits until the master has reloaded more than `before` times; returns when it saw it.
    pub async fn wait_reload(
        &self,
        watcher: &mut Watcher,
        before: u64,
        timeout: Duration,
    ) -> Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = self.show_proc().await {
                if p.reloads > before && p.current_workers().next().is_some() {
                    return Ok(Instant::now());
                }
            }
            watcher.check_running()?;
            if Instant::now() > deadline {
                bail!(
                    "HAProxy did not reload within {timeout:?}; watcher log:\n{}",
                    watcher.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A command line as printed: temporary paths as `$DIR`, etcd's URLs as `$ETCD`, long
    /// comma lists shortened.
    pub fn shown(&self, args: &[String]) -> String {
        let dir = self.dir.display().to_string();
        let mut out = String::from("dockreg-haproxy");
        for a in args {
            let mut a = a.replace(&dir, "$DIR").replace(&self.url, "$ETCD");
            let items: Vec<&str> = a.split(',').collect();
            if items.len() > 4 {
                a = format!(
                    "{},{},…,{} ({} items)",
                    items[0],
                    items[1],
                    items[items.len() - 1],
                    items.len()
                );
            }
            out.push(' ');
            out.push_str(&a);
        }
        out
    }

    /// Puts `running` under every key, in transactions of at most [`TXN_OPS`] operations.
    pub async fn put_all(&mut self, keys: &[String]) -> Result<()> {
        for chunk in keys.chunks(TXN_OPS) {
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::put(k.as_str(), "running", None))
                .collect();
            self.client
                .txn(Txn::new().and_then(ops))
                .await
                .context("etcd txn")?;
        }
        Ok(())
    }

    pub async fn put(&mut self, key: &str) -> Result<()> {
        self.client
            .put(key, "running", None)
            .await
            .with_context(|| format!("etcd put {key}"))?;
        Ok(())
    }

    pub async fn delete(&mut self, key: &str) -> Result<()> {
        self.client
            .delete(key, None)
            .await
            .with_context(|| format!("etcd delete {key}"))?;
        Ok(())
    }
}

/// The running watcher.
pub struct Watcher {
    pub guard: Guard,
    log: PathBuf,
    /// Its command line as printed.
    pub shown: String,
}

/// What the watcher's log says.
#[derive(Debug, Default, Clone)]
pub struct LogCounts {
    pub runtime: usize,
    pub reload: usize,
    pub warnings: usize,
    pub errors: usize,
    /// The first few distinct warning and error lines.
    pub problems: Vec<String>,
}

impl Watcher {
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self.guard.0.try_wait()? {
            bail!(
                "the watcher exited ({status}); its log:\n{}",
                self.log_tail(20)
            );
        }
        Ok(())
    }

    fn log_text(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log_text();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn counts(&self) -> LogCounts {
        let mut c = LogCounts::default();
        for line in self.log_text().lines() {
            c.runtime += usize::from(line.contains("path=runtime"));
            c.reload += usize::from(line.contains("path=reload"));
            let warn = line.contains(" WARN ");
            let error = line.contains(" ERROR ");
            c.warnings += usize::from(warn);
            c.errors += usize::from(error);
            if (warn || error) && c.problems.len() < 3 {
                // Without the timestamp, so repeats of one message count once.
                let msg = line.split_once(' ').map_or(line, |(_, rest)| rest);
                let msg: String = msg.chars().take(240).collect();
                if !c.problems.contains(&msg) {
                    c.problems.push(msg);
                }
            }
        }
        c
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI sequence: ESC [ parameters, ended by a letter.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `demo_backend` serving `n` free loopback ports; answers `bench <address>`. The servers keep
/// running whatever etcd says, so requests in flight on a removed server finish.
pub async fn start_backends(n: usize) -> Result<(Guard, Vec<SocketAddr>)> {
    let b = DemoBackends::start(Path::new(BACKEND_BIN), ID_PREFIX, n).await;
    Ok((b.guard, b.addrs))
}

/// One command on HAProxy's admin socket (non-interactive: HAProxy answers, then closes).
pub async fn admin(path: &Path, cmd: &str) -> Result<String> {
    admin_command(path, cmd, Duration::from_secs(2))
        .await
        .map_err(|e| anyhow!(e))
}

/// Whether the built watcher has the runtime-API flags.
pub fn runtime_flags_available() -> Result<bool> {
    let out = Command::new(WATCHER)
        .arg("--help")
        .output()
        .with_context(|| format!("running {WATCHER} --help (cargo build --release first)"))?;
    Ok(String::from_utf8_lossy(&out.stdout).contains("--runtime-socket"))
}

/// Checks that the files a benchmark needs are there (it runs from the repository root after
/// `cargo build --release --bin dockreg-haproxy --examples`).
pub fn check_built(files: &[&str]) -> Result<()> {
    for f in files {
        if !Path::new(f).exists() {
            bail!(
                "{f} not found: run from the repository root after \
                 `cargo build --release --bin dockreg-haproxy --examples`"
            );
        }
    }
    Ok(())
}

//! README promises of the sidekick in wrapper mode, each checked in a real container against
//! a real etcd: as PID 1 it reaps orphaned processes; the signals it forwards reach the app and
//! leave the registration alone; it registers over TLS (and a wrong CA is a clear error); it
//! ends registered under a live lease when etcd is restored from a snapshot (a new cluster id).

use crate::harness::*;
use crate::sidekick::*;
use dockreg_testkit::docker::*;
use dockreg_testkit::tls::{Certs, TlsEtcd};
use etcd_client::Client;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Starts an app container: `sidekick_extra` and the usual test flags for `etcd_url`, then
/// `app` (after `--`) instead of the plain httpd when given; `docker_extra` goes to
/// `docker run`. Returns it with the key it registers and its host port.
fn run_app(
    etcd_url: &str,
    docker_extra: &[&str],
    sidekick_extra: &[&str],
    app: Option<&[&str]>,
) -> (Container, String, u16) {
    let c = start_container(etcd_url, docker_extra, sidekick_extra, app);
    let port = c.host_port(8000);
    (c, format!("/service/127.0.0.1:{port}"), port)
}

/// [`run_app`] without asking for the published port (a container that may exit at once).
fn start_container(
    etcd_url: &str,
    docker_extra: &[&str],
    sidekick_extra: &[&str],
    app: Option<&[&str]>,
) -> Container {
    let mut args: Vec<String> = sidekick_extra.iter().map(|a| a.to_string()).collect();
    let usual = sidekick_args(etcd_url);
    match app {
        Some(app) => {
            let flags = usual.iter().take_while(|a| *a != "--");
            args.extend(flags.cloned());
            args.push("--".into());
            args.extend(app.iter().map(|a| a.to_string()));
        }
        None => args.extend(usual),
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut docker_args = vec!["-p", "8000", "-v", SOCK, "-e", "IP=127.0.0.1"];
    docker_args.extend_from_slice(docker_extra);
    Container::run(&docker_args, &args)
}

/// `docker exec <c> /bin/busybox <args>`: its stdout, or `None` if it failed.
fn busybox(c: &Container, args: &[&str]) -> Option<String> {
    let mut all = vec!["exec", c.id.as_str(), "/bin/busybox"];
    all.extend_from_slice(args);
    let out = docker_output(&all);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `within`; panics with `what` and
/// the container's processes and log.
fn poll<T>(c: &Container, within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        if t0.elapsed() > within {
            panic!(
                "timed out after {within:?} waiting for: {what}\nprocesses:\n{}\nlog:\n{}",
                busybox(c, &["ps", "-o", "pid,ppid,stat,comm,args"]).unwrap_or_default(),
                c.logs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `(state, ppid)` of a process from `/proc/<pid>/stat`, or `None` once it is gone.
fn proc_state(c: &Container, pid: &str) -> Option<(String, String)> {
    let stat = busybox(c, &["cat", &format!("/proc/{pid}/stat")])?;
    // "pid (comm) state ppid …": the command name may hold spaces, the state follows its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut f = rest.split_whitespace();
    Some((f.next()?.to_string(), f.next()?.to_string()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_1_reaps_an_orphaned_process_of_the_app() {
    let Some(mut s) = setup().await else { return };
    // The app starts a process in a subshell that exits at once: the process is orphaned and
    // the kernel gives it to PID 1. It runs until the test creates /www/go, then exits.
    let app = [
        "/bin/busybox",
        "sh",
        "-c",
        "( /bin/busybox sh -c 'until [ -e /www/go ]; do sleep 0.05; done' & echo $! > /www/orphan.pid ); \
         exec /bin/busybox httpd -f -p 8000 -h /www",
    ];
    let (c, key, _) = run_app(&s.etcd.container_url(), &[], &[], Some(&app));
    wait_key(&mut s.client, &key, true, Duration::from_secs(5), &c).await;

    let init = busybox(&c, &["cat", "/proc/1/cmdline"]).unwrap_or_default();
    assert!(
        init.split('\0').next() == Some("/bin/dockreg"),
        "the sidekick is PID 1: /proc/1/cmdline is {init:?}"
    );
    let pid = poll(&c, Duration::from_secs(10), "the orphan's pid file", || {
        busybox(&c, &["cat", "/www/orphan.pid"])
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
    });
    // Orphaned: its parent (the subshell) is gone and PID 1 adopted it.
    poll(
        &c,
        Duration::from_secs(10),
        "the orphan adopted by PID 1",
        || proc_state(&c, &pid).filter(|(_, ppid)| ppid == "1"),
    );
    // Sentinel: the orphan exits. Reaped, it leaves no /proc entry; a zombie would keep one
    // (state Z) for as long as PID 1 does not wait for it.
    busybox(&c, &["touch", "/www/go"]).expect("touch /www/go");
    let t0 = Instant::now();
    poll(
        &c,
        Duration::from_secs(10),
        "the orphan reaped",
        || match proc_state(&c, &pid) {
            None => Some(()),
            Some(_) => None,
        },
    );
    eprintln!(
        "orphan {pid} reaped {:?} after it was told to exit",
        t0.elapsed()
    );
    let ps = busybox(&c, &["ps", "-o", "pid,ppid,stat,comm"]).expect("ps");
    let zombies: Vec<&str> = ps
        .lines()
        .skip(1)
        .filter(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|s| s.starts_with('Z'))
        })
        .collect();
    assert!(zombies.is_empty(), "zombies left in the container:\n{ps}");
    assert!(c.running(), "{}", c.logs());
}

/// The signals README says are forwarded as they come (SIGTERM/SIGINT stop the sidekick).
const FORWARDED: [&str; 5] = ["HUP", "USR1", "USR2", "QUIT", "WINCH"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_signals_reach_the_app_and_leave_the_registration_alone() {
    let Some(mut s) = setup().await else { return };
    // The app records each signal it gets. busybox sh runs a trap between commands, so the
    // shell loops on short sleeps while httpd serves in the background.
    let traps = FORWARDED
        .iter()
        .map(|sig| format!("trap 'echo {sig} >> /www/signals' {sig}"))
        .collect::<Vec<_>>()
        .join("; ");
    let script =
        format!("{traps}; /bin/busybox httpd -f -p 8000 -h /www & while :; do sleep 0.05; done");
    let app = ["/bin/busybox", "sh", "-c", script.as_str()];
    let (c, key, _) = run_app(&s.etcd.container_url(), &[], &[], Some(&app));
    wait_key(&mut s.client, &key, true, Duration::from_secs(5), &c).await;
    let before = value(&mut s.client, &key).await.expect("registered");

    let mut want = String::new();
    for sig in FORWARDED {
        docker(&["kill", "-s", sig, &c.id]);
        want.push_str(sig);
        want.push('\n');
        // Sentinel: the app's trap recorded it. Each one before the next is sent, so the file
        // must read exactly the signals sent so far, each once and in order.
        let seen = poll(
            &c,
            Duration::from_secs(10),
            &format!("SIG{sig} at the app"),
            || {
                busybox(&c, &["cat", "/www/signals"])
                    .filter(|t| t.lines().count() >= want.lines().count())
            },
        );
        assert_eq!(seen, want, "signals the app got, after SIG{sig}");
        // The registration is untouched: same key, value and lease.
        assert_eq!(
            value(&mut s.client, &key).await,
            Some(before.clone()),
            "the registration after SIG{sig}; log:\n{}",
            c.logs()
        );
    }
    // And the lease is alive.
    let ttl = s
        .client
        .lease_time_to_live(before.1, None)
        .await
        .unwrap()
        .ttl();
    assert!(ttl > 0, "lease {:x} alive: ttl {ttl}", before.1);
    let log = c.logs();
    assert!(
        !log.contains("deregistered") && !log.contains("lease revoked"),
        "{log}"
    );
    assert!(c.running(), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_over_tls_and_a_wrong_ca_is_a_clear_error() {
    if !docker_available() {
        return;
    }
    image();
    let dir = tempfile::tempdir().unwrap();
    let gw = bridge_gateway();
    // The container reaches the host on the bridge gateway: the certificate names it too.
    let certs = Certs::make(&dir.path().join("certs"), &["127.0.0.1", &gw]);
    let certs_dir = certs.dir.display().to_string();
    let etcd = TlsEtcd::start(dir.path(), certs, &["127.0.0.1", &gw]).await;
    let mut client = etcd.client().await;
    let url = etcd.url_on(&gw);
    let tls = [
        "--etcd-ca",
        "/certs/ca.pem",
        "--etcd-cert",
        "/certs/client.pem",
        "--etcd-key",
        "/certs/client.key",
    ];
    let mount = format!("{certs_dir}:/certs:ro");
    let (c, key, _) = run_app(&url, &["-v", &mount], &tls, None);
    wait_key(&mut client, &key, true, Duration::from_secs(5), &c).await;
    let (v, lease) = value(&mut client, &key).await.unwrap();
    assert!(
        dockreg::core::endpoint::parse_value(v.as_bytes()).is_ok(),
        "{v}"
    );
    let ttl = client.lease_time_to_live(lease, None).await.unwrap().ttl();
    assert!(ttl > 0, "registered under a live lease: ttl {ttl}");
    // docker stop revokes the lease over TLS too.
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || docker(&["stop", &id]))
        .await
        .unwrap();
    assert_eq!(value(&mut client, &key).await, None, "{}", c.logs());

    // Another CA, which did not sign etcd's certificate (the client certificate stays good).
    let other = Certs::make(&dir.path().join("other"), &["127.0.0.1", &gw]);
    let wrong = [
        "--etcd-ca",
        "/other/ca.pem",
        "--etcd-cert",
        "/certs/client.pem",
        "--etcd-key",
        "/certs/client.key",
    ];
    let other_mount = format!("{}:/other:ro", other.dir.display());
    let c = start_container(&url, &["-v", &mount, "-v", &other_mount], &wrong, None);
    let t0 = Instant::now();
    poll(&c, Duration::from_secs(30), "the sidekick to exit", || {
        (!c.running()).then_some(())
    });
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &c.id]);
    let log = c.logs();
    eprintln!(
        "wrong CA: exit {code} after {:?}; log:\n{log}",
        t0.elapsed()
    );
    assert_eq!(code, "1", "{log}");
    let err = log
        .lines()
        .find(|l| l.contains("ERROR") && l.contains("--etcd-ca"))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        err.contains("--etcd-ca /other/ca.pem") && err.contains(&url),
        "the error names the flag and the endpoint: {err}"
    );
    assert!(!log.contains("panicked"), "{log}");
    let left = client
        .get(
            "/service/",
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    assert_eq!(left.count(), 0, "nothing registered: {:?}", left.kvs());
}

/// An etcd of the test's own, so it can be restored from a snapshot into a new data folder
/// and started again on the same ports (containers reach it on the bridge gateway too).
struct OwnEtcd {
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    gateway: String,
    child: Option<ChildGuard>,
}

impl OwnEtcd {
    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn container_url(&self) -> String {
        format!("http://{}:{}", self.gateway, self.client_port)
    }

    async fn start(&mut self, data: &Path) {
        let urls = format!("{},{}", self.url(), self.container_url());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("etcd.log"))
            .unwrap();
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(data)
            .args(["--listen-client-urls", &urls])
            .args(["--advertise-client-urls", &urls])
            .args(["--listen-peer-urls", &self.peer_url()])
            .args(["--initial-advertise-peer-urls", &self.peer_url()])
            .args(["--initial-cluster", &format!("default={}", self.peer_url())])
            .stderr(log)
            .spawn()
            .expect("etcd not found: install etcd-server (tests/run.sh does)");
        self.child = Some(ChildGuard(child));
        eventually(Duration::from_secs(20), "etcd up", || async {
            self.etcdctl(&["endpoint", "health"]).status.success()
        })
        .await;
    }

    fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args(["--endpoints", &self.url()])
            .args(args)
            .output()
            .expect("etcdctl not found: install etcd-client (tests/run.sh does)")
    }

    fn must(&self, args: &[&str]) {
        let out = self.etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    async fn client(&self) -> Client {
        Client::connect([self.url()], None).await.unwrap()
    }

    async fn cluster_id(&self) -> u64 {
        let mut c = self.client().await;
        c.status().await.unwrap().header().unwrap().cluster_id()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restored_from_a_snapshot_ends_with_the_key_under_a_live_lease() {
    if !docker_available() {
        return;
    }
    image();
    let dir = tempfile::tempdir().unwrap();
    let mut etcd = OwnEtcd {
        dir: dir.path().to_path_buf(),
        client_port: free_port(),
        peer_port: free_port(),
        gateway: bridge_gateway(),
        child: None,
    };
    etcd.start(&dir.path().join("data")).await;
    let mut client = etcd.client().await;
    let (c, key, _) = run_app(&etcd.container_url(), &[], &[], None);
    wait_key(&mut client, &key, true, Duration::from_secs(5), &c).await;
    let (_, old) = value(&mut client, &key).await.unwrap();
    let old_cluster = etcd.cluster_id().await;

    // The snapshot holds the key under the sidekick's lease; restored, it is a new cluster
    // (new id) with that key and lease in it, on the same client port.
    let snap = dir.path().join("snap.db").display().to_string();
    etcd.must(&["snapshot", "save", &snap]);
    etcd.child = None;
    let restored = dir.path().join("restored");
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore", &snap, "--name", "default"])
        .arg("--data-dir")
        .arg(&restored)
        .args([
            "--initial-cluster",
            &format!("default={}", etcd.peer_url()),
            "--initial-advertise-peer-urls",
            &etcd.peer_url(),
        ])
        // A new token, as etcd's recovery guide advises: the restored cluster gets a new id
        // (the same token, name and peer URL would give the old one back).
        .args(["--initial-cluster-token", "restored"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    etcd.start(&restored).await;
    let new_cluster = etcd.cluster_id().await;
    assert_ne!(old_cluster, new_cluster, "a restore makes a new cluster id");
    let mut client = etcd.client().await;

    // The sidekick notices the new cluster id, forgets its lease and registers under a new
    // one (the key restored under its old lease is still its own).
    let t0 = Instant::now();
    let new = loop {
        if let Some((v, lease)) = value(&mut client, &key).await.filter(|(_, l)| *l != old) {
            let ttl = client
                .lease_time_to_live(lease, None)
                .await
                .map_or(-1, |r| r.ttl());
            if lease != 0 && ttl > 0 {
                assert!(
                    dockreg::core::endpoint::parse_value(v.as_bytes()).is_ok(),
                    "{v}"
                );
                break lease;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "key {key} under a new live lease (not {old:x}); now {:?}; log:\n{}",
            value(&mut client, &key).await,
            c.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "restore: key under lease {new:x} (was {old:x}) {:?} after etcd was up",
        t0.elapsed()
    );
    // Sentinel: the restored old lease runs out (nobody keeps it alive). The key is still
    // there, under the new lease, alive.
    eventually(Duration::from_secs(15), "the old lease gone", || {
        let mut c = client.clone();
        async move {
            c.lease_time_to_live(old, None)
                .await
                .map_or(true, |r| r.ttl() <= 0)
        }
    })
    .await;
    let (_, lease) = value(&mut client, &key).await.expect("key still present");
    assert_eq!(lease, new, "{}", c.logs());
    let ttl = client.lease_time_to_live(new, None).await.unwrap().ttl();
    assert!(ttl > 0, "lease {new:x} alive: ttl {ttl}");
    assert!(c.running(), "{}", c.logs());
}

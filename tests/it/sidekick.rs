//! End-to-end tests of the `dockreg` sidekick inside real containers of the local Docker
//! engine, against a real etcd on the host, run as the seed runs it:
//! `docker run -d -p 8000 -v /var/run/docker.sock:/var/run/docker.sock -e IP=… image …`.

use crate::harness::*;
use dockreg_testkit::docker::*;
use etcd_client::Client;
use std::time::{Duration, Instant};

pub const SOCK: &str = "/var/run/docker.sock:/var/run/docker.sock";
pub const SIDEKICK: &str = env!("CARGO_BIN_EXE_dockreg");

/// The sidekick flags used in the tests: fast checks and a short TTL (the drain is the
/// default 2 s unless a test sets it).
pub fn sidekick_args(etcd: &str) -> Vec<String> {
    [
        "--etcd",
        etcd,
        "--port",
        "8000",
        "--interval",
        "1s",
        "--timeout",
        "500ms",
        "--fall",
        "2",
        "--rise",
        "1",
        "--ttl",
        "3s",
        "--check",
        "http",
        "--check-path",
        "/health",
        "--",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "8000",
        "-h",
        "/www",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub etcd: Etcd,
    pub client: Client,
}

pub async fn setup() -> Option<Setup> {
    if !docker_available() {
        return None;
    }
    image();
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start_reachable(dir.path(), &bridge_gateway()).await;
    let client = etcd.client().await;
    Some(Setup {
        _dir: dir,
        etcd,
        client,
    })
}

pub fn start_app(s: &Setup) -> (Container, String, u16) {
    start_app_with(s, &[])
}

/// Starts an app container with `extra` sidekick flags (ones `sidekick_args` does not set).
pub fn start_app_with(s: &Setup, extra: &[&str]) -> (Container, String, u16) {
    start_app_via(&s.etcd.container_url(), extra)
}

/// Starts an app container whose sidekick reaches etcd at `etcd_url` (a proxy, say).
pub fn start_app_via(etcd_url: &str, extra: &[&str]) -> (Container, String, u16) {
    let mut args: Vec<String> = extra.iter().map(|a| a.to_string()).collect();
    args.extend(sidekick_args(etcd_url));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let c = Container::run(&["-p", "8000", "-v", SOCK, "-e", "IP=127.0.0.1"], &args);
    let port = c.host_port(8000);
    let key = format!("/service/127.0.0.1:{port}");
    (c, key, port)
}

pub async fn value(client: &mut Client, key: &str) -> Option<(String, i64)> {
    let r = client.get(key, None).await.ok()?;
    r.kvs()
        .first()
        .map(|kv| (String::from_utf8_lossy(kv.value()).into_owned(), kv.lease()))
}

/// Waits until the key is present (or absent); returns how long that took.
pub async fn wait_key(
    client: &mut Client,
    key: &str,
    present: bool,
    within: Duration,
    c: &Container,
) -> Duration {
    let t0 = Instant::now();
    loop {
        if value(client, key).await.is_some() == present {
            return t0.elapsed();
        }
        if t0.elapsed() > within {
            panic!(
                "key {key} should be {} within {within:?}; container log:\n{}",
                if present { "present" } else { "gone" },
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_within_a_second_and_follows_health() {
    let Some(mut s) = setup().await else { return };
    let t0 = Instant::now();
    let (c, key, port) = start_app_with(&s, &["--drain", "500ms"]);
    let started = t0.elapsed();
    let took = wait_key(&mut s.client, &key, true, Duration::from_secs(1), &c).await;
    eprintln!("docker run took {started:?}; key present {took:?} after it returned");
    let (v, _) = value(&mut s.client, &key).await.unwrap();
    let meta =
        dockreg::core::endpoint::parse_value(v.as_bytes()).expect("the watcher accepts the value");
    assert!(
        meta.container.is_some_and(|id| c.id.starts_with(&id)),
        "{v}"
    );
    // The app answers on the registered host port.
    let r = get(format!("127.0.0.1:{port}").parse().unwrap())
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.contains("hello from the app"));

    // Unhealthy: gone within interval × fall + timeout (1 s × 2 + 0.5 s), with 1 s of slack.
    c.exec(&["/bin/busybox", "rm", "/www/health"]);
    wait_key(&mut s.client, &key, false, Duration::from_millis(3500), &c).await;
    // Healthy again: back (rise 1) within an interval and a bit.
    c.exec(&["/bin/busybox", "touch", "/www/health"]);
    wait_key(&mut s.client, &key, true, Duration::from_millis(2500), &c).await;

    // An operator deleting the key: it comes back at once (the own key is watched).
    s.client.delete(key.as_str(), None).await.unwrap();
    let back = wait_key(&mut s.client, &key, true, Duration::from_millis(500), &c).await;
    eprintln!("deleted key back after {back:?}");

    // docker stop: the key goes at once (before the drain and the app's exit).
    let stop = std::thread::spawn({
        let id = c.id.clone();
        move || docker(&["stop", &id])
    });
    let gone = wait_key(&mut s.client, &key, false, Duration::from_secs(1), &c).await;
    eprintln!("docker stop → key gone in {gone:?}");
    stop.join().unwrap();
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &c.id]);
    assert_eq!(
        code,
        "143",
        "exits with the app's status (SIGTERM): {}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_kill_lets_the_lease_expire() {
    let Some(mut s) = setup().await else { return };
    let (c, key, _) = start_app(&s);
    wait_key(&mut s.client, &key, true, Duration::from_secs(2), &c).await;
    docker(&["kill", &c.id]);
    // No cleanup ran: the key lives until the 3 s TTL runs out.
    let t = wait_key(&mut s.client, &key, false, Duration::from_millis(4500), &c).await;
    assert!(
        t > Duration::from_millis(1000),
        "gone after {t:?}: too early for a lease expiry"
    );
}

/// Sends SIGTERM to a child and waits (at most 10 s) for its exit status.
fn terminate(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            return status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sidekick_never_removes_the_first_ones_key() {
    let Some(mut s) = setup().await else { return };
    let (c, key, port) = start_app(&s);
    wait_key(&mut s.client, &key, true, Duration::from_secs(2), &c).await;
    let (first_value, first_lease) = value(&mut s.client, &key).await.unwrap();
    // A second sidekick on the host for the same endpoint (no Docker: --host-port).
    let log = s._dir.path().join("second.log");
    let mut second = ChildGuard(
        std::process::Command::new(SIDEKICK)
            .args(["--etcd", &s.etcd.url(), "--ip", "127.0.0.1"])
            .args([
                "--host-port",
                &port.to_string(),
                "--port",
                &port.to_string(),
            ])
            .args(["--interval", "500ms", "--ttl", "3s"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually(
        Duration::from_secs(5),
        "second sidekick stands by",
        || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("standing by")
        },
    )
    .await;
    // SIGTERM: it revokes its own lease, which holds nothing. Its exit is the sentinel: after
    // it, that sidekick can change nothing any more.
    let status = terminate(&mut second.0);
    assert!(status.success(), "second sidekick: {status}");
    assert_eq!(
        value(&mut s.client, &key).await,
        Some((first_value, first_lease)),
        "the first sidekick's registration is untouched"
    );

    // Fencing: a key under a foreign lease at exactly the sidekick's key (as after a takeover)
    // is never deleted by the sidekick's compare-lease delete, nor by its revoke.
    let foreign = s.client.lease_grant(60, None).await.unwrap().id();
    let foreign_value = r#"{"hostname":"foreign"}"#.to_string();
    s.client
        .put(
            key.as_str(),
            foreign_value.as_str(),
            Some(etcd_client::PutOptions::new().with_lease(foreign)),
        )
        .await
        .unwrap();
    // Unhealthy: the sidekick deregisters. Sentinel: its log says the delete's compare failed.
    c.exec(&["/bin/busybox", "rm", "/www/health"]);
    eventually(
        Duration::from_secs(10),
        "the sidekick's deregister to find a foreign lease",
        || async {
            c.logs()
                .contains("key no longer holds our lease; left alone")
        },
    )
    .await;
    assert_eq!(
        value(&mut s.client, &key).await,
        Some((foreign_value.clone(), foreign)),
        "deregistering left the foreign key alone"
    );
    // Stopped: it revokes its lease. Sentinel: docker stop returns once the sidekick exited.
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || docker(&["stop", &id]))
        .await
        .unwrap();
    assert!(!c.running());
    assert!(
        c.logs().contains("lease revoked"),
        "the stop path ran: {}",
        c.logs()
    );
    assert_eq!(
        value(&mut s.client, &key).await,
        Some((foreign_value, foreign)),
        "stopping left the foreign key alone"
    );
    let ttl = s
        .client
        .lease_time_to_live(foreign, None)
        .await
        .unwrap()
        .ttl();
    assert!(ttl > 0, "the foreign lease is alive: ttl {ttl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublished_port_and_missing_socket_are_clear_errors() {
    let Some(s) = setup().await else { return };
    let etcd = s.etcd.container_url();
    let base = [
        "--etcd",
        etcd.as_str(),
        "--port",
        "8000",
        "--",
        "/bin/busybox",
        "httpd",
        "-f",
        "-p",
        "8000",
    ];
    // Not published (no -p): a clear error and a non-zero exit, never a panic.
    let mut args = vec!["run", "--rm", "-v", SOCK, "-e", "IP=127.0.0.1", image()];
    args.extend_from_slice(&base);
    let out = docker_output(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("8000/tcp") && err.contains("not published"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // No Docker socket mounted.
    let mut args = vec!["run", "--rm", "-p", "8000", image()];
    args.extend_from_slice(&base);
    let out = docker_output(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("/var/run/docker.sock"), "{err}");
    // Published on 0.0.0.0 without --ip / IP: tells the user to pass it.
    let mut args = vec!["run", "--rm", "-p", "8000", "-v", SOCK, image()];
    args.extend_from_slice(&base);
    let out = docker_output(&args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--ip"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_behind_haproxy_fails_no_request() {
    let Some(s) = setup().await else { return };
    let haproxy = Haproxy::start(s._dir.path()).await;
    let _watcher = Watcher::start(s._dir.path(), &haproxy, &s.etcd.url(), &[]);
    let (a, _, port_a) = start_app_with(&s, &["--drain", "1s"]);
    let (b, _, port_b) = start_app_with(&s, &["--drain", "1s"]);
    let rendered = || std::fs::read_to_string(&haproxy.output).unwrap_or_default();
    eventually(
        Duration::from_secs(10),
        "both apps in HAProxy's config",
        || async {
            let t = rendered();
            t.contains(&format!("127.0.0.1:{port_a} "))
                && t.contains(&format!("127.0.0.1:{port_b} "))
        },
    )
    .await;
    // Load through HAProxy, a new connection per request, while one app is stopped.
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::Relaxed};
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let answered = std::sync::Arc::new(AtomicU32::new(0));
    let load = tokio::spawn({
        let (stop, answered) = (stop.clone(), answered.clone());
        let addr = haproxy.http;
        async move {
            let mut failed = Vec::new();
            while !stop.load(Relaxed) {
                match get(addr).await {
                    Some(r) if r.status == 200 => {
                        answered.fetch_add(1, Relaxed);
                    }
                    other => failed.push(other.map(|r| r.status)),
                }
            }
            failed
        }
    });
    let before = answered.load(Relaxed);
    eventually(Duration::from_secs(10), "load flowing", || async {
        answered.load(Relaxed) >= before + 50
    })
    .await;
    let id = a.id.clone();
    tokio::task::spawn_blocking(move || docker(&["stop", &id]))
        .await
        .unwrap();
    // Not a fixed window after the stop: the load goes on until 100 more requests were
    // answered with app a gone, so a failure after its exit would be seen.
    let after_stop = answered.load(Relaxed);
    eventually(
        Duration::from_secs(20),
        "100 requests answered after the stop",
        || async { answered.load(Relaxed) >= after_stop + 100 },
    )
    .await;
    stop.store(true, Relaxed);
    let failed = load.await.unwrap();
    let ok = answered.load(Relaxed);
    eprintln!("{ok} requests answered 200 during docker stop; failed: {failed:?}");
    assert!(
        failed.is_empty(),
        "{} requests failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 100, "too little load to tell: {ok}");
    let t = rendered();
    assert!(
        !t.contains(&format!("127.0.0.1:{port_a} ")) && t.contains(&format!("127.0.0.1:{port_b} ")),
        "{t}"
    );
    drop(b);
}

/// What Docker says of the container's health (`healthy`, `unhealthy`, `starting`).
fn docker_health(c: &Container) -> String {
    docker(&["inspect", "-f", "{{.State.Health.Status}}", &c.id])
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_reports_the_sidekick_healthy_then_unhealthy_with_the_app() {
    let Some(mut s) = setup().await else { return };
    // The test image's HEALTHCHECK runs `dockreg healthcheck --metrics-addr 127.0.0.1:9477`.
    let (c, key, _port) = start_app_with(&s, &["--metrics-addr", "127.0.0.1:9477"]);
    let health_is = |want: &'static str| {
        let c = &c;
        async move {
            let t0 = Instant::now();
            loop {
                let now = docker_health(c);
                if now == want {
                    return;
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(15),
                    "Docker health {now}, wanted {want}; container log:\n{}",
                    c.logs()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    health_is("healthy").await;
    wait_key(&mut s.client, &key, true, Duration::from_secs(1), &c).await;
    c.exec(&["/bin/busybox", "rm", "/www/health"]);
    health_is("unhealthy").await;
    wait_key(&mut s.client, &key, false, Duration::from_secs(1), &c).await;
    c.exec(&["/bin/busybox", "touch", "/www/health"]);
    health_is("healthy").await;
}

//! End-to-end tests of `dockreg agent` on the host against the real Docker engine and a real
//! etcd: containers of the local test image with labels are started, stopped, killed, paused,
//! made unhealthy; etcd must hold exactly the healthy, running, opted-in ones, within a second
//! of each event, and keep the healthy ones across an agent killed with SIGKILL.

use crate::harness::*;
use dockreg_testkit::docker::*;
use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub const DOCKREG: &str = env!("CARGO_BIN_EXE_dockreg");
const ROOT: &str = "/services";

/// The agent on the host, logging to a file.
pub struct Agent {
    pub log: PathBuf,
    child: ChildGuard,
}

impl Agent {
    /// Starts the agent for the containers of `scope` (see [`app`]).
    pub fn start(dir: &Path, etcd: &str, scope: &str, extra: &[&str]) -> Agent {
        let log = dir.join(format!("agent-{}.log", free_port()));
        let file = File::create(&log).expect("create agent log");
        let child = Command::new(DOCKREG)
            .args(["agent", "--etcd", etcd, "--ip", "127.0.0.1", "--ttl", "3s"])
            .args(["--interval", "300ms", "--timeout", "250ms"])
            .arg("--label-filter")
            .arg(format!("dockreg.test={scope}"))
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("start dockreg agent");
        Agent {
            log,
            child: ChildGuard(child),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill9(mut self) {
        let _ = self.child.0.kill();
        let _ = self.child.0.wait();
    }
}

/// An app container of the test image: busybox httpd on 8000 with `/health`, published on
/// 127.0.0.1, with `labels` and `env`; its image HEALTHCHECK is off unless `docker_args` say.
/// It carries the label `dockreg.test=<scope>`, which the test's agent filters on, so the
/// agents of tests running at once never see each other's containers.
pub fn app(scope: &str, labels: &[&str], env: &[&str], docker_args: &[&str]) -> Container {
    let mut args: Vec<String> = vec![
        "-p".into(),
        "127.0.0.1::8000".into(),
        "-l".into(),
        format!("dockreg.test={scope}"),
    ];
    for l in labels {
        args.push("-l".into());
        args.push((*l).into());
    }
    for e in env {
        args.push("-e".into());
        args.push((*e).into());
    }
    if !docker_args.iter().any(|a| a.starts_with("--health")) {
        args.push("--no-healthcheck".into());
    }
    args.extend(docker_args.iter().map(|s| s.to_string()));
    args.extend(["--entrypoint", "/bin/busybox"].map(String::from));
    let all: Vec<&str> = args.iter().map(String::as_str).collect();
    Container::run(&all, &["httpd", "-f", "-p", "8000", "-h", "/www"])
}

/// Labels of a web container checked fast over HTTP.
pub const WEB: [&str; 5] = [
    "dockreg.service=web",
    "dockreg.check=http:/health",
    "dockreg.check.interval=200ms",
    "dockreg.check.rise=1",
    "dockreg.check.fall=1",
];

/// The key a container of service `service` gets.
pub fn key_of(service: &str, c: &Container) -> String {
    format!(
        "{ROOT}/{service}/127.0.0.1:{}",
        c.host_port_on("127.0.0.1", 8000)
    )
}

pub async fn keys(client: &Client) -> BTreeSet<String> {
    let mut kv = client.kv_client();
    let resp = kv
        .get(
            format!("{ROOT}/"),
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await
        .expect("list keys");
    resp.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Waits until etcd's keys are exactly `want`; returns how long it took. Fails after `within`.
pub async fn exactly(
    client: &Client,
    want: &BTreeSet<String>,
    within: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        let have = keys(client).await;
        if &have == want {
            return start.elapsed();
        }
        if start.elapsed() > within {
            panic!("{what}: etcd holds {have:#?}, want {want:#?} (waited {within:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Setup {
    /// This test's containers and agent.
    scope: String,
    dir: tempfile::TempDir,
    etcd: Etcd,
    url: String,
    client: Client,
}

async fn setup() -> Option<Setup> {
    if !docker_available() {
        eprintln!("Docker not available; skipping");
        return None;
    }
    image();
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path()).await;
    let client = etcd.client().await;
    Some(Setup {
        scope: format!("t{}", free_port()),
        url: etcd.url(),
        dir,
        etcd,
        client,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_registers_exactly_the_healthy_running_opted_in_containers() {
    let Some(s) = setup().await else { return };
    let metrics: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let agent = Agent::start(
        s.dir.path(),
        &s.url,
        &s.scope,
        &["--metrics-addr", &metrics.to_string()],
    );
    let second = Duration::from_secs(1);

    // Eight opted in (one by registrator's SERVICE_NAME), one ignored, one not opted in.
    let mut web: Vec<Container> = (0..7).map(|_| app(&s.scope, &WEB, &[], &[])).collect();
    let api = app(
        &s.scope,
        &["dockreg.check=http:/health", "dockreg.check.interval=200ms"],
        &["SERVICE_NAME=api"],
        &[],
    );
    let ignored = app(&s.scope, &WEB, &["SERVICE_IGNORE=1"], &[]);
    let plain = app(&s.scope, &[], &[], &[]);
    let mut want: BTreeSet<String> = web.iter().map(|c| key_of("web", c)).collect();
    want.insert(key_of("api", &api));
    let took = exactly(&s.client, &want, Duration::from_secs(10), "ten containers").await;
    eprintln!("ten containers registered {took:?} after the last docker run");

    // docker stop: out at the kill event, while the app is still shutting down (busybox
    // httpd ignores SIGTERM, so it runs until Docker kills it 2 s later).
    let stopped = web.remove(0);
    want.remove(&key_of("web", &stopped));
    let id = stopped.id.clone();
    let stop = std::thread::spawn(move || docker(&["stop", "-t", "2", &id]));
    let took = exactly(&s.client, &want, second, "docker stop").await;
    assert!(
        stopped.running(),
        "the key went only when the container had stopped, not at the stop signal"
    );
    eprintln!("docker stop issued → key gone in {took:?}, before the container stopped");
    stop.join().unwrap();

    // docker kill.
    let killed = web.remove(0);
    want.remove(&key_of("web", &killed));
    docker(&["kill", &killed.id]);
    let took = exactly(&s.client, &want, second, "docker kill").await;
    eprintln!("docker kill → key gone in {took:?}");

    // pause and unpause.
    let paused = &web[0];
    let key = key_of("web", paused);
    want.remove(&key);
    docker(&["pause", &paused.id]);
    exactly(&s.client, &want, second, "docker pause").await;
    want.insert(key);
    docker(&["unpause", &paused.id]);
    let took = exactly(&s.client, &want, second, "docker unpause").await;
    eprintln!("docker unpause → key back in {took:?}");

    // The app fails its check, then passes again.
    let sick = &web[1];
    let key = key_of("web", sick);
    want.remove(&key);
    sick.exec(&["/bin/busybox", "rm", "/www/health"]);
    let took = exactly(&s.client, &want, second, "unhealthy").await;
    eprintln!("unhealthy → key gone in {took:?}");
    want.insert(key);
    sick.exec(&["/bin/busybox", "sh", "-c", "echo ok > /www/health"]);
    exactly(&s.client, &want, second, "healthy again").await;

    // A stopped container started again comes back (on its new host port).
    docker(&["start", &stopped.id]);
    want.insert(key_of("web", &stopped));
    exactly(&s.client, &want, Duration::from_secs(3), "docker start").await;

    // The ignored and the plain container never showed up.
    let all = keys(&s.client).await;
    for c in [&ignored, &plain] {
        assert!(
            !all.iter()
                .any(|k| k.ends_with(&format!(":{}", c.host_port_on("127.0.0.1", 8000)))),
            "{} registered",
            c.id
        );
    }

    // The values carry the agent and the container; a steady state writes nothing.
    let mut kv = s.client.kv_client();
    let resp = kv.get(key_of("api", &api), None).await.unwrap();
    let value = resp.kvs()[0].value_str().unwrap().to_string();
    assert!(value.contains("\"agent\":\"127.0.0.1\""), "{value}");
    assert!(value.contains(&api.id[..12]), "{value}");
    let before = kv
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = kv
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    assert_eq!(
        before,
        after,
        "etcd writes at rest; agent log:\n{}",
        agent.log_text()
    );

    // Its health and metrics say the same.
    let ready = get_path(metrics, "/readyz").await.expect("/readyz answers");
    assert_eq!(ready.status, 200, "{}", ready.body);
    let text = get_path(metrics, "/metrics").await.expect("/metrics").body;
    let registered = format!("dockreg_agent_registered {}", want.len());
    assert!(text.contains(&registered), "{registered} in:\n{text}");
    assert!(text.contains("dockreg_agent_docker_connected 1"), "{text}");
    assert!(
        text.contains("dockreg_agent_refused_containers 0"),
        "{text}"
    );
    drop((killed, stopped));
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_follows_the_containers_own_healthcheck() {
    let Some(s) = setup().await else { return };
    let _agent = Agent::start(s.dir.path(), &s.url, &s.scope, &[]);
    let c = app(
        &s.scope,
        &["dockreg.service=hc"],
        &[],
        &[
            "--health-cmd",
            "/bin/busybox wget -q -O /dev/null http://127.0.0.1:8000/health",
            "--health-interval",
            "300ms",
            "--health-retries",
            "1",
            "--health-timeout",
            "1s",
        ],
    );
    // Docker runs --health-cmd with /bin/sh, which the image has only as busybox.
    c.exec(&["/bin/busybox", "ln", "-s", "/bin/busybox", "/bin/sh"]);
    let key = key_of("hc", &c);
    let mut want = BTreeSet::from([key.clone()]);
    exactly(
        &s.client,
        &want,
        Duration::from_secs(10),
        "healthy by HEALTHCHECK",
    )
    .await;
    c.exec(&["/bin/busybox", "rm", "/www/health"]);
    want.clear();
    exactly(
        &s.client,
        &want,
        Duration::from_secs(5),
        "unhealthy by HEALTHCHECK",
    )
    .await;
    c.exec(&["/bin/busybox", "sh", "-c", "echo ok > /www/health"]);
    want.insert(key);
    exactly(&s.client, &want, Duration::from_secs(5), "healthy again").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_labels_never_reach_etcd() {
    let Some(s) = setup().await else { return };
    let agent = Agent::start(s.dir.path(), &s.url, &s.scope, &[]);
    let long = format!("dockreg.service={}", "a".repeat(10 * 1024));
    let long_tag = format!("dockreg.tags={}", "t".repeat(10 * 1024));
    let hostile: Vec<Container> = vec![
        app(
            &s.scope,
            &["dockreg.service=bad name", "dockreg.check=none"],
            &[],
            &[],
        ),
        app(
            &s.scope,
            &["dockreg.service=x#y", "dockreg.check=none"],
            &[],
            &[],
        ),
        app(
            &s.scope,
            &["dockreg.service=web\nbackend evil", "dockreg.check=none"],
            &[],
            &[],
        ),
        app(&s.scope, &[&long, "dockreg.check=none"], &[], &[]),
        app(
            &s.scope,
            &[
                "dockreg.service=ok",
                "dockreg.tags=a b",
                "dockreg.check=none",
            ],
            &[],
            &[],
        ),
        app(
            &s.scope,
            &["dockreg.service=ok", &long_tag, "dockreg.check=none"],
            &[],
            &[],
        ),
        app(
            &s.scope,
            &[
                "dockreg.service=ok",
                "dockreg.weight=9999",
                "dockreg.check=none",
            ],
            &[],
            &[],
        ),
        app(
            &s.scope,
            &[],
            &["SERVICE_NAME=a/b", "SERVICE_CHECK_TCP=true"],
            &[],
        ),
    ];
    // A good container beside them, to know the agent has looked.
    let good = app(
        &s.scope,
        &["dockreg.service=good", "dockreg.check=none"],
        &[],
        &[],
    );
    let want = BTreeSet::from([key_of("good", &good)]);
    exactly(
        &s.client,
        &want,
        Duration::from_secs(10),
        "only the good one",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(keys(&s.client).await, want);
    let log = agent.log_text();
    for c in &hostile {
        let short = &c.id[..12];
        assert_eq!(
            log.matches(&format!("({short})")).count(),
            1,
            "one warning naming container {short}:\n{log}"
        );
    }
    assert!(
        !log.contains(&"a".repeat(100)),
        "a 10 KB label is not logged whole"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_killed_and_restarted_keeps_healthy_keys_and_catches_up() {
    let Some(s) = setup().await else { return };
    let agent = Agent::start(s.dir.path(), &s.url, &s.scope, &[]);
    let stays: Vec<Container> = (0..4).map(|_| app(&s.scope, &WEB, &[], &[])).collect();
    let goes = app(&s.scope, &WEB, &[], &[]);
    let mut want: BTreeSet<String> = stays.iter().map(|c| key_of("web", c)).collect();
    want.insert(key_of("web", &goes));
    exactly(&s.client, &want, Duration::from_secs(10), "before the kill").await;

    let staying: BTreeSet<String> = stays.iter().map(|c| key_of("web", c)).collect();
    // Another host's keys under the same root, more than one page of the agent's listing
    // (2,000): the restarted agent must page through them and leave every one alone.
    let mut kv = s.client.kv_client();
    let mut others = BTreeSet::new();
    for i in 0..4500u32 {
        let key = format!("{ROOT}/web/10.9.{}.{}:80", i / 250, i % 250 + 1);
        kv.put(key.as_str(), r#"{"agent":"10.9.0.1"}"#, None)
            .await
            .unwrap();
        others.insert(key);
    }
    want.extend(others.iter().cloned());
    agent.kill9();
    // While the agent is down: one container stops, a new one starts.
    want.remove(&key_of("web", &goes));
    drop(goes);
    let new = app(&s.scope, &WEB, &[], &[]);
    want.insert(key_of("web", &new));
    tokio::time::sleep(Duration::from_millis(500)).await;

    let agent = Agent::start(s.dir.path(), &s.url, &s.scope, &[]);
    let took = exactly(
        &s.client,
        &want,
        Duration::from_secs(5),
        "after the restart",
    )
    .await;
    eprintln!("restarted agent matched the truth after {took:?}");
    // Past the dead agent's lease TTL (3 s): the adopted keys stayed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        keys(&s.client).await,
        want,
        "agent log:\n{}",
        agent.log_text()
    );
    let mut c = s.client.clone();
    // Every delete since etcd started (nothing is compacted here): none of a staying key.
    let mut again = c
        .watch(
            format!("{ROOT}/"),
            Some(WatchOptions::new().with_prefix().with_start_revision(1)),
        )
        .await
        .unwrap();
    let mut deleted = Vec::new();
    let end = c.get("x", None).await.unwrap().header().unwrap().revision();
    'outer: while let Ok(Some(resp)) = again.message().await {
        for e in resp.events() {
            if e.event_type() == EventType::Delete {
                deleted.push(e.kv().unwrap().key_str().unwrap().to_string());
            }
            if e.kv().is_some_and(|kv| kv.mod_revision() >= end) {
                break 'outer;
            }
        }
        if resp.header().is_some_and(|h| h.revision() >= end) {
            break;
        }
    }
    for k in &staying {
        assert!(
            !deleted.contains(k),
            "healthy key {k} was deleted during the restart: {deleted:?}"
        );
    }
    assert!(
        agent.log_text().contains("adopting"),
        "agent log:\n{}",
        agent.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_heals_after_etcd_is_wiped_while_containers_change() {
    let Some(mut s) = setup().await else { return };
    let agent = Agent::start(s.dir.path(), &s.url, &s.scope, &[]);
    let stays: Vec<Container> = (0..3).map(|_| app(&s.scope, &WEB, &[], &[])).collect();
    let goes = app(&s.scope, &WEB, &[], &[]);
    let mut want: BTreeSet<String> = stays.iter().map(|c| key_of("web", c)).collect();
    want.insert(key_of("web", &goes));
    exactly(
        &s.client,
        &want,
        Duration::from_secs(10),
        "before the outage",
    )
    .await;

    // etcd is lost with its data (a new, empty cluster comes back) while one container stops
    // and another starts: the lease and every key are gone, the agent's view is stale.
    s.etcd.kill_and_wipe();
    want.remove(&key_of("web", &goes));
    drop(goes);
    let new = app(&s.scope, &WEB, &[], &[]);
    want.insert(key_of("web", &new));
    tokio::time::sleep(Duration::from_secs(4)).await;
    s.etcd.restart().await;
    let client = s.etcd.client().await;
    let took = exactly(&client, &want, Duration::from_secs(15), "after the wipe").await;
    eprintln!("etcd wiped and back: the agent restored the truth {took:?} after etcd answered");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        keys(&client).await,
        want,
        "agent log:\n{}",
        agent.log_text()
    );
}

/// `socat` forwarding a loopback TCP port to the Docker socket: a stand-in for a socket proxy
/// (and a Docker engine that can be cut off).
struct SocketProxy {
    child: Option<ChildGuard>,
}

impl SocketProxy {
    fn start(port: u16) -> SocketProxy {
        let child = Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg("UNIX-CONNECT:/var/run/docker.sock")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start socat (apt-get install socat; tests/run.sh does)");
        std::thread::sleep(Duration::from_millis(200));
        SocketProxy {
            child: Some(ChildGuard(child)),
        }
    }

    /// Kills socat and every connection it forwards.
    fn cut(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.pid();
            let _ = Command::new("pkill")
                .args(["-KILL", "-P", &pid.to_string()])
                .status();
            c.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn agent_through_a_tcp_socket_proxy_catches_up_after_losing_the_engine() {
    let Some(s) = setup().await else { return };
    let port = free_port();
    let mut proxy = SocketProxy::start(port);
    let docker_url = format!("tcp://127.0.0.1:{port}");
    let agent = Agent::start(s.dir.path(), &s.url, &s.scope, &["--docker", &docker_url]);
    let stays = app(&s.scope, &WEB, &[], &[]);
    let goes = app(&s.scope, &WEB, &[], &[]);
    let mut want = BTreeSet::from([key_of("web", &stays), key_of("web", &goes)]);
    exactly(
        &s.client,
        &want,
        Duration::from_secs(10),
        "through the proxy",
    )
    .await;

    // The engine is cut off: its events are lost. A container stops and one starts meanwhile;
    // the registered keys stay as they are until the engine answers again.
    proxy.cut();
    want.remove(&key_of("web", &goes));
    drop(goes);
    let new = app(&s.scope, &WEB, &[], &[]);
    want.insert(key_of("web", &new));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _proxy = SocketProxy::start(port);
    let took = exactly(&s.client, &want, Duration::from_secs(10), "engine back").await;
    eprintln!("Docker engine back: the agent caught up {took:?} after it answered");
    assert!(
        agent.log_text().contains("Docker event stream lost"),
        "agent log:\n{}",
        agent.log_text()
    );
}

/// The whole path: the agent registers a container of a service nobody has seen, the watcher
/// with `--root /services` (not restarted) makes it a backend, HAProxy routes to it; the
/// container stops, and the backend goes after `--service-grace`.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_of_a_new_service_is_routed_through_haproxy_without_a_restart() {
    if !docker_available() {
        return;
    }
    image();
    let scope = format!("t{}", free_port());
    let (w, by_host) = crate::roots::rooted_world().await;
    let _watcher = crate::roots::rooted_watcher(&w, &[]);
    let _agent = Agent::start(w.dir.path(), &w.etcd.url(), &scope, &[]);
    // The watcher is up and serving before the service exists.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = get_host_path(by_host, "fresh", "/").await.map(|r| r.status);
    assert_eq!(
        before,
        Some(503),
        "no backend for a service nobody registered"
    );

    let c = app(
        &scope,
        &["dockreg.service=fresh", "dockreg.check=http:/health"],
        &[],
        &[],
    );
    let started = Instant::now();
    let routed = loop {
        match get_host_path(by_host, "fresh", "/").await {
            Some(r) if r.status == 200 => break r,
            _ if started.elapsed() > Duration::from_secs(15) => {
                panic!(
                    "the new service was never routed: {:?}",
                    get_host_path(by_host, "fresh", "/").await
                )
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(
        routed.body.contains("hello from the app"),
        "{}",
        routed.body
    );
    eprintln!(
        "docker run → routed through HAProxy in {:?}",
        started.elapsed()
    );
    assert!(w.haproxy.output.exists());
    let file = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert!(file.contains("backend fresh"), "{file}");

    // The container goes: out of rotation at once, the backend itself after the grace.
    let stopped = Instant::now();
    drop(c);
    loop {
        let status = get_host_path(by_host, "fresh", "/").await.map(|r| r.status);
        if status == Some(503) {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(5),
            "still routed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let file = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert!(
        file.contains("backend fresh"),
        "the backend stays through the grace:\n{file}"
    );
    let grace_end = Instant::now() + crate::roots::GRACE + Duration::from_secs(10);
    loop {
        let file = std::fs::read_to_string(&w.haproxy.output).unwrap();
        if !file.contains("backend fresh") {
            break;
        }
        assert!(
            Instant::now() < grace_end,
            "backend still there after the grace:\n{file}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "backend removed {:?} after the container stopped",
        stopped.elapsed()
    );
}

/// A stop signal takes the key away at once; a container that survives it (busybox httpd as
/// PID 1 ignores SIGTERM) is registered again 30 s later, at the next inspection.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_survives_its_stop_signal_is_registered_again() {
    let Some(s) = setup().await else { return };
    let _agent = Agent::start(s.dir.path(), &s.url, &s.scope, &["--resync", "2s"]);
    let c = app(&s.scope, &WEB, &[], &[]);
    let mut want = BTreeSet::from([key_of("web", &c)]);
    exactly(&s.client, &want, Duration::from_secs(10), "registered").await;
    docker(&["kill", "-s", "TERM", &c.id]);
    want.clear();
    exactly(
        &s.client,
        &want,
        Duration::from_secs(1),
        "out at the signal",
    )
    .await;
    assert!(c.running(), "busybox httpd as PID 1 ignores SIGTERM");
    want.insert(key_of("web", &c));
    let took = exactly(
        &s.client,
        &want,
        Duration::from_secs(40),
        "back after the hold",
    )
    .await;
    eprintln!("registered again {took:?} after the signal it survived");
    assert!(took >= Duration::from_secs(25), "back too early: {took:?}");
}

//! Running it unattended: validation without a base configuration, an honest word when no
//! reload method is set, the output folder made when missing and never by `--dry-run`,
//! `--log-level`, each program's `--help`, and SIGHUP, which never stops either program.

use crate::harness::*;
use crate::sidekick::SIDEKICK;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the watcher once with `args` after `--etcd <url>`.
fn watcher_once(w: &World, args: &[&str]) -> Output {
    Command::new(WATCHER)
        .arg("--etcd")
        .arg(w.etcd.url())
        .args(args)
        .output()
        .expect("run the watcher")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_without_a_base_config_checks_the_backends_alone_and_says_haproxy_is_not_told() {
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    let out = w.path().join("alone.cfg");
    let o = out.display().to_string();
    // A valid render: HAProxy's "no error, but no listener" verdict is a pass.
    let ok = watcher_once(&w, &["--once", "--output", &o]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("server 10.0.0.1_80 10.0.0.1:80"));
    let log = stderr(&ok);
    assert!(log.contains("no reload method"), "{log}");
    assert!(!log.contains("path=reload"), "nothing was reloaded: {log}");
    // An invalid one is refused with HAProxy's message, and the live file stays.
    let before = std::fs::read_to_string(&out).unwrap();
    let tpl = w.path().join("bad.cfg.tera");
    std::fs::write(&tpl, "backend x\n    no_such_keyword 1\n").unwrap();
    let t = tpl.display().to_string();
    let bad = watcher_once(&w, &["--once", "--template", &t, "--output", &o]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("no_such_keyword"), "{}", stderr(&bad));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_output_folder_is_made_when_missing_but_never_by_a_dry_run() {
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    let out = w.path().join("new").join("folder").join("backends.cfg");
    let o = out.display().to_string();
    let dry = watcher_once(&w, &["--dry-run", "--output", &o]);
    assert!(dry.status.success(), "{}", stderr(&dry));
    assert!(String::from_utf8_lossy(&dry.stdout).contains("+    server 10.0.0.1_80"));
    assert!(!w.path().join("new").exists(), "--dry-run touched nothing");
    let once = watcher_once(&w, &["--once", "--no-validate", "--output", &o]);
    assert!(once.status.success(), "{}", stderr(&once));
    assert!(out.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_level_is_a_flag_and_a_variable_and_a_typo_is_a_usage_error() {
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    let o = w.path().join("l.cfg").display().to_string();
    let typo = watcher_once(&w, &["--once", "--output", &o, "--log-level", "debg"]);
    assert_eq!(typo.status.code(), Some(2));
    assert!(stderr(&typo).contains("--log-level"), "{}", stderr(&typo));
    let quiet = Command::new(WATCHER)
        .args([
            "--etcd",
            &w.etcd.url(),
            "--once",
            "--no-validate",
            "--output",
            &o,
        ])
        .env("DOCKREG_LOG_LEVEL", "error")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(quiet.status.success());
    assert_eq!(stderr(&quiet), "", "only errors, and there were none");
    let chatty = watcher_once(
        &w,
        &[
            "--once",
            "--no-validate",
            "--output",
            &o,
            "--log-level",
            "debug",
        ],
    );
    assert!(stderr(&chatty).contains("DEBUG"), "{}", stderr(&chatty));
}

#[test]
fn each_program_says_what_it_is_and_shows_no_default_it_refuses() {
    let help = |bin: &str| {
        let o = Command::new(bin).arg("--help").output().unwrap();
        assert!(o.status.success());
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (watcher, sidekick) = (help(WATCHER), help(SIDEKICK));
    assert!(
        watcher.starts_with("dockreg-haproxy: watch etcd"),
        "{watcher}"
    );
    assert!(
        sidekick.starts_with("dockreg: the registration sidekick"),
        "{sidekick}"
    );
    assert!(watcher.contains("[default: http://127.0.0.1:2379]"));
    assert!(
        !sidekick.contains("[default: http://127.0.0.1:2379]"),
        "{sidekick}"
    );
    assert!(watcher.contains("[default: /etc/haproxy/dockreg/backends.cfg]"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_rereads_the_templates_and_never_stops_the_watcher() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let tpl = w.path().join("t.cfg.tera");
    let source = std::fs::read_to_string(format!("{REPO}/templates/per-service.cfg.tera")).unwrap();
    std::fs::write(&tpl, &source).unwrap();
    let t = tpl.display().to_string();
    let watcher = w.watcher(&["--template", &t]);
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(15)).await;
    for _ in 0..3 {
        watcher.signal("HUP");
        watcher.wait_log("SIGHUP: re-reading the templates").await;
    }
    // Still running and still applying.
    w.put(&b.key(1), "running").await;
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(10)).await;
    assert_eq!(
        watcher.stop().code(),
        Some(0),
        "a clean stop after the SIGHUPs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_is_ignored_by_a_sidekick_outside_wrapper_mode() {
    let w = World::new().await;
    let b = Backends::start(1).await;
    let port = b.addrs[0].port().to_string();
    let log = w.path().join("sidekick.log");
    let child = ChildGuard(
        Command::new(SIDEKICK)
            .args(["--etcd", &w.etcd.url(), "--ip", "127.0.0.1"])
            .args(["--host-port", &port, "--port", &port])
            .args(["--interval", "200ms"])
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let key = format!("/service/127.0.0.1:{port}");
    let registered = || async {
        let mut client = w.etcd.client().await;
        client
            .get(key.as_str(), None)
            .await
            .is_ok_and(|r| r.kvs().len() == 1)
    };
    eventually(Duration::from_secs(10), "registered", registered).await;
    let pid = child.pid().to_string();
    for _ in 0..3 {
        Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually(Duration::from_secs(5), "SIGHUP logged", || async {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("SIGHUP ignored"))
    })
    .await;
    assert!(registered().await, "still registered after SIGHUP");
    assert!(
        std::fs::read_to_string(&log).is_ok_and(|t| !t.contains("deregistered")),
        "never deregistered"
    );
    drop(child);
}

/// The value of the metric line that starts with `series` (`name{labels}`), or 0.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok())?
        })
        .unwrap_or(0.0)
}

async fn scrape(addr: std::net::SocketAddr, path: &str) -> Response {
    get_path(addr, path)
        .await
        .expect("the metrics server answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_the_watcher_works_and_readyz_follows_etcd() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let (tpl, source) = crate::hitless::editable_template(&w);
    let t = tpl.display().to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let a = addr.to_string();
    let _watcher = crate::hitless::hitless_watcher(&w, &["--template", &t, "--metrics-addr", &a]);
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(15)).await;
    assert_eq!(scrape(addr, "/healthz").await.status, 200);
    eventually(Duration::from_secs(5), "ready", || async {
        scrape(addr, "/readyz").await.status == 200
    })
    .await;
    let m = scrape(addr, "/metrics").await.body;
    assert!(
        metric(
            &m,
            r#"dockreg_watcher_applies_total{path="reload",outcome="written"}"#
        ) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, r#"dockreg_watcher_reloads_total{outcome="ok"}"#) >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, r#"dockreg_watcher_endpoints{service="service"}"#),
        1.0,
        "{m}"
    );
    assert_eq!(metric(&m, "dockreg_watcher_etcd_connected"), 1.0, "{m}");
    assert!(
        metric(&m, "dockreg_watcher_etcd_revision_applied") >= 1.0,
        "{m}"
    );
    // A server change goes out at runtime.
    w.put(&b.key(1), "running").await;
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(10)).await;
    eventually(
        Duration::from_secs(5),
        "a runtime apply counted",
        || async {
            let m = scrape(addr, "/metrics").await.body;
            metric(
                &m,
                r#"dockreg_watcher_applies_total{path="runtime",outcome="written"}"#,
            ) >= 1.0
                && metric(&m, r#"dockreg_watcher_endpoints{service="service"}"#) == 2.0
        },
    )
    .await;
    // A template edit that does not parse is counted (and the last good one stays).
    std::fs::write(&tpl, "{% if %}").unwrap();
    eventually(
        Duration::from_secs(5),
        "a template error counted",
        || async {
            metric(
                &scrape(addr, "/metrics").await.body,
                "dockreg_watcher_template_errors_total",
            ) >= 1.0
        },
    )
    .await;
    std::fs::write(&tpl, &source).unwrap();
    // etcd away: not ready, saying why; back: ready again.
    w.etcd.kill();
    eventually(
        Duration::from_secs(15),
        "not ready without etcd",
        || async {
            let r = scrape(addr, "/readyz").await;
            r.status == 503 && r.body.contains("etcd")
        },
    )
    .await;
    assert_eq!(
        metric(
            &scrape(addr, "/metrics").await.body,
            "dockreg_watcher_etcd_connected"
        ),
        0.0
    );
    w.etcd.restart().await;
    eventually(Duration::from_secs(30), "ready again", || async {
        scrape(addr, "/readyz").await.status == 200
    })
    .await;
    let m = scrape(addr, "/metrics").await.body;
    assert!(
        metric(&m, "dockreg_watcher_etcd_reconnects_total") >= 1.0,
        "{m}"
    );
}

/// `dockreg healthcheck --metrics-addr <addr>`: its exit status and what it printed.
fn healthcheck(addr: std::net::SocketAddr) -> (Option<i32>, String) {
    let o = Command::new(SIDEKICK)
        .args(["healthcheck", "--metrics-addr", &addr.to_string()])
        .output()
        .unwrap();
    (
        o.status.code(),
        String::from_utf8_lossy(&o.stdout).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sidekick_reports_health_and_healthcheck_follows_the_app() {
    let w = World::new().await;
    let b = Backends::start(1).await;
    let port = b.addrs[0].port().to_string();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let _child = ChildGuard(
        Command::new(SIDEKICK)
            .args(["--etcd", &w.etcd.url(), "--ip", "127.0.0.1"])
            .args(["--host-port", &port, "--port", &port])
            .args(["--interval", "200ms", "--timeout", "200ms"])
            .args(["--metrics-addr", &addr.to_string()])
            .stderr(std::fs::File::create(w.path().join("sidekick.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually(Duration::from_secs(10), "healthcheck passes", || async {
        healthcheck(addr).0 == Some(0)
    })
    .await;
    let m = scrape(addr, "/metrics").await.body;
    assert_eq!(metric(&m, "dockreg_sidekick_registered"), 1.0, "{m}");
    assert_eq!(metric(&m, "dockreg_sidekick_app_healthy"), 1.0, "{m}");
    assert_eq!(
        metric(&m, "dockreg_sidekick_lease_grants_total"),
        1.0,
        "{m}"
    );
    assert!(
        metric(&m, r#"dockreg_sidekick_checks_total{result="ok"}"#) >= 1.0,
        "{m}"
    );
    // The app stops answering: unhealthy, deregistered, and the healthcheck says so.
    drop(b);
    eventually(Duration::from_secs(10), "healthcheck fails", || async {
        let (code, said) = healthcheck(addr);
        code == Some(1) && said.contains("health check")
    })
    .await;
    // The health flips at the check; the key goes with the delete that follows (an etcd round
    // trip later), and the gauge with it.
    eventually(Duration::from_secs(5), "registered 0", || async {
        metric(
            &scrape(addr, "/metrics").await.body,
            "dockreg_sidekick_registered",
        ) == 0.0
    })
    .await;
    let m = scrape(addr, "/metrics").await.body;
    assert_eq!(metric(&m, "dockreg_sidekick_app_healthy"), 0.0, "{m}");
    assert!(
        metric(&m, r#"dockreg_sidekick_checks_total{result="failed"}"#) >= 1.0,
        "{m}"
    );
    assert_eq!(
        scrape(addr, "/healthz").await.status,
        200,
        "alive all along"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_file_runs_the_watcher_and_flags_and_environment_override_it() {
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    w.put("/api/10.0.0.2:80", "running").await;
    let (a, b) = (w.path().join("a.cfg"), w.path().join("b.cfg"));
    let tpl = format!("{REPO}/templates/per-service.cfg.tera");
    let file = w.path().join("dockreg-haproxy.toml");
    std::fs::write(
        &file,
        format!(
            "# what the watcher reads\netcd = \"{}\"\nprefix = [\"/service\", \"/api\"]\n\
             template = [\"{tpl}\", \"{tpl}\"]\noutput = [\"{}\", \"{}\"]\nno_validate = true\nonce = true\n",
            w.etcd.url(),
            a.display(),
            b.display()
        ),
    )
    .unwrap();
    let f = file.display().to_string();
    let run = |extra: &[&str], env: &[(&str, &str)]| {
        Command::new(WATCHER)
            .args(["--config", &f])
            .args(extra)
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let o = run(&[], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    for out in [&a, &b] {
        let text = std::fs::read_to_string(out).unwrap();
        assert!(
            text.contains("backend api") && text.contains("backend service"),
            "{text}"
        );
    }
    // Environment over file, flag over both.
    let shown = |o: Output| String::from_utf8_lossy(&o.stdout).to_string();
    let p = shown(run(&["--print-config"], &[("DOCKREG_PREFIX", "/env")]));
    assert!(p.contains("prefix = \"/env\"  # environment"), "{p}");
    let p = shown(run(
        &["--print-config", "--prefix", "/flag"],
        &[("DOCKREG_PREFIX", "/env")],
    ));
    assert!(p.contains("prefix = \"/flag\"  # flag"), "{p}");
    assert!(p.contains("once = true  # file"), "{p}");
    // A mistyped key: exit 2, naming the file, line and key.
    std::fs::write(
        &file,
        "etcd = \"http://127.0.0.1:1\"\nmin_reload_intervall = \"1s\"\n",
    )
    .unwrap();
    let o = run(&[], &[]);
    assert_eq!(o.status.code(), Some(2));
    let want = format!("{f}:2:1: key `min_reload_intervall`: no such setting");
    assert!(stderr(&o).contains(&want), "{}", stderr(&o));
}

/// The datagrams a `Type=notify` service sent to the socket, within `wait`.
fn notifications(socket: &std::os::unix::net::UnixDatagram, wait: Duration) -> Vec<String> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 256];
    while t0.elapsed() < wait {
        if let Ok(n) = socket.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_systemd_the_watcher_says_ready_keeps_the_watchdog_fed_and_says_stopping() {
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    let path = w.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let watcher = w.watcher_with_env(
        &[],
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "300000"),
        ],
    );
    let first = tokio::task::block_in_place(|| notifications(&socket, Duration::from_secs(3)));
    assert_eq!(
        first.first().map(String::as_str),
        Some("READY=1"),
        "{first:?}"
    );
    let fed = first.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(fed >= 5, "a 300 ms watchdog fed every 100 ms: {first:?}");
    assert_eq!(watcher.stop().code(), Some(0));
    let last = tokio::task::block_in_place(|| notifications(&socket, Duration::from_millis(500)));
    assert!(last.iter().any(|m| m == "STOPPING=1"), "{last:?}");
}

#[test]
fn the_systemd_units_verify_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // systemd-analyze checks that ExecStart's binary exists: point it at the built one.
    let unit = std::fs::read_to_string(format!("{REPO}/haproxy/systemd/dockreg-haproxy.service"))
        .unwrap()
        .replace("/usr/bin/dockreg-haproxy", WATCHER);
    std::fs::write(d.join("dockreg-haproxy.service"), unit).unwrap();
    // Debian's haproxy.service with our drop-in beside it (verify reads `<unit>.d/` there).
    std::fs::copy(
        "/lib/systemd/system/haproxy.service",
        d.join("haproxy.service"),
    )
    .expect("Debian's haproxy.service (apt-get install haproxy; tests/run.sh does)");
    std::fs::create_dir_all(d.join("haproxy.service.d")).unwrap();
    std::fs::copy(
        format!("{REPO}/haproxy/systemd/haproxy.service.d/dockreg.conf"),
        d.join("haproxy.service.d/dockreg.conf"),
    )
    .unwrap();
    let agent = std::fs::read_to_string(format!("{REPO}/haproxy/systemd/dockreg-agent.service"))
        .unwrap()
        .replace("/usr/bin/dockreg", env!("CARGO_BIN_EXE_dockreg"));
    std::fs::write(d.join("dockreg-agent.service"), agent).unwrap();
    for unit in [
        "dockreg-haproxy.service",
        "haproxy.service",
        "dockreg-agent.service",
    ] {
        let o = Command::new("systemd-analyze")
            .arg("verify")
            .arg(d.join(unit))
            .output()
            .expect("systemd-analyze (apt-get install systemd; tests/run.sh does)");
        let said = stderr(&o);
        assert!(
            o.status.success() && said.trim().is_empty(),
            "{unit}: {said}"
        );
    }
    // The example config file is one the watcher takes.
    let o = Command::new(WATCHER)
        .args([
            "--config",
            &format!("{REPO}/haproxy/systemd/dockreg-haproxy.toml"),
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout)
        .contains("runtime-socket = \"/run/haproxy/admin.sock\"  # file"));
    // And the agent's example config file is one the agent takes.
    let o = Command::new(env!("CARGO_BIN_EXE_dockreg"))
        .args([
            "agent",
            "--config",
            &format!("{REPO}/haproxy/systemd/dockreg-agent.toml"),
            "--print-config",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout);
    assert!(
        printed.contains("root = \"/services\"  # file"),
        "{printed}"
    );
}

#[test]
fn an_unreachable_etcd_is_one_line_naming_the_endpoint_and_why() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = Command::new(WATCHER)
        .args([
            "--etcd",
            &url,
            "--once",
            "--no-validate",
            "--output",
            "/tmp/never.cfg",
        ])
        .args(["--etcd-timeout", "1s", "--log-level", "error"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let said = stderr(&o);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {said}");
    assert!(
        lines[0].contains(&format!("etcd unreachable at {url}: connection refused")),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_config_file_and_a_broken_one_changes_nothing() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    w.put("/api/10.0.0.7:80", "running").await;
    let file = w.path().join("dockreg-haproxy.toml");
    std::fs::write(&file, "prefix = [\"/service\"]\n").unwrap();
    let f = file.display().to_string();
    let watcher = w.watcher(&["--config", &f]);
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(15)).await;
    // Broken: refused with its line and key, and nothing changes.
    std::fs::write(
        &file,
        "prefix = [\"/service\"]\nmin_reload_intervall = \"1s\"\n",
    )
    .unwrap();
    watcher.signal("HUP");
    watcher.wait_log("the config file is refused").await;
    assert!(
        watcher
            .log_text()
            .contains(":2:1: key `min_reload_intervall`"),
        "{}",
        watcher.log_text()
    );
    w.put(&b.key(1), "running").await;
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(10)).await;
    // Changed and working: applied without a restart — a second service appears.
    std::fs::write(&file, "prefix = [\"/service\", \"/api\"]\n").unwrap();
    watcher.signal("HUP");
    watcher
        .wait_log("the config file changed; applying it")
        .await;
    crate::endstate::converged(&w, &["/service", "/api"], Duration::from_secs(15)).await;
    // Still one process, and it still follows etcd.
    w.del(&b.key(0)).await;
    crate::endstate::converged(&w, &["/service", "/api"], Duration::from_secs(10)).await;
    assert_eq!(watcher.stop().code(), Some(0));
}

//! The dynamic catalog end to end: `dockreg-haproxy --root /services` against a real etcd and
//! a real HAProxy (master-worker, runtime API). A child `/services/<name>/` that gets a valid
//! endpoint becomes a backend without a restart, and requests reach it through a frontend the
//! template routes by Host header (`tests/it/templates/by-host.cfg.tera`); an emptied one stays
//! for `--service-grace`, then goes; hostile names never reach HAProxy.

use crate::endstate::{converged_rooted, file_backends, haproxy_backends, Views};
use crate::harness::*;
use crate::hitless::hitless_watcher;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The grace the tests run the watcher with.
pub(crate) const GRACE: Duration = Duration::from_secs(2);

/// A world whose HAProxy also reads `DOCKREG_BY_HOST_BIND`, the address of the frontend the
/// test template renders; and that address.
pub(crate) async fn rooted_world() -> (World, SocketAddr) {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = Etcd::start(dir.path()).await;
    let by_host = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let haproxy = Haproxy::start_with_env(
        dir.path(),
        format!("{REPO}/haproxy/haproxy.cfg").into(),
        dir.path().join("backends.cfg"),
        &[("DOCKREG_BY_HOST_BIND".into(), by_host.to_string())],
    )
    .await;
    let client = etcd.client().await;
    let world = World {
        dir,
        etcd,
        haproxy,
        client,
    };
    (world, by_host)
}

/// The watcher with the runtime API, `--prefix /service --root /services`, a 2 s grace and
/// the by-Host template.
pub(crate) fn rooted_watcher(w: &World, extra: &[&str]) -> Watcher {
    let template = format!("{REPO}/tests/it/templates/by-host.cfg.tera");
    let out = w.haproxy.output.display().to_string();
    let grace = format!("{}s", GRACE.as_secs());
    let mut args = vec![
        "--prefix",
        "/service",
        "--root",
        "/services",
        "--service-grace",
        &grace,
        "--template",
        &template,
        "--output",
        &out,
    ];
    args.extend_from_slice(extra);
    hitless_watcher(w, &args)
}

/// etcd (prefix `/service`, root `/services`), the file and HAProxy agree, with every backend
/// counted, and `want` holds.
async fn settled(w: &World, want: impl Fn(&Views) -> bool) {
    converged_rooted(
        w,
        &["/service"],
        &["/services"],
        Duration::from_secs(20),
        want,
    )
    .await;
}

fn has(name: &'static str) -> impl Fn(&Views) -> bool {
    move |v| v.etcd.contains_key(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_service_under_a_root_is_routed_without_a_restart_then_removed_after_the_grace() {
    let (mut w, by_host) = rooted_world().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let m = metrics.to_string();
    let watcher = rooted_watcher(&w, &["--metrics-addr", &m]);
    let scrape = |path: &'static str| async move {
        get_path(metrics, path)
            .await
            .expect("the metrics server answers")
    };
    assert_routes_exactly_host(by_host, "service", &b.addrs[..1]).await;
    assert_routes_exactly_host(by_host, "newapp", &[]).await;
    let master = w.haproxy.show_proc().await;

    // A new child of the root: a new backend, routed to without restarting the watcher.
    let key = format!("/services/newapp/{}", b.addrs[1]);
    w.put(&key, "running").await;
    assert_routes_exactly_host(by_host, "newapp", &b.addrs[1..]).await;
    assert_routes_exactly_host(by_host, "service", &b.addrs[..1]).await;
    watcher
        .wait_log("new service \"newapp\" under /services/newapp")
        .await;
    settled(&w, has("newapp")).await;
    // The root's watch counts for readiness like a prefix's; the new service has its series.
    assert_eq!(scrape("/readyz").await.status, 200);
    let text = scrape("/metrics").await.body;
    for line in [
        r#"dockreg_watcher_endpoints{service="newapp"} 1"#,
        "dockreg_watcher_etcd_connected 1",
    ] {
        assert!(text.contains(line), "{line} in:\n{text}");
    }
    let now = w.haproxy.show_proc().await;
    assert!(
        now.reloads > master.reloads,
        "a new backend reloads HAProxy"
    );
    assert_eq!(now.failed, 0, "no reload failed");

    // Its last endpoint goes: out of rotation at once, the backend kept through the grace.
    let deleted = Instant::now();
    w.del(&key).await;
    assert_routes_exactly_host(by_host, "newapp", &[]).await;
    assert!(
        deleted.elapsed() < GRACE,
        "out of rotation before the grace ends"
    );
    assert!(file_backends(&w.haproxy.output).unwrap().contains("newapp"));
    let running = haproxy_backends(&w.haproxy.admin_socket).await.unwrap();
    assert!(running.contains("newapp"), "{running:?}");

    // Then gone from the file and from HAProxy, not before the grace ended.
    let deadline = deleted + GRACE + Duration::from_secs(15);
    loop {
        let in_file = file_backends(&w.haproxy.output).unwrap().contains("newapp");
        let in_haproxy = haproxy_backends(&w.haproxy.admin_socket)
            .await
            .unwrap()
            .contains("newapp");
        if !in_file && !in_haproxy {
            break;
        }
        if in_file != in_haproxy {
            // One is ahead of the other for a moment (the reload follows the write).
        } else {
            assert!(
                Instant::now() < deadline,
                "newapp still there {:?} after its last endpoint went",
                deleted.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone_after = deleted.elapsed();
    assert!(
        gone_after >= GRACE,
        "removed after {gone_after:?}, within the grace"
    );
    watcher.wait_log("service \"newapp\" removed").await;
    settled(&w, |v| !v.etcd.contains_key("newapp")).await;
    let text = scrape("/metrics").await.body;
    assert!(
        !text.contains(r#"service="newapp""#),
        "the series goes with the service:\n{text}"
    );
    assert_routes_exactly_host(by_host, "service", &b.addrs[..1]).await;
    assert_eq!(w.haproxy.show_proc().await.failed, 0, "no reload failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_back_within_the_grace_keeps_the_backend_and_reloads_nothing() {
    let (mut w, by_host) = rooted_world().await;
    let b = Backends::start(2).await;
    w.put(&format!("/services/app/{}", b.addrs[0]), "running")
        .await;
    let watcher = rooted_watcher(&w, &[]);
    assert_routes_exactly_host(by_host, "app", &b.addrs[..1]).await;
    settled(&w, has("app")).await;
    let before = w.haproxy.show_proc().await;
    // The app restarts on another port within the grace.
    w.del(&format!("/services/app/{}", b.addrs[0])).await;
    assert_routes_exactly_host(by_host, "app", &[]).await;
    w.put(&format!("/services/app/{}", b.addrs[1]), "running")
        .await;
    assert_routes_exactly_host(by_host, "app", &b.addrs[1..]).await;
    tokio::time::sleep(GRACE + Duration::from_secs(1)).await;
    settled(&w, has("app")).await;
    let after = w.haproxy.show_proc().await;
    assert_eq!(after.reloads, before.reloads, "no reload: runtime API only");
    assert!(!watcher.log_text().contains("service \"app\" removed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_service_names_under_a_root_never_reach_haproxy() {
    let (mut w, by_host) = rooted_world().await;
    let b = Backends::start(1).await;
    let watcher = rooted_watcher(&w, &[]);
    w.put(&format!("/services/good/{}", b.addrs[0]), "running")
        .await;
    assert_routes_exactly_host(by_host, "good", &b.addrs).await;
    let long = "a".repeat(10 * 1024);
    let hostile: Vec<Vec<u8>> = vec![
        b"/services/bad name/127.0.0.1:80".to_vec(),
        b"/services/x#y/127.0.0.1:80".to_vec(),
        b"/services/x\nbackend evil/127.0.0.1:80".to_vec(),
        b"/services/x\n    server evil 127.0.0.1:1/127.0.0.1:80".to_vec(),
        format!("/services/{long}/127.0.0.1:80").into_bytes(),
        b"/services/good/nested/127.0.0.1:80".to_vec(),
        b"/services//127.0.0.1:80".to_vec(),
        b"/services/\xff\xfe/127.0.0.1:80".to_vec(),
        b"/services/127.0.0.1:80".to_vec(),
    ];
    // Each twice, and a valid change after them: still one warning per key.
    for _ in 0..2 {
        for key in &hostile {
            w.client
                .put(key.clone(), "running", None)
                .await
                .expect("etcd put");
        }
    }
    w.put(&format!("/services/good/{}", b.addrs[0]), r#"{"weight":7}"#)
        .await;
    settled(&w, |v| {
        v.etcd
            .get("good")
            .is_some_and(|s| s.iter().all(|s| s.weight == 7))
    })
    .await;
    let text = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert_eq!(
        file_backends(&w.haproxy.output).unwrap(),
        ["good", "service"].map(String::from).into(),
        "{text}"
    );
    for word in [
        "evil",
        "bad",
        "x#y",
        "nested",
        "aaaa",
        "127.0.0.1:80 ",
        "127.0.0.1_80 ",
    ] {
        assert!(!text.contains(word), "{word} in the rendered file:\n{text}");
    }
    assert_routes_exactly_host(by_host, "good", &b.addrs).await;
    assert_eq!(w.haproxy.show_proc().await.failed, 0);
    let log = watcher.log_text();
    let shown = [
        "/services/bad name/127.0.0.1:80".to_string(),
        "/services/x#y/127.0.0.1:80".into(),
        "/services/x\\nbackend evil/127.0.0.1:80".into(),
        "/services/x\\n    server evil 127.0.0.1:1/127.0.0.1:80".into(),
        format!("/services/{}… ({} bytes)", &long[..190], hostile[4].len()),
        "/services/good/nested/127.0.0.1:80".into(),
        "/services//127.0.0.1:80".into(),
        "/services/\u{fffd}\u{fffd}/127.0.0.1:80".into(),
        "/services/127.0.0.1:80".into(),
    ];
    for key in &shown {
        let warnings = log
            .lines()
            .filter(|l| l.contains("WARN") && l.contains(&format!("etcd key \"{key}\"")))
            .count();
        assert_eq!(warnings, 1, "warnings naming {key:?}:\n{log}");
    }
    assert!(
        log.lines().all(|l| l.len() < 1024),
        "a long key is shortened in the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_watch_behind_compaction_relists_and_a_vanished_service_gets_its_grace() {
    let (mut w, by_host) = rooted_world().await;
    let b = Backends::start(2).await;
    w.put(&format!("/services/a/{}", b.addrs[0]), "running")
        .await;
    let watcher = rooted_watcher(&w, &["--etcd-timeout", "1s"]);
    assert_routes_exactly_host(by_host, "a", &b.addrs[..1]).await;

    // Freeze the watcher, lose etcd, change and compact while it is away: only a re-list of
    // the root brings it up to date.
    watcher.signal("STOP");
    w.etcd.restart().await;
    let mut c = w.etcd.client().await;
    c.delete(format!("/services/a/{}", b.addrs[0]), None)
        .await
        .unwrap();
    let rev = c
        .put(format!("/services/b/{}", b.addrs[1]), "running", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(rev, None).await.unwrap();
    w.client = c;
    let resumed = Instant::now();
    watcher.signal("CONT");
    watcher.wait_log("re-listing").await;
    assert_routes_exactly_host(by_host, "b", &b.addrs[1..]).await;
    assert_routes_exactly_host(by_host, "a", &[]).await;
    // `a` is not in the listing: its grace starts, it is not dropped at once.
    if resumed.elapsed() < GRACE - Duration::from_millis(500) {
        assert!(file_backends(&w.haproxy.output).unwrap().contains("a"));
    }
    settled(&w, |v| {
        v.etcd.contains_key("b") && !v.etcd.contains_key("a")
    })
    .await;
    watcher.wait_log("service \"a\" removed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_dry_run_list_the_roots() {
    let (mut w, _) = rooted_world().await;
    let b = Backends::start(1).await;
    w.put(&format!("/services/newapp/{}", b.addrs[0]), "running")
        .await;
    let run = |extra: &[&str]| {
        std::process::Command::new(WATCHER)
            .args(["--etcd", &w.etcd.url(), "--output"])
            .arg(&w.haproxy.output)
            .args(["--haproxy-config"])
            .arg(&w.haproxy.base)
            .args(extra)
            .envs(w.haproxy.env.iter().cloned())
            .output()
            .expect("run the watcher")
    };
    let server = format!("server {}", dockreg::core::keys::server_name(b.addrs[0]));
    let out = run(&["--root", "/services", "--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("+backend newapp") && stdout.contains(&format!("+    {server}")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("+backend service"),
        "no default prefix: {stdout}"
    );
    let out = run(&["--prefix", "/service", "--root", "/services", "--once"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert!(
        text.contains("backend newapp\n") && text.contains(&server),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_that_would_watch_keys_twice_is_a_usage_error_naming_it() {
    for (args, want) in [
        (
            &["--root", "/services", "--prefix", "/services/web"][..],
            "--root /services: overlaps --prefix /services/web",
        ),
        (
            &["--root", "/my services"],
            "--root: service prefix \"/my services\"",
        ),
        (&["--root", "/a,/a/b"], "--root /a/b: overlaps --root /a"),
    ] {
        let out = std::process::Command::new(WATCHER)
            .args(args)
            .args(["--no-validate", "--dry-run"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

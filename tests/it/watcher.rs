//! End-to-end tests of `dockreg-haproxy` against a real etcd and a real HAProxy, asserted
//! through real requests: exactly the registered backends must answer.

use crate::endstate::converged;
use crate::harness::*;
use dockreg_testkit::tls::{Certs, TlsEtcd};
use etcd_client::PutOptions;
use std::time::Duration;

/// etcd, the rendered file and HAProxy agree on `/service` within 15 s.
async fn settled(w: &World) {
    converged(w, &["/service"], Duration::from_secs(15)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_delete_route_exactly_the_registered_backends() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    w.put(&b.key(0), "running").await;
    let _watcher = w.watcher(&[]);
    assert_routes_exactly(w.haproxy.http, &[b.addrs[0]]).await;

    w.put(
        &b.key(1),
        r#"{"weight":10,"tags":["v2"],"container":"abc"}"#,
    )
    .await;
    w.put(&b.key(2), "running").await;
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    settled(&w).await; // weight 10 included

    w.del(&b.key(0)).await;
    assert_routes_exactly(w.haproxy.http, &b.addrs[1..]).await;
    settled(&w).await;

    w.del(&b.key(1)).await;
    w.del(&b.key(2)).await;
    assert_routes_exactly(w.haproxy.http, &[]).await;
    settled(&w).await;
    let proc = w.haproxy.show_proc().await;
    assert_eq!(proc.failed, 0, "no reload may fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_expiry_removes_the_backend() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let lease = w.client.lease_grant(5, None).await.unwrap().id();
    w.client
        .put(
            b.key(1),
            "running",
            Some(PutOptions::new().with_lease(lease)),
        )
        .await
        .unwrap();
    let _watcher = w.watcher(&[]);
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    // No keep-alive: etcd expires the lease and deletes the key on its own.
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    assert!(w.client.get(b.key(1), None).await.unwrap().kvs().is_empty());
    settled(&w).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_1000_changes_converges_with_few_reloads() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let watcher = w.watcher(&[]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    let reloads_before = w.haproxy.show_proc().await.reloads;

    // 1,000 changes as fast as etcd takes them: 500 endpoints on closed loopback ports
    // appear, then all of them but every fifth go away again.
    let fake = |i: usize| format!("/service/127.0.1.{}:{}", 1 + i % 200, 20000 + i);
    for i in 0..500 {
        w.put(&fake(i), "running").await;
    }
    for i in 0..500 {
        if i % 5 != 0 {
            w.del(&fake(i)).await;
        }
    }
    // Then bring the set back to the real backends only.
    w.put(&b.key(1), "running").await;
    for i in (0..500).step_by(5) {
        w.del(&fake(i)).await;
    }
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    eventually(
        Duration::from_secs(10),
        "output equals etcd state",
        || async {
            let mut servers: Vec<String> =
                w.rendered_servers().into_iter().map(|(_, a)| a).collect();
            servers.sort();
            let mut want: Vec<String> = b.addrs.iter().map(|a| a.to_string()).collect();
            want.sort();
            servers == want
        },
    )
    .await;
    let proc = w.haproxy.show_proc().await;
    let reloads = proc.reloads - reloads_before;
    assert_eq!(proc.failed, 0);
    assert!(
        reloads <= 60,
        "1,101 changes caused {reloads} reloads; bursts must be coalesced"
    );
    assert!(reloads >= 1);
    assert!(watcher.log_text().contains("HAProxy reloaded"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_edit_rerenders_and_broken_template_keeps_last_good() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    let template = w.path().join("backends.cfg.tera");
    let good =
        std::fs::read_to_string(format!("{REPO}/templates/haproxy-backends.cfg.tera")).unwrap();
    std::fs::write(&template, &good).unwrap();
    w.put(&b.key(0), "running").await;
    let t = template.display().to_string();
    let out = w.haproxy.output.display().to_string();
    let watcher = w.watcher(&["--template", &t, "--output", &out]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;

    // A live edit: every response now carries a header the template adds.
    let edited = good.replace(
        "    retries 2",
        "    retries 2\n    http-response set-header X-Dockreg-Template edited",
    );
    assert_ne!(edited, good);
    std::fs::write(&template, &edited).unwrap();
    eventually(
        Duration::from_secs(10),
        "edited template served",
        || async {
            get(w.haproxy.http).await.is_some_and(|r| {
                r.headers.get("x-dockreg-template").map(String::as_str) == Some("edited")
            })
        },
    )
    .await;

    // A broken edit is reported with file and line, and changes keep flowing through the
    // last good template.
    std::fs::write(&template, format!("{edited}\n{{% for x in %}}\n")).unwrap();
    watcher.wait_log(&format!("{t}:")).await;
    assert!(
        watcher.log_text().contains("template rejected"),
        "{}",
        watcher.log_text()
    );
    w.put(&b.key(1), "running").await;
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    let r = get(w.haproxy.http).await.unwrap();
    assert_eq!(
        r.headers.get("x-dockreg-template").map(String::as_str),
        Some("edited")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_keys_and_values_are_skipped_and_named() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    let watcher = w.watcher(&[]);
    let hostile: &[(&str, &str)] = &[
        (
            "/service/127.0.0.1:80\n    server evil 127.0.0.1:1",
            "running",
        ),
        ("/service/127.0.0.1:0", "running"),
        ("/service/127.0.0.1:70000", "running"),
        ("/service/nested/127.0.0.1:81", "running"),
        ("/service/evil.example:80", "running"),
        ("/service/127.0.0.1:82 backup", "running"),
        ("/service/127.0.0.1:83", "stopped"),
        (
            "/service/127.0.0.1:84",
            r#"{"tags":["x\n    server evil 127.0.0.1:1"]}"#,
        ),
        ("/service/127.0.0.1:85", r##"{"container":"# comment"}"##),
        ("/service/127.0.0.1:86", r#"{"weight":1000}"#),
    ];
    for (k, v) in hostile {
        w.put(k, v).await;
    }
    let big = format!(r#"{{"container":"{}"}}"#, "a".repeat(10_000));
    w.put("/service/127.0.0.1:87", &big).await;
    w.client
        .put(b"/service/\xff\xfe:80".to_vec(), "running", None)
        .await
        .unwrap();
    w.put(&b.key(0), "running").await;
    w.put(&b.key(1), r#"{"weight":5}"#).await;
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    assert_eq!(
        w.rendered_servers().len(),
        2,
        "only the two valid endpoints are rendered"
    );
    let text = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert!(!text.contains("evil") && !text.contains("backup"), "{text}");
    let log = watcher.log_text();
    for key in [
        "127.0.0.1:0",
        "127.0.0.1:70000",
        "nested/127.0.0.1:81",
        "127.0.0.1:83",
        "127.0.0.1:86",
        "127.0.0.1:87",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("skipped") && l.contains(key)),
            "no warning names {key}: {log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restart_mid_run_and_absent_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let haproxy = Haproxy::start(dir.path()).await;
    let b = Backends::start(3).await;
    // etcd is not there yet: the watcher waits, retries, and converges once it is.
    let port = free_port();
    let watcher = Watcher::start(
        dir.path(),
        &haproxy,
        &format!("http://127.0.0.1:{port}"),
        &[],
    );
    watcher.wait_log("etcd unreachable").await;
    let mut etcd = Etcd::start_on(dir.path(), port).await;
    let mut c = etcd.client().await;
    c.put(format!("/service/{}", b.addrs[0]), "running", None)
        .await
        .unwrap();
    assert_routes_exactly(haproxy.http, &b.addrs[..1]).await;

    // etcd dies: HAProxy keeps serving the last good config.
    etcd.kill();
    watcher.wait_log("etcd watch broken").await;
    assert_keeps_routing(haproxy.http, &b.addrs[..1], Duration::from_secs(2)).await;

    etcd.restart().await;
    let mut c = etcd.client().await;
    c.put(format!("/service/{}", b.addrs[1]), "running", None)
        .await
        .unwrap();
    c.put(format!("/service/{}", b.addrs[2]), "running", None)
        .await
        .unwrap();
    c.delete(format!("/service/{}", b.addrs[0]), None)
        .await
        .unwrap();
    assert_routes_exactly(haproxy.http, &b.addrs[1..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn candidate_rejected_by_haproxy_keeps_live_config_and_no_reload() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    // A template that renders an invalid keyword for endpoints tagged "bogus".
    let template = w.path().join("strict.cfg.tera");
    std::fs::write(
        &template,
        "{% for name, s in services %}backend {{ name }}\n{% for e in s.endpoints %}    server {{ e.name }} {{ e.address }}{% if e.tags is containing(\"bogus\") %} no-such-keyword{% endif %}\n{% endfor %}{% endfor %}",
    )
    .unwrap();
    w.put(&b.key(0), "running").await;
    let (t, out) = (
        template.display().to_string(),
        w.haproxy.output.display().to_string(),
    );
    let watcher = w.watcher(&["--template", &t, "--output", &out]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    let live = std::fs::read_to_string(&w.haproxy.output).unwrap();
    let before = w.haproxy.show_proc().await;

    w.put(&b.key(1), r#"{"tags":["bogus"]}"#).await;
    watcher.wait_log("candidate configuration rejected").await;
    assert!(
        watcher.log_text().contains("no-such-keyword"),
        "HAProxy's own error is logged"
    );
    assert_eq!(
        std::fs::read_to_string(&w.haproxy.output).unwrap(),
        live,
        "live file kept"
    );
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    let after = w.haproxy.show_proc().await;
    assert_eq!(
        after.reloads, before.reloads,
        "no reload after a rejected candidate"
    );

    // The next change that validates is applied.
    w.put(&b.key(1), "running").await;
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_render_causes_no_write_and_no_reload() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let watcher = w.watcher(&[]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    watcher.wait_log("HAProxy reloaded").await;
    let before = w.haproxy.show_proc().await;
    let updates = |w: &Watcher| w.log_text().matches("configuration updated").count();
    let updated = updates(&watcher);
    // Same value again, a key outside the layout, a value rewrite with the same meaning.
    w.put(&b.key(0), "running").await;
    w.put("/service/not-an-endpoint", "running").await;
    w.put(&b.key(0), r#"{"weight":100}"#).await;
    // Spaced, so the sentinel below is an apply of its own.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Sentinel: once it is served, every change before it was handled.
    w.put(&b.key(1), "running").await;
    settled(&w).await;
    assert_eq!(
        updates(&watcher),
        updated + 1,
        "only the sentinel wrote the file:\n{}",
        watcher.log_text()
    );
    assert_eq!(
        w.haproxy.show_proc().await.reloads,
        before.reloads + 1,
        "only the sentinel reloaded"
    );
    assert_eq!(watcher.stop().code(), Some(0), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_dry_run() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let env = w.haproxy.env.clone();
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(WATCHER);
        cmd.args(args).envs(env.iter().cloned());
        cmd.output().expect("run watcher")
    };
    let common = vec![
        "--etcd".to_string(),
        w.etcd.url(),
        "--output".to_string(),
        w.haproxy.output.display().to_string(),
        "--haproxy-config".to_string(),
        w.haproxy.base.display().to_string(),
    ];
    // --dry-run prints the diff and touches nothing.
    let before = std::fs::read_to_string(&w.haproxy.output).unwrap();
    let out = run([common.clone(), vec!["--dry-run".into()]].concat());
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "+    server {}",
            dockreg::core::keys::server_name(b.addrs[0])
        )),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&w.haproxy.output).unwrap(), before);

    // --once writes, reloads through the master socket and exits 0.
    let once = [
        common.clone(),
        vec![
            "--once".into(),
            "--master-socket".into(),
            w.haproxy.master_socket.display().to_string(),
        ],
    ]
    .concat();
    let out = run(once.clone());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;

    // --once fails (non-zero) when HAProxy's check fails: a base config that does not parse.
    let bad_base = w.path().join("bad-base.cfg");
    std::fs::write(&bad_base, "global\n    no-such-directive\n").unwrap();
    w.put(&b.key(1), "running").await;
    let mut bad = once.clone();
    let i = bad.iter().position(|a| a == "--haproxy-config").unwrap();
    bad[i + 1] = bad_base.display().to_string();
    let out = run(bad);
    assert!(!out.status.success());
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;

    // --once fails when etcd is unreachable.
    let mut no_etcd = once;
    no_etcd[1] = format!("http://127.0.0.1:{}", free_port());
    no_etcd.extend(["--etcd-timeout".to_string(), "1s".to_string()]);
    assert!(!run(no_etcd).status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_name_the_flag() {
    let out = std::process::Command::new(WATCHER)
        .args(["--prefix", "/my service", "--no-validate"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prefix"));
    let out = std::process::Command::new(WATCHER)
        .args([
            "--template",
            "/nonexistent/t.tera",
            "--output",
            "/tmp/x.cfg",
            "--no-validate",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/t.tera"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_member_cluster_survives_a_member_loss() {
    let dir = tempfile::tempdir().unwrap();
    let mut members = Etcd::cluster(dir.path()).await;
    let haproxy = Haproxy::start(dir.path()).await;
    let b = Backends::start(2).await;
    let urls = members
        .iter()
        .map(|m| m.url())
        .collect::<Vec<_>>()
        .join(",");
    let mut c = members[2].client().await;
    c.put(format!("/service/{}", b.addrs[0]), "running", None)
        .await
        .unwrap();
    let _watcher = Watcher::start(dir.path(), &haproxy, &urls, &[]);
    assert_routes_exactly(haproxy.http, &b.addrs[..1]).await;
    // Lose a member: the watcher's stream to it breaks or it was on another one; either way
    // changes written through a surviving member arrive.
    members[0].kill();
    // The lost member may have been the leader: the write waits out the election.
    let key = format!("/service/{}", b.addrs[1]);
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while let Err(e) = c.put(key.as_str(), "running", None).await {
        assert!(
            std::time::Instant::now() < deadline,
            "no leader elected: {e}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_routes_exactly(haproxy.http, &b.addrs).await;
    members[1].kill();
    // Two of three gone: no quorum, HAProxy keeps serving what it had.
    assert_keeps_routing(haproxy.http, &b.addrs, Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_behind_compaction_relists() {
    let dir = tempfile::tempdir().unwrap();
    let haproxy = Haproxy::start(dir.path()).await;
    let b = Backends::start(3).await;
    let mut etcd = Etcd::start(dir.path()).await;
    let mut c = etcd.client().await;
    c.put(format!("/service/{}", b.addrs[0]), "running", None)
        .await
        .unwrap();
    let watcher = Watcher::start(dir.path(), &haproxy, &etcd.url(), &["--etcd-timeout", "1s"]);
    assert_routes_exactly(haproxy.http, &b.addrs[..1]).await;

    // Freeze the watcher, lose etcd, change and compact while it is away; when the watcher
    // resumes, its watch revision is gone and only a re-list can bring it up to date.
    watcher.signal("STOP");
    etcd.restart().await;
    let mut c = etcd.client().await;
    c.delete(format!("/service/{}", b.addrs[0]), None)
        .await
        .unwrap();
    c.put(format!("/service/{}", b.addrs[1]), "running", None)
        .await
        .unwrap();
    let rev = c
        .put(format!("/service/{}", b.addrs[2]), "running", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    c.compact(rev, None).await.unwrap();
    watcher.signal("CONT");
    watcher.wait_log("re-listing").await;
    assert_routes_exactly(haproxy.http, &b.addrs[1..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_reload_is_retried_until_it_succeeds() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    // A reload command that fails until the operator creates a file, then reloads HAProxy
    // by signalling its master.
    let master = w.haproxy.show_proc().await.master_pid;
    let gate = w.path().join("reload-ok");
    let cmd = format!("test -e {} && kill -USR2 {master}", gate.display());
    let out = w.haproxy.output.display().to_string();
    let base = w.haproxy.base.display().to_string();
    let mut c = std::process::Command::new(WATCHER);
    c.args([
        "--etcd",
        &w.etcd.url(),
        "--output",
        &out,
        "--haproxy-config",
        &base,
    ])
    .args(["--reload-cmd", &cmd, "--template-settle", "50ms"])
    .envs(w.haproxy.env.iter().cloned())
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(w.path().join("retry.log")).unwrap());
    let mut child = ChildGuard(c.spawn().unwrap());
    let log = || std::fs::read_to_string(w.path().join("retry.log")).unwrap_or_default();
    eventually(
        Duration::from_secs(10),
        "two failed reload attempts",
        || async { log().matches("HAProxy reload failed").count() >= 2 },
    )
    .await;
    assert_routes_exactly(w.haproxy.http, &[]).await;
    std::fs::write(&gate, "").unwrap();
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    assert!(log().contains("HAProxy reloaded"));
    child.0.kill().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_password_auth() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let certs = Certs::make(d, &["127.0.0.1"]);
    let etcd = TlsEtcd::start(d, certs, &["127.0.0.1"]).await;
    let url = etcd.url_on("127.0.0.1");
    let p = |f: &str| etcd.certs.path(f);
    let etcdctl = |args: &[&str]| etcd.etcdctl(args);
    for args in [
        &["user", "add", "root:rootpw"][..],
        &["user", "add", "watcher:s3cret"],
        &["role", "add", "reader"],
        &[
            "role",
            "grant-permission",
            "reader",
            "--prefix=true",
            "read",
            "/service/",
        ],
        &["user", "grant-role", "watcher", "reader"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let haproxy = Haproxy::start(d).await;
    let b = Backends::start(1).await;
    let key = format!("/service/{}", b.addrs[0]);
    let out = etcdctl(&["--user", "root:rootpw", "put", &key, "running"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let tls = [
        "--etcd-ca",
        &p("ca.pem"),
        "--etcd-cert",
        &p("client.pem"),
        "--etcd-key",
        &p("client.key"),
    ];
    // A wrong password is reported, and nothing is rendered.
    let bad = [
        &tls[..],
        &["--etcd-user", "watcher", "--etcd-password", "wrong"],
    ]
    .concat();
    let watcher = Watcher::start(d, &haproxy, &url, &bad);
    watcher.wait_log("etcd unreachable").await;
    assert!(
        watcher.log_text().contains("authentication failed"),
        "{}",
        watcher.log_text()
    );
    drop(watcher);
    assert_routes_exactly(haproxy.http, &[]).await;

    let good = [
        &tls[..],
        &["--etcd-user", "watcher", "--etcd-password", "s3cret"],
    ]
    .concat();
    let _watcher = Watcher::start(d, &haproxy, &url, &good);
    assert_routes_exactly(haproxy.http, &b.addrs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_fallback_example_template_is_valid_and_serves_its_page() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    let t = format!("{REPO}/templates/maintenance-fallback.cfg.tera");
    let out = w.haproxy.output.display().to_string();
    let _watcher = w.watcher(&["--template", &t, "--output", &out]);
    // No endpoint: the maintenance page, from a configuration HAProxy accepted.
    eventually(Duration::from_secs(10), "maintenance page", || async {
        get(w.haproxy.http)
            .await
            .is_some_and(|r| r.status == 503 && r.body.contains("down for maintenance"))
    })
    .await;
    w.put(&b.key(0), "running").await;
    w.put(&b.key(1), r#"{"tags":["canary"]}"#).await;
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    let text = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert!(
        text.contains(&format!("{} check weight 1\n", b.addrs[1])),
        "{text}"
    );
    assert!(!text.contains("down for maintenance"), "{text}");
}

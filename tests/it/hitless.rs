//! Hitless updates: server-set changes through HAProxy's runtime API with no reload, the
//! fallback to a reload, reloads for everything else, and draining of removed servers —
//! asserted through HAProxy's own state (`show proc`, `show servers state`) and real requests.

use crate::harness::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The watcher with the runtime fast path on.
pub fn hitless_watcher(w: &World, extra: &[&str]) -> Watcher {
    let admin = w.haproxy.admin_socket.display().to_string();
    let state = w.path().join("server-state").display().to_string();
    let mut args = vec!["--runtime-socket", &admin, "--server-state-file", &state];
    args.extend_from_slice(extra);
    w.watcher(&args)
}

/// A copy of the shipped default template in the test folder, to edit, and its text.
pub fn editable_template(w: &World) -> (PathBuf, String) {
    let template = w.path().join("backends.cfg.tera");
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/haproxy-backends.cfg.tera"),
    )
    .expect("read the shipped template");
    std::fs::write(&template, &shipped).expect("copy the template");
    (template, shipped)
}

/// The hitless watcher rendering `template` into HAProxy's backends file.
fn templated_watcher(w: &World, template: &Path) -> Watcher {
    let t = template.display().to_string();
    let out = w.haproxy.output.display().to_string();
    hitless_watcher(w, &["--template", &t, "--output", &out])
}

/// Starts `n` requests through HAProxy that the backends answer `ms` later, and waits until
/// all of them have reached a backend (they are then in flight).
async fn slow_requests(
    w: &World,
    b: &Backends,
    ms: u64,
    n: u64,
) -> Vec<tokio::task::JoinHandle<Option<Response>>> {
    let http = w.haproxy.http;
    let hits = || b.hits.load(std::sync::atomic::Ordering::Relaxed);
    let before = hits();
    let path = format!("/slow/{ms}");
    let slow = (0..n)
        .map(|_| {
            let path = path.clone();
            tokio::spawn(async move { get_path(http, &path).await })
        })
        .collect();
    eventually(
        Duration::from_secs(5),
        "the slow requests at a backend",
        || async { hits() >= before + n },
    )
    .await;
    slow
}

/// How many applies the watcher logged as taking `path`.
pub fn applies(watcher: &Watcher, path: &str) -> usize {
    watcher
        .log_text()
        .lines()
        .filter(|l| l.contains("configuration updated") && l.contains(&format!("path={path} ")))
        .count()
}

/// Waits until the watcher has logged `n` applies through `path`.
async fn wait_applies(watcher: &Watcher, path: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while applies(watcher, path) < n {
        if std::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {n} apply(ies) with path={path}; watcher log:\n{}",
                watcher.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Who answers `n` requests, asserted in one round with no retry: the change must already be
/// in effect.
async fn answers_now(w: &World, n: usize) -> Vec<String> {
    who_answers(w.haproxy.http, n).await.into_keys().collect()
}

fn ids(b: &Backends, idx: &[usize]) -> Vec<String> {
    let mut v: Vec<String> = idx.iter().map(|&i| Backends::id(b.addrs[i])).collect();
    v.sort();
    v
}

/// HAProxy's servers in `backend` as `(name, admin state)`, from `show servers state`.
async fn haproxy_servers(w: &World, backend: &str) -> Vec<(String, u32)> {
    let text = w
        .haproxy
        .admin(&format!("show servers state {backend}"))
        .await;
    let state = dockreg::haproxy::admin::ServerState::parse_all(&text).expect("server state");
    let mut v: Vec<_> = state.into_iter().map(|s| (s.name, s.admin_state)).collect();
    v.sort();
    v
}

/// Waits until HAProxy's `service` backend holds exactly `active` in service and `draining`
/// in maintenance: the state a put and a delete lead to, however the pipeline groups them
/// into applies.
async fn wait_servers(
    w: &World,
    active: &[std::net::SocketAddr],
    draining: &[std::net::SocketAddr],
) {
    let mut want: Vec<(String, bool)> = active
        .iter()
        .map(|a| (server_name(*a), false))
        .chain(draining.iter().map(|a| (server_name(*a), true)))
        .collect();
    want.sort();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let have: Vec<(String, bool)> = haproxy_servers(w, "service")
            .await
            .into_iter()
            .map(|(name, admin)| (name, admin & 0x01 != 0))
            .collect();
        if have == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "HAProxy's servers should be {want:?} (name, in maintenance); are {have:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn server_name(addr: std::net::SocketAddr) -> String {
    format!("{}_{}", addr.ip(), addr.port())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_changes_apply_at_once_without_a_reload() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    w.put(&b.key(0), "running").await;
    let watcher = hitless_watcher(&w, &[]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    let before = w.haproxy.show_proc().await;
    let worker: Vec<u32> = before.current_workers().collect();

    w.put(&b.key(1), "running").await;
    wait_applies(&watcher, "runtime", 1).await;
    assert_eq!(answers_now(&w, 8).await, ids(&b, &[0, 1]));

    w.put(&b.key(2), "running").await;
    wait_applies(&watcher, "runtime", 2).await;
    assert_eq!(answers_now(&w, 10).await, ids(&b, &[0, 1, 2]));

    w.put(&b.key(2), r#"{"weight":3}"#).await;
    wait_applies(&watcher, "runtime", 3).await;
    w.del(&b.key(0)).await;
    wait_applies(&watcher, "runtime", 4).await;
    assert_eq!(answers_now(&w, 120).await, ids(&b, &[1, 2]));

    let after = w.haproxy.show_proc().await;
    assert_eq!(
        after.reloads, before.reloads,
        "no reload for server changes"
    );
    assert_eq!(after.current_workers().collect::<Vec<_>>(), worker);
    assert_eq!(
        applies(&watcher, "reload"),
        1,
        "only the first apply reloads"
    );
    // HAProxy's state is the file's: the weight is there, and the removed server goes once
    // it has drained (it had no request in flight).
    let file = std::fs::read_to_string(&w.haproxy.output).unwrap();
    assert!(
        file.contains(&format!(
            "server {} {} check weight 3",
            server_name(b.addrs[2]),
            b.addrs[2]
        )),
        "{file}"
    );
    let mut want = [server_name(b.addrs[1]), server_name(b.addrs[2])];
    want.sort(); // as haproxy_servers lists them
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let names: Vec<String> = haproxy_servers(&w, "service")
            .await
            .into_iter()
            .map(|s| s.0)
            .collect();
        if names == want {
            break;
        }
        if std::time::Instant::now() > deadline {
            let conns = w.haproxy.admin("show servers conn service").await;
            panic!(
                "the removed server is not deleted: {names:?}\n{conns}\nwatcher log:\n{}",
                watcher.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = w.haproxy.admin("show servers state service").await;
    assert!(
        text.lines()
            .any(|l| l.contains(&server_name(b.addrs[2]))
                && l.split_whitespace().nth(7) == Some("3")),
        "weight 3 in HAProxy: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_edit_reloads_and_state_survives_it() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    let (template, shipped) = editable_template(&w);
    w.put(&b.key(0), "running").await;
    w.put(&b.key(1), "running").await;
    let watcher = templated_watcher(&w, &template);
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    // An operator puts one server into maintenance by hand; a reload must keep that.
    let id = format!("service/{}", server_name(b.addrs[1]));
    assert_eq!(
        w.haproxy
            .admin(&format!("disable server {id}"))
            .await
            .trim(),
        ""
    );
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    let before = w.haproxy.show_proc().await;

    std::fs::write(&template, shipped.replace("retries 2", "retries 3")).unwrap();
    eventually(
        Duration::from_secs(15),
        "a reload for the template edit",
        || async { w.haproxy.show_proc().await.reloads > before.reloads },
    )
    .await;
    wait_applies(&watcher, "reload", 2).await;
    let line = watcher
        .log_text()
        .lines()
        .rfind(|l| l.contains("path=reload"))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.contains("backend service"),
        "the reason names the backend: {line}"
    );
    assert!(std::fs::read_to_string(&w.haproxy.output)
        .unwrap()
        .contains("retries 3"));
    // The server state saved before the reload kept the manual maintenance.
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    assert_eq!(w.haproxy.show_proc().await.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_runtime_command_falls_back_to_a_reload() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    w.put(&b.key(0), "running").await;
    let watcher = hitless_watcher(&w, &[]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    let before = w.haproxy.show_proc().await;
    // Someone adds, by hand, a server under the name the watcher will want for backend 1,
    // but pointing at backend 2: the watcher's `add server` is refused.
    let name = server_name(b.addrs[1]);
    let answer = w
        .haproxy
        .admin(&format!("add server service/{name} {}", b.addrs[2]))
        .await;
    assert_eq!(answer.trim(), "New server registered.");
    assert_eq!(
        w.haproxy
            .admin(&format!("enable server service/{name}"))
            .await
            .trim(),
        ""
    );
    assert_routes_exactly(w.haproxy.http, &[b.addrs[0], b.addrs[2]]).await;

    w.put(&b.key(1), "running").await;
    watcher.wait_log("falling back to a reload").await;
    eventually(Duration::from_secs(15), "the fallback reload", || async {
        w.haproxy.show_proc().await.reloads > before.reloads
    })
    .await;
    // HAProxy now runs the file: backends 0 and 1, and the stray server is gone.
    assert_routes_exactly(w.haproxy.http, &b.addrs[..2]).await;
    assert_eq!(w.haproxy.show_proc().await.failed, 0);
    // And the fast path is back for the next change.
    w.put(&b.key(2), "running").await;
    wait_applies(&watcher, "runtime", 1).await;
    assert_eq!(answers_now(&w, 10).await, ids(&b, &[0, 1, 2]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_server_finishes_its_requests_in_flight() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(1), "running").await;
    let watcher = hitless_watcher(&w, &[]);
    assert_routes_exactly(w.haproxy.http, &b.addrs[1..]).await;
    let reloads = w.haproxy.show_proc().await.reloads;
    // A slow request reaches backend 1, the only server...
    let slow = slow_requests(&w, &b, 4000, 1).await.remove(0);
    // ...then backend 0 joins and backend 1 leaves while the request runs.
    w.put(&b.key(0), "running").await;
    w.del(&b.key(1)).await;
    wait_servers(&w, &b.addrs[..1], &b.addrs[1..2]).await;
    // The apply is logged after `haproxy -c`, a moment after HAProxy already routes the new way.
    wait_applies(&watcher, "runtime", 1).await;
    assert!(!slow.is_finished(), "the slow request is still in flight");
    assert_eq!(
        answers_now(&w, 6).await,
        ids(&b, &[0]),
        "no new request for backend 1"
    );
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(response.status, 200);
    assert_eq!(response.body, Backends::id(b.addrs[1]));
    // Drained: HAProxy deletes it, with no reload.
    eventually(
        Duration::from_secs(5),
        "backend 1 deleted from HAProxy",
        || async { haproxy_servers(&w, "service").await.len() == 1 },
    )
    .await;
    watcher
        .wait_log("removed server deleted after draining")
        .await;
    assert_eq!(w.haproxy.show_proc().await.reloads, reloads);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_is_bounded_by_the_drain_timeout() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    w.put(&b.key(1), "running").await;
    let watcher = hitless_watcher(&w, &["--drain-timeout", "300ms"]);
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    // Requests that would take 4 s, on both servers.
    let slow = slow_requests(&w, &b, 4000, 2).await;
    let started = std::time::Instant::now();
    w.del(&b.key(1)).await;
    watcher.wait_log("shutting its sessions down").await;
    eventually(Duration::from_secs(3), "backend 1 deleted", || async {
        haproxy_servers(&w, "service").await.len() == 1
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "deleted long before its request would have ended"
    );
    let mut answered = Vec::new();
    for s in slow {
        answered.push(s.await.unwrap().map(|r| (r.status, r.body)));
    }
    assert!(
        answered.contains(&Some((200, Backends::id(b.addrs[0])))),
        "the staying server's request completes: {answered:?}"
    );
    assert!(
        answered
            .iter()
            .any(|a| a.as_ref().is_none_or(|(s, _)| *s != 200)),
        "the removed server's request was cut: {answered:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_drain_keeps_the_request_and_the_fast_path() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    let (template, shipped) = editable_template(&w);
    w.put(&b.key(1), "running").await;
    let watcher = templated_watcher(&w, &template);
    assert_routes_exactly(w.haproxy.http, &b.addrs[1..2]).await;
    // A slow request on backend 1, which then leaves (drains) while backend 0 joins.
    let slow = slow_requests(&w, &b, 4500, 1).await.remove(0);
    w.put(&b.key(0), "running").await;
    w.del(&b.key(1)).await;
    wait_servers(&w, &b.addrs[..1], &b.addrs[1..2]).await;
    // A template edit reloads HAProxy in the middle of the drain.
    let reloads = w.haproxy.show_proc().await.reloads;
    std::fs::write(&template, shipped.replace("retries 2", "retries 3")).unwrap();
    eventually(Duration::from_secs(15), "the reload", || async {
        w.haproxy.show_proc().await.reloads > reloads
    })
    .await;
    assert!(!slow.is_finished(), "the reload came while the request ran");
    // The old worker finishes the request; the new one never knew backend 1.
    let response = slow
        .await
        .unwrap()
        .expect("the in-flight request completes");
    assert_eq!(
        (response.status, response.body),
        (200, Backends::id(b.addrs[1]))
    );
    assert_eq!(haproxy_servers(&w, "service").await.len(), 1);
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
    // The fast path goes on against the new worker: its apply is the first one logged after
    // the reload (counted once the reload's own apply is in the log).
    let reloaded = w.haproxy.show_proc().await.reloads;
    let runtime_applies = applies(&watcher, "runtime");
    w.put(&b.key(2), "running").await;
    wait_applies(&watcher, "runtime", runtime_applies + 1).await;
    wait_servers(&w, &[b.addrs[0], b.addrs[2]], &[]).await;
    assert_eq!(answers_now(&w, 8).await, ids(&b, &[0, 2]));
    assert_eq!(w.haproxy.show_proc().await.reloads, reloaded, "no reload");
    assert!(
        !watcher.log_text().contains("falling back"),
        "{}",
        watcher.log_text()
    );
    assert_eq!(w.haproxy.show_proc().await.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_comes_back_while_it_drains_is_put_back_in_service() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    w.put(&b.key(1), "running").await;
    let watcher = hitless_watcher(&w, &[]);
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(15)).await;
    let reloads = w.haproxy.show_proc().await.reloads;
    // Backend 1 holds a request, leaves (drains), and comes back before the request ends.
    let slow = slow_requests(&w, &b, 3000, 2).await;
    w.del(&b.key(1)).await;
    wait_servers(&w, &b.addrs[..1], &b.addrs[1..]).await;
    // The runtime update came first; the file follows once its check is done. Wait for it, or
    // the file from before the delete (which lists backend 1 too) could pass for the one after
    // the put, and the delete's write land in the middle of the end-state check.
    let gone = b.addrs[1].to_string();
    eventually(Duration::from_secs(10), "the delete written", || async {
        !w.rendered_servers().iter().any(|(_, addr)| *addr == gone)
    })
    .await;
    w.put(&b.key(1), "running").await;
    wait_servers(&w, &b.addrs, &[]).await;
    crate::endstate::converged(&w, &["/service"], Duration::from_secs(10)).await;
    for s in slow {
        let r = s.await.unwrap().expect("the requests in flight complete");
        assert_eq!(r.status, 200);
    }
    assert_eq!(w.haproxy.show_proc().await.reloads, reloads, "no reload");
    let log = watcher.log_text();
    assert!(!log.contains("falling back"), "{log}");
    assert!(
        !log.contains("removed server deleted"),
        "the server was revived, not deleted and added again:\n{log}"
    );
}

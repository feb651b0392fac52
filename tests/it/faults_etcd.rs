//! Faults on the etcd side of the watcher, each ending with the end-state check (etcd = the
//! rendered file = HAProxy's `show servers state`): etcd wiped and re-created on the same
//! address, etcd restored from an older snapshot (both leave the store at a revision below the
//! one the watcher has seen), and IPv4-mapped and `::/96` IPv6 keys through the runtime path.

use crate::endstate::{converged_with, etcd_addrs, Views};
use crate::harness::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Bound on convergence after a fault: the watch's retry backoff (up to 5 s), the store
/// check, a re-list, a render and a reload, on a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(45);

/// What the watcher logs when it finds the store is another one.
const STORE_CHANGED: &str = "the etcd store is not the one listed before";

/// The watcher's warning about the store, for the test output.
fn warning(log: &str) -> &str {
    log.lines()
        .find(|l| l.contains(STORE_CHANGED))
        .unwrap_or_default()
}

fn holds_exactly(want: &[SocketAddr]) -> impl Fn(&Views) -> bool {
    let want: BTreeSet<SocketAddr> = want.iter().copied().collect();
    move |v| etcd_addrs(v, "service") == want
}

/// The revision of the store behind `w.client`.
async fn revision(w: &World) -> i64 {
    let resp = w
        .client
        .kv_client()
        .get("/", None)
        .await
        .expect("etcd get for the revision");
    resp.header().expect("a response header").revision()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_wiped_and_recreated_converges_to_the_new_store() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    w.put(&b.key(0), "running").await;
    w.put(&b.key(1), "running").await;
    let watcher = w.watcher(&["--etcd-timeout", "1s"]);
    converged_with(&w, &["/service"], BOUND, holds_exactly(&b.addrs[..2])).await;
    let old_revision = revision(&w).await;

    // Same name, ports and peer URL: the new, empty cluster has the same cluster id.
    w.etcd.kill_and_wipe();
    w.etcd.restart().await;
    let back = Instant::now();
    w.client = w.etcd.client().await;
    // Fewer writes than before: the new store stays below the revision the watcher saw, so
    // its watches, re-created from there, would wait for ever.
    w.put(&b.key(2), "running").await;
    let new_revision = revision(&w).await;
    assert!(
        new_revision < old_revision,
        "the test needs the new store behind: {new_revision} vs {old_revision}"
    );
    let waited = back.elapsed();
    let took = converged_with(&w, &["/service"], BOUND, holds_exactly(&b.addrs[2..])).await;
    eprintln!(
        "etcd wiped: converged {:?} after etcd was back (revision {old_revision} -> {new_revision})",
        waited + took
    );
    let log = watcher.log_text();
    assert_eq!(
        log.matches(STORE_CHANGED).count(),
        1,
        "one warning for one wipe; watcher log:\n{log}"
    );
    let warn = warning(&log);
    eprintln!("{warn}");
    let field = |name: &str| {
        warn.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .map(str::to_string)
    };
    assert_eq!(
        field("old_cluster_id="),
        field("new_cluster_id="),
        "re-created with the same name and peer URL, etcd has the same cluster id: only the \
         revision tells the stores apart ({warn})"
    );
    assert_routes_exactly(w.haproxy.http, &b.addrs[2..]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_restored_from_an_older_snapshot_converges_to_it() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let watcher = w.watcher(&["--etcd-timeout", "1s"]);
    converged_with(&w, &["/service"], BOUND, holds_exactly(&b.addrs[..1])).await;
    let snapshot = w.path().join("etcd.snapshot");
    w.etcd.snapshot_save(&snapshot);
    let snapshot_revision = revision(&w).await;

    w.put(&b.key(1), "running").await;
    w.del(&b.key(0)).await;
    converged_with(&w, &["/service"], BOUND, holds_exactly(&b.addrs[1..])).await;
    let old_revision = revision(&w).await;

    w.etcd.restore_from(&snapshot).await;
    let back = Instant::now();
    w.client = w.etcd.client().await;
    assert_eq!(
        revision(&w).await,
        snapshot_revision,
        "restored at the snapshot's revision"
    );
    let waited = back.elapsed();
    let took = converged_with(&w, &["/service"], BOUND, holds_exactly(&b.addrs[..1])).await;
    eprintln!(
        "etcd restored: converged {:?} after etcd was back (revision {old_revision} -> {snapshot_revision})",
        waited + took
    );
    let log = watcher.log_text();
    assert_eq!(
        log.matches(STORE_CHANGED).count(),
        1,
        "one warning for one restore; watcher log:\n{log}"
    );
    eprintln!("{}", warning(&log));
    assert!(
        log.contains(&format!("old_revision={old_revision}"))
            && log.contains(&format!("new_revision={snapshot_revision}")),
        "the warning names both revisions; watcher log:\n{log}"
    );
    assert_routes_exactly(w.haproxy.http, &b.addrs[..1]).await;
}

/// How many applies the watcher logged as taking `path` (`runtime` or `reload`).
fn applies(watcher: &Watcher, path: &str) -> Vec<String> {
    watcher
        .log_text()
        .lines()
        .filter(|l| l.contains("configuration updated") && l.contains(&format!("path={path} ")))
        .map(str::to_string)
        .collect()
}

/// Waits until the watcher has logged `n` applies through `path`; returns the last one.
async fn wait_applies(watcher: &Watcher, path: &str, n: usize) -> String {
    let deadline = Instant::now() + BOUND;
    loop {
        let lines = applies(watcher, path);
        if lines.len() >= n {
            return lines[n - 1].clone();
        }
        if Instant::now() > deadline {
            panic!(
                "timed out waiting for {n} apply(ies) with path={path}; watcher log:\n{}",
                watcher.log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapped_and_ipv4_compatible_ipv6_keys_through_the_runtime_path() {
    let mut w = World::new().await;
    let b = Backends::start(2).await;
    w.put(&b.key(0), "running").await;
    let admin = w.haproxy.admin_socket.display().to_string();
    let state = w.path().join("server-state").display().to_string();
    let watcher = w.watcher(&["--runtime-socket", &admin, "--server-state-file", &state]);
    converged_with(&w, &["/service"], BOUND, holds_exactly(&b.addrs[..1])).await;
    let reloads = applies(&watcher, "reload").len();

    // The IPv4-mapped spelling of a registered backend: the same endpoint, so not a second
    // server; skipped with a warning that names the key and the key to use.
    let port = b.addrs[0].port();
    let mapped = format!("/service/[::ffff:127.0.0.1]:{port}");
    w.put(&mapped, "running").await;
    watcher
        .wait_log(&format!(
            "etcd key \"{mapped}\": not in canonical form, expected \"127.0.0.1:{port}\"; skipped"
        ))
        .await;

    // An IPv4-compatible (`::/96`) endpoint, which HAProxy prints `::10.0.0.1`: added at
    // runtime and verified. It is also the sentinel for the mapped key: this apply must add
    // exactly this one server, nothing for the mapped key.
    let compat: SocketAddr = "[::a00:1]:8080".parse().unwrap();
    w.put(&format!("/service/{compat}"), "running").await;
    let line = wait_applies(&watcher, "runtime", 1).await;
    assert!(
        line.contains("add service/--a00-1_8080 [::a00:1]:8080") && line.contains("1 operation(s)"),
        "{line}"
    );
    let want = [b.addrs[0], compat];
    converged_with(&w, &["/service"], BOUND, holds_exactly(&want)).await;
    let haproxy_text = w.haproxy.admin("show servers state service").await;
    assert!(
        haproxy_text.contains(" --a00-1_8080 ::10.0.0.1 "),
        "HAProxy spells it with an embedded IPv4 part:\n{haproxy_text}"
    );

    // Later changes of that backend stay on the runtime path: IPv6 loopback added, the
    // `::/96` endpoint re-weighted, another IPv4 backend added, the `::/96` one removed.
    let loopback: SocketAddr = format!("[::1]:{}", b.addrs[1].port()).parse().unwrap();
    w.put(&format!("/service/{loopback}"), "running").await;
    wait_applies(&watcher, "runtime", 2).await;
    w.put(&format!("/service/{compat}"), r#"{"weight":7}"#)
        .await;
    wait_applies(&watcher, "runtime", 3).await;
    w.put(&b.key(1), "running").await;
    wait_applies(&watcher, "runtime", 4).await;
    w.del(&format!("/service/{compat}")).await;
    wait_applies(&watcher, "runtime", 5).await;
    let want = [b.addrs[0], b.addrs[1], loopback];
    let took = converged_with(&w, &["/service"], BOUND, holds_exactly(&want)).await;
    eprintln!("mapped and ::/96 keys: last change converged in {took:?}");

    let log = watcher.log_text();
    assert!(
        !log.contains("falling back"),
        "no fallback; watcher log:\n{log}"
    );
    assert_eq!(
        applies(&watcher, "reload").len(),
        reloads,
        "no reload after the first; watcher log:\n{log}"
    );
    assert_eq!(
        log.matches(&format!("etcd key \"{mapped}\"")).count(),
        1,
        "the mapped key is warned about once"
    );
}

//! The sidekick under etcd faults, in real containers against a real etcd: a lease revoked
//! behind its back, a network partition longer than the TTL (a freezable TCP proxy between
//! the sidekick and etcd), etcd wiped and recreated, and `docker stop` while etcd is frozen.
//! Each test asserts the end state (the key present under a live lease, a value the watcher
//! accepts) within a bound, and prints the time it measured.

use crate::harness::*;
use crate::sidekick::*;
use dockreg_testkit::docker::*;
use dockreg_testkit::tcpproxy::TcpProxy;
use etcd_client::Client;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Waits until `key` is present under a live lease other than `old` with a value the watcher
/// accepts; returns the lease and how long that took.
async fn wait_new_lease(
    client: &mut Client,
    key: &str,
    old: i64,
    within: Duration,
    c: &Container,
) -> (i64, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some((v, lease)) = value(client, key)
            .await
            .filter(|(_, l)| *l != old && *l != 0)
        {
            let ttl = client
                .lease_time_to_live(lease, None)
                .await
                .map_or(-1, |r| r.ttl());
            if ttl > 0 {
                assert!(
                    dockreg::core::endpoint::parse_value(v.as_bytes()).is_ok(),
                    "the watcher rejects the value {v:?}"
                );
                return (lease, t0.elapsed());
            }
        }
        if t0.elapsed() > within {
            panic!(
                "key {key} should be back under a new live lease (not {old:x}) within {within:?}; \
                 now {:?}; container log:\n{}",
                value(client, key).await,
                c.logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A proxy to the test etcd that containers reach.
async fn proxy_to(s: &Setup) -> TcpProxy {
    let upstream: SocketAddr = format!("127.0.0.1:{}", s.etcd.client_port).parse().unwrap();
    TcpProxy::start(&bridge_gateway(), upstream).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_lease_is_replaced_and_the_key_comes_back() {
    let Some(mut s) = setup().await else { return };
    let (c, key, _) = start_app(&s);
    wait_key(&mut s.client, &key, true, Duration::from_secs(2), &c).await;
    // Twice: the sidekick is not stuck after the first recovery.
    for round in 1..=2 {
        let (_, old) = value(&mut s.client, &key).await.unwrap();
        s.client.lease_revoke(old).await.unwrap();
        let (new, took) =
            wait_new_lease(&mut s.client, &key, old, Duration::from_secs(5), &c).await;
        eprintln!("round {round}: lease {old:x} revoked → key back under {new:x} in {took:?}");
    }
    assert!(c.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_longer_than_the_ttl_ends_with_the_key_back_under_a_new_lease() {
    let Some(mut s) = setup().await else { return };
    let proxy = proxy_to(&s).await;
    let (c, key, _) = start_app_via(&proxy.url(), &[]);
    wait_key(&mut s.client, &key, true, Duration::from_secs(3), &c).await;
    let (_, old) = value(&mut s.client, &key).await.unwrap();

    proxy.freeze();
    let frozen = Instant::now();
    // The TTL is 3 s: etcd (read directly) lets the key expire while the sidekick is cut off.
    let expired = wait_key(&mut s.client, &key, false, Duration::from_secs(8), &c).await;
    eprintln!("partition: key expired {expired:?} after the freeze");
    let rest = Duration::from_secs(6).saturating_sub(frozen.elapsed());
    tokio::time::sleep(rest).await;
    proxy.heal();
    let (new, took) = wait_new_lease(&mut s.client, &key, old, Duration::from_secs(5), &c).await;
    eprintln!(
        "partition of {:?}: heal → key back under lease {new:x} (was {old:x}) in {took:?}",
        frozen.elapsed() - took
    );
    assert!(c.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_wiped_and_recreated_ends_with_the_key_back() {
    let Some(mut s) = setup().await else { return };
    let (c, key, _) = start_app(&s);
    wait_key(&mut s.client, &key, true, Duration::from_secs(2), &c).await;
    let (_, old) = value(&mut s.client, &key).await.unwrap();
    // A new, empty cluster on the same address: no lease of the old one exists there.
    s.etcd.kill_and_wipe();
    s.etcd.restart().await;
    let mut client = s.etcd.client().await;
    let (new, took) = wait_new_lease(&mut client, &key, old, Duration::from_secs(10), &c).await;
    eprintln!("etcd wiped: key back under lease {new:x} {took:?} after etcd was ready");
    assert!(c.running());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_with_etcd_frozen_takes_the_drain_not_dockers_grace() {
    let Some(mut s) = setup().await else { return };
    let proxy = proxy_to(&s).await;
    // The default --drain, 2 s.
    let (c, key, _) = start_app_via(&proxy.url(), &[]);
    wait_key(&mut s.client, &key, true, Duration::from_secs(3), &c).await;
    proxy.freeze();
    let t0 = Instant::now();
    let id = c.id.clone();
    tokio::task::spawn_blocking(move || docker(&["stop", &id]))
        .await
        .unwrap();
    let took = t0.elapsed();
    eprintln!("docker stop with etcd frozen took {took:?}");
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &c.id]);
    assert_eq!(
        code,
        "143",
        "the app got its SIGTERM (not Docker's SIGKILL, 137): {}",
        c.logs()
    );
    assert!(
        Duration::from_millis(1900) <= took && took < Duration::from_secs(5),
        "docker stop took {took:?}: about --drain (2 s) expected, well under Docker's 10 s; {}",
        c.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_stop_removes_the_key_while_the_app_still_answers() {
    let Some(mut s) = setup().await else { return };
    let (c, key, port) = start_app(&s);
    wait_key(&mut s.client, &key, true, Duration::from_secs(2), &c).await;
    let app: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let answers = |r: Option<Response>| r.is_some_and(|r| r.status == 200);
    assert!(answers(get(app).await));
    let stop = std::thread::spawn({
        let id = c.id.clone();
        move || docker(&["stop", &id])
    });
    // Poll both during the stop: the key must go while the app still answers.
    let t0 = Instant::now();
    let mut gone_at = None;
    let mut answered_after_gone = 0;
    let down_at = loop {
        let present = value(&mut s.client, &key).await.is_some();
        let up = answers(get(app).await);
        match (present, up) {
            (true, false) => panic!(
                "the app stopped answering while its key was still registered; log:\n{}",
                c.logs()
            ),
            (false, true) => {
                gone_at.get_or_insert(t0.elapsed());
                answered_after_gone += 1;
            }
            (false, false) => break t0.elapsed(),
            (true, true) => {}
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{}", c.logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    stop.join().unwrap();
    let gone_at = gone_at.expect("the key went before the app stopped answering");
    eprintln!(
        "docker stop: key gone at {gone_at:?}, app down at {down_at:?}; \
         {answered_after_gone} answers in between"
    );
    assert!(answered_after_gone > 0);
    let code = docker(&["inspect", "--format", "{{.State.ExitCode}}", &c.id]);
    assert_eq!(code, "143", "exits with the app's status: {}", c.logs());
}

//! Fault injection on the watcher's side: HAProxy refusing a reload at load time, HAProxy
//! stopped while etcd changes, a full output folder. Each test ends with the end-state check
//! (etcd = rendered file = HAProxy's servers) and prints how long healing took.

use crate::endstate::{converged, converged_with, etcd_addrs, views, View};
use crate::harness::*;
use crate::hitless::{applies, editable_template, hitless_watcher};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Whether `v`'s etcd view of backend `name` is exactly `addrs`.
fn holds(v: &crate::endstate::Views, name: &str, addrs: &[SocketAddr]) -> bool {
    etcd_addrs(v, name) == addrs.iter().copied().collect::<BTreeSet<_>>()
}

/// Connection attempts to `addr` every 100 ms until told to stop; returns (tried, refused).
fn probe(
    addr: SocketAddr,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<(u32, u32)>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (mut tried, mut refused) = (0, 0);
        loop {
            tried += 1;
            if get(addr).await.is_none() {
                refused += 1;
            }
            tokio::select! {
                _ = &mut stopped => return (tried, refused),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_haproxy_refuses_is_not_repeated_and_other_backends_keep_routing() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    let (template, shipped) = editable_template(&w);
    let (t, out) = (
        template.display().to_string(),
        w.haproxy.output.display().to_string(),
    );
    let api = |i: usize| format!("/api/{}", b.addrs[i]);
    w.put(&b.key(0), "running").await;
    w.put(&api(1), "running").await;
    let watcher = hitless_watcher(
        &w,
        &[
            "--prefix",
            "/service",
            "--prefix",
            "/api",
            "--template",
            &t,
            "--output",
            &out,
        ],
    );
    converged(&w, &["/service", "/api"], Duration::from_secs(15)).await;
    let before = w.haproxy.show_proc().await;

    // The operator adds a listener on a port another process holds: `haproxy -c` accepts it,
    // HAProxy refuses it at load time.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a busy port");
    let busy_addr = busy.local_addr().unwrap();
    std::fs::write(
        &template,
        format!("{shipped}\nlisten busy\n    mode tcp\n    bind {busy_addr}\n    server s 127.0.0.1:9\n"),
    )
    .unwrap();
    watcher.wait_log("HAProxy refused the reload").await;
    let failed_at = Instant::now();
    let log = watcher.log_text();
    assert!(
        log.contains(&format!("bind {busy_addr}: Address already in use")),
        "the error names the busy bind:\n{log}"
    );
    assert_eq!(w.haproxy.show_proc().await.failed, before.failed + 1);
    let (stop_probe, probes) = probe(w.haproxy.http);

    // Sentinel: a new server of another backend is routed through the runtime API while the
    // refused reload waits, and nothing retries the refused reload meanwhile.
    let runtime_before = applies(&watcher, "runtime");
    w.put(&api(2), "running").await;
    let took = converged_with(&w, &["/service", "/api"], Duration::from_secs(10), |v| {
        holds(v, "api", &[b.addrs[1], b.addrs[2]])
    })
    .await;
    eprintln!("new server of another backend routed {took:?} after its put, with a refused reload pending");
    assert!(
        applies(&watcher, "runtime") > runtime_before
            || watcher.log_text().contains("meanwhile applied at runtime"),
        "the new server went through the runtime API:\n{}",
        watcher.log_text()
    );
    let during = w.haproxy.show_proc().await;
    assert_eq!(
        (during.reloads, during.failed),
        (before.reloads + 1, before.failed + 1),
        "exactly the one refused reload, {:?} after it",
        failed_at.elapsed()
    );
    let _ = stop_probe.send(());
    let (tried, refused) = probes.await.unwrap();
    assert_eq!(
        refused, 0,
        "no listener paused after the refused reload ({tried} probes)"
    );

    // The operator takes the listener out again: one reload, which works.
    drop(busy);
    let healed = Instant::now();
    std::fs::write(&template, &shipped).unwrap();
    eventually(Duration::from_secs(10), "a reload that works", || async {
        w.haproxy.show_proc().await.reloads > during.reloads
    })
    .await;
    let took = converged(&w, &["/service", "/api"], Duration::from_secs(10)).await;
    eprintln!(
        "template fixed -> reloaded and converged in {:?}",
        healed.elapsed().max(took)
    );
    let end = w.haproxy.show_proc().await;
    // HAProxy's failed-reload counter restarts at a reload that works.
    assert_eq!(
        (end.reloads, end.failed),
        (during.reloads + 1, 0),
        "one more reload, which worked"
    );
    assert!(!std::fs::read_to_string(&w.haproxy.output)
        .unwrap()
        .contains("listen busy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_haproxy_stopped_the_file_follows_etcd_and_one_reload_catches_up() {
    let mut w = World::new().await;
    let b = Backends::start(3).await;
    w.put(&b.key(0), "running").await;
    let watcher = hitless_watcher(&w, &[]);
    converged(&w, &["/service"], Duration::from_secs(15)).await;

    w.haproxy.stop();
    let backends: BTreeSet<String> = ["service".to_string()].into();
    let output = w.haproxy.output.clone();
    let file_has = |want: Vec<SocketAddr>| {
        let output = output.clone();
        let backends = backends.clone();
        async move {
            let want: BTreeSet<SocketAddr> = want.into_iter().collect();
            let view: View = crate::endstate::file_view(&output, &backends).unwrap_or_default();
            view.get("service")
                .map(|s| s.iter().map(|s| s.addr).collect::<BTreeSet<_>>())
                == Some(want)
        }
    };
    let mut worst = Duration::ZERO;
    for (change, want) in [
        ("put 1", vec![b.addrs[0], b.addrs[1]]),
        ("delete 0", vec![b.addrs[1]]),
        ("put 2", vec![b.addrs[1], b.addrs[2]]),
    ] {
        let started = Instant::now();
        match change {
            "put 1" => w.put(&b.key(1), "running").await,
            "delete 0" => w.del(&b.key(0)).await,
            _ => w.put(&b.key(2), "running").await,
        }
        eventually(
            Duration::from_secs(5),
            &format!("the file after {change}"),
            || file_has(want.clone()),
        )
        .await;
        worst = worst.max(started.elapsed());
    }
    eprintln!("with HAProxy stopped, etcd change -> file: worst {worst:?}");
    assert!(
        worst < Duration::from_secs(5),
        "the file kept following etcd (worst {worst:?})"
    );

    let back = Instant::now();
    w.haproxy.start_again().await;
    let took = converged_with(&w, &["/service"], Duration::from_secs(15), |v| {
        holds(v, "service", &[b.addrs[1], b.addrs[2]])
    })
    .await;
    eprintln!(
        "HAProxy started again -> converged in {:?}",
        back.elapsed().max(took)
    );
    watcher.wait_log("HAProxy is back").await;
}

/// A tiny tmpfs, unmounted (lazily) when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts a 64 KiB tmpfs at `dir`; `None` where mounting is not allowed (not root).
    fn mount(dir: &std::path::Path) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).ok()?;
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(dir.to_path_buf()))
    }

    /// Fills it up to the last byte.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let block = [0u8; 4096];
        while f.write_all(&block).is_ok() {}
        while f.write_all(&block[..1]).is_ok() {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_output_folder_leaves_haproxy_as_it_is_and_heals() {
    let mut mounted = None;
    let mut w = World::with_output(|dir| {
        let out = dir.join("out");
        mounted = Tmpfs::mount(&out);
        std::fs::create_dir_all(&out).unwrap();
        out.join("backends.cfg")
    })
    .await;
    let Some(tmpfs) = mounted else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must be able to mount a tmpfs (run as root)"
        );
        eprintln!("skipped: cannot mount a tmpfs here (not root)");
        return;
    };
    let b = Backends::start(3).await;
    w.put(&b.key(0), "running").await;
    let watcher = hitless_watcher(&w, &[]);
    converged(&w, &["/service"], Duration::from_secs(15)).await;
    let before = w.haproxy.show_proc().await;
    let old = views(&w, &["/service"]).await.unwrap().haproxy;

    let filler = tmpfs.fill();
    w.put(&b.key(1), "running").await;
    w.del(&b.key(0)).await;
    w.put(&b.key(2), "running").await;
    // For as long as the disk is full, HAProxy keeps exactly what it had: no runtime
    // command ahead of the file, no reload to revert one.
    watcher
        .wait_log("could not write the new configuration")
        .await;
    let window = Instant::now() + Duration::from_secs(3);
    while Instant::now() < window {
        let now = views(&w, &["/service"]).await.unwrap().haproxy;
        assert_eq!(
            now, old,
            "HAProxy changed while the file could not be written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = watcher.log_text();
    assert_eq!(
        log.matches("could not write the new configuration").count(),
        1,
        "the failure is logged once:\n{log}"
    );

    std::fs::remove_file(filler).unwrap();
    let freed = Instant::now();
    let took = converged_with(&w, &["/service"], Duration::from_secs(40), |v| {
        holds(v, "service", &[b.addrs[1], b.addrs[2]])
    })
    .await;
    eprintln!(
        "space freed -> converged in {:?}",
        freed.elapsed().max(took)
    );
    let after = w.haproxy.show_proc().await;
    assert_eq!(
        (after.reloads, after.failed),
        (before.reloads, before.failed),
        "healed through the runtime API, with no reload"
    );
    drop(watcher);
    drop(tmpfs);
    drop(w);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporaries_left_by_a_killed_watcher_are_removed_at_start() {
    let mut w = World::new().await;
    let b = Backends::start(1).await;
    w.put(&b.key(0), "running").await;
    let dir = w.haproxy.output.parent().unwrap().to_path_buf();
    let stale = dir.join(".backends.cfg.Ab12Cd.tmp");
    let foreign = [
        dir.join(".backends.cfg.keep.tmp"),
        dir.join("backends.cfg.Ab12Cd.tmp"),
    ];
    std::fs::write(&stale, "half a config").unwrap();
    for f in &foreign {
        std::fs::write(f, "not ours").unwrap();
    }
    let watcher = w.watcher(&[]);
    converged(&w, &["/service"], Duration::from_secs(15)).await;
    assert!(!stale.exists(), "{}", watcher.log_text());
    for f in &foreign {
        assert!(f.exists(), "{} is not one of ours", f.display());
    }
}

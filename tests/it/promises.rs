//! README promises that had no test: paged listing past one page, `--once`/`--dry-run` exit
//! codes on render and reload failures, a template replaced by rename, a long burst of etcd
//! changes applied as it arrives, and the deprecated `--debounce` still accepted.

use crate::harness::*;
use etcd_client::{Txn, TxnOp};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Runs the watcher once with `args` (after `--etcd <url>`) and returns its output.
fn run(w: &World, args: &[&str]) -> Output {
    Command::new(WATCHER)
        .arg("--etcd")
        .arg(w.etcd.url())
        .args(args)
        .envs(w.haproxy.env.iter().cloned())
        .output()
        .expect("run the watcher")
}

fn server_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| l.trim_start().starts_with("server "))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_past_one_page_keeps_every_key() {
    let mut w = World::new().await;
    // 2,500 endpoints: more than one page of 2,000 keys.
    for chunk in 0..25u32 {
        let puts: Vec<TxnOp> = (0..100u32)
            .map(|i| {
                let n = chunk * 100 + i;
                let key = format!("/service/10.1.{}.{}:80", n / 250, n % 250 + 1);
                TxnOp::put(key, "running", None)
            })
            .collect();
        w.client.txn(Txn::new().and_then(puts)).await.expect("txn");
    }
    let out = w.path().join("paged.cfg");
    let o = out.display().to_string();
    let result = run(&w, &["--once", "--no-validate", "--output", &o]);
    assert!(result.status.success(), "{result:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(server_lines(&text), 2500);
    assert!(
        text.contains("server 10.1.9.250_80 10.1.9.250:80"),
        "the last key of the last page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_and_dry_run_exit_non_zero_on_render_and_reload_failures() {
    let mut w = World::new().await;
    w.put("/service/10.0.0.1:80", "running").await;
    let broken = w.path().join("broken.cfg.tera");
    std::fs::write(&broken, "backend x\n    server a {{ no_such_variable }}\n").unwrap();
    let (t, out) = (
        broken.display().to_string(),
        w.path().join("out.cfg").display().to_string(),
    );
    let base = w.haproxy.base.display().to_string();
    for mode in ["--once", "--dry-run"] {
        let r = run(
            &w,
            &[
                mode,
                "--template",
                &t,
                "--output",
                &out,
                "--haproxy-config",
                &base,
            ],
        );
        let stderr = String::from_utf8_lossy(&r.stderr);
        assert!(
            !r.status.success(),
            "{mode} with a render error exits non-zero"
        );
        assert!(
            stderr.contains("broken.cfg.tera"),
            "{mode} names the template: {stderr}"
        );
    }
    assert!(!std::path::Path::new(&out).exists(), "nothing written");

    // A reload that cannot happen (no HAProxy behind the socket) fails --once, fast.
    let started = Instant::now();
    let gone = w.path().join("no-master.sock").display().to_string();
    let r = run(
        &w,
        &[
            "--once",
            "--output",
            &out,
            "--haproxy-config",
            &base,
            "--master-socket",
            &gone,
        ],
    );
    assert!(
        !r.status.success(),
        "--once with a failed reload exits non-zero"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "failed in {:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&r.stderr).contains("no-master.sock"),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_replaced_by_rename_is_rendered_again() {
    let mut w = World::new().await;
    let b = Backends::start(1).await;
    w.put(&b.key(0), "running").await;
    let template = w.path().join("t.cfg.tera");
    let shipped =
        std::fs::read_to_string(format!("{REPO}/templates/haproxy-backends.cfg.tera")).unwrap();
    std::fs::write(&template, &shipped).unwrap();
    let (t, out) = (
        template.display().to_string(),
        w.haproxy.output.display().to_string(),
    );
    let _watcher = w.watcher(&["--template", &t, "--output", &out]);
    assert_routes_exactly(w.haproxy.http, &b.addrs).await;
    // The way editors save: write a new file, rename it over the old one.
    for round in 1..=2 {
        let tmp = w.path().join(format!(".t.cfg.tera.swp{round}"));
        std::fs::write(&tmp, format!("# edition {round}\n{shipped}")).unwrap();
        std::fs::rename(&tmp, &template).unwrap();
        let marker = format!("# edition {round}");
        eventually(Duration::from_secs(10), &marker, || async {
            std::fs::read_to_string(&w.haproxy.output).is_ok_and(|t| t.contains(&marker))
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_burst_is_applied_as_it_arrives() {
    let mut w = World::new().await;
    let out = w.path().join("burst.cfg");
    let log = std::fs::File::create(w.path().join("burst.log")).unwrap();
    let _watcher = ChildGuard(
        Command::new(WATCHER)
            .args([
                "--etcd",
                &w.etcd.url(),
                "--no-validate",
                "--reload-cmd",
                "true",
            ])
            // The old flags: accepted, with a deprecation warning.
            .args(["--debounce", "200ms", "--debounce-max", "700ms"])
            .args(["--min-reload-interval", "100ms"])
            .arg("--output")
            .arg(&out)
            .env("RUST_LOG", "info")
            .stderr(log)
            .spawn()
            .expect("start the watcher"),
    );
    w.put("/service/10.0.0.1:80", "running").await;
    eventually(Duration::from_secs(10), "first render", || async {
        out.exists()
    })
    .await;
    // A change every 40 ms for 3 s never leaves a quiet stretch: it used to wait for one (up
    // to --debounce-max); now each change applies as it arrives.
    let started = Instant::now();
    let mut first_update = None;
    let mut n = 0u32;
    while started.elapsed() < Duration::from_secs(3) {
        n += 1;
        w.put(&format!("/service/10.0.1.{}:80", n % 250 + 1), "running")
            .await;
        if first_update.is_none()
            && std::fs::read_to_string(&out).is_ok_and(|t| server_lines(&t) > 1)
        {
            first_update = Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
    }
    let first = first_update.expect("no update during a 3 s burst");
    eprintln!("first update {first:?} into the burst");
    // Generous for a loaded 2-core machine; the old debounce took ≥ 700 ms here.
    assert!(
        first < Duration::from_millis(500),
        "first update after {first:?}"
    );
    let log = std::fs::read_to_string(w.path().join("burst.log")).unwrap();
    assert!(
        log.contains("--debounce is deprecated") && log.contains("--debounce-max is deprecated"),
        "{log}"
    );
}

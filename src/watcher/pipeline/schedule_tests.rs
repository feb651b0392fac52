//! Unit tests of when the pipeline applies, through its real loop ([`Pipeline::run`]) on
//! paused time: an isolated change at once, changes during an apply right after it, runtime
//! commands never behind `haproxy -c`, template edits settled, reloads spaced, and a `--root`
//! service removed once its grace has run out, not before.

use super::runtime_tests::{started, FakeRuntime};
use super::tests::{put, renderer_and_catalog, setup, snapshot, FakeReloader, FakeValidator};
use super::*;
use crate::watcher::metrics::WatcherMetrics;
use crate::watcher::source::{KvChange, Scope};
use tokio::sync::{mpsc, oneshot};

/// A pipeline running in its own task; dropped, it stops.
struct Running {
    tx: mpsc::Sender<Input>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Stats>,
}

impl Running {
    fn start(p: Pipeline<FakeValidator, FakeReloader>) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(p.run(rx, async move {
            let _ = stopped.await;
        }));
        Self {
            tx,
            stop: Some(stop),
            task,
        }
    }

    async fn send(&self, input: Input) {
        self.tx.send(input).await.unwrap();
    }

    async fn stop(mut self) -> Stats {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap()
    }
}

/// Lets the pipeline task run until it waits for something (paused time stands still).
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A started pipeline (first apply and reload done) with a runtime API, whose checks take
/// `check`, running in its own task.
async fn running_with_runtime(check: Duration) -> (Running, FakeRuntime, FakeValidator, PathBuf) {
    let (mut s, rt) = started().await;
    s.v.delay = check;
    s.p.validator = Some(Arc::new(s.v.clone()));
    let out = s.out.clone();
    let v = s.v.clone();
    let placeholder = setup().p;
    let p = std::mem::replace(&mut s.p, placeholder);
    std::mem::forget(s._dir); // the folder outlives the task; the OS cleans the temp dir
    (Running::start(p), rt, v, out)
}

#[tokio::test(start_paused = true)]
async fn an_isolated_change_goes_out_at_once() {
    let (run, rt, _v, _out) = running_with_runtime(ms(30)).await;
    let t0 = Instant::now();
    run.send(put("/service/10.0.0.2:80", "running")).await;
    settle().await;
    assert_eq!(
        *rt.applied.lock().unwrap(),
        ["add service/10.0.0.2_80 10.0.0.2:80"]
    );
    assert_eq!(Instant::now(), t0, "no time passed: nothing held it back");
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn changes_during_a_check_go_out_at_once_and_are_written_together_after_it() {
    let check = ms(200);
    let (run, rt, v, out) = running_with_runtime(check).await;
    let calls = *v.calls.lock().unwrap();
    let t0 = Instant::now();
    run.send(put("/service/10.0.0.2:80", "running")).await;
    settle().await;
    // The first change's check runs for 200 ms; two more changes arrive meanwhile...
    tokio::time::sleep(ms(50)).await;
    run.send(put("/service/10.0.0.3:80", "running")).await;
    settle().await;
    tokio::time::sleep(ms(10)).await;
    run.send(put("/service/10.0.0.4:80", "running")).await;
    settle().await;
    // ...and each reaches HAProxy at once, not after the check.
    assert_eq!(rt.applied.lock().unwrap().len(), 3);
    assert!(
        Instant::now() < t0 + check,
        "all sent during the first check"
    );
    assert!(!std::fs::read_to_string(&out)
        .unwrap()
        .contains("10.0.0.2_80"));
    // The first check ends and its file is written; the other two are checked and written
    // together in one more check.
    tokio::time::sleep_until(t0 + check + ms(1)).await;
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("10.0.0.2_80"));
    tokio::time::sleep_until(t0 + check * 2 + ms(2)).await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("10.0.0.3_80") && text.contains("10.0.0.4_80"),
        "{text}"
    );
    assert_eq!(
        *v.calls.lock().unwrap(),
        calls + 2,
        "two checks for three changes"
    );
    let stats = run.stop().await;
    assert_eq!(
        (stats.writes, stats.reloads),
        (3, 1),
        "the first write and reload at start"
    );
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_writes_what_the_runtime_api_already_applied() {
    let (run, rt, _v, out) = running_with_runtime(ms(200)).await;
    run.send(put("/service/10.0.0.2:80", "running")).await;
    settle().await;
    run.send(put("/service/10.0.0.3:80", "running")).await;
    settle().await;
    assert_eq!(rt.applied.lock().unwrap().len(), 2);
    run.stop().await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("10.0.0.2_80") && text.contains("10.0.0.3_80"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn reloads_never_come_closer_than_the_minimum_interval() {
    // No runtime API: every change reloads. Changes every 20 ms for 2 s.
    let mut s = setup();
    let interval = Timing::default().min_reload_interval;
    let r = s.r.clone();
    let out = s.out.clone();
    let p = std::mem::replace(&mut s.p, setup().p);
    let run = Running::start(p);
    run.send(snapshot(&["/service/10.0.0.1:80"])).await;
    let t0 = Instant::now();
    let mut n = 0u64;
    while Instant::now() < t0 + Duration::from_secs(2) {
        n += 1;
        let key = format!("/service/10.0.1.{}:80", n % 250 + 1);
        run.send(put(&key, "running")).await;
        settle().await;
        // Written at once, whatever the reloads do.
        let line = format!("server 10.0.1.{}_80 ", n % 250 + 1);
        assert!(
            std::fs::read_to_string(&out).unwrap().contains(&line),
            "change {n}"
        );
        tokio::time::sleep(ms(20)).await;
    }
    tokio::time::sleep(interval * 2).await;
    let times = r.times.lock().unwrap().clone();
    for pair in times.windows(2) {
        assert!(
            pair[1] - pair[0] >= interval,
            "reloads {:?} apart",
            pair[1] - pair[0]
        );
    }
    assert!(
        (4..=6).contains(&times.len()),
        "{} reloads for 100 changes in 2 s",
        times.len()
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_template_being_written_settles_while_etcd_changes_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("t.tera");
    let body = "{{ services.service.endpoints | length }} endpoints\n";
    std::fs::write(&tpl, format!("v1 {body}")).unwrap();
    let out = dir.path().join("o.cfg");
    let (renderer, catalog) = renderer_and_catalog(Some(tpl.clone()), &out);
    let p = Pipeline::new(catalog, renderer, None, None, Timing::default()).unwrap();
    let run = Running::start(p);
    run.send(snapshot(&[])).await;
    settle().await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v1 0 endpoints\n");
    // An editor truncates the file, then writes it in two steps, 30 ms apart...
    let t0 = Instant::now();
    for (i, text) in ["".to_string(), "v2 ".into(), format!("v2 {body}")]
        .iter()
        .enumerate()
    {
        std::fs::write(&tpl, text).unwrap();
        run.send(Input::Template(tpl.clone())).await;
        // ...while etcd changes keep going out at once with the last good template.
        let key = format!("/service/10.0.0.{}:80", i + 1);
        run.send(put(&key, "running")).await;
        settle().await;
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            format!("v1 {} endpoints\n", i + 1)
        );
        tokio::time::sleep(ms(30)).await;
    }
    // The template is read once it has been quiet for --template-settle.
    let settled = t0 + ms(60) + Timing::default().template_settle;
    tokio::time::sleep_until(settled - ms(1)).await;
    settle().await;
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("v1 "));
    tokio::time::sleep_until(settled).await;
    settle().await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v2 3 endpoints\n");
    run.stop().await;
}

/// The grace of `--root` services in these tests.
const GRACE: Duration = Duration::from_secs(2);

fn root_changes(changes: Vec<KvChange>) -> Input {
    Input::Etcd(WatchEvent::Changes {
        scope: Scope::Root(0),
        revision: 3,
        changes,
    })
}

fn root_key(key: &str) -> KvChange {
    KvChange::Put {
        key: key.as_bytes().to_vec(),
        value: b"running".to_vec(),
    }
}

fn root_delete(key: &str) -> KvChange {
    KvChange::Delete {
        key: key.as_bytes().to_vec(),
    }
}

/// A started pipeline (first apply and reload done) over `--prefix /service --root /services`
/// with a fake runtime API and a [`GRACE`] of 2 s, whose root holds `app` at 10.0.0.1:80;
/// running in its own task.
async fn running_with_a_root() -> (Running, FakeRuntime, FakeReloader, PathBuf) {
    let (run, rt, r, out, _) = running_with_a_root_and_metrics().await;
    (run, rt, r, out)
}

/// [`running_with_a_root`], reporting to metrics.
async fn running_with_a_root_and_metrics() -> (
    Running,
    FakeRuntime,
    FakeReloader,
    PathBuf,
    Arc<WatcherMetrics>,
) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backends.cfg");
    let (renderer, _) = renderer_and_catalog(None, &out);
    let catalog = Catalog::with_roots(&["/service"], &["/services"])
        .unwrap()
        .with_grace(GRACE);
    let (v, r) = (FakeValidator::default(), FakeReloader::default());
    let rt = FakeRuntime::default();
    let mut p = Pipeline::new(
        catalog,
        renderer,
        Some(v),
        Some(r.clone()),
        Timing::default(),
    )
    .unwrap()
    .with_runtime(Box::new(rt.clone()));
    let metrics = Arc::new(WatcherMetrics::new(Arc::default()));
    p = p.with_metrics(metrics.clone());
    p.handle(
        Input::Etcd(WatchEvent::Snapshot {
            revision: 1,
            scopes: vec![
                (Scope::Prefix(0), vec![]),
                (
                    Scope::Root(0),
                    vec![(b"/services/app/10.0.0.1:80".to_vec(), b"running".to_vec())],
                ),
            ],
        }),
        Instant::now(),
    );
    p.tick(Instant::now()).await;
    assert_eq!(*r.attempts.lock().unwrap(), 1, "the first apply reloads");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("backend app\n") && text.contains("server 10.0.0.1_80 "),
        "{text}"
    );
    std::mem::forget(dir); // the folder outlives the task; the OS cleans the temp dir
    (Running::start(p), rt, r, out, metrics)
}

fn has_backend(out: &std::path::Path, name: &str) -> bool {
    std::fs::read_to_string(out)
        .unwrap()
        .contains(&format!("backend {name}\n"))
}

#[tokio::test(start_paused = true)]
async fn an_emptied_root_service_is_removed_after_the_grace_not_before() {
    use crate::core::serve::Status;
    let (run, rt, r, out, metrics) = running_with_a_root_and_metrics().await;
    let gauge = r#"dockreg_watcher_endpoints{service="app"}"#;
    assert!(metrics.metrics().contains(&format!("{gauge} 1")));
    // Its last endpoint goes: out of HAProxy at once through the runtime API, no reload; the
    // backend stays, empty.
    tokio::time::sleep(ms(700)).await;
    let t0 = Instant::now();
    run.send(root_changes(vec![root_delete("/services/app/10.0.0.1:80")]))
        .await;
    settle().await;
    assert_eq!(*rt.applied.lock().unwrap(), ["delete app/10.0.0.1_80"]);
    assert!(has_backend(&out, "app"));
    assert!(!std::fs::read_to_string(&out)
        .unwrap()
        .contains("10.0.0.1_80"));
    // Nothing else arrives: the pipeline wakes for the end of the grace by itself.
    tokio::time::sleep_until(t0 + GRACE - ms(1)).await;
    settle().await;
    assert!(has_backend(&out, "app"), "kept for the whole grace");
    assert_eq!(*r.attempts.lock().unwrap(), 1, "no reload during the grace");
    assert!(metrics.metrics().contains(&format!("{gauge} 0")));
    tokio::time::sleep_until(t0 + GRACE).await;
    settle().await;
    assert!(!has_backend(&out, "app"), "removed once the grace ended");
    assert!(has_backend(&out, "service"), "a prefix service stays");
    assert_eq!(*r.attempts.lock().unwrap(), 2, "a removed backend reloads");
    assert_eq!(Instant::now(), t0 + GRACE, "at once");
    let text = metrics.metrics();
    assert!(
        !text.contains("service=\"app\""),
        "the series goes with the service: {text}"
    );
    assert!(
        text.contains(r#"dockreg_watcher_endpoints{service="service"} 0"#),
        "{text}"
    );
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_endpoint_back_within_the_grace_removes_nothing() {
    let (run, rt, r, out) = running_with_a_root().await;
    let t0 = Instant::now();
    run.send(root_changes(vec![root_delete("/services/app/10.0.0.1:80")]))
        .await;
    settle().await;
    // The app restarts on another port within the grace.
    tokio::time::sleep(GRACE - ms(100)).await;
    run.send(root_changes(vec![root_key("/services/app/10.0.0.2:80")]))
        .await;
    settle().await;
    tokio::time::sleep_until(t0 + GRACE * 3).await;
    settle().await;
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.contains("backend app\n") && text.contains("server 10.0.0.2_80 "),
        "{text}"
    );
    assert_eq!(
        *rt.applied.lock().unwrap(),
        ["delete app/10.0.0.1_80", "add app/10.0.0.2_80 10.0.0.2:80"]
    );
    assert_eq!(*r.attempts.lock().unwrap(), 1, "no reload at all");
    // Gone again: a new grace, counted from then.
    let t1 = Instant::now();
    run.send(root_changes(vec![root_delete("/services/app/10.0.0.2:80")]))
        .await;
    settle().await;
    tokio::time::sleep_until(t1 + GRACE - ms(1)).await;
    settle().await;
    assert!(has_backend(&out, "app"));
    tokio::time::sleep_until(t1 + GRACE).await;
    settle().await;
    assert!(!has_backend(&out, "app"));
    run.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_listing_without_a_root_service_starts_its_grace() {
    let (run, _rt, r, out) = running_with_a_root().await;
    let t0 = Instant::now();
    // A full re-list (etcd restored, a watch behind compaction) no longer holds `app`.
    run.send(Input::Etcd(WatchEvent::Snapshot {
        revision: 5,
        scopes: vec![
            (Scope::Prefix(0), vec![]),
            (
                Scope::Root(0),
                vec![(b"/services/other/10.0.0.9:80".to_vec(), b"running".to_vec())],
            ),
        ],
    }))
    .await;
    settle().await;
    assert!(has_backend(&out, "app"), "not dropped at once");
    assert!(has_backend(&out, "other"));
    tokio::time::sleep_until(t0 + GRACE - ms(1)).await;
    settle().await;
    assert!(has_backend(&out, "app"));
    tokio::time::sleep_until(t0 + GRACE + Timing::default().min_reload_interval).await;
    settle().await;
    assert!(!has_backend(&out, "app"));
    assert!(has_backend(&out, "other"));
    let attempts = *r.attempts.lock().unwrap();
    assert_eq!(attempts, 3, "the new backend and the removed one reloaded");
    run.stop().await;
}

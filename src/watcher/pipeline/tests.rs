//! Unit tests of the change pipeline with fake validation and reload seams.

use super::*;
use crate::core::keys::ServicePrefix;
use crate::haproxy::{CheckError, ReloadError};
use crate::watcher::catalog::Catalog;
use crate::watcher::render::{Renderer, TemplateSpec};
use crate::watcher::source::{KvChange, Scope, WatchEvent, Watched};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// Refuses candidates that contain `refuse`; fails to run `unavailable` more times; records
/// what it was asked to check.
#[derive(Clone, Default)]
pub(super) struct FakeValidator {
    pub(super) refuse: Arc<Mutex<Option<String>>>,
    pub(super) unavailable: Arc<Mutex<u32>>,
    pub(super) calls: Arc<Mutex<usize>>,
    /// How long each check takes.
    pub(super) delay: Duration,
}

impl Validate for FakeValidator {
    async fn validate(&self, files: &[PathBuf]) -> Result<(), CheckError> {
        *self.calls.lock().unwrap() += 1;
        tokio::time::sleep(self.delay).await;
        {
            let mut u = self.unavailable.lock().unwrap();
            if *u > 0 {
                *u -= 1;
                return Err(CheckError::Transient("haproxy -c timed out".into()));
            }
        }
        let refuse = self.refuse.lock().unwrap().clone();
        for f in files {
            let text =
                std::fs::read_to_string(f).map_err(|e| CheckError::Transient(e.to_string()))?;
            if let Some(r) = &refuse {
                if text.contains(r.as_str()) {
                    return Err(CheckError::Refused(format!(
                        "[{}:3] unknown keyword",
                        f.display()
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Fails the next `fail` reloads, then succeeds; counts attempts and records when they began.
#[derive(Clone, Default)]
pub(super) struct FakeReloader {
    pub(super) fail: Arc<Mutex<u32>>,
    pub(super) attempts: Arc<Mutex<u32>>,
    pub(super) times: Arc<Mutex<Vec<Instant>>>,
}

impl Reload for FakeReloader {
    async fn reload(&self) -> Result<String, ReloadError> {
        *self.attempts.lock().unwrap() += 1;
        self.times.lock().unwrap().push(Instant::now());
        let mut fail = self.fail.lock().unwrap();
        if *fail > 0 {
            *fail -= 1;
            return Err(ReloadError::Failed("no new worker".into()));
        }
        Ok("ok".into())
    }
}

pub(super) struct Setup {
    pub(super) _dir: tempfile::TempDir,
    pub(super) out: PathBuf,
    pub(super) p: Pipeline<FakeValidator, FakeReloader>,
    pub(super) v: FakeValidator,
    pub(super) r: FakeReloader,
}

pub(super) fn setup() -> Setup {
    setup_with(Timing {
        retry_min: Duration::from_millis(10),
        ..Timing::default()
    })
}

/// The renderer of `template` (built-in when `None`) into `out`, and a `/service` catalog
/// for it.
pub(super) fn renderer_and_catalog(
    template: Option<PathBuf>,
    out: &std::path::Path,
) -> (Renderer, Catalog) {
    let renderer = Renderer::new(vec![TemplateSpec {
        template,
        output: out.to_path_buf(),
    }])
    .unwrap();
    let catalog = Catalog::with_views(
        Watched::prefixes(vec![ServicePrefix::parse("/service").unwrap()]),
        renderer.views(),
    )
    .unwrap();
    (renderer, catalog)
}

/// A pipeline writing into a folder of its own, with `timing`.
pub(super) fn setup_with(timing: Timing) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("backends.cfg");
    let (renderer, catalog) = renderer_and_catalog(None, &out);
    let (v, r) = (FakeValidator::default(), FakeReloader::default());
    let p = Pipeline::new(catalog, renderer, Some(v.clone()), Some(r.clone()), timing).unwrap();
    Setup {
        _dir: dir,
        out,
        p,
        v,
        r,
    }
}

pub(super) fn snapshot(keys: &[&str]) -> Input {
    Input::Etcd(WatchEvent::Snapshot {
        revision: 1,
        scopes: vec![(
            Scope::Prefix(0),
            keys.iter()
                .map(|k| (k.as_bytes().to_vec(), b"running".to_vec()))
                .collect(),
        )],
    })
}

pub(super) fn put(key: &str, value: &str) -> Input {
    Input::Etcd(WatchEvent::Changes {
        scope: Scope::Prefix(0),
        revision: 2,
        changes: vec![KvChange::Put {
            key: key.as_bytes().to_vec(),
            value: value.as_bytes().to_vec(),
        }],
    })
}

#[tokio::test(start_paused = true)]
async fn nothing_is_rendered_before_the_first_snapshot() {
    let mut s = setup();
    s.p.handle(put("/service/10.0.0.1:80", "running"), Instant::now());
    assert!(!s.p.synced);
    assert_eq!(s.p.apply().await, Applied::NotSynced);
    assert!(!s.out.exists());
}

#[tokio::test(start_paused = true)]
async fn first_snapshot_is_due_at_once_and_written_then_reloaded() {
    let mut s = setup();
    let now = Instant::now();
    assert!(s.p.handle(snapshot(&["/service/10.0.0.1:80"]), now));
    assert_eq!(s.p.next_due(), Some(now));
    s.p.tick(now).await;
    let text = std::fs::read_to_string(&s.out).unwrap();
    assert!(text.contains("server 10.0.0.1_80 10.0.0.1:80"), "{text}");
    assert_eq!(*s.r.attempts.lock().unwrap(), 1);
    assert!(!s.p.reload_pending());
}

#[tokio::test(start_paused = true)]
async fn up_to_date_files_at_start_are_reloaded_once() {
    let mut s = setup();
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.tick(Instant::now()).await;
    // A second watcher over the same, already written, files.
    let mut t = setup();
    std::fs::copy(&s.out, &t.out).unwrap();
    let (renderer, catalog) = renderer_and_catalog(None, &t.out);
    t.p = Pipeline::new(
        catalog,
        renderer,
        Some(t.v.clone()),
        Some(t.r.clone()),
        Timing::default(),
    )
    .unwrap();
    t.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    t.p.tick(Instant::now()).await;
    assert_eq!(*t.v.calls.lock().unwrap(), 0, "nothing to validate");
    assert_eq!(
        *t.r.attempts.lock().unwrap(),
        1,
        "but HAProxy is reloaded once"
    );
    t.p.handle(put("/service/10.0.0.1:80", "running"), Instant::now());
    t.p.apply().await;
    assert!(!t.p.reload_pending(), "later no-op changes do not reload");
}

#[tokio::test(start_paused = true)]
async fn unchanged_output_is_neither_validated_nor_reloaded() {
    let mut s = setup();
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.tick(Instant::now()).await;
    let (calls, reloads) = (*s.v.calls.lock().unwrap(), *s.r.attempts.lock().unwrap());
    // A metadata change that renders the same bytes (weight 100 is the default).
    assert!(s.p.handle(
        put("/service/10.0.0.1:80", r#"{"weight":100}"#),
        Instant::now()
    ));
    assert_eq!(s.p.apply().await, Applied::Unchanged);
    s.p.tick(Instant::now() + Duration::from_secs(5)).await;
    assert_eq!(*s.v.calls.lock().unwrap(), calls);
    assert_eq!(*s.r.attempts.lock().unwrap(), reloads);
}

#[tokio::test(start_paused = true)]
async fn refused_candidate_keeps_the_live_file_and_is_not_rechecked() {
    let mut s = setup();
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.apply().await;
    s.p.reload().await;
    let live = std::fs::read_to_string(&s.out).unwrap();
    *s.v.refuse.lock().unwrap() = Some("10.0.0.2".into());
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    let out = s.out.display().to_string();
    assert!(
        matches!(s.p.apply().await, Applied::Rejected(e) if e.contains("unknown keyword") && e.contains(&format!("[{out} (candidate from"))),
        "HAProxy's message names the output, not the deleted temporary file"
    );
    assert_eq!(std::fs::read_to_string(&s.out).unwrap(), live);
    assert!(!s.p.reload_pending(), "no reload after a refused candidate");
    let calls = *s.v.calls.lock().unwrap();
    assert!(matches!(s.p.apply().await, Applied::Rejected(_)));
    assert_eq!(
        *s.v.calls.lock().unwrap(),
        calls,
        "same candidate is not re-validated"
    );
    assert_eq!(
        std::fs::read_dir(s.out.parent().unwrap()).unwrap().count(),
        1,
        "no temp file left"
    );
    // The next change that validates goes through.
    *s.v.refuse.lock().unwrap() = None;
    s.p.handle(put("/service/10.0.0.3:80", "running"), Instant::now());
    assert!(matches!(s.p.apply().await, Applied::Written(_)));
    assert!(std::fs::read_to_string(&s.out)
        .unwrap()
        .contains("10.0.0.3_80"));
}

#[tokio::test(start_paused = true)]
async fn failed_reload_is_retried_with_backoff() {
    let mut s = setup_with(Timing {
        min_reload_interval: Duration::from_millis(10),
        retry_min: Duration::from_millis(100),
        retry_max: Duration::from_millis(250),
        ..Timing::default()
    });
    *s.r.fail.lock().unwrap() = 3;
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.tick(Instant::now()).await;
    let mut delays = Vec::new();
    while s.p.reload_pending() {
        let failed_at = Instant::now();
        let retry_at = s.p.next_due().unwrap();
        delays.push((retry_at - failed_at).as_millis());
        tokio::time::sleep_until(retry_at).await;
        s.p.tick(Instant::now()).await;
    }
    // 100 ms doubling up to 250 ms (exact on paused time; the bounds also allow a read a
    // moment after the failure, up to 2 ms short).
    let want = [100u128, 200, 250];
    assert_eq!(delays.len(), want.len(), "{delays:?}");
    for (got, want) in delays.iter().zip(want) {
        assert!(*got <= want && *got + 2 >= want, "{delays:?}");
    }
    assert_eq!(*s.r.attempts.lock().unwrap(), 4);
    assert_eq!((s.p.stats.reloads, s.p.stats.reload_failures), (1, 3));
}

#[tokio::test(start_paused = true)]
async fn broken_template_edit_keeps_the_last_good_template() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("t.tera");
    std::fs::write(&tpl, "v1 {{ services | length }}\n").unwrap();
    let out = dir.path().join("o.cfg");
    let (renderer, catalog) = renderer_and_catalog(Some(tpl.clone()), &out);
    let mut p: Pipeline<FakeValidator, FakeReloader> =
        Pipeline::new(catalog, renderer, None, None, Timing::default()).unwrap();
    p.handle(snapshot(&[]), Instant::now());
    p.apply().await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v1 1\n");
    // A truncation (the first event of a rewrite) and a broken edit both keep v1.
    for broken in ["", "{% if %}"] {
        std::fs::write(&tpl, broken).unwrap();
        let now = Instant::now();
        assert!(p.handle(Input::Template(tpl.clone()), now));
        assert!(
            p.next_due().unwrap() > now,
            "a template edit waits for the file to settle"
        );
        p.apply().await;
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "v1 1\n");
    }
    std::fs::write(&tpl, "v2\n").unwrap();
    p.handle(Input::Template(tpl), Instant::now());
    p.apply().await;
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "v2\n");
}

#[tokio::test(start_paused = true)]
async fn transient_check_failure_is_retried_without_a_new_change() {
    let mut s = setup();
    *s.v.unavailable.lock().unwrap() = 1;
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.tick(Instant::now()).await;
    assert!(
        !s.out.exists(),
        "nothing written while the check could not run"
    );
    let retry = s.p.next_due().expect("a retry is scheduled");
    tokio::time::sleep_until(retry).await;
    s.p.tick(Instant::now()).await;
    assert!(std::fs::read_to_string(&s.out)
        .unwrap()
        .contains("10.0.0.1_80"));
    assert_eq!(*s.r.attempts.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn reload_retries_respect_the_minimum_interval() {
    let mut s = setup();
    *s.r.fail.lock().unwrap() = 1;
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.tick(Instant::now()).await;
    let retry = s.p.next_due().unwrap();
    assert!(
        retry >= Instant::now() + Timing::default().min_reload_interval - Duration::from_millis(20)
    );
}

/// A pipeline with a check that takes `check` to run, started through [`Pipeline::run`] with
/// a first snapshot queued and a shutdown 100 ms in; returns when `run` does.
async fn run_and_stop_during_a_check(check: Duration) -> (Setup, Stats, Duration) {
    let mut s = setup();
    s.v.delay = check;
    s.p.validator = Some(Arc::new(s.v.clone()));
    let (tx, rx) = mpsc::channel(8);
    tx.send(snapshot(&["/service/10.0.0.1:80"])).await.unwrap();
    let started = Instant::now();
    let p = std::mem::replace(&mut s.p, setup().p);
    let stats = p
        .run(rx, tokio::time::sleep(Duration::from_millis(100)))
        .await;
    (s, stats, started.elapsed())
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_lets_the_step_in_progress_finish() {
    let (s, stats, took) = run_and_stop_during_a_check(Duration::from_secs(1)).await;
    assert_eq!(stats.writes, 1, "the apply in progress was finished");
    assert!(std::fs::read_to_string(&s.out)
        .unwrap()
        .contains("10.0.0.1_80"));
    assert_eq!(took, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_step_longer_than_the_grace_period_is_cut_short() {
    let (s, stats, took) = run_and_stop_during_a_check(Duration::from_secs(60)).await;
    assert_eq!(stats.writes, 0);
    assert!(!s.out.exists(), "nothing written");
    let grace = Timing::default().shutdown_grace;
    assert_eq!(took, Duration::from_millis(100) + grace);
}

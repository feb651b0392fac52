//! Unit tests of the pipeline's runtime fast path, over fake validation, reload and runtime
//! seams (the shared fakes live in `tests.rs`).

use super::tests::{put, setup, snapshot, Setup};
use super::*;
use crate::haproxy::admin::BoxFuture;
use crate::haproxy::config::Server;
use crate::haproxy::plan::Op;
use crate::haproxy::ApplyError;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Records the operations it is given; fails while `fail` is set.
#[derive(Clone, Default)]
pub(super) struct FakeRuntime {
    fail: Arc<Mutex<Option<String>>>,
    pub(super) applied: Arc<Mutex<Vec<String>>>,
    expected: Arc<Mutex<Vec<String>>>,
    before_reloads: Arc<Mutex<u32>>,
    after_reloads: Arc<Mutex<u32>>,
}

impl RuntimeUpdate for FakeRuntime {
    fn apply<'a>(
        &'a self,
        ops: &'a [Op],
        expected: &'a BTreeMap<String, Vec<Server>>,
    ) -> BoxFuture<'a, Result<String, ApplyError>> {
        Box::pin(async move {
            if let Some(e) = self.fail.lock().unwrap().clone() {
                return Err(ApplyError::StateDiffers(e));
            }
            self.applied
                .lock()
                .unwrap()
                .extend(ops.iter().map(ToString::to_string));
            for (b, servers) in expected {
                for s in servers {
                    self.expected
                        .lock()
                        .unwrap()
                        .push(format!("{b}/{}", s.name));
                }
            }
            Ok("verified".into())
        })
    }

    fn before_reload<'a>(
        &'a self,
        _configs: &'a [&'a crate::haproxy::config::Config],
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { *self.before_reloads.lock().unwrap() += 1 })
    }

    fn after_reload(&self) {
        *self.after_reloads.lock().unwrap() += 1;
    }
}

/// A pipeline with a fake runtime API that has done its first apply and reload.
pub(super) async fn started() -> (Setup, FakeRuntime) {
    let s = setup();
    let rt = FakeRuntime::default();
    let Setup { _dir, out, p, v, r } = s;
    let mut s = Setup {
        _dir,
        out,
        p: p.with_runtime(Box::new(rt.clone())),
        v,
        r,
    };
    s.p.handle(snapshot(&["/service/10.0.0.1:80"]), Instant::now());
    s.p.tick(Instant::now()).await;
    assert_eq!(*s.r.attempts.lock().unwrap(), 1, "the first apply reloads");
    assert!(rt.applied.lock().unwrap().is_empty());
    assert_eq!(*rt.before_reloads.lock().unwrap(), 1);
    assert_eq!(*rt.after_reloads.lock().unwrap(), 1);
    (s, rt)
}

#[tokio::test(start_paused = true)]
async fn a_server_change_is_applied_at_runtime_written_and_not_reloaded() {
    let (mut s, rt) = started().await;
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    assert!(matches!(s.p.apply().await, Applied::Written(_)));
    assert_eq!(
        *rt.applied.lock().unwrap(),
        ["add service/10.0.0.2_80 10.0.0.2:80"]
    );
    assert_eq!(
        *rt.expected.lock().unwrap(),
        ["service/10.0.0.1_80", "service/10.0.0.2_80"]
    );
    assert!(!s.p.reload_pending(), "no reload for a server change");
    assert_eq!(s.p.stats.runtime_applies, 1);
    let text = std::fs::read_to_string(&s.out).unwrap();
    assert!(
        text.contains("server 10.0.0.2_80 10.0.0.2:80"),
        "still written: {text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_change_right_after_a_reload_is_not_held_back() {
    let (mut s, _rt) = started().await;
    let now = Instant::now();
    s.p.handle(put("/service/10.0.0.2:80", "running"), now);
    // A change right after the first reload: due at once, not held for the reload interval.
    let due = s.p.next_due().unwrap();
    assert!(
        due < now + Duration::from_millis(300),
        "due in {:?}, not after --min-reload-interval",
        due - now
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_runtime_update_falls_back_to_a_reload() {
    let (mut s, rt) = started().await;
    *rt.fail.lock().unwrap() = Some("`add server`: HAProxy answered \"nope\"".into());
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    assert!(matches!(s.p.apply().await, Applied::Written(_)));
    assert!(s.p.reload_pending(), "the fallback reload is scheduled");
    assert_eq!(s.p.stats.runtime_fallbacks, 1);
    assert_eq!(s.p.stats.runtime_applies, 0);
    assert!(s.p.reload().await);
    assert_eq!(*s.r.attempts.lock().unwrap(), 2);
    assert_eq!(*rt.after_reloads.lock().unwrap(), 2, "drains forgotten");
}

#[tokio::test(start_paused = true)]
async fn a_refused_candidate_after_a_runtime_update_reloads_the_live_files() {
    let (mut s, rt) = started().await;
    let live = std::fs::read_to_string(&s.out).unwrap();
    *s.v.refuse.lock().unwrap() = Some("10.0.0.2".into());
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    assert!(matches!(s.p.apply().await, Applied::Rejected(_)));
    assert_eq!(
        rt.applied.lock().unwrap().len(),
        1,
        "HAProxy got the server"
    );
    assert_eq!(std::fs::read_to_string(&s.out).unwrap(), live);
    assert!(
        s.p.reload_pending(),
        "so HAProxy is reloaded from the live files, which lack it"
    );
}

#[tokio::test(start_paused = true)]
async fn while_a_reload_is_pending_changes_go_with_it() {
    let (mut s, rt) = started().await;
    *s.r.fail.lock().unwrap() = 1;
    *rt.fail.lock().unwrap() = Some("down".into());
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    s.p.apply().await;
    s.p.reload().await; // fails: the reload stays pending
    assert!(s.p.reload_pending());
    *rt.fail.lock().unwrap() = None;
    s.p.handle(put("/service/10.0.0.3:80", "running"), Instant::now());
    s.p.apply().await;
    assert!(
        rt.applied.lock().unwrap().is_empty(),
        "HAProxy does not run the live files yet: no runtime update against them"
    );
    assert!(s.p.reload_pending());
}

#[tokio::test(start_paused = true)]
async fn a_removal_and_a_weight_change_are_runtime_operations() {
    let (mut s, rt) = started().await;
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    s.p.apply().await;
    s.p.handle(
        put("/service/10.0.0.2:80", r#"{"weight":5}"#),
        Instant::now(),
    );
    s.p.apply().await;
    s.p.handle(
        Input::Etcd(WatchEvent::Changes {
            scope: crate::watcher::source::Scope::Prefix(0),
            revision: 9,
            changes: vec![crate::watcher::source::KvChange::Delete {
                key: b"/service/10.0.0.1:80".to_vec(),
            }],
        }),
        Instant::now(),
    );
    s.p.apply().await;
    assert_eq!(
        *rt.applied.lock().unwrap(),
        [
            "add service/10.0.0.2_80 10.0.0.2:80",
            "weight service/10.0.0.2_80 5",
            "delete service/10.0.0.1_80"
        ]
    );
    assert_eq!(
        *s.r.attempts.lock().unwrap(),
        1,
        "still only the first reload"
    );
}

#[tokio::test(start_paused = true)]
async fn a_file_that_cannot_be_written_sends_nothing_to_haproxy_and_is_retried() {
    let (mut s, rt) = started().await;
    let folder = s.out.parent().unwrap().to_path_buf();
    let saved = std::fs::read_to_string(&s.out).unwrap();
    std::fs::remove_dir_all(&folder).unwrap();
    s.p.handle(put("/service/10.0.0.2:80", "running"), Instant::now());
    assert!(matches!(s.p.apply().await, Applied::Rejected(_)));
    assert!(
        rt.applied.lock().unwrap().is_empty(),
        "nothing ahead of the file"
    );
    assert!(!s.p.reload_pending(), "and nothing to revert");
    let retry = s.p.next_due().expect("the write is retried");
    // The folder comes back (space freed, remounted read-write): the retry applies it all.
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(&s.out, saved).unwrap();
    tokio::time::sleep_until(retry).await;
    s.p.tick(Instant::now()).await;
    assert_eq!(
        *rt.applied.lock().unwrap(),
        ["add service/10.0.0.2_80 10.0.0.2:80"]
    );
    assert!(std::fs::read_to_string(&s.out)
        .unwrap()
        .contains("10.0.0.2_80"));
    assert!(!s.p.reload_pending());
    assert_eq!(
        *s.r.attempts.lock().unwrap(),
        1,
        "still only the first reload"
    );
}

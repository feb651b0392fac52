//! Which way a changed set of outputs reaches HAProxy: through the runtime API, or by a
//! reload. Pure: the texts in, a [`Route`] out.

use crate::haproxy::plan::{self, Config, Op, Plan, Server};
use std::collections::BTreeMap;

/// How an apply reaches HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// These operations, then a read-back of each touched backend against its servers in
    /// the new configuration. No operation at all means the outputs changed only in ways
    /// HAProxy does not see (comments, spacing, order of servers).
    Runtime {
        ops: Vec<Op>,
        expected: BTreeMap<String, Vec<Server>>,
    },
    /// A reload, for this reason.
    Reload(String),
}

/// Plans each changed output (`changed` indexes `live` and `candidates`) against the text
/// HAProxy runs, given parsed (`live`, `None` for an output not written yet); any output that
/// needs a reload makes the whole apply one. `name(i)` names output `i` in reasons. Returns the
/// candidates it parsed too, so the caller can keep them as the next `live`.
pub fn choose(
    live: &[Option<Config>],
    candidates: &[Option<String>],
    changed: &[usize],
    name: impl Fn(usize) -> String,
) -> (Route, Vec<(usize, Config)>) {
    let mut ops = Vec::new();
    let mut expected = BTreeMap::new();
    let mut parsed = Vec::with_capacity(changed.len());
    for &i in changed {
        let (Some(Some(old)), Some(Some(new))) = (live.get(i), candidates.get(i)) else {
            return (
                Route::Reload(format!("{}: a new output file", name(i))),
                parsed,
            );
        };
        let new = plan::parse(new);
        match plan::plan_parsed(old, &new) {
            Plan::Nothing => {}
            Plan::Reload { reason } => {
                return (Route::Reload(format!("{}: {reason}", name(i))), parsed)
            }
            Plan::Runtime(more) => {
                for op in &more {
                    let backend = op.backend();
                    if expected.contains_key(backend) {
                        continue;
                    }
                    let servers = new
                        .sections
                        .iter()
                        .find(|s| s.has_servers() && s.name.as_deref() == Some(backend))
                        .map(|s| s.servers.clone())
                        .unwrap_or_default();
                    expected.insert(backend.to_string(), servers);
                }
                ops.extend(more);
            }
        }
        parsed.push((i, new));
    }
    (Route::Runtime { ops, expected }, parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OLD: &str = "backend web\n    balance roundrobin\n    server a 10.0.0.1:80 check\n";

    fn some(texts: &[&str]) -> Vec<Option<String>> {
        texts.iter().map(|t| Some(t.to_string())).collect()
    }

    fn parsed(texts: &[&str]) -> Vec<Option<Config>> {
        texts.iter().map(|t| Some(plan::parse(t))).collect()
    }

    #[test]
    fn a_server_added_goes_through_the_runtime_api() {
        let new = format!("{OLD}    server b 10.0.0.2:80 check\n");
        let route = choose(&parsed(&[OLD]), &some(&[&new]), &[0], |_| "out".into()).0;
        let Route::Runtime { ops, expected } = route else {
            panic!("{route:?}")
        };
        assert_eq!(ops.len(), 1);
        let names: Vec<_> = expected["web"].iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
    }

    #[test]
    fn an_option_change_reloads_and_names_the_output() {
        let new = OLD.replace("roundrobin", "leastconn");
        let route = choose(&parsed(&[OLD]), &some(&[&new]), &[0], |_| "b.cfg".into()).0;
        let Route::Reload(reason) = route else {
            panic!("{route:?}")
        };
        assert!(
            reason.starts_with("b.cfg: ") && reason.contains("web"),
            "{reason}"
        );
    }

    #[test]
    fn a_comment_change_needs_nothing() {
        let new = format!("# hello\n{OLD}");
        let (route, parsed) = choose(&parsed(&[OLD]), &some(&[&new]), &[0], |_| "out".into());
        assert_eq!(parsed.len(), 1, "the candidate comes back parsed");
        assert_eq!(
            route,
            Route::Runtime {
                ops: vec![],
                expected: BTreeMap::new()
            }
        );
    }

    #[test]
    fn a_new_output_reloads() {
        let route = choose(&[None], &some(&[OLD]), &[0], |_| "new.cfg".into()).0;
        assert_eq!(route, Route::Reload("new.cfg: a new output file".into()));
    }

    #[test]
    fn one_output_that_reloads_makes_the_whole_apply_reload() {
        let add = format!("{OLD}    server b 10.0.0.2:80 check\n");
        let other = "backend api\n    server x 10.0.0.9:80\n";
        let other_new = "backend api\n    timeout server 5s\n    server x 10.0.0.9:80\n";
        let route = choose(
            &parsed(&[OLD, other]),
            &some(&[&add, other_new]),
            &[0, 1],
            |i| format!("out{i}"),
        )
        .0;
        assert!(matches!(route, Route::Reload(r) if r.starts_with("out1: ")));
    }
}

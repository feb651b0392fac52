//! Which way a changed set of outputs reaches HAProxy: the server changes the runtime API can
//! make go out at once, section by section, and whatever else changed waits for a reload.
//! Pure: what HAProxy runs and the parsed candidates in, a [`Routed`] out.

use crate::haproxy::config::{Config, Server};
use crate::haproxy::plan::{plan_partial, Op};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How an apply reaches HAProxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// Runtime operations, then a read-back of each touched backend against `expected`.
    pub ops: Vec<Op>,
    /// The servers of each touched backend in the new configuration.
    pub expected: BTreeMap<String, Vec<Server>>,
    /// Why a reload is needed beside the operations; `None` when they apply everything (no
    /// operation and no reload: the outputs changed only in ways HAProxy does not see).
    pub reload: Option<String>,
    /// What HAProxy runs once the operations are applied, for each output they touch.
    pub after: Vec<(usize, Arc<Config>)>,
}

/// Plans each changed output against what HAProxy runs for it (`running[i]`, or why that is
/// not known, which makes the output's changes wait for a reload). `candidates` are the
/// changed outputs, parsed; `name(i)` names output `i` in reasons.
pub fn choose(
    running: &[Result<Arc<Config>, String>],
    candidates: &[(usize, Arc<Config>)],
    name: impl Fn(usize) -> String,
) -> Routed {
    let mut routed = Routed {
        ops: Vec::new(),
        expected: BTreeMap::new(),
        reload: None,
        after: Vec::new(),
    };
    let mut reasons = Vec::new();
    for (i, new) in candidates {
        let old = match running.get(*i) {
            Some(Ok(old)) => old,
            Some(Err(why)) => {
                reasons.push(format!("{}: {why}", name(*i)));
                continue;
            }
            None => {
                reasons.push(format!("{}: a new output file", name(*i)));
                continue;
            }
        };
        let partial = plan_partial(old, new);
        if let Some(reason) = partial.reload {
            reasons.push(format!("{}: {reason}", name(*i)));
        }
        if partial.ops.is_empty() && partial.after == **old {
            continue;
        }
        for op in &partial.ops {
            let backend = op.backend();
            if routed.expected.contains_key(backend) {
                continue;
            }
            let servers = new
                .sections
                .iter()
                .find(|s| s.has_servers() && s.name.as_deref() == Some(backend))
                .map(|s| s.servers.clone())
                .unwrap_or_default();
            routed.expected.insert(backend.to_string(), servers);
        }
        routed.ops.extend(partial.ops);
        let after = if partial.after == **new {
            new.clone()
        } else {
            Arc::new(partial.after)
        };
        routed.after.push((*i, after));
    }
    if !reasons.is_empty() {
        routed.reload = Some(reasons.join("; "));
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::haproxy::config;

    const OLD: &str = "backend web\n    balance roundrobin\n    server a 10.0.0.1:80 check\n";

    fn cands(texts: &[&str]) -> Vec<(usize, Arc<Config>)> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| (i, Arc::new(config::parse(t))))
            .collect()
    }

    fn running(texts: &[&str]) -> Vec<Result<Arc<Config>, String>> {
        texts
            .iter()
            .map(|t| Ok(Arc::new(config::parse(t))))
            .collect()
    }

    #[test]
    fn a_server_added_goes_through_the_runtime_api() {
        let new = format!("{OLD}    server b 10.0.0.2:80 check\n");
        let r = choose(&running(&[OLD]), &cands(&[&new]), |_| "out".into());
        assert_eq!(r.ops.len(), 1);
        assert_eq!(r.reload, None);
        let names: Vec<_> = r.expected["web"].iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(*r.after[0].1, config::parse(&new));
    }

    #[test]
    fn an_option_change_reloads_and_names_the_output() {
        let new = OLD.replace("roundrobin", "leastconn");
        let r = choose(&running(&[OLD]), &cands(&[&new]), |_| "b.cfg".into());
        let reason = r.reload.expect("a reload");
        assert!(
            reason.starts_with("b.cfg: ") && reason.contains("web"),
            "{reason}"
        );
        assert!(r.ops.is_empty() && r.after.is_empty());
    }

    #[test]
    fn a_comment_change_needs_nothing() {
        let new = format!("# hello\n{OLD}");
        let r = choose(&running(&[OLD]), &cands(&[&new]), |_| "out".into());
        assert_eq!((r.ops.len(), r.reload), (0, None));
    }

    #[test]
    fn an_unknown_running_config_reloads_with_its_reason() {
        let r = choose(
            &[Err("first update since start".into())],
            &cands(&[OLD]),
            |_| "new.cfg".into(),
        );
        assert_eq!(
            r.reload.as_deref(),
            Some("new.cfg: first update since start")
        );
        assert!(r.ops.is_empty());
    }

    #[test]
    fn one_output_that_reloads_does_not_hold_back_the_servers_of_another() {
        let add = format!("{OLD}    server b 10.0.0.2:80 check\n");
        let other = "backend api\n    server x 10.0.0.9:80\n";
        let other_new = "backend api\n    timeout server 5s\n    server x 10.0.0.9:80\n";
        let r = choose(&running(&[OLD, other]), &cands(&[&add, other_new]), |i| {
            format!("out{i}")
        });
        assert!(matches!(&r.reload, Some(why) if why.starts_with("out1: ")));
        assert_eq!(
            r.ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["add web/b 10.0.0.2:80"]
        );
        assert_eq!(r.after.len(), 1, "only out0 changed in HAProxy");
    }
}

//! Partial plans: when a change holds both server changes the runtime API can make and
//! changes only a reload can apply, the server changes still go out at once, section by
//! section, and the rest waits for the reload. One backend that needs a reload (or whose
//! reload HAProxy refuses) then never holds back the servers of another.

use super::{diff, section_ops, Config, Op, Section};
use std::collections::HashMap;

/// What can be applied now, and what must wait for a reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partial {
    /// Runtime operations for the sections whose only changes are servers.
    pub ops: Vec<Op>,
    /// Why the rest of the change needs a reload; `None` when `ops` apply all of it.
    pub reload: Option<String>,
    /// What HAProxy runs once `ops` are applied: `old`, with each section the operations
    /// touched replaced by its new version (all of `new` when nothing needs a reload).
    pub after: Config,
}

/// Plans the change from `old` (what HAProxy runs) to `new` section by section: unlike a
/// decision for the change as a whole (the module's rules), a section that needs a reload
/// does not stop the server operations of the others.
pub fn plan_partial(old: &Config, new: &Config) -> Partial {
    let reason = match diff(old, new) {
        Ok(ops) => {
            return Partial {
                ops,
                reload: None,
                after: new.clone(),
            }
        }
        Err(reason) => reason,
    };
    let whole = || Partial {
        ops: Vec::new(),
        reload: Some(reason.clone()),
        after: old.clone(),
    };
    // Sections are matched by their identity; anything that makes that ambiguous (or that the
    // parser does not evaluate) reloads as a whole.
    if old.conditional || new.conditional || old.preamble != new.preamble {
        return whole();
    }
    let (Some(old_at), Some(new_at)) = (by_ident(&old.sections), by_ident(&new.sections)) else {
        return whole();
    };
    let mut after = old.clone();
    let mut ops = Vec::new();
    for (ident, &k) in &old_at {
        let Some(&idx) = new_at.get(ident) else {
            continue;
        };
        if std::sync::Arc::ptr_eq(&old.sections[k], &new.sections[idx]) {
            continue;
        }
        let mut mine = Vec::new();
        if section_ops(&old.sections[k], &new.sections[idx], new, idx, &mut mine).is_ok()
            && old.sections[k].servers != new.sections[idx].servers
        {
            ops.extend(mine);
            after.sections[k] = new.sections[idx].clone();
        }
    }
    ops.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Partial {
        ops,
        reload: Some(reason),
        after,
    }
}

/// Section identity → index, or `None` when one identity appears twice.
fn by_ident(sections: &[std::sync::Arc<Section>]) -> Option<HashMap<String, usize>> {
    let mut at = HashMap::with_capacity(sections.len());
    for (i, s) in sections.iter().enumerate() {
        if at.insert(s.ident(), i).is_some() {
            return None;
        }
    }
    Some(at)
}

#[cfg(test)]
mod tests {
    use super::super::{parse, plan_parsed, Plan};
    use super::*;

    const OLD: &str = "\
defaults
    timeout server 5s
backend a
    balance roundrobin
    server a1 10.0.0.1:80 check
backend b
    balance roundrobin
    server b1 10.0.0.2:80 check
";

    #[test]
    fn a_server_change_beside_an_option_change_goes_out_and_the_option_waits() {
        let new = OLD
            .replace("timeout server 5s", "timeout server 9s")
            .replace(
                "    server b1 10.0.0.2:80 check\n",
                "    server b1 10.0.0.2:80 check\n    server b2 10.0.0.3:80 check\n",
            );
        let (old, new) = (parse(OLD), parse(&new));
        let p = plan_partial(&old, &new);
        assert_eq!(
            p.ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["add b/b2 10.0.0.3:80"]
        );
        let reason = p.reload.expect("the defaults change still needs a reload");
        assert!(reason.contains("defaults"), "{reason}");
        // HAProxy now runs the old defaults with the new servers of b: what is left is exactly
        // the defaults change.
        assert_eq!(p.after.sections[2], new.sections[2]);
        assert_eq!(p.after.sections[0], old.sections[0]);
        let rest = plan_parsed(&p.after, &new);
        assert!(
            matches!(&rest, Plan::Reload { reason } if reason.contains("defaults")),
            "{rest:?}"
        );
    }

    #[test]
    fn a_whole_runtime_change_has_nothing_left() {
        let new = OLD.replace("10.0.0.1:80", "10.0.0.1:80 weight 5");
        let p = plan_partial(&parse(OLD), &parse(&new));
        assert_eq!(p.reload, None);
        assert_eq!(p.ops.len(), 1);
        assert_eq!(p.after, parse(&new));
    }

    #[test]
    fn a_new_backend_waits_and_the_servers_of_another_go_out() {
        let new = format!("{OLD}backend c\n    server c1 10.0.0.9:80\n").replace(
            "10.0.0.1:80 check\n",
            "10.0.0.1:80 check\n    server a2 10.0.0.4:80 check\n",
        );
        let p = plan_partial(&parse(OLD), &parse(&new));
        assert_eq!(
            p.ops.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["add a/a2 10.0.0.4:80"]
        );
        assert!(p.reload.as_deref().is_some_and(|r| r.contains("backend c")));
        assert_eq!(p.after.sections.len(), 3, "backend c is not running yet");
    }

    #[test]
    fn an_ambiguous_layout_reloads_as_a_whole() {
        let old = format!("{OLD}backend b\n    server x 10.0.0.8:80\n");
        let new = old.replace("10.0.0.1:80", "10.0.0.1:80 weight 3") + "# new\nglobal\n";
        let p = plan_partial(&parse(&old), &parse(&new));
        assert!(p.ops.is_empty());
        assert!(p.reload.is_some());
        assert_eq!(p.after, parse(&old));
    }
}

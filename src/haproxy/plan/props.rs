//! Property tests of the planner: applying the planned operations to the old servers gives
//! exactly the new servers; a change the runtime API cannot express is a reload; and a partial
//! plan leaves exactly the part that needs the reload.
//!
//! Configurations are generated as text in the shape templates render (backends with a dynamic
//! balance and `server <name> <ip:port> [check] [weight <w>]` lines), then changed: servers
//! added, removed and re-weighted (expressible), `check` toggled on a kept server or an option
//! added to a backend (not expressible).

use super::{parse, plan_parsed, plan_partial, Config, Op, Plan, HAPROXY_DEFAULT_WEIGHT};
use proptest::prelude::*;
use std::collections::BTreeMap;

/// One server slot: present or not, its `check` flag and its weight (`None`: no keyword).
type Slot = Option<(bool, Option<u16>)>;

/// Backends of up to six server slots each.
fn backends() -> impl Strategy<Value = Vec<Vec<Slot>>> {
    let slot = proptest::option::of((any::<bool>(), proptest::option::of(0u16..=256)));
    proptest::collection::vec(proptest::collection::vec(slot, 6), 1..4)
}

/// The text of `backends`, with `option` added to the backend of that index.
fn render(backends: &[Vec<Slot>], option: Option<usize>) -> String {
    let mut out = String::from("defaults\n    timeout server 5s\n");
    for (b, slots) in backends.iter().enumerate() {
        out.push_str(&format!("\nbackend b{b}\n    balance roundrobin\n"));
        if option == Some(b) {
            out.push_str("    timeout queue 9s\n");
        }
        for (i, slot) in slots.iter().enumerate() {
            let Some((check, weight)) = slot else {
                continue;
            };
            out.push_str(&format!("    server s{i} 10.0.{b}.{}:80", i + 1));
            if *check {
                out.push_str(" check");
            }
            if let Some(w) = weight {
                out.push_str(&format!(" weight {w}"));
            }
            out.push('\n');
        }
    }
    out
}

/// `(backend, server)` → `(address, port, effective weight)`.
type Servers = BTreeMap<(String, String), (String, u16, u16)>;

fn servers(config: &Config) -> Servers {
    config
        .sections
        .iter()
        .filter(|s| s.has_servers())
        .flat_map(|s| {
            let backend = s.name.clone().unwrap_or_default();
            s.servers.iter().map(move |v| {
                (
                    (backend.clone(), v.name.clone()),
                    (
                        v.addr.clone(),
                        v.port,
                        v.weight.unwrap_or(HAPROXY_DEFAULT_WEIGHT),
                    ),
                )
            })
        })
        .collect()
}

/// The servers after `ops`, as HAProxy would hold them.
fn apply(mut s: Servers, ops: &[Op]) -> Servers {
    for op in ops {
        match op {
            Op::AddServer { backend, server } => {
                let key = (backend.clone(), server.name.clone());
                assert!(!s.contains_key(&key), "{op} adds a server that exists");
                let weight = server.weight.unwrap_or(HAPROXY_DEFAULT_WEIGHT);
                s.insert(key, (server.addr.clone(), server.port, weight));
            }
            Op::DelServer { backend, name } => {
                let gone = s.remove(&(backend.clone(), name.clone()));
                assert!(gone.is_some(), "{op} deletes a server that does not exist");
            }
            Op::SetWeight {
                backend,
                name,
                weight,
            } => {
                let entry = s.get_mut(&(backend.clone(), name.clone()));
                let entry = entry.unwrap_or_else(|| panic!("{op}: no such server"));
                entry.2 = *weight;
            }
        }
    }
    s
}

/// Whether a server kept from `old` to `new` changed its `check` flag (not expressible).
fn check_toggled(old: &[Vec<Slot>], new: &[Vec<Slot>]) -> bool {
    old.iter().zip(new).any(|(o, n)| {
        o.iter()
            .zip(n)
            .any(|(a, b)| matches!((a, b), (Some((x, _)), Some((y, _))) if x != y))
    })
}

/// The parsed old and new configurations over the backends both sides have (a new backend is
/// a reload, tested by example), the option index kept only if it names one of them.
fn configs(
    old: &[Vec<Slot>],
    new: &[Vec<Slot>],
    option: Option<usize>,
) -> (usize, Option<usize>, Config, Config) {
    let n = old.len().min(new.len());
    let option = option.filter(|&b| b < n);
    let old_c = parse(&render(&old[..n], None));
    let new_c = parse(&render(&new[..n], option));
    (n, option, old_c, new_c)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn planned_operations_turn_the_old_servers_into_the_new(
        old in backends(),
        new in backends(),
        option in proptest::option::of(0usize..4),
    ) {
        let (n, option, old_c, new_c) = configs(&old, &new, option);
        let (old, new) = (&old[..n], &new[..n]);
        let expressible = option.is_none() && !check_toggled(old, new);
        match plan_parsed(&old_c, &new_c) {
            Plan::Nothing => prop_assert_eq!(servers(&old_c), servers(&new_c)),
            Plan::Runtime(ops) => {
                prop_assert!(expressible, "a runtime plan for an inexpressible change: {:?}", ops);
                prop_assert_eq!(apply(servers(&old_c), &ops), servers(&new_c));
            }
            Plan::Reload { reason } => {
                prop_assert!(!expressible, "servers-only change planned as a reload: {}", reason);
            }
        }
    }

    #[test]
    fn a_partial_plan_leaves_exactly_what_needs_the_reload(
        old in backends(),
        new in backends(),
        option in proptest::option::of(0usize..4),
    ) {
        let (n, option, old_c, new_c) = configs(&old, &new, option);
        let (old, new) = (&old[..n], &new[..n]);
        let p = plan_partial(&old_c, &new_c);
        // HAProxy after the operations holds exactly the servers `after` says.
        prop_assert_eq!(apply(servers(&old_c), &p.ops), servers(&p.after));
        // What is left is nothing, or a reload; never more runtime work.
        match (plan_parsed(&p.after, &new_c), &p.reload) {
            (Plan::Nothing, None) => {}
            (Plan::Reload { .. }, Some(_)) => {}
            (rest, why) => prop_assert!(false, "left {:?} with reload {:?}", rest, why),
        }
        // Every backend that needs no reload is done.
        for (b, (o, w)) in old.iter().zip(new).enumerate() {
            let toggled = check_toggled(std::slice::from_ref(o), std::slice::from_ref(w));
            if option != Some(b) && !toggled {
                let name = format!("b{b}");
                let done = |c: &Config| {
                    c.sections.iter().find(|s| s.name.as_deref() == Some(&name)).cloned()
                };
                prop_assert_eq!(
                    done(&p.after).map(|s| servers(&Config { sections: vec![s], ..Config::default() })),
                    done(&new_c).map(|s| servers(&Config { sections: vec![s], ..Config::default() }))
                );
            }
        }
    }
}

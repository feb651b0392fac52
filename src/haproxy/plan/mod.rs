//! Deciding how a rendered configuration change reaches HAProxy: not at all, through the
//! runtime API (HAProxy 2.6's admin socket), or by a reload.
//!
//! [`plan_partial`] compares the text HAProxy runs (`old`) with the new render (`new`) section
//! by section and answers with the server operations ([`Op`]) that can go out now and, when
//! something else changed, why the rest needs a reload. It is pure: no I/O, no clock, and it
//! never panics. The texts are read with [`config::parse`](crate::haproxy::config::parse)
//! (HAProxy's rules for words, and which `server` lines the runtime API can express); an
//! [`Op`] is a description, and the admin socket's
//! [`commands`](crate::haproxy::admin::commands) write its command text.
//!
//! # Decision rules
//!
//! 1. Equal after parsing (directives in order, servers as a set by name: their order counts
//!    only under `balance first`, see below) → nothing to do.
//! 2. Otherwise everything below must hold for runtime operations alone; the first rule
//!    broken, in the order of the sections, gives a reload with a reason naming the section
//!    or server:
//!    - no conditional block (`.if` / `.elif` / `.else` / `.endif`) in either text;
//!    - the lines before the first section are unchanged;
//!    - the same sections, in the same order (`section backend api added`, `… removed`,
//!      `sections reordered …`), with unchanged section lines and directives
//!      (`backend api: options changed (…)`) — this covers `global`, `defaults`, `frontend`
//!      and every other kind;
//!    - in each `backend` / `listen` whose servers differ: servers present in both keep their
//!      address, port and other keywords (`backend web: address of server s1 changed …`,
//!      `server web/s1: keywords changed …`); only their weight may change;
//!    - that backend's name is addressable on the CLI, and its balance algorithm is dynamic:
//!      `roundrobin`, `leastconn`, `random`, or a hash-based one with `hash-type consistent`
//!      (the backend's own `balance` / `hash-type` line, else the `defaults` section governing
//!      it in this text, following `from`; none at all means HAProxy's default, `roundrobin`).
//!      HAProxy refuses `add server` on static algorithms and only takes weights 0 and 100%
//!      there; `first` picks servers by their order, which a server added at runtime does not
//!      keep, so a `first` backend reloads even when its servers are merely reordered;
//!    - an added server does not fall under a `default-server` line (in the backend or its
//!      `defaults`), since dynamic servers do not inherit it; it uses only keywords that
//!      HAProxy 2.6's `add server` accepts ([`ADD_SERVER_KEYWORDS`](crate::haproxy::config::ADD_SERVER_KEYWORDS)); and neither an added nor
//!      a removed server uses `agent-check` (the agent may bring a dynamic server up by itself
//!      and must be stopped before a deletion);
//!    - a weight that becomes or stops being explicit does not depend on a `default-server`
//!      line (otherwise an absent weight is HAProxy's default, 1, and `weight 1` equals none).
//! 3. The operations are ordered by backend name, then deletions, additions and weight
//!    changes, each by server name, so the same change always yields the same commands.
//!
//! Only this one text is seen. Sections of other files loaded with it (the base configuration
//! with its `defaults`) are the caller's to keep unchanged; a `default-server` or a static
//! `balance` that only they hold is not visible here, and HAProxy's refusal of a command is then
//! the signal to fall back to a reload. The same holds for `track` pointing at a server that was
//! itself added at runtime, which HAProxy 2.6 refuses.

mod balance;
mod partial;
#[cfg(test)]
mod whole;

pub use partial::plan_partial;
#[cfg(test)]
pub(crate) use whole::{plan, plan_parsed, Plan};

#[cfg(test)]
use crate::haproxy::config::parse;
use crate::haproxy::config::{
    is_name, scan_keywords, Config, Directive, Section, Server, HAPROXY_DEFAULT_WEIGHT,
};
use balance::{algorithm, has_default_server, Algorithm};
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// One runtime API operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddServer {
        backend: String,
        server: Server,
    },
    DelServer {
        backend: String,
        name: String,
    },
    SetWeight {
        backend: String,
        name: String,
        weight: u16,
    },
}

impl Op {
    /// The backend the operation acts on.
    pub fn backend(&self) -> &str {
        match self {
            Op::AddServer { backend, .. }
            | Op::DelServer { backend, .. }
            | Op::SetWeight { backend, .. } => backend,
        }
    }

    /// The server the operation acts on.
    pub fn server_name(&self) -> &str {
        match self {
            Op::AddServer { server, .. } => &server.name,
            Op::DelServer { name, .. } | Op::SetWeight { name, .. } => name,
        }
    }

    /// Order: backend, then deletions, additions, weights, then server name.
    fn sort_key(&self) -> (&str, u8, &str) {
        let phase = match self {
            Op::DelServer { .. } => 0,
            Op::AddServer { .. } => 1,
            Op::SetWeight { .. } => 2,
        };
        (self.backend(), phase, self.server_name())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddServer { backend, server } => {
                write!(f, "add {backend}/{} {}", server.name, server.address())
            }
            Op::DelServer { backend, name } => write!(f, "delete {backend}/{name}"),
            Op::SetWeight {
                backend,
                name,
                weight,
            } => write!(f, "weight {backend}/{name} {weight}"),
        }
    }
}

/// A line for a reason: its words, shortened past 80 characters.
fn shown(words: &[String]) -> String {
    let line = words.join(" ");
    if line.chars().count() > 80 {
        let mut short: String = line.chars().take(77).collect();
        short.push('…');
        short
    } else {
        line
    }
}

/// The first difference between two directive lists, for a reason.
fn describe(old: &[Directive], new: &[Directive]) -> String {
    let (prefix, suffix) = crate::haproxy::config::common_ends(old, new);
    let old_mid = old.get(prefix..old.len() - suffix).unwrap_or_default();
    let new_mid = new.get(prefix..new.len() - suffix).unwrap_or_default();
    let note = |d: &Directive| {
        d.opaque_server
            .map(|why| format!("; a server line the runtime API cannot apply: {why}"))
            .unwrap_or_default()
    };
    match (old_mid.first(), new_mid.first()) {
        (None, Some(n)) => format!("`{}` added{}", shown(&n.words), note(n)),
        (Some(o), None) => format!("`{}` removed{}", shown(&o.words), note(o)),
        (Some(o), Some(n)) => format!(
            "`{}` → `{}`{}",
            shown(&o.words),
            shown(&n.words),
            if n.opaque_server.is_some() {
                note(n)
            } else {
                note(o)
            }
        ),
        (None, None) => "lines reordered".to_string(),
    }
}

/// The runtime operations from `old` to `new`, or why there can be none.
fn diff(old: &Config, new: &Config) -> Result<Vec<Op>, String> {
    if old == new {
        return Ok(Vec::new());
    }
    if old.conditional || new.conditional {
        return Err(
            "the configuration uses conditional blocks (.if), which are not applied at runtime"
                .to_string(),
        );
    }
    if old.preamble != new.preamble {
        return Err(format!(
            "lines before the first section changed ({})",
            describe(&old.preamble, &new.preamble)
        ));
    }
    let old_ids: Vec<String> = old.sections.iter().map(|s| s.ident()).collect();
    let new_ids: Vec<String> = new.sections.iter().map(|s| s.ident()).collect();
    if old_ids != new_ids {
        let count = |ids: &[String]| {
            let mut m: HashMap<String, usize> = HashMap::new();
            for id in ids {
                *m.entry(id.clone()).or_default() += 1;
            }
            m
        };
        let (old_count, new_count) = (count(&old_ids), count(&new_ids));
        let more = |id: &String, a: &HashMap<String, usize>, b: &HashMap<String, usize>| {
            a.get(id).copied().unwrap_or(0) > b.get(id).copied().unwrap_or(0)
        };
        if let Some(id) = new_ids.iter().find(|id| more(id, &new_count, &old_count)) {
            return Err(format!("section {id} added"));
        }
        if let Some(id) = old_ids.iter().find(|id| more(id, &old_count, &new_count)) {
            return Err(format!("section {id} removed"));
        }
        let first = old_ids
            .iter()
            .zip(&new_ids)
            .find(|(a, b)| a != b)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        return Err(format!("sections reordered (now {first} comes earlier)"));
    }
    let mut ops = Vec::new();
    for (idx, (o, n)) in old.sections.iter().zip(&new.sections).enumerate() {
        // The same section, shared by an incremental parse: nothing to compare.
        if std::sync::Arc::ptr_eq(o, n) {
            continue;
        }
        section_ops(o, n, new, idx, &mut ops)?;
    }
    ops.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(ops)
}

/// Servers by name, or the first name given twice.
fn by_name(servers: &[Server]) -> Result<BTreeMap<&str, &Server>, &str> {
    let mut map = BTreeMap::new();
    for s in servers {
        if map.insert(s.name.as_str(), s).is_some() {
            return Err(&s.name);
        }
    }
    Ok(map)
}

/// Adds the operations that turn section `o` into `n` (the `idx`-th of `config`, the new
/// configuration) to `ops`, or tells why it takes a reload.
fn section_ops(
    o: &Section,
    n: &Section,
    config: &Config,
    idx: usize,
    ops: &mut Vec<Op>,
) -> Result<(), String> {
    let ident = n.ident();
    if o.header != n.header {
        return Err(format!(
            "{ident}: section line changed (`{}` → `{}`)",
            shown(&o.header),
            shown(&n.header)
        ));
    }
    if o.directives != n.directives {
        return Err(format!(
            "{ident}: options changed ({})",
            describe(&o.directives, &n.directives)
        ));
    }
    if o.servers == n.servers {
        return Ok(());
    }
    let backend = match &n.name {
        Some(name) if is_name(name) => name.as_str(),
        _ => {
            return Err(format!(
                "{ident}: servers changed, and the runtime API cannot address this section"
            ))
        }
    };
    let old_map =
        by_name(&o.servers).map_err(|dup| format!("{ident}: server {dup} is defined twice"))?;
    let new_map =
        by_name(&n.servers).map_err(|dup| format!("{ident}: server {dup} is defined twice"))?;
    let default_server = has_default_server(config, idx);
    let mut mine = Vec::new();
    for (name, old_server) in &old_map {
        if new_map.contains_key(name) {
            continue;
        }
        if old_server.has_keyword("agent-check") {
            return Err(format!(
                "server {backend}/{name}: removed, and its agent-check must be stopped first; \
                 not done at runtime"
            ));
        }
        mine.push(Op::DelServer {
            backend: backend.to_string(),
            name: name.to_string(),
        });
    }
    for (name, server) in &new_map {
        let Some(old_server) = old_map.get(name) else {
            if default_server {
                return Err(format!(
                    "{ident}: server {name} added, and a default-server line applies, which \
                     servers added at runtime do not inherit"
                ));
            }
            scan_keywords(&server.rest).map_err(|e| format!("server {backend}/{name}: {e}"))?;
            if server.has_keyword("agent-check") {
                return Err(format!(
                    "server {backend}/{name}: added with agent-check, which may bring it up on \
                     its own; not done at runtime"
                ));
            }
            mine.push(Op::AddServer {
                backend: backend.to_string(),
                server: (*server).clone(),
            });
            continue;
        };
        if old_server.addr != server.addr {
            return Err(format!(
                "{ident}: address of server {name} changed ({} → {})",
                old_server.addr, server.addr
            ));
        }
        if old_server.port != server.port {
            return Err(format!(
                "{ident}: port of server {name} changed ({} → {})",
                old_server.port, server.port
            ));
        }
        if old_server.rest != server.rest {
            return Err(format!(
                "server {backend}/{name}: keywords changed (`{}` → `{}`)",
                shown(&old_server.rest),
                shown(&server.rest)
            ));
        }
        if old_server.weight == server.weight {
            continue;
        }
        if default_server && (old_server.weight.is_none() || server.weight.is_none()) {
            return Err(format!(
                "server {backend}/{name}: weight changed to or from the one of a default-server \
                 line"
            ));
        }
        let (before, after) = (
            old_server.weight.unwrap_or(HAPROXY_DEFAULT_WEIGHT),
            server.weight.unwrap_or(HAPROXY_DEFAULT_WEIGHT),
        );
        if before != after {
            mine.push(Op::SetWeight {
                backend: backend.to_string(),
                name: name.to_string(),
                weight: after,
            });
        }
    }
    let reordered = {
        let names = |s: &[Server]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        names(&o.servers) != names(&n.servers)
    };
    if mine.is_empty() && !reordered {
        return Ok(());
    }
    match algorithm(config, idx) {
        Algorithm::Dynamic => {}
        Algorithm::Ordered => {
            return Err(format!(
                "{ident}: balance first picks servers by their order, which servers changed at \
                 runtime do not keep"
            ))
        }
        // Only the order changed, which a static algorithm does not depend on either.
        Algorithm::Static(_) if mine.is_empty() => {}
        Algorithm::Static(why) => return Err(format!("{ident}: {why}")),
    }
    ops.extend(mine);
    Ok(())
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

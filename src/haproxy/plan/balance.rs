//! What a section takes from the `defaults` sections governing it, as far as one text shows:
//! its balance algorithm (whether HAProxy changes its servers at runtime) and whether a
//! `default-server` line applies.

use crate::haproxy::config::{Config, Directive};

/// The section at `idx` followed by the `defaults` sections it takes its settings from.
fn defaults_chain(config: &Config, idx: usize) -> Vec<usize> {
    let mut chain = Vec::new();
    let mut cur = Some(idx);
    while let Some(i) = cur {
        if chain.contains(&i) || chain.len() > config.sections.len() {
            break;
        }
        chain.push(i);
        let Some(section) = config.sections.get(i) else {
            break;
        };
        let before = config.sections.get(..i).unwrap_or_default();
        cur = match section.from() {
            Some(from) => config
                .sections
                .iter()
                .rposition(|s| s.kind == "defaults" && s.name.as_deref() == Some(from)),
            // A defaults section starts from HAProxy's own defaults.
            None if section.kind == "defaults" => None,
            None => before.iter().rposition(|s| s.kind == "defaults"),
        };
    }
    chain
}

/// The line setting `keyword` for the section at `idx`: its own last one, else its defaults'.
fn setting<'a>(config: &'a Config, idx: usize, keyword: &str) -> Option<&'a Directive> {
    defaults_chain(config, idx).into_iter().find_map(|i| {
        config.sections.get(i).and_then(|s| {
            s.directives
                .iter()
                .rev()
                .find(|d| d.keyword() == Some(keyword))
        })
    })
}

/// Whether a `default-server` line applies to the section at `idx` (as far as this text shows).
pub(super) fn has_default_server(config: &Config, idx: usize) -> bool {
    defaults_chain(config, idx).into_iter().any(|i| {
        config.sections.get(i).is_some_and(|s| {
            s.directives
                .iter()
                .any(|d| d.keyword() == Some("default-server"))
        })
    })
}

/// How a backend's balance algorithm takes server changes at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Algorithm {
    /// Servers may be added, removed and re-weighted; their order does not matter.
    Dynamic,
    /// `first`: servers are picked by their order, which servers added at runtime do not keep.
    Ordered,
    /// No server change at runtime (why); the order of the servers does not matter.
    Static(String),
}

/// The balance algorithm of the backend at `idx`, as far as this text shows.
pub(super) fn algorithm(config: &Config, idx: usize) -> Algorithm {
    let word = |kw: &str| {
        setting(config, idx, kw)
            .and_then(|d| d.words.get(1))
            .map(String::as_str)
    };
    match word("balance").unwrap_or("roundrobin") {
        "roundrobin" | "leastconn" => Algorithm::Dynamic,
        a if a == "random" || a.starts_with("random(") => Algorithm::Dynamic,
        "first" => Algorithm::Ordered,
        "static-rr" => Algorithm::Static(
            "balance static-rr is static: HAProxy cannot add, remove or re-weight its servers \
             at runtime"
                .to_string(),
        ),
        _ if word("hash-type") == Some("consistent") => Algorithm::Dynamic,
        a => Algorithm::Static(format!(
            "balance {a} is static without `hash-type consistent`: HAProxy cannot add, remove \
             or re-weight its servers at runtime"
        )),
    }
}

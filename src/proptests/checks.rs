//! What every property checks: parsing agrees with the [`oracle`] and accepts nothing unsafe,
//! and rendered output holds nothing but well-formed lines built from the catalog, with the
//! built-in template and with a template that renders every metadata field.

use super::{oracle, svc, PREFIX};
use crate::core::endpoint::{parse_value, MAX_WEIGHT};
use crate::core::keys::{parse_endpoint_key, server_name};
use crate::watcher::catalog::Catalog;
use crate::watcher::render::{Renderer, TemplateSpec};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

fn is_server_name_char(c: char) -> bool {
    matches!(c, '0'..='9' | 'a'..='f' | '.' | '_' | '-')
}

fn is_address_char(c: char) -> bool {
    matches!(c, '0'..='9' | 'a'..='f' | '.' | ':' | '[' | ']')
}

/// What every validated metadata word must avoid to be harmless in an HAProxy line.
fn is_forbidden_in_word(c: char) -> bool {
    c.is_whitespace() || c.is_control() || matches!(c, '#' | '"' | '\'' | '\\' | '{' | '}' | ';')
}

/// A key is accepted exactly when the rules accept it, as the address they name; whatever is
/// accepted is its own canonical text and has a safe server name.
pub fn check_parsed_key(key: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse_endpoint_key(&svc(), key);
    let want = oracle::key(PREFIX, key);
    prop_assert_eq!(
        parsed.as_ref().ok(),
        want.as_ref(),
        "key {:?}: parsed {:?}",
        String::from_utf8_lossy(key),
        parsed
    );
    if let Ok(addr) = parsed {
        let canonical = format!("{PREFIX}/{addr}");
        prop_assert_eq!(key, canonical.as_bytes());
        prop_assert_ne!(addr.port(), 0);
        prop_assert!(oracle::routable(addr.ip()), "unroutable {addr} accepted");
        let name = server_name(addr);
        prop_assert!(
            !name.is_empty() && name.chars().all(is_server_name_char),
            "server name {name:?} of {addr}"
        );
    }
    Ok(())
}

/// A value is accepted exactly when the rules accept it, with the metadata they give, and
/// nothing accepted holds a forbidden character.
pub fn check_value(raw: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse_value(raw);
    let want = oracle::value(raw);
    prop_assert_eq!(
        parsed.as_ref().ok(),
        want.as_ref(),
        "value {:?}: parsed {:?}",
        String::from_utf8_lossy(raw),
        parsed
    );
    if let Ok(meta) = parsed {
        prop_assert!(meta.effective_weight() <= MAX_WEIGHT, "{meta:?}");
        if let Some(w) = meta.weight {
            prop_assert!(w <= MAX_WEIGHT, "{meta:?}");
        }
        prop_assert!(meta.tags.len() <= 32, "{meta:?}");
        let words = meta
            .tags
            .iter()
            .chain(&meta.container)
            .chain(&meta.hostname);
        for w in words {
            prop_assert!(!w.is_empty(), "empty word in {meta:?}");
            prop_assert!(
                !w.chars().any(is_forbidden_in_word),
                "forbidden character in {w:?} from {:?}",
                String::from_utf8_lossy(raw)
            );
            prop_assert!(
                w.chars().all(oracle::word_char),
                "{w:?} outside the documented alphabet"
            );
        }
    }
    Ok(())
}

pub fn render(cat: &mut Catalog) -> String {
    let mut r = Renderer::new(vec![TemplateSpec {
        template: None,
        output: "x".into(),
    }])
    .unwrap();
    r.render_all(cat).remove(0).unwrap()
}

const FIXED_LINES: &[&str] = &[
    "backend service",
    "balance roundrobin",
    "option redispatch",
    "retries 2",
];

/// Every line of the default template's output is a comment, a fixed line, or exactly the
/// server line of one catalog endpoint, in catalog order.
pub fn check_rendered(out: &str, cat: &Catalog) -> Result<(), TestCaseError> {
    prop_assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "control character in output {out:?}"
    );
    let expected: Vec<String> = cat
        .endpoints(0)
        .iter()
        .map(|e| {
            format!(
                "server {} {} check weight {}",
                server_name(e.addr),
                e.addr,
                e.meta.effective_weight()
            )
        })
        .collect();
    let mut servers = Vec::new();
    for line in out.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.starts_with('#') || FIXED_LINES.contains(&line) {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        prop_assert_eq!(fields.len(), 6, "unexpected line {:?}", line);
        prop_assert_eq!(fields[0], "server", "unexpected line {:?}", line);
        prop_assert!(
            fields[1].chars().all(is_server_name_char),
            "name in {line:?}"
        );
        prop_assert!(
            fields[2].chars().all(is_address_char),
            "address in {line:?}"
        );
        prop_assert_eq!(fields[3], "check", "unexpected line {:?}", line);
        prop_assert_eq!(fields[4], "weight", "unexpected line {:?}", line);
        let w: u16 = fields[5]
            .parse()
            .map_err(|_| TestCaseError::fail(format!("weight in {line:?}")))?;
        prop_assert!(w <= MAX_WEIGHT, "weight in {line:?}");
        servers.push(line.to_string());
    }
    prop_assert_eq!(servers.len(), cat.endpoint_count());
    prop_assert_eq!(servers, expected);
    Ok(())
}

/// A template that renders every field of every endpoint, metadata included, each word as its
/// own token of the `server` line (so a word holding a space, `#` or a line break would show).
pub const METADATA_TEMPLATE: &str = "{% for name, s in services %}backend {{ name }}
{% for e in s.endpoints %}    server {{ e.name }} {{ e.address }} weight {{ e.weight }} ip {{ e.ip }} port {{ e.port }} key {{ e.key }}{% for t in e.tags %} tag {{ t }}{% endfor %}{% if e.container %} container {{ e.container }}{% endif %}{% if e.hostname %} hostname {{ e.hostname }}{% endif %}
{% endfor %}{% endfor %}";

/// Renders [`METADATA_TEMPLATE`] for `cat`.
pub fn render_metadata(cat: &mut Catalog) -> Result<String, TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let template = dir.path().join("metadata.cfg.tera");
    std::fs::write(&template, METADATA_TEMPLATE).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut r = Renderer::new(vec![TemplateSpec {
        template: Some(template),
        output: dir.path().join("out.cfg"),
    }])
    .map_err(|e| TestCaseError::fail(format!("{e:#}")))?;
    r.render_all(cat)
        .remove(0)
        .map_err(|e| TestCaseError::fail(e.0))
}

/// The metadata template's output is the backend line and, per endpoint in catalog order,
/// exactly the line its fields give; every metadata token is a word of the documented
/// alphabet. Checks that hostile metadata cannot reach the output as anything but one word.
pub fn check_rendered_metadata(out: &str, cat: &Catalog) -> Result<(), TestCaseError> {
    prop_assert!(
        !out.chars().any(|c| c.is_control() && c != '\n'),
        "control character in output {out:?}"
    );
    let p = svc();
    let mut expected = vec!["backend service".to_string()];
    for e in cat.endpoints(0) {
        let mut line = format!(
            "server {} {} weight {} ip {} port {} key {}",
            server_name(e.addr),
            e.addr,
            e.meta.effective_weight(),
            e.addr.ip(),
            e.addr.port(),
            p.endpoint_key(e.addr)
        );
        for t in &e.meta.tags {
            line.push_str(&format!(" tag {t}"));
        }
        if let Some(c) = &e.meta.container {
            line.push_str(&format!(" container {c}"));
        }
        if let Some(h) = &e.meta.hostname {
            line.push_str(&format!(" hostname {h}"));
        }
        expected.push(line);
    }
    let lines: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    prop_assert_eq!(&lines, &expected);
    for line in lines.iter().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for pair in words.get(11..).unwrap_or_default().chunks(2) {
            prop_assert!(
                matches!(pair, [kw, w] if ["tag", "container", "hostname"].contains(kw) && oracle::is_word(w)),
                "metadata tokens {pair:?} in {line:?}"
            );
        }
    }
    Ok(())
}

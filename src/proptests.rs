//! Property tests for the untrusted-input path: etcd keys ([`crate::keys`]) and values
//! ([`crate::endpoint`]) through the [`crate::catalog::Catalog`] to the rendered HAProxy
//! configuration ([`crate::render`]).
//!
//! They check that parsing never panics, that nothing accepted from etcd can carry HAProxy
//! syntax into the default template's output, that key parsing round-trips and server names
//! are injective, that rendering depends only on the final state (not on the order it was
//! reached in), and that incremental puts/deletes agree with a fresh snapshot (`replace`).
//!
//! Failure persistence is off so a failing run writes no `proptest-regressions/` file; a
//! failure prints its minimal input instead.

use crate::catalog::Catalog;
use crate::endpoint::{parse_value, MAX_WEIGHT};
use crate::keys::{parse_endpoint_key, server_name, ServicePrefix};
use crate::render::{Renderer, TemplateSpec};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::{Config, TestCaseError};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

const PREFIX: &str = "/service";

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

fn svc() -> ServicePrefix {
    ServicePrefix::parse(PREFIX).unwrap()
}

fn catalog() -> Catalog {
    Catalog::new(vec![svc()]).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------------

/// Characters that are meaningful in socket-address text, in HAProxy syntax or in logs, plus
/// look-alikes (non-ASCII digits, full-width colon, zero-width and BOM characters).
const HOSTILE_CHARS: &[char] = &[
    '0', '1', '2', '8', '9', '.', ':', '[', ']', '/', ' ', '\n', '\r', '\t', '#', '%', 'a', 'f',
    'A', 'F', 'x', 'z', '-', '_', '"', '\'', '\\', '{', '}', ';', '\0', 'é', '€', '٣', '𝟙', '：',
    '\u{200b}', '\u{feff}', '\u{85}',
];

fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![8 => select(HOSTILE_CHARS), 1 => any::<char>()]
}

fn hostile_string(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(hostile_char(), 0..max)
        .prop_map(|v| v.into_iter().collect())
        .boxed()
}

/// A v6 segment biased towards 0 and 0xffff so `::` compression and IPv4-mapped forms occur.
fn v6_segment() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(0u16), 1 => Just(0xffffu16), 3 => any::<u16>()]
}

fn routable(ip: &IpAddr) -> bool {
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_unspecified() || ip.is_multicast() || broadcast)
}

/// Any socket address `parse_endpoint_key` should accept: routable ip, port != 0, v6 without
/// scope id or flow info.
fn valid_addr() -> BoxedStrategy<SocketAddr> {
    let v4 = any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)));
    let v6 = prop::array::uniform8(v6_segment()).prop_map(|s| IpAddr::V6(Ipv6Addr::from(s)));
    let v6_any = any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)));
    let mapped = any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped()));
    let ip =
        prop_oneof![3 => v4, 3 => v6, 1 => v6_any, 1 => mapped].prop_filter("routable", routable);
    (ip, 1u16..=u16::MAX)
        .prop_map(|(ip, port)| match ip {
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
            IpAddr::V4(_) => SocketAddr::new(ip, port),
        })
        .boxed()
}

/// The canonical text of a valid address with a few single-character edits (insert, replace,
/// delete) and sometimes upper-cased: close to valid, so the late checks get exercised.
fn near_valid_addr_text() -> BoxedStrategy<String> {
    let edit = (any::<usize>(), 0u8..3, hostile_char());
    (
        valid_addr(),
        prop::collection::vec(edit, 0..3),
        any::<bool>(),
    )
        .prop_map(|(addr, edits, upper)| {
            let mut s: Vec<char> = addr.to_string().chars().collect();
            for (pos, kind, c) in edits {
                let pos = pos % (s.len() + 1);
                match kind {
                    0 => s.insert(pos, c),
                    1 if pos < s.len() => s[pos] = c,
                    _ if pos < s.len() => {
                        s.remove(pos);
                    }
                    _ => s.push(c),
                }
            }
            let s: String = s.into_iter().collect();
            if upper {
                s.to_uppercase()
            } else {
                s
            }
        })
        .boxed()
}

/// A word that `parse_value` accepts.
fn safe_word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:=/+-]{1,12}"
}

/// A word for a metadata field: safe, hostile, or any string at all.
fn any_word() -> BoxedStrategy<String> {
    prop_oneof![3 => safe_word(), 3 => hostile_string(12), 1 => any::<String>()].boxed()
}

fn json_scalar() -> BoxedStrategy<Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        (0u64..=300).prop_map(|w| json!(w)),
        any::<u64>().prop_map(|w| json!(w)),
        any::<i64>().prop_map(|w| json!(w)),
        any::<f64>().prop_map(|w| json!(w)),
        any_word().prop_map(Value::String),
    ]
    .boxed()
}

/// A well-formed JSON object with the metadata fields (each possibly missing, of the wrong
/// type or holding hostile text) and maybe an unknown field; serialized with proper escaping.
fn json_object_value() -> BoxedStrategy<String> {
    let tags = prop_oneof![
        4 => prop::collection::vec(any_word().prop_map(Value::String), 0..6).prop_map(Value::Array),
        1 => prop::collection::vec(safe_word().prop_map(Value::String), 30..36)
            .prop_map(Value::Array),
        1 => json_scalar(),
    ];
    let string_field = prop_oneof![4 => any_word().prop_map(Value::String), 1 => json_scalar()];
    (
        prop::option::of(json_scalar()),
        prop::option::of(tags),
        prop::option::of(string_field.clone()),
        prop::option::of(string_field),
        prop::option::of((any_word(), json_scalar())),
    )
        .prop_map(|(weight, tags, container, hostname, extra)| {
            let mut m = serde_json::Map::new();
            if let Some((k, v)) = extra {
                m.insert(k, v);
            }
            for (k, v) in [
                ("weight", weight),
                ("tags", tags),
                ("container", container),
                ("hostname", hostname),
            ] {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            Value::Object(m).to_string()
        })
        .boxed()
}

/// Pieces for hand-built JSON text, pasted in without escaping: raw characters and JSON
/// escapes that decode to characters a metadata word may hold...
const SAFE_JSON_FRAGMENTS: &[&str] = &[
    "a", "Z", "9", ".", "-", "_", ":", "=", "/", "+", "\\/", "\\u0041", "\\u002d", "\\u002B",
];

/// ...and ones that are raw hostile characters or escapes that decode to them.
const HOSTILE_JSON_FRAGMENTS: &[&str] = &[
    " ", "\n", "\r", "\t", "#", "\"", "'", "{", "}", ";", "é", "\\n", "\\r", "\\t", "\\u0000",
    "\\u0023", "\\u0020", "\\u000a", "\\u0085", "\\u00a0", "\\\"", "\\\\", "\\ud800", "\\u00e9",
    "\\u007b", "\\u0027", "\\u003b",
];

fn json_fragment_string() -> BoxedStrategy<String> {
    let fragment = prop_oneof![
        9 => select(SAFE_JSON_FRAGMENTS),
        1 => select(HOSTILE_JSON_FRAGMENTS),
    ];
    prop::collection::vec(fragment, 0..6)
        .prop_map(|v| v.concat())
        .boxed()
}

/// JSON-ish text built by pasting fragments into a fixed object shape: often invalid JSON,
/// sometimes valid with escapes that decode to forbidden (or allowed) characters.
fn sloppy_json_value() -> BoxedStrategy<String> {
    (
        prop_oneof![
            6 => (0u32..=300).prop_map(|w| w.to_string()),
            1 => json_fragment_string(),
            1 => select(&["1e2", "-0", "100.0", "null", "\"7\"", "0x10", "256", "257"][..])
                .prop_map(str::to_string),
        ],
        prop::collection::vec(json_fragment_string(), 0..3),
        json_fragment_string(),
        json_fragment_string(),
    )
        .prop_map(|(w, tags, c, h)| {
            let tags: Vec<String> = tags.iter().map(|t| format!("\"{t}\"")).collect();
            format!(
                "{{\"weight\":{w},\"tags\":[{}],\"container\":\"{c}\",\"hostname\":\"{h}\"}}",
                tags.join(",")
            )
        })
        .boxed()
}

/// A JSON value `parse_value` accepts.
fn valid_value() -> BoxedStrategy<Vec<u8>> {
    (
        prop::option::of(0u16..=MAX_WEIGHT),
        prop::collection::vec(safe_word(), 0..4),
        prop::option::of(safe_word()),
        prop::option::of(safe_word()),
    )
        .prop_map(|(weight, tags, container, hostname)| {
            json!({"weight": weight, "tags": tags, "container": container, "hostname": hostname})
                .to_string()
                .into_bytes()
        })
        .boxed()
}

fn any_value() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => Just(b"running".to_vec()),
        3 => valid_value(),
        2 => json_object_value().prop_map(String::into_bytes),
        1 => sloppy_json_value().prop_map(String::into_bytes),
        1 => prop::collection::vec(any::<u8>(), 0..64),
        1 => select(&[
            "running\n", "", "null", "[]", "\"running\"", "{\"weight\":257}",
            "{\"tags\":[\"a\\nbackend evil\"]}", "{\"container\":\"x y\"}",
        ][..])
        .prop_map(|s| s.as_bytes().to_vec()),
    ]
    .boxed()
}

/// A small pool of endpoint keys, so puts and deletes of the same endpoint collide.
fn pool_key() -> BoxedStrategy<Vec<u8>> {
    let ips = select(
        &[
            "10.0.0.1",
            "10.0.0.2",
            "192.168.1.1",
            "[::1]",
            "[fe80::1]",
            "[2001:db8::ff]",
            "[::ffff:10.0.0.1]",
        ][..],
    );
    let ports = select(&[80u16, 8080, 65535][..]);
    (ips, ports)
        .prop_map(|(ip, port)| format!("{PREFIX}/{ip}:{port}").into_bytes())
        .boxed()
}

const TRICKY_KEYS: &[&str] = &[
    "/service",
    "/service/",
    "/service//10.0.0.1:80",
    "/service/10.0.0.1:80/",
    "/service/../10.0.0.1:80",
    "/servicex/10.0.0.1:80",
    "/web/10.0.0.1:80",
    "service/10.0.0.1:80",
    "/service/10.0.0.1:80\nbackend evil",
    "/service/10.0.0.1:80 backup",
    "/service/10.0.0.1:080",
    "/service/010.0.0.1:80",
    "/service/[fe80::1%eth0]:80",
    "/service/[FE80::1]:80",
    "/service/[::ffff:a00:1]:80",
    "/service/10.0.0.1:80#",
    "/service/ 10.0.0.1:80",
];

fn any_key() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => pool_key(),
        2 => valid_addr().prop_map(|a| svc().endpoint_key(a).into_bytes()),
        2 => near_valid_addr_text().prop_map(|s| format!("{PREFIX}/{s}").into_bytes()),
        1 => hostile_string(24).prop_map(|s| format!("{PREFIX}/{s}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
        1 => select(TRICKY_KEYS).prop_map(|s| s.as_bytes().to_vec()),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

fn ops() -> BoxedStrategy<Vec<Op>> {
    let op = prop_oneof![
        3 => (any_key(), any_value()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => any_key().prop_map(Op::Delete),
    ];
    prop::collection::vec(op, 0..40).boxed()
}

/// Applies `ops` to `cat` and returns the final key → value map they leave in etcd.
fn apply_ops(cat: &mut Catalog, ops: &[Op]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut kv = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                cat.put(0, k, v);
                kv.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                cat.delete(0, k);
                kv.remove(k);
            }
        }
    }
    kv
}

// ---------------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------------

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

/// The documented alphabet of metadata words.
fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '=' | '/' | '+')
}

fn check_parsed_key(key: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(addr) = parse_endpoint_key(&svc(), key) {
        let canonical = format!("{PREFIX}/{addr}");
        prop_assert_eq!(key, canonical.as_bytes());
        prop_assert_ne!(addr.port(), 0);
        prop_assert!(routable(&addr.ip()), "unroutable {addr} accepted");
        let name = server_name(addr);
        prop_assert!(
            !name.is_empty() && name.chars().all(is_server_name_char),
            "server name {name:?} of {addr}"
        );
    }
    Ok(())
}

fn check_value(raw: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(meta) = parse_value(raw) {
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
                w.chars().all(is_word_char),
                "{w:?} outside the documented alphabet"
            );
        }
    }
    Ok(())
}

fn render(cat: &mut Catalog) -> String {
    let r = Renderer::new(vec![TemplateSpec {
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
fn check_rendered(out: &str, cat: &Catalog) -> Result<(), TestCaseError> {
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

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config(2000))]

    /// 1a. Arbitrary bytes after the prefix never panic; anything accepted is canonical, has a
    /// port and a safe server name.
    #[test]
    fn endpoint_key_arbitrary_bytes(rest in prop::collection::vec(any::<u8>(), 0..48)) {
        let mut key = format!("{PREFIX}/").into_bytes();
        key.extend_from_slice(&rest);
        check_parsed_key(&key)?;
    }

    /// 1b. The same for strings over a hostile alphabet and near-miss edits of valid addresses.
    #[test]
    fn endpoint_key_hostile_text(
        rest in prop_oneof![hostile_string(48), near_valid_addr_text()],
    ) {
        check_parsed_key(format!("{PREFIX}/{rest}").as_bytes())?;
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// 2a. Every routable address round-trips through its key.
    #[test]
    fn endpoint_key_round_trip(addr in valid_addr()) {
        let p = svc();
        let key = p.endpoint_key(addr);
        prop_assert_eq!(parse_endpoint_key(&p, key.as_bytes()), Ok(addr));
        check_parsed_key(key.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(config(300))]

    /// 2b. `server_name` is injective: no two different addresses share a name. The set mixes
    /// random addresses with ones that differ only in port, or only in v4 vs v4-mapped v6.
    #[test]
    fn server_name_is_injective(addrs in prop::collection::vec(valid_addr(), 1..64)) {
        let mut all = addrs.clone();
        for a in &addrs {
            all.push(SocketAddr::new(a.ip(), a.port().wrapping_add(1).max(1)));
            if let IpAddr::V4(v4) = a.ip() {
                all.push(SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()));
            }
        }
        let mut seen: HashMap<String, SocketAddr> = HashMap::new();
        for a in all {
            if let Some(prev) = seen.insert(server_name(a), a) {
                prop_assert_eq!(prev, a, "both named {}", server_name(a));
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1500))]

    /// 3a. Arbitrary bytes never panic `parse_value`; whatever it accepts is safe.
    #[test]
    fn value_arbitrary_bytes(raw in prop::collection::vec(any::<u8>(), 0..128)) {
        check_value(&raw)?;
    }

    /// 3b. The same for JSON objects with hostile metadata fields, well-formed or pasted.
    #[test]
    fn value_json_ish(text in prop_oneof![json_object_value(), sloppy_json_value()]) {
        check_value(text.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// 4. No injection: after any puts/deletes the default template renders only its own fixed
    /// lines and one well-formed server line per endpoint; and the same final state reached in
    /// another order renders the same bytes.
    #[test]
    fn render_has_no_injection_and_is_order_independent(ops in ops()) {
        let mut cat = catalog();
        apply_ops(&mut cat, &ops);
        let out = render(&mut cat);
        check_rendered(&out, &cat)?;

        let p = svc();
        let mut other = catalog();
        for e in cat.endpoints(0).iter().rev() {
            let value = json!({
                "weight": e.meta.weight,
                "tags": e.meta.tags,
                "container": e.meta.container,
                "hostname": e.meta.hostname,
            })
            .to_string();
            prop_assert!(other.put(0, p.endpoint_key(e.addr).as_bytes(), value.as_bytes()));
        }
        prop_assert_eq!(other.endpoint_count(), cat.endpoint_count());
        let out_other = render(&mut other);
        prop_assert_eq!(out, out_other);
    }

    /// 5. Incremental puts/deletes leave the same catalog (endpoints and template context) as a
    /// fresh snapshot of the key → value map they leave in etcd.
    #[test]
    fn incremental_equals_snapshot(ops in ops()) {
        let mut cat = catalog();
        let kv = apply_ops(&mut cat, &ops);
        let mut fresh = catalog();
        fresh.replace(0, kv.into_iter().collect());
        prop_assert_eq!(cat.endpoints(0), fresh.endpoints(0));
        prop_assert_eq!(cat.context_json(), fresh.context_json());
    }
}

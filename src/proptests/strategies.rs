//! Generators for the property tests: keys and values from valid to hostile, near misses of
//! valid ones, and inputs at the limits the rules set (4 KiB values, 128-character words,
//! 32 tags, IPv4-mapped and `::/96` IPv6, every character a word may not hold).

use super::{oracle, svc, PREFIX};
use crate::core::endpoint::{Metadata, MAX_WEIGHT};
use crate::watcher::catalog::Catalog;
use crate::watcher::source::Scope;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};

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

pub fn hostile_string(max: usize) -> BoxedStrategy<String> {
    prop::collection::vec(hostile_char(), 0..max)
        .prop_map(|v| v.into_iter().collect())
        .boxed()
}

/// A v6 segment biased towards 0 and 0xffff so `::` compression and IPv4-mapped forms occur.
fn v6_segment() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(0u16), 1 => Just(0xffffu16), 3 => any::<u16>()]
}

/// Any IP address: IPv4, IPv6 biased towards zero runs, any 128 bits, IPv4-mapped and
/// `::/96` (IPv4-compatible, which HAProxy prints with an embedded IPv4 part), the
/// unspecified, loopback and broadcast addresses and the edges of multicast.
pub fn any_ip() -> BoxedStrategy<IpAddr> {
    let v4 = any::<[u8; 4]>().prop_map(|o| IpAddr::V4(Ipv4Addr::from(o)));
    let v6 = prop::array::uniform8(v6_segment()).prop_map(|s| IpAddr::V6(Ipv6Addr::from(s)));
    let v6_any = any::<u128>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b)));
    let mapped = any::<[u8; 4]>().prop_map(|o| IpAddr::V6(Ipv4Addr::from(o).to_ipv6_mapped()));
    let compat = any::<u32>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(u128::from(b))));
    let special = select(
        &[
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.0",
            "239.255.255.255",
            "223.255.255.255",
            "240.0.0.0",
            "127.0.0.1",
            "::",
            "::1",
            "::ffff:0.0.0.0",
            "::ffff:255.255.255.255",
            "::ffff:224.0.0.1",
            "::ffff:127.0.0.1",
            "::0.0.0.2",
            "::ffff:0:0",
            "ff00::",
            "feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ff02::1",
            "64:ff9b::a00:1",
        ][..],
    )
    .prop_map(|s| s.parse().expect("a valid IP in the list"));
    prop_oneof![3 => v4, 3 => v6, 1 => v6_any, 2 => mapped, 2 => compat, 2 => special].boxed()
}

/// Any socket address without scope id or flow info; port 0 now and then.
pub fn any_addr() -> BoxedStrategy<SocketAddr> {
    let port =
        prop_oneof![1 => Just(0u16), 1 => Just(u16::MAX), 1 => Just(1u16), 8 => any::<u16>()];
    (any_ip(), port)
        .prop_map(|(ip, port)| match ip {
            IpAddr::V6(v6) => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
            IpAddr::V4(_) => SocketAddr::new(ip, port),
        })
        .boxed()
}

/// Any socket address the rules accept (per the [`oracle`]): routable, port != 0, and not
/// IPv4-mapped (a mapped address is only ever accepted as its IPv4 key).
pub fn valid_addr() -> BoxedStrategy<SocketAddr> {
    any_addr()
        .prop_filter("valid per the rules", |a| {
            let mapped = matches!(a.ip(), IpAddr::V6(v6) if oracle::mapped_v4(v6).is_some());
            a.port() != 0 && oracle::routable(a.ip()) && !mapped
        })
        .boxed()
}

/// The canonical text of a valid address with a few single-character edits (insert, replace,
/// delete) and sometimes upper-cased: close to valid, so the late checks get exercised.
pub fn near_valid_addr_text() -> BoxedStrategy<String> {
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
pub fn safe_word() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:=/+-]{1,12}"
}

/// A word for a metadata field: safe, hostile, or any string at all.
pub fn any_word() -> BoxedStrategy<String> {
    prop_oneof![3 => safe_word(), 3 => hostile_string(12), 1 => any::<String>()].boxed()
}

pub fn json_scalar() -> BoxedStrategy<Value> {
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
pub fn json_object_value() -> BoxedStrategy<String> {
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
pub fn sloppy_json_value() -> BoxedStrategy<String> {
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
pub fn valid_value() -> BoxedStrategy<Vec<u8>> {
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

pub fn any_value() -> BoxedStrategy<Vec<u8>> {
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
            "[::a00:1]",
            "[::10.0.0.1]",
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
    "/service/[::ffff:0.0.0.0]:80",
    "/service/[::ffff:255.255.255.255]:80",
    "/service/[::ffff:10.0.0.1]:80",
    "/service/[::10.0.0.1]:80",
    "/service/[::a00:1]:80",
    "/service/10.0.0.1:80#",
    "/service/ 10.0.0.1:80",
];

pub fn any_key() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        4 => pool_key(),
        2 => valid_addr().prop_map(|a| svc().endpoint_key(a).into_bytes()),
        2 => any_addr().prop_map(|a| format!("{PREFIX}/{a}").into_bytes()),
        2 => near_valid_addr_text().prop_map(|s| format!("{PREFIX}/{s}").into_bytes()),
        1 => hostile_string(24).prop_map(|s| format!("{PREFIX}/{s}").into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..32),
        1 => select(TRICKY_KEYS).prop_map(|s| s.as_bytes().to_vec()),
    ]
    .boxed()
}

#[derive(Debug, Clone)]
pub enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

pub fn ops() -> BoxedStrategy<Vec<Op>> {
    let op = prop_oneof![
        3 => (any_key(), any_value()).prop_map(|(k, v)| Op::Put(k, v)),
        1 => any_key().prop_map(Op::Delete),
    ];
    prop::collection::vec(op, 0..40).boxed()
}

/// Applies `ops` to `cat` and returns the final key → value map they leave in etcd.
pub fn apply_ops(cat: &mut Catalog, ops: &[Op]) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut kv = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put(k, v) => {
                cat.put(Scope::Prefix(0), k, v);
                kv.insert(k.clone(), v.clone());
            }
            Op::Delete(k) => {
                cat.delete(Scope::Prefix(0), k);
                kv.remove(k);
            }
        }
    }
    kv
}

/// A service name the rules allow, often at the length limits (1 and 64 characters).
pub fn rule_service_name() -> BoxedStrategy<String> {
    let alphabet: Vec<char> = ('\0'..='\u{7f}')
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    let len =
        prop_oneof![2 => Just(1usize), 2 => Just(64usize), 1 => Just(65usize), 6 => 1..24usize];
    len.prop_flat_map(move |n| prop::collection::vec(select(alphabet.clone()), n))
        .prop_map(|cs| cs.into_iter().collect())
        .boxed()
}

/// A word of the documented alphabet, often at the length limits (1 and 128 characters).
pub fn rule_word() -> BoxedStrategy<String> {
    let alphabet: Vec<char> = ('\0'..='\u{7f}')
        .filter(|c| oracle::word_char(*c))
        .collect();
    let len = prop_oneof![2 => Just(1usize), 2 => Just(oracle::MAX_WORD), 6 => 1..24usize];
    len.prop_flat_map(move |n| prop::collection::vec(select(alphabet.clone()), n))
        .prop_map(|cs| cs.into_iter().collect())
        .boxed()
}

/// A character a metadata word may not hold: every ASCII one outside the alphabet, and any
/// other character.
pub fn forbidden_char() -> BoxedStrategy<char> {
    let ascii: Vec<char> = ('\0'..='\u{7f}')
        .filter(|c| !oracle::word_char(*c))
        .collect();
    prop_oneof![
        3 => select(ascii),
        1 => select(HOSTILE_CHARS).prop_filter("forbidden", |c| !oracle::word_char(*c)),
        1 => any::<char>().prop_filter("forbidden", |c| !oracle::word_char(*c)),
    ]
    .boxed()
}

/// Pads a JSON object's text with an unknown field so that it is exactly `size` bytes, if it
/// is short enough for that.
fn pad_to(mut obj: serde_json::Map<String, Value>, size: usize) -> String {
    let bare = Value::Object(obj.clone()).to_string();
    // `,"~pad":""` (or `"~pad":""` in an empty object) plus the padding itself.
    let overhead = if obj.is_empty() { 9 } else { 10 };
    if bare.len() + overhead <= size {
        let pad = "p".repeat(size - bare.len() - overhead);
        obj.insert("~pad".into(), Value::String(pad));
    }
    Value::Object(obj).to_string()
}

/// A value the rules accept, built from the rules and reaching their limits (up to 32 tags,
/// 128-character words, exactly 4096 bytes, weights 0 and 256, `null` fields, unknown fields,
/// pretty-printed JSON), with the metadata it must give.
pub fn rule_value() -> BoxedStrategy<(Vec<u8>, Metadata)> {
    let weight = prop_oneof![
        2 => Just(None),
        1 => Just(Some(0u16)),
        1 => Just(Some(MAX_WEIGHT)),
        3 => (0..=MAX_WEIGHT).prop_map(Some),
    ];
    let tags = prop_oneof![
        3 => prop::collection::vec(rule_word(), 0..6),
        1 => prop::collection::vec(rule_word(), oracle::MAX_TAGS..=oracle::MAX_TAGS),
    ];
    (
        weight,
        any::<bool>(),
        tags,
        prop::option::of(rule_word()),
        prop::option::of(rule_word()),
        prop::option::of((any_word(), json_scalar())),
        0u8..4,
    )
        .prop_map(
            |(weight, null_weight, mut tags, container, hostname, extra, form)| {
                let build = |tags: &[String]| {
                    let mut m = serde_json::Map::new();
                    if let Some((k, v)) = &extra {
                        if !["weight", "tags", "container", "hostname"].contains(&k.as_str()) {
                            m.insert(k.clone(), v.clone());
                        }
                    }
                    match weight {
                        Some(w) => {
                            m.insert("weight".into(), json!(w));
                        }
                        None if null_weight => {
                            m.insert("weight".into(), Value::Null);
                        }
                        None => {}
                    }
                    m.insert("tags".into(), json!(tags));
                    m.insert("container".into(), json!(container));
                    m.insert("hostname".into(), json!(hostname));
                    m
                };
                // Drop tags until it fits the size limit.
                while Value::Object(build(&tags)).to_string().len() > oracle::MAX_VALUE {
                    tags.pop();
                }
                let obj = build(&tags);
                let text = match form {
                    0 => pad_to(obj, oracle::MAX_VALUE),
                    1 => serde_json::to_string_pretty(&Value::Object(obj)).unwrap_or_default(),
                    _ => Value::Object(obj).to_string(),
                };
                let meta = Metadata {
                    weight,
                    tags,
                    container,
                    hostname,
                };
                (text.into_bytes(), meta)
            },
        )
        .prop_filter("within the size limit", |(v, _)| {
            v.len() <= oracle::MAX_VALUE
        })
        .boxed()
}

/// Values just past a limit, or with one forbidden character in one word: 4097 bytes, a
/// 129-character word, 33 tags, weight 257.
pub fn limit_value() -> BoxedStrategy<Vec<u8>> {
    let word_with = (rule_word(), any::<usize>(), forbidden_char()).prop_map(|(w, at, c)| {
        let mut cs: Vec<char> = w.chars().collect();
        cs.insert(at % (cs.len() + 1), c);
        cs.into_iter().collect::<String>()
    });
    let field = select(&["tags", "container", "hostname"][..]);
    prop_oneof![
        (field, word_with).prop_map(|(f, w)| {
            let v = if f == "tags" { json!([w]) } else { json!(w) };
            json!({ f: v }).to_string()
        }),
        (4090usize..4100).prop_map(|n| {
            let mut m = serde_json::Map::new();
            m.insert("tags".into(), json!(["a"]));
            pad_to(m, n)
        }),
        (127usize..131).prop_map(|n| json!({"hostname": "h".repeat(n)}).to_string()),
        (31usize..35).prop_map(|n| json!({"tags": vec!["t"; n]}).to_string()),
        (254u64..260).prop_map(|w| json!({"weight": w}).to_string()),
    ]
    .prop_map(String::into_bytes)
    .boxed()
}

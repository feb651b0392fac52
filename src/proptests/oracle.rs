//! The test oracle: the README's "Key layout" rules, written again from the text and not from
//! the code under test, so that a rule the code gets wrong is caught instead of copied.
//!
//! - A key is `<prefix>/<ip>:<port>` (IPv6 as `[<addr>]:<port>`), port 1–65535, no nested path,
//!   no zone id or flow label, and exactly the canonical text: dotted decimal without leading
//!   zeros for IPv4; RFC 5952 for IPv6 (lowercase, no leading zeros, the longest run of two or
//!   more zero groups as `::`, the first one on a tie). The address must be routable: not
//!   unspecified, multicast or the IPv4 broadcast address. An IPv4-mapped IPv6 address
//!   (`::ffff:a.b.c.d`) is the IPv4 address it maps: the rules apply to that, and the key is
//!   never canonical (the canonical key is the IPv4 one).
//! - Under a root, a key is `<root>/<name>/<ip>:<port>`: the name is 1–64 characters from
//!   `[A-Za-z0-9._-]` (the rules of a `--prefix` segment), then the rest is a key of the
//!   service `<root>/<name>` as above.
//! - A value is at most 4096 bytes of UTF-8: `running`, or a JSON object whose `weight` is an
//!   integer 0–256, `tags` an array of at most 32 words, `container` and `hostname` words
//!   (each field optional; `null` weight, container or hostname means absent); unknown fields
//!   are ignored. A word is 1–128 characters from `[A-Za-z0-9._:=/+-]`.
//!
//! The oracle borrows only parsers that are not under test: the standard library's socket
//! address parser and `serde_json`'s JSON parser.

use crate::core::endpoint::Metadata;
use serde_json::Value;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const MAX_VALUE: usize = 4096;
pub const MAX_TAGS: usize = 32;
pub const MAX_WORD: usize = 128;
pub const MAX_WEIGHT: u64 = 256;

/// The characters a metadata word may hold.
pub fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "._:=/+-".contains(c)
}

/// Whether `seg` may name a service under a root.
pub fn service_name(seg: &[u8]) -> bool {
    (1..=64).contains(&seg.len())
        && seg
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

pub fn is_word(w: &str) -> bool {
    (1..=MAX_WORD).contains(&w.chars().count()) && w.chars().all(word_char)
}

/// RFC 5952 text of an IPv6 address (no embedded IPv4 form).
pub fn rfc5952(ip: Ipv6Addr) -> String {
    let groups = ip.segments();
    // The longest run of at least two zero groups; the first on a tie.
    let (mut best, mut run) = ((0usize, 0usize), (0usize, 0usize));
    for (i, g) in groups.iter().enumerate() {
        if *g == 0 {
            if run.1 == 0 {
                run.0 = i;
            }
            run.1 += 1;
            if run.1 > best.1 {
                best = run;
            }
        } else {
            run.1 = 0;
        }
    }
    let hex = |gs: &[u16]| {
        gs.iter()
            .map(|g| format!("{g:x}"))
            .collect::<Vec<_>>()
            .join(":")
    };
    if best.1 < 2 {
        return hex(&groups);
    }
    let (head, tail) = (&groups[..best.0], &groups[best.0 + best.1..]);
    format!("{}::{}", hex(head), hex(tail))
}

/// The IPv4 address an IPv4-mapped IPv6 address maps, from its bits.
pub fn mapped_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    (bits >> 32 == 0xffff).then(|| Ipv4Addr::from(bits as u32))
}

/// Routable per the rules, from the address bits.
pub fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let first = bits >> 24;
            bits != 0 && bits != u32::MAX && !(224..=239).contains(&first)
        }
        IpAddr::V6(v6) => match mapped_v4(v6) {
            Some(v4) => routable(IpAddr::V4(v4)),
            None => {
                let bits = u128::from(v6);
                bits != 0 && bits >> 120 != 0xff
            }
        },
    }
}

/// The canonical key text (below the prefix) of an address, mapped addresses as IPv4.
pub fn canonical_text(addr: SocketAddr) -> String {
    match addr.ip() {
        IpAddr::V4(v4) => format!("{v4}:{}", addr.port()),
        IpAddr::V6(v6) => match mapped_v4(v6) {
            Some(v4) => format!("{v4}:{}", addr.port()),
            None => format!("[{}]:{}", rfc5952(v6), addr.port()),
        },
    }
}

/// The endpoint a key names, or `None` if the rules refuse it.
pub fn key(prefix: &str, key: &[u8]) -> Option<SocketAddr> {
    let text = std::str::from_utf8(key).ok()?;
    let rest = text.strip_prefix(prefix)?.strip_prefix('/')?;
    let addr: SocketAddr = rest.parse().ok()?;
    if let SocketAddr::V6(v6) = addr {
        if v6.scope_id() != 0 || v6.flowinfo() != 0 {
            return None;
        }
    }
    let ok = addr.port() != 0 && routable(addr.ip()) && canonical_text(addr) == rest;
    ok.then_some(addr)
}

/// The metadata a value holds, or `None` if the rules refuse it.
pub fn value(raw: &[u8]) -> Option<Metadata> {
    if raw.len() > MAX_VALUE {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    if text == "running" {
        return Some(Metadata::default());
    }
    let Value::Object(map) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let word = |field: &str| -> Option<Option<String>> {
        match map.get(field) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) if is_word(s) => Some(Some(s.clone())),
            Some(_) => None,
        }
    };
    let weight = match map.get("weight") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_u64().filter(|w| *w <= MAX_WEIGHT)? as u16),
        Some(_) => return None,
    };
    let tags = match map.get("tags") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_TAGS => a
            .iter()
            .map(|t| match t {
                Value::String(s) if is_word(s) => Some(s.clone()),
                _ => None,
            })
            .collect::<Option<Vec<_>>>()?,
        Some(_) => return None,
    };
    Some(Metadata {
        weight,
        tags,
        container: word("container")?,
        hostname: word("hostname")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc5952_examples() {
        let t = |s: &str| rfc5952(s.parse().unwrap());
        assert_eq!(t("2001:db8:0:0:0:0:2:1"), "2001:db8::2:1");
        assert_eq!(t("2001:db8:0:1:1:1:1:1"), "2001:db8:0:1:1:1:1:1");
        assert_eq!(t("2001:0:0:1:0:0:0:1"), "2001:0:0:1::1");
        assert_eq!(t("2001:db8:0:0:1:0:0:1"), "2001:db8::1:0:0:1");
        assert_eq!(t("::"), "::");
        assert_eq!(t("::1"), "::1");
        assert_eq!(t("1::"), "1::");
        assert_eq!(t("::a00:1"), "::a00:1");
        assert_eq!(t("FE80::ABCD"), "fe80::abcd");
    }

    #[test]
    fn rules_by_example() {
        let k = |s: &str| key("/service", s.as_bytes());
        assert!(k("/service/10.0.0.1:80").is_some());
        assert!(k("/service/[::ffff:10.0.0.1]:80").is_none());
        assert!(k("/service/[::ffff:0.0.0.0]:80").is_none());
        assert!(k("/service/[::a00:1]:80").is_some());
        assert!(k("/service/[ff02::1]:80").is_none());
        assert!(k("/service/255.255.255.255:80").is_none());
        assert!(k("/service/239.1.1.1:80").is_none());
        assert!(value(b"running").is_some());
        assert!(value(br#"{"tags":null}"#).is_none());
        assert!(value(br#"{"weight":null,"container":null}"#).is_some());
        assert!(value(br#"{"weight":1e2}"#).is_none());
    }
}

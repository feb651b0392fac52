//! Property tests for the untrusted-input path: etcd keys ([`crate::core::keys`]) and values
//! ([`crate::core::endpoint`]) through the [`crate::watcher::catalog::Catalog`] to the rendered HAProxy
//! configuration ([`crate::watcher::render`]).
//!
//! They check that parsing never panics and accepts exactly what an independent [`oracle`]
//! (the README's "Key layout" rules, written again) accepts; that every valid value is
//! accepted, up to the limits; that nothing accepted from etcd can carry HAProxy syntax into
//! the output, of the default template or of one that renders every metadata field; that key
//! parsing round-trips and server names are injective; that rendering depends only on the
//! final state (not on the order it was reached in); and that incremental puts/deletes agree
//! with a fresh snapshot (`replace`). Generators are in [`strategies`], checks in [`checks`].
//!
//! Failure persistence is off so a failing run writes no `proptest-regressions/` file; a
//! failure prints its minimal input instead.

mod checks;
mod oracle;
mod strategies;

use crate::core::endpoint::parse_value;
use crate::core::keys::{parse_endpoint_key, parse_root_key, server_name, KeyError, ServicePrefix};
use crate::watcher::catalog::Catalog;
use checks::*;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::json;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use strategies::*;

pub const PREFIX: &str = "/service";

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

pub fn svc() -> ServicePrefix {
    ServicePrefix::parse(PREFIX).unwrap()
}

pub fn catalog() -> Catalog {
    Catalog::new(vec![svc()]).unwrap()
}

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

    /// 1c. The text of any address (IPv4, IPv6, IPv4-mapped, `::/96`, unroutable, port 0), as
    /// `Display` writes it, is accepted exactly when the rules accept it.
    #[test]
    fn endpoint_key_any_address(addr in any_addr()) {
        check_parsed_key(format!("{PREFIX}/{addr}").as_bytes())?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// 1d. An IPv4-mapped key is refused whatever it maps: for the rules' reason when its IPv4
    /// address is refused, otherwise as not canonical, naming the IPv4 key.
    #[test]
    fn mapped_keys_are_refused_naming_the_ipv4_key(octets in any::<[u8; 4]>(), port in 1u16..) {
        let v4 = std::net::Ipv4Addr::from(octets);
        let mapped = SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), port);
        let key = format!("{PREFIX}/{mapped}");
        let got = parse_endpoint_key(&svc(), key.as_bytes());
        if oracle::routable(IpAddr::V4(v4)) {
            prop_assert_eq!(got, Err(KeyError::NotCanonical(format!("{v4}:{port}"))));
        } else {
            prop_assert_eq!(got, Err(KeyError::Unroutable(IpAddr::V4(v4))));
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// 1e. Under a root, any bytes as the service name: a key is taken exactly when the name
    /// follows the rules, and then only as that service; the rendered output holds nothing else
    /// of the name, and no control character.
    #[test]
    fn root_child_names(
        name in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..80),
            hostile_string(80).prop_map(String::into_bytes),
            rule_service_name().prop_map(String::into_bytes),
        ],
        addr in valid_addr(),
    ) {
        let root = ServicePrefix::parse("/services").unwrap();
        let mut key = b"/services/".to_vec();
        key.extend_from_slice(&name);
        key.push(b'/');
        key.extend_from_slice(oracle::canonical_text(addr).as_bytes());
        let parsed = parse_root_key(&root, &key);
        prop_assert_eq!(parsed.is_ok(), oracle::service_name(&name), "{:?}", parsed);
        let mut cat = Catalog::with_roots(&[], &["/services"]).unwrap();
        let taken = cat.put(crate::watcher::source::Scope::Root(0), &key, b"running");
        prop_assert_eq!(taken, oracle::service_name(&name));
        let out = render(&mut cat);
        prop_assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{:?}", out);
        let backends: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("backend "))
            .collect();
        if taken {
            prop_assert_eq!(backends, [std::str::from_utf8(&name).unwrap()]);
        } else {
            prop_assert!(backends.is_empty(), "{:?}", out);
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// 2a. Every valid address round-trips through its key, and the key is the rules'
    /// canonical text.
    #[test]
    fn endpoint_key_round_trip(addr in valid_addr()) {
        let p = svc();
        let key = p.endpoint_key(addr);
        prop_assert_eq!(&key, &format!("{PREFIX}/{}", oracle::canonical_text(addr)));
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

    /// 3c. The same just past each limit, and for words holding one forbidden character.
    #[test]
    fn value_at_the_limits(raw in limit_value()) {
        check_value(&raw)?;
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// 3d. Every value the rules allow is accepted, with exactly its metadata: up to 32 tags,
    /// 128-character words, 4096 bytes, weights 0 to 256, `null` and unknown fields.
    #[test]
    fn every_valid_value_is_accepted((raw, meta) in rule_value()) {
        prop_assert_eq!(parse_value(&raw), Ok(meta));
        check_value(&raw)?;
    }

    /// 3e. A word with any character outside the alphabet is refused, in every field.
    #[test]
    fn every_forbidden_character_is_refused(c in forbidden_char(), word in rule_word()) {
        let bad: String = format!("{word}{c}");
        for value in [
            json!({"tags": [bad]}),
            json!({"container": bad}),
            json!({"hostname": bad}),
        ] {
            let raw = value.to_string();
            prop_assert!(parse_value(raw.as_bytes()).is_err(), "{raw:?} accepted");
            check_value(raw.as_bytes())?;
        }
    }
}

proptest! {
    #![proptest_config(config(200))]

    /// 4. No injection: after any puts/deletes the default template renders only its own fixed
    /// lines and one well-formed server line per endpoint, a template rendering every metadata
    /// field renders each word as one safe token; and the same final state reached in another
    /// order renders the same bytes.
    #[test]
    fn render_has_no_injection_and_is_order_independent(ops in ops()) {
        let mut cat = catalog();
        apply_ops(&mut cat, &ops);
        let out = render(&mut cat);
        check_rendered(&out, &cat)?;
        let with_metadata = render_metadata(&mut cat)?;
        check_rendered_metadata(&with_metadata, &cat)?;

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
            prop_assert!(other.put(crate::watcher::source::Scope::Prefix(0), p.endpoint_key(e.addr).as_bytes(), value.as_bytes()));
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
        fresh.replace(crate::watcher::source::Scope::Prefix(0), kv.into_iter().collect());
        prop_assert_eq!(cat.endpoints(0), fresh.endpoints(0));
        prop_assert_eq!(cat.context_json(), fresh.context_json());
    }
}

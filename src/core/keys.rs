//! The etcd key layout shared by the sidekick and the watcher.
//!
//! A service is a key prefix such as `/service`; each live backend of it is one key
//! `<prefix>/<ip>:<port>` (IPv6 as `<prefix>/[<addr>]:<port>`), written by a sidekick under a
//! lease. Keys come from the network and are untrusted: [`parse_endpoint_key`] accepts only the
//! canonical text of a routable socket address, so nothing from a key can reach HAProxy's
//! configuration except digits, dots, colons and hex digits.
//!
//! A root (`dockreg-haproxy --root /services`) holds many services, one per child:
//! `<root>/<name>/<ip>:<port>`. The name comes from the key, so [`parse_root_key`] holds it to
//! the rules of a `--prefix` segment before anything else is read from the key.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// The default service prefix (`--key service` in the original sidekick).
pub const DEFAULT_PREFIX: &str = "/service";

/// Why a key under a prefix is not an endpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not valid UTF-8")]
    NotUtf8,
    #[error("not under the prefix")]
    OutsidePrefix,
    #[error("nested path below the service prefix")]
    Nested,
    #[error("not an ip:port (IPv6 as [addr]:port)")]
    NotSocketAddr,
    #[error("port 0 is not a valid endpoint port")]
    PortZero,
    #[error("address {0} cannot be routed to (unspecified, multicast or broadcast)")]
    Unroutable(IpAddr),
    #[error("IPv6 zone or flow information is not supported")]
    Ipv6Scope,
    #[error("not in canonical form, expected \"{0}\"")]
    NotCanonical(String),
    #[error("not <root>/<service>/<ip>:<port>: no service name segment")]
    NoServiceName,
    #[error("invalid service name segment: {0}")]
    ServiceName(&'static str),
}

/// Why a `--prefix` (or `--key`) value is not a usable service prefix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service prefix \"{prefix}\": {reason}")]
pub struct PrefixError {
    pub prefix: String,
    pub reason: &'static str,
}

/// The longest service name (a prefix's last segment, a root's child).
pub const MAX_SERVICE_NAME: usize = 64;

/// Why `segment` cannot be one segment of a prefix (and, being the last, a service name), or
/// `None` when it can: ASCII letters, digits, `-`, `_` and `.`, 1 to [`MAX_SERVICE_NAME`]
/// characters.
pub fn service_name_error(segment: &str) -> Option<&'static str> {
    if segment.is_empty() {
        return Some("is empty");
    }
    if segment.len() > MAX_SERVICE_NAME {
        return Some("is longer than 64 characters");
    }
    if !segment
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("may hold only ASCII letters, digits, '-', '_' and '.'");
    }
    None
}

/// A validated service prefix, e.g. `/service` or `/prod/web`, and the service name derived
/// from its last path segment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePrefix {
    prefix: String,
    name: String,
}

impl ServicePrefix {
    /// Parses a prefix. A missing leading `/` is added (so `--key web` means `/web`) and a
    /// trailing `/` is dropped. Every segment may hold only ASCII letters, digits, `-`, `_` and
    /// `.`, so the prefix and the service name (its last segment, at most 64 characters) are
    /// valid HAProxy names and safe in any template.
    pub fn parse(raw: &str) -> Result<Self, PrefixError> {
        let err = |reason| PrefixError {
            prefix: raw.to_string(),
            reason,
        };
        let trimmed = raw.trim_end_matches('/');
        let prefix = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        if prefix.len() <= 1 {
            return Err(err("is empty"));
        }
        if prefix.split('/').skip(1).any(str::is_empty) {
            return Err(err("contains an empty path segment"));
        }
        let name = prefix.rsplit('/').next().unwrap_or_default().to_string();
        if name.len() > MAX_SERVICE_NAME {
            return Err(err(
                "the service name (last segment) is longer than 64 characters",
            ));
        }
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'))
        {
            return Err(err(
                "path segments may hold only ASCII letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self { prefix, name })
    }

    /// The prefix without a trailing slash, e.g. `/service`.
    pub fn as_str(&self) -> &str {
        &self.prefix
    }

    /// The service (and HAProxy backend) name, e.g. `service`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The etcd range to list and watch: every key that starts with `<prefix>/`.
    pub fn watch_key(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// The prefix of child `name` (a service under a root), if `name` is a valid service
    /// name ([`service_name_error`]).
    pub fn child(&self, name: &str) -> Result<ServicePrefix, KeyError> {
        if let Some(reason) = service_name_error(name) {
            return Err(KeyError::ServiceName(reason));
        }
        Ok(Self {
            prefix: format!("{}/{name}", self.prefix),
            name: name.to_string(),
        })
    }

    /// Whether the keys this prefix watches and those `other` watches overlap: one's range
    /// holds the other's (or they are the same).
    pub fn overlaps(&self, other: &ServicePrefix) -> bool {
        let (a, b) = (self.watch_key(), other.watch_key());
        a.starts_with(&b) || b.starts_with(&a)
    }

    /// The key an endpoint is registered under, always in canonical form: an IPv4-mapped
    /// IPv6 address (`::ffff:10.0.0.1`) is written as the IPv4 address it maps.
    pub fn endpoint_key(&self, addr: SocketAddr) -> String {
        format!("{}/{}", self.prefix, canonical(addr))
    }
}

impl fmt::Display for ServicePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)
    }
}

/// The canonical form of an endpoint address: an IPv4-mapped IPv6 address
/// (`[::ffff:10.0.0.1]:80`) becomes the IPv4 address it maps (`10.0.0.1:80`), because both
/// reach the same socket; every other address is returned as it is.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Parses the part of `key` below `prefix` as an endpoint address.
///
/// Accepts exactly the canonical `Display` text of a [`canonical`] [`SocketAddr`] (so
/// `10.0.0.1:80` and `[fe80::1]:80`, not `010.0.0.1:80`, `[FE80::1]:80` or
/// `[::ffff:10.0.0.1]:80`): two keys can never name the same endpoint, and the text that
/// reaches the output is always the canonical one. The address rules are applied to the
/// canonical form, so `[::ffff:0.0.0.0]:80` is refused as unroutable like `0.0.0.0:80`.
pub fn parse_endpoint_key(prefix: &ServicePrefix, key: &[u8]) -> Result<SocketAddr, KeyError> {
    let key = std::str::from_utf8(key).map_err(|_| KeyError::NotUtf8)?;
    let rest = key
        .strip_prefix(prefix.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(KeyError::OutsidePrefix)?;
    if rest.contains('/') {
        return Err(KeyError::Nested);
    }
    let parsed: SocketAddr = rest.parse().map_err(|_| KeyError::NotSocketAddr)?;
    if let SocketAddr::V6(v6) = parsed {
        if v6.scope_id() != 0 || v6.flowinfo() != 0 {
            return Err(KeyError::Ipv6Scope);
        }
    }
    let addr = canonical(parsed);
    if addr.port() == 0 {
        return Err(KeyError::PortZero);
    }
    let ip = addr.ip();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    if ip.is_unspecified() || ip.is_multicast() || broadcast {
        return Err(KeyError::Unroutable(ip));
    }
    let text = addr.to_string();
    if text != rest {
        return Err(KeyError::NotCanonical(text));
    }
    Ok(addr)
}

/// Parses a key under a root: `<root>/<name>/<ip>:<port>` is endpoint `<ip>:<port>` of the
/// service `<name>`, whose prefix is `<root>/<name>`.
///
/// The name segment is untrusted like the rest of the key and is checked first, against the
/// rules of a `--prefix` segment ([`service_name_error`]): a key whose name is empty, too long
/// or holds anything but ASCII letters, digits, `-`, `_` and `.` is refused whatever follows.
/// The rest follows [`parse_endpoint_key`] (so a key nested deeper is refused too).
pub fn parse_root_key(
    root: &ServicePrefix,
    key: &[u8],
) -> Result<(ServicePrefix, SocketAddr), KeyError> {
    let text = std::str::from_utf8(key).map_err(|_| KeyError::NotUtf8)?;
    let rest = text
        .strip_prefix(root.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .ok_or(KeyError::OutsidePrefix)?;
    let (name, _) = rest.split_once('/').ok_or(KeyError::NoServiceName)?;
    let service = root.child(name)?;
    let addr = parse_endpoint_key(&service, key)?;
    Ok((service, addr))
}

/// The stable HAProxy server name of an endpoint, derived from its address alone:
/// `10.0.0.1:8080` → `10.0.0.1_8080`, `[fe80::1]:8080` → `fe80--1_8080`.
///
/// The mapping is injective on canonical addresses (IPv6 text never holds `-`; an IPv4-mapped
/// address, which would name the same server as its IPv4 address, is never canonical), so a
/// changed endpoint never inherits another endpoint's server state across a reload.
pub fn server_name(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    };
    format!("{ip}_{}", addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> ServicePrefix {
        ServicePrefix::parse("/service").unwrap()
    }

    #[test]
    fn prefix_forms() {
        assert_eq!(
            ServicePrefix::parse("service").unwrap().as_str(),
            "/service"
        );
        assert_eq!(ServicePrefix::parse("/a/b/web/").unwrap().name(), "web");
        assert_eq!(svc().watch_key(), "/service/");
        assert!(ServicePrefix::parse("/").is_err());
        assert!(ServicePrefix::parse("").is_err());
        assert!(ServicePrefix::parse("/a//b").is_err());
        assert!(ServicePrefix::parse("/my service").is_err());
        assert!(ServicePrefix::parse("/x\nbackend evil").is_err());
    }

    #[test]
    fn accepts_canonical_endpoints() {
        let p = svc();
        assert_eq!(
            parse_endpoint_key(&p, b"/service/10.0.0.1:8080").unwrap(),
            "10.0.0.1:8080".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint_key(&p, b"/service/[fe80::1]:80").unwrap(),
            "[fe80::1]:80".parse().unwrap()
        );
    }

    #[test]
    fn rejects_bad_keys() {
        let p = svc();
        let cases: &[(&[u8], KeyError)] = &[
            (b"/service/10.0.0.1", KeyError::NotSocketAddr),
            (b"/service/10.0.0.1:0", KeyError::PortZero),
            (b"/service/10.0.0.1:65536", KeyError::NotSocketAddr),
            (b"/service/a/10.0.0.1:80", KeyError::Nested),
            (b"/service/\xff", KeyError::NotUtf8),
            (b"/servicex/10.0.0.1:80", KeyError::OutsidePrefix),
            (b"/service/host.example:80", KeyError::NotSocketAddr),
            (b"/service/10.0.0.1:80 backup", KeyError::NotSocketAddr),
            (b"/service/10.0.0.1:80\n", KeyError::NotSocketAddr),
            (b"/service/fe80::1:80", KeyError::NotSocketAddr),
            (
                b"/service/0.0.0.0:80",
                KeyError::Unroutable("0.0.0.0".parse().unwrap()),
            ),
            (
                b"/service/[::]:80",
                KeyError::Unroutable("::".parse().unwrap()),
            ),
            (
                b"/service/[FE80::1]:80",
                KeyError::NotCanonical("[fe80::1]:80".into()),
            ),
            (b"/service/[fe80::1%2]:80", KeyError::Ipv6Scope),
            // IPv4-mapped: the rules apply to the IPv4 address, and the key is not canonical.
            (
                b"/service/[::ffff:0.0.0.0]:80",
                KeyError::Unroutable("0.0.0.0".parse().unwrap()),
            ),
            (
                b"/service/[::ffff:255.255.255.255]:80",
                KeyError::Unroutable("255.255.255.255".parse().unwrap()),
            ),
            (
                b"/service/[::ffff:224.0.0.1]:80",
                KeyError::Unroutable("224.0.0.1".parse().unwrap()),
            ),
            (b"/service/[::ffff:10.0.0.1]:0", KeyError::PortZero),
            (
                b"/service/[::ffff:10.0.0.1]:80",
                KeyError::NotCanonical("10.0.0.1:80".into()),
            ),
            (
                b"/service/[::ffff:a00:1]:80",
                KeyError::NotCanonical("10.0.0.1:80".into()),
            ),
            (
                b"/service/[::FFFF:10.0.0.1]:80",
                KeyError::NotCanonical("10.0.0.1:80".into()),
            ),
        ];
        for (key, want) in cases {
            assert_eq!(
                parse_endpoint_key(&p, key).as_ref(),
                Err(want),
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn ipv4_compatible_addresses_keep_their_ipv6_form() {
        // `::/96` is not IPv4-mapped: `[::a00:1]:80` is its own IPv6 endpoint (HAProxy prints
        // it `::10.0.0.1`; the runtime path compares parsed addresses).
        let p = svc();
        let addr: SocketAddr = "[::a00:1]:80".parse().unwrap();
        assert_eq!(parse_endpoint_key(&p, b"/service/[::a00:1]:80"), Ok(addr));
        assert_eq!(
            parse_endpoint_key(&p, b"/service/[::10.0.0.1]:80"),
            Err(KeyError::NotCanonical("[::a00:1]:80".into()))
        );
        assert_eq!(
            parse_endpoint_key(&p, b"/service/[::1]:80").map(|a| a.is_ipv6()),
            Ok(true)
        );
    }

    #[test]
    fn endpoint_keys_are_canonical() {
        let p = svc();
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:80".parse().unwrap();
        assert_eq!(p.endpoint_key(mapped), "/service/10.0.0.1:80");
        assert_eq!(
            parse_endpoint_key(&p, p.endpoint_key(mapped).as_bytes()),
            Ok("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(
            p.endpoint_key("[2001:db8::1]:80".parse().unwrap()),
            "/service/[2001:db8::1]:80"
        );
    }

    #[test]
    fn root_keys_name_their_service_by_a_checked_segment() {
        let root = ServicePrefix::parse("/services").unwrap();
        let (svc, addr) = parse_root_key(&root, b"/services/web-1.a_b/10.0.0.1:80").unwrap();
        assert_eq!(
            (svc.as_str(), svc.name()),
            ("/services/web-1.a_b", "web-1.a_b")
        );
        assert_eq!(addr, "10.0.0.1:80".parse().unwrap());
        let long = format!("/services/{}/10.0.0.1:80", "a".repeat(10 * 1024));
        let max = format!("/services/{}/10.0.0.1:80", "a".repeat(64));
        assert!(parse_root_key(&root, max.as_bytes()).is_ok());
        let name = |r| KeyError::ServiceName(r);
        let chars = name("may hold only ASCII letters, digits, '-', '_' and '.'");
        let cases: &[(&[u8], KeyError)] = &[
            (b"/services/bad name/1.2.3.4:80", chars.clone()),
            (b"/services/x#y/1.2.3.4:80", chars.clone()),
            (b"/services/x\nbackend evil/1.2.3.4:80", chars.clone()),
            (b"/services/x\xff/1.2.3.4:80", KeyError::NotUtf8),
            (long.as_bytes(), name("is longer than 64 characters")),
            (b"/services//1.2.3.4:80", name("is empty")),
            (b"/services/1.2.3.4:80", KeyError::NoServiceName),
            (b"/services/web", KeyError::NoServiceName),
            (b"/services/web/a/1.2.3.4:80", KeyError::Nested),
            (b"/services/web/1.2.3.4:80/x", KeyError::Nested),
            (b"/services/web/", KeyError::NotSocketAddr),
            (
                b"/services/web/0.0.0.0:80",
                KeyError::Unroutable("0.0.0.0".parse().unwrap()),
            ),
            (b"/servicesx/web/1.2.3.4:80", KeyError::OutsidePrefix),
        ];
        for (key, want) in cases {
            assert_eq!(
                parse_root_key(&root, key)
                    .map(|(s, a)| (s.as_str().to_string(), a))
                    .as_ref(),
                Err(want),
                "key {:?}",
                String::from_utf8_lossy(key)
            );
        }
    }

    #[test]
    fn overlapping_prefixes() {
        let p = |s| ServicePrefix::parse(s).unwrap();
        assert!(p("/a").overlaps(&p("/a")));
        assert!(p("/a").overlaps(&p("/a/b")));
        assert!(p("/a/b").overlaps(&p("/a")));
        assert!(!p("/a").overlaps(&p("/ab")));
        assert!(!p("/a/b").overlaps(&p("/a/c")));
    }

    #[test]
    fn server_names_are_stable_and_safe() {
        assert_eq!(
            server_name("10.0.0.1:8080".parse().unwrap()),
            "10.0.0.1_8080"
        );
        assert_eq!(server_name("[fe80::1]:80".parse().unwrap()), "fe80--1_80");
    }
}

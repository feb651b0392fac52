//! Binding selection: which of Docker's port bindings of `<port>/tcp` to register, by a
//! fixed, documented rule (see [`select_binding`]). Pure: it reads the `NetworkSettings.Ports`
//! map of an inspect answer and talks to nothing.

use super::DockerError;
use bollard::models::PortBinding;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A binding's host address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum HostAddr {
    /// A specific address such as `192.168.1.10`.
    Specific(IpAddr),
    /// `0.0.0.0` or `::`: every address of that family.
    Wildcard(IpAddr),
    /// `HostIp` empty or absent: every address.
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Binding {
    host: HostAddr,
    port: u16,
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host {
            HostAddr::Specific(ip) | HostAddr::Wildcard(ip) => {
                write!(f, "{}", SocketAddr::new(ip, self.port))
            }
            HostAddr::Any => write!(f, "*:{}", self.port),
        }
    }
}

/// The usable bindings of one port, deduplicated and sorted.
fn parse_bindings(list: &[PortBinding]) -> BTreeSet<Binding> {
    list.iter()
        .filter_map(|b| {
            let port = b
                .host_port
                .as_deref()
                .and_then(|p| p.trim().parse::<u16>().ok())
                .filter(|&p| p != 0)?;
            let host = match b.host_ip.as_deref().map(str::trim) {
                None | Some("") => HostAddr::Any,
                Some(text) => {
                    let text = text.strip_prefix('[').unwrap_or(text);
                    let text = text.strip_suffix(']').unwrap_or(text);
                    let ip: IpAddr = text.parse().ok()?;
                    if ip.is_unspecified() {
                        HostAddr::Wildcard(ip)
                    } else {
                        HostAddr::Specific(ip)
                    }
                }
            };
            Some(Binding { host, port })
        })
        .collect()
}

fn list(bindings: &BTreeSet<Binding>) -> String {
    let texts: Vec<String> = bindings.iter().map(Binding::to_string).collect();
    texts.join(" and ")
}

/// Picks the binding of `<port>/tcp` to register from inspect's `NetworkSettings.Ports`.
///
/// The rule:
///
/// - Every binding of `<port>/tcp` is read: IPv4 and IPv6 bindings can carry different host
///   ports, and Docker may list a binding twice (duplicates count once). `HostIp` `""` (or
///   absent) means all addresses, as do `0.0.0.0` (all IPv4) and `::` (all IPv6); a binding
///   whose `HostPort` is missing, unparsable or `0`, or whose `HostIp` is not an address, is
///   skipped.
/// - With `--ip` given, the port registered is that of, in order of preference: a binding on
///   exactly that address; a wildcard of the same family (`0.0.0.0` for an IPv4 `--ip`, `::`
///   for IPv6); a binding with an empty `HostIp`; a wildcard of the other family. Ties go to
///   the lowest host port. The key is `<--ip>:<that port>`. If the port is published only on
///   other specific addresses, that is an error naming them.
/// - Without `--ip`, only bindings on a specific address count: IPv4 before IPv6, then the
///   lowest host port (then the lowest address); the key is that `<HostIp>:<HostPort>`. If the
///   port is published only on wildcard addresses (`-p 8000` publishes `0.0.0.0` and `::`), the
///   host address is unknown: an error asks for `--ip` (or `-e IP=<host address>`).
/// - No binding at all (`Ports` lacking the key, or holding null or an empty list): the port is
///   not published, an error asks to run the container with `-p <port>`.
///
/// An `ip` that no other host can reach (unspecified, multicast, broadcast) is refused.
pub(crate) fn select_binding(
    ports: &HashMap<String, Option<Vec<PortBinding>>>,
    port: u16,
    ip: Option<IpAddr>,
) -> Result<SocketAddr, DockerError> {
    if let Some(ip) = ip {
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_unspecified() || ip.is_multicast() || broadcast {
            return Err(DockerError::UnroutableIp { ip });
        }
    }
    let bindings = ports
        .get(&format!("{port}/tcp"))
        .and_then(Option::as_deref)
        .map(parse_bindings)
        .unwrap_or_default();
    if bindings.is_empty() {
        return Err(DockerError::PortNotPublished { port });
    }

    match ip {
        Some(ip) => {
            let preference = |host: HostAddr| match host {
                HostAddr::Specific(addr) if addr == ip => Some(0u8),
                HostAddr::Specific(_) => None,
                HostAddr::Wildcard(w) if w.is_ipv4() == ip.is_ipv4() => Some(1),
                HostAddr::Any => Some(2),
                HostAddr::Wildcard(_) => Some(3),
            };
            bindings
                .iter()
                .filter_map(|b| preference(b.host).map(|rank| (rank, b.port)))
                .min()
                .map(|(_, host_port)| SocketAddr::new(ip, host_port))
                .ok_or_else(|| DockerError::IpNotBound {
                    port,
                    ip,
                    bindings: list(&bindings),
                })
        }
        None => bindings
            .iter()
            .filter_map(|b| match b.host {
                HostAddr::Specific(addr) => Some((addr.is_ipv6(), b.port, addr)),
                HostAddr::Wildcard(_) | HostAddr::Any => None,
            })
            .min()
            .map(|(_, host_port, addr)| SocketAddr::new(addr, host_port))
            .ok_or_else(|| DockerError::WildcardOnly {
                port,
                bindings: list(&bindings),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- select_binding --------------------------------------------------------------------

    fn pb(ip: &str, port: &str) -> PortBinding {
        PortBinding {
            host_ip: Some(ip.to_string()),
            host_port: Some(port.to_string()),
        }
    }

    fn ports(port: &str, bindings: Vec<PortBinding>) -> HashMap<String, Option<Vec<PortBinding>>> {
        HashMap::from([(port.to_string(), Some(bindings))])
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn specific_v4_and_v6_with_different_ports() {
        let p = ports(
            "8000/tcp",
            vec![pb("2001:db8::10", "32769"), pb("192.168.1.10", "32770")],
        );
        // Without --ip: IPv4 before IPv6, even with a higher port.
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("192.168.1.10:32770")
        );
        // --ip picks the binding on that address, with its own port.
        assert_eq!(
            select_binding(&p, 8000, Some(ip("2001:db8::10"))).unwrap(),
            sa("[2001:db8::10]:32769")
        );
        assert_eq!(
            select_binding(&p, 8000, Some(ip("192.168.1.10"))).unwrap(),
            sa("192.168.1.10:32770")
        );
    }

    #[test]
    fn wildcards_v4_and_v6_with_different_ports_follow_the_ip_family() {
        let p = ports("8000/tcp", vec![pb("::", "32769"), pb("0.0.0.0", "32770")]);
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.5"))).unwrap(),
            sa("10.0.0.5:32770")
        );
        assert_eq!(
            select_binding(&p, 8000, Some(ip("2001:db8::5"))).unwrap(),
            sa("[2001:db8::5]:32769")
        );
        // Only the other family's wildcard: still used.
        let v6_only = ports("8000/tcp", vec![pb("::", "32769")]);
        assert_eq!(
            select_binding(&v6_only, 8000, Some(ip("10.0.0.5"))).unwrap(),
            sa("10.0.0.5:32769")
        );
    }

    #[test]
    fn ip_override_preference_order() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("", "30001"),
                pb("0.0.0.0", "30002"),
                pb("10.0.0.5", "30003"),
                pb("::", "30000"),
            ],
        );
        // Exact address first, whatever the port.
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.5"))).unwrap(),
            sa("10.0.0.5:30003")
        );
        // Another v4 address: the v4 wildcard beats "" and the v6 wildcard.
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap(),
            sa("10.0.0.6:30002")
        );
        // "" beats the other family's wildcard.
        let p = ports("8000/tcp", vec![pb("::", "30000"), pb("", "30001")]);
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap(),
            sa("10.0.0.6:30001")
        );
        // Ties: the lowest port.
        let p = ports(
            "8000/tcp",
            vec![pb("0.0.0.0", "30009"), pb("0.0.0.0", "30004")],
        );
        assert_eq!(
            select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap(),
            sa("10.0.0.6:30004")
        );
    }

    #[test]
    fn ip_override_not_among_specific_bindings() {
        let p = ports("8000/tcp", vec![pb("10.0.0.5", "30003")]);
        let err = select_binding(&p, 8000, Some(ip("10.0.0.6"))).unwrap_err();
        assert!(matches!(err, DockerError::IpNotBound { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("10.0.0.5:30003") && text.contains("--ip 10.0.0.6"),
            "{text}"
        );
    }

    #[test]
    fn unroutable_ip_is_refused() {
        let p = ports("8000/tcp", vec![pb("0.0.0.0", "30002")]);
        for bad in ["0.0.0.0", "::", "255.255.255.255", "224.0.0.1"] {
            let err = select_binding(&p, 8000, Some(ip(bad))).unwrap_err();
            assert!(
                matches!(err, DockerError::UnroutableIp { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn duplicates_count_once() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("192.168.1.10", "32768"),
                pb("192.168.1.10", "32768"),
                pb("0.0.0.0", "32768"),
                pb("0.0.0.0", "32768"),
            ],
        );
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("192.168.1.10:32768")
        );
        let wild = ports(
            "8000/tcp",
            vec![pb("0.0.0.0", "32768"), pb("0.0.0.0", "32768")],
        );
        let text = select_binding(&wild, 8000, None).unwrap_err().to_string();
        assert_eq!(text.matches("0.0.0.0:32768").count(), 1, "{text}");
    }

    #[test]
    fn without_ip_lowest_port_then_lowest_address() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("192.168.1.11", "32768"),
                pb("192.168.1.10", "32769"),
                pb("192.168.1.9", "32768"),
            ],
        );
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("192.168.1.9:32768")
        );
    }

    #[test]
    fn only_wildcards_without_ip_asks_for_ip() {
        // What `docker run -p 8000` gives on Docker 20.10.
        let p = ports("8000/tcp", vec![pb("0.0.0.0", "32768"), pb("::", "32768")]);
        let err = select_binding(&p, 8000, None).unwrap_err();
        assert!(matches!(err, DockerError::WildcardOnly { port: 8000, .. }));
        let text = err.to_string();
        for part in [
            "8000/tcp",
            "0.0.0.0:32768",
            "[::]:32768",
            "pass --ip",
            "-e IP=",
        ] {
            assert!(text.contains(part), "{part} missing in: {text}");
        }
    }

    #[test]
    fn empty_host_ip_means_all_addresses() {
        let mut no_ip = pb("", "32768");
        no_ip.host_ip = None;
        for binding in [pb("", "32768"), no_ip] {
            let p = ports("8000/tcp", vec![binding]);
            let err = select_binding(&p, 8000, None).unwrap_err();
            assert!(err.to_string().contains("*:32768"), "{err}");
            assert_eq!(
                select_binding(&p, 8000, Some(ip("10.0.0.5"))).unwrap(),
                sa("10.0.0.5:32768")
            );
            assert_eq!(
                select_binding(&p, 8000, Some(ip("2001:db8::5"))).unwrap(),
                sa("[2001:db8::5]:32768")
            );
        }
    }

    #[test]
    fn not_published() {
        let cases = [
            HashMap::new(),
            HashMap::from([("8000/tcp".to_string(), None)]),
            ports("8000/tcp", vec![]),
            // Another port, or the same port over UDP.
            ports("8001/tcp", vec![pb("10.0.0.5", "32768")]),
            ports("8000/udp", vec![pb("10.0.0.5", "32768")]),
            // Only unusable bindings.
            ports(
                "8000/tcp",
                vec![
                    pb("10.0.0.5", "0"),
                    pb("10.0.0.5", ""),
                    pb("nonsense", "32768"),
                ],
            ),
        ];
        for p in cases {
            for with_ip in [None, Some(ip("10.0.0.5"))] {
                let err = select_binding(&p, 8000, with_ip).unwrap_err();
                assert!(
                    matches!(err, DockerError::PortNotPublished { port: 8000 }),
                    "{p:?}: {err}"
                );
                assert_eq!(
                    err.to_string(),
                    "container port 8000/tcp is not published: run the container with -p 8000"
                );
            }
        }
    }

    #[test]
    fn unusable_bindings_are_skipped() {
        let p = ports(
            "8000/tcp",
            vec![
                pb("10.0.0.4", "0"),
                pb("10.0.0.3", "nope"),
                pb("not-an-ip", "30000"),
                pb("10.0.0.5", " 32768 "),
            ],
        );
        assert_eq!(
            select_binding(&p, 8000, None).unwrap(),
            sa("10.0.0.5:32768")
        );
    }
}

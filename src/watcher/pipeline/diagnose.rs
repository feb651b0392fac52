//! A probable cause for a reload HAProxy refused at load time. HAProxy 2.6 writes the reason
//! only to its master's stderr, which the watcher cannot read; the commonest cause that
//! `haproxy -c` cannot see is a new `bind` on an address another process holds, and that one
//! the watcher can find by binding the address itself.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

/// The `bind` addresses of the base configuration and the outputs, as written (`*:80`,
/// `127.0.0.1:8080`, `ipv6@[::1]:443`…). A cheap scan of the lines, not a parse.
pub fn binds_of(
    base: Option<&Path>,
    outputs: &[Option<super::commit::Content>],
) -> BTreeSet<String> {
    let base_text = base.and_then(|b| std::fs::read_to_string(b).ok());
    base_text
        .iter()
        .map(String::as_str)
        .chain(outputs.iter().flatten().map(|t| t.as_str()))
        .flat_map(|text| text.lines())
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("bind"))
                .then(|| words.next())
                .flatten()
        })
        .map(expand_env)
        .flat_map(|addrs| addrs.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect()
}

/// Replaces `${NAME}` and `"${NAME}"` with the environment's value, as HAProxy does (the
/// watcher is given HAProxy's environment); an unset variable stays as written.
fn expand_env(word: &str) -> String {
    let mut out = String::new();
    let mut rest = word.trim_matches('"');
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        match std::env::var(name) {
            Ok(v) => out.push_str(&v),
            Err(_) => out.push_str(&rest[start..=start + len]),
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// The binds in `wanted` that HAProxy did not hold before (`loaded`) and that this process
/// cannot bind either, with the reason: `bind 127.0.0.1:8081: address already in use`.
pub fn busy_binds(wanted: &BTreeSet<String>, loaded: &BTreeSet<String>) -> Option<String> {
    let busy: Vec<String> = wanted
        .difference(loaded)
        .filter_map(|bind| {
            let addr = socket_addr(bind)?;
            match TcpListener::bind(addr) {
                Ok(_) => None,
                Err(e) => Some(format!("bind {bind}: {e}")),
            }
        })
        .collect();
    (!busy.is_empty()).then(|| format!("probably {}", busy.join("; ")))
}

/// A TCP address from a `bind` word; `None` for forms not probed (unix sockets, port ranges,
/// names to resolve, environment variables).
fn socket_addr(bind: &str) -> Option<SocketAddr> {
    let bind = bind
        .strip_prefix("ipv4@")
        .or_else(|| bind.strip_prefix("ipv6@"))
        .unwrap_or(bind);
    if let Some(port) = bind
        .strip_prefix("*:")
        .or_else(|| bind.strip_prefix(':'))
        .or_else(|| bind.strip_prefix("0.0.0.0:"))
    {
        return Some(SocketAddr::new([0, 0, 0, 0].into(), port.parse().ok()?));
    }
    bind.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bind_lines_of_base_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("base.cfg");
        std::fs::write(&base, "frontend f\n    bind 127.0.0.1:80,:81\n").unwrap();
        let out = Some(std::sync::Arc::new(
            "listen l\n  bind ipv6@[::1]:82 ssl crt x\n  server s 1.2.3.4:5\n".to_string(),
        ));
        let binds = binds_of(Some(&base), &[out, None]);
        let want: BTreeSet<String> = ["127.0.0.1:80", ":81", "ipv6@[::1]:82"]
            .map(String::from)
            .into();
        assert_eq!(binds, want);
    }

    #[test]
    fn a_new_bind_on_a_held_port_is_named() {
        let held = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let free = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .to_string(); // dropped: free again
        let wanted: BTreeSet<String> = [addr.clone(), free, "/run/x.sock".into()].into();
        let cause = busy_binds(&wanted, &BTreeSet::new()).expect("a cause");
        assert!(cause.contains(&format!("bind {addr}:")), "{cause}");
        assert_eq!(cause.matches("bind ").count(), 1, "{cause}");
        // What HAProxy already held is not a suspect.
        assert_eq!(busy_binds(&wanted, &[addr].into()), None);
    }

    #[test]
    fn environment_variables_are_expanded() {
        std::env::set_var("DOCKREG_TEST_BIND_X", "127.0.0.1:9");
        assert_eq!(expand_env("\"${DOCKREG_TEST_BIND_X}\""), "127.0.0.1:9");
        assert_eq!(
            expand_env("${DOCKREG_TEST_UNSET_Y}:80"),
            "${DOCKREG_TEST_UNSET_Y}:80"
        );
    }

    #[test]
    fn bind_words_become_addresses() {
        assert_eq!(socket_addr("*:80"), Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(socket_addr(":80"), Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(
            socket_addr("ipv6@[::1]:80"),
            Some("[::1]:80".parse().unwrap())
        );
        assert_eq!(socket_addr("10.0.0.1:8000-8010"), None);
        assert_eq!(socket_addr("${BIND}"), None);
    }
}

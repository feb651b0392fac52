//! What the watcher watches in etcd: fixed service prefixes (`--prefix /web`: one service
//! each) and roots (`--root /services`: one service per child `<root>/<name>/`), and which of
//! them an event comes from ([`Scope`]). Each prefix and each root is one range of keys,
//! listed and watched on its own, so no two may overlap ([`Watched::new`]).

use crate::core::keys::ServicePrefix;
use anyhow::{bail, Result};

/// Where a listing or a change comes from: the i-th `--prefix` or the j-th `--root`, in flag
/// order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Prefix(usize),
    Root(usize),
}

/// The validated prefixes and roots, in flag order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watched {
    pub prefixes: Vec<ServicePrefix>,
    pub roots: Vec<ServicePrefix>,
}

impl Watched {
    /// Checks that no root is watched twice: a root may not equal, hold or lie inside another
    /// root or a prefix (their keys would be watched twice and counted under two services).
    /// Prefixes are checked as they always were (their service names, by the catalog).
    /// Errors name the `--root` at fault.
    pub fn new(prefixes: Vec<ServicePrefix>, roots: Vec<ServicePrefix>) -> Result<Self> {
        for (j, root) in roots.iter().enumerate() {
            for other in &roots[..j] {
                if root == other {
                    bail!("--root {root}: given twice");
                }
                if root.overlaps(other) {
                    bail!("--root {root}: overlaps --root {other} (one holds the other's keys; they would be watched twice)");
                }
            }
            for prefix in &prefixes {
                if root == prefix {
                    bail!("--root {root}: is also a --prefix");
                }
                if root.overlaps(prefix) {
                    bail!("--root {root}: overlaps --prefix {prefix} (one holds the other's keys; they would be watched twice)");
                }
            }
        }
        Ok(Self { prefixes, roots })
    }

    /// Only these prefixes. (Tests.)
    #[cfg(test)]
    pub fn prefixes(prefixes: Vec<ServicePrefix>) -> Self {
        Self {
            prefixes,
            roots: Vec::new(),
        }
    }

    /// Every range to list and watch, with its scope: the prefixes, then the roots.
    pub fn ranges(&self) -> Vec<(Scope, ServicePrefix)> {
        let prefixes = self.prefixes.iter().cloned().enumerate();
        let roots = self.roots.iter().cloned().enumerate();
        prefixes
            .map(|(i, p)| (Scope::Prefix(i), p))
            .chain(roots.map(|(j, r)| (Scope::Root(j), r)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ServicePrefix {
        ServicePrefix::parse(s).unwrap()
    }

    fn err(prefixes: &[&str], roots: &[&str]) -> String {
        Watched::new(
            prefixes.iter().map(|s| p(s)).collect(),
            roots.iter().map(|s| p(s)).collect(),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn ranges_say_their_scope_in_flag_order() {
        let w = Watched::new(vec![p("/web"), p("/api")], vec![p("/services"), p("/x/y")]).unwrap();
        let scopes: Vec<(Scope, String)> = w
            .ranges()
            .into_iter()
            .map(|(s, r)| (s, r.watch_key()))
            .collect();
        assert_eq!(
            scopes,
            [
                (Scope::Prefix(0), "/web/".to_string()),
                (Scope::Prefix(1), "/api/".to_string()),
                (Scope::Root(0), "/services/".to_string()),
                (Scope::Root(1), "/x/y/".to_string()),
            ]
        );
    }

    #[test]
    fn roots_that_would_watch_keys_twice_are_refused_naming_the_root() {
        let e = err(&["/services"], &["/services"]);
        assert!(e.starts_with("--root /services: is also a --prefix"), "{e}");
        let e = err(&["/services/web"], &["/services"]);
        assert!(
            e.starts_with("--root /services: overlaps --prefix /services/web"),
            "{e}"
        );
        let e = err(&["/a"], &["/a/b"]);
        assert!(e.starts_with("--root /a/b: overlaps --prefix /a"), "{e}");
        let e = err(&[], &["/a", "/a/b"]);
        assert!(e.starts_with("--root /a/b: overlaps --root /a"), "{e}");
        let e = err(&[], &["/a/b", "/a"]);
        assert!(e.starts_with("--root /a: overlaps --root /a/b"), "{e}");
        let e = err(&[], &["/a", "/a/"]);
        assert!(e.starts_with("--root /a: given twice"), "{e}");
        // Siblings and look-alikes are fine.
        assert!(Watched::new(vec![p("/ab"), p("/service")], vec![p("/a"), p("/b/c")]).is_ok());
    }
}

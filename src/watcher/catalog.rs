//! The catalog: every watched service and its live endpoints, kept up to date one etcd event
//! at a time, together with the template context built from it.
//!
//! Two views are kept incrementally next to the endpoint lists, each only when a template needs
//! it: the Tera context (a JSON tree; a put or delete touches one array element and rendering
//! borrows the tree without copying it), and each endpoint's `server` line for the built-in
//! template (so rendering it is a concatenation of cached lines). An event therefore costs
//! O(log n) plus the render, never a rebuild of 100,000 endpoints.

use crate::core::endpoint::{parse_value, Endpoint};
use crate::core::keys::{parse_endpoint_key, server_name, ServicePrefix};
use crate::watcher::source::{KvChange, WatchEvent};
use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

/// One service: its prefix and its endpoints, sorted by address.
#[derive(Debug, Clone)]
pub struct Service {
    pub prefix: ServicePrefix,
    pub endpoints: Vec<Endpoint>,
    /// The built-in template's `server` line of each endpoint (same order), when kept.
    lines: Vec<Box<str>>,
    /// Changes whenever the endpoints do (never repeats), so renderers can cache per service.
    version: u64,
}

impl Service {
    /// A number that changes whenever the service's endpoints do.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The cached `server` lines (empty unless the catalog keeps them).
    pub fn server_lines(&self) -> &[Box<str>] {
        &self.lines
    }
}

/// Which derived views the catalog maintains; each costs memory per endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Views {
    /// The Tera context (for operator templates).
    pub context: bool,
    /// Cached `server` lines (for the built-in template).
    pub server_lines: bool,
}

impl Views {
    /// Every view (tests).
    #[cfg(test)]
    pub const ALL: Views = Views {
        context: true,
        server_lines: true,
    };
}

/// The built-in template's line for one endpoint (kept byte-identical to
/// `templates/haproxy-backends.cfg.tera`; a test renders both and compares).
pub fn builtin_server_line(ep: &Endpoint) -> Box<str> {
    format!(
        "    server {} {} check weight {}",
        server_name(ep.addr),
        ep.addr,
        ep.meta.effective_weight()
    )
    .into_boxed_str()
}

/// All watched services. Service indices follow the order of the `--prefix` flags.
#[derive(Debug)]
pub struct Catalog {
    services: Vec<Service>,
    views: Views,
    /// `{"services": {<name>: {"name", "prefix", "endpoints": [...]}}}`; `Null` only while
    /// lent to a render.
    root: Value,
    /// Keys currently skipped as invalid, so each is warned about once, not on every event;
    /// `true` when the key itself is not an endpoint key, `false` when its value is invalid.
    skipped: HashMap<(usize, Vec<u8>), bool>,
}

/// The last service version handed out, across every catalog of the process, so a version
/// never names two states (a renderer's cache stays right even across catalogs).
static VERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The template view of one endpoint. Every string in it is derived from a validated address
/// or a validated metadata word, so none can carry HAProxy syntax.
fn endpoint_value(prefix: &ServicePrefix, ep: &Endpoint) -> Value {
    json!({
        "ip": ep.addr.ip().to_string(),
        "port": ep.addr.port(),
        "address": ep.addr.to_string(),
        "name": server_name(ep.addr),
        "ipv6": ep.addr.is_ipv6(),
        "key": prefix.endpoint_key(ep.addr),
        "weight": ep.meta.effective_weight(),
        "tags": ep.meta.tags,
        "container": ep.meta.container,
        "hostname": ep.meta.hostname,
    })
}

fn service_value(svc: &Service) -> Value {
    let eps: Vec<Value> = svc
        .endpoints
        .iter()
        .map(|e| endpoint_value(&svc.prefix, e))
        .collect();
    json!({
        "name": svc.prefix.name(),
        "prefix": svc.prefix.as_str(),
        "endpoints": eps,
    })
}

/// Shows an untrusted key in a log line: lossy UTF-8, control characters escaped.
pub fn display_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key).escape_debug().to_string()
}

impl Catalog {
    /// An empty catalog of the given services, keeping every view. Two prefixes may not share
    /// a service name. (Tests.)
    #[cfg(test)]
    pub fn new(prefixes: Vec<ServicePrefix>) -> Result<Self> {
        Self::with_views(prefixes, Views::ALL)
    }

    /// An empty catalog that keeps only the given views.
    pub fn with_views(prefixes: Vec<ServicePrefix>, views: Views) -> Result<Self> {
        let mut names = HashSet::new();
        for p in &prefixes {
            if !names.insert(p.name().to_string()) {
                bail!(
                    "--prefix {p}: service name \"{}\" is already taken by another prefix",
                    p.name()
                );
            }
        }
        let services = prefixes
            .into_iter()
            .map(|prefix| Service {
                prefix,
                endpoints: Vec::new(),
                lines: Vec::new(),
                version: VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            })
            .collect();
        let mut cat = Self {
            services,
            views,
            root: Value::Null,
            skipped: HashMap::new(),
        };
        cat.root = cat.build_root();
        Ok(cat)
    }

    fn build_root(&self) -> Value {
        if !self.views.context {
            return Value::Null;
        }
        let map: Map<String, Value> = self
            .services
            .iter()
            .map(|s| (s.prefix.name().to_string(), service_value(s)))
            .collect();
        json!({ "services": map })
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Keys skipped now: (not endpoint keys, endpoint keys with an invalid value).
    pub fn skipped_by_reason(&self) -> (usize, usize) {
        let keys = self.skipped.values().filter(|bad_key| **bad_key).count();
        (keys, self.skipped.len() - keys)
    }

    /// Number of endpoints across all services.
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }

    /// Applies one event from etcd; returns whether any endpoint changed.
    pub fn apply(&mut self, event: WatchEvent) -> bool {
        match event {
            WatchEvent::Snapshot { services, .. } => {
                let mut changed = false;
                for (idx, entries) in services {
                    changed |= self.replace(idx, entries);
                }
                changed
            }
            WatchEvent::Changes {
                service, changes, ..
            } => {
                let mut changed = false;
                for c in changes {
                    changed |= match c {
                        KvChange::Put { key, value } => self.put(service, &key, &value),
                        KvChange::Delete { key } => self.delete(service, &key),
                    };
                }
                changed
            }
        }
    }

    /// Parses a key and value, warning once about a key that is not an endpoint.
    fn parse(&mut self, idx: usize, key: &[u8], value: &[u8]) -> Option<Endpoint> {
        let prefix = &self.services.get(idx)?.prefix;
        let parsed = parse_endpoint_key(prefix, key)
            .map_err(|e| (true, e.to_string()))
            .and_then(|addr| {
                parse_value(value)
                    .map(|meta| Endpoint { addr, meta })
                    .map_err(|e| (false, e.to_string()))
            });
        match parsed {
            Ok(ep) => {
                self.skipped.remove(&(idx, key.to_vec()));
                Some(ep)
            }
            Err((bad_key, reason)) => {
                if self.skipped.insert((idx, key.to_vec()), bad_key).is_none() {
                    tracing::warn!(key = %display_key(key), "etcd key \"{}\": {reason}; skipped", display_key(key));
                }
                None
            }
        }
    }

    /// Sets `key` to `value`; an invalid key or value removes the endpoint it named.
    pub fn put(&mut self, idx: usize, key: &[u8], value: &[u8]) -> bool {
        match self.parse(idx, key, value) {
            Some(ep) => self.upsert(idx, ep),
            None => self.delete_addr_of(idx, key),
        }
    }

    /// Removes the endpoint `key` names, if any.
    pub fn delete(&mut self, idx: usize, key: &[u8]) -> bool {
        self.skipped.remove(&(idx, key.to_vec()));
        self.delete_addr_of(idx, key)
    }

    fn delete_addr_of(&mut self, idx: usize, key: &[u8]) -> bool {
        let Some(svc) = self.services.get(idx) else {
            return false;
        };
        match parse_endpoint_key(&svc.prefix, key) {
            Ok(addr) => self.remove(idx, addr),
            Err(_) => false,
        }
    }

    /// Marks service `idx` as changed.
    fn bump(&mut self, idx: usize) {
        if let Some(svc) = self.services.get_mut(idx) {
            svc.version = VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        }
    }

    fn endpoints_value(&mut self, idx: usize) -> Option<&mut Vec<Value>> {
        let name = self.services.get(idx)?.prefix.name();
        match self
            .root
            .pointer_mut(&format!("/services/{name}/endpoints"))
        {
            Some(Value::Array(a)) => Some(a),
            _ => None,
        }
    }

    fn upsert(&mut self, idx: usize, ep: Endpoint) -> bool {
        let views = self.views;
        let Some(svc) = self.services.get_mut(idx) else {
            return false;
        };
        let value = views.context.then(|| endpoint_value(&svc.prefix, &ep));
        let line = views.server_lines.then(|| builtin_server_line(&ep));
        let (i, new) = match svc.endpoints.binary_search_by_key(&ep.addr, |e| e.addr) {
            Ok(i) if svc.endpoints[i].meta == ep.meta => return false,
            Ok(i) => {
                svc.endpoints[i] = ep;
                (i, false)
            }
            Err(i) => {
                svc.endpoints.insert(i, ep);
                (i, true)
            }
        };
        if let Some(line) = line {
            if new {
                svc.lines.insert(i, line);
            } else {
                svc.lines[i] = line;
            }
        }
        if let (Some(value), Some(arr)) = (value, self.endpoints_value(idx)) {
            if new {
                arr.insert(i, value);
            } else {
                arr[i] = value;
            }
        }
        self.bump(idx);
        true
    }

    fn remove(&mut self, idx: usize, addr: SocketAddr) -> bool {
        let Some(svc) = self.services.get_mut(idx) else {
            return false;
        };
        match svc.endpoints.binary_search_by_key(&addr, |e| e.addr) {
            Ok(i) => {
                svc.endpoints.remove(i);
                if self.views.server_lines {
                    svc.lines.remove(i);
                }
                if let Some(arr) = self.endpoints_value(idx) {
                    arr.remove(i);
                }
                self.bump(idx);
                true
            }
            Err(_) => false,
        }
    }

    /// Replaces a service's endpoints with a fresh listing.
    pub fn replace(&mut self, idx: usize, entries: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
        if idx >= self.services.len() {
            return false;
        }
        self.skipped.retain(|(i, _), _| *i != idx);
        let mut fresh: Vec<Endpoint> = entries
            .iter()
            .filter_map(|(k, v)| self.parse(idx, k, v))
            .collect();
        fresh.sort_by_key(|e| e.addr);
        fresh.dedup_by_key(|e| e.addr);
        let svc = &mut self.services[idx];
        if svc.endpoints == fresh {
            return false;
        }
        svc.endpoints = fresh;
        if self.views.server_lines {
            svc.lines = svc.endpoints.iter().map(builtin_server_line).collect();
        }
        if self.views.context {
            let value = service_value(svc);
            let name = svc.prefix.name().to_string();
            if let Some(Value::Object(map)) = self.root.get_mut("services") {
                map.insert(name, value);
            }
        }
        self.bump(idx);
        true
    }

    /// Lends the template context to `f` without copying it.
    pub fn with_context<R>(&mut self, f: impl FnOnce(&tera::Context) -> R) -> R {
        let root = std::mem::take(&mut self.root);
        let ctx = match tera::Context::from_value(root) {
            Ok(ctx) => ctx,
            // The root is always an object; rebuild it should that ever not hold.
            Err(_) => tera::Context::from_value(self.build_root()).unwrap_or_default(),
        };
        let out = f(&ctx);
        self.root = ctx.into_json();
        out
    }

    /// Lends service `idx`'s own template context — `{"name": …, "service": {"name", "prefix",
    /// "endpoints"}, "first": first}` — to `f` without copying it (for templates rendered per
    /// service).
    pub fn with_service_context<R>(
        &mut self,
        idx: usize,
        first: bool,
        f: impl FnOnce(&tera::Context) -> R,
    ) -> Option<R> {
        let name = self.services.get(idx)?.prefix.name().to_string();
        let slot = self.root.get_mut("services")?.get_mut(&name)?;
        let service = std::mem::take(slot);
        let Ok(ctx) =
            tera::Context::from_value(json!({ "name": name, "service": service, "first": first }))
        else {
            // An object always converts; should that ever not hold, rebuild what was lent.
            self.root = self.build_root();
            return None;
        };
        let out = f(&ctx);
        let mut back = ctx.into_json();
        let service = back.get_mut("service").map(std::mem::take);
        match (
            service,
            self.root.get_mut("services").and_then(|m| m.get_mut(&name)),
        ) {
            (Some(service), Some(slot)) => *slot = service,
            _ => self.root = self.build_root(),
        }
        Some(out)
    }

    /// The template context as JSON (`Null` unless the catalog keeps it). (Tests.)
    #[cfg(test)]
    pub fn context_json(&self) -> &Value {
        &self.root
    }

    /// The endpoints of a service by index. (Tests.)
    #[cfg(test)]
    pub fn endpoints(&self, idx: usize) -> &[Endpoint] {
        self.services
            .get(idx)
            .map(|s| s.endpoints.as_slice())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cat() -> Catalog {
        Catalog::new(vec![
            ServicePrefix::parse("/service").unwrap(),
            ServicePrefix::parse("/web").unwrap(),
        ])
        .unwrap()
    }

    fn names(c: &Catalog, idx: usize) -> Vec<String> {
        c.context_json()["services"][c.services()[idx].prefix.name()]["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn puts_and_deletes_keep_context_sorted_and_in_sync() {
        let mut c = cat();
        assert!(c.put(0, b"/service/10.0.0.2:80", b"running"));
        assert!(c.put(0, b"/service/10.0.0.1:80", b"running"));
        assert!(c.put(0, b"/service/[::1]:80", b"running"));
        assert!(
            !c.put(0, b"/service/10.0.0.1:80", b"running"),
            "same value is no change"
        );
        assert!(c.put(0, b"/service/10.0.0.1:80", br#"{"weight":5}"#));
        assert_eq!(names(&c, 0), ["10.0.0.1_80", "10.0.0.2_80", "--1_80"]);
        assert_eq!(
            c.context_json()["services"]["service"]["endpoints"][0]["weight"],
            5
        );
        assert!(c.delete(0, b"/service/10.0.0.2:80"));
        assert!(!c.delete(0, b"/service/10.0.0.2:80"));
        assert_eq!(names(&c, 0), ["10.0.0.1_80", "--1_80"]);
        assert_eq!(c.context_json(), &{
            let fresh =
                Catalog::new(c.services().iter().map(|s| s.prefix.clone()).collect()).unwrap();
            let mut fresh = fresh;
            fresh.replace(
                0,
                vec![
                    (b"/service/[::1]:80".to_vec(), b"running".to_vec()),
                    (
                        b"/service/10.0.0.1:80".to_vec(),
                        br#"{"weight":5}"#.to_vec(),
                    ),
                ],
            );
            fresh.root
        });
    }

    #[test]
    fn invalid_put_removes_the_endpoint() {
        let mut c = cat();
        assert!(c.put(0, b"/service/10.0.0.1:80", b"running"));
        assert!(c.put(0, b"/service/10.0.0.1:80", b"garbage"));
        assert!(c.endpoints(0).is_empty());
        assert!(!c.put(0, b"/service/not-an-endpoint", b"running"));
    }

    #[test]
    fn snapshot_replaces_and_reports_no_change_when_equal() {
        let mut c = cat();
        let entries = vec![(b"/web/10.0.0.9:8080".to_vec(), b"running".to_vec())];
        assert!(c.replace(1, entries.clone()));
        assert!(!c.replace(1, entries));
        assert_eq!(names(&c, 1), ["10.0.0.9_8080"]);
        assert!(c.replace(1, vec![]));
        assert!(names(&c, 1).is_empty());
    }

    #[test]
    fn a_full_snapshot_replaces_every_service_and_drops_missing_keys() {
        // What the watcher sends after etcd was wiped or restored: every service, as listed.
        let mut c = cat();
        c.put(0, b"/service/10.0.0.1:80", b"running");
        c.put(0, b"/service/10.0.0.2:80", b"running");
        c.put(1, b"/web/10.0.0.9:80", b"running");
        let snapshot = WatchEvent::Snapshot {
            revision: 2,
            services: vec![
                (
                    0,
                    vec![(b"/service/10.0.0.3:80".to_vec(), b"running".to_vec())],
                ),
                (1, vec![]),
            ],
        };
        assert!(c.apply(snapshot.clone()));
        assert_eq!(names(&c, 0), ["10.0.0.3_80"]);
        assert!(names(&c, 1).is_empty());
        assert!(
            !c.apply(snapshot),
            "the same snapshot again changes nothing"
        );
    }

    #[test]
    fn duplicate_service_names_are_refused() {
        let err = Catalog::new(vec![
            ServicePrefix::parse("/a/web").unwrap(),
            ServicePrefix::parse("/b/web").unwrap(),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("\"web\""), "{err}");
    }

    #[test]
    fn context_survives_lending() {
        let mut c = cat();
        c.put(0, b"/service/10.0.0.1:80", b"running");
        let n = c.with_context(|ctx| ctx.get("services").is_some());
        assert!(n);
        assert_eq!(names(&c, 0), ["10.0.0.1_80"]);
    }
}

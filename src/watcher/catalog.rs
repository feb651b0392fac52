//! The catalog: every watched service and its live endpoints, kept up to date one etcd event
//! at a time, together with the template context built from it.
//!
//! Two views are kept incrementally next to the endpoint lists, each only when a template needs
//! it: the Tera context (a JSON tree; a put or delete touches one array element and rendering
//! borrows the tree without copying it), and each endpoint's `server` line for the built-in
//! template (so rendering it is a concatenation of cached lines). An event therefore costs
//! O(log n) plus the render, never a rebuild of 100,000 endpoints.
//!
//! The catalog is dynamic. A `--prefix` is one service for ever, even without endpoints. A
//! `--root` holds one service per child `<root>/<name>/`: it appears with its first valid
//! endpoint, and once its last one is gone it stays, empty, for `--service-grace` (an app
//! that restarts does not cost two reloads), then it is removed ([`Catalog::expire`]). The
//! name comes from etcd and is held to the rules of a `--prefix` segment; a key that breaks
//! them is skipped, named once in a warning, and nothing of it reaches the context. Names
//! clash: a `--prefix` keeps its name (a root's child of that name is skipped); between roots
//! the first in flag order that holds endpoints for the name wins, and the others' endpoints
//! are kept aside (skipped, named once) to take over should it lose its last one.

use crate::core::endpoint::{parse_value, Endpoint};
use crate::core::keys::{parse_endpoint_key, parse_root_key, server_name, KeyError, ServicePrefix};
use crate::watcher::source::{KvChange, Scope, WatchEvent, Watched};
use anyhow::{bail, Result};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

/// How long a root service without endpoints is kept by default (`--service-grace`).
pub const DEFAULT_SERVICE_GRACE: Duration = Duration::from_secs(300);

/// One service: its prefix and its endpoints, sorted by address.
#[derive(Debug, Clone)]
pub struct Service {
    /// `--prefix P` itself, or `<root>/<name>` for a root's child.
    pub prefix: ServicePrefix,
    pub endpoints: Vec<Endpoint>,
    /// The built-in template's `server` line of each endpoint (same order), when kept.
    lines: Vec<Box<str>>,
    /// Changes whenever the endpoints do (never repeats, across services and catalogs), so
    /// renderers can cache per service.
    version: u64,
    /// The prefix or the root it comes from.
    origin: Scope,
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

    /// The `--prefix` or `--root` it comes from. (Tests.)
    #[cfg(test)]
    pub fn origin(&self) -> Scope {
        self.origin
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

/// A root's endpoints for a name another prefix or root holds, kept aside.
#[derive(Debug, Clone)]
struct Shadow {
    /// `<root>/<name>`.
    prefix: ServicePrefix,
    /// Sorted by address, never empty.
    endpoints: Vec<Endpoint>,
}

/// All watched services. The `--prefix` services come first, at the index of their flag, for
/// ever; the roots' services follow in the order they appeared, and the indices of those
/// after a removed one shift down ([`Catalog::layout`] says when).
#[derive(Debug)]
pub struct Catalog {
    services: Vec<Service>,
    watched: Watched,
    /// Service name → index in `services`.
    by_name: HashMap<String, usize>,
    views: Views,
    /// `{"services": {<name>: {"name", "prefix", "endpoints": [...]}}}`; `Null` only while
    /// lent to a render.
    context: Value,
    /// Keys currently skipped, so each is warned about once, not on every event; `true` when
    /// the key itself is not taken (not an endpoint key, or its service name is another's),
    /// `false` when its value is invalid.
    skipped: HashMap<(Scope, Vec<u8>), bool>,
    /// Service name → root index → that root's endpoints for the name, while another prefix
    /// or root holds it.
    shadowed: HashMap<String, BTreeMap<usize, Shadow>>,
    /// Root services without endpoints: since when (their grace runs).
    empty_since: HashMap<String, Instant>,
    /// How long a root service without endpoints is kept.
    grace: Duration,
    /// Changes whenever a service is added or removed (never repeats).
    layout: u64,
    /// The time of the event being applied.
    now: Instant,
}

/// The last version handed out, across every catalog of the process, so a version never
/// names two states (a renderer's cache stays right even across catalogs, and across services
/// removed and added again).
static VERSIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn next_version() -> u64 {
    VERSIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
}

/// The template view of one endpoint. Every string in it is derived from a validated address,
/// a validated prefix or a validated metadata word, so none can carry HAProxy syntax.
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

/// The longest part of a key a log line shows.
const SHOWN_KEY_CHARS: usize = 200;

/// Shows an untrusted key in a log line: lossy UTF-8, control characters escaped, and at most
/// 200 characters of it (a longer key says how many bytes it has).
pub fn display_key(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    if text.chars().count() <= SHOWN_KEY_CHARS {
        return text.escape_debug().to_string();
    }
    let head: String = text.chars().take(SHOWN_KEY_CHARS).collect();
    format!("{}… ({} bytes)", head.escape_debug(), key.len())
}

/// Sorts endpoints by address and keeps one per address.
fn sorted(mut endpoints: Vec<Endpoint>) -> Vec<Endpoint> {
    endpoints.sort_by_key(|e| e.addr);
    endpoints.dedup_by_key(|e| e.addr);
    endpoints
}

impl Catalog {
    /// An empty catalog of the given prefixes, keeping every view. Two prefixes may not share
    /// a service name. (Tests.)
    #[cfg(test)]
    pub fn new(prefixes: Vec<ServicePrefix>) -> Result<Self> {
        Self::with_views(Watched::prefixes(prefixes), Views::ALL)
    }

    /// An empty catalog of the given prefixes and roots, keeping every view. (Tests.)
    #[cfg(test)]
    pub fn with_roots(prefixes: &[&str], roots: &[&str]) -> Result<Self> {
        let parse = |v: &[&str]| -> Result<Vec<ServicePrefix>> {
            v.iter()
                .map(|p| ServicePrefix::parse(p).map_err(Into::into))
                .collect()
        };
        Self::with_views(Watched::new(parse(prefixes)?, parse(roots)?)?, Views::ALL)
    }

    /// An empty catalog of what `watched` names, keeping only the given views: one service per
    /// prefix (two prefixes may not share a service name), none yet from the roots.
    pub fn with_views(watched: Watched, views: Views) -> Result<Self> {
        let mut names = HashSet::new();
        for p in &watched.prefixes {
            if !names.insert(p.name().to_string()) {
                bail!(
                    "--prefix {p}: service name \"{}\" is already taken by another prefix",
                    p.name()
                );
            }
        }
        let services: Vec<Service> = watched
            .prefixes
            .iter()
            .enumerate()
            .map(|(i, prefix)| Service {
                prefix: prefix.clone(),
                endpoints: Vec::new(),
                lines: Vec::new(),
                version: next_version(),
                origin: Scope::Prefix(i),
            })
            .collect();
        let by_name = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.prefix.name().to_string(), i))
            .collect();
        let mut cat = Self {
            services,
            watched,
            by_name,
            views,
            context: Value::Null,
            skipped: HashMap::new(),
            shadowed: HashMap::new(),
            empty_since: HashMap::new(),
            grace: DEFAULT_SERVICE_GRACE,
            layout: next_version(),
            now: Instant::now(),
        };
        cat.context = cat.build_context();
        Ok(cat)
    }

    /// Keeps a root service without endpoints for `grace` before removing it.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    fn build_context(&self) -> Value {
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

    /// The service named `name`, if there is one now. (Tests.)
    #[cfg(test)]
    pub fn service(&self, name: &str) -> Option<&Service> {
        self.by_name.get(name).and_then(|&i| self.services.get(i))
    }

    /// A number that changes whenever a service is added or removed (the indices of the
    /// services may have changed then), and never repeats.
    pub fn layout(&self) -> u64 {
        self.layout
    }

    /// Keys skipped now: (not taken as endpoint keys, endpoint keys with an invalid value).
    pub fn skipped_by_reason(&self) -> (usize, usize) {
        let keys = self.skipped.values().filter(|bad_key| **bad_key).count();
        (keys, self.skipped.len() - keys)
    }

    /// Number of endpoints across all services.
    pub fn endpoint_count(&self) -> usize {
        self.services.iter().map(|s| s.endpoints.len()).sum()
    }

    /// Applies one event from etcd, received at `now`; returns whether any service or endpoint
    /// changed.
    pub fn apply(&mut self, event: WatchEvent, now: Instant) -> bool {
        self.now = now;
        match event {
            WatchEvent::Snapshot { scopes, .. } => {
                let mut changed = false;
                for (scope, entries) in scopes {
                    changed |= self.replace(scope, entries);
                }
                changed
            }
            WatchEvent::Changes { scope, changes, .. } => {
                let mut changed = false;
                for c in changes {
                    changed |= match c {
                        KvChange::Put { key, value } => self.put(scope, &key, &value),
                        KvChange::Delete { key } => self.delete(scope, &key),
                    };
                }
                changed
            }
        }
    }

    /// When the first root service without endpoints reaches the end of its grace.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.empty_since
            .values()
            .filter_map(|since| since.checked_add(self.grace))
            .min()
    }

    /// Removes the root services whose grace has ended at `now`; returns their names.
    pub fn expire(&mut self, now: Instant) -> Vec<String> {
        let grace = self.grace;
        let mut due: Vec<String> = self
            .empty_since
            .iter()
            .filter(|(_, since)| since.checked_add(grace).is_some_and(|end| end <= now))
            .map(|(name, _)| name.clone())
            .collect();
        due.sort();
        for name in &due {
            self.remove_service(name);
        }
        due
    }

    /// What `key` names under `scope`: the endpoint's address, and for a root's key the prefix
    /// of its service (`None` for a prefix's key: the service is the prefix's).
    fn parse_key(
        &self,
        scope: Scope,
        key: &[u8],
    ) -> Result<(Option<ServicePrefix>, SocketAddr), KeyError> {
        match scope {
            Scope::Prefix(i) => {
                let svc = self.services.get(i).ok_or(KeyError::OutsidePrefix)?;
                parse_endpoint_key(&svc.prefix, key).map(|addr| (None, addr))
            }
            Scope::Root(j) => {
                let root = self.watched.roots.get(j).ok_or(KeyError::OutsidePrefix)?;
                parse_root_key(root, key).map(|(svc, addr)| (Some(svc), addr))
            }
        }
    }

    /// Parses a key and its value; `Err` says whether the key is at fault, and why.
    #[allow(clippy::type_complexity)]
    fn parse_kv(
        &self,
        scope: Scope,
        key: &[u8],
        value: &[u8],
    ) -> Result<(Option<ServicePrefix>, Endpoint), (bool, String)> {
        let (service, addr) = self
            .parse_key(scope, key)
            .map_err(|e| (true, e.to_string()))?;
        let meta = parse_value(value).map_err(|e| (false, e.to_string()))?;
        Ok((service, Endpoint { addr, meta }))
    }

    /// Skips `key`, warning about it the first time it is skipped.
    fn skip(&mut self, scope: Scope, key: &[u8], bad_key: bool, reason: &str) {
        if self
            .skipped
            .insert((scope, key.to_vec()), bad_key)
            .is_none()
        {
            let shown = display_key(key);
            tracing::warn!(key = %shown, "etcd key \"{shown}\": {reason}; skipped");
        }
    }

    /// `key` is taken: no longer skipped.
    fn accept(&mut self, scope: Scope, key: &[u8]) {
        if !self.skipped.is_empty() {
            self.skipped.remove(&(scope, key.to_vec()));
        }
    }

    /// Why a root's key for service `name` is skipped while `holder` holds the name.
    fn clash(&self, name: &str, holder: Scope) -> String {
        match holder {
            Scope::Prefix(i) => format!(
                "service \"{name}\" is --prefix {} (a prefix keeps its name)",
                self.watched
                    .prefixes
                    .get(i)
                    .map(|p| p.as_str())
                    .unwrap_or("?")
            ),
            Scope::Root(j) => format!(
                "service \"{name}\" comes from --root {} (the first --root in flag order wins)",
                self.watched.roots.get(j).map(|p| p.as_str()).unwrap_or("?")
            ),
        }
    }

    /// Sets `key` to `value`; an invalid key or value removes the endpoint it named.
    pub fn put(&mut self, scope: Scope, key: &[u8], value: &[u8]) -> bool {
        match (scope, self.parse_kv(scope, key, value)) {
            (Scope::Prefix(i), Ok((_, ep))) => {
                self.accept(scope, key);
                self.upsert(i, ep)
            }
            (Scope::Root(j), Ok((Some(service), ep))) => self.root_put(j, service, ep, key),
            (Scope::Root(_), Ok((None, _))) => false,
            (_, Err((bad_key, reason))) => {
                self.skip(scope, key, bad_key, &reason);
                self.delete_addr_of(scope, key)
            }
        }
    }

    /// Removes the endpoint `key` names, if any.
    pub fn delete(&mut self, scope: Scope, key: &[u8]) -> bool {
        self.accept(scope, key);
        self.delete_addr_of(scope, key)
    }

    fn delete_addr_of(&mut self, scope: Scope, key: &[u8]) -> bool {
        match (scope, self.parse_key(scope, key)) {
            (Scope::Prefix(i), Ok((_, addr))) => self.remove(i, addr),
            (Scope::Root(j), Ok((Some(service), addr))) => {
                self.root_remove(j, service.name(), addr)
            }
            _ => false,
        }
    }

    /// A valid endpoint of root `j`'s service `service`.
    fn root_put(&mut self, j: usize, service: ServicePrefix, ep: Endpoint, key: &[u8]) -> bool {
        let scope = Scope::Root(j);
        let name = service.name().to_string();
        let Some(idx) = self.by_name.get(&name).copied() else {
            self.accept(scope, key);
            self.add_service(scope, service, vec![ep]);
            return true;
        };
        match self.services[idx].origin {
            Scope::Prefix(_) => {
                let why = self.clash(&name, self.services[idx].origin);
                self.skip(scope, key, true, &why);
                false
            }
            owner if owner == scope => {
                self.accept(scope, key);
                let changed = self.upsert(idx, ep);
                self.settle(&name) || changed
            }
            Scope::Root(_) => {
                self.shadow_put(j, service, ep);
                let changed = self.settle(&name);
                let owner = self.services[idx].origin;
                if owner != scope {
                    let why = self.clash(&name, owner);
                    self.skip(scope, key, true, &why);
                }
                changed
            }
        }
    }

    /// Root `j`'s endpoint `addr` of service `name` is gone.
    fn root_remove(&mut self, j: usize, name: &str, addr: SocketAddr) -> bool {
        match self.by_name.get(name).copied() {
            Some(idx) if self.services[idx].origin == Scope::Root(j) => {
                let changed = self.remove(idx, addr);
                self.settle(name) || changed
            }
            Some(_) => {
                self.shadow_remove(j, name, addr);
                false
            }
            None => false,
        }
    }

    fn shadow_put(&mut self, j: usize, service: ServicePrefix, ep: Endpoint) {
        let shadow = self
            .shadowed
            .entry(service.name().to_string())
            .or_default()
            .entry(j)
            .or_insert_with(|| Shadow {
                prefix: service,
                endpoints: Vec::new(),
            });
        match shadow.endpoints.binary_search_by_key(&ep.addr, |e| e.addr) {
            Ok(i) => shadow.endpoints[i] = ep,
            Err(i) => shadow.endpoints.insert(i, ep),
        }
    }

    fn shadow_remove(&mut self, j: usize, name: &str, addr: SocketAddr) {
        let Some(roots) = self.shadowed.get_mut(name) else {
            return;
        };
        if let Some(shadow) = roots.get_mut(&j) {
            if let Ok(i) = shadow.endpoints.binary_search_by_key(&addr, |e| e.addr) {
                shadow.endpoints.remove(i);
            }
            if shadow.endpoints.is_empty() {
                roots.remove(&j);
            }
        }
        if roots.is_empty() {
            self.shadowed.remove(name);
        }
    }

    /// After root endpoints for `name` changed: the first root (in flag order) that holds
    /// endpoints for it owns the service; an owner left without any starts its grace (and one
    /// that has some again ends it). Returns whether the service changed hands.
    fn settle(&mut self, name: &str) -> bool {
        let Some(idx) = self.by_name.get(name).copied() else {
            return false;
        };
        let Scope::Root(owner) = self.services[idx].origin else {
            return false;
        };
        let empty = self.services[idx].endpoints.is_empty();
        let first = self
            .shadowed
            .get(name)
            .and_then(|roots| roots.keys().next().copied());
        match first {
            Some(j) if empty || j < owner => {
                self.take_over(idx, j);
                true
            }
            _ => {
                if empty {
                    self.empty_since.entry(name.to_string()).or_insert(self.now);
                } else {
                    self.empty_since.remove(name);
                }
                false
            }
        }
    }

    /// Root `j`'s endpoints kept aside for service `idx` become its endpoints; the owner's
    /// until now, if any, are kept aside in turn.
    fn take_over(&mut self, idx: usize, j: usize) {
        let name = self.services[idx].prefix.name().to_string();
        let Some(shadow) = self.shadowed.get_mut(&name).and_then(|r| r.remove(&j)) else {
            return;
        };
        let old_origin = self.services[idx].origin;
        let svc = &mut self.services[idx];
        let old_prefix = std::mem::replace(&mut svc.prefix, shadow.prefix);
        let old_endpoints = std::mem::replace(&mut svc.endpoints, shadow.endpoints);
        svc.origin = Scope::Root(j);
        let new_keys: Vec<String> = svc
            .endpoints
            .iter()
            .map(|e| svc.prefix.endpoint_key(e.addr))
            .collect();
        tracing::info!(service = %name, prefix = %svc.prefix, "service \"{name}\" now comes from {} (the first --root in flag order that holds endpoints for it)", svc.prefix);
        for key in new_keys {
            self.accept(Scope::Root(j), key.as_bytes());
        }
        if let Scope::Root(o) = old_origin {
            if !old_endpoints.is_empty() {
                let why = self.clash(&name, Scope::Root(j));
                for ep in &old_endpoints {
                    let key = old_prefix.endpoint_key(ep.addr);
                    self.skip(old_origin, key.as_bytes(), true, &why);
                }
                self.shadowed.entry(name.clone()).or_default().insert(
                    o,
                    Shadow {
                        prefix: old_prefix,
                        endpoints: old_endpoints,
                    },
                );
            }
        }
        if self.shadowed.get(&name).is_some_and(BTreeMap::is_empty) {
            self.shadowed.remove(&name);
        }
        self.empty_since.remove(&name);
        self.rebuild(idx);
        self.bump(idx);
    }

    /// Adds a service (a root's child, with its first endpoints).
    fn add_service(&mut self, origin: Scope, prefix: ServicePrefix, endpoints: Vec<Endpoint>) {
        let name = prefix.name().to_string();
        tracing::info!(service = %name, prefix = %prefix, endpoints = endpoints.len(), "new service \"{name}\" under {prefix}");
        let idx = self.services.len();
        self.services.push(Service {
            prefix,
            endpoints,
            lines: Vec::new(),
            version: next_version(),
            origin,
        });
        self.by_name.insert(name, idx);
        self.rebuild(idx);
        self.layout = next_version();
    }

    /// Removes root service `name` (its grace ended).
    fn remove_service(&mut self, name: &str) {
        self.empty_since.remove(name);
        let Some(idx) = self.by_name.get(name).copied() else {
            return;
        };
        if !matches!(self.services[idx].origin, Scope::Root(_)) {
            return;
        }
        let svc = self.services.remove(idx);
        self.by_name.remove(name);
        for (i, s) in self.services.iter().enumerate().skip(idx) {
            self.by_name.insert(s.prefix.name().to_string(), i);
        }
        if let Some(Value::Object(map)) = self.context.get_mut("services") {
            map.remove(name);
        }
        self.layout = next_version();
        tracing::info!(service = %name, prefix = %svc.prefix, grace = ?self.grace, "service \"{name}\" removed: no endpoint for --service-grace");
    }

    /// The cached views of service `idx`, from its endpoints.
    fn rebuild(&mut self, idx: usize) {
        let Some(svc) = self.services.get_mut(idx) else {
            return;
        };
        if self.views.server_lines {
            svc.lines = svc.endpoints.iter().map(builtin_server_line).collect();
        }
        if self.views.context {
            let value = service_value(svc);
            let name = svc.prefix.name().to_string();
            if let Some(Value::Object(map)) = self.context.get_mut("services") {
                map.insert(name, value);
            }
        }
    }

    /// Marks service `idx` as changed.
    fn bump(&mut self, idx: usize) {
        if let Some(svc) = self.services.get_mut(idx) {
            svc.version = next_version();
        }
    }

    fn endpoints_value(&mut self, idx: usize) -> Option<&mut Vec<Value>> {
        let name = self.services.get(idx)?.prefix.name();
        match self
            .context
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

    /// Sets service `idx`'s endpoints (sorted); returns whether they changed.
    fn set_endpoints(&mut self, idx: usize, endpoints: Vec<Endpoint>) -> bool {
        let Some(svc) = self.services.get_mut(idx) else {
            return false;
        };
        if svc.endpoints == endpoints {
            return false;
        }
        svc.endpoints = endpoints;
        self.rebuild(idx);
        self.bump(idx);
        true
    }

    /// Replaces what a prefix or a root holds with a fresh listing of it. A root service the
    /// listing no longer holds starts its grace, as if its last key had been deleted.
    pub fn replace(&mut self, scope: Scope, entries: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
        match scope {
            Scope::Prefix(i) => self.replace_prefix(i, entries),
            Scope::Root(j) => self.replace_root(j, entries),
        }
    }

    fn replace_prefix(&mut self, i: usize, entries: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
        if i >= self.watched.prefixes.len() || i >= self.services.len() {
            return false;
        }
        let scope = Scope::Prefix(i);
        self.skipped.retain(|(s, _), _| *s != scope);
        let mut fresh = Vec::with_capacity(entries.len());
        for (k, v) in &entries {
            match self.parse_kv(scope, k, v) {
                Ok((_, ep)) => fresh.push(ep),
                Err((bad_key, reason)) => self.skip(scope, k, bad_key, &reason),
            }
        }
        self.set_endpoints(i, sorted(fresh))
    }

    fn replace_root(&mut self, j: usize, entries: Vec<(Vec<u8>, Vec<u8>)>) -> bool {
        if j >= self.watched.roots.len() {
            return false;
        }
        let scope = Scope::Root(j);
        self.skipped.retain(|(s, _), _| *s != scope);
        let mut fresh: BTreeMap<String, Shadow> = BTreeMap::new();
        for (k, v) in &entries {
            match self.parse_kv(scope, k, v) {
                Ok((Some(prefix), ep)) => fresh
                    .entry(prefix.name().to_string())
                    .or_insert_with(|| Shadow {
                        prefix,
                        endpoints: Vec::new(),
                    })
                    .endpoints
                    .push(ep),
                Ok((None, _)) => {}
                Err((bad_key, reason)) => self.skip(scope, k, bad_key, &reason),
            }
        }
        let before: BTreeSet<String> = self
            .services
            .iter()
            .filter(|s| s.origin == scope)
            .map(|s| s.prefix.name().to_string())
            .chain(
                self.shadowed
                    .iter()
                    .filter(|(_, roots)| roots.contains_key(&j))
                    .map(|(name, _)| name.clone()),
            )
            .collect();
        let mut changed = false;
        for name in before.iter().filter(|n| !fresh.contains_key(*n)) {
            changed |= self.root_set(j, name, None);
        }
        for (name, mut shadow) in fresh {
            shadow.endpoints = sorted(shadow.endpoints);
            changed |= self.root_set(j, &name, Some(shadow));
        }
        changed
    }

    /// Root `j`'s endpoints for service `name` are now `listed` (`None`: it has none).
    fn root_set(&mut self, j: usize, name: &str, listed: Option<Shadow>) -> bool {
        let scope = Scope::Root(j);
        let Some(idx) = self.by_name.get(name).copied() else {
            return match listed {
                Some(s) => {
                    self.add_service(scope, s.prefix, s.endpoints);
                    true
                }
                None => false,
            };
        };
        let owner = self.services[idx].origin;
        if let Scope::Prefix(_) = owner {
            if let Some(s) = listed {
                let why = self.clash(name, owner);
                for ep in &s.endpoints {
                    self.skip(scope, s.prefix.endpoint_key(ep.addr).as_bytes(), true, &why);
                }
            }
            return false;
        }
        if owner == scope {
            let endpoints = listed.map(|s| s.endpoints).unwrap_or_default();
            let changed = self.set_endpoints(idx, endpoints);
            return self.settle(name) || changed;
        }
        let keys: Vec<String> = match listed {
            Some(s) => {
                let keys = s
                    .endpoints
                    .iter()
                    .map(|e| s.prefix.endpoint_key(e.addr))
                    .collect();
                self.shadowed
                    .entry(name.to_string())
                    .or_default()
                    .insert(j, s);
                keys
            }
            None => {
                if let Some(roots) = self.shadowed.get_mut(name) {
                    roots.remove(&j);
                    if roots.is_empty() {
                        self.shadowed.remove(name);
                    }
                }
                Vec::new()
            }
        };
        let changed = self.settle(name);
        let owner = self.services[idx].origin;
        if owner != scope {
            let why = self.clash(name, owner);
            for key in keys {
                self.skip(scope, key.as_bytes(), true, &why);
            }
        }
        changed
    }

    /// Lends the template context to `f` without copying it.
    pub fn with_context<R>(&mut self, f: impl FnOnce(&tera::Context) -> R) -> R {
        let context = std::mem::take(&mut self.context);
        let ctx = match tera::Context::from_value(context) {
            Ok(ctx) => ctx,
            // The context is always an object; rebuild it should that ever not hold.
            Err(_) => tera::Context::from_value(self.build_context()).unwrap_or_default(),
        };
        let out = f(&ctx);
        self.context = ctx.into_json();
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
        let slot = self.context.get_mut("services")?.get_mut(&name)?;
        let service = std::mem::take(slot);
        let Ok(ctx) =
            tera::Context::from_value(json!({ "name": name, "service": service, "first": first }))
        else {
            // An object always converts; should that ever not hold, rebuild what was lent.
            self.context = self.build_context();
            return None;
        };
        let out = f(&ctx);
        let mut back = ctx.into_json();
        let service = back.get_mut("service").map(std::mem::take);
        match (
            service,
            self.context
                .get_mut("services")
                .and_then(|m| m.get_mut(&name)),
        ) {
            (Some(service), Some(slot)) => *slot = service,
            _ => self.context = self.build_context(),
        }
        Some(out)
    }

    /// The template context as JSON (`Null` unless the catalog keeps it). (Tests.)
    #[cfg(test)]
    pub fn context_json(&self) -> &Value {
        &self.context
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

    const P0: Scope = Scope::Prefix(0);
    const P1: Scope = Scope::Prefix(1);
    const R0: Scope = Scope::Root(0);
    const R1: Scope = Scope::Root(1);

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

    /// The services in the context, by name: their endpoints' keys.
    fn context_keys(c: &Catalog) -> BTreeMap<String, Vec<String>> {
        c.context_json()["services"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(name, s)| {
                assert_eq!(s["name"], name.as_str());
                let keys = s["endpoints"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| e["key"].as_str().unwrap().to_string())
                    .collect();
                (name.clone(), keys)
            })
            .collect()
    }

    /// Every service's name, its prefix and its endpoints' addresses, from the catalog's own
    /// lists; checked against the context, the cached lines and the name index.
    fn state(c: &Catalog) -> BTreeMap<String, (String, Vec<String>)> {
        let mut out = BTreeMap::new();
        for (i, s) in c.services().iter().enumerate() {
            let name = s.prefix.name().to_string();
            assert_eq!(c.by_name.get(&name), Some(&i), "name index of {name}");
            assert_eq!(s.server_lines().len(), s.endpoints.len(), "lines of {name}");
            let addrs: Vec<String> = s.endpoints.iter().map(|e| e.addr.to_string()).collect();
            let keys: Vec<String> = s
                .endpoints
                .iter()
                .map(|e| s.prefix.endpoint_key(e.addr))
                .collect();
            assert_eq!(context_keys(c).get(&name), Some(&keys), "context of {name}");
            out.insert(name, (s.prefix.to_string(), addrs));
        }
        assert_eq!(context_keys(c).len(), c.services().len());
        assert_eq!(c.by_name.len(), c.services().len());
        out
    }

    fn put(key: &str) -> KvChange {
        KvChange::Put {
            key: key.as_bytes().to_vec(),
            value: b"running".to_vec(),
        }
    }

    fn del(key: &str) -> KvChange {
        KvChange::Delete {
            key: key.as_bytes().to_vec(),
        }
    }

    fn changes(scope: Scope, changes: Vec<KvChange>) -> WatchEvent {
        WatchEvent::Changes {
            scope,
            revision: 2,
            changes,
        }
    }

    fn listing(scopes: Vec<(Scope, &[&str])>) -> WatchEvent {
        WatchEvent::Snapshot {
            revision: 1,
            scopes: scopes
                .into_iter()
                .map(|(s, keys)| {
                    let entries = keys
                        .iter()
                        .map(|k| (k.as_bytes().to_vec(), b"running".to_vec()))
                        .collect();
                    (s, entries)
                })
                .collect(),
        }
    }

    /// Runs `f` and returns what it logged (warnings and up).
    fn logged<R>(f: impl FnOnce() -> R) -> (R, String) {
        #[derive(Clone, Default)]
        struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || out.clone())
            .finish();
        let r = tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        (r, text)
    }

    #[test]
    fn puts_and_deletes_keep_context_sorted_and_in_sync() {
        let mut c = cat();
        assert!(c.put(P0, b"/service/10.0.0.2:80", b"running"));
        assert!(c.put(P0, b"/service/10.0.0.1:80", b"running"));
        assert!(c.put(P0, b"/service/[::1]:80", b"running"));
        assert!(
            !c.put(P0, b"/service/10.0.0.1:80", b"running"),
            "same value is no change"
        );
        assert!(c.put(P0, b"/service/10.0.0.1:80", br#"{"weight":5}"#));
        assert_eq!(names(&c, 0), ["10.0.0.1_80", "10.0.0.2_80", "--1_80"]);
        assert_eq!(
            c.context_json()["services"]["service"]["endpoints"][0]["weight"],
            5
        );
        assert!(c.delete(P0, b"/service/10.0.0.2:80"));
        assert!(!c.delete(P0, b"/service/10.0.0.2:80"));
        assert_eq!(names(&c, 0), ["10.0.0.1_80", "--1_80"]);
        assert_eq!(c.context_json(), &{
            let mut fresh = cat();
            fresh.replace(
                P0,
                vec![
                    (b"/service/[::1]:80".to_vec(), b"running".to_vec()),
                    (
                        b"/service/10.0.0.1:80".to_vec(),
                        br#"{"weight":5}"#.to_vec(),
                    ),
                ],
            );
            fresh.context
        });
    }

    #[test]
    fn invalid_put_removes_the_endpoint() {
        let mut c = cat();
        assert!(c.put(P0, b"/service/10.0.0.1:80", b"running"));
        assert!(c.put(P0, b"/service/10.0.0.1:80", b"garbage"));
        assert!(c.endpoints(0).is_empty());
        assert!(!c.put(P0, b"/service/not-an-endpoint", b"running"));
    }

    #[test]
    fn snapshot_replaces_and_reports_no_change_when_equal() {
        let mut c = cat();
        let entries = vec![(b"/web/10.0.0.9:8080".to_vec(), b"running".to_vec())];
        assert!(c.replace(P1, entries.clone()));
        assert!(!c.replace(P1, entries));
        assert_eq!(names(&c, 1), ["10.0.0.9_8080"]);
        assert!(c.replace(P1, vec![]));
        assert!(names(&c, 1).is_empty());
    }

    #[test]
    fn a_full_snapshot_replaces_every_service_and_drops_missing_keys() {
        // What the watcher sends after etcd was wiped or restored: every service, as listed.
        let mut c = cat();
        c.put(P0, b"/service/10.0.0.1:80", b"running");
        c.put(P0, b"/service/10.0.0.2:80", b"running");
        c.put(P1, b"/web/10.0.0.9:80", b"running");
        let snapshot = listing(vec![(P0, &["/service/10.0.0.3:80"]), (P1, &[])]);
        assert!(c.apply(snapshot.clone(), Instant::now()));
        assert_eq!(names(&c, 0), ["10.0.0.3_80"]);
        assert!(names(&c, 1).is_empty());
        assert!(
            !c.apply(snapshot, Instant::now()),
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
        c.put(P0, b"/service/10.0.0.1:80", b"running");
        let n = c.with_context(|ctx| ctx.get("services").is_some());
        assert!(n);
        assert_eq!(names(&c, 0), ["10.0.0.1_80"]);
    }

    #[test]
    fn a_root_service_appears_with_its_first_valid_endpoint_not_before() {
        let mut c = Catalog::with_roots(&["/web"], &["/services"]).unwrap();
        let layout = c.layout();
        let t = Instant::now();
        // A valid key with an invalid value, and an invalid key of a valid name: no service.
        let bad = WatchEvent::Changes {
            scope: R0,
            revision: 2,
            changes: vec![
                KvChange::Put {
                    key: b"/services/newapp/10.0.0.1:80".to_vec(),
                    value: b"stopped".to_vec(),
                },
                put("/services/newapp/10.0.0.1:0"),
                put("/services/newapp"),
            ],
        };
        assert!(!c.apply(bad, t));
        assert!(c.service("newapp").is_none());
        assert_eq!(c.layout(), layout);
        assert_eq!(c.skipped_by_reason(), (2, 1));
        // The first valid endpoint: the service, named after the child, with its prefix.
        assert!(c.apply(changes(R0, vec![put("/services/newapp/10.0.0.1:80")]), t));
        assert_ne!(c.layout(), layout, "a service was added");
        assert_eq!(c.skipped_by_reason(), (2, 0), "the key is taken now");
        let svc = c.service("newapp").unwrap();
        assert_eq!(svc.origin(), R0);
        assert_eq!(svc.prefix.as_str(), "/services/newapp");
        let s = &c.context_json()["services"]["newapp"];
        assert_eq!(s["name"], "newapp");
        assert_eq!(s["prefix"], "/services/newapp");
        assert_eq!(s["endpoints"][0]["key"], "/services/newapp/10.0.0.1:80");
        assert_eq!(
            state(&c),
            BTreeMap::from([
                ("web".into(), ("/web".into(), vec![])),
                (
                    "newapp".into(),
                    ("/services/newapp".into(), vec!["10.0.0.1:80".into()])
                ),
            ])
        );
        // More endpoints and another service, through the one watch of the root.
        assert!(c.apply(
            changes(
                R0,
                vec![
                    put("/services/newapp/10.0.0.2:80"),
                    put("/services/api/10.0.0.3:80")
                ]
            ),
            t
        ));
        assert_eq!(
            state(&c)["newapp"].1,
            ["10.0.0.1:80".to_string(), "10.0.0.2:80".into()]
        );
        assert_eq!(state(&c)["api"].1, ["10.0.0.3:80".to_string()]);
    }

    #[test]
    fn hostile_service_names_are_skipped_once_and_never_reach_the_context() {
        let mut c = Catalog::with_roots(&[], &["/services"]).unwrap();
        let long = format!("/services/{}/1.2.3.4:80", "a".repeat(10 * 1024));
        let mut hostile: Vec<Vec<u8>> = vec![
            b"/services/bad name/1.2.3.4:80".to_vec(),
            b"/services/x#y/1.2.3.4:80".to_vec(),
            b"/services/x\nbackend evil/1.2.3.4:80".to_vec(),
            b"/services/x\xff/1.2.3.4:80".to_vec(),
            b"/services//1.2.3.4:80".to_vec(),
            b"/services/1.2.3.4:80".to_vec(),
            b"/services/a/b/1.2.3.4:80".to_vec(),
        ];
        hostile.push(long.into_bytes());
        let event = WatchEvent::Changes {
            scope: R0,
            revision: 2,
            changes: hostile
                .iter()
                .map(|k| KvChange::Put {
                    key: k.clone(),
                    value: b"running".to_vec(),
                })
                .collect(),
        };
        let (changed, log) = logged(|| c.apply(event.clone(), Instant::now()));
        assert!(!changed);
        assert!(c.services().is_empty(), "{:?}", state(&c));
        assert_eq!(context_keys(&c).len(), 0);
        assert_eq!(c.skipped_by_reason(), (hostile.len(), 0));
        let warnings: Vec<&str> = log.lines().filter(|l| l.contains("skipped")).collect();
        assert_eq!(warnings.len(), hostile.len(), "one warning per key:\n{log}");
        for shown in [
            "/services/bad name/1.2.3.4:80",
            "/services/x#y/1.2.3.4:80",
            "/services/x\\nbackend evil/1.2.3.4:80",
            "/services/x\u{fffd}/1.2.3.4:80",
            "/services/a/b/1.2.3.4:80",
            "/services/aaaaaaaa",
        ] {
            assert!(log.contains(shown), "no warning names {shown}:\n{log}");
        }
        assert!(
            log.len() < 8 * 1024,
            "a long key is shortened in the log ({} bytes)",
            log.len()
        );
        // The same keys again: no second warning. Deleted: no longer counted.
        let (_, again) = logged(|| c.apply(event, Instant::now()));
        assert_eq!(again, "", "warned once");
        let deletes = hostile
            .iter()
            .map(|k| KvChange::Delete { key: k.clone() })
            .collect();
        c.apply(changes(R0, deletes), Instant::now());
        assert_eq!(c.skipped_by_reason(), (0, 0));
    }

    #[test]
    fn a_prefix_keeps_its_name_against_a_root() {
        let mut c = Catalog::with_roots(&["/web"], &["/services"]).unwrap();
        let t = Instant::now();
        let (changed, log) =
            logged(|| c.apply(changes(R0, vec![put("/services/web/10.0.0.1:80")]), t));
        assert!(!changed);
        assert!(
            log.contains("/services/web/10.0.0.1:80") && log.contains("--prefix /web"),
            "the warning names the key and the prefix: {log}"
        );
        assert_eq!(c.skipped_by_reason(), (1, 0));
        assert_eq!(state(&c)["web"], ("/web".to_string(), vec![]));
        let (_, again) = logged(|| c.apply(changes(R0, vec![put("/services/web/10.0.0.1:80")]), t));
        assert_eq!(again, "", "warned once");
        // The prefix's own endpoints are its own; the root's never join them.
        c.apply(changes(P0, vec![put("/web/10.0.0.2:80")]), t);
        c.apply(listing(vec![(R0, &["/services/web/10.0.0.1:80"])]), t);
        assert_eq!(state(&c)["web"].1, ["10.0.0.2:80".to_string()]);
        assert_eq!(c.services().len(), 1);
    }

    #[test]
    fn between_roots_the_first_in_flag_order_that_holds_endpoints_wins() {
        let mut c = Catalog::with_roots(&[], &["/a", "/b"]).unwrap();
        let t = Instant::now();
        c.apply(changes(R1, vec![put("/b/x/10.0.0.2:80")]), t);
        assert_eq!(state(&c)["x"], ("/b/x".into(), vec!["10.0.0.2:80".into()]));
        // The first root gets the name: it takes the service over; the second's key is
        // skipped, named once with the root that holds the name.
        let (changed, log) = logged(|| c.apply(changes(R0, vec![put("/a/x/10.0.0.1:80")]), t));
        assert!(changed);
        assert_eq!(state(&c)["x"], ("/a/x".into(), vec!["10.0.0.1:80".into()]));
        assert!(
            log.contains("/b/x/10.0.0.2:80") && log.contains("--root /a"),
            "{log}"
        );
        assert_eq!(c.skipped_by_reason(), (1, 0));
        // A later key of the second root: kept aside, warned once.
        let (changed, log) = logged(|| c.apply(changes(R1, vec![put("/b/x/10.0.0.3:80")]), t));
        assert!(!changed);
        assert_eq!(log.lines().count(), 1, "{log}");
        // The first root loses its last endpoint: the second's take over at once (no grace).
        assert!(c.apply(changes(R0, vec![del("/a/x/10.0.0.1:80")]), t));
        assert_eq!(
            state(&c)["x"],
            (
                "/b/x".into(),
                vec!["10.0.0.2:80".into(), "10.0.0.3:80".into()]
            )
        );
        assert_eq!(c.skipped_by_reason(), (0, 0));
        assert_eq!(c.next_expiry(), None);
        // The same end state from one listing, whatever order the keys came in.
        let mut fresh = Catalog::with_roots(&[], &["/a", "/b"]).unwrap();
        fresh.apply(
            listing(vec![
                (R0, &[]),
                (R1, &["/b/x/10.0.0.3:80", "/b/x/10.0.0.2:80"]),
            ]),
            t,
        );
        assert_eq!(state(&fresh), state(&c));
        let mut both = Catalog::with_roots(&[], &["/a", "/b"]).unwrap();
        both.apply(
            listing(vec![
                (R1, &["/b/x/10.0.0.2:80"]),
                (R0, &["/a/x/10.0.0.1:80"]),
            ]),
            t,
        );
        assert_eq!(
            state(&both)["x"],
            ("/a/x".into(), vec!["10.0.0.1:80".into()])
        );
    }

    #[test]
    fn a_root_service_without_endpoints_is_kept_for_the_grace_then_removed() {
        let grace = Duration::from_secs(300);
        let mut c = Catalog::with_roots(&["/web"], &["/services"])
            .unwrap()
            .with_grace(grace);
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        c.apply(
            changes(
                R0,
                vec![
                    put("/services/a/10.0.0.1:80"),
                    put("/services/b/10.0.0.2:80"),
                ],
            ),
            t0,
        );
        let version = c.service("a").unwrap().version();
        assert_eq!(c.next_expiry(), None);
        // Its last endpoint goes: kept, empty, until the grace ends.
        assert!(c.apply(changes(R0, vec![del("/services/a/10.0.0.1:80")]), t0 + s));
        assert_eq!(state(&c)["a"], ("/services/a".into(), vec![]));
        assert_eq!(c.next_expiry(), Some(t0 + s + grace));
        assert!(c.expire(t0 + grace).is_empty());
        // Back within the grace: nothing is removed.
        assert!(c.apply(
            changes(R0, vec![put("/services/a/10.0.0.3:80")]),
            t0 + grace
        ));
        assert_eq!(c.next_expiry(), None);
        assert!(c.expire(t0 + grace * 3).is_empty());
        // Gone again: removed once the grace has run out, from every view.
        c.apply(
            changes(R0, vec![del("/services/a/10.0.0.3:80")]),
            t0 + grace * 3,
        );
        let layout = c.layout();
        assert!(c.expire(t0 + grace * 4 - s).is_empty());
        assert_eq!(c.expire(t0 + grace * 4), ["a"]);
        assert_ne!(c.layout(), layout);
        assert!(c.service("a").is_none());
        assert_eq!(c.next_expiry(), None);
        assert_eq!(
            state(&c),
            BTreeMap::from([
                ("web".into(), ("/web".into(), vec![])),
                (
                    "b".into(),
                    ("/services/b".into(), vec!["10.0.0.2:80".into()])
                ),
            ])
        );
        // Prefix services are never removed, however long they stay empty.
        assert!(c.expire(t0 + grace * 100).is_empty());
        // Back later: a new service, with a version never seen before.
        c.apply(
            changes(R0, vec![put("/services/a/10.0.0.1:80")]),
            t0 + grace * 5,
        );
        assert!(c.service("a").unwrap().version() > version);
        assert_eq!(state(&c)["a"].1, ["10.0.0.1:80".to_string()]);
        assert_eq!(
            state(&c)["b"].1,
            ["10.0.0.2:80".to_string()],
            "b moved down"
        );
        c.apply(
            changes(R0, vec![put("/services/b/10.0.0.9:80")]),
            t0 + grace * 5,
        );
        assert_eq!(
            state(&c)["b"].1,
            ["10.0.0.2:80".to_string(), "10.0.0.9:80".into()]
        );
    }

    #[test]
    fn a_listing_without_a_root_service_starts_its_grace_it_does_not_drop_it() {
        let grace = Duration::from_secs(60);
        let mut c = Catalog::with_roots(&[], &["/services"])
            .unwrap()
            .with_grace(grace);
        let t0 = Instant::now();
        c.apply(
            listing(vec![(
                R0,
                &["/services/a/10.0.0.1:80", "/services/b/10.0.0.2:80"],
            )]),
            t0,
        );
        assert_eq!(c.services().len(), 2);
        let s = Duration::from_secs(1);
        assert!(c.apply(listing(vec![(R0, &["/services/b/10.0.0.2:80"])]), t0 + s));
        assert_eq!(state(&c)["a"], ("/services/a".into(), vec![]));
        assert_eq!(c.next_expiry(), Some(t0 + s + grace));
        // The same listing again does not start the grace over.
        assert!(!c.apply(
            listing(vec![(R0, &["/services/b/10.0.0.2:80"])]),
            t0 + s * 30
        ));
        assert_eq!(c.next_expiry(), Some(t0 + s + grace));
        assert_eq!(c.expire(t0 + s + grace), ["a"]);
        assert_eq!(state(&c).len(), 1);
        // A listing that holds it again brings it back as new.
        assert!(c.apply(
            listing(vec![(R0, &["/services/a/10.0.0.1:80"])]),
            t0 + grace * 2
        ));
        assert_eq!(state(&c)["a"].1, ["10.0.0.1:80".to_string()]);
        assert_eq!(state(&c)["b"].1, Vec::<String>::new(), "b in its grace");
    }

    #[test]
    fn a_grace_that_never_ends_does_not_overflow() {
        let mut c = Catalog::with_roots(&[], &["/services"])
            .unwrap()
            .with_grace(Duration::MAX);
        let t0 = Instant::now();
        c.apply(changes(R0, vec![put("/services/a/10.0.0.1:80")]), t0);
        c.apply(changes(R0, vec![del("/services/a/10.0.0.1:80")]), t0);
        assert_eq!(c.next_expiry(), None);
        assert!(c.expire(t0 + Duration::from_secs(1 << 30)).is_empty());
        assert!(c.service("a").is_some());
    }
}

//! Which of a container's ports the agent registers, under which service names, with which
//! health check, tags and weight: read from the container's labels and environment. Pure: it
//! reads [`Facts`] (what an inspect said) and talks to nothing.
//!
//! The rules, in order of precedence for every setting: a `dockreg.*` label, then the
//! registrator name as a label (`SERVICE_NAME`), then the registrator name in the container's
//! environment (`-e SERVICE_NAME=web`), so registrator's users can switch without relabelling.
//!
//! - Opt-in: a container is registered only when it names a service: `dockreg.service=web`
//!   (or `SERVICE_NAME`) for the container, `dockreg.port.8000.service=api` (or
//!   `SERVICE_8000_NAME`) for one port. `dockreg.ignore=true` or any `SERVICE_IGNORE` keeps it
//!   out; `dockreg.port.8000.ignore` / `SERVICE_8000_IGNORE` one port.
//! - Ports: every published TCP port, or only `dockreg.port=8000`. When the container-wide name
//!   covers more than one port, each is registered as `<name>-<port>` (registrator's rule).
//! - Check: `dockreg.check` = `tcp`, `http:/path`, `docker` (the container's own HEALTHCHECK
//!   status) or `none`; default `docker` for a container that has a HEALTHCHECK, else `tcp`.
//!   `dockreg.check.status`, `.interval`, `.timeout`, `.rise`, `.fall` tune it (registrator's
//!   `SERVICE_CHECK_HTTP`, `SERVICE_CHECK_TCP`, `SERVICE_CHECK_INTERVAL`,
//!   `SERVICE_CHECK_TIMEOUT` are read too).
//! - Tags and weight: `dockreg.tags=canary,zone=a`, `dockreg.weight=50` (per port:
//!   `dockreg.port.8000.tags`, `dockreg.port.8000.weight`; registrator's `SERVICE_TAGS`).
//!
//! Everything here is untrusted (whoever can start a container writes its labels): a name,
//! tag or weight that breaks the rules the watcher applies to etcd keys and values, or a value
//! longer than [`MAX_LABEL`] bytes, keeps that port out with a [`Problem`] naming the
//! container and the label; nothing of it reaches etcd.

use crate::core::endpoint::{check_tag, MAX_TAGS, MAX_WEIGHT};
use crate::core::keys::ServicePrefix;
use crate::sidekick::check::{Check, StatusSet};
use crate::sidekick::docker::select_binding;
use bollard::models::PortBinding;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The longest label or environment value read, in bytes.
pub(crate) const MAX_LABEL: usize = 1024;

/// What the agent needs to know of one container (from an inspect).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Facts {
    /// The full container id.
    pub(crate) id: String,
    /// The name, without Docker's leading `/`.
    pub(crate) name: String,
    pub(crate) hostname: String,
    pub(crate) labels: HashMap<String, String>,
    /// `KEY=VALUE` entries of `Config.Env`, split.
    pub(crate) env: HashMap<String, String>,
    /// `NetworkSettings.Ports` (of the container whose network namespace it uses).
    pub(crate) ports: HashMap<String, Option<Vec<PortBinding>>>,
    pub(crate) running: bool,
    pub(crate) paused: bool,
    /// `--network host`: container ports are host ports.
    pub(crate) host_network: bool,
    /// The HEALTHCHECK status, `None` for a container without one.
    pub(crate) health: Option<DockerHealth>,
}

impl Facts {
    /// The 12-digit short id.
    pub(crate) fn short_id(&self) -> &str {
        self.id.get(..12).unwrap_or(&self.id)
    }
}

/// A container's Docker HEALTHCHECK status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DockerHealth {
    Starting,
    Healthy,
    Unhealthy,
}

/// How one registration's health is decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CheckKind {
    /// The agent probes the registered address.
    Probe(Check),
    /// The container's own Docker HEALTHCHECK status.
    Docker,
    /// Registered while the container runs.
    None,
}

/// A health check and its schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CheckSpec {
    pub(crate) kind: CheckKind,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
}

/// The agent's defaults for what labels do not say (its flags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Defaults {
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) rise: u32,
    pub(crate) fall: u32,
}

/// One endpoint to register.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    /// The service name: one valid path segment.
    pub(crate) service: String,
    pub(crate) container_port: u16,
    /// `<host ip>:<host port>`: the key's address, and what the probe connects to.
    pub(crate) addr: SocketAddr,
    pub(crate) check: CheckSpec,
    pub(crate) tags: Vec<String>,
    pub(crate) weight: Option<u16>,
}

/// Why a port of a container is not registered although it asked to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem(pub(crate) String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to register for one container, and what was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) wanted: Vec<Wanted>,
    pub(crate) problems: Vec<Problem>,
}

/// Shows an untrusted value in a message: escaped, at most 60 characters.
fn shown(value: &str) -> String {
    let mut s: String = value.chars().take(60).collect();
    if s.len() < value.len() {
        s.push('…');
    }
    format!("{:?}", s)
}

/// A setting read from the container: where it came from (`label dockreg.service`,
/// `env SERVICE_NAME`) and its value.
struct Setting<'a> {
    source: String,
    value: &'a str,
}

struct Reader<'a> {
    facts: &'a Facts,
    problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    fn who(&self) -> String {
        format!("container {} ({})", self.facts.name, self.facts.short_id())
    }

    /// The first of `dockreg` (a label), then `registrator` as a label and as an environment
    /// variable. A value longer than [`MAX_LABEL`] is a problem and reads as absent.
    fn get(&mut self, dockreg: &str, registrator: Option<&str>) -> Result<Option<Setting<'a>>, ()> {
        let facts = self.facts;
        let found = facts
            .labels
            .get(dockreg)
            .map(|v| (format!("label {dockreg}"), v))
            .or_else(|| {
                registrator.and_then(|r| {
                    facts
                        .labels
                        .get(r)
                        .map(|v| (format!("label {r}"), v))
                        .or_else(|| facts.env.get(r).map(|v| (format!("env {r}"), v)))
                })
            });
        match found {
            Some((source, value)) if value.len() > MAX_LABEL => {
                let p = format!(
                    "{}: {source} is {} bytes, more than the {MAX_LABEL} allowed; not registered",
                    self.who(),
                    value.len()
                );
                self.problems.push(Problem(p));
                Err(())
            }
            Some((source, value)) => Ok(Some(Setting {
                source,
                value: value.as_str(),
            })),
            None => Ok(None),
        }
    }

    fn problem(&mut self, setting: &Setting<'_>, why: &str) {
        let p = format!(
            "{}: {} = {}: {why}; not registered",
            self.who(),
            setting.source,
            shown(setting.value)
        );
        self.problems.push(Problem(p));
    }
}

/// Whether a label value says yes (`SERVICE_IGNORE` counts any non-empty value but `false`).
fn truthy(value: &str) -> bool {
    !matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "" | "false" | "0" | "no"
    )
}

/// Checks a service name as the watcher checks `<root>/<name>/`: one path segment of ASCII
/// letters, digits, `-`, `_` and `.`, at most 64 characters.
fn check_service(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') {
        return Err("a service name is one non-empty path segment".into());
    }
    ServicePrefix::parse(&format!("/{name}"))
        .map(drop)
        .map_err(|e| e.reason.to_string())
}

/// The published TCP container ports.
fn published(ports: &HashMap<String, Option<Vec<PortBinding>>>) -> BTreeSet<u16> {
    ports
        .iter()
        .filter(|(_, b)| b.as_ref().is_some_and(|b| !b.is_empty()))
        .filter_map(|(k, _)| k.strip_suffix("/tcp")?.parse().ok())
        .collect()
}

/// Decides what to register for `facts` on host address `ip`. A container that is not
/// running, paused, ignored or not opted in gets an empty plan without problems.
pub(crate) fn plan(facts: &Facts, defaults: &Defaults, ip: IpAddr) -> Plan {
    if !facts.running || facts.paused {
        return Plan::default();
    }
    let mut r = Reader {
        facts,
        problems: Vec::new(),
    };
    let ignored = |r: &mut Reader<'_>, dockreg: &str, registrator: &str| match r
        .get(dockreg, Some(registrator))
    {
        Ok(Some(s)) => truthy(s.value),
        Ok(None) => false,
        Err(()) => true,
    };
    if ignored(&mut r, "dockreg.ignore", "SERVICE_IGNORE") {
        return Plan {
            wanted: Vec::new(),
            problems: r.problems,
        };
    }
    let Ok(base) = r.get("dockreg.service", Some("SERVICE_NAME")) else {
        return Plan {
            wanted: Vec::new(),
            problems: r.problems,
        };
    };
    let base = base.filter(|s| !s.value.trim().is_empty());
    let published = published(&facts.ports);

    // The ports to consider: `dockreg.port`, else the published ones and any named per port.
    let mut ports: BTreeSet<u16> = BTreeSet::new();
    let mut only = false;
    match r.get("dockreg.port", None) {
        Ok(Some(s)) => match s.value.trim().parse::<u16>() {
            Ok(p) if p > 0 => {
                ports.insert(p);
                only = true;
            }
            _ => {
                r.problem(&s, "not a port number (1-65535)");
                return Plan {
                    wanted: Vec::new(),
                    problems: r.problems,
                };
            }
        },
        Ok(None) => {
            ports.extend(published.iter().copied());
            for key in facts.labels.keys() {
                if let Some(p) = key
                    .strip_prefix("dockreg.port.")
                    .and_then(|rest| rest.strip_suffix(".service"))
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    ports.insert(p);
                }
            }
            for key in facts.labels.keys().chain(facts.env.keys()) {
                if let Some(p) = key
                    .strip_prefix("SERVICE_")
                    .and_then(|rest| rest.strip_suffix("_NAME"))
                    .and_then(|p| p.parse::<u16>().ok())
                {
                    ports.insert(p);
                }
            }
        }
        Err(()) => {
            return Plan {
                wanted: Vec::new(),
                problems: r.problems,
            }
        }
    }

    // Each port's own name, or the container-wide one.
    let mut named: Vec<(u16, Option<String>)> = Vec::new();
    for p in ports {
        if ignored(
            &mut r,
            &format!("dockreg.port.{p}.ignore"),
            &format!("SERVICE_{p}_IGNORE"),
        ) {
            continue;
        }
        match r.get(
            &format!("dockreg.port.{p}.service"),
            Some(&format!("SERVICE_{p}_NAME")),
        ) {
            Ok(Some(s)) if !s.value.trim().is_empty() => {
                let name = s.value.trim().to_string();
                match check_service(&name) {
                    Ok(()) => named.push((p, Some(name))),
                    Err(why) => r.problem(&s, &format!("not a service name: {why}")),
                }
            }
            Ok(_) => named.push((p, None)),
            Err(()) => {}
        }
    }
    let shared = named.iter().filter(|(_, n)| n.is_none()).count();
    let base_name = match &base {
        Some(s) => match check_service(s.value.trim()) {
            Ok(()) => Some(s.value.trim().to_string()),
            Err(why) => {
                let s = Setting {
                    source: s.source.clone(),
                    value: s.value,
                };
                r.problem(&s, &format!("not a service name: {why}"));
                None
            }
        },
        None => None,
    };

    if facts.host_network && !only && base_name.is_some() && named.is_empty() {
        let why = format!(
            "{}: uses host networking, so its ports are not published: label it \
             dockreg.port=<the port the app listens on>; not registered",
            r.who()
        );
        r.problems.push(Problem(why));
    }
    let check = read_check(&mut r, defaults);
    let mut wanted = Vec::new();
    for (p, own) in named {
        let service = match (own, &base_name) {
            (Some(n), _) => n,
            (None, Some(b)) if shared > 1 && !only => format!("{b}-{p}"),
            (None, Some(b)) => b.clone(),
            (None, None) => continue,
        };
        if check_service(&service).is_err() {
            let why = format!(
                "{}: service name {} for port {p} is longer than 64 characters; not registered",
                r.who(),
                shown(&service)
            );
            r.problems.push(Problem(why));
            continue;
        }
        let addr = if facts.host_network {
            if !only {
                let why = format!(
                    "{}: uses host networking, so its ports are not published: label it \
                     dockreg.port=<the port the app listens on>; not registered",
                    r.who()
                );
                r.problems.push(Problem(why));
                continue;
            }
            SocketAddr::new(ip, p)
        } else {
            match select_binding(&facts.ports, p, Some(ip)) {
                Ok(addr) => addr,
                Err(e) => {
                    let why = format!("{}: port {p}: {e}; not registered", r.who());
                    r.problems.push(Problem(why));
                    continue;
                }
            }
        };
        let Ok(tags) = read_tags(&mut r, p) else {
            continue;
        };
        let Ok(weight) = read_weight(&mut r, p) else {
            continue;
        };
        let Some(check) = check.clone() else {
            continue;
        };
        wanted.push(Wanted {
            service,
            container_port: p,
            addr,
            check,
            tags,
            weight,
        });
    }
    Plan {
        wanted,
        problems: r.problems,
    }
}

/// The port's tags, else the container's; an invalid one refuses the port.
fn read_tags(r: &mut Reader<'_>, port: u16) -> Result<Vec<String>, ()> {
    let own = r.get(
        &format!("dockreg.port.{port}.tags"),
        Some(&format!("SERVICE_{port}_TAGS")),
    )?;
    let setting = match own {
        Some(s) => Some(s),
        None => r.get("dockreg.tags", Some("SERVICE_TAGS"))?,
    };
    let Some(s) = setting else {
        return Ok(Vec::new());
    };
    let tags: Vec<&str> = s
        .value
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tags.len() > MAX_TAGS {
        r.problem(&s, &format!("more than {MAX_TAGS} tags"));
        return Err(());
    }
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        match check_tag(t) {
            Ok(t) => out.push(t),
            Err(_) => {
                r.problem(
                    &s,
                    &format!(
                        "tag {} may hold only ASCII letters, digits and . _ - : = / + (1 to 128 characters)",
                        shown(t)
                    ),
                );
                return Err(());
            }
        }
    }
    Ok(out)
}

/// The port's weight, else the container's; one outside 0-256 refuses the port.
fn read_weight(r: &mut Reader<'_>, port: u16) -> Result<Option<u16>, ()> {
    let own = r.get(
        &format!("dockreg.port.{port}.weight"),
        Some(&format!("SERVICE_{port}_WEIGHT")),
    )?;
    let setting = match own {
        Some(s) => Some(s),
        None => r.get("dockreg.weight", Some("SERVICE_WEIGHT"))?,
    };
    let Some(s) = setting else { return Ok(None) };
    match s.value.trim().parse::<u16>() {
        Ok(w) if w <= MAX_WEIGHT => Ok(Some(w)),
        _ => {
            r.problem(&s, &format!("not a weight (0-{MAX_WEIGHT})"));
            Err(())
        }
    }
}

fn read_duration(
    r: &mut Reader<'_>,
    dockreg: &str,
    registrator: &str,
    default: Duration,
) -> Option<Duration> {
    match r.get(dockreg, Some(registrator)) {
        Ok(Some(s)) => match humantime::parse_duration(s.value.trim()) {
            Ok(d) if d >= Duration::from_millis(100) && d <= Duration::from_secs(3600) => Some(d),
            _ => {
                r.problem(&s, "not a duration between 100ms and 1h (e.g. 5s)");
                None
            }
        },
        Ok(None) => Some(default),
        Err(()) => None,
    }
}

fn read_count(r: &mut Reader<'_>, dockreg: &str, default: u32) -> Option<u32> {
    match r.get(dockreg, None) {
        Ok(Some(s)) => match s.value.trim().parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Some(n),
            _ => {
                r.problem(&s, "not a count between 1 and 100");
                None
            }
        },
        Ok(None) => Some(default),
        Err(()) => None,
    }
}

/// The container's check; `None` (with a problem) when a label is invalid.
fn read_check(r: &mut Reader<'_>, d: &Defaults) -> Option<CheckSpec> {
    let interval = read_duration(
        r,
        "dockreg.check.interval",
        "SERVICE_CHECK_INTERVAL",
        d.interval,
    );
    let timeout = read_duration(
        r,
        "dockreg.check.timeout",
        "SERVICE_CHECK_TIMEOUT",
        d.timeout,
    );
    let rise = read_count(r, "dockreg.check.rise", d.rise);
    let fall = read_count(r, "dockreg.check.fall", d.fall);
    let kind = read_kind(r)?;
    Some(CheckSpec {
        kind,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
    })
}

fn read_kind(r: &mut Reader<'_>) -> Option<CheckKind> {
    let statuses = match r.get("dockreg.check.status", None).ok()? {
        Some(s) => match s.value.parse::<StatusSet>() {
            Ok(set) => set,
            Err(e) => {
                r.problem(&s, &e.to_string());
                return None;
            }
        },
        None => "200-399".parse::<StatusSet>().ok()?,
    };
    let http =
        |r: &mut Reader<'_>, s: &Setting<'_>, path: &str| match Check::http(path, statuses.clone())
        {
            Ok(c) => Some(CheckKind::Probe(c)),
            Err(e) => {
                let why = e.replace("--check-path", "path");
                r.problem(s, &why);
                None
            }
        };
    if let Some(s) = r.get("dockreg.check", None).ok()? {
        let v = s.value.trim();
        return match v {
            "tcp" => Some(CheckKind::Probe(Check::Tcp)),
            "none" => Some(CheckKind::None),
            "docker" if r.facts.health.is_some() => Some(CheckKind::Docker),
            "docker" => {
                r.problem(&s, "the container has no Docker HEALTHCHECK");
                None
            }
            "http" => http(r, &s, "/"),
            _ => match v.strip_prefix("http:") {
                Some(path) => http(r, &s, path),
                None => {
                    r.problem(&s, "expected tcp, http:/path, docker or none");
                    None
                }
            },
        };
    }
    if let Some(s) = r
        .get("dockreg.check.http", Some("SERVICE_CHECK_HTTP"))
        .ok()?
    {
        let path = s.value.trim().to_string();
        return http(r, &s, &path);
    }
    if let Some(s) = r.get("dockreg.check.tcp", Some("SERVICE_CHECK_TCP")).ok()? {
        if truthy(s.value) {
            return Some(CheckKind::Probe(Check::Tcp));
        }
    }
    Some(if r.facts.health.is_some() {
        CheckKind::Docker
    } else {
        CheckKind::Probe(Check::Tcp)
    })
}

#[cfg(test)]
mod tests;

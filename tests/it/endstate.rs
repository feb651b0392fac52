//! The end-state check that every steady-state and fault test ends with: for each backend,
//! the endpoints etcd holds (after the key and value rules), the `server` lines of the
//! rendered file, and HAProxy's own `show servers state` are the same set of
//! `(name, address, weight)`, and none of HAProxy's servers is in maintenance.
//!
//! The three views are read independently: etcd through the library's key and value rules
//! (the contract being tested is that the watcher follows them), the file with a small
//! line parser of its own, HAProxy through its admin socket.
//!
//! With roots ([`converged_rooted`]), etcd's services are the prefixes' and every root child
//! that holds a valid endpoint (a prefix keeps its name against a root, the first root in
//! order wins between roots), and every backend of the file and of HAProxy counts: a service
//! gone from etcd must be gone from both too (so a root service still in its
//! `--service-grace` does not agree yet). [`converged`] polls until the
//! three agree, then holds them equal over a window, and returns how long agreement took.

#![allow(dead_code)]

use crate::harness::World;
use dockreg::core::endpoint::parse_value;
use dockreg::core::keys::{parse_endpoint_key, parse_root_key, server_name, ServicePrefix};
use dockreg::haproxy::admin::ServerState;
use etcd_client::{Client, GetOptions};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// One server as all three views describe it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Server {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u16,
}

/// Backend name → its servers.
pub type View = BTreeMap<String, BTreeSet<Server>>;

/// What etcd holds under `prefixes`, after the key and value rules (skipped keys are left out,
/// as the watcher skips them).
pub async fn etcd_view(client: &Client, prefixes: &[&str]) -> Result<View, String> {
    let mut kv = client.kv_client();
    let mut view = View::new();
    for p in prefixes {
        let prefix = ServicePrefix::parse(p).map_err(|e| format!("prefix {p}: {e}"))?;
        let resp = kv
            .get(prefix.watch_key(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("etcd get {p}: {e}"))?;
        let servers = view.entry(prefix.name().to_string()).or_default();
        for kv in resp.kvs() {
            let (Ok(addr), Ok(meta)) = (
                parse_endpoint_key(&prefix, kv.key()),
                parse_value(kv.value()),
            ) else {
                continue;
            };
            servers.insert(Server {
                name: server_name(addr),
                addr,
                weight: meta.effective_weight(),
            });
        }
    }
    Ok(view)
}

/// What etcd holds under `prefixes` and `roots`, after the key and value rules and the naming
/// rules of roots: a root child with at least one valid endpoint is a service, unless a
/// prefix has its name or an earlier root holds endpoints for it.
pub async fn etcd_view_rooted(
    client: &Client,
    prefixes: &[&str],
    roots: &[&str],
) -> Result<View, String> {
    let mut view = etcd_view(client, prefixes).await?;
    let mut kv = client.kv_client();
    for r in roots {
        let root = ServicePrefix::parse(r).map_err(|e| format!("root {r}: {e}"))?;
        let resp = kv
            .get(root.watch_key(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| format!("etcd get {r}: {e}"))?;
        let mut found = View::new();
        for kv in resp.kvs() {
            let (Ok((service, addr)), Ok(meta)) =
                (parse_root_key(&root, kv.key()), parse_value(kv.value()))
            else {
                continue;
            };
            found
                .entry(service.name().to_string())
                .or_default()
                .insert(Server {
                    name: server_name(addr),
                    addr,
                    weight: meta.effective_weight(),
                });
        }
        for (name, servers) in found {
            view.entry(name).or_insert(servers);
        }
    }
    Ok(view)
}

/// Every `backend` section of a rendered file.
pub fn file_backends(path: &Path) -> Result<BTreeSet<String>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(
            |l| match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["backend", name, ..] => Some(name.to_string()),
                _ => None,
            },
        )
        .collect())
}

/// Every backend HAProxy runs (`show backend`).
pub async fn haproxy_backends(admin: &Path) -> Result<BTreeSet<String>, String> {
    let text = admin_command(admin, "show backend").await?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect())
}

/// The `server` lines of a rendered file, per `backend` section (`weight` defaults to 1, as
/// in HAProxy). Only the backends in `backends` are kept.
pub fn file_view(path: &Path, backends: &BTreeSet<String>) -> Result<View, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut view = View::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["backend", name, ..] => {
                current = Some(name.to_string());
                if backends.contains(*name) {
                    view.entry(name.to_string()).or_default();
                }
            }
            ["frontend" | "listen" | "defaults" | "global", ..] => current = None,
            ["server", name, addr, rest @ ..] => {
                let Some(backend) = current.as_ref().filter(|b| backends.contains(*b)) else {
                    continue;
                };
                let addr: SocketAddr = addr
                    .parse()
                    .map_err(|_| format!("{}: bad address in {line:?}", path.display()))?;
                let weight = rest
                    .iter()
                    .position(|w| *w == "weight")
                    .and_then(|i| rest.get(i + 1))
                    .map(|w| w.parse::<u16>())
                    .transpose()
                    .map_err(|_| format!("{}: bad weight in {line:?}", path.display()))?
                    .unwrap_or(1);
                view.entry(backend.clone()).or_default().insert(Server {
                    name: name.to_string(),
                    addr,
                    weight,
                });
            }
            _ => {}
        }
    }
    Ok(view)
}

/// `show servers state` through HAProxy's admin socket, for `backends`. A server in
/// maintenance is reported with weight `u16::MAX`, so it never matches a routed server.
pub async fn haproxy_view(admin: &Path, backends: &BTreeSet<String>) -> Result<View, String> {
    let text = admin_command(admin, "show servers state").await?;
    let states = ServerState::parse_all(&text)?;
    let mut view: View = backends
        .iter()
        .map(|b| (b.clone(), BTreeSet::new()))
        .collect();
    for s in states {
        let Some(servers) = view.get_mut(&s.backend) else {
            continue;
        };
        let ip = s.addr.parse().map_err(|_| {
            format!(
                "HAProxy server {}/{}: address {}",
                s.backend, s.name, s.addr
            )
        })?;
        servers.insert(Server {
            name: s.name.clone(),
            addr: SocketAddr::new(ip, s.port),
            weight: if s.in_maintenance() {
                u16::MAX
            } else {
                s.weight
            },
        });
    }
    Ok(view)
}

/// One command on HAProxy's admin socket (1 s deadline).
pub async fn admin_command(admin: &Path, cmd: &str) -> Result<String, String> {
    dockreg_testkit::haproxy::admin_command(admin, cmd, Duration::from_secs(1)).await
}

/// The three views at one moment.
#[derive(Debug, Clone)]
pub struct Views {
    pub etcd: View,
    pub file: View,
    pub haproxy: View,
}

impl Views {
    pub fn agree(&self) -> bool {
        self.etcd == self.file && self.file == self.haproxy
    }
}

/// Reads all three views of `prefixes` for `world` (its rendered output and admin socket).
pub async fn views(world: &World, prefixes: &[&str]) -> Result<Views, String> {
    views_of(
        &world.client,
        &world.haproxy.output,
        &world.haproxy.admin_socket,
        prefixes,
    )
    .await
}

/// Reads all three views from the given etcd client, output file and admin socket.
pub async fn views_of(
    client: &Client,
    output: &Path,
    admin: &Path,
    prefixes: &[&str],
) -> Result<Views, String> {
    views_rooted_of(client, output, admin, prefixes, &[]).await
}

/// [`views_of`] with `roots` too: then every backend of the file and of HAProxy counts, and
/// HAProxy's view holds only the backends it runs (an empty one is still one).
pub async fn views_rooted_of(
    client: &Client,
    output: &Path,
    admin: &Path,
    prefixes: &[&str],
    roots: &[&str],
) -> Result<Views, String> {
    let etcd = etcd_view_rooted(client, prefixes, roots).await?;
    let mut backends: BTreeSet<String> = etcd.keys().cloned().collect();
    let running = if roots.is_empty() {
        None
    } else {
        let running = haproxy_backends(admin).await?;
        backends.extend(file_backends(output)?);
        backends.extend(running.iter().cloned());
        Some(running)
    };
    let file = file_view(output, &backends)?;
    let mut haproxy = haproxy_view(admin, &backends).await?;
    if let Some(running) = running {
        haproxy.retain(|name, _| running.contains(name));
    }
    Ok(Views {
        etcd,
        file,
        haproxy,
    })
}

/// How long a converged state must hold before the check passes.
pub const HOLD: Duration = Duration::from_secs(1);

/// Waits until etcd, the file and HAProxy agree on `prefixes` (within `within`), then checks
/// that they keep agreeing for [`HOLD`]. Returns the time until they first agreed. Panics
/// with the three views when they do not converge or drift apart again.
pub async fn converged(world: &World, prefixes: &[&str], within: Duration) -> Duration {
    converged_with(world, prefixes, within, |_| true).await
}

/// Like [`converged`], but the agreed state must also satisfy `want` (e.g. "etcd holds these
/// endpoints"), so a test cannot pass on an agreement reached before the fault healed.
pub async fn converged_with(
    world: &World,
    prefixes: &[&str],
    within: Duration,
    want: impl Fn(&Views) -> bool,
) -> Duration {
    converged_on(
        &world.client,
        &world.haproxy.output,
        &world.haproxy.admin_socket,
        prefixes,
        within,
        want,
    )
    .await
}

/// [`converged_with`] over `prefixes` and `roots`: every service in etcd, and no other
/// backend in the file or in HAProxy.
pub async fn converged_rooted(
    world: &World,
    prefixes: &[&str],
    roots: &[&str],
    within: Duration,
    want: impl Fn(&Views) -> bool,
) -> Duration {
    converged_rooted_on(
        &world.client,
        &world.haproxy.output,
        &world.haproxy.admin_socket,
        prefixes,
        roots,
        within,
        want,
    )
    .await
}

/// [`converged_with`] over an explicit etcd client, output file and admin socket.
pub async fn converged_on(
    client: &Client,
    output: &Path,
    admin: &Path,
    prefixes: &[&str],
    within: Duration,
    want: impl Fn(&Views) -> bool,
) -> Duration {
    converged_rooted_on(client, output, admin, prefixes, &[], within, want).await
}

/// [`converged_on`] over `prefixes` and `roots`.
pub async fn converged_rooted_on(
    client: &Client,
    output: &Path,
    admin: &Path,
    prefixes: &[&str],
    roots: &[&str],
    within: Duration,
    want: impl Fn(&Views) -> bool,
) -> Duration {
    let started = Instant::now();
    let deadline = started + within;
    let mut last: Result<Views, String>;
    let took = loop {
        last = views_rooted_of(client, output, admin, prefixes, roots).await;
        if matches!(&last, Ok(v) if v.agree() && want(v)) {
            break started.elapsed();
        }
        if Instant::now() > deadline {
            panic!(
                "etcd, the file and HAProxy did not agree within {within:?}:\n{}",
                describe(&last)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let hold_until = Instant::now() + HOLD;
    while Instant::now() < hold_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = views_rooted_of(client, output, admin, prefixes, roots).await;
        if !matches!(&now, Ok(v) if v.agree() && want(v)) {
            panic!(
                "etcd, the file and HAProxy agreed after {took:?}, then drifted apart:\n{}",
                describe(&now)
            );
        }
    }
    took
}

fn describe(views: &Result<Views, String>) -> String {
    match views {
        Ok(v) => format!(
            "etcd:    {:?}\nfile:    {:?}\nhaproxy: {:?}",
            v.etcd, v.file, v.haproxy
        ),
        Err(e) => format!("could not read the views: {e}"),
    }
}

/// The addresses etcd holds for backend `name`.
pub fn etcd_addrs(v: &Views, name: &str) -> BTreeSet<SocketAddr> {
    v.etcd
        .get(name)
        .map(|s| s.iter().map(|s| s.addr).collect())
        .unwrap_or_default()
}

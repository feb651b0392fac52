//! Rendering: the operator's Tera templates, each paired with the output file it renders to.
//!
//! A template that fails to parse is reported with its file and line and does not replace the
//! last good version of itself, so etcd changes keep flowing while the operator fixes it.
//!
//! Rendering costs what changed, not everything: templates marked per-service keep each
//! service's part of the output and re-render only the services whose endpoints changed since
//! (the catalog versions every service); the built-in template is a concatenation of the
//! catalog's cached lines; a template that sees all services at once (the default for
//! operator templates) is rendered whole.
//!
//! - The built-in template is rendered natively from the catalog's cached `server` lines (a
//!   concatenation, so it stays fast at 100,000 endpoints); a test holds its output
//!   byte-identical to Tera's rendering of `templates/haproxy-backends.cfg.tera`, which
//!   operators copy and which `--template` renders through Tera.
//!   A part is kept with the version of the service it was rendered from: versions never
//!   repeat, so when services come and go (a root's services do) and the indices shift, a part
//!   is only ever reused for the very state it shows.
//! - A template holding the comment `{# dockreg:per-service #}` is rendered once per service,
//!   with `name`, `service` (`{name, prefix, endpoints}`) and `first` (true for the first
//!   service by name, for a header) in its context instead of `services`; the output is the
//!   parts in the order of the service names.

use crate::core::errors::error_chain;
use crate::watcher::catalog::{Catalog, Views};
use anyhow::{Context as _, Result};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The default template, shipped in `templates/` and built into the binary.
pub const DEFAULT_TEMPLATE: &str = include_str!("../../templates/haproxy-backends.cfg.tera");
/// How the built-in default template is named in messages.
pub const DEFAULT_TEMPLATE_NAME: &str = "<built-in templates/haproxy-backends.cfg.tera>";

/// One template and the file it renders to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSpec {
    /// `None` means the built-in default template.
    pub template: Option<PathBuf>,
    pub output: PathBuf,
}

impl TemplateSpec {
    /// The name the template goes by in messages: its path, or the built-in's name.
    pub fn name(&self) -> String {
        match &self.template {
            Some(p) => p.display().to_string(),
            None => DEFAULT_TEMPLATE_NAME.to_string(),
        }
    }
}

/// A template error, already formatted as `file:line:col: message` where the line is known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TemplateError(pub String);

/// How a template is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The built-in template, natively, per service.
    Builtin,
    /// Through Tera once, with every service in the context.
    Whole,
    /// Through Tera once per service (the template is marked `dockreg:per-service`).
    PerService,
}

/// One service's rendered part, as of a catalog version and whether it came first.
type Part = ((u64, bool), Result<String, TemplateError>);

/// The set of templates and their outputs.
pub struct Renderer {
    tera: tera::Tera,
    specs: Vec<TemplateSpec>,
    /// Source text of each template as last loaded successfully (for error line lookup).
    sources: Vec<String>,
    modes: Vec<Mode>,
    /// Per template rendered per service: each service's part (by catalog index).
    parts: Vec<Vec<Option<Part>>>,
    /// Per template, the catalog layout its parts are indexed by (see [`Catalog::layout`]).
    layouts: Vec<u64>,
    /// The names of the services whose parts were rendered, in turn. (Tests.)
    #[cfg(test)]
    rendered: Vec<String>,
}

/// Whether a template asks to be rendered per service: it holds a comment whose text is
/// `dockreg:per-service`.
fn is_per_service(source: &str) -> bool {
    let mut rest = source;
    while let Some(start) = rest.find("{#") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("#}") else {
            return false;
        };
        let text = after[..end].trim_matches(|c: char| c == '-' || c.is_whitespace());
        if text == "dockreg:per-service" {
            return true;
        }
        rest = &after[end + 2..];
    }
    false
}

fn mode_of(spec: &TemplateSpec, source: &str) -> Mode {
    match &spec.template {
        None => Mode::Builtin,
        Some(_) if is_per_service(source) => Mode::PerService,
        Some(_) => Mode::Whole,
    }
}

/// Finds `--> line:col` in a Tera/pest parse error.
fn parse_error_position(msg: &str) -> Option<(usize, usize)> {
    let at = msg.find("--> ")? + 4;
    let rest = &msg[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':'))
        .unwrap_or(rest.len());
    let (l, c) = rest[..end].split_once(':')?;
    Some((l.parse().ok()?, c.parse().ok()?))
}

/// For a render error naming an expression in backticks, the line that holds it as a whole
/// word; `None` unless exactly one line does (a wrong line is worse than none).
fn render_error_line(msg: &str, source: &str) -> Option<usize> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    let needle = &msg[start..start + len];
    if needle.is_empty() {
        return None;
    }
    let word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let holds = |line: &str| {
        line.match_indices(needle).any(|(at, _)| {
            let before = line[..at].chars().next_back();
            let after = line[at + needle.len()..].chars().next();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
    };
    let mut lines = source.lines().enumerate().filter(|(_, l)| holds(l));
    match (lines.next(), lines.next()) {
        (Some((i, _)), None) => Some(i + 1),
        _ => None,
    }
}

fn parse_template(name: &str, source: &str) -> Result<(), TemplateError> {
    let mut scratch = tera::Tera::default();
    scratch.add_raw_template(name, source).map_err(|e| {
        let chain = error_chain(&e);
        match parse_error_position(&chain) {
            Some((l, c)) => {
                TemplateError(format!("{name}:{l}:{c}: template does not parse: {chain}"))
            }
            None => TemplateError(format!("{name}: template does not parse: {chain}")),
        }
    })
}

impl Renderer {
    /// Loads every template; any that is missing or does not parse is an error naming it.
    pub fn new(specs: Vec<TemplateSpec>) -> Result<Self> {
        let mut tera = tera::Tera::default();
        tera.autoescape_on(vec![]);
        let mut sources = Vec::with_capacity(specs.len());
        for spec in &specs {
            let source = match &spec.template {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("template {}: cannot read", p.display()))?,
                None => DEFAULT_TEMPLATE.to_string(),
            };
            let name = spec.name();
            parse_template(&name, &source)?;
            tera.add_raw_template(&name, &source)
                .map_err(|e| TemplateError(format!("{name}: {}", error_chain(&e))))?;
            sources.push(source);
        }
        let modes = specs
            .iter()
            .zip(&sources)
            .map(|(spec, source)| mode_of(spec, source))
            .collect();
        Ok(Self {
            tera,
            parts: vec![Vec::new(); specs.len()],
            layouts: vec![0; specs.len()],
            #[cfg(test)]
            rendered: Vec::new(),
            specs,
            sources,
            modes,
        })
    }

    pub fn specs(&self) -> &[TemplateSpec] {
        &self.specs
    }

    /// The template files on disk (for watching them).
    pub fn template_paths(&self) -> impl Iterator<Item = &Path> {
        self.specs.iter().filter_map(|s| s.template.as_deref())
    }

    /// Re-reads every template loaded from `path`. Returns whether any changed; on an error
    /// the last good version stays in use.
    pub fn reload(&mut self, path: &Path) -> Result<bool, TemplateError> {
        let mut changed = false;
        for i in 0..self.specs.len() {
            let Some(p) = &self.specs[i].template else {
                continue;
            };
            if p != path {
                continue;
            }
            let name = self.specs[i].name();
            let source = std::fs::read_to_string(p)
                .map_err(|e| TemplateError(format!("{name}: cannot read: {e}")))?;
            if source == self.sources[i] {
                continue;
            }
            if source.trim().is_empty() {
                return Err(TemplateError(format!(
                    "{name}: the file is empty (still being written?)"
                )));
            }
            parse_template(&name, &source)?;
            self.tera
                .add_raw_template(&name, &source)
                .map_err(|e| TemplateError(format!("{name}: {}", error_chain(&e))))?;
            self.modes[i] = mode_of(&self.specs[i], &source);
            self.parts[i].clear();
            self.sources[i] = source;
            changed = true;
        }
        Ok(changed)
    }

    /// Renders template `i` with `ctx`.
    fn render_one(&self, i: usize, ctx: &tera::Context) -> Result<String, TemplateError> {
        let name = self.specs[i].name();
        self.tera.render(&name, ctx).map_err(|e| {
            let chain = error_chain(&e);
            match render_error_line(&chain, &self.sources[i]) {
                Some(l) => TemplateError(format!("{name}:{l}: template does not render: {chain}")),
                None => TemplateError(format!("{name}: template does not render: {chain}")),
            }
        })
    }

    /// The catalog views these templates need.
    pub fn views(&self) -> Views {
        Views {
            context: self.modes.iter().any(|m| *m != Mode::Builtin),
            server_lines: self.modes.contains(&Mode::Builtin),
        }
    }

    /// Renders every template; each result is independent of the others. Templates rendered
    /// per service re-render only the services that changed since the last call.
    pub fn render_all(&mut self, catalog: &mut Catalog) -> Vec<Result<String, TemplateError>> {
        let mut order: Vec<usize> = (0..catalog.services().len()).collect();
        order.sort_by(|&a, &b| {
            let name = |i: usize| catalog.services()[i].prefix.name();
            name(a).cmp(name(b))
        });
        let mut out: Vec<Option<Result<String, TemplateError>>> = vec![None; self.specs.len()];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = match self.modes[i] {
                Mode::Builtin => Some(Ok(render_builtin(catalog, &order))),
                Mode::PerService => Some(self.render_parts(i, catalog, &order)),
                Mode::Whole => None,
            };
        }
        if out.iter().any(Option::is_none) {
            catalog.with_context(|ctx| {
                for (i, slot) in out.iter_mut().enumerate() {
                    if slot.is_none() {
                        *slot = Some(self.render_one(i, ctx));
                    }
                }
            });
        }
        out.into_iter().flatten().collect()
    }

    /// Renders template `i` (marked per service) part by part, in `order`, reusing the parts
    /// of the services that did not change.
    fn render_parts(
        &mut self,
        i: usize,
        catalog: &mut Catalog,
        order: &[usize],
    ) -> Result<String, TemplateError> {
        let mut parts = std::mem::take(&mut self.parts[i]);
        if self.layouts[i] != catalog.layout() {
            // Services came or went: the parts move to their services' new indices (found by
            // version, which names one service's one state); the removed ones' are dropped.
            let mut by_version: HashMap<u64, Part> = parts
                .into_iter()
                .flatten()
                .map(|part| (part.0 .0, part))
                .collect();
            parts = catalog
                .services()
                .iter()
                .map(|s| by_version.remove(&s.version()))
                .collect();
            self.layouts[i] = catalog.layout();
        }
        parts.resize(catalog.services().len(), None);
        for (n, &s) in order.iter().enumerate() {
            let version = (catalog.services()[s].version(), n == 0);
            if parts[s].as_ref().is_some_and(|(v, _)| *v == version) {
                continue;
            }
            #[cfg(test)]
            self.rendered
                .push(catalog.services()[s].prefix.name().to_string());
            let part = catalog
                .with_service_context(s, n == 0, |ctx| self.render_one(i, ctx))
                .unwrap_or_else(|| {
                    Err(TemplateError(format!(
                        "{}: no template context for service {}",
                        self.specs[i].name(),
                        catalog.services()[s].prefix.name()
                    )))
                });
            parts[s] = Some((version, part));
        }
        let result = concat_parts(order.iter().map(|&s| &parts[s]));
        self.parts[i] = parts;
        result
    }
}

/// Each part in turn; the first part that failed fails the whole.
fn concat_parts<'a>(
    parts: impl Iterator<Item = &'a Option<Part>> + Clone,
) -> Result<String, TemplateError> {
    let mut size = 0;
    for part in parts.clone() {
        match part {
            Some((_, Ok(text))) => size += text.len(),
            Some((_, Err(e))) => return Err(e.clone()),
            None => {}
        }
    }
    let mut out = String::with_capacity(size);
    for (_, text) in parts.flatten() {
        if let Ok(text) = text {
            out.push_str(text);
        }
    }
    Ok(out)
}

const BUILTIN_HEADER: &str =
    "# Generated by dockreg-haproxy. Do not edit: changes are overwritten on the next update.\n";
const BUILTIN_BACKEND_OPTIONS: &str =
    "\n    balance roundrobin\n    option redispatch\n    retries 2";

/// The built-in template, rendered from cached lines: services in `order` (by name), then
/// their servers. A concatenation costs less than keeping each service's part: the lines
/// are the cache.
fn render_builtin(catalog: &Catalog, order: &[usize]) -> String {
    let services = catalog.services();
    let size: usize = order
        .iter()
        .map(|&s| {
            80 + services[s]
                .server_lines()
                .iter()
                .map(|l| l.len() + 1)
                .sum::<usize>()
        })
        .sum();
    let mut out = String::with_capacity(BUILTIN_HEADER.len() + size);
    out.push_str(BUILTIN_HEADER);
    for &s in order {
        out.push_str("\nbackend ");
        out.push_str(services[s].prefix.name());
        out.push_str(BUILTIN_BACKEND_OPTIONS);
        for line in services[s].server_lines() {
            out.push('\n');
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::keys::ServicePrefix;
    use crate::watcher::source::Scope;
    use std::collections::BTreeMap;
    use std::io::Write;
    use std::time::Duration;

    fn catalog() -> Catalog {
        let mut c = Catalog::new(vec![ServicePrefix::parse("/service").unwrap()]).unwrap();
        c.put(
            Scope::Prefix(0),
            b"/service/10.0.0.2:8080",
            br#"{"weight":7}"#,
        );
        c.put(Scope::Prefix(0), b"/service/10.0.0.1:8080", b"running");
        c
    }

    fn default_renderer() -> Renderer {
        Renderer::new(vec![TemplateSpec {
            template: None,
            output: "out.cfg".into(),
        }])
        .unwrap()
    }

    #[test]
    fn default_template_renders_one_backend_with_sorted_servers() {
        let mut r = default_renderer();
        let out = r.render_all(&mut catalog()).remove(0).unwrap();
        let servers: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("server "))
            .collect();
        assert_eq!(
            servers,
            [
                "server 10.0.0.1_8080 10.0.0.1:8080 check weight 100",
                "server 10.0.0.2_8080 10.0.0.2:8080 check weight 7"
            ]
        );
        assert!(out.contains("backend service\n"), "{out}");
    }

    #[test]
    fn builtin_renderer_matches_the_shipped_tera_template() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/templates/haproxy-backends.cfg.tera"
        );
        let mut tera = Renderer::new(vec![TemplateSpec {
            template: Some(path.into()),
            output: "o".into(),
        }])
        .unwrap();
        let mut native = default_renderer();
        let mut c = catalog_of(&["/service", "/api", "/z/web", "/empty"]);
        assert_eq!(
            native.render_all(&mut c),
            tera.render_all(&mut c),
            "empty services"
        );
        c.put(
            Scope::Prefix(0),
            b"/service/10.0.0.2:8080",
            br#"{"weight":7}"#,
        );
        c.put(Scope::Prefix(0), b"/service/[2001:db8::1]:80", b"running");
        c.put(
            Scope::Prefix(1),
            b"/api/10.0.0.1:1",
            br#"{"weight":0,"tags":["x"]}"#,
        );
        c.put(Scope::Prefix(2), b"/z/web/127.0.0.1:9", b"running");
        let n = native.render_all(&mut c).remove(0).unwrap();
        assert_eq!(n, tera.render_all(&mut c).remove(0).unwrap());
        assert!(n.contains("backend api\n") && n.contains("weight 0"), "{n}");
    }

    fn shipped(name: &str) -> Renderer {
        let path = format!("{}/templates/{name}", env!("CARGO_MANIFEST_DIR"));
        Renderer::new(vec![TemplateSpec {
            template: Some(path.into()),
            output: "o".into(),
        }])
        .unwrap()
    }

    /// An empty catalog of these prefixes.
    fn catalog_of(prefixes: &[&str]) -> Catalog {
        Catalog::new(
            prefixes
                .iter()
                .map(|p| ServicePrefix::parse(p).unwrap())
                .collect(),
        )
        .unwrap()
    }

    fn three_services() -> Catalog {
        let mut c = catalog_of(&["/web", "/api", "/z/db"]);
        c.put(Scope::Prefix(0), b"/web/10.0.0.2:8080", br#"{"weight":7}"#);
        c.put(Scope::Prefix(0), b"/web/[2001:db8::1]:80", b"running");
        c.put(
            Scope::Prefix(1),
            b"/api/10.0.0.1:1",
            br#"{"weight":0,"tags":["x"]}"#,
        );
        c
    }

    #[test]
    fn the_shipped_per_service_template_renders_as_the_default_one() {
        let mut per_service = shipped("per-service.cfg.tera");
        assert_eq!(per_service.modes, [Mode::PerService]);
        let mut native = default_renderer();
        let mut c = three_services();
        assert_eq!(native.render_all(&mut c), per_service.render_all(&mut c));
        // After changes: a new first service (the header moves), a removal, an addition.
        c.delete(Scope::Prefix(1), b"/api/10.0.0.1:1");
        c.put(Scope::Prefix(2), b"/z/db/127.0.0.1:9", b"running");
        let mut first = Catalog::new(vec![ServicePrefix::parse("/aaa").unwrap()]).unwrap();
        first.put(Scope::Prefix(0), b"/aaa/10.9.9.9:1", b"running");
        assert_eq!(native.render_all(&mut c), per_service.render_all(&mut c));
        assert_eq!(
            native.render_all(&mut first),
            per_service.render_all(&mut first)
        );
    }

    #[test]
    fn per_service_parts_of_unchanged_services_are_not_rendered_again() {
        let mut r = shipped("per-service.cfg.tera");
        let mut c = three_services();
        // The catalog version each part was rendered at, by service index.
        let rendered_at = |r: &Renderer| -> Vec<u64> {
            r.parts[0]
                .iter()
                .map(|p| p.as_ref().unwrap().0 .0)
                .collect()
        };
        let first = r.render_all(&mut c);
        let before = rendered_at(&r);
        assert_eq!(r.render_all(&mut c), first);
        assert_eq!(rendered_at(&r), before, "nothing changed, nothing rendered");
        c.put(Scope::Prefix(0), b"/web/10.0.0.3:80", b"running");
        let out = r.render_all(&mut c).remove(0).unwrap();
        assert!(out.contains("server 10.0.0.3_80 "), "{out}");
        let after = rendered_at(&r);
        assert_ne!(after[0], before[0], "web rendered again");
        assert_eq!(after[1..], before[1..], "api and db kept");
    }

    fn root_put(c: &mut Catalog, key: &str) {
        c.put(Scope::Root(0), key.as_bytes(), b"running");
    }

    /// Removes root service `name` of `c` at once: its last endpoint `key` deleted and no grace.
    fn root_remove(c: &mut Catalog, key: &str, name: &str) {
        c.delete(Scope::Root(0), key.as_bytes());
        assert_eq!(
            c.expire(tokio::time::Instant::now() + Duration::from_secs(3600)),
            [name]
        );
    }

    /// A template that shows each service's name and prefix and each endpoint's key.
    const VIEW_TEMPLATE: &str = "{% for name, s in services %}{{ name }} {{ s.name }} {{ s.prefix }}:{% for e in s.endpoints %} {{ e.key }}{% endfor %}\n{% endfor %}";

    #[test]
    fn root_services_render_like_prefix_services() {
        let mut rooted = Catalog::with_roots(&["/web"], &["/services"]).unwrap();
        rooted.put(Scope::Prefix(0), b"/web/10.0.0.1:80", b"running");
        root_put(&mut rooted, "/services/api/10.0.0.2:80");
        root_put(&mut rooted, "/services/aaa/[2001:db8::1]:80");
        let mut fixed = catalog_of(&["/web", "/services/api", "/services/aaa"]);
        fixed.put(Scope::Prefix(0), b"/web/10.0.0.1:80", b"running");
        fixed.put(Scope::Prefix(1), b"/services/api/10.0.0.2:80", b"running");
        fixed.put(
            Scope::Prefix(2),
            b"/services/aaa/[2001:db8::1]:80",
            b"running",
        );
        let mut view = tempfile::Builder::new().suffix(".tera").tempfile().unwrap();
        write!(view, "{VIEW_TEMPLATE}").unwrap();
        let whole = |p: &Path| TemplateSpec {
            template: Some(p.to_path_buf()),
            output: "o".into(),
        };
        let shipped =
            |n: &str| PathBuf::from(format!("{}/templates/{n}", env!("CARGO_MANIFEST_DIR")));
        let specs = vec![
            TemplateSpec {
                template: None,
                output: "builtin".into(),
            },
            whole(&shipped("haproxy-backends.cfg.tera")),
            whole(&shipped("per-service.cfg.tera")),
            whole(view.path()),
        ];
        let a = Renderer::new(specs.clone())
            .unwrap()
            .render_all(&mut rooted);
        let b = Renderer::new(specs).unwrap().render_all(&mut fixed);
        assert_eq!(a, b);
        let builtin = a[0].as_ref().unwrap();
        assert!(
            builtin.contains("backend aaa\n") && builtin.contains("backend api\n"),
            "{builtin}"
        );
        assert_eq!(
            a[3].as_ref().unwrap(),
            "aaa aaa /services/aaa: /services/aaa/[2001:db8::1]:80\n\
             api api /services/api: /services/api/10.0.0.2:80\n\
             web web /web: /web/10.0.0.1:80\n"
        );
    }

    #[test]
    fn per_service_parts_stay_right_when_services_come_and_go() {
        let mut r = shipped("per-service.cfg.tera");
        let mut c = Catalog::with_roots(&["/web"], &["/services"]).unwrap();
        c.put(Scope::Prefix(0), b"/web/10.0.0.1:80", b"running");
        for key in [
            "/services/a/10.0.0.2:80",
            "/services/b/10.0.0.3:80",
            "/services/c/10.0.0.4:80",
        ] {
            root_put(&mut c, key);
        }
        let fresh = |c: &mut Catalog| shipped("per-service.cfg.tera").render_all(c);
        assert_eq!(r.render_all(&mut c), fresh(&mut c));
        // The part each service was last rendered from, by name.
        let rendered = |r: &Renderer, c: &Catalog| -> BTreeMap<String, u64> {
            c.services()
                .iter()
                .zip(&r.parts[0])
                .map(|(s, p)| (s.prefix.name().to_string(), p.as_ref().unwrap().0 .0))
                .collect()
        };
        let before = rendered(&r, &c);
        r.rendered.clear();
        // `b` goes (`c` moves to its index), then comes back (at the end) with another
        // endpoint; `a` changes meanwhile.
        root_remove(&mut c, "/services/b/10.0.0.3:80", "b");
        let out = r.render_all(&mut c).remove(0).unwrap();
        assert_eq!(Ok(out.clone()), fresh(&mut c).remove(0));
        assert!(
            !out.contains("backend b\n") && out.contains("backend c\n"),
            "{out}"
        );
        assert!(
            r.rendered.is_empty(),
            "c kept its part across the shift: {:?}",
            r.rendered
        );
        assert_eq!(rendered(&r, &c)["c"], before["c"]);
        root_put(&mut c, "/services/b/10.0.0.5:80");
        root_put(&mut c, "/services/a/10.0.0.6:80");
        let out = r.render_all(&mut c).remove(0).unwrap();
        assert_eq!(Ok(out.clone()), fresh(&mut c).remove(0));
        assert!(
            out.contains("server 10.0.0.5_80 ") && !out.contains("10.0.0.3_80"),
            "{out}"
        );
        assert_eq!(
            r.rendered,
            ["a", "b"],
            "only the changed and the new one rendered"
        );
        let again = rendered(&r, &c);
        assert_eq!((again["c"], again["web"]), (before["c"], before["web"]));
        // Every part is the one of its service's current state.
        for s in c.services() {
            assert_eq!(again[s.prefix.name()], s.version(), "{}", s.prefix);
        }
    }

    #[test]
    fn the_per_service_mark_is_a_comment_of_its_own() {
        assert!(is_per_service("{#- dockreg:per-service -#}\nx"));
        assert!(is_per_service("a {# dockreg:per-service #}"));
        assert!(!is_per_service(
            "{# render with dockreg:per-service for speed #}"
        ));
        assert!(!is_per_service("dockreg:per-service"));
    }

    #[test]
    fn same_state_renders_identical_bytes() {
        let mut r = default_renderer();
        let mut a = catalog();
        let mut b = Catalog::new(vec![ServicePrefix::parse("/service").unwrap()]).unwrap();
        b.put(Scope::Prefix(0), b"/service/10.0.0.1:8080", b"running");
        b.put(
            Scope::Prefix(0),
            b"/service/10.0.0.2:8080",
            br#"{"weight":7}"#,
        );
        assert_eq!(r.render_all(&mut a), r.render_all(&mut b));
    }

    #[test]
    fn parse_error_names_file_and_line() {
        let mut f = tempfile::Builder::new().suffix(".tera").tempfile().unwrap();
        write!(
            f,
            "ok\n{{% for x in services %}}\n{{{{ x.name | }}}}\n{{% endfor %}}\n"
        )
        .unwrap();
        let err = match Renderer::new(vec![TemplateSpec {
            template: Some(f.path().to_path_buf()),
            output: "o".into(),
        }]) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("broken template accepted"),
        };
        let want = format!("{}:3:", f.path().display());
        assert!(err.starts_with(&want), "{err}");
    }

    #[test]
    fn render_error_names_file_and_line() {
        let mut f = tempfile::Builder::new().suffix(".tera").tempfile().unwrap();
        write!(f, "a\nb\n{{{{ nosuch.thing }}}}\n").unwrap();
        let mut r = Renderer::new(vec![TemplateSpec {
            template: Some(f.path().to_path_buf()),
            output: "o".into(),
        }])
        .unwrap();
        let err = r.render_all(&mut catalog()).remove(0).unwrap_err().0;
        assert!(
            err.starts_with(&format!("{}:3:", f.path().display())),
            "{err}"
        );
    }

    #[test]
    fn render_error_line_is_the_expression_not_a_prefix_of_it() {
        let source = "# e e.x\n{% for e in list %}\n  {{ e.weigth }}\n{% endfor %}\n";
        let msg = "Variable `e.weigth` not found in context while rendering 't'";
        assert_eq!(render_error_line(msg, source), Some(3));
        assert_eq!(
            render_error_line("Variable `e` not found", source),
            None,
            "ambiguous"
        );
    }

    #[test]
    fn reload_keeps_last_good_template_on_error() {
        let mut f = tempfile::Builder::new().suffix(".tera").tempfile().unwrap();
        write!(f, "v1").unwrap();
        let path = f.path().to_path_buf();
        let mut r = Renderer::new(vec![TemplateSpec {
            template: Some(path.clone()),
            output: "o".into(),
        }])
        .unwrap();
        std::fs::write(&path, "{% if %}").unwrap();
        assert!(r.reload(&path).is_err());
        assert_eq!(r.render_all(&mut catalog()).remove(0).unwrap(), "v1");
        std::fs::write(&path, "v2").unwrap();
        assert!(r.reload(&path).unwrap());
        assert_eq!(r.render_all(&mut catalog()).remove(0).unwrap(), "v2");
    }
}

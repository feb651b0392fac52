//! Deciding how a rendered configuration change reaches HAProxy: not at all, through the
//! runtime API (HAProxy 2.6's admin socket), or by a reload.
//!
//! [`plan`] compares the text HAProxy runs (`old`) with the new render (`new`) section by
//! section and answers with a [`Plan`]. It is pure: no I/O, no clock, and it never panics.
//!
//! # Reading the text
//!
//! [`parse`] follows HAProxy's own rules for words: a line is cut into words at unprotected
//! spaces and tabs, `"…"` and `'…'` quote, `\` escapes, and an unprotected `#` ends the line
//! (so comment lines, trailing comments, blank lines, indentation and trailing whitespace carry
//! no meaning). Words keep their exact text otherwise, so `"a b"` and `a\ b` count as
//! different (a conservative answer: at worst a reload that was not needed).
//!
//! A section starts at a line whose first word is one of [`SECTION_KEYWORDS`]; its name is the
//! second word (none for `global`, or for `defaults` / `defaults from x`). Lines before the
//! first section are kept apart and compared as they are. Inside `backend` and `listen`
//! sections, a line `server <name> <ip>:<port> <keywords…>` becomes a [`Server`] when the
//! runtime API can express it exactly: a name of `[A-Za-z0-9._:-]`, an IP literal (IPv4, or
//! IPv6 in brackets; compared in canonical form, so `[2001:DB8::1]` equals `[2001:db8::1]`) with
//! a port 1–65535, at most one `weight` of 0–256, and keywords free of quotes, escapes, `;` and
//! non-ASCII. Any other line — including a `server` line that fails these tests (an FQDN, a
//! missing port, `${VAR}`…) — stays an ordered *directive* of its section.
//!
//! # Decision rules
//!
//! 1. Equal after parsing (directives in order, servers as a set by name: their order counts
//!    only under `balance first`, see below) → [`Plan::Nothing`].
//! 2. Otherwise everything below must hold for [`Plan::Runtime`]; the first rule broken, in the
//!    order of the sections, gives [`Plan::Reload`] with a reason naming the section or server:
//!    - no conditional block (`.if` / `.elif` / `.else` / `.endif`) in either text;
//!    - the lines before the first section are unchanged;
//!    - the same sections, in the same order (`section backend api added`, `… removed`,
//!      `sections reordered …`), with unchanged section lines and directives
//!      (`backend api: options changed (…)`) — this covers `global`, `defaults`, `frontend`
//!      and every other kind;
//!    - in each `backend` / `listen` whose servers differ: servers present in both keep their
//!      address, port and other keywords (`backend web: address of server s1 changed …`,
//!      `server web/s1: keywords changed …`); only their weight may change;
//!    - that backend's name is addressable on the CLI, and its balance algorithm is dynamic:
//!      `roundrobin`, `leastconn`, `random`, or a hash-based one with `hash-type consistent`
//!      (the backend's own `balance` / `hash-type` line, else the `defaults` section governing
//!      it in this text, following `from`; none at all means HAProxy's default, `roundrobin`).
//!      HAProxy refuses `add server` on static algorithms and only takes weights 0 and 100%
//!      there; `first` picks servers by their order, which a server added at runtime does not
//!      keep, so a `first` backend reloads even when its servers are merely reordered;
//!    - an added server does not fall under a `default-server` line (in the backend or its
//!      `defaults`), since dynamic servers do not inherit it; it uses only keywords that
//!      HAProxy 2.6's `add server` accepts ([`ADD_SERVER_KEYWORDS`]); and neither an added nor
//!      a removed server uses `agent-check` (the agent may bring a dynamic server up by itself
//!      and must be stopped before a deletion);
//!    - a weight that becomes or stops being explicit does not depend on a `default-server`
//!      line (otherwise an absent weight is HAProxy's default, 1, and `weight 1` equals none).
//! 3. The operations are ordered by backend name, then deletions, additions and weight
//!    changes, each by server name, so the same change always yields the same commands.
//!
//! Only this one text is seen. Sections of other files loaded with it (the base configuration
//! with its `defaults`) are the caller's to keep unchanged; a `default-server` or a static
//! `balance` that only they hold is not visible here, and HAProxy's refusal of a command is then
//! the signal to fall back to a reload. The same holds for `track` pointing at a server that was
//! itself added at runtime, which HAProxy 2.6 refuses.
//!
//! # Commands
//!
//! [`Op::commands`] gives the HAProxy 2.6 runtime API commands of one operation. An added
//! server is created in maintenance, so it is enabled afterwards (`enable server`, skipped
//! when its keywords say `disabled`) and its health check started (`enable health`, with
//! `check`). A removal is two commands with a wait between them: the first puts the server in
//! maintenance (no new requests; connections in flight go on), then the **caller waits until
//! the server has drained** — HAProxy cancels `del server` while the server still holds an
//! active or idle connection or a queued request, so retrying it (or watching
//! `show servers conn`) within a bounded time is the wait — and only then sends the second.
//! No `shutdown sessions server` is issued: if the server does not drain in time, reload.

mod partial;

pub use partial::{plan_partial, Partial};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The first words that open a section (HAProxy 2.6; `fcgi-app` too, so that the lines of such
/// a section are never taken for a backend's).
pub const SECTION_KEYWORDS: [&str; 14] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "userlist",
    "peers",
    "resolvers",
    "cache",
    "program",
    "http-errors",
    "ring",
    "mailers",
    "fcgi-app",
];

/// The server keywords HAProxy 2.6's `add server` accepts (management.txt, "add server"),
/// with the number of arguments each takes. `source` takes one, plus optional `usesrc <x>` and
/// `interface <x>` parts.
pub const ADD_SERVER_KEYWORDS: [(&str, usize); 74] = [
    ("agent-addr", 1),
    ("agent-check", 0),
    ("agent-inter", 1),
    ("agent-port", 1),
    ("agent-send", 1),
    ("allow-0rtt", 0),
    ("alpn", 1),
    ("addr", 1),
    ("backup", 0),
    ("ca-file", 1),
    ("check", 0),
    ("check-alpn", 1),
    ("check-proto", 1),
    ("check-send-proxy", 0),
    ("check-sni", 1),
    ("check-ssl", 0),
    ("check-via-socks4", 0),
    ("ciphers", 1),
    ("ciphersuites", 1),
    ("crl-file", 1),
    ("crt", 1),
    ("disabled", 0),
    ("downinter", 1),
    ("enabled", 0),
    ("error-limit", 1),
    ("fall", 1),
    ("fastinter", 1),
    ("force-sslv3", 0),
    ("force-tlsv10", 0),
    ("force-tlsv11", 0),
    ("force-tlsv12", 0),
    ("force-tlsv13", 0),
    ("id", 1),
    ("inter", 1),
    ("maxconn", 1),
    ("maxqueue", 1),
    ("minconn", 1),
    ("no-ssl-reuse", 0),
    ("no-sslv3", 0),
    ("no-tlsv10", 0),
    ("no-tlsv11", 0),
    ("no-tlsv12", 0),
    ("no-tlsv13", 0),
    ("no-tls-tickets", 0),
    ("npn", 1),
    ("observe", 1),
    ("on-error", 1),
    ("on-marked-down", 1),
    ("on-marked-up", 1),
    ("pool-low-conn", 1),
    ("pool-max-conn", 1),
    ("pool-purge-delay", 1),
    ("port", 1),
    ("proto", 1),
    ("proxy-v2-options", 1),
    ("rise", 1),
    ("send-proxy", 0),
    ("send-proxy-v2", 0),
    ("send-proxy-v2-ssl", 0),
    ("send-proxy-v2-ssl-cn", 0),
    ("slowstart", 1),
    ("sni", 1),
    ("ssl", 0),
    ("ssl-max-ver", 1),
    ("ssl-min-ver", 1),
    ("tfo", 0),
    ("tls-tickets", 0),
    ("source", 1),
    ("track", 1),
    ("usesrc", 1),
    ("verify", 1),
    ("verifyhost", 1),
    ("weight", 1),
    ("ws", 1),
];

/// HAProxy's weight when a server line sets none (and no `default-server` sets one).
pub const DEFAULT_WEIGHT: u16 = 1;

/// The largest weight HAProxy takes.
pub const MAX_WEIGHT: u16 = 256;

/// A `server` line the runtime API can express exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    /// The IP address in canonical text, without brackets: `10.0.0.5`, `2001:db8::5`.
    pub addr: String,
    pub port: u16,
    /// The `weight` keyword's value, if the line has one.
    pub weight: Option<u16>,
    /// Every other word after the address, in order (`weight <w>` taken out).
    pub rest: Vec<String>,
}

impl Server {
    /// The address as HAProxy takes it: `10.0.0.5:80`, `[2001:db8::5]:80`.
    pub fn address(&self) -> String {
        if self.addr.contains(':') {
            format!("[{}]:{}", self.addr, self.port)
        } else {
            format!("{}:{}", self.addr, self.port)
        }
    }

    /// Whether `keyword` is one of the server's keywords (not an argument of another one).
    pub fn has_keyword(&self, keyword: &str) -> bool {
        match scan_keywords(&self.rest) {
            Ok(kws) => kws.contains(&keyword),
            // Keywords outside the runtime API's list: fall back to the words themselves.
            Err(_) => self.rest.iter().any(|w| w == keyword),
        }
    }

    /// Whether the server starts in maintenance (`disabled`, not overridden by a later
    /// `enabled`).
    pub fn is_disabled(&self) -> bool {
        let kws = scan_keywords(&self.rest)
            .unwrap_or_else(|_| self.rest.iter().map(String::as_str).collect());
        kws.iter()
            .rev()
            .find(|k| matches!(**k, "disabled" | "enabled"))
            .is_some_and(|k| *k == "disabled")
    }
}

/// A line of a section other than a [`Server`], as its words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub words: Vec<String>,
    /// For a `server` line of a backend that is kept as a directive: why the runtime API
    /// cannot apply it (a function of the words, for reasons given to operators).
    pub opaque_server: Option<&'static str>,
}

impl Directive {
    fn keyword(&self) -> Option<&str> {
        self.words.first().map(String::as_str)
    }
}

/// One section of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// `backend`, `frontend`, `global`, … (one of [`SECTION_KEYWORDS`]).
    pub kind: String,
    pub name: Option<String>,
    /// Every word of the section's own line (`backend web from base`).
    pub header: Vec<String>,
    /// The section's other lines, in order.
    pub directives: Vec<Directive>,
    /// The section's servers (only in `backend` and `listen`), in order.
    pub servers: Vec<Server>,
}

impl Section {
    /// `backend web`, `global`, `defaults base`.
    pub fn ident(&self) -> String {
        match &self.name {
            Some(name) => format!("{} {name}", self.kind),
            None => self.kind.clone(),
        }
    }

    /// Whether the section can hold servers.
    pub fn has_servers(&self) -> bool {
        matches!(self.kind.as_str(), "backend" | "listen")
    }

    /// The `defaults` section named after `from` on the section line, if any.
    fn from(&self) -> Option<&str> {
        let at = self.header.iter().skip(1).position(|w| w == "from")?;
        self.header.get(at + 2).map(String::as_str)
    }
}

/// A parsed configuration text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Lines before the first section.
    pub preamble: Vec<Directive>,
    pub sections: Vec<Section>,
    /// Whether the text uses conditional blocks (`.if` …), which this parser does not evaluate.
    pub conditional: bool,
}

/// What to do about a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// The two texts mean the same to HAProxy.
    Nothing,
    /// Only a reload applies the change.
    Reload { reason: String },
    /// These runtime API operations apply the change, in this order.
    Runtime(Vec<Op>),
}

/// One runtime API operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    AddServer {
        backend: String,
        server: Server,
    },
    DelServer {
        backend: String,
        name: String,
    },
    SetWeight {
        backend: String,
        name: String,
        weight: u16,
    },
}

impl Op {
    /// The HAProxy 2.6 runtime API commands for this operation, one per element.
    ///
    /// - add: `add server <b>/<s> <addr>:<port> [weight <w>] <rest…>` (no `weight` when the
    ///   line has none: HAProxy's default applies, as for the configuration line), then
    ///   `enable server <b>/<s>` unless the server is `disabled`, then `enable health <b>/<s>`
    ///   if it has `check`;
    /// - delete: `set server <b>/<s> state maint`, then `del server <b>/<s>` — **the caller
    ///   waits for the server to drain between the two** (see the module documentation);
    /// - weight: `set server <b>/<s> weight <w>`.
    pub fn commands(&self) -> Vec<String> {
        match self {
            Op::AddServer { backend, server } => {
                let id = format!("{backend}/{}", server.name);
                let mut add = format!("add server {id} {}", server.address());
                if let Some(w) = server.weight {
                    add.push_str(&format!(" weight {w}"));
                }
                for word in &server.rest {
                    add.push(' ');
                    add.push_str(word);
                }
                let mut cmds = vec![add];
                if !server.is_disabled() {
                    cmds.push(format!("enable server {id}"));
                }
                if server.has_keyword("check") {
                    cmds.push(format!("enable health {id}"));
                }
                cmds
            }
            Op::DelServer { backend, name } => vec![
                format!("set server {backend}/{name} state maint"),
                format!("del server {backend}/{name}"),
            ],
            Op::SetWeight {
                backend,
                name,
                weight,
            } => vec![format!("set server {backend}/{name} weight {weight}")],
        }
    }

    /// The backend the operation acts on.
    pub fn backend(&self) -> &str {
        match self {
            Op::AddServer { backend, .. }
            | Op::DelServer { backend, .. }
            | Op::SetWeight { backend, .. } => backend,
        }
    }

    /// The server the operation acts on.
    pub fn server_name(&self) -> &str {
        match self {
            Op::AddServer { server, .. } => &server.name,
            Op::DelServer { name, .. } | Op::SetWeight { name, .. } => name,
        }
    }

    /// Order: backend, then deletions, additions, weights, then server name.
    fn sort_key(&self) -> (&str, u8, &str) {
        let phase = match self {
            Op::DelServer { .. } => 0,
            Op::AddServer { .. } => 1,
            Op::SetWeight { .. } => 2,
        };
        (self.backend(), phase, self.server_name())
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::AddServer { backend, server } => {
                write!(f, "add {backend}/{} {}", server.name, server.address())
            }
            Op::DelServer { backend, name } => write!(f, "delete {backend}/{name}"),
            Op::SetWeight {
                backend,
                name,
                weight,
            } => write!(f, "weight {backend}/{name} {weight}"),
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Plan::Nothing => f.write_str("no change"),
            Plan::Reload { reason } => write!(f, "reload: {reason}"),
            Plan::Runtime(ops) => {
                f.write_str("runtime: ")?;
                for (i, op) in ops.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{op}")?;
                }
                Ok(())
            }
        }
    }
}

/// Decides how the change from `old` (what HAProxy runs) to `new` is applied; see the module
/// documentation for the rules.
pub fn plan(old: &str, new: &str) -> Plan {
    plan_parsed(&parse(old), &parse(new))
}

/// [`plan`] over texts already parsed.
pub fn plan_parsed(old: &Config, new: &Config) -> Plan {
    match diff(old, new) {
        Ok(ops) if ops.is_empty() => Plan::Nothing,
        Ok(ops) => Plan::Runtime(ops),
        Err(reason) => Plan::Reload { reason },
    }
}

/// Parses a configuration text into sections; never fails (what it does not understand stays
/// a directive, compared word for word).
pub fn parse(text: &str) -> Config {
    let mut config = Config::default();
    for line in text.lines() {
        let words = split_words(line);
        let Some(first) = words.first() else {
            continue;
        };
        if matches!(first.as_str(), ".if" | ".elif" | ".else" | ".endif") {
            config.conditional = true;
        }
        if SECTION_KEYWORDS.contains(&first.as_str()) {
            let kind = first.clone();
            let name = match words.get(1) {
                Some(w) if !(kind == "defaults" && w == "from") => Some(w.clone()),
                _ => None,
            };
            config.sections.push(Section {
                kind,
                name,
                header: words,
                directives: Vec::new(),
                servers: Vec::new(),
            });
            continue;
        }
        let Some(section) = config.sections.last_mut() else {
            config.preamble.push(Directive {
                words,
                opaque_server: None,
            });
            continue;
        };
        if section.has_servers() && first == "server" {
            match parse_server(&words) {
                Ok(server) => section.servers.push(server),
                Err(why) => section.directives.push(Directive {
                    words,
                    opaque_server: Some(why),
                }),
            }
        } else {
            section.directives.push(Directive {
                words,
                opaque_server: None,
            });
        }
    }
    config
}

/// Cuts a line into words the way HAProxy does, keeping each word's text as written (quotes
/// and escapes included); an unprotected `#` ends the line.
fn split_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let (mut single, mut double) = (false, false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if single {
            word.push(c);
            single = c != '\'';
            continue;
        }
        match c {
            '\\' => {
                word.push(c);
                if let Some(next) = chars.next() {
                    word.push(next);
                }
                in_word = true;
            }
            '"' => {
                double = !double;
                word.push(c);
                in_word = true;
            }
            '\'' if !double => {
                single = true;
                word.push(c);
                in_word = true;
            }
            '#' if !double => break,
            c if c.is_ascii_whitespace() && !double => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// A name HAProxy accepts for a proxy or server, and the CLI takes as `<backend>/<server>`.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A word that means the same on the CLI as in the configuration: printable ASCII with no
/// quoting, escaping, comment or command-separator character.
fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b';' | b'#'))
}

/// `10.0.0.5:80` or `[2001:db8::5]:80` → the canonical IP text and the port.
fn parse_addr(s: &str) -> Option<(String, u16)> {
    let (ip, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (ip, port) = rest.split_once("]:")?;
            (IpAddr::V6(ip.parse::<Ipv6Addr>().ok()?), port)
        }
        None => {
            let (ip, port) = s.rsplit_once(':')?;
            (IpAddr::V4(ip.parse::<Ipv4Addr>().ok()?), port)
        }
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    (port != 0).then(|| (ip.to_string(), port))
}

/// A `server` line as a [`Server`], or why it cannot be one.
fn parse_server(words: &[String]) -> Result<Server, &'static str> {
    let (Some(name), Some(addr)) = (words.get(1), words.get(2)) else {
        return Err("the server line has no address");
    };
    if !is_name(name) {
        return Err("the server name holds characters the runtime API does not take");
    }
    let (addr, port) =
        parse_addr(addr).ok_or("the address is not an IP literal with a port 1-65535")?;
    let mut weight = None;
    let mut rest = Vec::new();
    let mut it = words.iter().skip(3);
    while let Some(word) = it.next() {
        if !is_plain(word) {
            return Err("a keyword is quoted or escaped");
        }
        if word == "weight" {
            let w = it
                .next()
                .and_then(|w| w.parse::<u16>().ok())
                .filter(|w| *w <= MAX_WEIGHT)
                .ok_or("the weight is not a number 0-256")?;
            if weight.replace(w).is_some() {
                return Err("the weight is given twice");
            }
        } else {
            rest.push(word.clone());
        }
    }
    Ok(Server {
        name: name.clone(),
        addr,
        port,
        weight,
        rest,
    })
}

/// The keywords among a server's words (arguments skipped), or the first word that `add server`
/// in HAProxy 2.6 does not take.
fn scan_keywords(rest: &[String]) -> Result<Vec<&str>, String> {
    let mut kws = Vec::new();
    let mut i = 0;
    while let Some(word) = rest.get(i) {
        let word = word.as_str();
        let args = if word == "source" {
            // source <addr>[:<port>] [usesrc <addr>|client|clientip] [interface <name>]
            let mut n = 1;
            for part in ["usesrc", "interface"] {
                if rest.get(i + 1 + n).map(String::as_str) == Some(part) {
                    n += 2;
                }
            }
            n
        } else if let Some((_, n)) = ADD_SERVER_KEYWORDS.iter().find(|(k, _)| *k == word) {
            *n
        } else {
            return Err(format!(
                "keyword `{word}` is not one HAProxy 2.6 takes in `add server`"
            ));
        };
        if i + args >= rest.len() && args > 0 {
            return Err(format!("keyword `{word}` lacks its argument"));
        }
        kws.push(word);
        i += 1 + args;
    }
    Ok(kws)
}

/// The section at `idx` followed by the `defaults` sections it takes its settings from.
fn defaults_chain(config: &Config, idx: usize) -> Vec<usize> {
    let mut chain = Vec::new();
    let mut cur = Some(idx);
    while let Some(i) = cur {
        if chain.contains(&i) || chain.len() > config.sections.len() {
            break;
        }
        chain.push(i);
        let Some(section) = config.sections.get(i) else {
            break;
        };
        let before = config.sections.get(..i).unwrap_or_default();
        cur = match section.from() {
            Some(from) => config
                .sections
                .iter()
                .rposition(|s| s.kind == "defaults" && s.name.as_deref() == Some(from)),
            // A defaults section starts from HAProxy's own defaults.
            None if section.kind == "defaults" => None,
            None => before.iter().rposition(|s| s.kind == "defaults"),
        };
    }
    chain
}

/// The line setting `keyword` for the section at `idx`: its own last one, else its defaults'.
fn setting<'a>(config: &'a Config, idx: usize, keyword: &str) -> Option<&'a Directive> {
    defaults_chain(config, idx).into_iter().find_map(|i| {
        config.sections.get(i).and_then(|s| {
            s.directives
                .iter()
                .rev()
                .find(|d| d.keyword() == Some(keyword))
        })
    })
}

/// Whether a `default-server` line applies to the section at `idx` (as far as this text shows).
fn has_default_server(config: &Config, idx: usize) -> bool {
    defaults_chain(config, idx).into_iter().any(|i| {
        config.sections.get(i).is_some_and(|s| {
            s.directives
                .iter()
                .any(|d| d.keyword() == Some("default-server"))
        })
    })
}

/// How a backend's balance algorithm takes server changes at runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Algorithm {
    /// Servers may be added, removed and re-weighted; their order does not matter.
    Dynamic,
    /// `first`: servers are picked by their order, which servers added at runtime do not keep.
    Ordered,
    /// No server change at runtime (why); the order of the servers does not matter.
    Static(String),
}

/// The balance algorithm of the backend at `idx`, as far as this text shows.
fn algorithm(config: &Config, idx: usize) -> Algorithm {
    let word = |kw: &str| {
        setting(config, idx, kw)
            .and_then(|d| d.words.get(1))
            .map(String::as_str)
    };
    match word("balance").unwrap_or("roundrobin") {
        "roundrobin" | "leastconn" => Algorithm::Dynamic,
        a if a == "random" || a.starts_with("random(") => Algorithm::Dynamic,
        "first" => Algorithm::Ordered,
        "static-rr" => Algorithm::Static(
            "balance static-rr is static: HAProxy cannot add, remove or re-weight its servers \
             at runtime"
                .to_string(),
        ),
        _ if word("hash-type") == Some("consistent") => Algorithm::Dynamic,
        a => Algorithm::Static(format!(
            "balance {a} is static without `hash-type consistent`: HAProxy cannot add, remove \
             or re-weight its servers at runtime"
        )),
    }
}

/// A line for a reason: its words, shortened past 80 characters.
fn shown(words: &[String]) -> String {
    let line = words.join(" ");
    if line.chars().count() > 80 {
        let mut short: String = line.chars().take(77).collect();
        short.push('…');
        short
    } else {
        line
    }
}

/// The first difference between two directive lists, for a reason.
fn describe(old: &[Directive], new: &[Directive]) -> String {
    let prefix = old.iter().zip(new).take_while(|(a, b)| a == b).count();
    let room = old.len().min(new.len()) - prefix;
    let suffix = old
        .iter()
        .rev()
        .zip(new.iter().rev())
        .take(room)
        .take_while(|(a, b)| a == b)
        .count();
    let old_mid = old.get(prefix..old.len() - suffix).unwrap_or_default();
    let new_mid = new.get(prefix..new.len() - suffix).unwrap_or_default();
    let note = |d: &Directive| {
        d.opaque_server
            .map(|why| format!("; a server line the runtime API cannot apply: {why}"))
            .unwrap_or_default()
    };
    match (old_mid.first(), new_mid.first()) {
        (None, Some(n)) => format!("`{}` added{}", shown(&n.words), note(n)),
        (Some(o), None) => format!("`{}` removed{}", shown(&o.words), note(o)),
        (Some(o), Some(n)) => format!(
            "`{}` → `{}`{}",
            shown(&o.words),
            shown(&n.words),
            if n.opaque_server.is_some() {
                note(n)
            } else {
                note(o)
            }
        ),
        (None, None) => "lines reordered".to_string(),
    }
}

/// The runtime operations from `old` to `new`, or why there can be none.
fn diff(old: &Config, new: &Config) -> Result<Vec<Op>, String> {
    if old == new {
        return Ok(Vec::new());
    }
    if old.conditional || new.conditional {
        return Err(
            "the configuration uses conditional blocks (.if), which are not applied at runtime"
                .to_string(),
        );
    }
    if old.preamble != new.preamble {
        return Err(format!(
            "lines before the first section changed ({})",
            describe(&old.preamble, &new.preamble)
        ));
    }
    let old_ids: Vec<String> = old.sections.iter().map(Section::ident).collect();
    let new_ids: Vec<String> = new.sections.iter().map(Section::ident).collect();
    if old_ids != new_ids {
        let count = |ids: &[String]| {
            let mut m: HashMap<String, usize> = HashMap::new();
            for id in ids {
                *m.entry(id.clone()).or_default() += 1;
            }
            m
        };
        let (old_count, new_count) = (count(&old_ids), count(&new_ids));
        let more = |id: &String, a: &HashMap<String, usize>, b: &HashMap<String, usize>| {
            a.get(id).copied().unwrap_or(0) > b.get(id).copied().unwrap_or(0)
        };
        if let Some(id) = new_ids.iter().find(|id| more(id, &new_count, &old_count)) {
            return Err(format!("section {id} added"));
        }
        if let Some(id) = old_ids.iter().find(|id| more(id, &old_count, &new_count)) {
            return Err(format!("section {id} removed"));
        }
        let first = old_ids
            .iter()
            .zip(&new_ids)
            .find(|(a, b)| a != b)
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        return Err(format!("sections reordered (now {first} comes earlier)"));
    }
    let mut ops = Vec::new();
    for (idx, (o, n)) in old.sections.iter().zip(&new.sections).enumerate() {
        section_ops(o, n, new, idx, &mut ops)?;
    }
    ops.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(ops)
}

/// Servers by name, or the first name given twice.
fn by_name(servers: &[Server]) -> Result<BTreeMap<&str, &Server>, &str> {
    let mut map = BTreeMap::new();
    for s in servers {
        if map.insert(s.name.as_str(), s).is_some() {
            return Err(&s.name);
        }
    }
    Ok(map)
}

/// Adds the operations that turn section `o` into `n` (the `idx`-th of `config`, the new
/// configuration) to `ops`, or tells why it takes a reload.
fn section_ops(
    o: &Section,
    n: &Section,
    config: &Config,
    idx: usize,
    ops: &mut Vec<Op>,
) -> Result<(), String> {
    let ident = n.ident();
    if o.header != n.header {
        return Err(format!(
            "{ident}: section line changed (`{}` → `{}`)",
            shown(&o.header),
            shown(&n.header)
        ));
    }
    if o.directives != n.directives {
        return Err(format!(
            "{ident}: options changed ({})",
            describe(&o.directives, &n.directives)
        ));
    }
    if o.servers == n.servers {
        return Ok(());
    }
    let backend = match &n.name {
        Some(name) if is_name(name) => name.as_str(),
        _ => {
            return Err(format!(
                "{ident}: servers changed, and the runtime API cannot address this section"
            ))
        }
    };
    let old_map =
        by_name(&o.servers).map_err(|dup| format!("{ident}: server {dup} is defined twice"))?;
    let new_map =
        by_name(&n.servers).map_err(|dup| format!("{ident}: server {dup} is defined twice"))?;
    let default_server = has_default_server(config, idx);
    let mut mine = Vec::new();
    for (name, old_server) in &old_map {
        if new_map.contains_key(name) {
            continue;
        }
        if old_server.has_keyword("agent-check") {
            return Err(format!(
                "server {backend}/{name}: removed, and its agent-check must be stopped first; \
                 not done at runtime"
            ));
        }
        mine.push(Op::DelServer {
            backend: backend.to_string(),
            name: name.to_string(),
        });
    }
    for (name, server) in &new_map {
        let Some(old_server) = old_map.get(name) else {
            if default_server {
                return Err(format!(
                    "{ident}: server {name} added, and a default-server line applies, which \
                     servers added at runtime do not inherit"
                ));
            }
            scan_keywords(&server.rest).map_err(|e| format!("server {backend}/{name}: {e}"))?;
            if server.has_keyword("agent-check") {
                return Err(format!(
                    "server {backend}/{name}: added with agent-check, which may bring it up on \
                     its own; not done at runtime"
                ));
            }
            mine.push(Op::AddServer {
                backend: backend.to_string(),
                server: (*server).clone(),
            });
            continue;
        };
        if old_server.addr != server.addr {
            return Err(format!(
                "{ident}: address of server {name} changed ({} → {})",
                old_server.addr, server.addr
            ));
        }
        if old_server.port != server.port {
            return Err(format!(
                "{ident}: port of server {name} changed ({} → {})",
                old_server.port, server.port
            ));
        }
        if old_server.rest != server.rest {
            return Err(format!(
                "server {backend}/{name}: keywords changed (`{}` → `{}`)",
                shown(&old_server.rest),
                shown(&server.rest)
            ));
        }
        if old_server.weight == server.weight {
            continue;
        }
        if default_server && (old_server.weight.is_none() || server.weight.is_none()) {
            return Err(format!(
                "server {backend}/{name}: weight changed to or from the one of a default-server \
                 line"
            ));
        }
        let (before, after) = (
            old_server.weight.unwrap_or(DEFAULT_WEIGHT),
            server.weight.unwrap_or(DEFAULT_WEIGHT),
        );
        if before != after {
            mine.push(Op::SetWeight {
                backend: backend.to_string(),
                name: name.to_string(),
                weight: after,
            });
        }
    }
    let reordered = {
        let names = |s: &[Server]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        names(&o.servers) != names(&n.servers)
    };
    if mine.is_empty() && !reordered {
        return Ok(());
    }
    match algorithm(config, idx) {
        Algorithm::Dynamic => {}
        Algorithm::Ordered => {
            return Err(format!(
                "{ident}: balance first picks servers by their order, which servers changed at \
                 runtime do not keep"
            ))
        }
        // Only the order changed, which a static algorithm does not depend on either.
        Algorithm::Static(_) if mine.is_empty() => {}
        Algorithm::Static(why) => return Err(format!("{ident}: {why}")),
    }
    ops.extend(mine);
    Ok(())
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;

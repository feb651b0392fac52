//! HAProxy's configuration text as the rest of the crate reads it: a lexer that cuts lines
//! into words the way HAProxy does, and a model of sections, directives and the servers the
//! runtime API can express. The planner ([`plan`](super::plan)) compares two of these, the
//! admin socket's state file and read-back check compare HAProxy's state with one, and the
//! change pipeline keeps one per output for what HAProxy runs.
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
//! The keyword tables are in [`keywords`]; the lexer (words, names, addresses) in [`lex`].

mod incremental;
mod keywords;
mod lex;

pub use incremental::Parsed;

pub use keywords::{ADD_SERVER_KEYWORDS, SECTION_KEYWORDS};
pub(crate) use lex::is_name;

use lex::{is_plain, parse_addr, split_words};
use std::sync::Arc;

/// HAProxy's weight when a server line sets none (and no `default-server` sets one); not
/// dockreg's default endpoint weight ([`crate::core::endpoint::DEFAULT_WEIGHT`], 100).
pub const HAPROXY_DEFAULT_WEIGHT: u16 = 1;

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
    pub(crate) fn keyword(&self) -> Option<&str> {
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
    pub(crate) fn from(&self) -> Option<&str> {
        let at = self.header.iter().skip(1).position(|w| w == "from")?;
        self.header.get(at + 2).map(String::as_str)
    }
}

/// A parsed configuration text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    /// Lines before the first section.
    pub preamble: Vec<Directive>,
    /// Shared, so that a configuration parsed again after a small change keeps the sections
    /// that did not change (and comparing them is a pointer comparison).
    pub sections: Vec<Arc<Section>>,
    /// Whether the text uses conditional blocks (`.if` …), which this parser does not evaluate.
    pub conditional: bool,
}

/// Parses a configuration text into sections; never fails (what it does not understand stays
/// a directive, compared word for word).
pub fn parse(text: &str) -> Config {
    parse_spans(text).0
}

/// Like [`parse`], and the byte offset in `text` of each section's first line.
pub(crate) fn parse_spans(text: &str) -> (Config, Vec<usize>) {
    let mut config = Config::default();
    let mut sections: Vec<Section> = Vec::new();
    let mut starts = Vec::new();
    let mut at = 0;
    for raw in text.split_inclusive('\n') {
        let start = at;
        at += raw.len();
        // As `str::lines`: without the `\n` and a `\r` before it.
        let line = raw.strip_suffix('\n').unwrap_or(raw);
        let line = line.strip_suffix('\r').unwrap_or(line);
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
            sections.push(Section {
                kind,
                name,
                header: words,
                directives: Vec::new(),
                servers: Vec::new(),
            });
            starts.push(start);
            continue;
        }
        let Some(section) = sections.last_mut() else {
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
    config.sections = sections.into_iter().map(Arc::new).collect();
    (config, starts)
}

/// How many items `a` and `b` share at their start and, in what is left, at their end.
pub(crate) fn common_ends<T: PartialEq>(a: &[T], b: &[T]) -> (usize, usize) {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let room = a.len().min(b.len()) - prefix;
    let suffix = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take(room)
        .take_while(|(x, y)| x == y)
        .count();
    (prefix, suffix)
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
pub(crate) fn scan_keywords(rest: &[String]) -> Result<Vec<&str>, String> {
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

#[cfg(test)]
pub(crate) mod tests;

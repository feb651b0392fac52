//! The lexer: HAProxy's rules for cutting a line into words, and the tests for names,
//! plain words and `<ip>:<port>` addresses that decide whether the runtime API can take a
//! server line as it is written.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Cuts a line into words the way HAProxy does, keeping each word's text as written (quotes
/// and escapes included); an unprotected `#` ends the line.
pub(super) fn split_words(line: &str) -> Vec<String> {
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
pub(crate) fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

/// A word that means the same on the CLI as in the configuration: printable ASCII with no
/// quoting, escaping, comment or command-separator character.
pub(super) fn is_plain(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\'' | b'\\' | b';' | b'#'))
}

/// `10.0.0.5:80` or `[2001:db8::5]:80` → the canonical IP text and the port.
pub(super) fn parse_addr(s: &str) -> Option<(String, u16)> {
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

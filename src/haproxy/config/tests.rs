//! Unit tests of the configuration model: HAProxy's word rules and what a text parses into
//! (what the parsed texts mean to the planner is tested with it, in `plan/tests.rs`).

use super::lex::split_words;
use super::*;

/// A small configuration of every common section, shared with the planner's tests.
pub(crate) const BASE: &str = "\
global
    maxconn 1000

defaults
    mode http
    timeout connect 5s

frontend fe
    bind 127.0.0.1:8080
    default_backend web

backend web
    balance roundrobin
    retries 2
    server s1 10.0.0.1:80 check weight 10
    server s2 10.0.0.2:80 check weight 20
";

#[test]
fn parses_sections_servers_and_directives() {
    let c = parse(BASE);
    let ids: Vec<String> = c.sections.iter().map(|s| s.ident()).collect();
    assert_eq!(ids, ["global", "defaults", "frontend fe", "backend web"]);
    let web = &c.sections[3];
    assert_eq!(
        web.servers[0],
        Server {
            name: "s1".into(),
            addr: "10.0.0.1".into(),
            port: 80,
            weight: Some(10),
            rest: vec!["check".into()],
        }
    );
    let words: Vec<Vec<String>> = web.directives.iter().map(|d| d.words.clone()).collect();
    assert_eq!(words, [vec!["balance", "roundrobin"], vec!["retries", "2"]]);
    assert!(c.sections[2].servers.is_empty());
    assert!(c.preamble.is_empty() && !c.conditional);
}

#[test]
fn split_words_follows_haproxy_quoting() {
    assert_eq!(split_words("  a\tb  # c"), ["a", "b"]);
    assert_eq!(split_words("a\\ b c"), ["a\\ b", "c"]);
    assert_eq!(
        split_words("x \"a # b\" 'c  d' e#f"),
        ["x", "\"a # b\"", "'c  d'", "e"]
    );
    assert_eq!(split_words("'\\' z"), ["'\\'", "z"]);
    assert!(split_words("   # only a comment").is_empty());
}

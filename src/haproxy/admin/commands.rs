//! The text of HAProxy 2.6's runtime API commands: the one place the crate writes it. The
//! planner describes server operations ([`Op`](crate::haproxy::plan::Op)); the applier
//! ([`apply`](super::apply)) sends these commands for them, and the socket client
//! ([`RuntimeSocket`](super::RuntimeSocket)) reads state with the `show` ones.
//!
//! An added server is created in maintenance, so it is enabled afterwards (`enable server`,
//! skipped when its keywords say `disabled`) and its health check started (`enable health`,
//! with `check`). A removal is two commands with a wait between them: the first puts the
//! server in maintenance (no new requests; connections in flight go on), then **the applier
//! waits until the server has drained** — HAProxy cancels `del server` while the server still
//! holds an active or idle connection or a queued request, so retrying it (and watching
//! `show servers conn`) within a bounded time is the wait — and only then does the deletion
//! go through. A server still busy at the drain timeout has its sessions shut down
//! (`shutdown sessions server`) and the deletion is tried again.
//!
//! Servers are named `<backend>/<server>` ([`id`]).

use crate::haproxy::config::Server;

/// How the runtime API names a server: `<backend>/<server>`.
pub(crate) fn id(backend: &str, server: &str) -> String {
    format!("{backend}/{server}")
}

/// The commands that add `server` to `backend`: `add server <b>/<s> <addr>:<port>
/// [weight <w>] <rest…>` (no `weight` when the line has none: HAProxy's default applies, as
/// for the configuration line), then `enable server <b>/<s>` unless the server is `disabled`,
/// then `enable health <b>/<s>` if it has `check`.
pub(crate) fn add_server(backend: &str, server: &Server) -> Vec<String> {
    let id = id(backend, &server.name);
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

/// `set server <id> weight <w>`.
pub(crate) fn set_weight(id: &str, weight: u16) -> String {
    format!("set server {id} weight {weight}")
}

/// `set server <id> state maint`: no new request reaches the server; those in flight go on.
pub(crate) fn set_maint(id: &str) -> String {
    format!("set server {id} state maint")
}

/// `set server <id> state ready`: out of maintenance.
pub(crate) fn set_ready(id: &str) -> String {
    format!("set server {id} state ready")
}

/// `set server <id> addr <addr>` (HAProxy closes the server's idle connections on a change).
pub(crate) fn set_addr(id: &str, addr: &str) -> String {
    format!("set server {id} addr {addr}")
}

/// `del server <id>`: refused while the server holds a connection or a queued request.
pub(crate) fn del_server(id: &str) -> String {
    format!("del server {id}")
}

/// `shutdown sessions server <id>`.
pub(crate) fn shutdown_sessions(id: &str) -> String {
    format!("shutdown sessions server {id}")
}

/// `show servers state [<backend>]`.
pub(crate) fn show_servers_state(backend: Option<&str>) -> String {
    match backend {
        Some(b) => format!("show servers state {b}"),
        None => "show servers state".to_string(),
    }
}

/// `show servers conn <backend>`.
pub(crate) fn show_servers_conn(backend: &str) -> String {
    format!("show servers conn {backend}")
}

/// Every command of one operation, in the order they go out (for a deletion, the applier
/// waits for the server to drain between the two). The applier sends them one by one, with
/// the drain in between; tests read a plan's effect through this.
#[cfg(test)]
pub(crate) fn of_op(op: &crate::haproxy::plan::Op) -> Vec<String> {
    use crate::haproxy::plan::Op;
    match op {
        Op::AddServer { backend, server } => add_server(backend, server),
        Op::DelServer { backend, name } => {
            let id = id(backend, name);
            vec![set_maint(&id), del_server(&id)]
        }
        Op::SetWeight {
            backend,
            name,
            weight,
        } => vec![set_weight(&id(backend, name), *weight)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(words: &str) -> Server {
        let text = format!("backend b\n    server s1 {words}\n");
        let config = crate::haproxy::config::parse(&text);
        config.sections[0].servers[0].clone()
    }

    #[test]
    fn add_enables_the_server_and_its_check() {
        assert_eq!(
            add_server("b", &server("10.0.0.1:80 check weight 5")),
            [
                "add server b/s1 10.0.0.1:80 weight 5 check",
                "enable server b/s1",
                "enable health b/s1"
            ]
        );
        // No weight on the line: none on the command (HAProxy's default applies).
        assert_eq!(
            add_server("b", &server("[2001:db8::1]:80")),
            ["add server b/s1 [2001:db8::1]:80", "enable server b/s1"]
        );
        // A disabled server stays in maintenance; its check still starts.
        assert_eq!(
            add_server("b", &server("10.0.0.1:80 disabled check")),
            [
                "add server b/s1 10.0.0.1:80 disabled check",
                "enable health b/s1"
            ]
        );
    }

    #[test]
    fn one_command_per_state_change() {
        let id = id("b", "s1");
        assert_eq!(id, "b/s1");
        assert_eq!(set_weight(&id, 0), "set server b/s1 weight 0");
        assert_eq!(set_maint(&id), "set server b/s1 state maint");
        assert_eq!(set_ready(&id), "set server b/s1 state ready");
        assert_eq!(set_addr(&id, "::"), "set server b/s1 addr ::");
        assert_eq!(del_server(&id), "del server b/s1");
        assert_eq!(shutdown_sessions(&id), "shutdown sessions server b/s1");
        assert_eq!(show_servers_state(None), "show servers state");
        assert_eq!(show_servers_state(Some("b")), "show servers state b");
        assert_eq!(show_servers_conn("b"), "show servers conn b");
    }

    #[test]
    fn a_deletion_is_maintenance_then_delete() {
        let op = crate::haproxy::plan::Op::DelServer {
            backend: "b".into(),
            name: "s1".into(),
        };
        assert_eq!(
            of_op(&op),
            ["set server b/s1 state maint", "del server b/s1"]
        );
    }
}

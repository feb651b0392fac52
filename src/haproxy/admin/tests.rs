//! Unit tests of the runtime API client: parsing HAProxy's answers, the saved state, the
//! read-back check, telling success from refusal on a fake socket, and waiting for drains at
//! shutdown.

use super::apply::verify;
use super::*;
use crate::haproxy::config::Server;

const STATE: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
4 service 1 127.0.0.1_9101 127.0.0.1 2 0 1 1 1 6 3 3 6 0 0 0 - 9101 - 0 0 - - 0
4 service 2 127.0.0.1_9102 127.0.0.1 0 1 7 1 0 1 0 0 2 0 0 0 - 9102 - 0 0 - - 0

";

fn server(name: &str, addr: &str, port: u16, weight: Option<u16>) -> Server {
    Server {
        name: name.into(),
        addr: addr.into(),
        port,
        weight,
        rest: vec!["check".into()],
    }
}

#[test]
fn parses_show_servers_state() {
    let s = ServerState::parse_all(STATE).unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].name, "127.0.0.1_9101");
    assert_eq!((s[0].port, s[0].op_state, s[0].weight), (9101, 2, 1));
    assert!(!s[0].in_maintenance());
    assert!(s[1].in_maintenance());
    assert_eq!(s[1].weight, 7);
    assert!(ServerState::parse_all("").unwrap().is_empty());
    assert!(ServerState::parse_all("Unknown command.\n").is_err());
    assert!(ServerState::parse_all("1\n# be_name\n").is_err());
}

#[test]
fn saved_state_leaves_out_servers_the_configuration_moved() {
    let config = "backend service\n    server 127.0.0.1_9101 127.0.0.1:9101 check\n    server 127.0.0.1_9102 127.0.0.1:9999 check\n";
    let (text, dropped) = state_for(STATE, &[&crate::haproxy::config::parse(config)]).unwrap();
    assert_eq!(dropped, 1);
    assert!(text.starts_with("1\n# be_id"), "{text}");
    assert!(text.contains("127.0.0.1_9101"));
    assert!(!text.contains("127.0.0.1_9102"));
    // Servers the configuration does not name are kept (HAProxy ignores them).
    let (text, dropped) = state_for(STATE, &[]).unwrap();
    assert_eq!(
        (dropped, ServerState::parse_all(&text).unwrap().len()),
        (0, 2)
    );
    assert!(state_for("Permission denied.\n", &[]).is_err());
}

#[test]
fn reads_connections_in_use() {
    let text = "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]
service/s1 4/1 127.0.0.1 9201 - 5000 2 3 1 1 0 -1 1 1 0
service/s2 4/2 ::1 9202 - 5000 0 1 1 1 0 -1 1 1 0
";
    assert_eq!(
        used_connections(text, "service/s1").unwrap(),
        Some((2, Some("127.0.0.1".parse().unwrap())))
    );
    assert_eq!(
        used_connections(text, "service/s2").unwrap(),
        Some((0, Some("::1".parse().unwrap())))
    );
    // HAProxy 2.6 prints `::/96` addresses with an embedded IPv4 part.
    let text = "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]
b/s1 2/1 ::10.0.0.1 80 - 5000 0 0 0 0 0 -1 0 0 0
b/s6 2/6 - 80 - 0 0 0 0 0 0 0 0
";
    assert_eq!(
        used_connections(text, "b/s1").unwrap(),
        Some((0, Some("::a00:1".parse().unwrap())))
    );
    assert_eq!(used_connections(text, "b/s6").unwrap(), Some((0, None)));
    assert_eq!(used_connections(text, "service/s3").unwrap(), None);
    assert!(used_connections("Can't find backend.\n", "b/s").is_err());
}

#[test]
fn verify_accepts_the_intended_state() {
    let s = ServerState::parse_all(STATE).unwrap();
    let want = [server("127.0.0.1_9101", "127.0.0.1", 9101, Some(1))];
    // 9102 is in maintenance: fine while it drains, an error otherwise.
    verify("service", &want, &s, &["service/127.0.0.1_9102".into()]).unwrap();
    let err = verify("service", &want, &s, &[]).unwrap_err();
    assert!(err.contains("service/127.0.0.1_9102"), "{err}");
}

#[test]
fn verify_names_each_mismatch() {
    let s = ServerState::parse_all(STATE).unwrap();
    let drain = ["service/127.0.0.1_9102".to_string()];
    let cases = [
        (
            server("127.0.0.1_9101", "127.0.0.1", 9101, Some(3)),
            "weight",
        ),
        (
            server("127.0.0.1_9101", "127.0.0.2", 9101, None),
            "127.0.0.2",
        ),
        (server("127.0.0.1_9103", "127.0.0.1", 9103, None), "missing"),
    ];
    for (w, needle) in cases {
        let err = verify("service", &[w], &s, &drain).unwrap_err();
        assert!(err.contains(needle), "{needle}: {err}");
    }
    // Wanted enabled but in forced maintenance.
    let want = [
        server("127.0.0.1_9101", "127.0.0.1", 9101, None),
        server("127.0.0.1_9102", "127.0.0.1", 9102, Some(7)),
    ];
    let err = verify("service", &want, &s, &[]).unwrap_err();
    assert!(err.contains("maintenance"), "{err}");
}

/// What HAProxy 2.6.12 printed for servers configured as `[::a00:1]:80 weight 5`,
/// `[::10.0.0.2]:80`, `[::ffff:10.0.0.3]:80`, `[::1]:80` and `10.0.0.5:80` (`show servers state b`,
/// copied from a real run): `::/96` addresses come back with an embedded IPv4 part.
const STATE_V6: &str = "1
# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port
2 b 1 s1 ::10.0.0.1 2 0 5 5 1 1 0 2 0 0 0 0 - 80 - 0 0 - - 0
2 b 2 s2 ::10.0.0.2 2 0 1 1 1 1 0 2 0 0 0 0 - 80 - 0 0 - - 0
2 b 3 s3 ::ffff:10.0.0.3 2 0 1 1 1 1 0 2 0 0 0 0 - 80 - 0 0 - - 0
2 b 4 s4 ::1 2 0 1 1 1 1 0 2 0 0 0 0 - 80 - 0 0 - - 0
2 b 5 s5 10.0.0.5 2 0 1 1 1 1 0 2 0 0 0 0 - 80 - 0 0 - - 0
";

#[test]
fn verify_compares_addresses_as_ips_not_text() {
    let s = ServerState::parse_all(STATE_V6).unwrap();
    assert_eq!(s[0].addr, "::10.0.0.1", "HAProxy's own spelling");
    // The configuration's canonical text (Rust's, as rendered) for the same addresses.
    let want = [
        server("s1", "::a00:1", 80, Some(5)),
        server("s2", "::a00:2", 80, None),
        server("s3", "::ffff:10.0.0.3", 80, None),
        server("s4", "::1", 80, None),
        server("s5", "10.0.0.5", 80, None),
    ];
    verify("b", &want, &s, &[]).unwrap();
    // A mapped address is not its IPv4 address to HAProxy: still a mismatch.
    let err = verify("b", &[server("s3", "10.0.0.3", 80, None)], &s, &[]).unwrap_err();
    assert!(err.contains("s3") && err.contains("10.0.0.3"), "{err}");
    let err = verify("b", &[server("s1", "::a00:9", 80, Some(5))], &s, &[]).unwrap_err();
    assert!(err.contains("::a00:9"), "{err}");
}

#[test]
fn saved_state_compares_addresses_as_ips() {
    let config = "backend b\n    server s1 [::a00:1]:80 weight 5\n    server s2 [::a00:9]:80\n    server s5 10.0.0.5:80\n";
    let (text, dropped) = state_for(STATE_V6, &[&crate::haproxy::config::parse(config)]).unwrap();
    assert_eq!(dropped, 1, "only s2 moved: {text}");
    assert!(
        text.contains(" s1 ::10.0.0.1 ") && !text.contains(" s2 "),
        "{text}"
    );
}

#[test]
fn same_ip_parses_both_sides() {
    assert!(same_ip("::10.0.0.1", "::a00:1"));
    assert!(same_ip("::1", "0:0:0:0:0:0:0:1"));
    assert!(!same_ip("::ffff:10.0.0.1", "10.0.0.1"));
    assert!(same_ip("-", "-"));
    assert!(!same_ip("-", "10.0.0.1"));
}

#[tokio::test]
async fn exec_tells_success_from_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        for answer in [
            "New server registered.\n\n",
            "\n",
            "IP changed from '0.0.0.0' to '10.0.0.1', no need to change the port by 'stats socket command'\n\n",
            "No such server.\n\n",
        ] {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).await.unwrap();
            s.write_all(answer.as_bytes()).await.unwrap();
        }
    });
    let sock = RuntimeSocket {
        path,
        timeout: Duration::from_secs(2),
    };
    sock.exec("add server b/s 10.0.0.1:80").await.unwrap();
    sock.exec("enable server b/s").await.unwrap();
    sock.exec("set server b/s addr 10.0.0.1 port 80")
        .await
        .unwrap();
    let err = sock.exec("del server b/x").await.unwrap_err().to_string();
    assert!(
        err.contains("del server b/x") && err.contains("No such server"),
        "{err}"
    );
}

/// A fake HAProxy admin socket in `dir`: each connection gets one command (a line) and the
/// answer `answer` gives it.
fn fake_admin(
    dir: &std::path::Path,
    answer: impl Fn(&str) -> String + Send + 'static,
) -> RuntimeSocket {
    use tokio::io::AsyncBufReadExt;
    let path = dir.join("admin.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let mut s = tokio::io::BufReader::new(s);
            let mut cmd = String::new();
            s.read_line(&mut cmd).await.unwrap();
            let reply = answer(cmd.trim());
            s.get_mut().write_all(reply.as_bytes()).await.unwrap();
        }
    });
    RuntimeSocket {
        path,
        timeout: Duration::from_secs(2),
    }
}

#[tokio::test]
async fn shutdown_waits_for_drains_then_abandons_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    // HAProxy refuses `del server` until `drained` is set.
    let drained = Arc::new(AtomicBool::new(false));
    let flag = drained.clone();
    let socket = fake_admin(dir.path(), move |cmd| {
        match cmd.starts_with("del server") {
            true if flag.load(Ordering::SeqCst) => "Server deleted.\n\n",
            true => "Server still has connections attached to it, cannot remove it.\n\n",
            false => "\n",
        }
        .to_string()
    });
    let applier = RuntimeApplier::new(socket, Duration::from_secs(60));
    // A drain that does not end within the grace period is abandoned.
    applier.start_drain("b/s1".into());
    assert_eq!(applier.draining(), ["b/s1"]);
    let started = std::time::Instant::now();
    applier.shutdown(Duration::from_millis(300)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(applier.draining().is_empty());
    // One that ends is waited for, and shutdown returns as soon as it has.
    drained.store(true, Ordering::SeqCst);
    applier.start_drain("b/s2".into());
    let started = std::time::Instant::now();
    applier.shutdown(Duration::from_secs(30)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(applier.draining().is_empty());
    // Nothing running: no wait.
    applier.shutdown(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn a_server_revived_while_it_drains_gets_its_address_back() {
    use crate::haproxy::config::parse;
    use crate::haproxy::plan::Op;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().unwrap();
    // HAProxy as far as this goes: `del server` refused (an idle connection), the server's
    // connections idle, every other command accepted; the commands are recorded.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let socket = fake_admin(dir.path(), move |cmd| {
        log.lock().unwrap().push(cmd.to_string());
        if cmd.starts_with("del server") {
            "Server still has connections attached to it, cannot remove it.\n\n".to_string()
        } else if cmd.starts_with("show servers conn") {
            "# bkname/svname bkid/svid addr port - purge_delay used_cur used_max need_est unsafe_nb safe_nb idle_lim idle_cur idle_per_thr[2]\nb/s 1/1 10.0.0.1 80 - 5000 0 1 0 0 0 -1 1 1 0\n\n".to_string()
        } else {
            "\n".to_string()
        }
    });
    let applier = RuntimeApplier::new(socket, Duration::from_secs(60));
    applier.start_drain("b/s".into());
    // The drain finds the server idle and moves its address away.
    let moved = || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("set server b/s addr 0.0.0.0"))
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !moved() {
        assert!(
            std::time::Instant::now() < deadline,
            "the drain never moved the address"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let config = parse("backend b\n    server s 10.0.0.1:80 weight 3\n");
    let server = config.sections[0].servers[0].clone();
    let add = Op::AddServer {
        backend: "b".into(),
        server,
    };
    // The fake keeps the moved address in its answers; the drain must not move it again.
    seen.lock().unwrap().clear();
    // The read-back fails against this fake (no state); what matters is what was sent.
    let _ = applier
        .apply(&[add], &std::collections::BTreeMap::new())
        .await;
    let sent = seen.lock().unwrap().clone();
    assert_eq!(
        sent[..3],
        [
            "set server b/s addr 10.0.0.1 port 80",
            "set server b/s weight 3",
            "set server b/s state ready"
        ],
        "{sent:?}"
    );
    assert!(applier.draining().is_empty());
}

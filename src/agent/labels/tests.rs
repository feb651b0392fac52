//! What a container's labels and environment ask the agent to register, and what is refused.

use super::*;

const IP: &str = "10.0.0.5";

fn binding(port: &str) -> Option<Vec<PortBinding>> {
    Some(vec![PortBinding {
        host_ip: Some("0.0.0.0".into()),
        host_port: Some(port.into()),
    }])
}

fn facts(labels: &[(&str, &str)], env: &[(&str, &str)], ports: &[(u16, &str)]) -> Facts {
    Facts {
        id: "0123456789abcdef".into(),
        name: "app-1".into(),
        hostname: "0123456789ab".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ports: ports
            .iter()
            .map(|(p, host)| (format!("{p}/tcp"), binding(host)))
            .collect(),
        running: true,
        ..Facts::default()
    }
}

fn defaults() -> Defaults {
    Defaults {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(3),
        rise: 2,
        fall: 2,
    }
}

fn run(f: &Facts) -> Plan {
    plan(f, &defaults(), IP.parse().unwrap())
}

fn names(p: &Plan) -> Vec<(String, SocketAddr)> {
    p.wanted
        .iter()
        .map(|w| (w.service.clone(), w.addr))
        .collect()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::new(IP.parse().unwrap(), port)
}

#[test]
fn a_container_without_opt_in_is_not_registered() {
    let p = run(&facts(&[], &[("PATH", "/bin")], &[(8000, "32768")]));
    assert_eq!(p, Plan::default());
}

#[test]
fn service_label_registers_the_published_port() {
    let p = run(&facts(
        &[("dockreg.service", "web")],
        &[],
        &[(8000, "32768")],
    ));
    assert!(p.problems.is_empty(), "{:?}", p.problems);
    assert_eq!(names(&p), vec![("web".to_string(), addr(32768))]);
    let w = &p.wanted[0];
    assert_eq!(w.container_port, 8000);
    assert_eq!(w.check.kind, CheckKind::Probe(Check::Tcp));
    assert_eq!(w.check.interval, Duration::from_secs(5));
}

#[test]
fn registrator_names_from_env_and_labels() {
    let p = run(&facts(&[], &[("SERVICE_NAME", "api")], &[(8000, "32768")]));
    assert_eq!(names(&p), vec![("api".to_string(), addr(32768))]);
    // A label wins over the environment, a dockreg label over both.
    let p = run(&facts(
        &[("SERVICE_NAME", "from-label")],
        &[("SERVICE_NAME", "from-env")],
        &[(8000, "1")],
    ));
    assert_eq!(p.wanted[0].service, "from-label");
    let p = run(&facts(
        &[("SERVICE_NAME", "from-label"), ("dockreg.service", "ours")],
        &[],
        &[(8000, "1")],
    ));
    assert_eq!(p.wanted[0].service, "ours");
}

#[test]
fn ignore_keeps_the_container_out() {
    for (labels, env) in [
        (
            vec![("dockreg.service", "web"), ("dockreg.ignore", "true")],
            vec![],
        ),
        (
            vec![("dockreg.service", "web")],
            vec![("SERVICE_IGNORE", "1")],
        ),
        (
            vec![],
            vec![("SERVICE_NAME", "web"), ("SERVICE_IGNORE", "yes")],
        ),
    ] {
        let p = run(&facts(&labels, &env, &[(8000, "32768")]));
        assert!(p.wanted.is_empty(), "{labels:?} {env:?}");
    }
    // `false` is not an ignore.
    let p = run(&facts(
        &[("dockreg.service", "web"), ("dockreg.ignore", "false")],
        &[],
        &[(8000, "1")],
    ));
    assert_eq!(p.wanted.len(), 1);
}

#[test]
fn several_ports_are_named_per_port_or_suffixed() {
    let p = run(&facts(
        &[("dockreg.service", "web")],
        &[],
        &[(8000, "1001"), (9000, "1002")],
    ));
    assert_eq!(
        names(&p),
        vec![
            ("web-8000".to_string(), addr(1001)),
            ("web-9000".to_string(), addr(1002))
        ]
    );
    let p = run(&facts(
        &[
            ("dockreg.service", "web"),
            ("dockreg.port.9000.service", "metrics"),
        ],
        &[],
        &[(8000, "1001"), (9000, "1002")],
    ));
    assert_eq!(
        names(&p),
        vec![
            ("web".to_string(), addr(1001)),
            ("metrics".to_string(), addr(1002))
        ]
    );
    // Only the named port, when only ports are named.
    let p = run(&facts(
        &[],
        &[("SERVICE_9000_NAME", "metrics")],
        &[(8000, "1001"), (9000, "1002")],
    ));
    assert_eq!(names(&p), vec![("metrics".to_string(), addr(1002))]);
    // dockreg.port picks one port, without a suffix.
    let p = run(&facts(
        &[("dockreg.service", "web"), ("dockreg.port", "9000")],
        &[],
        &[(8000, "1001"), (9000, "1002")],
    ));
    assert_eq!(names(&p), vec![("web".to_string(), addr(1002))]);
    // A per-port ignore.
    let p = run(&facts(
        &[
            ("dockreg.service", "web"),
            ("dockreg.port.9000.ignore", "true"),
        ],
        &[],
        &[(8000, "1001"), (9000, "1002")],
    ));
    // The one port left keeps the plain name.
    assert_eq!(names(&p), vec![("web".to_string(), addr(1001))]);
}

#[test]
fn a_named_port_that_is_not_published_is_a_problem() {
    let p = run(&facts(
        &[("dockreg.service", "web"), ("dockreg.port", "7000")],
        &[],
        &[(8000, "1001")],
    ));
    assert!(p.wanted.is_empty());
    assert_eq!(p.problems.len(), 1);
    let text = p.problems[0].to_string();
    assert!(text.contains("app-1") && text.contains("7000"), "{text}");
}

#[test]
fn stopped_or_paused_containers_get_nothing() {
    let mut f = facts(&[("dockreg.service", "web")], &[], &[(8000, "1")]);
    f.paused = true;
    assert_eq!(run(&f), Plan::default());
    f.paused = false;
    f.running = false;
    assert_eq!(run(&f), Plan::default());
}

#[test]
fn hostile_names_never_pass() {
    let long = "a".repeat(10 * 1024);
    let long65 = "a".repeat(65);
    for bad in [
        "bad name",
        "x#y",
        "web\nbackend evil",
        "a/b",
        "../etc",
        "web;",
        "ünï",
        long.as_str(),
        long65.as_str(),
    ] {
        for f in [
            facts(&[("dockreg.service", bad)], &[], &[(8000, "1")]),
            facts(&[], &[("SERVICE_NAME", bad)], &[(8000, "1")]),
            facts(&[("dockreg.port.8000.service", bad)], &[], &[(8000, "1")]),
        ] {
            let p = run(&f);
            assert!(p.wanted.is_empty(), "{bad:?} registered");
            assert_eq!(p.problems.len(), 1, "{bad:?}: {:?}", p.problems);
            let text = p.problems[0].to_string();
            assert!(text.contains("app-1"), "{text}");
            assert!(!text.contains('\n'), "a problem is one line: {text:?}");
            assert!(text.len() < 400, "a problem does not repeat a 10 KB value");
        }
    }
}

#[test]
fn a_name_that_becomes_too_long_with_its_suffix_is_refused() {
    let name = "a".repeat(62);
    let p = run(&facts(
        &[("dockreg.service", &name)],
        &[],
        &[(8000, "1"), (9000, "2")],
    ));
    assert!(p.wanted.is_empty());
    assert_eq!(p.problems.len(), 2, "{:?}", p.problems);
}

#[test]
fn tags_and_weight() {
    let p = run(&facts(
        &[
            ("dockreg.service", "web"),
            ("dockreg.tags", "canary, zone=a"),
            ("dockreg.weight", "50"),
        ],
        &[],
        &[(8000, "1")],
    ));
    assert_eq!(p.wanted[0].tags, vec!["canary", "zone=a"]);
    assert_eq!(p.wanted[0].weight, Some(50));
    let p = run(&facts(
        &[],
        &[("SERVICE_NAME", "web"), ("SERVICE_TAGS", "v2")],
        &[(8000, "1")],
    ));
    assert_eq!(p.wanted[0].tags, vec!["v2"]);
    for (label, value) in [
        ("dockreg.tags", "ok,bad tag"),
        ("dockreg.tags", "x\"y"),
        ("dockreg.tags", "a#b"),
        ("dockreg.weight", "257"),
        ("dockreg.weight", "-1"),
        ("dockreg.weight", "heavy"),
    ] {
        let p = run(&facts(
            &[("dockreg.service", "web"), (label, value)],
            &[],
            &[(8000, "1")],
        ));
        assert!(p.wanted.is_empty(), "{label}={value:?} registered");
        assert!(
            p.problems[0].to_string().contains(label),
            "{:?}",
            p.problems
        );
    }
    let many = vec!["t"; 33].join(",");
    let p = run(&facts(
        &[("dockreg.service", "web"), ("dockreg.tags", &many)],
        &[],
        &[(8000, "1")],
    ));
    assert!(p.wanted.is_empty());
}

#[test]
fn values_longer_than_the_limit_are_refused_by_size() {
    let big = format!("web,{}", "a".repeat(MAX_LABEL));
    let p = run(&facts(
        &[("dockreg.service", "web"), ("dockreg.tags", &big)],
        &[],
        &[(8000, "1")],
    ));
    assert!(p.wanted.is_empty());
    let text = p.problems[0].to_string();
    assert!(text.contains("bytes, more than the 1024"), "{text}");
}

#[test]
fn checks_from_labels() {
    let check = |labels: &[(&str, &str)]| {
        let mut all = vec![("dockreg.service", "web")];
        all.extend_from_slice(labels);
        run(&facts(&all, &[], &[(8000, "1")]))
    };
    let p = check(&[
        ("dockreg.check", "http:/health"),
        ("dockreg.check.interval", "250ms"),
        ("dockreg.check.timeout", "1s"),
        ("dockreg.check.rise", "3"),
        ("dockreg.check.fall", "1"),
        ("dockreg.check.status", "200,204"),
    ]);
    let c = &p.wanted[0].check;
    assert_eq!(
        c.kind,
        CheckKind::Probe(Check::http("/health", "200,204".parse().unwrap()).unwrap())
    );
    assert_eq!(
        (c.interval, c.timeout, c.rise, c.fall),
        (Duration::from_millis(250), Duration::from_secs(1), 3, 1)
    );
    assert_eq!(
        check(&[("dockreg.check", "none")]).wanted[0].check.kind,
        CheckKind::None
    );
    // Registrator's check variables.
    let p = run(&facts(
        &[],
        &[("SERVICE_NAME", "web"), ("SERVICE_CHECK_HTTP", "/ping")],
        &[(8000, "1")],
    ));
    assert!(
        matches!(&p.wanted[0].check.kind, CheckKind::Probe(Check::Http { path, .. }) if path == "/ping")
    );
    for (label, value) in [
        ("dockreg.check", "icmp"),
        ("dockreg.check", "http:health"),
        ("dockreg.check", "http:/a b"),
        ("dockreg.check", "docker"),
        ("dockreg.check.interval", "forever"),
        ("dockreg.check.interval", "1ms"),
        ("dockreg.check.rise", "0"),
        ("dockreg.check.status", "999"),
    ] {
        let p = check(&[(label, value)]);
        assert!(p.wanted.is_empty(), "{label}={value:?} accepted");
        assert!(
            p.problems[0].to_string().contains(label),
            "{label}: {:?}",
            p.problems
        );
    }
}

#[test]
fn the_docker_healthcheck_is_the_default_when_there_is_one() {
    let mut f = facts(&[("dockreg.service", "web")], &[], &[(8000, "1")]);
    f.health = Some(DockerHealth::Starting);
    assert_eq!(run(&f).wanted[0].check.kind, CheckKind::Docker);
    f.labels.insert("dockreg.check".into(), "tcp".into());
    assert_eq!(run(&f).wanted[0].check.kind, CheckKind::Probe(Check::Tcp));
}

#[test]
fn host_networking_needs_the_port_named() {
    let mut f = facts(&[("dockreg.service", "web")], &[], &[]);
    f.host_network = true;
    let p = run(&f);
    assert!(p.wanted.is_empty());
    assert!(p.problems[0].to_string().contains("dockreg.port"));
    f.labels.insert("dockreg.port".into(), "8080".into());
    assert_eq!(names(&run(&f)), vec![("web".to_string(), addr(8080))]);
}

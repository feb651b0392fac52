//! The sidekick's main loop: check the app, and keep the registration in step with its health.
//!
//! Level-triggered: every check result, notice from etcd and retry leads to one `reconcile`,
//! which makes etcd match what health says (key present under our lease while Up, absent
//! otherwise). Failed etcd calls are retried with jittered backoff, not only at the next check.
//! Every etcd call has a deadline, and the shutdown future (SIGTERM/SIGINT in the binary,
//! [`stop_signal`](super::stop_signal)) cancels one in flight: stopping never waits on an
//! unreachable etcd for longer than [`STOP_DEADLINE`].

use super::args::{CheckKind, SidekickArgs};
use super::call::CallError;
use super::check::{probe, Check, Health, Hysteresis};
use super::docker::{discover, own_container_id, Discovered};
use super::metrics::SidekickMetrics;
use super::register::Registration;
use super::signals::{forwarded_signals, StopSignal};
use super::tasks::Notice;
use super::wrapper::App;
use crate::core::backoff::Backoff;
use crate::core::endpoint::{EndpointValue, LEGACY_VALUE};
use crate::core::process::Fatal;
use anyhow::{anyhow, Context as _, Result};
use rustix::process::Signal;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Deadline of each etcd call on the stop path (revoking the lease): the app's SIGTERM must
/// not wait on an unreachable etcd.
pub(crate) const STOP_DEADLINE: Duration = Duration::from_secs(1);

/// Where the registered address comes from.
enum Source {
    /// `--host-port` with `--ip`: no Docker.
    Fixed(SocketAddr),
    /// The Docker engine, inspected again whenever the registration is (re)made.
    Docker {
        socket: std::path::PathBuf,
        container: String,
        port: u16,
        ip: Option<IpAddr>,
    },
}

impl Source {
    async fn resolve(&self) -> Result<(SocketAddr, Option<Discovered>)> {
        match self {
            Source::Fixed(addr) => Ok((*addr, None)),
            Source::Docker {
                socket,
                container,
                port,
                ip,
            } => {
                let d = discover(socket, container, *port, *ip).await?;
                Ok((d.addr, Some(d)))
            }
        }
    }
}

/// The value to write: JSON metadata ([`EndpointValue`]), or the legacy `running`.
fn value(args: &SidekickArgs, found: Option<&Discovered>) -> Result<String> {
    if args.legacy_value {
        return Ok(LEGACY_VALUE.to_string());
    }
    EndpointValue {
        container: found.map(|d| d.container_id.chars().take(12).collect()),
        hostname: found.map(|d| d.hostname.clone()).filter(|h| !h.is_empty()),
        tags: args.tags.clone(),
        weight: args.weight.map(u64::from),
        agent: None,
    }
    .to_json()
    .context("writing the endpoint value as JSON")
}

/// At most [`MAX_TAGS`](crate::core::endpoint::MAX_TAGS) tags, or the watcher skips the value.
fn check_tags(args: &SidekickArgs) -> Result<()> {
    let max = crate::core::endpoint::MAX_TAGS;
    if args.tags.len() > max {
        anyhow::bail!(
            "--tag: {} tags, more than the {max} a value may carry",
            args.tags.len()
        );
    }
    Ok(())
}

fn check_of(args: &SidekickArgs) -> Result<Check> {
    Ok(match args.check {
        CheckKind::Tcp => Check::Tcp,
        CheckKind::Http => {
            let statuses = args
                .check_status
                .parse()
                .map_err(|e: String| anyhow::anyhow!(e))?;
            Check::http(&args.check_path, statuses)
                .map_err(|e| anyhow::anyhow!("--check-path: {e}"))?
        }
    })
}

/// Checks the flags and works out where the address comes from; every flag error names its
/// flag and is a usage error.
fn source_of(args: &SidekickArgs) -> Result<Source, Fatal> {
    if let Some(hp) = args.host_port {
        let Some(ip) = args.ip else {
            return Err(Fatal::usage(anyhow!(
                "--host-port needs --ip (the host address to register)"
            )));
        };
        if hp == 0 {
            return Err(Fatal::usage(anyhow!("--host-port 0 is not a port")));
        }
        return Ok(Source::Fixed(SocketAddr::new(ip, hp)));
    }
    let container = own_container_id(args.container.as_deref()).map_err(anyhow::Error::from)?;
    Ok(Source::Docker {
        socket: args.docker.clone(),
        container,
        port: args.port,
        ip: args.ip,
    })
}

/// Why the loop ended.
enum End {
    /// The shutdown future resolved: SIGTERM/SIGINT, to pass on to the app in wrapper mode.
    Signal(StopSignal),
    /// The app exited with this status (wrapper mode).
    AppExited(i32),
    /// A configuration error that retrying cannot heal: stop the app and exit non-zero.
    Fatal(anyhow::Error),
}

/// Whether a failed reconcile is etcd's TLS certificate rejected before etcd ever answered:
/// a wrong `--etcd-ca` (or an endpoint its certificate does not name), not an outage. Once
/// etcd has answered, a rejection (a certificate changed under a running sidekick) is retried
/// like any other failure, so the app is not stopped.
fn certificate_rejected_at_start(e: &anyhow::Error, etcd_answered: bool) -> bool {
    !etcd_answered
        && e.downcast_ref::<CallError>()
            .is_some_and(CallError::certificate_rejected)
}

/// The error a rejected certificate ends the sidekick with: names the endpoints and the CA.
fn certificate_error(e: anyhow::Error, args: &SidekickArgs) -> anyhow::Error {
    let ca = match &args.etcd.etcd_ca {
        Some(p) => format!("--etcd-ca {}", p.display()),
        None => "the default roots (no --etcd-ca given)".to_string(),
    };
    e.context(format!(
        "etcd's TLS certificate at --etcd {} does not verify with {ca}",
        args.etcd.endpoints.join(",")
    ))
}

/// Outside wrapper mode a SIGHUP (a `systemctl reload`, a terminal closing) has no app to go
/// to and nothing to reload: logged and ignored rather than stopping the sidekick without
/// revoking its lease.
fn ignore_hangup() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    tracing::info!("SIGHUP ignored: the sidekick has nothing to reload");
                }
            });
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot handle SIGHUP; a SIGHUP would stop the sidekick")
        }
    }
}

/// Runs the sidekick until `shutdown` resolves or, in wrapper mode, the app exits; returns
/// the process exit code (the app's status in wrapper mode, else 0).
///
/// `shutdown` says which signal stopped the sidekick (passed on to the app after the drain)
/// and is first polled when the main loop starts, after discovery, the app's start and the
/// etcd connection; the binary gives it [`stop_signal`](super::stop_signal), which installs
/// its handlers then. Its error (a handler that cannot be installed) ends `run` with that
/// error.
pub async fn run(
    args: SidekickArgs,
    shutdown: impl Future<Output = Result<StopSignal>>,
) -> Result<i32, Fatal> {
    let prefix = args
        .prefix()
        .map_err(|e| Fatal::usage(anyhow!("--key: {e}")))?;
    check_tags(&args).map_err(Fatal::usage)?;
    let metrics = Arc::new(SidekickMetrics::new());
    let serving = CancellationToken::new();
    if let Some(addr) = args.metrics_addr {
        let listener = crate::core::serve::bind(addr).await.map_err(Fatal::usage)?;
        let (status, stop) = (metrics.clone(), serving.clone().cancelled_owned());
        tokio::spawn(async move {
            if let Err(e) = crate::core::serve::serve(listener, status, stop).await {
                tracing::error!(error = %format!("{e:#}"), "metrics and health endpoints stopped");
            }
        });
        tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let _serving = serving.drop_guard();
    args.etcd.validate().map_err(Fatal::usage)?;
    let check = check_of(&args).map_err(Fatal::usage)?;
    if args.timeout >= args.interval {
        tracing::warn!(timeout = ?args.timeout, interval = ?args.interval, "--timeout is not shorter than --interval");
    }
    let source = source_of(&args)?;
    // Resolve once before anything else: a port that is not published is a start-up error.
    let (mut addr, mut found) = source.resolve().await?;
    tracing::info!(key = %prefix.endpoint_key(addr), "endpoint discovered");

    let mut app = if args.command.is_empty() {
        None
    } else {
        Some(App::start(&args.command)?)
    };
    let deadline = args.etcd.etcd_timeout;
    let client = tokio::time::timeout(deadline, args.etcd.connect())
        .await
        .with_context(|| format!("connecting to etcd: no answer within {deadline:?}"))??;
    let (notice_tx, mut notices) = mpsc::channel(16);
    let mut reg = Registration::new(client, args.ttl, deadline, notice_tx);
    let mut health = Hysteresis::new(args.rise, args.fall);
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), args.port);

    tokio::pin!(shutdown);
    let mut forwarded = if app.is_some() {
        forwarded_signals()?
    } else {
        ignore_hangup();
        Vec::new()
    };
    let (fwd_tx, mut fwd_rx) = mpsc::channel::<Signal>(8);
    for (n, mut s) in forwarded.drain(..) {
        let tx = fwd_tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(n).await.is_err() {
                    return;
                }
            }
        });
    }

    // The first check runs at once. Until the app has answered once (it may still be
    // starting), failures do not count and checks run every 25 ms.
    let startup_pace = args.interval.min(Duration::from_millis(25));
    let mut next_check = Instant::now();
    // Jittered: hundreds of sidekicks that lost one etcd must not retry in lockstep.
    let mut retry = Backoff::default().with_jitter(0.5);
    let mut retry_at: Option<Instant> = None;
    let mut need_resolve = false;
    // The key watch restarted: check the key is still ours at the next reconcile.
    let mut check_key = false;
    // etcd granted a lease at least once (a TLS rejection before that is a wrong CA).
    let mut etcd_answered = false;
    // The lease last seen, to count grants.
    let mut last_lease: Option<i64> = None;

    let end = loop {
        let app_exit = async {
            match app.as_mut() {
                Some(a) => a.wait().await,
                None => std::future::pending().await,
            }
        };
        let retry_sleep = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            stop = &mut shutdown => break End::Signal(stop?),
            status = app_exit => break End::AppExited(status),
            Some(sig) = fwd_rx.recv() => {
                if let Some(a) = &app { a.signal(sig); }
                continue;
            }
            _ = tokio::time::sleep_until(next_check) => {
                let probed = Instant::now();
                let result = probe(&check, target, args.timeout).await;
                metrics.check(result.is_ok(), probed.elapsed());
                let starting = health.health() == Health::Unknown;
                next_check = Instant::now() + if starting { startup_pace } else { args.interval };
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "check failed");
                    if starting {
                        continue;
                    }
                }
                let observed = health.observe(result.is_ok());
                metrics.healthy.set(i64::from(health.health() == Health::Up));
                match observed {
                    Some(Health::Up) => {
                        tracing::info!("app healthy");
                    }
                    Some(h) => {
                        let why = result.err().unwrap_or_default();
                        tracing::warn!(health = ?h, reason = %why, "app unhealthy");
                        need_resolve = true;
                    }
                    None => {}
                }
            }
            Some(n) = notices.recv() => match n {
                Notice::LeaseLost(id) => reg.forget_lease(id),
                Notice::KeyDeleted(key) => {
                    if reg.registered() == Some(key.as_str()) {
                        tracing::warn!(key, "own key deleted by someone else; putting it back");
                    }
                    reg.forget_key();
                }
                Notice::Resync if reg.standby() => reg.forget_key(),
                Notice::Resync => check_key = true,
            },
            _ = retry_sleep => { retry_at = None; }
        }
        // Reconcile etcd with health; a stop signal cancels it (each call has a deadline too).
        let want = health.health() == Health::Up;
        let reconcile = async {
            if let Some(key) = reg.registered().map(str::to_string).filter(|_| check_key) {
                match reg.holds(&key).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(key, "own key missing; putting it back");
                        reg.forget_key();
                    }
                    Err(e) if e.lease_lost() => reg.forget_key(),
                    // Checked again at the retry.
                    Err(e) => return Err(e.into()),
                }
                check_key = false;
            }
            if want && reg.registered().is_none() && !reg.standby() {
                if need_resolve {
                    // Ports change when the container or the engine restarts: look again.
                    let (a, f) = source.resolve().await?;
                    if a != addr {
                        tracing::info!(old = %addr, new = %a, "published address changed");
                    }
                    (addr, found) = (a, f);
                    need_resolve = false;
                }
                let key = prefix.endpoint_key(addr);
                if reg.register(&key, &value(&args, found.as_ref())?).await? {
                    tracing::info!(
                        key,
                        lease = format!("{:x}", reg.lease().unwrap_or_default()),
                        "registered"
                    );
                }
            } else if !want && reg.registered().is_some() {
                reg.deregister().await?;
                tracing::info!(key = %prefix.endpoint_key(addr), "deregistered");
            }
            Ok::<(), anyhow::Error>(())
        };
        let outcome = tokio::select! {
            outcome = reconcile => outcome,
            stop = &mut shutdown => break End::Signal(stop?),
        };
        metrics
            .registered
            .set(i64::from(reg.registered().is_some()));
        if reg.lease().is_some() && reg.lease() != last_lease {
            metrics.lease_grants.inc();
        }
        last_lease = reg.lease().or(last_lease);
        match outcome {
            Ok(()) => {
                etcd_answered |= reg.lease().is_some();
                retry.reset();
            }
            Err(e) if certificate_rejected_at_start(&e, etcd_answered) => {
                break End::Fatal(certificate_error(e, &args));
            }
            Err(e) => {
                metrics.etcd_retries.inc();
                let delay = retry.next_delay();
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?delay, "etcd update failed; will retry");
                retry_at = Some(Instant::now() + delay);
            }
        }
    };

    // Leaving: the key goes first, so HAProxy stops routing here before the app stops. The
    // drain counts from the signal: an unreachable etcd (the revoke gives up after
    // STOP_DEADLINE) does not make the stop any longer.
    let drained_at = Instant::now() + args.drain;
    if let Err(e) = reg.revoke(STOP_DEADLINE).await {
        tracing::warn!(error = %format!("{e:#}"), "could not revoke the lease; the key expires with its TTL");
    }
    match (end, app) {
        (End::AppExited(status), _) => {
            tracing::info!(status, "app exited");
            Ok(status)
        }
        (End::Signal(sig), Some(mut a)) => {
            tracing::info!(drain = ?args.drain, "deregistered; draining before stopping the app");
            tokio::time::sleep_until(drained_at).await;
            a.signal(sig.signal());
            let status = a.wait().await;
            tracing::info!(status, "app exited");
            Ok(status)
        }
        (End::Signal(_), None) => Ok(0),
        (End::Fatal(e), app) => {
            if let Some(mut a) = app {
                // Never registered: nothing to drain.
                a.signal(Signal::TERM);
                let status = a.wait().await;
                tracing::info!(status, "app stopped");
            }
            Err(Fatal::Runtime(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SidekickArgs {
        SidekickArgs::try_parse_from(["dockreg", "--port", "8000"].iter().chain(extra)).unwrap()
    }

    #[test]
    fn value_is_json_metadata_or_legacy() {
        let d = Discovered {
            addr: "10.0.0.1:32768".parse().unwrap(),
            container_id: "0123456789abcdef0123".into(),
            hostname: "web-1".into(),
        };
        let v: serde_json::Value =
            serde_json::from_str(&value(&args(&["--weight", "50"]), Some(&d)).unwrap()).unwrap();
        assert_eq!(v["container"], "0123456789ab");
        assert_eq!(v["hostname"], "web-1");
        assert_eq!(v["weight"], 50);
        assert_eq!(
            value(&args(&["--legacy-value"]), Some(&d)).unwrap(),
            "running"
        );
        // What the sidekick writes, the watcher accepts.
        assert!(crate::core::endpoint::parse_value(
            value(&args(&[]), Some(&d)).unwrap().as_bytes()
        )
        .is_ok());
    }

    #[test]
    fn tags_go_into_the_value_and_a_tag_the_watcher_would_refuse_is_a_usage_error() {
        let v = value(&args(&["--tag", "canary", "--tag", "zone=a,v2"]), None).unwrap();
        assert_eq!(v, r#"{"tags":["canary","zone=a","v2"]}"#);
        let meta = crate::core::endpoint::parse_value(v.as_bytes()).unwrap();
        assert_eq!(meta.tags, ["canary", "zone=a", "v2"]);
        let e = SidekickArgs::try_parse_from(["dockreg", "--port", "8000", "--tag", "a b"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tag") && e.contains("may hold only"), "{e}");
        let many: Vec<String> = (0..=crate::core::endpoint::MAX_TAGS)
            .map(|i| format!("t{i}"))
            .collect();
        let e = check_tags(&args(&["--tag", &many.join(",")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--tag") && e.contains("32"), "{e}");
    }

    #[test]
    fn value_bytes_are_the_ones_written_before_the_shared_type() {
        // The hand-built serde_json map wrote sorted keys and left out what was unknown.
        let d = Discovered {
            addr: "10.0.0.1:32768".parse().unwrap(),
            container_id: "0123456789abcdef0123".into(),
            hostname: "web-1".into(),
        };
        assert_eq!(
            value(&args(&["--weight", "50"]), Some(&d)).unwrap(),
            r#"{"container":"0123456789ab","hostname":"web-1","weight":50}"#
        );
        let unnamed = Discovered {
            hostname: String::new(),
            ..d
        };
        assert_eq!(
            value(&args(&[]), Some(&unnamed)).unwrap(),
            r#"{"container":"0123456789ab"}"#
        );
        assert_eq!(
            value(&args(&["--weight", "0"]), None).unwrap(),
            r#"{"weight":0}"#
        );
        assert_eq!(value(&args(&[]), None).unwrap(), "{}");
    }

    #[test]
    fn host_port_mode_needs_no_docker() {
        let a = args(&["--host-port", "9000", "--ip", "10.0.0.7"]);
        match source_of(&a).unwrap() {
            Source::Fixed(addr) => assert_eq!(addr, "10.0.0.7:9000".parse().unwrap()),
            Source::Docker { .. } => panic!("docker used with --host-port"),
        }
    }

    #[tokio::test]
    async fn a_rejected_certificate_is_fatal_only_before_etcd_answered() {
        let rejected: anyhow::Error =
            super::super::call::within("granting a lease", Duration::from_secs(1), async {
                Err::<(), _>(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                    "invalid peer certificate: UnknownIssuer",
                )))
            })
            .await
            .unwrap_err()
            .into();
        assert!(certificate_rejected_at_start(&rejected, false));
        assert!(!certificate_rejected_at_start(&rejected, true));
        let refused: anyhow::Error =
            super::super::call::within("granting a lease", Duration::from_secs(1), async {
                Err::<(), _>(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
                    "tcp connect error: Connection refused",
                )))
            })
            .await
            .unwrap_err()
            .into();
        assert!(!certificate_rejected_at_start(&refused, false));
        let a = args(&[
            "--etcd",
            "https://10.0.0.2:2379",
            "--etcd-ca",
            "/certs/ca.pem",
        ]);
        let msg = format!("{:#}", certificate_error(rejected, &a));
        assert!(
            msg.contains("--etcd https://10.0.0.2:2379")
                && msg.contains("--etcd-ca /certs/ca.pem")
                && msg.contains("UnknownIssuer"),
            "{msg}"
        );
    }

    #[test]
    fn bad_check_status_names_the_flag() {
        let a = args(&["--check", "http", "--check-status", "abc"]);
        let err = check_of(&a).unwrap_err().to_string();
        assert!(err.contains("--check-status"), "{err}");
    }
}

//! The `dockreg agent` command line: one agent per host registers every opted-in container
//! from Docker events. Flags shared with the sidekick keep its names (`--etcd`, `--docker`,
//! `--ip`, `--interval`, `--timeout`, `--rise`, `--fall`, `--ttl`).

use crate::core::etcd::EtcdArgs;
use crate::core::process::LogFormat;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// dockreg agent: register every opted-in container of this host (labels `dockreg.service=…`
/// or registrator's `SERVICE_NAME`) while it runs and is healthy, from the Docker engine's
/// events; the app containers need neither the dockreg binary nor the Docker socket.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dockreg agent",
    version,
    long_about = None,
    after_help = "Labels (or registrator's SERVICE_* as labels or environment): \
                  dockreg.service=NAME, dockreg.port=PORT, dockreg.port.PORT.service=NAME, \
                  dockreg.ignore=true, dockreg.check=tcp|http:/path|docker|none, \
                  dockreg.check.interval/timeout/rise/fall/status, dockreg.tags=a,b, \
                  dockreg.weight=N. Keys: <root>/<service>/<ip>:<port>, watched by \
                  dockreg-haproxy --root <root>."
)]
pub struct AgentArgs {
    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,

    /// Key root: each endpoint is registered as `<root>/<service>/<ip>:<port>`.
    #[arg(long, env = "DOCKREG_ROOT", default_value = "/services")]
    pub(crate) root: String,

    /// Docker Engine API: a socket path, unix:///path, or tcp://host:port (a read-only socket
    /// proxy).
    #[arg(long, env = "DOCKER_HOST", default_value = "/var/run/docker.sock")]
    pub(crate) docker: String,

    /// This host's address, registered for every container (the proxy connects to it).
    #[arg(long, env = "IP")]
    pub(crate) ip: IpAddr,

    /// Identifies this agent's keys (written into their values) so that it adopts them after a
    /// restart; default: --ip.
    #[arg(long, env = "DOCKREG_AGENT_ID")]
    pub(crate) agent_id: Option<String>,

    /// Only containers with this label (`KEY` or `KEY=VALUE`; repeat: all must match), e.g.
    /// to run one agent per team or environment on a shared engine.
    #[arg(
        long = "label-filter",
        env = "DOCKREG_LABEL_FILTER",
        value_delimiter = ','
    )]
    pub(crate) label_filter: Vec<String>,

    /// Default health check interval (label dockreg.check.interval).
    #[arg(long, env = "DOCKREG_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,

    /// Default health check timeout (label dockreg.check.timeout).
    #[arg(long, env = "DOCKREG_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,

    /// Default consecutive successes that put a key back after a failure.
    #[arg(long, env = "DOCKREG_RISE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) rise: u32,

    /// Default consecutive failures that remove a key.
    #[arg(long, env = "DOCKREG_FALL", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub(crate) fall: u32,

    /// Lease TTL: how long the keys outlive an agent that stopped or died (a restarted agent
    /// adopts them within it, without a gap).
    #[arg(long, env = "DOCKREG_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,

    /// How often every container is inspected and the lease's keys compared with them, besides
    /// the events (which the agent follows at once).
    #[arg(long, env = "DOCKREG_RESYNC", default_value = "60s", value_parser = humantime::parse_duration)]
    pub(crate) resync: Duration,

    /// Serve Prometheus metrics (/metrics) and health (/healthz, /readyz: the engine answers,
    /// every container inspected, etcd in step) on this address, e.g. 127.0.0.1:9478.
    #[arg(long, env = "DOCKREG_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// Config file (TOML): any flag by its long name; the environment and flags override it.
    #[arg(long, env = "DOCKREG_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Log format.
    #[arg(long, env = "DOCKREG_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter (`debug`, `warn`, `dockreg=debug,info`); overrides RUST_LOG.
    #[arg(long, env = "DOCKREG_LOG_LEVEL", value_parser = crate::core::process::parse_log_level)]
    pub log_level: Option<String>,
}

impl AgentArgs {
    /// The command line as `dockreg agent` parses it (`--etcd` required, as for the sidekick).
    pub fn command_line() -> clap::Command {
        use clap::CommandFactory;
        Self::command().mut_arg("endpoints", |a| {
            a.hide_default_value(true)
                .help("etcd endpoints, comma-separated (several members of one cluster); required")
        })
    }
}

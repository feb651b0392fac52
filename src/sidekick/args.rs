//! The `dockreg` (sidekick) command line. The original 2014 tool's flags keep their names
//! (`--etcd`, `--key`, `--port`, `--docker`, `--ip`) so its users can switch without relearning.

use crate::core::etcd::EtcdArgs;
use crate::core::keys::{ServicePrefix, DEFAULT_PREFIX};
use crate::core::process::LogFormat;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Health check kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CheckKind {
    /// The app's port accepts a TCP connection.
    Tcp,
    /// An HTTP GET of --check-path answers with an accepted status.
    Http,
}

/// dockreg: the registration sidekick — register this container's published port in etcd
/// while the app is healthy, and take it away at once when it is not.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "dockreg",
    version,
    long_about = None,
    after_help = "Health check: `dockreg healthcheck` asks a running sidekick's /readyz (on its \
                  --metrics-addr or DOCKREG_METRICS_ADDR) and exits 0 when the app is healthy and \
                  registered, 1 when not: a Docker HEALTHCHECK for an image with nothing but the \
                  binaries. `dockreg agent --help`: one agent per host instead of a sidekick per \
                  container."
)]
pub struct SidekickArgs {
    #[command(flatten)]
    pub(crate) etcd: EtcdArgs,

    /// Service name (key prefix): the endpoint is registered as `/<key>/<ip>:<port>`.
    #[arg(long, env = "DOCKREG_KEY", default_value = DEFAULT_PREFIX)]
    pub(crate) key: String,

    /// Container port the app listens on (its published host port is registered).
    #[arg(long, env = "DOCKREG_PORT")]
    pub(crate) port: u16,

    /// Docker Engine API socket.
    #[arg(long, env = "DOCKREG_DOCKER", default_value = "/var/run/docker.sock")]
    pub(crate) docker: PathBuf,

    /// Host IP to register; otherwise the port binding's HostIp (0.0.0.0 or :: need --ip).
    #[arg(long, env = "IP")]
    pub(crate) ip: Option<IpAddr>,

    /// Register this host port directly instead of asking Docker (hosts without Docker, or
    /// host networking); needs --ip.
    #[arg(long, env = "DOCKREG_HOST_PORT", requires = "ip")]
    pub(crate) host_port: Option<u16>,

    /// Own container id (otherwise found through /proc/self/mountinfo, /proc/self/cgroup, then
    /// the hostname).
    #[arg(long, env = "DOCKREG_CONTAINER")]
    pub(crate) container: Option<String>,

    /// Health check interval.
    #[arg(long, env = "DOCKREG_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub(crate) interval: Duration,

    /// Health check timeout.
    #[arg(long, env = "DOCKREG_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub(crate) timeout: Duration,

    /// Health check kind.
    #[arg(long, env = "DOCKREG_CHECK", value_enum, default_value = "tcp")]
    pub(crate) check: CheckKind,

    /// Path for --check http.
    #[arg(long, env = "DOCKREG_CHECK_PATH", default_value = "/")]
    pub(crate) check_path: String,

    /// Accepted HTTP statuses for --check http: codes and ranges, comma-separated.
    #[arg(long, env = "DOCKREG_CHECK_STATUS", default_value = "200-399")]
    pub(crate) check_status: String,

    /// Consecutive successes that put the key back after a failure.
    #[arg(long, env = "DOCKREG_RISE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rise: u32,

    /// Consecutive failures that remove the key.
    #[arg(long, env = "DOCKREG_FALL", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) fall: u32,

    /// Lease TTL: how long the key outlives a sidekick that died without cleaning up.
    #[arg(long, env = "DOCKREG_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub(crate) ttl: Duration,

    /// Tag written into the value (repeat, or comma-separated): ASCII letters, digits and
    /// `. _ - : = / +`, e.g. `canary`, `zone=a`. Templates see them as `e.tags`.
    #[arg(long = "tag", env = "DOCKREG_TAGS", value_delimiter = ',', value_parser = parse_tag)]
    pub(crate) tags: Vec<String>,

    /// Weight written into the value (0-256).
    #[arg(long, env = "DOCKREG_WEIGHT", value_parser = clap::value_parser!(u16).range(0..=256))]
    pub(crate) weight: Option<u16>,

    /// Write the legacy value `running` instead of JSON metadata.
    #[arg(long, env = "DOCKREG_LEGACY_VALUE")]
    pub(crate) legacy_value: bool,

    /// Wrapper mode: on SIGTERM, deregister, wait this long for HAProxy to stop sending new
    /// requests, then pass the signal to the app.
    #[arg(long, env = "DOCKREG_DRAIN", default_value = "2s", value_parser = humantime::parse_duration)]
    pub(crate) drain: Duration,

    /// Config file (TOML): any flag by its long name (`etcd = "http://10.0.0.2:2379"`,
    /// `prefix = ["/web", "/api"]`); the environment and flags override it.
    #[arg(long, env = "DOCKREG_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (each setting, its value and where it came from;
    /// secrets masked) and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Log format.
    #[arg(long, env = "DOCKREG_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Log level or filter (`debug`, `warn`, `dockreg=debug,info`); overrides RUST_LOG.
    #[arg(long, env = "DOCKREG_LOG_LEVEL", value_parser = crate::core::process::parse_log_level)]
    pub log_level: Option<String>,

    /// Serve Prometheus metrics (/metrics) and health (/healthz, /readyz: the app healthy and
    /// registered) on this address, e.g. 127.0.0.1:9477; `dockreg healthcheck` asks it.
    #[arg(long, env = "DOCKREG_METRICS_ADDR")]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,

    /// Wrapper mode: the app command to start as a child (after `--`).
    #[arg(last = true)]
    pub(crate) command: Vec<String>,
}

/// A `--tag` the watcher will take, or why not.
fn parse_tag(value: &str) -> Result<String, String> {
    crate::core::endpoint::check_tag(value).map_err(|e| e.to_string())
}

impl SidekickArgs {
    /// The command line as `dockreg` parses it: `--etcd` has no default to show (a sidekick
    /// must be told where etcd is; `run` refuses the watcher's local default).
    pub fn command_line() -> clap::Command {
        use clap::CommandFactory;
        Self::command().mut_arg("endpoints", |a| {
            a.hide_default_value(true)
                .help("etcd endpoints, comma-separated (several members of one cluster); required")
        })
    }

    /// The service prefix named by `--key`.
    pub(crate) fn prefix(&self) -> Result<ServicePrefix, crate::core::keys::PrefixError> {
        ServicePrefix::parse(&self.key)
    }
}

/// `dockreg healthcheck`: ask a running sidekick whether it is ready.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dockreg healthcheck", version, long_about = None)]
pub struct HealthcheckArgs {
    /// The sidekick's --metrics-addr.
    #[arg(long, env = "DOCKREG_METRICS_ADDR")]
    pub metrics_addr: std::net::SocketAddr,

    /// How long to wait for the answer.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

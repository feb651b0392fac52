//! `dockreg`, the registration sidekick: its command line. Registration itself (Docker port
//! discovery, health checks, the lease) is not built yet; the flags keep the original 2014
//! tool's names so its users can switch without relearning.

use crate::etcd::EtcdArgs;
use crate::keys::{ServicePrefix, DEFAULT_PREFIX};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Register this container's published port in etcd while the app is healthy.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dockreg", version, about, long_about = None)]
pub struct SidekickArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Service name (the key prefix): the endpoint is registered as /<key>/<ip>:<port>.
    #[arg(long, env = "DOCKREG_KEY", default_value = DEFAULT_PREFIX)]
    pub key: String,

    /// Container port the app listens on.
    #[arg(long, env = "DOCKREG_PORT")]
    pub port: u16,

    /// Docker Engine API socket.
    #[arg(long, env = "DOCKREG_DOCKER", default_value = "/var/run/docker.sock")]
    pub docker: PathBuf,

    /// Host IP to register (otherwise the port binding's HostIp).
    #[arg(long, env = "IP")]
    pub ip: Option<IpAddr>,

    /// Health check interval.
    #[arg(long, env = "DOCKREG_INTERVAL", default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,

    /// Health check timeout.
    #[arg(long, env = "DOCKREG_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,

    /// Lease TTL.
    #[arg(long, env = "DOCKREG_TTL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
}

impl SidekickArgs {
    /// The service prefix named by `--key`.
    pub fn prefix(&self) -> Result<ServicePrefix, crate::keys::PrefixError> {
        ServicePrefix::parse(&self.key)
    }
}

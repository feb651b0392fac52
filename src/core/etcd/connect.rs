//! The etcd connection flags and how they become a client.
//!
//! `--etcd` takes the original comma-separated form (`http://h1:2379,http://h2:2379`); a
//! client over several endpoints balances across them and fails over when one goes away.

use anyhow::{bail, Context as _, Result};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use std::path::PathBuf;
use std::time::Duration;

/// Connection flags for etcd, flattened into both programs' command lines.
#[derive(Debug, Clone, clap::Args)]
pub struct EtcdArgs {
    /// etcd endpoints, comma-separated (several members of one cluster).
    #[arg(
        long = "etcd",
        env = "DOCKREG_ETCD",
        value_delimiter = ',',
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// CA certificate (PEM) to verify etcd's server certificate (https:// endpoints).
    #[arg(long, env = "DOCKREG_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with etcd.
    #[arg(long, env = "DOCKREG_ETCD_CERT", requires = "etcd_key")]
    pub etcd_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS with etcd.
    #[arg(long, env = "DOCKREG_ETCD_KEY", requires = "etcd_cert")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name (password auth).
    #[arg(long, env = "DOCKREG_ETCD_USER", requires = "etcd_password")]
    pub etcd_user: Option<String>,
    /// etcd password; prefer the environment variable over the flag.
    #[arg(
        long,
        env = "DOCKREG_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_user"
    )]
    pub etcd_password: Option<String>,
    /// Timeout for connecting to etcd (listing gets four times as long).
    #[arg(long, env = "DOCKREG_ETCD_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub etcd_timeout: Duration,
}

impl EtcdArgs {
    /// Checks the flags without touching the network: endpoint URLs and readable TLS files.
    pub fn validate(&self) -> Result<()> {
        if self.endpoints.iter().all(|e| e.trim().is_empty()) {
            bail!("--etcd: no endpoint given");
        }
        for e in &self.endpoints {
            let e = e.trim();
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                bail!("--etcd endpoint {e:?}: must start with http:// or https://");
            }
        }
        let tls = self
            .endpoints
            .iter()
            .any(|e| e.trim().starts_with("https://"));
        if !tls && (self.etcd_ca.is_some() || self.etcd_cert.is_some()) {
            bail!("--etcd-ca/--etcd-cert given, but no --etcd endpoint is https://");
        }
        // Unreadable certificate files are a flag error, not "etcd unreachable".
        self.tls_options()?;
        Ok(())
    }

    fn tls_options(&self) -> Result<Option<TlsOptions>> {
        if !self
            .endpoints
            .iter()
            .any(|e| e.trim().starts_with("https://"))
        {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.etcd_ca {
            let pem = std::fs::read(ca).with_context(|| format!("--etcd-ca {}", ca.display()))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
            let c =
                std::fs::read(cert).with_context(|| format!("--etcd-cert {}", cert.display()))?;
            let k = std::fs::read(key).with_context(|| format!("--etcd-key {}", key.display()))?;
            tls = tls.identity(Identity::from_pem(c, k));
        }
        Ok(Some(tls))
    }

    /// Connect options: timeouts, HTTP/2 keep-alive (so a dead member is noticed in seconds,
    /// not at the next TCP timeout), TLS and user auth.
    pub fn connect_options(&self) -> Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(self.etcd_timeout)
            .with_keep_alive(Duration::from_secs(5), self.etcd_timeout)
            .with_keep_alive_while_idle(true)
            // A member cut off from the quorum cancels the watch instead of going silent.
            .with_require_leader(true);
        if let Some(tls) = self.tls_options()? {
            opts = opts.with_tls(tls);
        }
        if let (Some(user), Some(password)) = (&self.etcd_user, &self.etcd_password) {
            opts = opts.with_user(user.clone(), password.clone());
        }
        Ok(opts)
    }

    /// Connects a client balanced over all endpoints.
    pub async fn connect(&self) -> Result<Client> {
        let endpoints: Vec<&str> = self.endpoints.iter().map(|e| e.trim()).collect();
        let opts = self.connect_options()?;
        Client::connect(&endpoints, Some(opts))
            .await
            .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))
    }
}

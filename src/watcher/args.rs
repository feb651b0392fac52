//! The `dockreg-haproxy` command line.

use crate::core::etcd::EtcdArgs;
use crate::core::keys::{ServicePrefix, DEFAULT_PREFIX};
use crate::core::process::LogFormat;
use crate::watcher::pipeline::Timing;
use crate::watcher::render::TemplateSpec;
use crate::watcher::source::Watched;
use anyhow::{bail, Result};
use clap::builder::ArgPredicate;
use std::path::PathBuf;
use std::time::Duration;

/// Where the rendered backends go without `--output`: under HAProxy's own folder, so it
/// survives a reboot.
pub const DEFAULT_OUTPUT: &str = "/etc/haproxy/dockreg/backends.cfg";

/// dockreg-haproxy: watch etcd for service endpoints and keep HAProxy's backends in step with
/// them (runtime API for server changes, a validated reload for the rest).
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "dockreg-haproxy", version, long_about = None)]
pub struct WatcherArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,

    /// Service prefix in etcd; repeat for several services. Each is one service named after its
    /// last segment (`/service` → backend `service`). Defaults to /service unless --root is
    /// given.
    #[arg(
        long = "prefix",
        env = "DOCKREG_PREFIX",
        value_delimiter = ',',
        default_value = DEFAULT_PREFIX,
        default_value_if("roots", ArgPredicate::IsPresent, None)
    )]
    pub prefixes: Vec<String>,

    /// Root of a dynamic catalog in etcd; repeat for several. Every child `<root>/<name>/` that
    /// holds a valid endpoint key `<root>/<name>/<ip>:<port>` is a service named `<name>`
    /// (letters, digits, '-', '_', '.'; at most 64), watched with one watch per root.
    #[arg(long = "root", env = "DOCKREG_ROOT", value_delimiter = ',')]
    pub roots: Vec<String>,

    /// How long a --root service whose last endpoint went away is kept (an empty backend)
    /// before it is removed; an endpoint back within it removes nothing.
    #[arg(long, env = "DOCKREG_SERVICE_GRACE", default_value = "5m", value_parser = humantime::parse_duration)]
    pub service_grace: Duration,

    /// Tera template to render; repeat, each paired in order with an --output. Without it the
    /// built-in default template (templates/haproxy-backends.cfg.tera) is used.
    #[arg(long = "template", env = "DOCKREG_TEMPLATE", value_delimiter = ',')]
    pub templates: Vec<PathBuf>,

    /// File each template renders to (HAProxy loads it with -f after the base config). Its
    /// folder is created if missing. The default survives a reboot, so HAProxy, which starts
    /// before the watcher, finds the last configuration.
    #[arg(
        long = "output",
        env = "DOCKREG_OUTPUT",
        value_delimiter = ',',
        default_value = DEFAULT_OUTPUT
    )]
    pub outputs: Vec<PathBuf>,

    /// Base HAProxy configuration: candidates are validated together with it
    /// (`haproxy -c -f <base> -f <candidate>`).
    #[arg(long, env = "DOCKREG_HAPROXY_CONFIG")]
    pub haproxy_config: Option<PathBuf>,

    /// HAProxy binary used for validation.
    #[arg(long, env = "DOCKREG_HAPROXY_BIN", default_value = "haproxy")]
    pub haproxy_bin: PathBuf,

    /// Skip validation with `haproxy -c` (render only).
    #[arg(long, env = "DOCKREG_NO_VALIDATE")]
    pub no_validate: bool,

    /// HAProxy master CLI socket (HAProxy started with `-W -S <path>`): reload through it and
    /// confirm through `show proc`.
    #[arg(long, env = "DOCKREG_MASTER_SOCKET", conflicts_with = "reload_cmd")]
    pub master_socket: Option<PathBuf>,

    /// Command that reloads HAProxy, run with `sh -c`; exit status 0 means success.
    #[arg(long, env = "DOCKREG_RELOAD_CMD")]
    pub reload_cmd: Option<String>,

    /// HAProxy's admin socket (`stats socket … level admin`): apply changes that only add,
    /// remove or re-weight servers of running backends through the runtime API, without a
    /// reload. Needs --master-socket or --reload-cmd, for every other change and as fallback.
    #[arg(long, env = "DOCKREG_RUNTIME_SOCKET")]
    pub runtime_socket: Option<PathBuf>,

    /// How long a server removed at runtime may finish its requests (in maintenance, taking no
    /// new one) before its remaining sessions are shut down and it is deleted.
    #[arg(long, env = "DOCKREG_DRAIN_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// Save `show servers state` here before each reload, for the base configuration's
    /// `server-state-file` / `load-server-state-from-file` (health and weights survive).
    #[arg(long, env = "DOCKREG_SERVER_STATE_FILE", requires = "runtime_socket")]
    pub server_state_file: Option<PathBuf>,

    /// How long a reload (and a validation) may take before it counts as failed.
    #[arg(long, env = "DOCKREG_RELOAD_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub reload_timeout: Duration,

    /// Re-read an edited template once its file saw no other event for this long (an editor
    /// may write it in several steps). etcd changes never wait: they apply at once.
    #[arg(long, env = "DOCKREG_TEMPLATE_SETTLE", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub template_settle: Duration,

    /// Never hold a template edit back longer than this, however often the file changes.
    #[arg(long, env = "DOCKREG_TEMPLATE_SETTLE_MAX", default_value = "1s", value_parser = humantime::parse_duration)]
    pub template_settle_max: Duration,

    /// Deprecated: the old name of --template-settle (etcd changes are no longer debounced).
    #[arg(long, env = "DOCKREG_DEBOUNCE", hide = true, value_parser = humantime::parse_duration)]
    pub debounce: Option<Duration>,

    /// Deprecated: the old name of --template-settle-max.
    #[arg(long, env = "DOCKREG_DEBOUNCE_MAX", hide = true, value_parser = humantime::parse_duration)]
    pub debounce_max: Option<Duration>,

    /// Least time between two HAProxy reloads.
    #[arg(long, env = "DOCKREG_MIN_RELOAD_INTERVAL", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub min_reload_interval: Duration,

    /// Render, validate, write and reload once, then exit (non-zero on any failure).
    #[arg(long, conflicts_with = "dry_run")]
    pub once: bool,

    /// Print the diff between the live files and what would be written, then exit; touches
    /// nothing.
    #[arg(long)]
    pub dry_run: bool,

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

    /// Serve Prometheus metrics (/metrics) and health (/healthz, /readyz) on this address,
    /// e.g. 127.0.0.1:9477 (watch mode only; off by default).
    #[arg(long, env = "DOCKREG_METRICS_ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl WatcherArgs {
    /// The service prefixes, validated.
    pub(crate) fn service_prefixes(&self) -> Result<Vec<ServicePrefix>> {
        self.prefixes
            .iter()
            .map(|p| ServicePrefix::parse(p).map_err(|e| anyhow::anyhow!("--prefix: {e}")))
            .collect()
    }

    /// The prefixes and roots to watch, validated: a root is a prefix's path (same rules) that
    /// neither equals, holds nor lies inside another root or a prefix.
    pub(crate) fn watched(&self) -> Result<Watched> {
        let roots = self
            .roots
            .iter()
            .map(|r| ServicePrefix::parse(r).map_err(|e| anyhow::anyhow!("--root: {e}")))
            .collect::<Result<Vec<_>>>()?;
        Watched::new(self.service_prefixes()?, roots)
    }

    /// Template/output pairs: each --template with the --output at the same position, or the
    /// built-in template rendering to the single --output.
    pub(crate) fn template_specs(&self) -> Result<Vec<TemplateSpec>> {
        if self.templates.is_empty() {
            let [output] = self.outputs.as_slice() else {
                bail!("--output given {} times but no --template: the built-in template renders to one --output", self.outputs.len());
            };
            return Ok(vec![TemplateSpec {
                template: None,
                output: output.clone(),
            }]);
        }
        if self.templates.len() != self.outputs.len() {
            bail!(
                "{} --template but {} --output: give one --output per --template, in the same order",
                self.templates.len(),
                self.outputs.len()
            );
        }
        let mut seen = std::collections::HashSet::new();
        let mut specs = Vec::new();
        for (t, o) in self.templates.iter().zip(&self.outputs) {
            if !seen.insert(o.clone()) {
                bail!("--output {}: given twice", o.display());
            }
            let template = std::fs::canonicalize(t)
                .map_err(|e| anyhow::anyhow!("--template {}: {e}", t.display()))?;
            specs.push(TemplateSpec {
                template: Some(template),
                output: o.clone(),
            });
        }
        Ok(specs)
    }

    /// One warning per deprecated flag in use, naming the flag that replaces it.
    pub(crate) fn deprecations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let said = "etcd changes now apply at once, without debounce";
        if self.debounce.is_some() {
            out.push(format!("--debounce is deprecated ({said}): it sets --template-settle, which only delays re-reading an edited template"));
        }
        if self.debounce_max.is_some() {
            out.push(format!(
                "--debounce-max is deprecated ({said}): it sets --template-settle-max"
            ));
        }
        out
    }

    /// The pipeline's timing.
    pub(crate) fn timing(&self) -> Timing {
        Timing {
            template_settle: self.debounce.unwrap_or(self.template_settle),
            template_settle_max: self.debounce_max.unwrap_or(self.template_settle_max),
            min_reload_interval: self.min_reload_interval,
            ..Timing::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> WatcherArgs {
        WatcherArgs::try_parse_from(std::iter::once("dockreg-haproxy").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn defaults() {
        let a = parse(&[]);
        assert_eq!(a.etcd.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(a.service_prefixes().unwrap()[0].name(), "service");
        assert_eq!(a.template_specs().unwrap()[0].template, None);
    }

    #[test]
    fn comma_separated_etcd_and_repeated_prefixes() {
        let a = parse(&[
            "--etcd",
            "http://h1:2379,http://h2:2379",
            "--prefix",
            "/a/web",
            "--prefix",
            "api",
        ]);
        assert_eq!(a.etcd.endpoints.len(), 2);
        let names: Vec<_> = a
            .service_prefixes()
            .unwrap()
            .iter()
            .map(|p| p.name().to_string())
            .collect();
        assert_eq!(names, ["web", "api"]);
    }

    #[test]
    fn mismatched_pairs_name_the_flags() {
        let a = parse(&["--template", "Cargo.toml", "--output", "a", "--output", "b"]);
        let err = a.template_specs().unwrap_err().to_string();
        assert!(
            err.contains("--template") && err.contains("--output"),
            "{err}"
        );
        let a = parse(&["--template", "/nonexistent.tera", "--output", "a"]);
        assert!(a
            .template_specs()
            .unwrap_err()
            .to_string()
            .contains("/nonexistent.tera"));
    }

    #[test]
    fn server_state_file_needs_the_runtime_socket() {
        let r = WatcherArgs::try_parse_from(["x", "--server-state-file", "/s"]);
        assert!(r.unwrap_err().to_string().contains("--runtime-socket"));
        let a = parse(&["--runtime-socket", "/a", "--server-state-file", "/s"]);
        assert_eq!(a.drain_timeout, Duration::from_secs(30));
    }

    fn names(w: &Watched) -> (Vec<&str>, Vec<&str>) {
        (
            w.prefixes.iter().map(|p| p.as_str()).collect(),
            w.roots.iter().map(|p| p.as_str()).collect(),
        )
    }

    #[test]
    fn roots_replace_the_default_prefix_and_combine_with_prefixes() {
        let a = parse(&[]);
        assert_eq!(names(&a.watched().unwrap()), (vec!["/service"], vec![]));
        assert_eq!(a.service_grace, Duration::from_secs(300));
        let a = parse(&[
            "--root",
            "/services,/more",
            "--root",
            "x",
            "--service-grace",
            "2s",
        ]);
        assert_eq!(
            names(&a.watched().unwrap()),
            (vec![], vec!["/services", "/more", "/x"])
        );
        assert_eq!(a.service_grace, Duration::from_secs(2));
        let a = parse(&["--root", "/services", "--prefix", "/web"]);
        assert_eq!(
            names(&a.watched().unwrap()),
            (vec!["/web"], vec!["/services"])
        );
    }

    #[test]
    fn bad_roots_name_the_flag() {
        for (args, want) in [
            (
                &["--root", "/my services"][..],
                "--root: service prefix \"/my services\"",
            ),
            (&["--root", "/"], "--root: service prefix \"/\": is empty"),
            (
                &["--root", "/services", "--prefix", "/services"],
                "--root /services: is also a --prefix",
            ),
            (
                &["--root", "/services", "--prefix", "/services/web"],
                "--root /services: overlaps --prefix /services/web",
            ),
            (
                &["--root", "/a/b", "--prefix", "/a"],
                "--root /a/b: overlaps --prefix /a",
            ),
            (
                &["--root", "/a", "--root", "/a/b"],
                "--root /a/b: overlaps --root /a",
            ),
            (&["--root", "/a,/a"], "--root /a: given twice"),
        ] {
            let err = parse(args).watched().unwrap_err().to_string();
            assert!(err.starts_with(want), "{args:?}: {err}");
        }
        let r = WatcherArgs::try_parse_from(["x", "--service-grace", "soon"]);
        assert!(r.unwrap_err().to_string().contains("--service-grace"));
    }

    #[test]
    fn roots_and_grace_from_the_config_file_and_print_config() {
        use clap::CommandFactory;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "root = [\"/services\", \"/more\"]\nservice-grace = \"30s\"\n",
        )
        .unwrap();
        let argv: Vec<std::ffi::OsString> = ["x", "--config", file.to_str().unwrap()]
            .iter()
            .map(Into::into)
            .collect();
        let cmd = WatcherArgs::command();
        let parsed = crate::core::config::get_matches(cmd.clone(), argv)
            .ok()
            .unwrap();
        let a = <WatcherArgs as clap::FromArgMatches>::from_arg_matches(&parsed.matches).unwrap();
        assert_eq!(
            names(&a.watched().unwrap()),
            (vec![], vec!["/services", "/more"])
        );
        assert_eq!(a.service_grace, Duration::from_secs(30));
        let text = crate::core::config::print_config(&cmd, &parsed);
        assert!(
            text.contains("root = [\"/services\", \"/more\"]  # file"),
            "{text}"
        );
        assert!(text.contains("service-grace = \"30s\"  # file"), "{text}");
        assert!(
            !text.contains("prefix ="),
            "no default prefix beside a root: {text}"
        );
        let argv: Vec<std::ffi::OsString> = ["x"].iter().map(Into::into).collect();
        let parsed = crate::core::config::get_matches(cmd.clone(), argv)
            .ok()
            .unwrap();
        let text = crate::core::config::print_config(&cmd, &parsed);
        assert!(text.contains("prefix = \"/service\"  # default"), "{text}");
        assert!(text.contains("service-grace = \"5m\"  # default"), "{text}");
    }

    #[test]
    fn master_socket_and_reload_cmd_conflict() {
        let r = WatcherArgs::try_parse_from(["x", "--master-socket", "/s", "--reload-cmd", "true"]);
        assert!(r.is_err());
    }
}

//! `dockreg-haproxy`: the watcher that keeps HAProxy's backends in step with etcd.
//!
//! - `args`: the command line, [`WatcherArgs`];
//! - `build`: from the flags to a pipeline (every bad flag a usage error naming it);
//! - `run`: watch mode — the etcd source, the template watch and the pipeline as supervised
//!   workers, and the process's entry point [`run()`];
//! - `oneshot`: `--once` and `--dry-run`;
//! - `signals`: SIGHUP (templates and config file re-read) and systemd's watchdog;
//! - `supervise`: named workers under one cancellation token;
//! - `source`: list + watch of every service prefix in etcd;
//! - `catalog`: the endpoints per service, and the template context;
//! - `render`: Tera templates into configuration text;
//! - `templates`: the template files watched on disk;
//! - `metrics`: what `--metrics-addr` serves (Prometheus metrics, health, readiness);
//! - `pipeline`: when to apply, render, stage, route, commit (validate, write), reload.

mod args;
mod build;
pub(crate) mod catalog;
pub(crate) mod metrics;
mod oneshot;
pub(crate) mod pipeline;
pub(crate) mod render;
mod run;
mod signals;
pub(crate) mod source;
mod supervise;
mod templates;

pub use args::WatcherArgs;
pub use run::run;

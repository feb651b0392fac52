//! `dockreg`, the registration sidekick: find the app's published host port through the Docker
//! Engine API, health-check the app, and keep `/<service>/<host-ip>:<host-port>` in etcd under
//! a lease exactly while the app can serve.
//!
//! - `args`: the command line ([`SidekickArgs`]);
//! - `run`: the main loop, [`run`](fn@run)`(args, shutdown)`;
//! - `signals`: what stops it ([`stop_signal`]) and what is forwarded to the app;
//! - `check`: the health checks (TCP, HTTP) and their rise/fall hysteresis;
//! - `register`, `lease`, `tasks`, `call`: the key under a lease, the lease (shared with the
//!   agent), the keepalive and key watch,
//!   each etcd call bounded by a deadline;
//! - `docker`: the own container id, the Engine API client, binding selection;
//! - `wrapper`: the app as a child process (wrapper mode);
//! - `metrics`: what `--metrics-addr` serves, and the `dockreg healthcheck` client.
//!
//! Only what the binary needs is public; no `unsafe` (the wrapper's `waitpid` and `kill` go
//! through `rustix`).

#![forbid(unsafe_code)]

mod args;
pub(crate) mod call;
pub(crate) mod check;
pub(crate) mod docker;
pub(crate) mod lease;
mod metrics;
mod register;
mod run;
mod signals;
pub(crate) mod tasks;
mod wrapper;

pub use args::{HealthcheckArgs, SidekickArgs};
pub use metrics::healthcheck;
pub use run::run;
pub use signals::{stop_signal, StopSignal};

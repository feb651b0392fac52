//! `dockreg agent`: one registration agent per host. It follows the Docker engine's events,
//! registers every running container that opts in by label (or registrator's `SERVICE_*`
//! variables) under `<root>/<service>/<host ip>:<host port>` while its health check passes,
//! and takes the key away at once when the check fails or the container stops. The app
//! containers need neither the dockreg binary nor the Docker socket.
//!
//! - `args`: the command line ([`AgentArgs`]);
//! - `labels`: what a container asks for (pure: facts in, wanted registrations out);
//! - `engine`: the Docker Engine API (socket or a read-only TCP socket proxy);
//! - `follow`: the Docker event stream and the etcd watch for deleted keys;
//! - `registrar`: one lease per agent, fenced puts and deletes, adoption after a restart;
//! - `run`: the main loop that reconciles them;
//! - `metrics`: what `--metrics-addr` serves.
//!
//! It shares the sidekick's health checks, binding rule and etcd call discipline.

#![forbid(unsafe_code)]

mod args;
mod engine;
mod follow;
mod labels;
mod metrics;
mod registrar;
mod run;

pub use args::AgentArgs;
pub use run::run;

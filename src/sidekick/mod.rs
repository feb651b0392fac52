//! `dockreg`, the registration sidekick: find the app's published host port through the Docker
//! Engine API, health-check the app, and keep `/<service>/<host-ip>:<host-port>` in etcd under
//! a lease exactly while the app can serve.

pub mod args;
pub mod call;
pub mod check;
pub mod docker;
pub mod register;
pub mod run;
pub mod tasks;
pub mod wrapper;

pub use args::{CheckKind, SidekickArgs};
pub use run::run;

//! dockreg: service discovery for Docker containers behind HAProxy, with etcd v3 between them.
//!
//! The library holds the domain; the two binaries are thin. See `ARCHITECTURE.md` for the path
//! of one change through it.
//! - [`core`]: what both programs share — the key layout, the endpoint value, the etcd
//!   connection, backoff, atomic files, logging and shutdown;
//! - [`watcher`]: `dockreg-haproxy` — etcd source, catalog, rendering, the change pipeline;
//! - [`haproxy`]: HAProxy's edge — configuration model, planner, admin and master sockets,
//!   validation and reload;
//! - [`sidekick`]: `dockreg` — Docker discovery, health checks, lease registration, wrapper;
//! - [`agent`]: `dockreg agent` — one agent per host, registering containers from Docker events.

#![forbid(unsafe_code)]
// No unwrap, expect or panic on a runtime path: errors are values that name what is at fault.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod agent;
pub mod core;
pub mod haproxy;
pub mod sidekick;
pub mod watcher;

#[cfg(test)]
mod proptests;

//! dockreg: service discovery for Docker containers behind HAProxy, with etcd v3 between them.
//!
//! The library holds the domain; the two binaries are thin:
//! - [`keys`] and [`endpoint`]: the etcd key layout and the endpoint model (untrusted input,
//!   validated so nothing from etcd can inject HAProxy syntax);
//! - [`catalog`]: every service's live endpoints plus the template context, kept incrementally;
//! - [`render`]: the operator's Tera templates;
//! - [`pipeline`]: debounce, render, validate, atomic write, reload;
//! - [`etcd`], [`haproxy`], [`output`]: the I/O edges;
//! - [`watcher`] and [`sidekick`]: the command lines of `dockreg-haproxy` and `dockreg`.

pub mod backoff;
pub mod catalog;
pub mod endpoint;
pub mod etcd;
pub mod haproxy;
pub mod keys;
pub mod output;
pub mod pipeline;
pub mod render;
pub mod runtime;
pub mod sidekick;
pub mod watcher;

#[cfg(test)]
mod proptests;

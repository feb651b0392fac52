//! Integration tests: one test binary with a shared harness (real etcd, real HAProxy, real
//! HTTP backends and real requests).

mod harness;
mod watcher;

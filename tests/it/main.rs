//! Integration tests: one test binary with a shared harness (real etcd, real HAProxy, real
//! HTTP backends and real requests; the real Docker engine for the sidekick).

mod agent;
mod endstate;
mod faults_etcd;
mod faults_watcher;
mod harness;
mod hitless;
mod operability;
mod package;
mod promises;
mod roots;
mod sidekick;
mod sidekick_faults;
mod sidekick_promises;
mod watcher;

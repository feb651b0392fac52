//! etcd access shared by both programs: connection flags (endpoints, TLS, auth), the
//! watcher's consistent list-then-watch loop, and how etcd says a lease or cluster is gone.

mod connect;
mod fault;
mod watch;

pub use connect::EtcdArgs;
pub use fault::{is_lease_not_found, ClusterId};
pub use watch::{list_services, watch_services, KvChange, WatchEvent};

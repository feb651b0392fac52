//! etcd access shared by both programs: connection flags (endpoints, TLS, auth) and the
//! watcher's consistent list-then-watch loop.

mod connect;
mod watch;

pub use connect::EtcdArgs;
pub use watch::{list_services, watch_services, KvChange, WatchEvent};

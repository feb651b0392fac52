//! etcd access shared by both programs: connection flags (endpoints, TLS, auth), and the
//! watcher's consistent list-then-watch loop, which notices when the store it watches was
//! wiped or restored and lists everything again.

mod check;
mod connect;
mod identity;
mod list;
mod stream;
mod watch;

pub use connect::EtcdArgs;
pub use identity::{Observation, Stamp, StoreIdentity, Why};
pub use list::list_services;
pub use watch::{watch_services, KvChange, WatchEvent, CHECK_EVERY};

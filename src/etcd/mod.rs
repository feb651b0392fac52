//! etcd access shared by both programs: connection flags (endpoints, TLS, auth), how etcd
//! says a lease or cluster is gone, and the watcher's consistent list-then-watch loop, which
//! notices when the store it watches was wiped or restored and lists everything again.

mod check;
mod connect;
mod fault;
mod identity;
mod list;
mod stream;
mod watch;

pub use connect::EtcdArgs;
pub use fault::{is_lease_not_found, ClusterId};
pub use identity::{Observation, Stamp, StoreIdentity, Why};
pub use list::list_services;
pub use watch::{watch_services, KvChange, WatchEvent, CHECK_EVERY};

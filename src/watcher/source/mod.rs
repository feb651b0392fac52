//! The watcher's source of truth: a consistent list-then-watch of every service prefix and root
//! in etcd (one watch each), which notices when the store it watches was wiped or restored and lists everything
//! again.

mod check;
mod identity;
mod list;
mod scope;
mod status;
mod stream;
mod watch;

pub use list::list_services;
pub use scope::{Scope, Watched};
pub use status::SourceStatus;
pub use watch::{watch_services, KvChange, WatchEvent};

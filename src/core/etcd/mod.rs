//! etcd access both programs share: the connection flags (endpoints, TLS, auth) and how
//! etcd says a lease or a cluster is gone.

mod connect;
mod fault;

pub use connect::EtcdArgs;
pub use fault::{is_lease_not_found, unreachable_reason, ClusterId};

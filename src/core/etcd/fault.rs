//! How etcd tells a client that its lease, or its whole cluster, is gone.
//!
//! A lost lease is a state to recover from, not an error to retry: a put, a txn, a revoke or a
//! keepalive that names a lease etcd no longer has will fail the same way for ever. So is a
//! different cluster answering on the same address (etcd wiped and recreated): no lease of the
//! old cluster exists there.

use etcd_client::{Error, ResponseHeader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Whether `e` says that the lease named in the request does not exist (expired, revoked, or
/// never existed in this cluster).
///
/// etcd answers puts, txns and revokes with gRPC status `NotFound` and the message
/// `etcdserver: requested lease not found`; etcd-client turns a keepalive answered with TTL 0
/// into `LeaseKeepAliveError("lease not found")`.
pub fn is_lease_not_found(e: &Error) -> bool {
    match e {
        Error::GRpcStatus(s) => {
            s.message().contains("requested lease not found")
                || (s.code() == tonic::Code::NotFound && s.message().contains("lease"))
        }
        Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// Why etcd could not be reached, in a few words a person can act on (`connection refused`,
/// `timed out`, `name not resolved`, `TLS handshake failed`), when the error chain of `e`
/// shows a transport failure; `None` for anything else (an answer etcd gave).
pub fn unreachable_reason(e: &anyhow::Error) -> Option<&'static str> {
    for cause in e.chain() {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            return Some(match io.kind() {
                ConnectionRefused => "connection refused",
                TimedOut => "timed out",
                ConnectionReset | ConnectionAborted | BrokenPipe => "connection dropped",
                HostUnreachable | NetworkUnreachable => "no route to the host",
                _ => "cannot connect",
            });
        }
    }
    let text = format!("{e:#}");
    let has = |needle: &str| text.contains(needle);
    if has("Connection refused") || has("ConnectionRefused") {
        Some("connection refused")
    } else if has("dns error") || has("failed to lookup address") {
        Some("name not resolved")
    } else if has("invalid peer certificate") || has("certificate") && has("tls") {
        Some("TLS handshake failed (check --etcd-ca)")
    } else if has("tcp connect error") || has("transport error") {
        Some("cannot connect")
    } else if has("timed out") || has("deadline has elapsed") {
        Some("timed out")
    } else {
        None
    }
}

/// The cluster id etcd reports in response headers, remembered from the first response; shared
/// by the tasks of one client so that any of them notices a different cluster. Each change
/// starts a new epoch: a lease granted in an earlier epoch belongs to a cluster that is gone.
#[derive(Debug, Clone, Default)]
pub struct ClusterId(Arc<Seen>);

#[derive(Debug, Default)]
struct Seen {
    id: AtomicU64,
    epoch: AtomicU64,
}

impl ClusterId {
    /// Notes the cluster id of a response. Returns the previous id when a different cluster
    /// answered (once: the new id is remembered from then on, in a new epoch).
    pub fn observe(&self, header: Option<&ResponseHeader>) -> Option<u64> {
        self.observe_id(header.map_or(0, ResponseHeader::cluster_id))
    }

    fn observe_id(&self, id: u64) -> Option<u64> {
        if id == 0 {
            return None;
        }
        let prev = self.0.id.swap(id, Ordering::SeqCst);
        let changed = prev != 0 && prev != id;
        if changed {
            self.0.epoch.fetch_add(1, Ordering::SeqCst);
        }
        changed.then_some(prev)
    }

    /// The id last seen (0 before any response).
    pub fn get(&self) -> u64 {
        self.0.id.load(Ordering::SeqCst)
    }

    /// How many times the cluster changed so far.
    pub fn epoch(&self) -> u64 {
        self.0.epoch.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Status;

    #[test]
    fn lease_not_found_is_told_apart_from_other_failures() {
        let gone = [
            Error::GRpcStatus(Status::not_found("etcdserver: requested lease not found")),
            // The message alone (a proxy that changed the code), or the code with a shorter text.
            Error::GRpcStatus(Status::unknown("etcdserver: requested lease not found")),
            Error::GRpcStatus(Status::not_found("lease not found")),
            Error::LeaseKeepAliveError("lease not found".into()),
        ];
        for e in &gone {
            assert!(is_lease_not_found(e), "{e}");
        }
        let other = [
            Error::GRpcStatus(Status::unavailable("connection refused")),
            Error::GRpcStatus(Status::deadline_exceeded("timed out")),
            Error::GRpcStatus(Status::not_found("etcdserver: member not found")),
            Error::LeaseKeepAliveError("channel closed".into()),
            Error::WatchError("failed to create lease keeper".into()),
            Error::IoError(std::io::Error::other("broken pipe")),
        ];
        for e in &other {
            assert!(!is_lease_not_found(e), "{e}");
        }
    }

    #[test]
    fn a_different_cluster_is_reported_once() {
        let c = ClusterId::default();
        assert_eq!(c.observe_id(0), None, "no header: nothing known");
        assert_eq!(c.observe_id(7), None, "the first id is remembered");
        assert_eq!(c.observe_id(7), None);
        assert_eq!(c.epoch(), 0);
        let shared = c.clone();
        assert_eq!(
            shared.observe_id(9),
            Some(7),
            "a clone sees the same cluster"
        );
        assert_eq!(
            c.observe_id(9),
            None,
            "reported once, then the new one is the norm"
        );
        assert_eq!((c.get(), c.epoch()), (9, 1));
    }
}

#[cfg(test)]
mod reason_tests {
    use super::*;

    #[test]
    fn a_refused_connection_is_named_as_such() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "Connection refused");
        let e = anyhow::Error::new(io)
            .context("tcp connect error")
            .context("listing");
        assert_eq!(unreachable_reason(&e), Some("connection refused"));
        let e = anyhow::anyhow!("dns error: failed to lookup address information");
        assert_eq!(unreachable_reason(&e), Some("name not resolved"));
        assert_eq!(
            unreachable_reason(&anyhow::anyhow!("etcdserver: permission denied")),
            None
        );
    }
}

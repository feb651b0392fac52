//! One etcd call of the sidekick: bounded by a deadline (none may hang on a frozen
//! connection), its failure classified (a lost lease is a state to recover from, a timeout or
//! an unreachable etcd is a reason to retry later).

use crate::core::etcd::is_lease_not_found;
use std::future::Future;
use std::time::Duration;

/// Why an etcd call of the sidekick failed; each names the call.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    /// etcd did not answer in time (unreachable, partitioned, overloaded).
    #[error("{what}: etcd did not answer within {after:?}")]
    Timeout { what: String, after: Duration },
    /// etcd answered that the lease in the request does not exist.
    #[error("{what}: etcd says the lease is gone (requested lease not found)")]
    LeaseGone { what: String },
    /// The lease was granted by a cluster that no longer answers on these endpoints.
    #[error("{what}: a different etcd cluster answered (id {from:x}, now {to:x}); our lease belonged to the old one")]
    ClusterChanged { what: String, from: u64, to: u64 },
    /// Any other failure (connection refused, auth, …).
    #[error("{what}: {error}")]
    Etcd {
        what: String,
        error: etcd_client::Error,
    },
}

impl CallError {
    /// Whether the lease in use is lost: forget it and grant a new one.
    pub(crate) fn lease_lost(&self) -> bool {
        matches!(
            self,
            CallError::LeaseGone { .. } | CallError::ClusterChanged { .. }
        )
    }

    /// Whether the TLS handshake failed because etcd's certificate does not verify (a CA
    /// that did not sign it, a name it does not hold): a configuration error, which retrying
    /// does not heal. rustls says `invalid peer certificate: …`, somewhere in the source chain.
    pub(crate) fn certificate_rejected(&self) -> bool {
        let CallError::Etcd { error, .. } = self else {
            return false;
        };
        std::iter::successors(Some(error as &dyn std::error::Error), |e| e.source())
            .any(|e| e.to_string().contains("invalid peer certificate"))
    }
}

/// Runs `fut` (an etcd call described by `what`) for at most `deadline`.
pub(crate) async fn within<T>(
    what: &str,
    deadline: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if is_lease_not_found(&e) => Err(CallError::LeaseGone {
            what: what.to_string(),
        }),
        Ok(Err(error)) => Err(CallError::Etcd {
            what: what.to_string(),
            error,
        }),
        Err(_) => Err(CallError::Timeout {
            what: what.to_string(),
            after: deadline,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_call_that_never_answers_ends_at_its_deadline() {
        let never = std::future::pending::<Result<(), etcd_client::Error>>();
        let err = within("revoking lease 7", Duration::from_millis(50), never)
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::Timeout { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "revoking lease 7: etcd did not answer within 50ms"
        );
        assert!(!err.lease_lost());
    }

    #[tokio::test]
    async fn lease_not_found_is_a_lost_lease_not_a_failure() {
        let gone = async {
            Err::<(), _>(etcd_client::Error::GRpcStatus(tonic::Status::not_found(
                "etcdserver: requested lease not found",
            )))
        };
        let err = within("putting /service/a", Duration::from_secs(1), gone)
            .await
            .unwrap_err();
        assert!(err.lease_lost(), "{err}");
        let refused = async { Err::<(), _>(etcd_client::Error::InvalidArgs("nope".into())) };
        let err = within("putting /service/a", Duration::from_secs(1), refused)
            .await
            .unwrap_err();
        assert!(!err.lease_lost(), "{err}");
        assert!(err.to_string().starts_with("putting /service/a: "), "{err}");
    }

    #[tokio::test]
    async fn a_rejected_certificate_is_told_apart_from_an_unreachable_etcd() {
        let fail =
            |status: tonic::Status| async { Err::<(), _>(etcd_client::Error::GRpcStatus(status)) };
        let d = Duration::from_secs(1);
        for msg in [
            "invalid peer certificate: UnknownIssuer",
            "invalid peer certificate: BadSignature",
            "invalid peer certificate: NotValidForName",
        ] {
            let err = within("granting a lease", d, fail(tonic::Status::unavailable(msg)))
                .await
                .unwrap_err();
            assert!(err.certificate_rejected(), "{err}");
        }
        for msg in [
            "tcp connect error: Connection refused",
            "etcdserver: request timed out",
        ] {
            let err = within("granting a lease", d, fail(tonic::Status::unavailable(msg)))
                .await
                .unwrap_err();
            assert!(!err.certificate_rejected(), "{err}");
        }
        let never = std::future::pending::<Result<(), etcd_client::Error>>();
        let err = within("granting a lease", Duration::from_millis(10), never)
            .await
            .unwrap_err();
        assert!(!err.certificate_rejected(), "{err}");
    }
}

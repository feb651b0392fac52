//! Listing service prefixes and roots (each one range of keys, with its [`Scope`]) at one
//! revision, page by page, together with the store identity
//! (cluster id, highest revision) that the listing's response headers show.

use super::identity::{Observation, Stamp, StoreIdentity};
use super::scope::Scope;
use super::watch::WatchEvent;
use crate::core::keys::ServicePrefix;
use anyhow::{anyhow, bail, Context as _, Result};
use etcd_client::{Client, GetOptions};

/// Keys per page when listing, well below gRPC's 4 MiB message limit.
const PAGE: i64 = 2000;

/// The key just after every key that starts with `prefix` (etcd's range end for a prefix).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Lists the given prefixes and roots at one revision (the current one when `revision` is 0),
/// page by page, so even 100,000 keys never exceed a message limit. A root is listed like a
/// prefix: every key under it, whatever service it names.
pub async fn list_services(
    client: &Client,
    prefixes: &[(Scope, ServicePrefix)],
    revision: i64,
) -> Result<WatchEvent> {
    list_stamped(client, prefixes, revision)
        .await
        .map(|(snapshot, _)| snapshot)
}

/// [`list_services`], also returning the identity of the store that answered. Fails if the
/// headers of its pages disagree about the store (it changed during the listing).
pub(super) async fn list_stamped(
    client: &Client,
    prefixes: &[(Scope, ServicePrefix)],
    mut revision: i64,
) -> Result<(WatchEvent, StoreIdentity)> {
    let mut kv = client.kv_client();
    let mut identity = StoreIdentity::default();
    let mut scopes = Vec::with_capacity(prefixes.len());
    for (scope, prefix) in prefixes {
        let watch_key = prefix.watch_key().into_bytes();
        let end = prefix_end(&watch_key);
        let mut start = watch_key;
        let mut entries = Vec::new();
        loop {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut resp = kv
                .get(start.clone(), Some(opts))
                .await
                .with_context(|| format!("listing etcd prefix \"{prefix}\""))?;
            let header = resp.header().ok_or_else(|| {
                anyhow!("etcd answered the listing of \"{prefix}\" without a header")
            })?;
            if let Observation::Changed { why } = identity.observe_stamp(Stamp::of(header)) {
                bail!("the etcd store changed while \"{prefix}\" was listed: {why}");
            }
            if revision == 0 {
                revision = header.revision();
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            if let Some(last) = kvs.last() {
                start = last.key().to_vec();
                start.push(0);
            }
            entries.extend(kvs.into_iter().map(|kv| kv.into_key_value()));
            if !more {
                break;
            }
        }
        scopes.push((*scope, entries));
    }
    Ok((WatchEvent::Snapshot { revision, scopes }, identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/service/"), b"/service0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}

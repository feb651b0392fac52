//! The agent's background inputs: the Docker engine's event stream (reconnected for ever,
//! each connection announced so the main loop resyncs everything) and the etcd watch that
//! reports deletes under the root (so a key someone deleted is put back at once).

use super::engine::{DockerAddr, Engine};
use crate::core::backoff::Backoff;
use crate::sidekick::call::within;
use crate::sidekick::tasks::Notice;
use etcd_client::{Client, EventType, WatchFilterType, WatchOptions};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;

/// What the Docker side tells the main loop.
pub(crate) enum DockerInput {
    /// Connected (again): list and inspect everything, then follow events.
    Connected(Engine),
    /// A container event (`start`, `die`, `health_status: healthy`, …); for `kill`, the
    /// signal number.
    Event {
        id: String,
        action: String,
        signal: Option<i32>,
    },
    /// The connection or the stream broke; reconnecting.
    Lost,
}

/// Connects to the engine and forwards its container events, reconnecting with backoff for
/// ever. Every connection starts by asking for the events of the last seconds too, so none is
/// lost between the main loop's listing and the stream's start (an event seen twice is
/// harmless: the main loop inspects the container again). Returns when the receiver is gone.
pub(crate) async fn follow_docker(
    addr: DockerAddr,
    labels: Vec<String>,
    tx: mpsc::Sender<DockerInput>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let mut last_error = String::new();
    loop {
        match Engine::connect(&addr, &labels).await {
            Ok(engine) => {
                let since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs().saturating_sub(2))
                    .unwrap_or(0);
                let mut events = Box::pin(engine.events(Some(since)));
                if tx.send(DockerInput::Connected(engine)).await.is_err() {
                    return;
                }
                if !last_error.is_empty() {
                    tracing::info!(docker = %addr.shown().display(), "Docker engine answers again");
                    last_error.clear();
                }
                backoff.reset();
                let why = loop {
                    match events.next().await {
                        Some(Ok(msg)) => {
                            let actor = msg.actor.unwrap_or_default();
                            let signal = actor
                                .attributes
                                .as_ref()
                                .and_then(|a| a.get("signal"))
                                .and_then(|s| s.parse().ok());
                            let id = actor.id.unwrap_or_default();
                            let action = msg.action.unwrap_or_default();
                            if id.is_empty() {
                                continue;
                            }
                            let event = DockerInput::Event { id, action, signal };
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                        Some(Err(e)) => break crate::core::errors::error_chain(&e),
                        None => break "the event stream ended".to_string(),
                    }
                };
                tracing::warn!(docker = %addr.shown().display(), why, "Docker event stream lost; reconnecting");
                if tx.send(DockerInput::Lost).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                let text = e.to_string();
                if text != last_error {
                    tracing::warn!(error = %text, "Docker engine unreachable; retrying (the keys registered stay)");
                    last_error = text;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// A key deleted under the root, and the revision of the delete.
pub(crate) struct Deleted {
    pub(crate) key: String,
    pub(crate) revision: i64,
}

/// Watches `<root>/` for deletes and reports each deleted key to `deleted`; each time the
/// watch (re)starts, asks `notices` for a resync (a delete may have happened while it was
/// down).
pub(crate) async fn watch_deletes(
    client: Client,
    root: String,
    deadline: Duration,
    notices: mpsc::Sender<Notice>,
    deleted: mpsc::Sender<Deleted>,
) {
    let prefix = format!("{root}/");
    let mut backoff =
        Backoff::new(Duration::from_millis(100), Duration::from_secs(2)).with_jitter(0.5);
    loop {
        let mut c = client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_filters([WatchFilterType::NoPut]);
        match within(
            "watching the root",
            deadline,
            c.watch(prefix.as_str(), Some(opts)),
        )
        .await
        {
            Ok(mut stream) => {
                if notices.send(Notice::Resync).await.is_err() {
                    return;
                }
                while let Ok(Some(resp)) = stream.message().await {
                    backoff.reset();
                    for e in resp.events() {
                        if e.event_type() != EventType::Delete {
                            continue;
                        }
                        let Some(kv) = e.kv() else { continue };
                        let Ok(key) = kv.key_str() else { continue };
                        let d = Deleted {
                            key: key.to_string(),
                            revision: kv.mod_revision(),
                        };
                        if deleted.send(d).await.is_err() {
                            return;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(root, error = %e, "watching the root for deletes failed"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

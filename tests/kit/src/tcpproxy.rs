//! A freezable TCP proxy, to put a network partition between a sidekick and etcd.
//!
//! It accepts, connects upstream and copies both ways. [`TcpProxy::freeze`] stops forwarding
//! bytes but holds every connection open (a partition, not a reset: neither side sees an
//! error, nothing arrives); [`TcpProxy::heal`] resumes, delivering what was held back.
//! Connections accepted while frozen stay silent until healed.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A running proxy; stops (closing every connection) when dropped.
pub struct TcpProxy {
    pub addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Listens on `listen_ip` (a free port) and forwards to `upstream`. Containers reach it
    /// when `listen_ip` is the Docker bridge gateway.
    pub async fn start(listen_ip: &str, upstream: SocketAddr) -> TcpProxy {
        let listener = TcpListener::bind((listen_ip, 0))
            .await
            .unwrap_or_else(|e| panic!("proxy: cannot listen on {listen_ip}: {e}"));
        let addr = listener.local_addr().expect("proxy address");
        let (frozen, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Dropping the set (when the accept task is aborted) aborts every connection.
            let mut conns = JoinSet::new();
            while let Ok((down, _)) = listener.accept().await {
                conns.spawn(relay(down, upstream, rx.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        TcpProxy { addr, frozen, task }
    }

    /// The etcd URL through the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops forwarding; connections stay open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, held-back bytes first.
    pub fn heal(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(down: TcpStream, upstream: SocketAddr, frozen: watch::Receiver<bool>) {
    let Ok(up) = TcpStream::connect(upstream).await else {
        return;
    };
    let (dr, dw) = down.into_split();
    let (ur, uw) = up.into_split();
    tokio::join!(pump(dr, uw, frozen.clone()), pump(ur, dw, frozen));
}

/// Copies `from` to `to` while not frozen; then closes `to`'s write side.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let healed = frozen.wait_for(|f| !*f).await.is_ok();
        if !healed {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Frozen while waiting for bytes: stop reading (they stay in the kernel's buffers).
            _ = frozen.wait_for(|f| *f) => continue,
        };
        // Bytes read just as the freeze came are held until healed. (The guard `wait_for`
        // returns is dropped at once: held, it would block `freeze`.)
        let healed = frozen.wait_for(|f| !*f).await.is_ok();
        if !healed || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
    let _ = to.shutdown().await;
}

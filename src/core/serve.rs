//! The metrics and health endpoints both programs serve on `--metrics-addr`: `/metrics`
//! (Prometheus text format), `/healthz` (the process answers) and `/readyz` (the program says
//! whether it is doing its job, and if not, why). One small HTTP/1 server (axum); what it
//! serves comes from a [`Status`].

use anyhow::{Context as _, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// What a program tells its endpoints.
pub trait Status: Send + Sync + 'static {
    /// Every metric, in Prometheus' text format.
    fn metrics(&self) -> String;
    /// `Ok` when ready; otherwise why not, for a person.
    fn ready(&self) -> Result<(), String>;
}

/// `registry` in Prometheus' text format (a comment saying why, should encoding fail).
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    match prometheus_client::encoding::text::encode(&mut out, registry) {
        Ok(()) => out,
        Err(e) => format!("# encoding the metrics failed: {e}\n"),
    }
}

/// The content type of Prometheus' text format.
const METRICS_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Binds `addr` for the endpoints; an error names the flag (a port in use, a bad address).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-addr {addr}: cannot listen"))
}

/// Serves the endpoints on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    status: Arc<dyn Status>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(status);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the metrics and health server stopped")
}

async fn metrics(State(status): State<Arc<dyn Status>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, METRICS_TYPE)], status.metrics())
}

async fn ready(State(status): State<Arc<dyn Status>>) -> impl IntoResponse {
    match status.ready() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

//! The HTTP endpoint for Prometheus and an orchestrator's probes (`--metrics-addr`):
//! `/metrics`, `/healthz` (alive, the loop turning) and `/readyz` (connected, caught up,
//! fetching and publishing). It runs on the loop's own thread; a request reads atomics only.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::metrics::Metrics;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {source}")]
pub struct BindError {
    addr: String,
    source: std::io::Error,
}

/// Binds `addr` (`HOST:PORT`), so that a port in use stops the service at start-up.
pub async fn bind(addr: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { addr: addr.to_owned(), source })
}

/// The endpoint being served; it stops when this is dropped.
pub struct Endpoint(tokio::task::JoinHandle<()>);

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves the endpoint on `listener` until the returned [`Endpoint`] is dropped.
pub fn spawn(listener: TcpListener, metrics: Arc<Metrics>) -> Endpoint {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving /metrics, /healthz and /readyz");
    }
    let app = Router::new()
        .route("/metrics", get(exposition))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    Endpoint(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            debug!(%error, "the metrics endpoint stopped");
        }
    }))
}

async fn exposition(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {error}\n")).into_response(),
    }
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.liveness(crate::engine::now_ms()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.readiness(crate::engine::now_ms()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.iter().map(|w| format!("{w}\n")).collect()),
    }
}

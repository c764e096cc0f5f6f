//! The HTTP endpoint for Prometheus and an orchestrator's probes (`--metrics-addr`):
//! `/metrics`, `/healthz` (alive, the loop turning) and `/readyz` (connected, caught up,
//! fetching and publishing). It runs on a thread of its own, so a probe is answered even while
//! the loop's thread is busy (a store commit waiting for a sync, a start-up scan), and a
//! scrape's encoding never runs on the loop's time.
//!
//! [`serve_router`] serves any router the same way: the orders view's API runs on it too.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Router;
use tokio::sync::oneshot;
use tracing::{debug, error, info};

use crate::metrics::{clock_ms, Metrics};

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve {what} on {addr}: {source}")]
pub struct EndpointError {
    what: &'static str,
    addr: String,
    source: std::io::Error,
}

/// The endpoint being served; it stops when this is dropped.
pub struct Endpoint {
    stop: Option<oneshot::Sender<()>>,
    /// The address it listens on (the port chosen, for port 0).
    pub local_addr: std::net::SocketAddr,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Binds `addr` (`HOST:PORT`; port 0 picks a free one) and serves the endpoint on a thread of
/// its own until the returned [`Endpoint`] is dropped. Binding here, before anything else, makes
/// a port in use stop the service at start-up.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<Endpoint, EndpointError> {
    let app = Router::new()
        .route("/metrics", get(exposition))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let endpoint = serve_router("metrics", addr, app, 1)?;
    info!(addr = %endpoint.local_addr, "serving /metrics, /healthz and /readyz");
    Ok(endpoint)
}

/// Binds `addr` and serves `app` on a thread of its own (named `what`) until the returned
/// [`Endpoint`] is dropped; `what` also names it in errors ("cannot serve metrics on …").
/// With `threads` above one, that thread accepts and as many more answer: a request is then
/// answered on one while another waits for a core. 0 is taken as 1.
pub fn serve_router(what: &'static str, addr: &str, app: Router, threads: usize) -> Result<Endpoint, EndpointError> {
    let err = |source| EndpointError { what, addr: addr.to_owned(), source };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    let local_addr = listener.local_addr().map_err(err)?;
    let mut builder = match threads {
        0 | 1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            // Only workers park; the blocking pool's threads (range scans) keep the default
            // slice, as `thread-slice` has them.
            b.worker_threads(n).thread_name(what).on_thread_park(move || {
                thread_local!(static ASKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) });
                if !ASKED.replace(true) {
                    short_slice(what);
                }
            });
            b
        }
    };
    let runtime = builder.enable_all().build().map_err(err)?;
    let (stop, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name(what.into())
        .spawn(move || {
            short_slice(what);
            runtime.block_on(async move {
                let served = match tokio::net::TcpListener::from_std(listener) {
                    // An answer goes out when it is written, not when the client's delayed ACK
                    // of the last one comes back (Nagle).
                    Ok(listener) => axum::serve(listener.tap_io(move |tcp| nodelay(what, tcp)), app)
                        .with_graceful_shutdown(async { let _ = stopped.await; })
                        .await,
                    Err(e) => Err(e),
                };
                match served {
                    Ok(()) => debug!(endpoint = what, "the endpoint stopped"),
                    Err(error) => error!(endpoint = what, %error, "the endpoint stopped"),
                }
            })
        })
        .map_err(err)?;
    Ok(Endpoint { stop: Some(stop), local_addr })
}

fn nodelay(endpoint: &'static str, tcp: &mut tokio::net::TcpStream) {
    if let Err(error) = tcp.set_nodelay(true) {
        debug!(endpoint, %error, "TCP_NODELAY not set on a connection");
    }
}

/// Each request is a short burst: with a short slice it runs as soon as it arrives, instead of
/// waiting out a busy core's running thread (see the crate).
fn short_slice(endpoint: &'static str) {
    if let Err(error) = thread_slice::request(thread_slice::SHORTEST) {
        debug!(endpoint, %error, "no short scheduler slice for the endpoint's thread");
    }
}

async fn exposition(State(metrics): State<Arc<Metrics>>) -> Response {
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {error}\n")).into_response(),
    }
}

async fn healthz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.liveness(clock_ms()) {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn readyz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    match metrics.readiness(clock_ms()) {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why.iter().map(|w| format!("{w}\n")).collect()),
    }
}

//! The shutdown trigger of a service binary: Ctrl-C or SIGTERM, whichever comes first.

use std::future::Future;

/// Registers the handlers now and returns a future that completes when the process is asked
/// to stop. Call it first thing inside the runtime: until the handlers are registered, a
/// SIGTERM kills the process the default way (safe, but not graceful).
pub fn shutdown_signal() -> impl Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let handlers = signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
        async move {
            match handlers {
                Ok((mut int, mut term)) => {
                    tokio::select! {
                        _ = int.recv() => tracing::info!(signal = "SIGINT", "shutdown requested"),
                        _ = term.recv() => tracing::info!(signal = "SIGTERM", "shutdown requested"),
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot install signal handlers; falling back to Ctrl-C only");
                    let _ = tokio::signal::ctrl_c().await;
                    tracing::info!(signal = "SIGINT", "shutdown requested");
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
    }
}

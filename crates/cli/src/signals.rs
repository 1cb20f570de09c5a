//! Process signals: the only place hastack listens to them.

use tokio::signal::unix::{SignalKind, signal};

/// Resolve on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_termination() {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        // Installing a handler only fails when signals are unavailable at all; fall back to
        // Ctrl-C so the process can still be stopped.
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

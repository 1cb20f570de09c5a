//! Process signals: the only place hastack listens to them.

use tokio::signal::unix::{SignalKind, signal};

/// Resolve on SIGTERM or SIGINT (Ctrl-C).
pub async fn wait_for_termination() {
    termination().await;
}

/// Install the SIGTERM and SIGINT handlers now (so a signal that arrives before the future
/// is first polled is not the default action: death without a drain); the future resolves
/// on either. Call it before announcing readiness.
pub fn termination() -> impl std::future::Future<Output = ()> {
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    wait(term, int)
}

async fn wait(
    term: std::io::Result<tokio::signal::unix::Signal>,
    int: std::io::Result<tokio::signal::unix::Signal>,
) {
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

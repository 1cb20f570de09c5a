//! `hastack proxy --config FILE`: run the load balancer until SIGTERM/SIGINT (graceful
//! drain); SIGHUP reloads the file.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use hastack_config::Source;
use hastack_proxy::{Proxy, ProxyOptions};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

/// Arguments of `hastack proxy`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file with a [proxy] section.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = Source::load(&args.config).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (spec, warnings) = hastack_proxy::config::load(&src)
        .map_err(|d| anyhow::anyhow!("invalid configuration:\n{d}"))?;
    for w in warnings.items() {
        warn!("{w}");
    }
    // The control runtime: admin listener, probers, housekeeping. Data-plane workers run on
    // their own threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("hastack-control")
        .build()
        .context("cannot start the control runtime")?;
    rt.block_on(async move {
        // Signal handlers first: a SIGHUP or SIGTERM sent as soon as the proxy announces its
        // addresses must reload or drain it, not kill it.
        let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
        let terminate = crate::signals::termination();
        tokio::pin!(terminate);
        let registry = Arc::new(Mutex::new(Registry::default()));
        let proxy = Proxy::start(
            spec,
            ProxyOptions {
                config_path: Some(args.config.clone()),
                registry,
            },
        )
        .await
        .context("cannot start the proxy")?;
        announce(&proxy);
        loop {
            tokio::select! {
                _ = &mut terminate => break,
                _ = hup.recv() => {
                    info!("SIGHUP received: reloading {}", args.config.display());
                    match proxy.reload().await {
                        Ok(r) => info!(generation = r.generation, "reload applied"),
                        Err(e) => error!("{e}"),
                    }
                }
            }
        }
        let drain = proxy.shared().runtime.load().spec.drain_timeout;
        proxy.shutdown(drain).await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One line per bound socket on stdout, for scripts and tests that let the kernel pick ports
/// (`listen = "127.0.0.1:0"`); the admin line comes last, so a reader knows it has them all.
#[allow(
    clippy::print_stdout,
    reason = "the bound addresses are part of the command's output"
)]
fn announce(proxy: &Proxy) {
    for (name, a) in proxy.listener_addrs() {
        println!("listener {name} listening on {a}");
    }
    if let Some(a) = proxy.admin_addr() {
        println!("admin listening on {a}");
    }
}

//! `hastack coord --config FILE`: the embedded single-node coordination store (etcd v3 API).
//!
//! One node, not a quorum: it survives its own crash (fsync'd commits) but not the loss of
//! its machine. Production runs etcd; the same clients work against both (docs/coord.md).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use hastack_config::Source;
use hastack_coord::server::{self, Storage, config};
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Arguments of `hastack coord`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file with a `[coord]` section.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let src = Source::load(&args.config).map_err(|d| anyhow!("{d}"))?;
    let (cfg, warnings) = config::load(&src).map_err(|d| anyhow!("{d}"))?;
    for w in warnings.items() {
        tracing::warn!("{w}");
    }
    // Two threads: the gRPC server and the store's batches (fsync) overlap.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let registry = Arc::new(Mutex::new(Registry::default()));
        let running = server::start(
            &cfg,
            Storage::Dir(cfg.data_dir.clone()),
            registry,
            shutdown.clone(),
        )
        .await?;
        announce(&running);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signals::wait_for_termination().await;
            stop.cancel();
        });
        running.wait().await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// One line on stdout once the listeners are bound (scripts and tests read the ports from it
/// when the config says port 0).
#[allow(
    clippy::print_stdout,
    reason = "the readiness line is the command's output"
)]
fn announce(r: &server::Running) {
    let admin = r.admin.map(|a| format!(" admin {a}")).unwrap_or_default();
    println!("hastack coord: listening on {}{admin}", r.endpoint());
    let _ = std::io::stdout().flush();
}

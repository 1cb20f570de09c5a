//! `hastack cache ...`: the cache tier. `hastack cache proxy --config FILE` runs the
//! sharding Redis proxy until SIGTERM/SIGINT (connections finish their answers first).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use hastack_cache::proxy::CacheProxy;
use hastack_config::Source;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tracing::warn;

/// Arguments of `hastack cache`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Run the sharding Redis proxy: slot hashing like Redis Cluster over shard groups,
    /// where a dead shard answers as a cache miss and keys are never rehashed.
    Proxy(ProxyArgs),
}

/// Arguments of `hastack cache proxy`.
#[derive(Debug, clap::Args)]
pub struct ProxyArgs {
    /// Config file with a [cache.proxy] section.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Command::Proxy(a) => proxy(a),
    }
}

fn proxy(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    let src = Source::load(&args.config).map_err(|d| anyhow::anyhow!("{d}"))?;
    let (spec, warnings) = hastack_cache::config::load_proxy(&src)
        .map_err(|d| anyhow::anyhow!("invalid configuration:\n{d}"))?;
    for w in warnings.items() {
        warn!("{w}");
    }
    // The control runtime: probers and the admin listener. Data-plane workers run on their
    // own threads.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("hastack-control")
        .build()
        .context("cannot start the control runtime")?;
    rt.block_on(async move {
        let registry = Arc::new(Mutex::new(Registry::default()));
        let proxy = CacheProxy::start(spec, registry)
            .await
            .context("cannot start the cache proxy")?;
        crate::signals::wait_for_termination().await;
        proxy.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

//! `hastack app`: the tiny built-in app server.

use std::net::SocketAddr;
use std::process::ExitCode;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

/// Arguments of `hastack app`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9001")]
    listen: SocketAddr,
    /// Name to answer with (default: the listen address).
    #[arg(long)]
    name: Option<String>,
    /// Worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        // Installed before the address is announced (see signals::termination).
        let terminate = crate::signals::termination();
        tokio::spawn(async move {
            terminate.await;
            stop.cancel();
        });
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot bind {}", args.listen))?;
        let local = listener.local_addr()?;
        announce(local);
        let name = args.name.unwrap_or_else(|| local.to_string());
        hastack_app::serve(listener, &name, shutdown)
            .await
            .with_context(|| format!("app server on {local}"))
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Print the bound address on stdout, for scripts and tests that let the kernel pick the
/// port (`--listen 127.0.0.1:0`).
#[allow(
    clippy::print_stdout,
    reason = "the bound address is part of the command's output"
)]
fn announce(addr: SocketAddr) {
    println!("listening on {addr}");
}

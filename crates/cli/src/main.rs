//! `hastack`: one binary for every layer. This crate is the only place that touches argv,
//! environment variables, signals and the global tracing subscriber; each subcommand is a
//! thin shell around its component crate.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's allocator: the proxy's hot path allocates a few small
/// objects per request (hyper's buffers and header maps), where glibc costs ~5% of CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod app;
mod cache;
mod chaos;
mod check;
mod coord;
mod logging;
mod proxy;
mod signals;
mod vip;

/// Redundancy and automatic failover for every layer of an internet service, with the
/// measurements to prove it.
#[derive(Debug, Parser)]
#[command(
    name = "hastack",
    version,
    about = "Redundancy and automatic failover for every layer of an internet service, with the measurements to prove it.",
    long_about = None,
    propagate_version = true
)]
struct Cli {
    /// Log filter, e.g. `info`, `debug`, `hastack_proxy=debug,info` (overrides HASTACK_LOG).
    #[arg(long, global = true, value_name = "FILTER")]
    log: Option<String>,

    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a small stack on loopback, hurt it, and print its availability scorecard.
    Demo(chaos::DemoArgs),
    /// Run the HTTP/TCP load balancer (SIGHUP reloads, SIGTERM drains).
    Proxy(proxy::Args),
    /// Floating virtual IPs: VRRPv3/v2 failover between hosts (keepalived-compatible).
    Vip(vip::Args),
    /// Chaos drills: run a scenario, compare two, or run a standalone fault proxy.
    Chaos(chaos::Args),
    /// Validate config files: every error with file:line:column, or a short summary.
    Check(check::Args),
    /// Run the tiny built-in app server (a backend for demos, tests and drills).
    App(app::Args),
    /// Embedded single-node coordination store speaking the etcd v3 API (one node, not a quorum).
    Coord(coord::Args),
    /// The cache tier: the sharding Redis proxy (a dead shard is a miss, never a rehash).
    Cache(cache::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws its own progress lines: keep library logs to warnings unless asked.
    let default_filter = match cli.command {
        Command::Demo(_) => "warn",
        _ => "info",
    };
    logging::init(cli.log.as_deref(), cli.log_format, default_filter);
    let result = match cli.command {
        Command::Check(args) => check::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::App(args) => app::run(args),
        Command::Vip(args) => vip::run(args),
        Command::Chaos(args) => chaos::run(args),
        Command::Demo(args) => chaos::demo(args),
        Command::Coord(args) => coord::run(args),
        Command::Cache(args) => cache::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln_error(&e);
            ExitCode::FAILURE
        }
    }
}

/// Errors go to stderr as plain text too, so they are seen even with logging filtered off.
#[allow(clippy::print_stderr, reason = "the binary's last-resort error report")]
fn eprintln_error(e: &anyhow::Error) {
    eprintln!("hastack: {e:#}");
}

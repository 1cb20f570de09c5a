//! `hastack vip --config FILE`: floating virtual IPs (VRRP), the job keepalived does.
//!
//! The daemon re-executes this binary as `hastack vip --guard` for its guard process (see
//! `hastack_vip::guard`): the only other process it starts besides notify hooks and
//! command trackers.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow};
use hastack_config::Source;
use parking_lot::Mutex;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// Arguments of `hastack vip`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Config file with a `[vip]` section.
    #[arg(long, short, value_name = "FILE", required_unless_present = "guard")]
    config: Option<PathBuf>,
    /// Internal: run as the guard process of a `hastack vip` daemon (reads its pipe).
    #[arg(long, hide = true)]
    guard: bool,
}

/// Real-time priority of the protocol thread (SCHED_RR 1..=99; keepalived's default is 99 for
/// its VRRP process; a middle value leaves room for the kernel's own threads).
const RT_PRIORITY: i32 = 50;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.guard {
        // Best effort: the guard must not be starved either.
        let _ = hastack_vip::sys::set_realtime(RT_PRIORITY);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the runtime")?;
        rt.block_on(hastack_vip::guard::run_guard())?;
        return Ok(ExitCode::SUCCESS);
    }
    let path = args
        .config
        .ok_or_else(|| anyhow!("--config FILE is required"))?;
    let src = Source::load(&path).map_err(|d| anyhow!("{d}"))?;
    let (cfg, warnings) = hastack_vip::load(&src).map_err(|d| anyhow!("{d}"))?;
    for w in warnings.items() {
        tracing::warn!("{w}");
    }
    hastack_vip::check_privileges()?;
    if cfg.realtime {
        match hastack_vip::sys::set_realtime(RT_PRIORITY) {
            Ok(()) => tracing::debug!(priority = RT_PRIORITY, "SCHED_RR"),
            Err(e) => tracing::warn!(
                error = %e,
                "cannot switch to real-time scheduling (needs CAP_SYS_NICE); adverts may be late under CPU load"
            ),
        }
        if let Err(e) = hastack_vip::sys::lock_memory() {
            tracing::debug!(error = %e, "mlockall failed");
        }
    }
    let exe = std::env::current_exe().context("cannot find this binary for the guard process")?;
    let opts = hastack_vip::Options {
        guard_command: Some((exe, vec!["vip".into(), "--guard".into()])),
    };
    // One thread: the protocol loop, the guard pipe and the admin listener are all light, and
    // a single real-time thread is the most predictable under CPU load.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    rt.block_on(async move {
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            crate::signals::wait_for_termination().await;
            stop.cancel();
        });
        let registry = Arc::new(Mutex::new(Registry::default()));
        hastack_vip::run(cfg, opts, registry, shutdown).await
    })?;
    Ok(ExitCode::SUCCESS)
}

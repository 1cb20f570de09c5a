//! `hastack chaos ...` and `hastack demo`: thin shells around `hastack-chaos`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use hastack_chaos::demo::{
    DemoOptions, DirectFront, FrontTier, HaproxyFront, HastackProxyPair, VipProxyPair,
};
use hastack_chaos::fault::proxy::{FaultProxyConfig, ProxyFault};
use hastack_chaos::run::{Progress, RunOptions};
use hastack_chaos::scenario::{self, LoadOptions, Scenario, Vars};
use hastack_chaos::{Report, chart, control, render};
use hastack_config::{Dur, Source};
use tokio_util::sync::CancellationToken;

/// Arguments of `hastack chaos`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, clap::Subcommand)]
enum Cmd {
    /// Run a scenario file and print its availability report.
    Run(RunArgs),
    /// Run two scenarios with the same seed and timeline and print them side by side.
    Compare(CompareArgs),
    /// Run one fault proxy in front of an endpoint, controlled over HTTP.
    FaultProxy(FaultProxyArgs),
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The scenario file (a hastack config file with a [chaos] section).
    scenario: PathBuf,
    /// Also write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Directory for the report, chart, written files and process logs
    /// (default: hastack-report/<scenario name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Exit with status 1 when the SLO is missed.
    #[arg(long)]
    fail_on_slo: bool,
}

#[derive(Debug, clap::Args)]
struct CompareArgs {
    /// First scenario (e.g. the classic stack).
    a: PathBuf,
    /// Second scenario (e.g. hastack).
    b: PathBuf,
    /// Directory for both runs' outputs (default: hastack-report/compare).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Seed for both runs (default: each file's own).
    #[arg(long)]
    seed: Option<u64>,
    /// Also write both reports as one JSON document here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct FaultProxyArgs {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
    /// What to forward to.
    #[arg(long)]
    upstream: SocketAddr,
    /// Control API address (GET /status, POST /admin/proxies/<name>/faults|clear, /metrics).
    #[arg(long)]
    control: Option<SocketAddr>,
    /// The proxy's name in the control API.
    #[arg(long, default_value = "proxy")]
    name: String,
    /// A fault to apply at start, as JSON (repeatable), e.g.
    /// '{"kind":"latency","delay":"200ms","jitter":"20ms"}'.
    #[arg(long, value_name = "JSON")]
    fault: Vec<String>,
    /// Seed of jitter and drop decisions.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Upstream connect timeout.
    #[arg(long, default_value = "1s")]
    connect_timeout: Dur,
    /// Keep listening while the upstream refuses connections (clients then see
    /// "accepted, then reset" instead of "refused").
    #[arg(long)]
    no_mirror_refusal: bool,
}

/// Arguments of `hastack demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How long to drive load.
    #[arg(long, default_value = "60s")]
    duration: Dur,
    /// Requests per second.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// The tier in front of the app servers: two `hastack proxy` instances (clients fail
    /// over between them), one HAProxy (Debian package), or none (client-side failover).
    #[arg(long, value_enum, default_value_t = Front::HastackProxy)]
    front: Front,
    /// Where to save the report, chart and logs.
    #[arg(long, default_value = "hastack-report")]
    out: PathBuf,
    /// Also write the JSON report here.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Run in network namespaces (root): the front tier is a VIP pair (two hosts each
    /// running `hastack proxy` and `hastack vip`), each app server on its own host, the load
    /// from a client namespace to the virtual IP.
    #[arg(long)]
    netns: bool,
}

/// Front tier choice for the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Front {
    HastackProxy,
    Haproxy,
    Direct,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Cmd::Run(a) => runtime()?.block_on(run_one(a)),
        Cmd::Compare(a) => runtime()?.block_on(compare(a)),
        Cmd::FaultProxy(a) => runtime()?.block_on(fault_proxy(a)),
    }
}

pub fn demo(args: DemoArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(run_demo(args))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the runtime")
}

fn hastack_exe() -> anyhow::Result<PathBuf> {
    std::env::current_exe().context("cannot find the hastack binary's own path")
}

/// Cancel on SIGINT/SIGTERM: the run stops early and still reports.
fn cancel_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        crate::signals::wait_for_termination().await;
        t.cancel();
    });
    token
}

fn options(dir: PathBuf, progress: bool) -> anyhow::Result<RunOptions> {
    Ok(RunOptions {
        dir,
        hastack_exe: hastack_exe()?,
        progress: progress.then(|| Arc::new(print_progress) as hastack_chaos::run::ProgressFn),
        registry: control::new_registry(),
    })
}

#[allow(clippy::print_stderr, reason = "live progress goes to the terminal")]
fn print_progress(p: &Progress) {
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let total = (p.good + p.failed) as f64;
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let ok = if total > 0.0 {
        format!("{:.3}%", p.good as f64 * 100.0 / total)
    } else {
        "-".to_string()
    };
    eprintln!(
        "[{:>4.0}/{:.0}s] {} sent, {} ok so far, last 1s {}, p99 {}, in flight {}{}",
        p.elapsed.as_secs_f64(),
        p.duration.as_secs_f64(),
        p.scheduled,
        ok,
        p.last_second_pct
            .map_or("-".to_string(), |x| format!("{x:.2}%")),
        p.last_p99_ms
            .map_or("-".to_string(), |x| format!("{x:.1}ms")),
        p.in_flight,
        if p.active_faults.is_empty() {
            String::new()
        } else {
            format!(", faults: {}", p.active_faults.join("; "))
        }
    );
}

fn load_scenario(path: &Path, dir: &Path, seed: Option<u64>) -> anyhow::Result<Scenario> {
    let src = Source::load(path).map_err(|d| anyhow::anyhow!("{d}"))?;
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut vars = Vars::new(dir.to_path_buf(), abs, hastack_exe()?);
    let (s, warnings) = scenario::load(&src, &mut vars, LoadOptions { seed })
        .map_err(|d| anyhow::anyhow!("{d}"))?;
    if !warnings.is_empty() {
        eprintln_str(&warnings.to_string());
    }
    Ok(s)
}

#[allow(clippy::print_stderr, reason = "warnings for the operator")]
fn eprintln_str(s: &str) {
    eprintln!("{s}");
}

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn absolute(p: PathBuf) -> PathBuf {
    std::path::absolute(&p).unwrap_or(p)
}

/// Write report.txt, report.json and chart.svg into `dir`, plus `json` if asked.
fn save(report: &Report, dir: &Path, json: Option<&Path>) -> anyhow::Result<String> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let text = render::text(report);
    std::fs::write(dir.join("report.txt"), &text)
        .with_context(|| format!("writing {}", dir.join("report.txt").display()))?;
    render::write_json(report, &dir.join("report.json"))?;
    chart::write_svg(report, &dir.join("chart.svg"))?;
    if let Some(j) = json {
        render::write_json(report, j)?;
    }
    Ok(text)
}

#[allow(clippy::print_stdout, reason = "the report is the command's output")]
async fn run_one(a: RunArgs) -> anyhow::Result<ExitCode> {
    let src_name = a.scenario.file_stem().map_or_else(
        || "scenario".to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    let dir = absolute(
        a.out
            .unwrap_or_else(|| PathBuf::from("hastack-report").join(slug(&src_name))),
    );
    let s = load_scenario(&a.scenario, &dir, a.seed)?;
    eprintln_str(&format!(
        "hastack chaos: running `{}` for {} ({} fault(s)); output in {}",
        s.name,
        Dur(s.duration),
        s.schedule.len(),
        dir.display()
    ));
    let report = hastack_chaos::run(&s, &options(dir.clone(), true)?, cancel_on_signal()).await?;
    let text = save(&report, &dir, a.json.as_deref())?;
    print!("{text}");
    println!(
        "\nsaved: {}/report.txt, report.json, chart.svg, logs/",
        dir.display()
    );
    Ok(if a.fail_on_slo && !report.slo.met {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn same_timeline(a: &Scenario, b: &Scenario) -> bool {
    let key = |s: &Scenario| {
        s.schedule
            .iter()
            .map(|f| (f.at, f.target.clone(), f.action.clone(), f.duration))
            .collect::<Vec<_>>()
    };
    key(a) == key(b)
}

#[allow(
    clippy::print_stdout,
    reason = "the comparison is the command's output"
)]
async fn compare(a: CompareArgs) -> anyhow::Result<ExitCode> {
    let base = absolute(
        a.out
            .unwrap_or_else(|| PathBuf::from("hastack-report/compare")),
    );
    let da = base.join("a");
    let db = base.join("b");
    let sa = load_scenario(&a.a, &da, a.seed)?;
    let sb = load_scenario(&a.b, &db, a.seed)?;
    let same = same_timeline(&sa, &sb);
    if !same {
        eprintln_str("warning: the two scenarios do not have the same fault timeline");
    }
    let cancel = cancel_on_signal();
    let mut reports = Vec::new();
    for (s, dir) in [(&sa, &da), (&sb, &db)] {
        eprintln_str(&format!("hastack chaos: running `{}` ...", s.name));
        let opts = options(dir.clone(), true)?;
        // Check both before running either, so a missing requirement fails fast.
        hastack_chaos::run::preflight(s, &opts).await?;
    }
    for (s, dir) in [(&sa, &da), (&sb, &db)] {
        if cancel.is_cancelled() {
            bail!("interrupted");
        }
        let report = hastack_chaos::run(s, &options(dir.clone(), true)?, cancel.clone()).await?;
        let text = save(&report, dir, None)?;
        println!("{text}");
        reports.push(report);
    }
    let (ra, rb) = (&reports[0], &reports[1]);
    let table = render::compare(ra, rb, same);
    std::fs::write(base.join("compare.txt"), &table)
        .with_context(|| format!("writing {}", base.join("compare.txt").display()))?;
    if let Some(j) = &a.json {
        let body = serde_json::to_vec_pretty(&serde_json::json!({
            "a": ra, "b": rb, "same_timeline": same
        }))?;
        std::fs::write(j, body).with_context(|| format!("writing {}", j.display()))?;
    }
    println!("{table}");
    println!("saved: {}/{{a,b}}/report.*, compare.txt", base.display());
    Ok(ExitCode::SUCCESS)
}

#[allow(
    clippy::print_stdout,
    reason = "tells the operator where things listen"
)]
async fn fault_proxy(a: FaultProxyArgs) -> anyhow::Result<ExitCode> {
    let mut faults = Vec::new();
    for f in &a.fault {
        let pf: ProxyFault = serde_json::from_str(f).with_context(|| {
            format!(
                "--fault {f:?} is not a fault; e.g. '{{\"kind\":\"latency\",\"delay\":\"200ms\"}}'; kinds: {}",
                ProxyFault::kinds()
            )
        })?;
        faults.push(pf);
    }
    let cfg = FaultProxyConfig {
        name: a.name.clone(),
        listen: a.listen,
        upstream: a.upstream,
        connect_timeout: a.connect_timeout.0,
        seed: a.seed,
        mirror_refusal: !a.no_mirror_refusal,
    };
    let shutdown = cancel_on_signal();
    let name = a.name.clone();
    control::standalone(cfg, a.control, faults, shutdown, move |listen, control| {
        println!("fault proxy `{name}` listening on {listen}, forwarding to {}", a.upstream);
        if let Some(c) = control {
            println!("control API on http://{c} (GET /status, POST /admin/proxies/{name}/faults, POST /admin/proxies/{name}/clear)");
        }
        let _ = std::io::stdout().flush();
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}

#[allow(clippy::print_stdout, reason = "the scorecard is the command's output")]
async fn run_demo(a: DemoArgs) -> anyhow::Result<ExitCode> {
    let exe = hastack_exe()?;
    if a.netns {
        // Refuse before anything is built or started.
        hastack_chaos::netns::preflight("demo --netns")?;
        if a.front != Front::HastackProxy {
            bail!(
                "with --netns the front tier is the hastack VIP pair (hastack proxy + hastack vip on two hosts); the classic stack in namespaces (HAProxy + keepalived) runs as `hastack chaos compare scenarios/netns-classic.toml scenarios/netns-hastack.toml`"
            );
        }
    }
    let front: Box<dyn FrontTier> = match a.front {
        _ if a.netns => Box::new(VipProxyPair {
            hastack_exe: exe.clone(),
        }),
        Front::HastackProxy => Box::new(HastackProxyPair {
            hastack_exe: exe.clone(),
        }),
        Front::Haproxy => Box::new(HaproxyFront::default()),
        Front::Direct => Box::new(DirectFront),
    };
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate must be a positive number of requests per second");
    }
    let dir = absolute(a.out.clone());
    let mut vars = Vars::new(dir.clone(), dir.join("demo"), exe.clone());
    let opts = DemoOptions {
        duration: a.duration.0,
        rate: a.rate,
        apps: 3,
        seed: a.seed,
        netns: a.netns,
        ..DemoOptions::default()
    };
    let s = hastack_chaos::demo::build(front.as_ref(), &opts, &mut vars)?;
    eprintln_str(&format!(
        "hastack demo: {}\nhastack demo: {} req/s for {}; faults: {}",
        s.description,
        s.load.rate,
        Dur(s.duration),
        s.schedule
            .iter()
            .map(|f| format!("{} at {:.0}s", f.label(), f.at.as_secs_f64()))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    let report = hastack_chaos::run(&s, &options(dir.clone(), true)?, cancel_on_signal()).await?;
    let text = save(&report, &dir, a.json.as_deref())?;
    print!("{text}");
    println!(
        "\nsaved: {}/report.txt, report.json, chart.svg, logs/",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

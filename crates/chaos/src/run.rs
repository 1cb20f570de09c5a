//! The runner: start a scenario's topology, drive the load, inject the schedule, tear
//! everything down, and compute the report.
//!
//! Order of a run: preflight (root for namespace mode, requirements, namespace faults) ->
//! namespace testbed (namespace mode) -> write files -> start fault proxies -> start
//! processes in order, each awaited until ready -> control API and event sources -> load and
//! fault schedule from the same instant `t0` -> after the load, heal what is still broken,
//! stop processes (reverse order) and proxies -> remove the namespaces -> report.
//!
//! In namespace mode ([`crate::netns`]) the load generator and the default event sources run
//! on a thread inside the client namespace, fault proxies and readiness checks on a thread
//! inside their host's namespace, and processes are started inside their host's namespace;
//! the timeline, progress and control API stay in the harness's own namespace.
//!
//! Invariant: every child process and fault proxy started by a run is stopped, and every
//! namespace removed, before [`run`] returns, on success, on error and on cancellation.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hastack_admin::SharedRegistry;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::control::Control;
use crate::error::ChaosError;
use crate::events::{EventSink, run_source};
use crate::fault::process::ManagedProcess;
use crate::fault::proxy::{FaultProxy, FaultProxyConfig, FaultProxyHandle};
use crate::fault::{FaultAction, NetworkFaults, NoTestbed, ProcessFault, ScheduledFault};
use crate::load::http::HttpDriver;
use crate::load::{Driver, LoadStats};
use crate::netns::{Lab, Placement};
use crate::record::Recorder;
use crate::report::{self, InjectedFault, Report, ReportInput};
use crate::scenario::{Protocol, Scenario};

/// A live progress callback, called about once a second.
pub type ProgressFn = Arc<dyn Fn(&Progress) + Send + Sync>;

/// A snapshot of a running scenario.
#[derive(Debug, Clone)]
pub struct Progress {
    /// Time since the load started.
    pub elapsed: Duration,
    /// Planned load duration.
    pub duration: Duration,
    /// Requests scheduled so far.
    pub scheduled: u64,
    /// Good requests finished so far.
    pub good: u64,
    /// Failed requests finished so far.
    pub failed: u64,
    /// Good share over the last full second, percent.
    pub last_second_pct: Option<f64>,
    /// p99 latency of the last full latency window, milliseconds.
    pub last_p99_ms: Option<f64>,
    /// Requests in flight.
    pub in_flight: usize,
    /// Faults active now (labels).
    pub active_faults: Vec<String>,
}

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// The run's directory: written files and process logs.
    pub dir: PathBuf,
    /// The hastack binary (for `requires = ["hastack proxy"]` checks).
    pub hastack_exe: PathBuf,
    /// Live progress.
    pub progress: Option<ProgressFn>,
    /// Metrics registry for the control API's `/metrics`.
    pub registry: SharedRegistry,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("dir", &self.dir)
            .field("hastack_exe", &self.hastack_exe)
            .finish_non_exhaustive()
    }
}

/// Check what a scenario needs before starting anything: root and the namespace tools for
/// a namespace topology, namespace faults only with one, required programs and hastack
/// subcommands.
pub async fn preflight(s: &Scenario, opts: &RunOptions) -> Result<(), ChaosError> {
    if s.netns.is_some() {
        crate::netns::preflight(&s.name)?;
    } else {
        for f in &s.schedule {
            if let FaultAction::Net(n) = &f.action {
                NoTestbed.check(n)?;
            }
        }
    }
    for r in &s.requires {
        let mut words = r.split_whitespace();
        let (program, args): (PathBuf, Vec<String>) = match (words.next(), words.next()) {
            (Some("hastack"), Some(sub)) => (
                opts.hastack_exe.clone(),
                vec![sub.to_string(), "--help".to_string()],
            ),
            (Some(p), _) => (PathBuf::from(p), vec!["-v".to_string()]),
            (None, _) => continue,
        };
        let out = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::process::Command::new(&program)
                .args(&args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status(),
        )
        .await;
        let hastack_sub = program == opts.hastack_exe;
        match out {
            Ok(Ok(status)) if hastack_sub && !status.success() => {
                return Err(ChaosError::MissingSubcommand {
                    subcommand: args[0].clone(),
                    exe: opts.hastack_exe.display().to_string(),
                });
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(ChaosError::io(
                    format!(
                        "the scenario requires `{r}`, which cannot be run (install it, e.g. `apt-get install -y {}`)",
                        program.display()
                    ),
                    e,
                ));
            }
            Err(_) => {
                return Err(ChaosError::io(
                    format!("checking the requirement `{r}`"),
                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                ));
            }
        }
    }
    Ok(())
}

type Procs = BTreeMap<String, Arc<tokio::sync::Mutex<ManagedProcess>>>;

/// Everything a run started, stopped on drop or by [`Topology::shutdown`].
struct Topology {
    proxies: Vec<FaultProxy>,
    procs: Procs,
    order: Vec<String>,
}

impl Topology {
    async fn shutdown(self) {
        for h in self.proxies.iter().map(FaultProxy::handle) {
            h.clear_all();
        }
        for name in self.order.iter().rev() {
            if let Some(p) = self.procs.get(name) {
                p.lock().await.shutdown().await;
            }
        }
        for p in self.proxies {
            p.stop().await;
        }
    }
}

fn placement(lab: Option<&Lab>, host: Option<&str>) -> Result<Option<Placement>, ChaosError> {
    match (lab, host) {
        (Some(lab), Some(h)) => lab.placement(h).map(Some),
        _ => Ok(None),
    }
}

/// Start the topology; on failure, whatever was started is stopped again.
async fn start_topology(
    s: &Scenario,
    opts: &RunOptions,
    lab: Option<&Lab>,
) -> Result<Topology, ChaosError> {
    let logs = opts.dir.join("logs");
    std::fs::create_dir_all(&logs)
        .map_err(|e| ChaosError::io(format!("creating {}", logs.display()), e))?;
    for (rel, content) in &s.files {
        let path = opts.dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| ChaosError::io(format!("creating {}", parent.display()), e))?;
        }
        std::fs::write(&path, content).map_err(|source| ChaosError::Write { path, source })?;
    }
    let mut topo = Topology {
        proxies: Vec::new(),
        procs: BTreeMap::new(),
        order: Vec::new(),
    };
    for (i, p) in s.proxies.iter().enumerate() {
        let cfg = FaultProxyConfig {
            name: p.name.clone(),
            listen: p.listen,
            upstream: p.upstream,
            connect_timeout: p.connect_timeout,
            mirror_refusal: p.mirror_refusal,
            seed: s.seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(i as u64 + 1)),
        };
        let started = match placement(lab, p.host.as_deref()) {
            Ok(Some(pl)) => pl.run(FaultProxy::start(cfg)).await.unwrap_or_else(|| {
                Err(ChaosError::io(
                    format!("starting fault proxy `{}` on host `{}`", p.name, pl.host),
                    std::io::Error::other("the namespace runtime stopped"),
                ))
            }),
            Ok(None) => FaultProxy::start(cfg).await,
            Err(e) => Err(e),
        };
        match started {
            Ok(fp) => {
                fp.handle().register_metrics(&mut opts.registry.lock());
                topo.proxies.push(fp);
            }
            Err(e) => {
                topo.shutdown().await;
                return Err(e);
            }
        }
    }
    for spec in &s.processes {
        let pl = match placement(lab, spec.host.as_deref()) {
            Ok(pl) => pl,
            Err(e) => {
                topo.shutdown().await;
                return Err(e);
            }
        };
        let mut mp = ManagedProcess::new(spec.clone(), &logs).with_placement(pl);
        let started = mp.start().await;
        topo.order.push(spec.name.clone());
        topo.procs
            .insert(spec.name.clone(), Arc::new(tokio::sync::Mutex::new(mp)));
        if let Err(e) = started {
            topo.shutdown().await;
            return Err(e);
        }
    }
    Ok(topo)
}

/// Run a scenario to the end (or until `cancel`) and compute its report.
pub async fn run(
    s: &Scenario,
    opts: &RunOptions,
    cancel: CancellationToken,
) -> Result<Report, ChaosError> {
    preflight(s, opts).await?;
    std::fs::create_dir_all(&opts.dir)
        .map_err(|e| ChaosError::io(format!("creating {}", opts.dir.display()), e))?;
    let lab = match &s.netns {
        Some(t) => Some(Lab::start(t).await?),
        None => None,
    };
    let network: Arc<dyn NetworkFaults> = match &lab {
        Some(l) => l.clone(),
        None => Arc::new(NoTestbed),
    };
    let result = async {
        let topo = start_topology(s, opts, lab.as_deref()).await?;
        let result = drive(s, opts, &topo, network, lab.as_deref(), cancel).await;
        topo.shutdown().await;
        result
    }
    .await;
    if let Some(l) = &lab {
        l.close().await;
    }
    result
}

#[allow(
    clippy::too_many_lines,
    reason = "the run's phases in order, each short"
)]
async fn drive(
    s: &Scenario,
    opts: &RunOptions,
    topo: &Topology,
    network: Arc<dyn NetworkFaults>,
    lab: Option<&Lab>,
    cancel: CancellationToken,
) -> Result<Report, ChaosError> {
    // Namespace mode: the load and the default event sources run inside the client.
    let client = lab.map(Lab::client).transpose()?;
    let handles: BTreeMap<String, FaultProxyHandle> = topo
        .proxies
        .iter()
        .map(|p| (p.handle().name().to_string(), p.handle()))
        .collect();
    // A short lead so that the first requests are not overdue while tasks start.
    let t0 = Instant::now() + Duration::from_millis(100);
    let sink = EventSink::new(t0);
    let stop = CancellationToken::new();

    if let Some(addr) = s.control {
        let listener = hastack_admin::bind(addr)
            .await
            .map_err(|source| ChaosError::Bind {
                addr,
                what: "the chaos control API".to_string(),
                source,
            })?;
        let control = Control::new(handles.values().cloned().collect(), Some(sink.clone()));
        tokio::spawn(hastack_admin::serve(
            listener,
            Arc::new(control),
            opts.registry.clone(),
            stop.clone(),
        ));
        info!(%addr, "chaos control API listening");
    }
    for src in &s.events {
        let task = run_source(src.clone(), sink.clone(), stop.clone());
        match placement(lab, src.host())?.or_else(|| client.clone()) {
            Some(pl) => drop(pl.handle.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    let driver: Arc<dyn Driver> = match &s.protocol {
        Protocol::Http(spec) => Arc::new(HttpDriver::new(spec.clone())),
        Protocol::Tcp(d) => Arc::new(d.clone()),
    };
    let recorder = Arc::new(Mutex::new(Recorder::new(s.duration, s.slo.latency)));
    let stats = Arc::new(LoadStats::default());
    let load_cancel = cancel.child_token();
    let load = {
        let plan = s.load.clone();
        let recorder = recorder.clone();
        let stats = stats.clone();
        let load_cancel = load_cancel.clone();
        let task = async move {
            crate::load::run(&plan, driver, recorder, stats, t0, load_cancel).await;
        };
        match &client {
            Some(pl) => pl.handle.spawn(task),
            None => tokio::spawn(task),
        }
    };

    let injected: Arc<Mutex<Vec<InjectedFault>>> = Arc::new(Mutex::new(Vec::new()));
    let active: Arc<Mutex<BTreeMap<usize, String>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let faults_stop = stop.child_token();
    let mut fault_tasks = tokio::task::JoinSet::new();
    for f in s.schedule.clone() {
        let ctx = FaultCtx {
            t0,
            procs: topo.procs.clone(),
            proxies: handles.clone(),
            network: network.clone(),
            injected: injected.clone(),
            active: active.clone(),
        };
        let stop = faults_stop.clone();
        fault_tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep_until(t0 + f.at) => execute(ctx, f, stop.clone()).await,
            }
        });
    }

    // Progress, once a second, until the load is done.
    let mut load = load;
    let mut tick = tokio::time::interval_at(t0 + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tokio::select! {
            r = &mut load => {
                if let Err(e) = r {
                    warn!(error = %e, "load generator task failed");
                }
                break;
            }
            _ = tick.tick() => {
                if let Some(cb) = &opts.progress {
                    cb(&progress(s, t0, &recorder, &stats, &active));
                }
            }
        }
    }
    let elapsed = Instant::now().saturating_duration_since(t0);
    let interrupted = cancel.is_cancelled();

    // Stop injecting, heal what is still broken: clear proxies; paused processes are resumed
    // by their shutdown.
    faults_stop.cancel();
    while fault_tasks.join_next().await.is_some() {}
    for h in handles.values() {
        h.clear_all();
    }
    for (name, p) in &topo.procs {
        let mut p = p.lock().await;
        if p.is_running() {
            let _ = p
                .signal(Signal::SIGCONT)
                .map_err(|e| warn!(process = %name, error = %e, "SIGCONT at end"));
        }
    }
    stop.cancel();

    let span = if interrupted {
        elapsed.min(s.duration)
    } else {
        s.duration
    };
    let recorder = std::mem::replace(
        &mut *recorder.lock(),
        Recorder::new(Duration::ZERO, s.slo.latency),
    );
    let history = recorder.finish(span);
    let (events, dropped_events) = sink.snapshot();
    let faults = injected.lock().clone();
    let description = if s.description.is_empty() {
        format!(
            "{} process(es), {} fault proxy(ies), load {} req/s to {}",
            s.processes.len(),
            s.proxies.len(),
            s.load.rate,
            s.load
                .targets
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        s.description.clone()
    };
    let mut report = report::compute(&ReportInput {
        name: &s.name,
        description: &description,
        seed: s.seed,
        rate: s.load.rate,
        history: &history,
        faults: &faults,
        events: &events,
        slo: s.slo,
        restore: s.restore,
        settle: s.settle,
    });
    if interrupted {
        report.notes.push(format!(
            "interrupted after {:.1} s of {:.1} s",
            span.as_secs_f64(),
            s.duration.as_secs_f64()
        ));
    }
    if let Some(t) = &s.netns {
        let hosts: Vec<String> = t
            .hosts
            .iter()
            .filter_map(|h| t.ip(h).map(|ip| format!("{h} {ip}")))
            .collect();
        report.notes.push(format!(
            "ran in network namespaces: {}; load from the client namespace ({})",
            hosts.join(", "),
            t.ip(crate::netns::CLIENT)
                .map_or_else(String::new, |ip| ip.to_string())
        ));
    }
    if dropped_events > 0 {
        report.notes.push(format!(
            "{dropped_events} component events over the cap were dropped"
        ));
    }
    let not_reached = s.schedule.len().saturating_sub(faults.len());
    if not_reached > 0 {
        report.notes.push(format!(
            "{not_reached} scheduled fault(s) were not reached before the end"
        ));
    }
    Ok(report)
}

fn progress(
    s: &Scenario,
    t0: Instant,
    recorder: &Mutex<Recorder>,
    stats: &LoadStats,
    active: &Mutex<BTreeMap<usize, String>>,
) -> Progress {
    let elapsed = Instant::now().saturating_duration_since(t0);
    let secs = Duration::from_secs(elapsed.as_secs());
    let rec = recorder.lock();
    let all = rec.summary(Duration::ZERO, s.duration);
    let last = rec.summary(secs.saturating_sub(Duration::from_secs(1)), secs);
    let p99 = secs
        .checked_sub(Duration::from_secs(1))
        .and_then(|t| rec.window_at(t))
        .and_then(report::latency_of)
        .map(|l| l.p99_ms);
    #[allow(clippy::cast_precision_loss, reason = "request counts far below 2^52")]
    let last_pct = (last.total() > 0).then(|| last.good() as f64 * 100.0 / last.total() as f64);
    Progress {
        elapsed,
        duration: s.duration,
        scheduled: stats.scheduled.load(std::sync::atomic::Ordering::Relaxed),
        good: all.good(),
        failed: all.bad(),
        last_second_pct: last_pct,
        last_p99_ms: p99,
        in_flight: stats.in_flight.load(std::sync::atomic::Ordering::Relaxed),
        active_faults: active.lock().values().cloned().collect(),
    }
}

#[derive(Clone)]
struct FaultCtx {
    t0: Instant,
    procs: Procs,
    proxies: BTreeMap<String, FaultProxyHandle>,
    network: Arc<dyn NetworkFaults>,
    injected: Arc<Mutex<Vec<InjectedFault>>>,
    active: Arc<Mutex<BTreeMap<usize, String>>>,
}

impl FaultCtx {
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.t0)
    }

    fn set_healed(&self, id: usize) {
        let at = self.now();
        if let Some(f) = self.injected.lock().iter_mut().find(|f| f.id == id) {
            f.healed_at = Some(at);
        }
        self.active.lock().remove(&id);
    }
}

/// Inject one fault, then heal it after its duration (unless the run ends first).
async fn execute(ctx: FaultCtx, f: ScheduledFault, stop: CancellationToken) {
    let at = ctx.now();
    let label = f.label();
    info!(fault = %label, at = at.as_secs_f64(), "injecting fault");
    let record = |error: Option<String>| InjectedFault {
        id: f.id,
        label: label.clone(),
        kind: f.action.kind(),
        target: f.target.clone(),
        subject: f.subject.clone(),
        at,
        healed_at: None,
        weight: f.weight,
        error,
    };
    let result = inject(&ctx, &f).await;
    let failed = result.as_ref().err().map(ToString::to_string);
    if let Some(e) = &failed {
        warn!(fault = %label, error = %e, "fault injection failed");
    }
    ctx.injected.lock().push(record(failed.clone()));
    if failed.is_some() {
        return;
    }
    ctx.active.lock().insert(f.id, label.clone());
    // Restart heals itself (it is done once the process is ready again).
    if matches!(f.action, FaultAction::Process(ProcessFault::Restart)) {
        ctx.set_healed(f.id);
        return;
    }
    let Some(d) = f.duration else {
        return;
    };
    tokio::select! {
        () = stop.cancelled() => return,
        () = tokio::time::sleep(d) => {}
    }
    if let Err(e) = heal(&ctx, &f).await {
        warn!(fault = %label, error = %e, "healing the fault failed");
        return;
    }
    ctx.set_healed(f.id);
}

async fn inject(ctx: &FaultCtx, f: &ScheduledFault) -> Result<(), ChaosError> {
    let bad_target = |reason: &str| ChaosError::BadTarget {
        fault: f.action.kind().to_string(),
        target: f.target.clone(),
        reason: reason.to_string(),
    };
    match &f.action {
        FaultAction::Process(pf) => {
            let p = ctx
                .procs
                .get(&f.target)
                .ok_or_else(|| bad_target("no such process"))?;
            let mut p = p.lock().await;
            match pf {
                ProcessFault::Kill => p.kill().await,
                ProcessFault::Term => p.stop().await,
                ProcessFault::Pause => p.signal(Signal::SIGSTOP),
                ProcessFault::Restart => {
                    p.stop().await?;
                    p.start().await
                }
            }
        }
        FaultAction::Proxy(pf) => ctx
            .proxies
            .get(&f.target)
            .ok_or_else(|| bad_target("no such fault proxy"))?
            .apply(pf.clone())
            .map_err(|e| bad_target(&e)),
        FaultAction::Net(n) => ctx.network.inject(n).await,
    }
}

async fn heal(ctx: &FaultCtx, f: &ScheduledFault) -> Result<(), ChaosError> {
    match &f.action {
        FaultAction::Process(pf) => {
            let Some(p) = ctx.procs.get(&f.target) else {
                return Ok(());
            };
            let mut p = p.lock().await;
            match pf {
                ProcessFault::Kill | ProcessFault::Term => p.start().await,
                ProcessFault::Pause => p.signal(Signal::SIGCONT),
                ProcessFault::Restart => Ok(()),
            }
        }
        FaultAction::Proxy(pf) => {
            if let Some(h) = ctx.proxies.get(&f.target) {
                h.clear(pf.kind());
            }
            Ok(())
        }
        FaultAction::Net(n) => ctx.network.heal(n).await,
    }
}

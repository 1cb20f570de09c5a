//! `hastack demo`: a small stack on loopback (or in network namespaces), a short fault
//! schedule, a scorecard.
//!
//! The demo is a scenario built in code: `apps` instances of the built-in app server, each
//! behind its own fault proxy (so one can be slowed), and a **front tier** in front of
//! those, given as a [`FrontTier`]. The front tier decides what clients connect to, which
//! processes it runs, which faults it contributes (e.g. kill one of two proxies), and which
//! event sources report its detections. Implementations today:
//!
//! * [`HaproxyFront`]: one HAProxy (Debian package), configured as strongly as its docs allow
//!   (`leastconn`, `observe layer7`, `retry-on all-retryable-errors`, redispatch).
//! * [`DirectFront`]: no front tier; the load generator fails over between the backends
//!   itself (connect failure -> next address).
//! * [`HastackProxyPair`]: two `hastack proxy` instances, clients failing over between them.
//! * [`VipProxyPair`] (namespace mode, root): hosts `lb1` and `lb2` each run `hastack proxy`
//!   and `hastack vip` sharing one virtual IP; the client sends to the VIP.
//!
//! The schedule (fractions of the duration): kill app1 at 15% (restarted at 25%), freeze
//! app2 at 35% for 8%, add 400 ms to app3 through its fault proxy at 55% for 10% (the SLO
//! counts answers over 250 ms as failures), then the front tier's own faults (at 75% for the
//! proxy pair; at 70%, 80% and 90% for the VIP pair).
//!
//! Every front tier gets the same [`FrontTuning`] (health checks, timeouts, retries, passive
//! detection), rendered into its own configuration by [`haproxy_config`], [`proxy_config`]
//! and [`vip_config`].
//!
//! In namespace mode ([`DemoOptions::netns`]) the front tier's hosts come first
//! ([`FrontTier::hosts`]), then one host per app server (`web1`, `web2`, ...): each app
//! server listens on its host's loopback and its fault proxy on the host's address, port
//! 8080, so that partitions and link faults between hosts act on the real traffic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hastack_config::Dur;

mod configs;

pub use configs::{FrontTuning, VIP_INSTANCE, haproxy_config, proxy_config, vip_config};

use crate::error::ChaosError;
use crate::events::EventSourceSpec;
use crate::fault::NetFault;
use crate::fault::process::{ProcessSpec, Readiness};
use crate::fault::{FaultAction, ProcessFault, ProxyFault, ScheduledFault};
use crate::load::LoadPlan;
use crate::load::http::HttpRequestSpec;
use crate::netns::NetnsTopology;
use crate::report::{DEFAULT_SETTLE, RestoreRule, Slo};
use crate::scenario::{FaultProxySpec, Protocol, Scenario, Vars};

/// What a front tier gets to build itself.
#[derive(Debug)]
pub struct FrontContext<'a> {
    /// The backends' addresses as the front tier must reach them (their fault proxies).
    pub backends: &'a [SocketAddr],
    /// Their names (`app1`, ...), matching the subjects of the demo's faults.
    pub names: &'a [String],
    /// Placeholders and free ports (`vars.port("front")`).
    pub vars: &'a mut Vars,
    /// The backends' health check path.
    pub health_path: &'a str,
    /// Health checks, timeouts, retries: the same for every front tier.
    pub tuning: FrontTuning,
}

/// A fault the front tier asks the demo to inject.
#[derive(Debug, Clone)]
pub struct FrontFault {
    /// When, as a fraction of the duration (0.75 = at 75%).
    pub at: f64,
    /// A process of the plan (or a host, for a namespace fault).
    pub target: String,
    /// What to do.
    pub action: FaultAction,
    /// For how long, as a fraction of the duration (`None` = until the end).
    pub duration: Option<f64>,
    /// Event subject.
    pub subject: String,
}

/// What a front tier adds to the demo.
#[derive(Debug, Clone, Default)]
pub struct FrontPlan {
    /// One sentence saying exactly what runs (printed and put in the report).
    pub description: String,
    /// Processes to start after the backends, in order.
    pub processes: Vec<ProcessSpec>,
    /// Files to write into the run directory.
    pub files: Vec<(PathBuf, String)>,
    /// The addresses clients connect to, in failover order.
    pub entries: Vec<SocketAddr>,
    /// Faults on the front tier itself.
    pub faults: Vec<FrontFault>,
    /// Event sources reporting the front tier's detections.
    pub events: Vec<EventSourceSpec>,
    /// Requirements checked before anything starts (`haproxy`, `hastack proxy`).
    pub requires: Vec<String>,
}

/// The tier between clients and the app servers.
pub trait FrontTier: Send + Sync + std::fmt::Debug {
    /// Short name (`haproxy`, `direct`, `hastack-proxy-pair`).
    fn name(&self) -> &'static str;
    /// Build the tier in front of `ctx.backends`.
    fn plan(&self, ctx: &mut FrontContext<'_>) -> Result<FrontPlan, ChaosError>;

    /// The event subject under which this tier reports backend `name` (reached at
    /// `backend`), so that its detections are matched to the demo's faults. Default: the
    /// name (HAProxy's `backend/app1` matches `app1`).
    fn subject(&self, name: &str, backend: SocketAddr) -> String {
        let _ = backend;
        name.to_string()
    }

    /// Namespace mode: the hosts this tier runs on (placed before the app hosts, so they get
    /// the first addresses). Empty = the tier cannot run in namespaces.
    fn hosts(&self) -> Vec<String> {
        Vec::new()
    }
}

fn port(ctx: &mut FrontContext<'_>, name: &str) -> Result<u16, ChaosError> {
    ctx.vars
        .port(name)
        .map_err(|e| ChaosError::io(e, std::io::Error::other("no free port")))
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// One HAProxy from the Debian package.
#[derive(Debug, Clone, Default)]
pub struct HaproxyFront {
    /// The haproxy binary (default `haproxy` on PATH).
    pub program: Option<PathBuf>,
}

impl FrontTier for HaproxyFront {
    fn name(&self) -> &'static str {
        "haproxy"
    }

    fn plan(&self, ctx: &mut FrontContext<'_>) -> Result<FrontPlan, ChaosError> {
        let front = local(port(ctx, "front")?);
        let stats = local(port(ctx, "haproxy-stats")?);
        let servers: Vec<(String, SocketAddr)> = ctx
            .names
            .iter()
            .cloned()
            .zip(ctx.backends.iter().copied())
            .collect();
        let cfg = haproxy_config(front, stats, &servers, ctx.health_path, &ctx.tuning);
        let path = ctx.vars.dir.join("haproxy.cfg");
        let program = self
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from("haproxy"));
        Ok(FrontPlan {
            description: format!(
                "front tier: ONE HAProxy (Debian package, {}) at {front}, leastconn, observe layer7, retry-on all-retryable-errors with redispatch, {}; NOT hastack proxy",
                program.display(),
                ctx.tuning.summary()
            ),
            processes: vec![ProcessSpec {
                name: "haproxy".into(),
                program: program.clone(),
                args: vec!["-db".into(), "-f".into(), path.display().to_string()],
                env: vec![],
                ready: Readiness::Tcp(front),
                ready_timeout: Duration::from_secs(10),
                stop_grace: Duration::from_secs(2),
                host: None,
            }],
            files: vec![(PathBuf::from("haproxy.cfg"), cfg)],
            entries: vec![front],
            faults: vec![],
            events: vec![EventSourceSpec::Haproxy {
                source: "haproxy".into(),
                url: format!("http://{stats}/stats;csv"),
                interval: Duration::from_millis(100),
                host: None,
            }],
            requires: vec![program.display().to_string()],
        })
    }
}

/// No front tier: clients fail over between the backends themselves.
#[derive(Debug, Clone, Copy, Default)]
pub struct DirectFront;

impl FrontTier for DirectFront {
    fn name(&self) -> &'static str {
        "direct"
    }

    fn plan(&self, ctx: &mut FrontContext<'_>) -> Result<FrontPlan, ChaosError> {
        Ok(FrontPlan {
            description: format!(
                "front tier: NONE; the load generator connects to the {} backends directly, trying the next address only when a connect fails (like a DNS name with several records); no health checks, no retries",
                ctx.backends.len()
            ),
            entries: ctx.backends.to_vec(),
            ..FrontPlan::default()
        })
    }
}

/// Two `hastack proxy` instances; clients fail over between them (until `hastack vip`
/// gives them one address). Each runs one worker, probes `/health` every 500 ms, and cuts a
/// try after 1 s (so requests stuck on a frozen member are retried elsewhere).
#[derive(Debug, Clone, Default)]
pub struct HastackProxyPair {
    /// The hastack binary.
    pub hastack_exe: PathBuf,
}

impl FrontTier for HastackProxyPair {
    fn name(&self) -> &'static str {
        "hastack-proxy-pair"
    }

    fn subject(&self, _name: &str, backend: SocketAddr) -> String {
        backend.to_string()
    }

    fn plan(&self, ctx: &mut FrontContext<'_>) -> Result<FrontPlan, ChaosError> {
        let mut plan = FrontPlan {
            requires: vec!["hastack proxy".into()],
            ..FrontPlan::default()
        };
        for i in 1..=2 {
            let listen = local(port(ctx, &format!("proxy{i}"))?);
            let admin = local(port(ctx, &format!("proxy{i}-admin"))?);
            let file = format!("proxy{i}.toml");
            let cfg = proxy_config(listen, admin, ctx.backends, ctx.health_path, &ctx.tuning);
            plan.processes.push(ProcessSpec {
                name: format!("proxy{i}"),
                program: self.hastack_exe.clone(),
                args: vec![
                    "proxy".into(),
                    "--config".into(),
                    ctx.vars.dir.join(&file).display().to_string(),
                ],
                env: vec![],
                ready: Readiness::Tcp(listen),
                ready_timeout: Duration::from_secs(10),
                stop_grace: Duration::from_secs(2),
                host: None,
            });
            plan.files.push((PathBuf::from(file), cfg));
            plan.entries.push(listen);
        }
        // Detection times from each proxy's /status: `pools` is keyed by pool name and each
        // member carries its `addr` and `state`.
        for i in 1..=2 {
            let admin = local(port(ctx, &format!("proxy{i}-admin"))?);
            plan.events
                .push(proxy_events(format!("proxy{i}"), admin, None));
        }
        plan.faults.push(FrontFault {
            at: 0.75,
            target: "proxy1".into(),
            action: FaultAction::Process(ProcessFault::Kill),
            duration: None,
            subject: "proxy1".into(),
        });
        plan.description = format!(
            "front tier: TWO hastack proxy instances at {} and {} (clients fail over between them), {}",
            plan.entries[0],
            plan.entries[1],
            ctx.tuning.summary()
        );
        Ok(plan)
    }
}

/// Detection events from a `hastack proxy`'s `/status` (members named by address).
fn proxy_events(source: String, admin: SocketAddr, host: Option<String>) -> EventSourceSpec {
    EventSourceSpec::Json {
        source,
        url: format!("http://{admin}/status"),
        interval: Duration::from_millis(100),
        members: "/pools/app/members".into(),
        name_field: "addr".into(),
        state_field: "state".into(),
        down_states: vec!["down".into(), "ejected".into(), "unhealthy".into()],
        host,
    }
}

/// The last octet of the demo's virtual IP in its /24.
pub const VIP_OCTET: u8 = 50;

/// Namespace mode: two hosts (`lb1`, `lb2`), each running `hastack proxy` (port 80, admin
/// 127.0.0.1:9900) and `hastack vip` (VRRPv3, 20 ms adverts, priority 150 on lb1 and 100 on
/// lb2, one virtual IP `.50`, tracking the local proxy's listener). Clients send to the VIP.
///
/// Its faults: kill -9 the master's proxy at 70% (its vip tracker puts the instance in fault
/// and lb2 takes the VIP; the proxy is restarted 5% later and lb1 preempts back), kill -9 the
/// master's vip daemon at 80% (its guard withdraws the address at once, lb2 claims it after
/// Master_Down_Interval; restarted 5% later), and lb1's link down at 90% for 5%. Detection
/// of those comes from lb2's vip `/status` ("detected" = lb2 became master).
#[derive(Debug, Clone, Default)]
pub struct VipProxyPair {
    /// The hastack binary.
    pub hastack_exe: PathBuf,
}

impl FrontTier for VipProxyPair {
    fn name(&self) -> &'static str {
        "hastack-vip-pair"
    }

    fn subject(&self, _name: &str, backend: SocketAddr) -> String {
        backend.to_string()
    }

    fn hosts(&self) -> Vec<String> {
        vec!["lb1".into(), "lb2".into()]
    }

    fn plan(&self, ctx: &mut FrontContext<'_>) -> Result<FrontPlan, ChaosError> {
        let topo = ctx
            .vars
            .netns()
            .cloned()
            .ok_or_else(|| ChaosError::BadTarget {
                fault: "front tier".into(),
                target: self.name().into(),
                reason: "the VIP pair runs in network namespaces only (hastack demo --netns)"
                    .into(),
            })?;
        let vip = topo.addr(VIP_OCTET);
        let entry = SocketAddr::from((vip, 80));
        let admin = SocketAddr::from(([127, 0, 0, 1], 9900));
        let vip_admin = "http://127.0.0.1:9400";
        let advert = Duration::from_millis(20);
        let mut plan = FrontPlan {
            requires: vec!["hastack proxy".into(), "hastack vip".into()],
            entries: vec![entry],
            ..FrontPlan::default()
        };
        let hosts = self.hosts();
        for (i, host) in hosts.iter().enumerate() {
            let n = i + 1;
            let file = format!("proxy-{host}.toml");
            let cfg = proxy_config(
                SocketAddr::from(([0, 0, 0, 0], 80)),
                admin,
                ctx.backends,
                ctx.health_path,
                &ctx.tuning,
            );
            plan.processes.push(ProcessSpec {
                name: format!("proxy{n}"),
                program: self.hastack_exe.clone(),
                args: vec![
                    "proxy".into(),
                    "--config".into(),
                    ctx.vars.dir.join(&file).display().to_string(),
                ],
                env: vec![("HASTACK_LOG".into(), "warn".into())],
                ready: Readiness::Tcp(SocketAddr::from(([127, 0, 0, 1], 80))),
                ready_timeout: Duration::from_secs(10),
                stop_grace: Duration::from_secs(2),
                host: Some(host.clone()),
            });
            plan.files.push((PathBuf::from(file), cfg));
            plan.events
                .push(proxy_events(format!("proxy{n}"), admin, Some(host.clone())));
        }
        for (i, host) in hosts.iter().enumerate() {
            let n = i + 1;
            let (prio, peer) = if n == 1 { (150, 100) } else { (100, 150) };
            let file = format!("vip-{host}.toml");
            let cfg = vip_config(
                &ctx.vars.dir.join(format!("vip-state-{host}")),
                prio,
                peer,
                vip,
                advert,
                80,
                admin,
                &ctx.tuning,
            );
            plan.processes.push(ProcessSpec {
                name: format!("vrrp{n}"),
                program: self.hastack_exe.clone(),
                args: vec![
                    "vip".into(),
                    "--config".into(),
                    ctx.vars.dir.join(&file).display().to_string(),
                ],
                env: vec![("HASTACK_LOG".into(), "info".into())],
                // lb1 starts first and alone, so it is ready once it holds the VIP (the
                // address answers from its own namespace); lb2 then joins as backup.
                ready: if n == 1 {
                    Readiness::Tcp(entry)
                } else {
                    Readiness::Http(format!("{vip_admin}/healthz"))
                },
                ready_timeout: Duration::from_secs(10),
                stop_grace: Duration::from_secs(2),
                host: Some(host.clone()),
            });
            plan.files.push((PathBuf::from(file), cfg));
        }
        // lb2 becoming master is the failover being detected; back to backup, repaired.
        plan.events.push(EventSourceSpec::Json {
            source: "vip-lb2".into(),
            url: format!("{vip_admin}/status"),
            interval: Duration::from_millis(50),
            members: "/vip/instances".into(),
            name_field: "name".into(),
            state_field: "state".into(),
            down_states: vec!["master".into()],
            host: Some(hosts[1].clone()),
        });
        plan.faults = vec![
            FrontFault {
                at: 0.70,
                target: "proxy1".into(),
                action: FaultAction::Process(ProcessFault::Kill),
                duration: Some(0.05),
                subject: VIP_INSTANCE.into(),
            },
            FrontFault {
                at: 0.80,
                target: "vrrp1".into(),
                action: FaultAction::Process(ProcessFault::Kill),
                duration: Some(0.05),
                subject: VIP_INSTANCE.into(),
            },
            FrontFault {
                at: 0.90,
                target: hosts[0].clone(),
                action: FaultAction::Net(NetFault::LinkDown {
                    host: hosts[0].clone(),
                }),
                duration: Some(0.05),
                subject: VIP_INSTANCE.into(),
            },
        ];
        plan.description = format!(
            "front tier: a VIP pair in network namespaces: hosts lb1 ({}) and lb2 ({}) each run hastack proxy (port 80, {}) and hastack vip (VRRPv3, {} adverts, priority 150/100, tracking the local proxy every {}); clients in the client namespace ({}) send to the virtual IP {entry}",
            topo.ip("lb1").map_or_else(String::new, |ip| ip.to_string()),
            topo.ip("lb2").map_or_else(String::new, |ip| ip.to_string()),
            ctx.tuning.summary(),
            Dur(advert),
            Dur(ctx.tuning.track_interval),
            topo.ip(crate::netns::CLIENT)
                .map_or_else(String::new, |ip| ip.to_string()),
        );
        Ok(plan)
    }
}

/// Demo settings.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Load duration.
    pub duration: Duration,
    /// Requests per second.
    pub rate: f64,
    /// App servers (at least 3: the schedule hurts three of them).
    pub apps: usize,
    /// Seed (fault proxies' jitter).
    pub seed: u64,
    /// Namespace mode (root): every host in its own network namespace, the load from the
    /// client namespace; needs a front tier with [`FrontTier::hosts`].
    pub netns: bool,
    /// What every front tier is configured with.
    pub tuning: FrontTuning,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            duration: Duration::from_secs(60),
            rate: 200.0,
            apps: 3,
            seed: 1,
            netns: false,
            tuning: FrontTuning::default(),
        }
    }
}

/// Build the demo scenario around `front`.
pub fn build(
    front: &dyn FrontTier,
    opts: &DemoOptions,
    vars: &mut Vars,
) -> Result<Scenario, ChaosError> {
    let apps = opts.apps.max(3);
    let d = opts.duration;
    let mut processes = Vec::new();
    let mut proxies = Vec::new();
    let mut names = Vec::new();
    let mut backends = Vec::new();
    let no_port = |e: String| ChaosError::io(e, std::io::Error::other("no free port"));
    let netns = if opts.netns {
        let mut hosts = front.hosts();
        if hosts.is_empty() {
            return Err(ChaosError::BadTarget {
                fault: "front tier".into(),
                target: front.name().into(),
                reason: "this front tier cannot run in network namespaces".into(),
            });
        }
        hosts.extend((1..=apps).map(|i| format!("web{i}")));
        let topo = NetnsTopology {
            hosts,
            ..NetnsTopology::default()
        };
        vars.set_netns(topo.clone());
        Some(topo)
    } else {
        None
    };
    for i in 1..=apps {
        let name = format!("app{i}");
        let host = netns.as_ref().map(|_| format!("web{i}"));
        let (app, link) = match (&netns, &host) {
            (Some(t), Some(h)) => (
                local(9000),
                SocketAddr::from((t.ip(h).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED), 8080)),
            ),
            _ => (
                local(vars.port(&name).map_err(no_port)?),
                local(vars.port(&format!("link{i}")).map_err(no_port)?),
            ),
        };
        processes.push(ProcessSpec {
            name: name.clone(),
            program: vars.hastack_exe.clone(),
            args: vec![
                "app".into(),
                "--listen".into(),
                app.to_string(),
                "--name".into(),
                name.clone(),
            ],
            env: vec![("HASTACK_LOG".into(), "warn".into())],
            ready: Readiness::Tcp(app),
            ready_timeout: Duration::from_secs(10),
            stop_grace: Duration::from_secs(2),
            host: host.clone(),
        });
        proxies.push(FaultProxySpec {
            name: format!("link{i}"),
            listen: link,
            upstream: app,
            connect_timeout: Duration::from_secs(1),
            mirror_refusal: true,
            host,
        });
        names.push(name);
        backends.push(link);
    }
    let plan = front.plan(&mut FrontContext {
        backends: &backends,
        names: &names,
        vars,
        health_path: "/health",
        tuning: opts.tuning,
    })?;
    processes.extend(plan.processes);
    let subject = |i: usize| front.subject(&names[i], backends[i]);
    let at = |f: f64| d.mul_f64(f);
    let mut schedule = vec![
        ScheduledFault {
            id: 0,
            at: at(0.15),
            target: "app1".into(),
            action: FaultAction::Process(ProcessFault::Kill),
            duration: Some(at(0.10)),
            weight: 1.0,
            subject: subject(0),
        },
        ScheduledFault {
            id: 1,
            at: at(0.35),
            target: "app2".into(),
            action: FaultAction::Process(ProcessFault::Pause),
            duration: Some(at(0.08)),
            weight: 1.0,
            subject: subject(1),
        },
        ScheduledFault {
            id: 2,
            at: at(0.55),
            target: "link3".into(),
            action: FaultAction::Proxy(ProxyFault::Latency {
                delay: Dur::ms(400),
                jitter: Dur::ms(50),
                direction: crate::fault::Direction::Downstream,
            }),
            duration: Some(at(0.10)),
            weight: 0.5,
            subject: subject(2),
        },
    ];
    for (i, f) in plan.faults.into_iter().enumerate() {
        schedule.push(ScheduledFault {
            id: 3 + i,
            at: at(f.at),
            target: f.target,
            action: f.action,
            duration: f.duration.map(at),
            weight: 1.0,
            subject: f.subject,
        });
    }
    schedule.sort_by_key(|f| f.at);
    for (i, f) in schedule.iter_mut().enumerate() {
        f.id = i;
    }
    let placed = if netns.is_some() {
        format!(
            "{apps} app servers (hastack app) on hosts web1..web{apps}, each behind a fault proxy on its host's address"
        )
    } else {
        format!("{apps} app servers (hastack app), each behind a fault proxy")
    };
    Ok(Scenario {
        name: if netns.is_some() {
            format!("demo ({}, network namespaces)", front.name())
        } else {
            format!("demo ({})", front.name())
        },
        description: format!("{placed}; {}", plan.description),
        duration: d,
        seed: opts.seed,
        requires: plan.requires,
        load: LoadPlan {
            rate: opts.rate,
            duration: d,
            targets: plan.entries,
            timeout: Duration::from_secs(2),
            max_in_flight: 10_000,
        },
        protocol: Protocol::Http(HttpRequestSpec {
            method: http::Method::GET,
            path: "/".into(),
            host: None,
            connect_timeout: Duration::from_millis(500),
        }),
        slo: Slo {
            availability: 0.999,
            latency: Duration::from_millis(250),
        },
        restore: RestoreRule::default(),
        settle: DEFAULT_SETTLE,
        processes,
        proxies,
        files: plan.files,
        schedule,
        events: plan.events,
        control: None,
        netns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::new("/run".into(), "/run/demo".into(), "/bin/hastack".into())
    }

    #[test]
    fn every_front_tier_builds_a_scenario_that_says_what_runs() {
        let opts = DemoOptions::default();
        let direct = build(&DirectFront, &opts, &mut vars()).unwrap();
        assert_eq!(
            direct.load.targets.len(),
            3,
            "client-side failover over the backends"
        );
        assert_eq!(direct.schedule.len(), 3);
        assert!(direct.description.contains("NONE"));
        assert_eq!(direct.schedule[0].at, Duration::from_secs(9));
        assert_eq!(direct.schedule[2].subject, "app3");

        let ha = build(&HaproxyFront::default(), &opts, &mut vars()).unwrap();
        assert_eq!(ha.load.targets.len(), 1);
        assert!(ha.description.contains("NOT hastack proxy"));
        let cfg = &ha.files[0].1;
        assert!(
            cfg.contains("server app1 127.0.0.1:") && cfg.contains("server app3"),
            "{cfg}"
        );
        assert!(matches!(ha.events[0], EventSourceSpec::Haproxy { .. }));

        let pair = build(
            &HastackProxyPair {
                hastack_exe: "/bin/hastack".into(),
            },
            &opts,
            &mut vars(),
        )
        .unwrap();
        assert_eq!(pair.requires, vec!["hastack proxy".to_string()]);
        assert_eq!(
            pair.load.targets.len(),
            2,
            "clients fail over between the two proxies"
        );
        assert_eq!(pair.schedule.len(), 4, "plus: kill one proxy");
        assert_eq!(pair.schedule[3].target, "proxy1");
        // Its detections name members by address: the demo's faults follow.
        let link3 = pair.proxies[2].listen.to_string();
        assert_eq!(pair.schedule[2].subject, link3);
        assert!(pair.files[0].1.contains(&link3));
    }

    #[test]
    fn the_vip_pair_places_everything_in_namespaces() {
        let opts = DemoOptions {
            netns: true,
            duration: Duration::from_secs(20),
            ..DemoOptions::default()
        };
        let front = VipProxyPair {
            hastack_exe: "/bin/hastack".into(),
        };
        let s = build(&front, &opts, &mut vars()).unwrap();
        let t = s.netns.clone().unwrap();
        assert_eq!(t.hosts, ["lb1", "lb2", "web1", "web2", "web3"]);
        assert_eq!(s.load.targets, vec!["10.99.0.50:80".parse().unwrap()]);
        assert!(s.processes.iter().all(|p| p.host.is_some()));
        assert!(s.proxies.iter().all(|p| p.host.is_some()));
        // The app tier keeps the loopback demo's faults; the front tier adds three, in order.
        let plan: Vec<(u64, &str, &str)> = s
            .schedule
            .iter()
            .map(|f| (f.at.as_secs(), f.target.as_str(), f.action.kind().name()))
            .collect();
        assert_eq!(
            plan,
            [
                (3, "app1", "kill"),
                (7, "app2", "pause"),
                (11, "link3", "latency"),
                (14, "proxy1", "kill"),
                (16, "vrrp1", "kill"),
                (18, "lb1", "link_down"),
            ]
        );
        assert!(s.schedule.iter().enumerate().all(|(i, f)| f.id == i));
        assert!(s.schedule.iter().all(|f| f.duration.is_some()));
        // Backends are the fault proxies on the web hosts' own addresses.
        assert_eq!(s.proxies[0].listen.to_string(), "10.99.0.3:8080");
        assert_eq!(s.schedule[0].subject, "10.99.0.3:8080");
        let vip1 = &s
            .files
            .iter()
            .find(|(p, _)| p.ends_with("vip-lb1.toml"))
            .unwrap()
            .1;
        assert!(
            vip1.contains("priority = 150") && vip1.contains("10.99.0.50/24"),
            "{vip1}"
        );
        assert!(vip1.contains("advert_interval = \"20ms\""), "{vip1}");
        let proxy = &s
            .files
            .iter()
            .find(|(p, _)| p.ends_with("proxy-lb2.toml"))
            .unwrap()
            .1;
        assert!(proxy.contains("\"10.99.0.5:8080\""), "{proxy}");
        // The VIP pair cannot run on loopback, and a loopback tier cannot run in namespaces.
        assert!(build(&front, &DemoOptions::default(), &mut vars()).is_err());
        assert!(build(&DirectFront, &opts, &mut vars()).is_err());
    }
}

//! The IO driver of one instance: sockets, timers, netlink, ARP, trackers, witness, guard,
//! notify hooks and status, around the pure [`Instance`] state machine.
//!
//! The loop owns the state machine and is the only writer of the instance's addresses
//! (besides the guard, which only removes). Everything slow (notify hooks, tracker probes,
//! witness queries, GARP bursts) runs in its own task and reports back over a channel, so the
//! protocol loop never waits on it.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::Error;
use crate::auth::Authenticator;
use crate::config::{InstanceConfig, TrackConfig, TrackKind};
use crate::guard::GuardClient;
use crate::metrics::{InstanceStatus, MasterLabel, Metrics, StatusBoard};
use crate::net::{ArpSocket, VrrpSocket, arp_request, parse_arp};
use crate::netlink::{ADDR_PROTO, Link, Netlink};
use crate::packet::{Advert, IPPROTO_VRRP, PacketError, VRRP_GROUP, Version, parse, parse_ipv4};
use crate::state::{Action, Event, Instance, Params, Reason, State};
use crate::track::{self, TrackChange};
use crate::witness;

/// What every instance of a daemon shares.
#[derive(Debug)]
pub struct Shared {
    /// Netlink connection.
    pub nl: Netlink,
    /// The guard, when enabled.
    pub guard: Option<Arc<GuardClient>>,
    /// Metrics.
    pub metrics: Metrics,
    /// Status board.
    pub status: StatusBoard,
    /// Kernel lifetime of added addresses.
    pub lease: Option<Duration>,
    /// Where added addresses are recorded.
    pub state_dir: PathBuf,
}

/// Quiet period after which a conflict counts as over (and GARP is re-sent).
const CONFLICT_QUIET: Duration = Duration::from_secs(1);

struct Driver {
    id: u32,
    cfg: InstanceConfig,
    sh: Arc<Shared>,
    link: Link,
    primary: Ipv4Addr,
    sock: VrrpSocket,
    arp: Option<Arc<ArpSocket>>,
    machine: Instance,
    auth: Option<Authenticator>,
    holding: bool,
    tracks: Vec<TrackConfig>,
    track_up: Vec<bool>,
    notify_tx: Option<mpsc::UnboundedSender<(State, State, u8)>>,
    claim_tx: mpsc::UnboundedSender<(u64, Result<(), Duration>)>,
    witness_tx: mpsc::UnboundedSender<Option<&'static str>>,
    witness_fail_rounds: u32,
    witness_inflight: bool,
    claim_started: Option<Instant>,
    claim_preempting: bool,
    conflict_first: Option<Instant>,
    conflict_last: Option<Instant>,
    last_garp: Option<Instant>,
    last_lease_refresh: Instant,
    last_master_label: Option<String>,
    st: InstanceStatus,
}

/// Run one instance until `shutdown`; on the way out it resigns (priority 0) and removes
/// its addresses.
pub async fn run_instance(
    id: u32,
    cfg: InstanceConfig,
    sh: Arc<Shared>,
    mut fenced_rx: mpsc::UnboundedReceiver<()>,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let link = sh.nl.link(&cfg.interface).await?;
    let primary = sh.nl.primary_v4(link.index).await?.ok_or_else(|| {
        Error::Config(format!(
            "instance {}: interface {} has no IPv4 address of its own: VRRP needs one as the advert source",
            cfg.name, cfg.interface
        ))
    })?;
    cleanup_leftovers(&sh, &cfg, &link).await;
    let sock = VrrpSocket::open(&cfg.interface, link.index, primary)?;
    let arp = if cfg.arp_probe.is_some() || cfg.garp_count > 0 {
        Some(Arc::new(ArpSocket::open(link.index)?))
    } else {
        None
    };
    let params = Params {
        version: cfg.version,
        priority: cfg.priority,
        interval_cs: cfg.interval_cs,
        preempt: cfg.preempt,
        preempt_delay: cfg.preempt_delay,
        primary,
        claim_gate: cfg.arp_probe.is_some() || !cfg.witness.is_empty(),
        claim_lead: cfg.arp_probe.unwrap_or(Duration::ZERO),
    };
    // The instance's own interface is an implicit weight-0 tracker: no carrier, no master.
    let mut tracks = cfg.tracks.clone();
    tracks.push(TrackConfig {
        name: format!("interface:{}", cfg.interface),
        kind: TrackKind::Interface(cfg.interface.clone()),
        weight: 0,
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(500),
        rise: 1,
        fall: 1,
    });
    let mut track_rx = track::spawn_all(&tracks, &sh.nl, &shutdown);
    let (claim_tx, mut claim_rx) = mpsc::unbounded_channel();
    let (witness_tx, mut witness_rx) = mpsc::unbounded_channel();
    let (conflict_tx, mut conflict_rx) = mpsc::unbounded_channel::<(Ipv4Addr, [u8; 6])>();
    if let Some(a) = &arp {
        tokio::spawn(arp_listener(
            a.clone(),
            cfg.addresses.iter().map(|(a, _)| *a).collect(),
            link.mac,
            conflict_tx,
            shutdown.clone(),
        ));
    }
    let notify_tx = (!cfg.notify.is_empty()).then(|| spawn_notify(&cfg));
    let st = InstanceStatus {
        name: cfg.name.clone(),
        interface: cfg.interface.clone(),
        vrid: cfg.vrid,
        state: State::Init,
        base_priority: cfg.priority,
        priority: cfg.priority,
        master: None,
        primary: Some(primary.to_string()),
        addresses: cfg
            .addresses
            .iter()
            .map(|(a, p)| format!("{a}/{p}"))
            .collect(),
        holding: false,
        last_reason: None,
        transitions: 0,
        adverts_sent: 0,
        adverts_received: 0,
        adverts_rejected: BTreeMap::new(),
        trackers: tracks.iter().map(|t| (t.name.clone(), true)).collect(),
        fenced: 0,
        arp_conflicts: 0,
    };
    let mut d = Driver {
        id,
        auth: cfg
            .auth
            .as_ref()
            .map(|a| Authenticator::new(&a.key, a.max_clock_skew)),
        track_up: vec![true; tracks.len()],
        tracks,
        cfg,
        sh,
        link,
        primary,
        sock,
        arp,
        machine: Instance::new(params),
        holding: false,
        notify_tx,
        claim_tx,
        witness_tx,
        witness_fail_rounds: 0,
        witness_inflight: false,
        claim_started: None,
        claim_preempting: false,
        conflict_first: None,
        conflict_last: None,
        last_garp: None,
        last_lease_refresh: Instant::now(),
        last_master_label: None,
        st,
    };
    info!(instance = %d.cfg.name, interface = %d.cfg.interface, vrid = d.cfg.vrid, priority = d.cfg.priority, %primary, "instance starting");
    d.sh.metrics
        .priority
        .get_or_create(&Metrics::label(&d.cfg.name))
        .set(i64::from(d.cfg.priority));
    let acts = d.machine.on_event(Instant::now(), Event::Startup);
    d.perform(acts).await;
    let mut buf = vec![0u8; 4096];
    let mut housekeeping = tokio::time::interval(Duration::from_millis(50));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut witness_tick = tokio::time::interval(d.cfg.witness_timeout);
    witness_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let deadline = d.machine.poll_timeout();
        let sleep_to = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(()) = fenced_rx.recv() => {
                warn!(instance = %d.cfg.name, "the guard withdrew our addresses (the daemon stalled)");
                d.holding = false;
                d.fenced();
                let acts = d.machine.on_event(Instant::now(), Event::Fenced);
                d.perform(acts).await;
            }
            () = tokio::time::sleep_until(sleep_to) => {
                let now = Instant::now();
                let late = deadline.map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
                if d.machine.state() == State::Master && late >= d.cfg.watchdog_timeout {
                    // We were frozen or starved long enough for the guard (and a backup) to
                    // act: assume we lost the address rather than advertise stale mastership.
                    warn!(instance = %d.cfg.name, late_ms = late.as_millis(), "protocol loop stalled; stepping down");
                    d.fenced();
                    let acts = d.machine.on_event(now, Event::Fenced);
                    d.perform(acts).await;
                } else {
                    let acts = d.machine.on_event(now, Event::Timer);
                    d.perform(acts).await;
                }
            }
            r = d.sock.recv(&mut buf) => match r {
                Ok(n) => {
                    if let Some(ev) = d.receive(&buf[..n]) {
                        let acts = d.machine.on_event(Instant::now(), ev);
                        d.perform(acts).await;
                    }
                }
                Err(e) => {
                    error!(instance = %d.cfg.name, error = %e, "VRRP receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(TrackChange { index, up }) = track_rx.recv() => {
                if let Some(slot) = d.track_up.get_mut(index) {
                    *slot = up;
                }
                if let Some(t) = d.tracks.get(index) {
                    d.st.trackers.insert(t.name.clone(), up);
                }
                let (prio, fault) = track::effective(d.cfg.priority, &d.tracks, &d.track_up);
                let now = Instant::now();
                if prio != d.machine.priority() {
                    info!(instance = %d.cfg.name, priority = prio, "effective priority changed");
                    d.sh.metrics.priority.get_or_create(&Metrics::label(&d.cfg.name)).set(i64::from(prio));
                    let acts = d.machine.on_event(now, Event::Priority(prio));
                    d.perform(acts).await;
                }
                let acts = d.machine.on_event(now, Event::Fault(fault));
                d.perform(acts).await;
            }
            Some((id, verdict)) = claim_rx.recv() => {
                let verdict = d.arp_verdict(verdict);
                let ev = match verdict {
                    Ok(()) => {
                        debug!(instance = %d.cfg.name, id, "claim granted");
                        Event::ClaimGranted(id)
                    }
                    Err(retry_after) => {
                        debug!(instance = %d.cfg.name, retry_ms = retry_after.as_millis(), "claim denied");
                        Event::ClaimDenied { id, retry_after }
                    }
                };
                d.claim_started = None;
                let acts = d.machine.on_event(Instant::now(), ev);
                d.perform(acts).await;
            }
            Some((addr, mac)) = conflict_rx.recv() => d.on_conflict(addr, mac),
            Some(verdict) = witness_rx.recv() => {
                d.witness_inflight = false;
                match verdict {
                    Some(reason) if d.machine.state() == State::Master => {
                        d.witness_fail_rounds += 1;
                        let better = reason != "no witness majority";
                        if better || d.witness_fail_rounds >= 3 {
                            warn!(instance = %d.cfg.name, reason, "stepping down: witness check failed");
                            let acts = d.machine.on_event(Instant::now(), Event::QuorumLost);
                            d.perform(acts).await;
                        }
                    }
                    _ => d.witness_fail_rounds = 0,
                }
            }
            _ = witness_tick.tick(), if !d.cfg.witness.is_empty() => d.witness_check(),
            _ = housekeeping.tick() => d.housekeeping().await,
        }
    }
    let acts = d.machine.on_event(Instant::now(), Event::Shutdown);
    d.perform(acts).await;
    // Belt and braces: whatever the state machine did, nothing stays behind.
    if d.holding {
        d.remove_addresses().await;
    }
    info!(instance = %d.cfg.name, "instance stopped");
    Ok(())
}

impl Driver {
    fn label(&self) -> crate::metrics::InstanceLabel {
        Metrics::label(&self.cfg.name)
    }

    fn reject(&mut self, reason: &str) {
        self.sh.metrics.reject(&self.cfg.name, reason);
        *self
            .st
            .adverts_rejected
            .entry(reason.to_string())
            .or_default() += 1;
        self.publish();
    }

    fn fenced(&mut self) {
        self.sh.metrics.fenced.get_or_create(&self.label()).inc();
        self.st.fenced += 1;
    }

    /// Validate one received IP packet; the event to feed, if any.
    fn receive(&mut self, pkt: &[u8]) -> Option<Event> {
        let ip = match parse_ipv4(pkt) {
            Ok(h) => h,
            Err(_) => {
                self.reject("malformed");
                return None;
            }
        };
        if ip.protocol != IPPROTO_VRRP || ip.src == self.primary {
            return None;
        }
        let payload = &pkt[ip.header_len..ip.total_len];
        let (advert, _kind) = match parse(payload, ip.src, ip.dst) {
            Ok(x) => x,
            Err(PacketError::Checksum { .. }) => {
                self.reject("checksum");
                return None;
            }
            Err(e) => {
                debug!(instance = %self.cfg.name, src = %ip.src, error = %e, "malformed advert");
                self.reject("malformed");
                return None;
            }
        };
        if advert.vrid != self.cfg.vrid {
            return None;
        }
        // RFC 5798 5.1.1.3: a packet that was routed (TTL < 255) may come from off-link.
        if ip.ttl != 255 {
            self.reject("ttl");
            return None;
        }
        if advert.version != self.cfg.version {
            self.reject("version");
            return None;
        }
        if advert.version == Version::V2 && advert.interval_cs != self.cfg.interval_cs {
            // RFC 3768 7.1: v2 routers must agree on the interval.
            self.reject("interval");
            return None;
        }
        if let Some(auth) = &mut self.auth
            && let Err(r) = auth.verify(&advert, ip.src, ip.dst)
        {
            warn!(instance = %self.cfg.name, src = %ip.src, reason = r.as_str(), priority = advert.priority, "rejected an unauthenticated advert");
            self.reject(r.as_str());
            return None;
        }
        self.sh
            .metrics
            .adverts_received
            .get_or_create(&self.label())
            .inc();
        self.st.adverts_received += 1;
        Some(Event::Advert {
            from: ip.src,
            priority: advert.priority,
            interval_cs: advert.interval_cs,
        })
    }

    fn send_advert(&mut self, priority: u8) {
        let mut advert = Advert {
            version: self.cfg.version,
            vrid: self.cfg.vrid,
            priority,
            interval_cs: self.cfg.interval_cs,
            addrs: self.cfg.addresses.iter().map(|(a, _)| *a).collect(),
            v2_auth_type: 0,
            auth: None,
        };
        let dsts: Vec<Ipv4Addr> = if self.cfg.unicast_peers.is_empty() {
            vec![VRRP_GROUP]
        } else {
            self.cfg.unicast_peers.clone()
        };
        for dst in dsts {
            if let Some(a) = &mut self.auth {
                a.sign(&mut advert, self.primary, dst);
            }
            let bytes = advert.encode(self.primary, dst, self.cfg.checksum);
            match self.sock.send(&bytes, dst) {
                Ok(_) => {
                    self.sh
                        .metrics
                        .adverts_sent
                        .get_or_create(&self.label())
                        .inc();
                    self.st.adverts_sent += 1;
                }
                // No carrier and the like: the interface tracker handles it.
                Err(e) => debug!(instance = %self.cfg.name, %dst, error = %e, "advert not sent"),
            }
        }
        if priority > 0
            && self.machine.state() == State::Master
            && let Some(g) = &self.sh.guard
        {
            g.beat(self.id);
        }
    }

    async fn add_addresses(&mut self) {
        // Tell the guard first: if we die between the two steps, it still cleans up.
        if let Some(g) = &self.sh.guard {
            g.hold(
                self.id,
                self.link.index,
                self.cfg.watchdog_timeout,
                &self.cfg.addresses,
            );
        }
        self.holding = true;
        for (a, p) in &self.cfg.addresses {
            if let Err(e) = self.sh.nl.add(self.link.index, *a, *p, self.sh.lease).await {
                error!(instance = %self.cfg.name, addr = %a, error = %e, "cannot add the virtual address");
            }
        }
        self.last_lease_refresh = Instant::now();
        self.record(true);
    }

    async fn remove_addresses(&mut self) {
        for (a, p) in &self.cfg.addresses {
            if let Err(e) = self.sh.nl.remove(self.link.index, *a, *p).await {
                error!(instance = %self.cfg.name, addr = %a, error = %e, "cannot remove the virtual address");
            }
        }
        self.holding = false;
        if let Some(g) = &self.sh.guard {
            g.release(self.id);
        }
        self.record(false);
    }

    /// Record (or forget) the addresses we hold, for leftover cleanup after a crash.
    fn record(&self, holding: bool) {
        let path = record_path(&self.sh.state_dir, &self.cfg.name);
        let r = if holding {
            std::fs::create_dir_all(&self.sh.state_dir).and_then(|()| {
                let body: String = self
                    .cfg
                    .addresses
                    .iter()
                    .map(|(a, p)| format!("{} {a}/{p}\n", self.cfg.interface))
                    .collect();
                std::fs::write(&path, body)
            })
        } else {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                r => r,
            }
        };
        if let Err(e) = r {
            debug!(path = %path.display(), error = %e, "cannot update the address record");
        }
    }

    fn send_garp(&mut self) {
        let Some(arp) = self.arp.clone() else {
            return;
        };
        if self.cfg.garp_count == 0 {
            return;
        }
        self.last_garp = Some(Instant::now());
        let frames: Vec<Vec<u8>> = self
            .cfg
            .addresses
            .iter()
            .map(|(a, _)| arp_request(self.link.mac, *a, *a))
            .collect();
        let count = self.cfg.garp_count;
        let interval = self.cfg.garp_interval;
        tokio::spawn(async move {
            for k in 0..count {
                if k > 0 {
                    tokio::time::sleep(interval).await;
                }
                for f in &frames {
                    let _ = arp.send(f);
                }
            }
        });
    }

    fn start_claim(&mut self, id: u64) {
        let now = Instant::now();
        self.claim_preempting = self.machine.preempting(now);
        debug!(instance = %self.cfg.name, id, preempting = self.claim_preempting, "claim checks started");
        self.claim_started = Some(now);
        if let Some(arp) = &self.arp
            && self.cfg.arp_probe.is_some()
        {
            for (a, _) in &self.cfg.addresses {
                let _ = arp.send(&arp_request(self.link.mac, Ipv4Addr::UNSPECIFIED, *a));
            }
        }
        let wait = self.cfg.arp_probe.unwrap_or(Duration::ZERO);
        let witnesses = self.cfg.witness.clone();
        let timeout = self.cfg.witness_timeout;
        let vrid = self.cfg.vrid;
        let me = self.primary;
        let prio = self.machine.priority();
        let preempt = self.cfg.preempt;
        let fallback = self.machine.master_down();
        let tx = self.claim_tx.clone();
        tokio::spawn(async move {
            let probe = tokio::time::sleep(wait);
            let verdict = async {
                if witnesses.is_empty() {
                    Ok(())
                } else {
                    let answers = witness::query(&witnesses, vrid, timeout).await;
                    witness::decide(&answers, me, prio, preempt, fallback)
                }
            };
            let ((), verdict) = tokio::join!(probe, verdict);
            let _ = tx.send((id, verdict));
        });
    }

    /// Combine the witness verdict with what the ARP probe heard.
    fn arp_verdict(&mut self, verdict: Result<(), Duration>) -> Result<(), Duration> {
        verdict?;
        if self.claim_preempting {
            // The lower-priority master's host answers for the address until it hears our
            // advert and steps down: expected, not a conflict.
            return Ok(());
        }
        let (Some(started), Some(last)) = (self.claim_started, self.conflict_last) else {
            return Ok(());
        };
        if last < started {
            return Ok(());
        }
        // Someone answers for the address. Wait (it may be a master we cannot hear), but not
        // forever: a host that keeps the address without advertising is broken, and after two
        // Master_Down_Intervals we take the address over (GARP moves the clients).
        let grace = self.machine.master_down() * 2;
        let first = self.conflict_first.unwrap_or(last);
        if last.duration_since(first) >= grace {
            warn!(instance = %self.cfg.name, "another host keeps answering for the virtual address without advertising; taking it over");
            return Ok(());
        }
        info!(instance = %self.cfg.name, "ARP probe: the virtual address is in use elsewhere; not claiming yet");
        Err(self.machine.advert_interval())
    }

    fn on_conflict(&mut self, addr: Ipv4Addr, mac: [u8; 6]) {
        let now = Instant::now();
        // A backup hears the master's own GARPs: only a claim in progress or a master cares.
        if self.machine.state() != State::Master && self.claim_started.is_none() {
            return;
        }
        if self
            .conflict_last
            .is_none_or(|l| now.duration_since(l) > CONFLICT_QUIET)
        {
            self.conflict_first = Some(now);
        }
        self.conflict_last = Some(now);
        self.sh
            .metrics
            .arp_conflicts
            .get_or_create(&self.label())
            .inc();
        self.st.arp_conflicts += 1;
        let mac_s = mac.map(|b| format!("{b:02x}")).join(":");
        if self.machine.state() == State::Master {
            warn!(instance = %self.cfg.name, %addr, mac = %mac_s, "ARP conflict: another host claims our virtual address; re-announcing");
            // Win the clients back, at most every 100 ms.
            if self
                .last_garp
                .is_none_or(|t| now.duration_since(t) > Duration::from_millis(100))
            {
                self.send_garp();
            }
        } else {
            debug!(instance = %self.cfg.name, %addr, mac = %mac_s, "ARP: the virtual address answers elsewhere");
        }
    }

    fn witness_check(&mut self) {
        if self.machine.state() != State::Master || self.witness_inflight {
            return;
        }
        self.witness_inflight = true;
        let witnesses = self.cfg.witness.clone();
        let timeout = self.cfg.witness_timeout;
        let vrid = self.cfg.vrid;
        let me = self.primary;
        let prio = self.machine.priority();
        let tx = self.witness_tx.clone();
        tokio::spawn(async move {
            let answers = witness::query(&witnesses, vrid, timeout).await;
            let _ = tx.send(witness::master_check(&answers, me, prio));
        });
    }

    async fn housekeeping(&mut self) {
        let now = Instant::now();
        if self.machine.state() == State::Master {
            if let Some(lease) = self.sh.lease
                && now.duration_since(self.last_lease_refresh) >= lease / 3
            {
                self.last_lease_refresh = now;
                for (a, p) in &self.cfg.addresses {
                    if let Err(e) = self.sh.nl.add(self.link.index, *a, *p, Some(lease)).await {
                        warn!(instance = %self.cfg.name, addr = %a, error = %e, "cannot refresh the address lease");
                    }
                }
            }
            if let Some(refresh) = self.cfg.garp_refresh
                && self
                    .last_garp
                    .is_none_or(|t| now.duration_since(t) >= refresh)
            {
                self.send_garp();
            }
            if let Some(last) = self.conflict_last
                && now.duration_since(last) > CONFLICT_QUIET
            {
                info!(instance = %self.cfg.name, "ARP conflict over; re-announcing the virtual addresses");
                self.conflict_last = None;
                self.conflict_first = None;
                self.send_garp();
            }
        } else if self
            .conflict_last
            .is_some_and(|l| now.duration_since(l) > CONFLICT_QUIET * 10)
        {
            self.conflict_last = None;
            self.conflict_first = None;
        }
        self.publish();
    }

    fn publish(&mut self) {
        self.st.state = self.machine.state();
        self.st.priority = self.machine.priority();
        self.st.master = self.machine.master().map(|m| m.to_string());
        self.st.holding = self.holding;
        self.sh
            .status
            .write()
            .insert(self.cfg.name.clone(), self.st.clone());
    }

    async fn perform(&mut self, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::SendAdvert { priority } => self.send_advert(priority),
                Action::AddAddresses => self.add_addresses().await,
                Action::RemoveAddresses => self.remove_addresses().await,
                Action::SendGarp => self.send_garp(),
                Action::AskClaim(id) => self.start_claim(id),
                Action::Transition { from, to, reason } => self.transition(from, to, reason),
            }
        }
        self.update_master_metric();
        self.publish();
    }

    fn update_master_metric(&mut self) {
        let now = self.machine.master().map(|m| m.to_string());
        if now != self.last_master_label {
            if let Some(old) = self.last_master_label.take() {
                self.sh.metrics.master.remove(&MasterLabel {
                    instance: self.cfg.name.clone(),
                    address: old,
                });
            }
            if let Some(n) = &now {
                self.sh
                    .metrics
                    .master
                    .get_or_create(&MasterLabel {
                        instance: self.cfg.name.clone(),
                        address: n.clone(),
                    })
                    .set(1);
            }
            self.last_master_label = now;
        }
    }

    fn transition(&mut self, from: State, to: State, reason: Reason) {
        info!(instance = %self.cfg.name, from = from.as_str(), to = to.as_str(), ?reason, priority = self.machine.priority(), "state change");
        self.sh.metrics.set_state(&self.cfg.name, to);
        self.sh
            .metrics
            .transitions
            .get_or_create(&crate::metrics::StateLabel {
                instance: self.cfg.name.clone(),
                state: to.as_str().to_string(),
            })
            .inc();
        self.st.transitions += 1;
        self.st.last_reason = Some(reason);
        if let Some(tx) = &self.notify_tx {
            let _ = tx.send((from, to, self.machine.priority()));
        }
    }
}

fn record_path(dir: &std::path::Path, name: &str) -> PathBuf {
    dir.join(format!("vip-{name}.addrs"))
}

/// Remove addresses a previous run left behind: configured virtual addresses carrying our
/// tag, and every tagged address listed in our record file.
async fn cleanup_leftovers(sh: &Shared, cfg: &InstanceConfig, link: &Link) {
    let present = match sh.nl.addrs(link.index).await {
        Ok(a) => a,
        Err(e) => {
            warn!(instance = %cfg.name, error = %e, "cannot list addresses for leftover cleanup");
            return;
        }
    };
    let recorded: Vec<Ipv4Addr> = std::fs::read_to_string(record_path(&sh.state_dir, &cfg.name))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (ifn, a) = l.split_once(' ')?;
            (ifn == cfg.interface).then_some(())?;
            a.split('/').next()?.parse().ok()
        })
        .collect();
    for a in present {
        let configured = cfg.addresses.iter().any(|(v, _)| *v == a.addr);
        let ours = a.proto == Some(ADDR_PROTO);
        if ours && (configured || recorded.contains(&a.addr)) {
            match sh.nl.remove(link.index, a.addr, a.prefix).await {
                Ok(_) => {
                    warn!(instance = %cfg.name, addr = %a.addr, "removed a virtual address left by a previous run")
                }
                Err(e) => {
                    error!(instance = %cfg.name, addr = %a.addr, error = %e, "cannot remove a leftover address")
                }
            }
        } else if configured {
            warn!(instance = %cfg.name, addr = %a.addr, "the virtual address is already on the interface and was not added by hastack; leaving it alone (remove it, or this host answers for it as a backup)");
        }
    }
}

async fn arp_listener(
    arp: Arc<ArpSocket>,
    vips: Vec<Ipv4Addr>,
    mac: [u8; 6],
    tx: mpsc::UnboundedSender<(Ipv4Addr, [u8; 6])>,
    shutdown: CancellationToken,
) {
    let mut buf = [0u8; 1600];
    loop {
        let n = tokio::select! {
            () = shutdown.cancelled() => return,
            r = arp.recv(&mut buf) => match r {
                Ok(n) => n,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        if let Some(p) = parse_arp(&buf[..n])
            && p.sender_mac != mac
            && vips.contains(&p.sender_ip)
            && tx.send((p.sender_ip, p.sender_mac)).is_err()
        {
            return;
        }
    }
}

/// Notify hooks run one at a time, in order, each bounded by `notify_timeout`.
fn spawn_notify(cfg: &InstanceConfig) -> mpsc::UnboundedSender<(State, State, u8)> {
    let (tx, mut rx) = mpsc::unbounded_channel::<(State, State, u8)>();
    let argv = cfg.notify.clone();
    let timeout = cfg.notify_timeout;
    let name = cfg.name.clone();
    let addrs: Vec<String> = cfg
        .addresses
        .iter()
        .map(|(a, p)| format!("{a}/{p}"))
        .collect();
    tokio::spawn(async move {
        while let Some((from, to, prio)) = rx.recv().await {
            let Some((prog, args)) = argv.split_first() else {
                return;
            };
            let child = tokio::process::Command::new(prog)
                .args(args)
                .arg(&name)
                .arg(to.as_str())
                .arg(prio.to_string())
                .env("HASTACK_VIP_INSTANCE", &name)
                .env("HASTACK_VIP_STATE", to.as_str())
                .env("HASTACK_VIP_PREVIOUS", from.as_str())
                .env("HASTACK_VIP_PRIORITY", prio.to_string())
                .env("HASTACK_VIP_ADDRESSES", addrs.join(" "))
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn();
            match child {
                Ok(mut c) => match tokio::time::timeout(timeout, c.wait()).await {
                    Ok(Ok(s)) if s.success() => {}
                    Ok(Ok(s)) => {
                        warn!(instance = %name, state = to.as_str(), status = %s, "notify hook failed")
                    }
                    Ok(Err(e)) => warn!(instance = %name, error = %e, "notify hook wait failed"),
                    Err(_) => {
                        let _ = c.kill().await;
                        warn!(instance = %name, timeout_ms = timeout.as_millis(), "notify hook timed out and was killed");
                    }
                },
                Err(e) => {
                    warn!(instance = %name, program = %prog, error = %e, "cannot run the notify hook")
                }
            }
        }
    });
    tx
}

#[cfg(test)]
mod tests {
    use super::*;
    use hastack_config::Source;

    #[tokio::test]
    async fn notify_hooks_run_in_order_and_are_killed_on_timeout() {
        let dir = std::env::temp_dir().join(format!("hastack-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        // "master" sleeps past the timeout (killed before it writes); others append at once.
        let script = format!(
            "if [ \"$2\" = master ]; then sleep 5; fi; echo \"$1 $2 $3 $HASTACK_VIP_PREVIOUS\" >> {}",
            out.display()
        );
        let text = format!(
            "[vip]\n[[vip.instance]]\nname = \"web\"\ninterface = \"eth0\"\nvrid = 1\naddresses = [\"10.0.0.1\"]\nnotify = [\"sh\", \"-c\", {script:?}, \"notify\"]\nnotify_timeout = \"200ms\"\n"
        );
        let (cfg, _) = crate::config::load(&Source::parse("t.toml", text).unwrap()).unwrap();
        let tx = spawn_notify(&cfg.instances[0]);
        let t0 = Instant::now();
        tx.send((State::Init, State::Backup, 100)).unwrap();
        tx.send((State::Backup, State::Master, 100)).unwrap();
        tx.send((State::Master, State::Fault, 100)).unwrap();
        let mut got = String::new();
        while t0.elapsed() < Duration::from_secs(5) {
            got = std::fs::read_to_string(&out).unwrap_or_default();
            if got.lines().count() >= 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(got, "web backup 100 init\nweb fault 100 master\n");
        // The killed hook cost its timeout, not its 5 s.
        assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    }
}

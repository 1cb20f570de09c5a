//! The `[vip]` section: serde types, validation into plain runtime structs, and the warnings
//! `hastack check` prints. Every key is documented in `docs/vip.md`.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hastack_config::{Diagnostics, Dur, KeyPath, Source};
use serde::Deserialize;

use crate::packet::{ChecksumKind, Version};

/// `[vip]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VipToml {
    /// Admin listener (`GET /status`, `GET /metrics`).
    #[serde(default)]
    pub admin: Option<String>,
    /// Where added addresses are recorded (leftover cleanup after a crash).
    #[serde(default)]
    pub state_dir: Option<String>,
    /// Run the protocol at real-time priority (SCHED_RR).
    #[serde(default)]
    pub realtime: Option<bool>,
    /// Run the guard process (withdraws the addresses when the daemon dies or freezes).
    #[serde(default)]
    pub guard: Option<bool>,
    /// Kernel-side lifetime of added addresses, refreshed while master ("0s" = off).
    #[serde(default)]
    pub address_lease: Option<Dur>,
    /// Act as a witness: answer "who is master" queries on this UDP address.
    #[serde(default)]
    pub witness_listen: Option<String>,
    /// The interface on which the witness listens to adverts.
    #[serde(default)]
    pub witness_interface: Option<String>,
    /// VRRP instances.
    #[serde(default, rename = "instance")]
    pub instances: Vec<InstanceToml>,
}

/// `[[vip.instance]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceToml {
    pub name: String,
    pub interface: String,
    pub vrid: i64,
    #[serde(default)]
    pub priority: Option<i64>,
    #[serde(default)]
    pub advert_interval: Option<Dur>,
    #[serde(default)]
    pub version: Option<i64>,
    pub addresses: Vec<String>,
    #[serde(default)]
    pub preempt: Option<bool>,
    #[serde(default)]
    pub preempt_delay: Option<Dur>,
    #[serde(default)]
    pub unicast_peers: Vec<String>,
    #[serde(default)]
    pub checksum: Option<String>,
    #[serde(default)]
    pub garp_count: Option<i64>,
    #[serde(default)]
    pub garp_interval: Option<Dur>,
    #[serde(default)]
    pub garp_refresh: Option<Dur>,
    #[serde(default)]
    pub arp_probe: Option<bool>,
    #[serde(default)]
    pub arp_probe_wait: Option<Dur>,
    #[serde(default)]
    pub watchdog_timeout: Option<Dur>,
    #[serde(default)]
    pub notify: Vec<String>,
    #[serde(default)]
    pub notify_timeout: Option<Dur>,
    #[serde(default)]
    pub witness: Vec<String>,
    #[serde(default)]
    pub witness_timeout: Option<Dur>,
    #[serde(default)]
    pub peer_priorities: Vec<i64>,
    #[serde(default)]
    pub auth: Option<AuthToml>,
    #[serde(default)]
    pub track: Vec<TrackToml>,
}

/// `[vip.instance.auth]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthToml {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    #[serde(default)]
    pub max_clock_skew: Option<Dur>,
}

/// `[[vip.instance.track]]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrackToml {
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub interface: Option<String>,
    #[serde(default)]
    pub weight: Option<i64>,
    #[serde(default)]
    pub interval: Option<Dur>,
    #[serde(default)]
    pub timeout: Option<Dur>,
    #[serde(default)]
    pub rise: Option<i64>,
    #[serde(default)]
    pub fall: Option<i64>,
}

/// The validated `[vip]` section.
#[derive(Clone, Debug)]
pub struct Config {
    /// Admin listener.
    pub admin: Option<SocketAddr>,
    /// Record directory.
    pub state_dir: PathBuf,
    /// SCHED_RR for the protocol.
    pub realtime: bool,
    /// Run the guard process.
    pub guard: bool,
    /// Kernel lifetime of added addresses (`None` = forever).
    pub address_lease: Option<Duration>,
    /// Witness service.
    pub witness_server: Option<WitnessServer>,
    /// Instances.
    pub instances: Vec<InstanceConfig>,
}

/// A witness service.
#[derive(Clone, Debug)]
pub struct WitnessServer {
    /// UDP address answering queries.
    pub listen: SocketAddr,
    /// Interface whose adverts it watches.
    pub interface: String,
}

/// One validated instance.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    pub vrid: u8,
    pub priority: u8,
    pub interval_cs: u16,
    pub version: Version,
    /// (address, prefix length).
    pub addresses: Vec<(Ipv4Addr, u8)>,
    pub preempt: bool,
    pub preempt_delay: Duration,
    pub unicast_peers: Vec<Ipv4Addr>,
    pub checksum: ChecksumKind,
    pub garp_count: u32,
    pub garp_interval: Duration,
    pub garp_refresh: Option<Duration>,
    pub arp_probe: Option<Duration>,
    pub watchdog_timeout: Duration,
    pub notify: Vec<String>,
    pub notify_timeout: Duration,
    pub witness: Vec<SocketAddr>,
    pub witness_timeout: Duration,
    pub auth: Option<AuthConfig>,
    pub tracks: Vec<TrackConfig>,
}

impl InstanceConfig {
    /// The advertisement interval.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_cs) * 10)
    }
}

/// Advert authentication.
#[derive(Clone)]
pub struct AuthConfig {
    /// The HMAC key.
    pub key: Vec<u8>,
    /// Largest accepted distance between a sequence's timestamp and our clock.
    pub max_clock_skew: Duration,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("key", &"<redacted>")
            .field("max_clock_skew", &self.max_clock_skew)
            .finish()
    }
}

/// What a tracker checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackKind {
    /// A TCP connect succeeds.
    Tcp(SocketAddr),
    /// `GET path` answers 2xx.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// Host header.
        host: String,
        /// Path and query.
        path: String,
    },
    /// The command exits 0.
    Command(Vec<String>),
    /// The interface is up (carrier).
    Interface(String),
}

/// One tracker.
#[derive(Clone, Debug)]
pub struct TrackConfig {
    pub name: String,
    pub kind: TrackKind,
    /// Priority subtracted while failed; 0 = fault.
    pub weight: u8,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
}

/// Default admin-less record directory.
pub const DEFAULT_STATE_DIR: &str = "/run/hastack";

/// Load and validate `[vip]`: the config plus warnings, or every error found.
pub fn load(src: &Source) -> Result<(Config, Diagnostics), Diagnostics> {
    let Some(t) = src.section::<VipToml>("vip")? else {
        let mut d = Diagnostics::new();
        d.error(src, &KeyPath::root(), "no [vip] section: nothing to run");
        return Err(d);
    };
    validate(src, t)
}

/// One line for `hastack check`.
pub fn summary(c: &Config) -> String {
    let mut parts: Vec<String> = c
        .instances
        .iter()
        .map(|i| {
            format!(
                "{} ({} vrid {} prio {} every {:?}, v{}, {} address(es){}{})",
                i.name,
                i.interface,
                i.vrid,
                i.priority,
                i.interval(),
                if i.version == Version::V3 { 3 } else { 2 },
                i.addresses.len(),
                if i.auth.is_some() { ", hmac" } else { "" },
                if i.witness.is_empty() {
                    ""
                } else {
                    ", witness"
                },
            )
        })
        .collect();
    if let Some(w) = &c.witness_server {
        parts.push(format!("witness on {} ({})", w.listen, w.interface));
    }
    format!("vip: {}", parts.join("; "))
}

fn dur_or(d: Option<Dur>, default: Duration) -> Duration {
    d.map_or(default, |d| d.0)
}

/// Parse `a.b.c.d/len` or `a.b.c.d` (= /32).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, l) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: Ipv4Addr = a.trim().parse().map_err(|_| {
        format!("{s:?} is not an IPv4 address: write it like \"10.0.0.50/24\" (IPv6 virtual addresses are not supported yet)")
    })?;
    let len = match l {
        Some(l) => l
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= 32)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0..=32"))?,
        None => 32,
    };
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() || addr.is_loopback() {
        return Err(format!(
            "{s:?} cannot be a virtual address (unspecified, multicast, broadcast or loopback)"
        ));
    }
    Ok((addr, len))
}

fn validate(src: &Source, t: VipToml) -> Result<(Config, Diagnostics), Diagnostics> {
    let mut errs = Diagnostics::new();
    let mut warns = Diagnostics::new();
    let root = KeyPath::root().key("vip");
    let admin = t
        .admin
        .as_deref()
        .and_then(|a| match a.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                errs.error(
                    src,
                    &root.key("admin"),
                    format!("{a:?} is not an address: write it like \"127.0.0.1:9400\""),
                );
                None
            }
        });
    let witness_server = match (&t.witness_listen, &t.witness_interface) {
        (Some(l), Some(i)) => match l.parse::<SocketAddr>() {
            Ok(listen) => Some(WitnessServer {
                listen,
                interface: i.clone(),
            }),
            Err(_) => {
                errs.error(
                    src,
                    &root.key("witness_listen"),
                    format!("{l:?} is not an address: write it like \"10.0.0.9:5599\""),
                );
                None
            }
        },
        (Some(_), None) => {
            errs.error(
                src,
                &root.key("witness_listen"),
                "witness_listen needs witness_interface (the interface on which to hear adverts)",
            );
            None
        }
        (None, Some(_)) => {
            errs.error(
                src,
                &root.key("witness_interface"),
                "witness_interface is only meaningful with witness_listen",
            );
            None
        }
        (None, None) => None,
    };
    if t.instances.is_empty() && witness_server.is_none() {
        errs.error(
            src,
            &root,
            "[vip] has no [[vip.instance]] and is not a witness: nothing to run",
        );
    }
    let lease = t.address_lease.map_or(Some(Duration::from_secs(3)), |d| {
        (!d.0.is_zero()).then_some(d.0)
    });
    if let Some(l) = lease
        && (l < Duration::from_secs(2) || l.subsec_nanos() != 0)
    {
        errs.error(
            src,
            &root.key("address_lease"),
            format!(
                "address_lease {l:?} must be whole seconds, at least \"2s\" (the kernel counts address lifetimes in seconds), or \"0s\" to disable it"
            ),
        );
    }
    let mut names = BTreeSet::new();
    let mut vrids = BTreeSet::new();
    let mut instances = Vec::new();
    for (idx, it) in t.instances.into_iter().enumerate() {
        let p = root.key("instance").index(idx);
        if let Some(i) = validate_instance(src, &p, it, &mut errs, &mut warns) {
            if !names.insert(i.name.clone()) {
                errs.error(
                    src,
                    &p.key("name"),
                    format!("instance name {:?} is used twice", i.name),
                );
            }
            if !vrids.insert((i.interface.clone(), i.vrid)) {
                errs.error(
                    src,
                    &p.key("vrid"),
                    format!(
                        "vrid {} is used twice on {}: each instance on an interface needs its own VRID",
                        i.vrid, i.interface
                    ),
                );
            }
            instances.push(i);
        }
    }
    let config = Config {
        admin,
        state_dir: PathBuf::from(t.state_dir.as_deref().unwrap_or(DEFAULT_STATE_DIR)),
        realtime: t.realtime.unwrap_or(true),
        guard: t.guard.unwrap_or(true),
        address_lease: lease,
        witness_server,
        instances,
    };
    if errs.has_errors() {
        errs.extend(warns);
        errs.sort();
        Err(errs)
    } else {
        Ok((config, warns))
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "one flat list of checks, in key order, reads best"
)]
fn validate_instance(
    src: &Source,
    p: &KeyPath,
    it: InstanceToml,
    errs: &mut Diagnostics,
    warns: &mut Diagnostics,
) -> Option<InstanceConfig> {
    let before = errs.error_count();
    if it.name.trim().is_empty() || it.name.contains(char::is_whitespace) {
        errs.error(
            src,
            &p.key("name"),
            "name must be non-empty without spaces (it labels metrics and notify calls)",
        );
    }
    if it.interface.is_empty() || it.interface.len() > 15 {
        errs.error(
            src,
            &p.key("interface"),
            "interface must be a network interface name (1-15 characters)",
        );
    }
    let vrid = u8::try_from(it.vrid).ok().filter(|v| *v >= 1);
    if vrid.is_none() {
        errs.error(
            src,
            &p.key("vrid"),
            format!("vrid {} is out of range: allowed 1..=255", it.vrid),
        );
    }
    let priority = it.priority.unwrap_or(100);
    let prio = u8::try_from(priority).ok().filter(|v| *v >= 1);
    if prio.is_none() {
        errs.error(
            src,
            &p.key("priority"),
            format!(
                "priority {priority} is out of range: allowed 1..=254, or 255 for the address owner (0 is reserved for resigning)"
            ),
        );
    }
    let version = match it.version.unwrap_or(3) {
        3 => Version::V3,
        2 => Version::V2,
        v => {
            errs.error(
                src,
                &p.key("version"),
                format!("VRRP version {v} is not supported: use 3 (default) or 2"),
            );
            Version::V3
        }
    };
    let interval = dur_or(it.advert_interval, Duration::from_secs(1));
    let ms = interval.as_millis();
    let interval_cs = match version {
        Version::V3 => {
            if interval.subsec_nanos() % 10_000_000 != 0 || !(10..=40_950).contains(&ms) {
                errs.error(
                    src,
                    &p.key("advert_interval"),
                    format!(
                        "advert_interval {interval:?} is not allowed: VRRPv3 counts centiseconds, so use a multiple of 10ms from \"10ms\" to \"40s 950ms\""
                    ),
                );
            }
            u16::try_from(ms / 10).unwrap_or(100)
        }
        Version::V2 => {
            if interval.subsec_nanos() != 0 || !(1..=255).contains(&interval.as_secs()) {
                errs.error(
                    src,
                    &p.key("advert_interval"),
                    format!(
                        "advert_interval {interval:?} is not allowed with version 2: whole seconds from \"1s\" to \"255s\" (use version 3 for sub-second adverts)"
                    ),
                );
            }
            u16::try_from(interval.as_secs().saturating_mul(100)).unwrap_or(100)
        }
    };
    let mut addresses = Vec::new();
    if it.addresses.is_empty() {
        errs.error(
            src,
            &p.key("addresses"),
            "addresses is empty: list at least one virtual address, like [\"10.0.0.50/24\"]",
        );
    }
    if it.addresses.len() > 20 {
        errs.error(
            src,
            &p.key("addresses"),
            "at most 20 addresses fit in one advert; split them over several instances",
        );
    }
    let mut seen = BTreeSet::new();
    for (k, a) in it.addresses.iter().enumerate() {
        match parse_cidr(a) {
            Ok(x) => {
                if !seen.insert(x.0) {
                    errs.error(
                        src,
                        &p.key("addresses").index(k),
                        format!("{} is listed twice", x.0),
                    );
                }
                addresses.push(x);
            }
            Err(e) => errs.error(src, &p.key("addresses").index(k), e),
        }
    }
    let mut unicast_peers = Vec::new();
    for (k, a) in it.unicast_peers.iter().enumerate() {
        match a.parse::<Ipv4Addr>() {
            Ok(x) if !x.is_multicast() && !x.is_unspecified() => unicast_peers.push(x),
            _ => errs.error(
                src,
                &p.key("unicast_peers").index(k),
                format!("{a:?} is not a unicast IPv4 address of a peer, like \"10.0.0.2\""),
            ),
        }
    }
    let checksum = match (it.checksum.as_deref(), version) {
        (None, Version::V3) | (Some("pseudo-header"), Version::V3) => ChecksumKind::PseudoHeader,
        (None | Some("v2-style"), _) => ChecksumKind::V2Style,
        (Some("pseudo-header"), Version::V2) => {
            errs.error(
                src,
                &p.key("checksum"),
                "VRRPv2 has no pseudo-header checksum: remove the key or use \"v2-style\"",
            );
            ChecksumKind::V2Style
        }
        (Some(other), _) => {
            errs.error(
                src,
                &p.key("checksum"),
                format!("checksum {other:?} is unknown: use \"pseudo-header\" (RFC 5798, default) or \"v2-style\""),
            );
            ChecksumKind::PseudoHeader
        }
    };
    let garp_count = match u32::try_from(it.garp_count.unwrap_or(3)) {
        Ok(n) if n <= 100 => n,
        _ => {
            errs.error(src, &p.key("garp_count"), "garp_count must be 0..=100");
            3
        }
    };
    let garp_interval = dur_or(it.garp_interval, Duration::from_millis(100));
    let garp_refresh = it.garp_refresh.map(|d| d.0).filter(|d| !d.is_zero());
    let arp_probe = if it.arp_probe.unwrap_or(true) {
        let wait = it.arp_probe_wait.map_or_else(
            || (interval / 2).clamp(Duration::from_millis(5), Duration::from_millis(50)),
            |d| d.0,
        );
        if wait > Duration::from_secs(5) || wait.is_zero() {
            errs.error(
                src,
                &p.key("arp_probe_wait"),
                "arp_probe_wait must be between \"1ms\" and \"5s\" (it delays every takeover)",
            );
        }
        Some(wait)
    } else {
        None
    };
    let watchdog_timeout = it
        .watchdog_timeout
        .map_or(interval.saturating_mul(5) / 2, |d| d.0);
    let down = crate::state::master_down_interval(version, 254, interval_cs);
    if watchdog_timeout >= down {
        warns.warning(
            src,
            &p.key("watchdog_timeout"),
            format!(
                "watchdog_timeout {watchdog_timeout:?} is not shorter than the backups' Master_Down_Interval (at least {down:?}): a frozen master may still hold the address when a backup takes over"
            ),
        );
    }
    if watchdog_timeout < interval + Duration::from_millis(5) {
        errs.error(
            src,
            &p.key("watchdog_timeout"),
            format!(
                "watchdog_timeout {watchdog_timeout:?} must exceed one advert interval ({interval:?}) by at least 5ms, or a healthy master fences itself"
            ),
        );
    }
    if it.notify.first().is_some_and(String::is_empty) {
        errs.error(
            src,
            &p.key("notify"),
            "notify is a program and its arguments, like [\"/usr/local/bin/vip-changed\"]",
        );
    }
    let notify_timeout = dur_or(it.notify_timeout, Duration::from_secs(10));
    let mut witness = Vec::new();
    for (k, w) in it.witness.iter().enumerate() {
        match w.parse::<SocketAddr>() {
            Ok(a) => witness.push(a),
            Err(_) => errs.error(
                src,
                &p.key("witness").index(k),
                format!("{w:?} is not a witness address, like \"10.0.0.9:5599\""),
            ),
        }
    }
    let witness_timeout = it.witness_timeout.map_or_else(
        || interval.clamp(Duration::from_millis(50), Duration::from_secs(1)),
        |d| d.0,
    );
    if witness_timeout < Duration::from_millis(1) || witness_timeout > Duration::from_secs(10) {
        errs.error(
            src,
            &p.key("witness_timeout"),
            "witness_timeout must be between \"1ms\" and \"10s\"",
        );
    }
    if notify_timeout.is_zero() {
        errs.error(
            src,
            &p.key("notify_timeout"),
            "notify_timeout must be positive (a hook still running then is killed)",
        );
    }
    let auth = it.auth.and_then(|a| {
        let ap = p.key("auth");
        let key = match (a.key, a.key_file) {
            (Some(k), None) => Some(k.into_bytes()),
            (None, Some(f)) => match std::fs::read(&f) {
                Ok(k) => Some(trim_newline(k)),
                Err(e) => {
                    errs.error(src, &ap.key("key_file"), format!("cannot read {f}: {e}"));
                    None
                }
            },
            _ => {
                errs.error(
                    src,
                    &ap,
                    "auth needs exactly one of key or key_file",
                );
                None
            }
        }?;
        if key.len() < 16 {
            errs.error(
                src,
                &ap,
                "the auth key is shorter than 16 bytes: use a long random secret (e.g. `openssl rand -hex 32`)",
            );
        }
        Some(AuthConfig {
            key,
            max_clock_skew: dur_or(a.max_clock_skew, Duration::from_secs(30)),
        })
    });
    let mut tracks = Vec::new();
    let prio_v = prio.unwrap_or(100);
    let peer_max = it
        .peer_priorities
        .iter()
        .filter_map(|x| u8::try_from(*x).ok())
        .max();
    for (k, tr) in it.track.into_iter().enumerate() {
        let tp = p.key("track").index(k);
        if let Some(tc) = validate_track(src, &tp, tr, errs) {
            if tc.weight > 0 {
                if prio_v == 255 {
                    warns.warning(
                        src,
                        &tp.key("weight"),
                        format!(
                            "weight {} can never cause a failover: this instance is the address owner (priority 255), which ignores tracker weights; use weight 0 (fault) or a priority below 255",
                            tc.weight
                        ),
                    );
                } else if let Some(peer) = peer_max {
                    let lowered = prio_v.saturating_sub(tc.weight).max(1);
                    if lowered > peer {
                        warns.warning(
                            src,
                            &tp.key("weight"),
                            format!(
                                "weight {} can never cause a failover: priority {prio_v} - {} = {lowered} is still above the highest peer priority {peer}; use a weight above {} or weight 0 (fault)",
                                tc.weight,
                                tc.weight,
                                prio_v.saturating_sub(peer)
                            ),
                        );
                    }
                } else if prio_v <= 1 {
                    warns.warning(
                        src,
                        &tp.key("weight"),
                        "this weight can never cause a failover: the priority is already the lowest (1)",
                    );
                }
            }
            tracks.push(tc);
        }
    }
    if prio_v == 255 && it.preempt == Some(false) {
        warns.warning(
            src,
            &p.key("preempt"),
            "an address owner (priority 255) always takes over: preempt = false has no effect",
        );
    }
    if errs.error_count() > before {
        return None;
    }
    Some(InstanceConfig {
        name: it.name,
        interface: it.interface,
        vrid: vrid.unwrap_or(1),
        priority: prio_v,
        interval_cs,
        version,
        addresses,
        preempt: it.preempt.unwrap_or(true),
        preempt_delay: dur_or(it.preempt_delay, Duration::ZERO),
        unicast_peers,
        checksum,
        garp_count,
        garp_interval,
        garp_refresh,
        arp_probe,
        watchdog_timeout,
        notify: it.notify,
        notify_timeout,
        witness,
        witness_timeout,
        auth,
        tracks,
    })
}

fn trim_newline(mut k: Vec<u8>) -> Vec<u8> {
    while k.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
        k.pop();
    }
    k
}

fn validate_track(
    src: &Source,
    p: &KeyPath,
    t: TrackToml,
    errs: &mut Diagnostics,
) -> Option<TrackConfig> {
    let before = errs.error_count();
    let kind = match t.kind.as_str() {
        "tcp" => match t.target.as_deref().map(str::parse::<SocketAddr>) {
            Some(Ok(a)) => Some(TrackKind::Tcp(a)),
            _ => {
                errs.error(
                    src,
                    &p.key("target"),
                    "a tcp tracker needs target = \"ip:port\", like \"127.0.0.1:80\"",
                );
                None
            }
        },
        "http" => match t.url.as_deref().map(parse_http_url) {
            Some(Ok(k)) => Some(k),
            Some(Err(e)) => {
                errs.error(src, &p.key("url"), e);
                None
            }
            None => {
                errs.error(
                    src,
                    &p.key("kind"),
                    "an http tracker needs url = \"http://ip:port/path\"",
                );
                None
            }
        },
        "command" => {
            if t.command.is_empty() || t.command[0].is_empty() {
                errs.error(
                    src,
                    &p.key("command"),
                    "a command tracker needs command = [\"program\", \"arg\", ...] (exit 0 = healthy)",
                );
                None
            } else {
                Some(TrackKind::Command(t.command.clone()))
            }
        }
        "interface" => match &t.interface {
            Some(i) if !i.is_empty() && i.len() <= 15 => Some(TrackKind::Interface(i.clone())),
            _ => {
                errs.error(
                    src,
                    &p.key("interface"),
                    "an interface tracker needs interface = \"eth1\"",
                );
                None
            }
        },
        other => {
            errs.error(
                src,
                &p.key("kind"),
                format!("tracker kind {other:?} is unknown: use \"tcp\", \"http\", \"command\" or \"interface\""),
            );
            None
        }
    };
    let weight = t.weight.unwrap_or(0);
    let weight = match u8::try_from(weight) {
        Ok(w) if w <= 254 => w,
        _ => {
            errs.error(
                src,
                &p.key("weight"),
                format!("weight {weight} is out of range: 0 (fault when failed) or 1..=254 (subtracted from the priority when failed)"),
            );
            0
        }
    };
    let interval = dur_or(t.interval, Duration::from_secs(1));
    let timeout = dur_or(t.timeout, interval.min(Duration::from_secs(1)));
    if interval < Duration::from_millis(10) {
        errs.error(
            src,
            &p.key("interval"),
            "interval must be at least \"10ms\"",
        );
    }
    if timeout.is_zero() || timeout > interval.max(Duration::from_millis(10)).saturating_mul(10) {
        errs.error(
            src,
            &p.key("timeout"),
            "timeout must be positive and at most 10 intervals",
        );
    }
    let count = |v: Option<i64>, key: &str, errs: &mut Diagnostics| -> u32 {
        match v.map(u32::try_from) {
            None => 1,
            Some(Ok(n)) if (1..=100).contains(&n) => n,
            _ => {
                errs.error(src, &p.key(key), format!("{key} must be 1..=100"));
                1
            }
        }
    };
    let rise = count(t.rise, "rise", errs);
    let fall = count(t.fall, "fall", errs);
    let kind = kind?;
    if errs.error_count() > before {
        return None;
    }
    let name = t.name.unwrap_or_else(|| match &kind {
        TrackKind::Tcp(a) => format!("tcp:{a}"),
        TrackKind::Http { addr, path, .. } => format!("http:{addr}{path}"),
        TrackKind::Command(c) => format!("command:{}", c[0]),
        TrackKind::Interface(i) => format!("interface:{i}"),
    });
    Some(TrackConfig {
        name,
        kind,
        weight,
        interval,
        timeout,
        rise,
        fall,
    })
}

fn parse_http_url(u: &str) -> Result<TrackKind, String> {
    let rest = u
        .strip_prefix("http://")
        .ok_or_else(|| format!("{u:?}: only http:// URLs with an IP address are supported, like \"http://127.0.0.1:9400/healthz\""))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = hostport
        .parse()
        .or_else(|_| format!("{hostport}:80").parse())
        .map_err(|_| format!("{u:?}: the host must be an IP address with an optional port, like \"http://127.0.0.1:9400/healthz\""))?;
    Ok(TrackKind::Http {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(Config, Diagnostics), Diagnostics> {
        load(&Source::parse("t.toml", text.to_string()).unwrap())
    }

    const GOOD: &str = r#"
[vip]
admin = "127.0.0.1:9400"

[[vip.instance]]
name = "web"
interface = "eth0"
vrid = 51
priority = 150
advert_interval = "20ms"
addresses = ["10.99.0.50/24", "10.99.0.51"]
peer_priorities = [100]

[[vip.instance.track]]
kind = "tcp"
target = "127.0.0.1:80"
weight = 60
"#;

    #[test]
    fn good_config() {
        let (c, w) = check(GOOD).unwrap();
        assert!(w.is_empty(), "{w}");
        let i = &c.instances[0];
        assert_eq!(i.interval_cs, 2);
        assert_eq!(i.addresses[1], (Ipv4Addr::new(10, 99, 0, 51), 32));
        assert_eq!(i.arp_probe, Some(Duration::from_millis(10)));
        assert_eq!(c.address_lease, Some(Duration::from_secs(3)));
        assert!(summary(&c).contains("web (eth0 vrid 51"));
    }

    #[test]
    fn weight_that_cannot_fail_over_is_warned() {
        let text = GOOD.replace("weight = 60", "weight = 20");
        let (_, w) = check(&text).unwrap();
        assert_eq!(w.warning_count(), 1, "{w}");
        let d = &w.items()[0];
        assert!(d.message.contains("can never cause a failover"), "{d}");
        assert_eq!(d.line, Some(17), "{d}");
    }

    #[test]
    fn every_error_is_reported_and_located() {
        let text = r#"
[vip]
[[vip.instance]]
name = "web"
interface = "eth0"
vrid = 0
priority = 300
advert_interval = "15ms"
addresses = ["10.0.0.300/24", "224.0.0.1"]
checksum = "crc"

[[vip.instance.track]]
kind = "dns"
"#;
        let e = check(text).unwrap_err();
        let msgs = e.to_string();
        for want in [
            "t.toml:6:1: error: vip.instance[0].vrid: vrid 0 is out of range",
            "priority 300 is out of range",
            "advert_interval 15ms is not allowed",
            "\"10.0.0.300/24\" is not an IPv4 address",
            "cannot be a virtual address",
            "checksum \"crc\" is unknown",
            "tracker kind \"dns\" is unknown",
        ] {
            assert!(msgs.contains(want), "missing {want:?} in:\n{msgs}");
        }
    }

    #[test]
    fn unknown_key_is_located() {
        let e = check("[vip]\n[[vip.instance]]\nname='a'\ninterface='eth0'\nvrid=1\naddresses=['10.0.0.1']\nprioirty=3\n").unwrap_err();
        assert!(e.to_string().contains("t.toml:7:1"), "{e}");
        assert!(e.to_string().contains("unknown field `prioirty`"), "{e}");
    }

    #[test]
    fn v2_rules() {
        let text = "[vip]\n[[vip.instance]]\nname='a'\ninterface='eth0'\nvrid=1\nversion=2\nadvert_interval='100ms'\naddresses=['10.0.0.1']\n";
        let e = check(text).unwrap_err();
        assert!(e.to_string().contains("with version 2"), "{e}");
    }

    #[test]
    fn extreme_values_are_errors_not_panics() {
        for v in ["\"100000000000h\"", "\"1ns\"", "\"0s\""] {
            let text = format!(
                "[vip]\naddress_lease = {v}\n[[vip.instance]]\nname='a'\ninterface='eth0'\nvrid=99999999999\npriority=-5\nadvert_interval={v}\nwatchdog_timeout={v}\npreempt_delay={v}\naddresses=['10.0.0.1/99', '']\nwitness_timeout={v}\n[[vip.instance.track]]\nkind='tcp'\ntarget='127.0.0.1:1'\nweight=100000\ninterval={v}\ntimeout={v}\nrise=0\n"
            );
            let e = check(&text).unwrap_err();
            assert!(e.error_count() >= 5, "{e}");
        }
        let e = check("[vip]\n[[vip.instance]]\nname='a'\ninterface='eth0'\nvrid=1\nversion=2\nadvert_interval='100000000000h'\naddresses=['10.0.0.1']\n").unwrap_err();
        assert!(e.to_string().contains("with version 2"), "{e}");
    }

    #[test]
    fn http_url() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:9400/healthz").unwrap(),
            TrackKind::Http {
                addr: "127.0.0.1:9400".parse().unwrap(),
                host: "127.0.0.1:9400".into(),
                path: "/healthz".into()
            }
        );
        assert!(parse_http_url("https://x/").is_err());
    }
}

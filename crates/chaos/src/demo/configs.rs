//! The configurations the demo writes for each front tier, all from one [`FrontTuning`], so
//! that a comparison gives both sides the same health checks, timeouts, retries and passive
//! detection, each in its own vocabulary. `docs/chaos.md` ("Side by side") says where each
//! HAProxy setting comes from in HAProxy's own documentation; `tests/equivalence.rs` parses
//! the rendered files (and the shipped scenarios) back and fails if one side is weaker.

use std::net::SocketAddr;
use std::time::Duration;

use hastack_config::Dur;

/// What both sides of a front-tier comparison share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrontTuning {
    /// Active health check spacing for a healthy member (HAProxy `inter`, hastack `interval`).
    pub check_interval: Duration,
    /// Spacing while a member is changing state (HAProxy `fastinter`, hastack
    /// `fast_interval`, whose default is `interval / 4`).
    pub check_fast_interval: Duration,
    /// Per check (HAProxy `timeout check`, hastack health `timeout`).
    pub check_timeout: Duration,
    /// Failed checks that take a member down (`fall`).
    pub fall: u32,
    /// Passed checks that bring it back (`rise`).
    pub rise: u32,
    /// Random spread of every check interval, percent (HAProxy `spread-checks`, hastack
    /// `jitter`).
    pub check_jitter_pct: u32,
    /// Connecting to a member (HAProxy `timeout connect`, hastack `connect_timeout`).
    pub connect_timeout: Duration,
    /// Waiting for a member's answer before trying another (HAProxy `timeout server`,
    /// hastack `try_timeout`): below the SLO latency, so a try stuck on a frozen member is
    /// cut and retried in time for the answer to count as good.
    pub try_timeout: Duration,
    /// Tries per request, the first included (HAProxy `retries` + 1, hastack `attempts`).
    pub attempts: u32,
    /// Consecutive errors on live traffic that take a member out (HAProxy `error-limit`
    /// with `observe layer7` and `on-error mark-down`, hastack `consecutive_errors`).
    pub consecutive_errors: u32,
    /// Weight ramp after a member comes back (HAProxy `slowstart`, hastack `slow_start`).
    pub slow_start: Duration,
    /// The VIP pair's trackers of the local balancer (keepalived fed through `track_file`,
    /// hastack vip `interval`).
    pub track_interval: Duration,
}

impl Default for FrontTuning {
    fn default() -> Self {
        FrontTuning {
            check_interval: Duration::from_millis(500),
            check_fast_interval: Duration::from_millis(125),
            check_timeout: Duration::from_millis(300),
            fall: 2,
            rise: 2,
            check_jitter_pct: 10,
            connect_timeout: Duration::from_millis(500),
            try_timeout: Duration::from_millis(200),
            attempts: 3,
            consecutive_errors: 5,
            slow_start: Duration::from_secs(5),
            track_interval: Duration::from_millis(100),
        }
    }
}

impl FrontTuning {
    /// In a few words, for descriptions: `health checks every 500ms (fall 2, rise 2), ...`.
    pub fn summary(&self) -> String {
        format!(
            "health checks every {} (fall {}, rise {}), {} try timeout, {} tries, a member out after {} errors in a row",
            Dur(self.check_interval),
            self.fall,
            self.rise,
            Dur(self.try_timeout),
            self.attempts,
            self.consecutive_errors
        )
    }
}

/// HAProxy writes times as whole milliseconds.
fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// HAProxy config for `servers` (name, address) behind one frontend, as strong as HAProxy's
/// documentation allows for this job (see `docs/chaos.md`): `balance leastconn`, HTTP health
/// checks, `observe layer7` with `error-limit` and `on-error mark-down`, `retry-on
/// all-retryable-errors` with redispatch on every retry, and `t`'s timeouts; plus a stats
/// page (CSV at `/stats;csv`).
pub fn haproxy_config(
    front: SocketAddr,
    stats: SocketAddr,
    servers: &[(String, SocketAddr)],
    health: &str,
    t: &FrontTuning,
) -> String {
    let mut s = format!(
        "# written by hastack chaos
global
    maxconn 4096
    spread-checks {jitter}

defaults
    mode http
    timeout connect {connect}
    timeout client 30s
    timeout server {try_}
    timeout check {check}
    retries {retries}
    retry-on all-retryable-errors
    option redispatch 1

frontend web
    bind {front}
    default_backend app

backend app
    balance leastconn
    option httpchk GET {health}
    default-server inter {inter} fastinter {fast} downinter {inter} fall {fall} rise {rise} observe layer7 error-limit {errors} on-error mark-down slowstart {slow}
",
        jitter = t.check_jitter_pct,
        connect = ms(t.connect_timeout),
        try_ = ms(t.try_timeout),
        check = ms(t.check_timeout),
        retries = t.attempts.saturating_sub(1),
        inter = ms(t.check_interval),
        fast = ms(t.check_fast_interval),
        fall = t.fall,
        rise = t.rise,
        errors = t.consecutive_errors,
        slow = ms(t.slow_start),
    );
    for (name, addr) in servers {
        s.push_str(&format!("    server {name} {addr} check\n"));
    }
    s.push_str(&format!(
        "
listen stats
    bind {stats}
    stats enable
    stats uri /stats
"
    ));
    s
}

/// The `[proxy]` config of one demo proxy: one worker, and `t`'s health checks, timeouts,
/// retries and passive ejection, every one written out (no default is relied on, so the
/// comparison test sees them).
pub fn proxy_config(
    listen: SocketAddr,
    admin: SocketAddr,
    members: &[SocketAddr],
    health: &str,
    t: &FrontTuning,
) -> String {
    let members: Vec<String> = members.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        "[proxy]
workers = 1

[proxy.admin]
listen = \"{admin}\"

[[proxy.listeners]]
name = \"web\"
listen = \"{listen}\"
protocol = \"http\"
pool = \"app\"

[proxy.pools.app]
members = [{members}]
connect_timeout = \"{connect}\"
try_timeout = \"{try_}\"
slow_start = \"{slow}\"

[proxy.pools.app.health]
type = \"http\"
path = \"{health}\"
interval = \"{inter}\"
fast_interval = \"{fast}\"
down_interval = \"{inter}\"
timeout = \"{check}\"
fall = {fall}
rise = {rise}
jitter = {jitter}

[proxy.pools.app.retry]
attempts = {attempts}

[proxy.pools.app.outlier]
consecutive_errors = {errors}
",
        members = members.join(", "),
        connect = Dur(t.connect_timeout),
        try_ = Dur(t.try_timeout),
        slow = Dur(t.slow_start),
        inter = Dur(t.check_interval),
        fast = Dur(t.check_fast_interval),
        check = Dur(t.check_timeout),
        fall = t.fall,
        rise = t.rise,
        jitter = f64::from(t.check_jitter_pct) / 100.0,
        attempts = t.attempts,
        errors = t.consecutive_errors,
    )
}

/// The VRRP instance name of the demo's VIP pair (the subject of its faults).
pub const VIP_INSTANCE: &str = "web";

/// The `[vip]` config of one host of the demo's VIP pair: VRRPv3 with `advert` adverts, one
/// address, and two trackers every `t.track_interval`: the local proxy's listener with weight
/// 0 (a dead proxy puts the instance in fault: it resigns and the peer takes the address
/// within its skew time), and the proxy's `GET /ready` on its admin listener with a weight
/// larger than the gap between the two priorities (a proxy with no usable member, e.g. just
/// after its host rejoined the network, does not win the VIP over a peer that can serve).
#[allow(clippy::too_many_arguments, reason = "each is one line of the file")]
pub fn vip_config(
    state_dir: &std::path::Path,
    priority: u8,
    peer_priority: u8,
    vip: std::net::Ipv4Addr,
    advert: Duration,
    proxy_port: u16,
    proxy_admin: SocketAddr,
    t: &FrontTuning,
) -> String {
    let ready_weight = priority.abs_diff(peer_priority).saturating_add(10);
    format!(
        "[vip]
admin = \"127.0.0.1:9400\"
state_dir = \"{state}\"
realtime = true

[[vip.instance]]
name = \"{VIP_INSTANCE}\"
interface = \"eth0\"
vrid = 51
priority = {priority}
advert_interval = \"{advert}\"
addresses = [\"{vip}/24\"]
peer_priorities = [{peer_priority}]

[[vip.instance.track]]
name = \"proxy\"
kind = \"tcp\"
target = \"127.0.0.1:{proxy_port}\"
weight = 0
interval = \"{track}\"
fall = 1
rise = 2

[[vip.instance.track]]
name = \"proxy-ready\"
kind = \"http\"
url = \"http://{proxy_admin}/ready\"
weight = {ready_weight}
interval = \"{track}\"
fall = 2
rise = 2
",
        state = state_dir.display(),
        advert = Dur(advert),
        track = Dur(t.track_interval),
    )
}

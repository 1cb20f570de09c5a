//! The fault proxy: a userspace TCP proxy placed in front of any endpoint, misbehaving on
//! command.
//!
//! Each accepted connection is paired with a fresh upstream connection and two pipes
//! (client -> upstream = [`Flow::Up`], upstream -> client = [`Flow::Down`]). A pipe is a
//! reader that stamps every chunk with its release time (now + latency sample, never earlier
//! than the previous chunk's, so bytes are never reordered) and a writer that waits for the
//! release time, for any black hole to lift, and for bandwidth tokens, then writes. The
//! channel between them holds at most [`QUEUE`] chunks of [`CHUNK`] bytes, so a stalled
//! direction pushes back on its sender through TCP instead of buffering without bound.
//!
//! Faults (one of each kind at a time; applying a kind again replaces it):
//!
//! | fault | effect |
//! |---|---|
//! | `latency` | each chunk is delayed by `delay ± jitter` (uniform), per direction |
//! | `bandwidth` | bytes per second, shared by all connections, per direction |
//! | `reset` | every open connection is reset (RST) and new ones are reset on accept |
//! | `blackhole` | accepted, never answered: data is held (not lost) until the fault is cleared, like a partition that TCP retransmission survives; on the upstream direction new connections are not even forwarded |
//! | `drop` | a fraction of new connections is reset on accept |
//!
//! The proxy deliberately does not parse the bytes it carries: it works for HTTP, RESP,
//! PostgreSQL or anything else on TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hastack_config::{ByteSize, Dur};
use parking_lot::Mutex;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::ChaosError;
use crate::fault::kind::{FaultKind, TargetKind};

/// Bytes read per chunk.
pub const CHUNK: usize = 16 * 1024;
/// Chunks queued per direction and connection.
pub const QUEUE: usize = 16;

/// Which way data flows through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Client to upstream (requests).
    Up,
    /// Upstream to client (answers).
    Down,
}

/// Which directions a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Client to upstream only.
    Upstream,
    /// Upstream to client only.
    Downstream,
    /// Both.
    #[default]
    Both,
}

impl Direction {
    /// Whether this covers `flow`.
    pub fn covers(self, flow: Flow) -> bool {
        matches!(
            (self, flow),
            (Direction::Both, _)
                | (Direction::Upstream, Flow::Up)
                | (Direction::Downstream, Flow::Down)
        )
    }

    fn name(self) -> &'static str {
        match self {
            Direction::Upstream => "upstream",
            Direction::Downstream => "downstream",
            Direction::Both => "both ways",
        }
    }
}

/// One fault the proxy can inject. JSON form (control API):
/// `{"kind":"latency","delay":"200ms","jitter":"50ms","direction":"both"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ProxyFault {
    /// Added latency per chunk: `delay ± jitter`.
    Latency {
        /// Mean added delay.
        delay: Dur,
        /// Uniform jitter around it.
        #[serde(default)]
        jitter: Dur,
        /// Directions.
        #[serde(default)]
        direction: Direction,
    },
    /// Bandwidth cap in bytes per second, shared by all connections.
    Bandwidth {
        /// Bytes per second.
        rate: ByteSize,
        /// Directions.
        #[serde(default)]
        direction: Direction,
    },
    /// Reset every connection.
    Reset,
    /// Accept, never answer.
    Blackhole {
        /// Directions.
        #[serde(default)]
        direction: Direction,
    },
    /// Reset this fraction (0..=1) of new connections on accept.
    Drop {
        /// Fraction of connections.
        fraction: f64,
    },
}

impl ProxyFault {
    /// Its kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            ProxyFault::Latency { .. } => FaultKind::Latency,
            ProxyFault::Bandwidth { .. } => FaultKind::Bandwidth,
            ProxyFault::Reset => FaultKind::Reset,
            ProxyFault::Blackhole { .. } => FaultKind::Blackhole,
            ProxyFault::Drop { .. } => FaultKind::Drop,
        }
    }

    /// The kinds a fault proxy injects, for messages: `latency, bandwidth, ...`.
    pub fn kinds() -> String {
        FaultKind::list(FaultKind::acting_on(TargetKind::FaultProxy))
    }

    /// Check the parameters; the error says what is allowed.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            ProxyFault::Latency { delay, jitter, .. } => {
                if jitter.0 > delay.0 {
                    return Err(format!(
                        "jitter ({jitter}) must not exceed delay ({delay}): latency is delay ± jitter and cannot go below zero"
                    ));
                }
                if delay.0 > Duration::from_secs(3600) {
                    return Err("delay must be at most 1h".to_string());
                }
                Ok(())
            }
            ProxyFault::Bandwidth { rate, .. } if rate.0 == 0 => Err(
                "rate must be at least 1 byte per second (use `blackhole` to stop traffic)"
                    .to_string(),
            ),
            ProxyFault::Drop { fraction } if !(*fraction > 0.0 && *fraction <= 1.0) => {
                Err(format!(
                    "fraction must be in (0, 1], e.g. 0.3 for 30% of connections; got {fraction}"
                ))
            }
            _ => Ok(()),
        }
    }

    /// Parameters in a few words, e.g. `200ms ±50ms both ways`.
    pub fn describe(&self) -> String {
        match self {
            ProxyFault::Latency {
                delay,
                jitter,
                direction,
            } => {
                if jitter.0.is_zero() {
                    format!("+{delay} {}", direction.name())
                } else {
                    format!("+{delay} ±{jitter} {}", direction.name())
                }
            }
            ProxyFault::Bandwidth { rate, direction } => format!("{rate}/s {}", direction.name()),
            ProxyFault::Reset => String::new(),
            ProxyFault::Blackhole { direction } => direction.name().to_string(),
            ProxyFault::Drop { fraction } => format!("{:.0}% of connections", fraction * 100.0),
        }
    }
}

/// The set of faults active in one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ActiveFaults(pub Vec<ProxyFault>);

impl ActiveFaults {
    fn latency(&self, flow: Flow) -> Option<(Duration, Duration)> {
        self.0.iter().find_map(|f| match f {
            ProxyFault::Latency {
                delay,
                jitter,
                direction,
            } if direction.covers(flow) => Some((delay.0, jitter.0)),
            _ => None,
        })
    }

    fn bandwidth(&self, flow: Flow) -> Option<u64> {
        self.0.iter().find_map(|f| match f {
            ProxyFault::Bandwidth { rate, direction } if direction.covers(flow) => Some(rate.0),
            _ => None,
        })
    }

    fn blackholed(&self, flow: Flow) -> bool {
        self.0
            .iter()
            .any(|f| matches!(f, ProxyFault::Blackhole { direction } if direction.covers(flow)))
    }

    fn reset(&self) -> bool {
        self.0.iter().any(|f| matches!(f, ProxyFault::Reset))
    }

    fn drop_fraction(&self) -> f64 {
        self.0
            .iter()
            .find_map(|f| match f {
                ProxyFault::Drop { fraction } => Some(*fraction),
                _ => None,
            })
            .unwrap_or(0.0)
    }
}

/// How to start a fault proxy.
#[derive(Debug, Clone)]
pub struct FaultProxyConfig {
    /// Its name (the scenario target name).
    pub name: String,
    /// Where to listen (port 0 picks one).
    pub listen: SocketAddr,
    /// What to forward to.
    pub upstream: SocketAddr,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Seed of the jitter and drop decisions.
    pub seed: u64,
    /// Mirror refusals: when the upstream refuses a connection, close the listening socket
    /// (so clients get "connection refused" too, as they would without the proxy) until
    /// the upstream accepts again (probed every 50 ms). Without it, a dead upstream looks
    /// like "accepted, then reset", which balancers treat differently (they do not retry a
    /// request they already sent).
    pub mirror_refusal: bool,
}

/// Counters of one proxy (prometheus-client types, readable for `/status` too).
#[derive(Debug, Clone, Default)]
pub struct ProxyStats {
    /// Connections forwarded.
    pub connections: Counter,
    /// Connections open now.
    pub active: Gauge,
    /// Connections reset on accept by `drop`.
    pub dropped: Counter,
    /// Connections reset by `reset`.
    pub resets: Counter,
    /// Connections whose upstream connect failed.
    pub upstream_failures: Counter,
    /// Bytes delivered client -> upstream.
    pub bytes_up: Counter,
    /// Bytes delivered upstream -> client.
    pub bytes_down: Counter,
}

/// A snapshot for the control API.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyStatus {
    /// Name.
    pub name: String,
    /// Listening address.
    pub listen: SocketAddr,
    /// Upstream.
    pub upstream: SocketAddr,
    /// Active faults.
    pub faults: Vec<ProxyFault>,
    /// Connections forwarded.
    pub connections: u64,
    /// Open now.
    pub active: i64,
    /// Reset on accept by `drop`.
    pub dropped: u64,
    /// Reset by `reset`.
    pub resets: u64,
    /// Upstream connects that failed.
    pub upstream_failures: u64,
    /// Bytes client -> upstream.
    pub bytes_up: u64,
    /// Bytes upstream -> client.
    pub bytes_down: u64,
}

#[derive(Debug)]
struct TokenBucket {
    rate: u64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    const fn new() -> Self {
        TokenBucket {
            rate: 0,
            tokens: 0.0,
            last: None,
        }
    }

    /// Take `n` bytes at `rate`; returns how long to wait before sending them. Debt is
    /// allowed, so later senders wait for earlier ones: the long-run rate is exact.
    #[allow(
        clippy::cast_precision_loss,
        reason = "byte counts and rates far below 2^52"
    )]
    fn reserve(&mut self, n: usize, rate: u64, now: Instant) -> Duration {
        let burst = (rate as f64 / 50.0).max(1.0);
        match self.last {
            Some(last) if self.rate == rate => {
                let elapsed = now.saturating_duration_since(last).as_secs_f64();
                self.tokens = (self.tokens + elapsed * rate as f64).min(burst);
            }
            _ => {
                self.rate = rate;
                self.tokens = burst;
            }
        }
        self.last = Some(now);
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate as f64)
        }
    }
}

#[derive(Debug)]
struct Shared {
    name: String,
    listen: SocketAddr,
    upstream: SocketAddr,
    connect_timeout: Duration,
    faults: watch::Sender<ActiveFaults>,
    stats: ProxyStats,
    up_bucket: Mutex<TokenBucket>,
    down_bucket: Mutex<TokenBucket>,
    rng: Mutex<fastrand::Rng>,
    mirror_refusal: bool,
    /// Set by a connection whose upstream refused; the accept loop closes the listener.
    refused: tokio::sync::Notify,
}

/// A cheap, cloneable handle to control a running proxy.
#[derive(Debug, Clone)]
pub struct FaultProxyHandle {
    shared: Arc<Shared>,
}

impl FaultProxyHandle {
    /// The proxy's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Where it listens.
    pub fn listen_addr(&self) -> SocketAddr {
        self.shared.listen
    }

    /// Where it forwards.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Apply `fault`, replacing an active fault of the same kind.
    pub fn apply(&self, fault: ProxyFault) -> Result<(), String> {
        fault.validate()?;
        info!(proxy = %self.shared.name, fault = %fault.kind(), params = %fault.describe(), "fault proxy: fault on");
        self.shared.faults.send_modify(|a| {
            a.0.retain(|f| f.kind() != fault.kind());
            a.0.push(fault);
        });
        Ok(())
    }

    /// Clear the fault of `kind`; whether one was active.
    pub fn clear(&self, kind: FaultKind) -> bool {
        let mut was = false;
        self.shared.faults.send_modify(|a| {
            let before = a.0.len();
            a.0.retain(|f| f.kind() != kind);
            was = a.0.len() != before;
        });
        if was {
            info!(proxy = %self.shared.name, fault = %kind, "fault proxy: fault off");
        }
        was
    }

    /// Clear every fault.
    pub fn clear_all(&self) {
        self.shared.faults.send_modify(|a| a.0.clear());
    }

    /// Faults active now.
    pub fn active(&self) -> Vec<ProxyFault> {
        self.shared.faults.borrow().0.clone()
    }

    /// Counters and faults.
    pub fn status(&self) -> ProxyStatus {
        let s = &self.shared.stats;
        ProxyStatus {
            name: self.shared.name.clone(),
            listen: self.shared.listen,
            upstream: self.shared.upstream,
            faults: self.active(),
            connections: s.connections.get(),
            active: s.active.get(),
            dropped: s.dropped.get(),
            resets: s.resets.get(),
            upstream_failures: s.upstream_failures.get(),
            bytes_up: s.bytes_up.get(),
            bytes_down: s.bytes_down.get(),
        }
    }

    /// Register the counters in `registry`, labelled `proxy=<name>`.
    pub fn register_metrics(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_label((
            std::borrow::Cow::Borrowed("proxy"),
            std::borrow::Cow::Owned(self.shared.name.clone()),
        ));
        let s = &self.shared.stats;
        sub.register(
            "chaos_proxy_connections",
            "Connections forwarded",
            s.connections.clone(),
        );
        sub.register(
            "chaos_proxy_active_connections",
            "Connections open",
            s.active.clone(),
        );
        sub.register(
            "chaos_proxy_dropped",
            "Connections reset on accept by the drop fault",
            s.dropped.clone(),
        );
        sub.register(
            "chaos_proxy_resets",
            "Connections reset by the reset fault",
            s.resets.clone(),
        );
        sub.register(
            "chaos_proxy_upstream_failures",
            "Upstream connects that failed",
            s.upstream_failures.clone(),
        );
        sub.register(
            "chaos_proxy_bytes_up",
            "Bytes delivered client to upstream",
            s.bytes_up.clone(),
        );
        sub.register(
            "chaos_proxy_bytes_down",
            "Bytes delivered upstream to client",
            s.bytes_down.clone(),
        );
    }
}

/// A running fault proxy. Dropping it without [`FaultProxy::stop`] still stops accepting
/// (the accept task is aborted) but leaves open connections to finish on their own.
#[derive(Debug)]
pub struct FaultProxy {
    handle: FaultProxyHandle,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Bind and start forwarding.
    pub async fn start(cfg: FaultProxyConfig) -> Result<FaultProxy, ChaosError> {
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| ChaosError::Bind {
                addr: cfg.listen,
                what: format!("fault proxy `{}`", cfg.name),
                source,
            })?;
        let listen = listener
            .local_addr()
            .map_err(|e| ChaosError::io("reading the fault proxy's address", e))?;
        let (faults, _) = watch::channel(ActiveFaults::default());
        let shared = Arc::new(Shared {
            name: cfg.name,
            listen,
            upstream: cfg.upstream,
            connect_timeout: cfg.connect_timeout,
            faults,
            stats: ProxyStats::default(),
            up_bucket: Mutex::new(TokenBucket::new()),
            down_bucket: Mutex::new(TokenBucket::new()),
            rng: Mutex::new(fastrand::Rng::with_seed(cfg.seed)),
            mirror_refusal: cfg.mirror_refusal,
            refused: tokio::sync::Notify::new(),
        });
        let cancel = CancellationToken::new();
        debug!(proxy = %shared.name, %listen, upstream = %shared.upstream, "fault proxy listening");
        let task = tokio::spawn(accept_loop(listener, shared.clone(), cancel.clone()));
        Ok(FaultProxy {
            handle: FaultProxyHandle { shared },
            cancel,
            task: Some(task),
        })
    }

    /// The control handle.
    pub fn handle(&self) -> FaultProxyHandle {
        self.handle.clone()
    }

    /// Stop accepting and reset every open connection.
    pub async fn stop(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Reset (RST) a socket: zero linger, then the caller drops it.
fn set_rst(s: &TcpStream) {
    let _ = socket2::SockRef::from(s).set_linger(Some(Duration::ZERO));
}

/// Probe every 50 ms until the upstream accepts a connection (or the proxy stops): false
/// when stopped.
async fn upstream_back(shared: &Shared, cancel: &CancellationToken) -> bool {
    loop {
        tokio::select! {
            () = cancel.cancelled() => return false,
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let probe =
            tokio::time::timeout(shared.connect_timeout, TcpStream::connect(shared.upstream)).await;
        if matches!(probe, Ok(Ok(_))) {
            return true;
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut listener = Some(listener);
    loop {
        let Some(l) = listener.as_ref() else {
            // Mirroring a refusing upstream: no listener until it accepts again.
            if !upstream_back(&shared, &cancel).await {
                return;
            }
            match TcpListener::bind(shared.listen).await {
                Ok(l) => {
                    info!(proxy = %shared.name, "upstream accepts again: listening again");
                    listener = Some(l);
                }
                Err(e) => warn!(proxy = %shared.name, error = %e, "cannot listen again, retrying"),
            }
            continue;
        };
        let (client, peer) = tokio::select! {
            () = cancel.cancelled() => return,
            () = shared.refused.notified() => {
                info!(proxy = %shared.name, upstream = %shared.upstream, "upstream refuses connections: refusing too");
                listener = None;
                continue;
            }
            r = l.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    warn!(proxy = %shared.name, error = %e, "fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
        };
        let faults = shared.faults.borrow().clone();
        if faults.reset() {
            shared.stats.resets.inc();
            set_rst(&client);
            continue;
        }
        let p = faults.drop_fraction();
        if p > 0.0 && shared.rng.lock().f64() < p {
            shared.stats.dropped.inc();
            set_rst(&client);
            continue;
        }
        debug!(proxy = %shared.name, %peer, "fault proxy connection");
        tokio::spawn(connection(client, shared.clone(), cancel.clone()));
    }
}

/// Wait until the reset fault is on (or forever if the proxy goes away).
async fn reset_on(mut rx: watch::Receiver<ActiveFaults>) {
    loop {
        if rx.borrow_and_update().reset() {
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Wait while `flow` is black-holed; false if the proxy went away.
async fn blackhole_lifted(rx: &mut watch::Receiver<ActiveFaults>, flow: Flow) -> bool {
    loop {
        if !rx.borrow_and_update().blackholed(flow) {
            return true;
        }
        if rx.changed().await.is_err() {
            return false;
        }
    }
}

async fn connection(client: TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut rx = shared.faults.subscribe();
    // A black hole on the request path: the connection is accepted but not forwarded until
    // the fault is cleared (or the connection is reset, or the proxy stops).
    let reset_rx = rx.clone();
    let cleared = tokio::select! {
        ok = blackhole_lifted(&mut rx, Flow::Up) => ok,
        () = reset_on(reset_rx) => false,
        () = cancel.cancelled() => false,
    };
    if !cleared {
        shared.stats.resets.inc();
        set_rst(&client);
        return;
    }
    let upstream =
        match tokio::time::timeout(shared.connect_timeout, TcpStream::connect(shared.upstream))
            .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                debug!(proxy = %shared.name, error = %e, "upstream connect failed");
                if shared.mirror_refusal && e.kind() == std::io::ErrorKind::ConnectionRefused {
                    shared.refused.notify_one();
                }
                shared.stats.upstream_failures.inc();
                set_rst(&client);
                return;
            }
            Err(_) => {
                shared.stats.upstream_failures.inc();
                set_rst(&client);
                return;
            }
        };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.stats.connections.inc();
    shared.stats.active.inc();
    let mut client = client;
    let mut upstream = upstream;
    let reset = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let up = pipe(cr, uw, Flow::Up, &shared, rx.clone());
        let down = pipe(ur, cw, Flow::Down, &shared, rx.clone());
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            () = reset_on(rx.clone()) => true,
            () = cancel.cancelled() => true,
        }
    };
    if reset {
        shared.stats.resets.inc();
        set_rst(&client);
        set_rst(&upstream);
    }
    shared.stats.active.dec();
}

fn sample_latency(faults: &ActiveFaults, flow: Flow, rng: &Mutex<fastrand::Rng>) -> Duration {
    match faults.latency(flow) {
        None => Duration::ZERO,
        Some((delay, jitter)) if jitter.is_zero() => delay,
        Some((delay, jitter)) => {
            let u = rng.lock().f64() * 2.0 - 1.0;
            Duration::from_secs_f64((delay.as_secs_f64() + u * jitter.as_secs_f64()).max(0.0))
        }
    }
}

async fn pipe<R, W>(
    mut reader: R,
    mut writer: W,
    flow: Flow,
    shared: &Shared,
    rx: watch::Receiver<ActiveFaults>,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (tx, mut queue) = mpsc::channel::<(Instant, Bytes)>(QUEUE);
    let read_rx = rx.clone();
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut last = Instant::now();
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let delay = sample_latency(&read_rx.borrow(), flow, &shared.rng);
            let release = (Instant::now() + delay).max(last);
            last = release;
            let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
            if tx.send((release, chunk)).await.is_err() {
                break;
            }
        }
        // Dropping `tx` tells the writer the stream ended.
    };
    let mut write_rx = rx;
    let write = async move {
        while let Some((release, data)) = queue.recv().await {
            tokio::time::sleep_until(release).await;
            if !blackhole_lifted(&mut write_rx, flow).await {
                return;
            }
            let cap = write_rx.borrow().bandwidth(flow);
            if let Some(rate) = cap {
                let bucket = match flow {
                    Flow::Up => &shared.up_bucket,
                    Flow::Down => &shared.down_bucket,
                };
                let wait = bucket.lock().reserve(data.len(), rate, Instant::now());
                tokio::time::sleep(wait).await;
            }
            if writer.write_all(&data).await.is_err() {
                return;
            }
            let n = u64::try_from(data.len()).unwrap_or(u64::MAX);
            match flow {
                Flow::Up => shared.stats.bytes_up.inc_by(n),
                Flow::Down => shared.stats.bytes_down.inc_by(n),
            };
        }
        // Forward the half-close.
        let _ = writer.shutdown().await;
    };
    tokio::join!(read, write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_forms_parse_and_validate() {
        let f: ProxyFault = serde_json::from_str(
            r#"{"kind":"latency","delay":"200ms","jitter":"50ms","direction":"downstream"}"#,
        )
        .unwrap();
        assert_eq!(f.describe(), "+200ms ±50ms downstream");
        assert!(f.validate().is_ok());
        let r: ProxyFault = serde_json::from_str(r#"{"kind":"reset"}"#).unwrap();
        assert_eq!(r, ProxyFault::Reset);
        let bad: ProxyFault = serde_json::from_str(r#"{"kind":"drop","fraction":1.5}"#).unwrap();
        assert!(bad.validate().unwrap_err().contains("(0, 1]"));
        assert!(serde_json::from_str::<ProxyFault>(r#"{"kind":"latency","dealy":"1s"}"#).is_err());
        let j: ProxyFault =
            serde_json::from_str(r#"{"kind":"latency","delay":"10ms","jitter":"20ms"}"#).unwrap();
        assert!(j.validate().unwrap_err().contains("jitter"));
    }

    #[tokio::test(start_paused = true)]
    async fn token_bucket_holds_the_long_run_rate() {
        let mut b = TokenBucket::new();
        let now = Instant::now();
        // 1000 B/s: burst 20 B; taking 1020 B at once means waiting 1 s.
        let w = b.reserve(1020, 1000, now);
        assert_eq!(w, Duration::from_secs(1));
        // A second taker right after waits behind the first.
        let w2 = b.reserve(500, 1000, now);
        assert_eq!(w2, Duration::from_millis(1500));
    }

    #[test]
    fn directions_cover_flows() {
        assert!(Direction::Both.covers(Flow::Up) && Direction::Both.covers(Flow::Down));
        assert!(Direction::Upstream.covers(Flow::Up) && !Direction::Upstream.covers(Flow::Down));
        assert!(!Direction::Downstream.covers(Flow::Up));
    }
}

//! One backend Redis server: its health (the shared `HealthMachine`, fed by active PING
//! probes and by the data plane's connect failures) and the RESP probe.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hastack_core::health::{Event, HealthMachine, HealthPolicy, ProbePhase, State, Transition};
use hastack_probe::{Outcome, Prober, Target};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use super::metrics::ServerMetrics;
use crate::config::HealthSpec;
use crate::resp::{Limits, Value, write};

/// A server's role in its shard, as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Takes writes.
    Master,
    /// Serves reads under `prefer_replica`.
    Replica,
}

/// The last probe's result, for `/status`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LastProbe {
    /// Passed.
    pub ok: bool,
    /// What was seen ("PONG, role master") or why it failed.
    pub detail: String,
    /// Probe duration in milliseconds.
    pub latency_ms: f64,
    /// Role the server reported (`ROLE`), if it answered.
    pub reported_role: Option<String>,
}

/// One backend server, shared by every worker.
#[derive(Debug)]
pub struct Server {
    /// Index among all servers.
    pub id: usize,
    /// Index of its shard.
    pub shard: usize,
    /// Shard name, for logs.
    pub shard_name: Arc<str>,
    /// Address.
    pub addr: SocketAddr,
    /// Configured role.
    pub role: Role,
    health: Mutex<HealthMachine>,
    /// Mirror of `health.usable()`, read on the hot path without the lock.
    usable: AtomicBool,
    wake: Notify,
    last: Mutex<LastProbe>,
    metrics: ServerMetrics,
}

impl Server {
    /// A server that starts usable (the proxy serves at once; the first probe corrects
    /// that within one interval if it is not).
    pub fn new(
        id: usize,
        shard: usize,
        shard_name: Arc<str>,
        addr: SocketAddr,
        role: Role,
        health: &HealthSpec,
        metrics: ServerMetrics,
    ) -> Server {
        let policy = HealthPolicy {
            rise: health.rise,
            fall: health.fall,
            active_checks: true,
            // Soft ejection (error streaks) is for HTTP members returning 5xx; a Redis error
            // reply is the client's business, not the server's health.
            consecutive_errors: 0,
            slow_start: Duration::ZERO,
            ..HealthPolicy::default()
        };
        metrics.up.set(1);
        Server {
            id,
            shard,
            shard_name,
            addr,
            role,
            health: Mutex::new(HealthMachine::new(policy, true)),
            usable: AtomicBool::new(true),
            wake: Notify::new(),
            last: Mutex::new(LastProbe::default()),
            metrics,
        }
    }

    /// Whether new requests may be sent to it.
    pub fn usable(&self) -> bool {
        self.usable.load(Ordering::Acquire)
    }

    /// Its health state.
    pub fn state(&self) -> State {
        self.health.lock().state()
    }

    /// The last probe.
    pub fn last_probe(&self) -> LastProbe {
        self.last.lock().clone()
    }

    /// Feed a health event (probe result, passive failure).
    pub fn on_event(&self, event: Event) -> ProbePhase {
        let now = Instant::now();
        let (transition, phase, usable) = {
            let mut h = self.health.lock();
            let t = h.on_event(now, event);
            (t, h.probe_phase(), h.usable())
        };
        self.usable.store(usable, Ordering::Release);
        if let Some(t) = transition {
            self.log_transition(t);
        }
        phase
    }

    /// A fresh connection was refused or reset: down at once, probe again soon.
    pub fn connect_failed(&self, detail: &str) {
        if self.usable() {
            warn!(shard = %self.shard_name, addr = %self.addr, detail, "connect failed: server marked down");
        }
        self.on_event(Event::ConnectFailed);
        self.wake.notify_one();
    }

    /// Something looked wrong (a timeout on live traffic): probe again soon.
    pub fn suspect(&self) {
        self.wake.notify_one();
    }

    fn log_transition(&self, t: Transition) {
        self.metrics.transitions.inc();
        let up = i64::from(t.to == State::Up);
        self.metrics.up.set(up);
        if let Some(g) = &self.metrics.shard_up {
            g.set(up);
        }
        let role = match self.role {
            Role::Master => "master",
            Role::Replica => "replica",
        };
        if t.to == State::Up {
            info!(shard = %self.shard_name, addr = %self.addr, role, from = t.from.as_str(), reason = ?t.reason, "server up");
        } else {
            warn!(shard = %self.shard_name, addr = %self.addr, role, to = t.to.as_str(), reason = ?t.reason, "server down: its keys answer as misses");
        }
    }
}

/// The prober's view of a server: `hastack_probe`'s scheduler drives it.
#[derive(Debug)]
pub struct ProbeTarget(pub Arc<Server>);

impl Target for ProbeTarget {
    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    fn report(&self, outcome: Outcome) -> ProbePhase {
        let server = &self.0;
        if !outcome.ok {
            server.metrics.probe_failures.inc();
        }
        {
            let mut last = server.last.lock();
            last.ok = outcome.ok;
            last.detail = outcome.detail.clone();
            last.latency_ms = outcome.latency.as_secs_f64() * 1000.0;
        }
        server.on_event(if outcome.ok {
            Event::ProbeOk
        } else {
            Event::ProbeFailed
        })
    }

    fn wake(&self) -> Option<&Notify> {
        Some(&self.0.wake)
    }
}

/// The RESP probe: on a fresh connection, `AUTH` (when configured), `PING` and `ROLE` in one
/// write. Passes on `+PONG`; the role is recorded for `/status`.
#[derive(Debug)]
pub struct RespCheck {
    /// Sent first when set.
    pub password: Option<Bytes>,
    /// Where to record the reported role.
    pub server: Arc<Server>,
}

impl Prober for RespCheck {
    async fn probe(&self, addr: SocketAddr, timeout: Duration) -> Outcome {
        let start = Instant::now();
        let verdict = tokio::time::timeout(timeout, ping(addr, self.password.as_ref())).await;
        let (ok, detail, role) = match verdict {
            Ok(Ok((role, detail))) => (true, detail, role),
            Ok(Err(detail)) => (false, detail, None),
            Err(_) => (
                false,
                format!("timed out after {}", hastack_config::Dur(timeout)),
                None,
            ),
        };
        if role.is_some() {
            self.server.last.lock().reported_role = role;
        }
        Outcome {
            ok,
            latency: start.elapsed(),
            detail,
        }
    }
}

/// Most bytes a probe reads: `ROLE` of a master lists its replicas, a few hundred bytes each.
const PROBE_MAX: usize = 64 * 1024;

async fn ping(
    addr: SocketAddr,
    password: Option<&Bytes>,
) -> Result<(Option<String>, String), String> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_nodelay(true);
    let mut out = BytesMut::new();
    let mut expect = 2;
    if let Some(p) = password {
        write::command(&mut out, [&b"AUTH"[..], p].into_iter());
        expect += 1;
    }
    write::command(&mut out, [&b"PING"[..]].into_iter());
    write::command(&mut out, [&b"ROLE"[..]].into_iter());
    s.write_all(&out).await.map_err(|e| format!("write: {e}"))?;
    let limits = Limits {
        max_bulk_len: PROBE_MAX,
        max_elements: 4096,
        max_frame_len: PROBE_MAX,
    };
    let mut buf = BytesMut::with_capacity(1024);
    let mut values = Vec::new();
    while values.len() < expect {
        let frozen = buf.clone().freeze();
        match Value::decode(&frozen, &limits).map_err(|e| format!("bad reply: {e}"))? {
            Some((v, len)) => {
                values.push(v);
                let _ = buf.split_to(len);
            }
            None => {
                if buf.len() >= PROBE_MAX {
                    return Err("reply too large".into());
                }
                let n = s
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| format!("read: {e}"))?;
                if n == 0 {
                    return Err("connection closed before the reply".into());
                }
            }
        }
    }
    let mut it = values.into_iter();
    if password.is_some() {
        if let Some(Value::Error(e)) = it.next() {
            return Err(format!("AUTH refused: {}", String::from_utf8_lossy(&e)));
        }
    }
    let pong = it.next();
    let role = it.next().and_then(|r| {
        r.as_list()
            .and_then(|l| l.first())
            .and_then(|f| f.as_bytes())
            .map(|b| String::from_utf8_lossy(b).into_owned())
    });
    match pong {
        Some(Value::Simple(p)) if &p[..] == b"PONG" => {
            let detail = format!("PONG, role {}", role.as_deref().unwrap_or("unknown"));
            Ok((role, detail))
        }
        Some(Value::Error(e)) => Err(format!("PING answered {}", String::from_utf8_lossy(&e))),
        other => Err(format!("PING answered {other:?}")),
    }
}

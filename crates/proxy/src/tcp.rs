//! The TCP (layer 4) data plane: pick a member, connect (failing over to another member on
//! a refused or timed-out connect), then splice bytes both ways until either side closes or
//! the session idles out.
//!
//! Nothing is retried once the first byte has been relayed: a TCP session is not
//! replayable. Failures, blame and the retry decision are HTTP's (`crate::failure`): a
//! refused connect marks the member down and is retried on another member, our own lack
//! of descriptors or ports is never the member's fault.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::Shared;
use crate::failure::{Next, Tries, decide};
use crate::http::ConnInfo;
use crate::lease::Lease;
use crate::pool::Pick;
use crate::upstream;

/// Serve one TCP session.
pub async fn serve(shared: Arc<Shared>, conn: Arc<ConnInfo>, client: TcpStream) {
    let start = Instant::now();
    let rt = shared.runtime.load_full();
    let Some(listener) = rt.listeners.get(&conn.listener).cloned() else {
        return;
    };
    let Some(pool) = listener.default_pool.clone() else {
        return;
    };
    drop(rt);
    let _ = client.set_nodelay(true);
    let spec = &pool.spec;
    let attempts = spec.retry.attempts.max(1);
    let mut tried: Vec<usize> = Vec::with_capacity(attempts as usize);
    pool.deposit(start);
    let mut attempt = 0;
    // A retry decided but not sent yet: counted once a member is found for it.
    let mut retrying = None;
    let (upstream, lease) = loop {
        let now = Instant::now();
        let idx = match pool.pick(None, &tried, now) {
            Pick::Member(i) => i,
            Pick::Empty => {
                pool.metrics.no_member.inc();
                let why = pool.describe_empty(now);
                debug!(listener = %conn.listener, client = %conn.peer, "{why}");
                listener.metrics.tcp_error.inc();
                return;
            }
            Pick::Exhausted => {
                listener.metrics.tcp_error.inc();
                return;
            }
        };
        tried.push(idx);
        if let Some(f) = retrying.take() {
            pool.metrics.retry(&f);
        }
        let member = pool.members[idx].clone();
        let mut lease = Lease::begin(member.clone(), member.epoch(), now);
        member.metrics.requests.inc();
        attempt += 1;
        match upstream::dial(member.addr(), spec.connect_timeout).await {
            Ok(s) => {
                // For a TCP session the "answer" is the connection itself: from here on the
                // member is busy, not slow.
                lease.answered();
                member.success(Instant::now());
                break (s, lease);
            }
            Err(e) => {
                let now = Instant::now();
                let failure = e.failure();
                member.record(now, &failure);
                debug!(pool = %spec.name, member = %member.name(), error = %e, "TCP connect failed");
                // Nothing was relayed yet: the same rules as HTTP, for a request that cannot
                // be resent once written (a session is not replayable).
                let tries = Tries {
                    attempt,
                    attempts,
                    redos_left: 0,
                    resendable: false,
                    time_left: true,
                };
                if decide(&failure, &tries, || pool.withdraw(now)) == Next::Retry {
                    retrying = Some(failure);
                    continue;
                }
                listener.metrics.tcp_error.inc();
                return;
            }
        }
    };
    let member_name = lease.member().name().to_string();
    let activity = Arc::new(AtomicU64::new(0));
    let origin = Instant::now();
    let mut c = Tracked::new(client, activity.clone(), origin);
    let mut u = Tracked::new(upstream, activity.clone(), origin);
    let idle = listener.spec.idle_timeout;
    let copy = tokio::io::copy_bidirectional(&mut c, &mut u);
    tokio::pin!(copy);
    let result = loop {
        let last = origin + Duration::from_nanos(activity.load(Ordering::Relaxed));
        tokio::select! {
            r = &mut copy => break r,
            _ = tokio::time::sleep_until(last + idle) => {
                let last = origin + Duration::from_nanos(activity.load(Ordering::Relaxed));
                if Instant::now() >= last + idle {
                    break Err(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
                }
            }
        }
    };
    drop(lease);
    match &result {
        Ok(_) => {
            listener.metrics.tcp_ok.inc();
        }
        Err(e) => debug!(listener = %conn.listener, error = %e, "TCP session ended with an error"),
    }
    if shared.access_log.load(Ordering::Relaxed) {
        let (up, down) = result.as_ref().map_or((0, 0), |(a, b)| (*a, *b));
        info!(
            target: "hastack::access",
            listener = %conn.listener,
            client = %conn.peer,
            member = %member_name,
            bytes_up = up,
            bytes_down = down,
            ms = start.elapsed().as_secs_f64() * 1000.0,
            error = result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
        );
    }
}

/// A stream that records the time of its last read or write (nanoseconds since `origin`).
struct Tracked {
    inner: TcpStream,
    activity: Arc<AtomicU64>,
    origin: Instant,
}

impl Tracked {
    fn new(inner: TcpStream, activity: Arc<AtomicU64>, origin: Instant) -> Tracked {
        Tracked {
            inner,
            activity,
            origin,
        }
    }

    fn touch(&self) {
        let ns = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.activity.store(ns, Ordering::Relaxed);
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.touch();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

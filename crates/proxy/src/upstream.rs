//! Upstream connections: dialing members (and classifying why a dial failed) and our own
//! keep-alive pool. (The try that uses a connection is a [`crate::lease::Lease`].)
//!
//! Why our own pool instead of hyper-util's legacy client: we need to drop a member's idle
//! connections the moment it goes down (a stale keep-alive connection to a dead member is a
//! request lost on its first use), to know whether a failed try used a fresh or a reused
//! connection (only a fresh one proves the member dead), and to keep one idle list per
//! worker thread so that checkout never contends across cores.
//!
//! Invariants:
//! * An idle connection is only handed out if it was pooled in the member's current
//!   *epoch*; the epoch advances whenever the member stops being usable, so nothing pooled
//!   before a failure is ever reused after it.
//! * A connection returns to the pool only after its response body ended cleanly (HTTP/1.1
//!   has one request in flight per connection), and is checked for a close or reset by the
//!   member before reuse (free unless the socket signalled something).

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::failure::{Blame, ErrorKind, Failure, Retry};
use crate::h1::Conn;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Record which data-plane worker the current thread is (called once per worker thread).
pub fn set_worker(index: usize) {
    WORKER.with(|w| w.set(index));
}

/// The current thread's worker index (0 outside workers).
pub fn worker() -> usize {
    WORKER.with(Cell::get)
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Nothing listens there (RST to our SYN).
    #[error("connection refused")]
    Refused,
    /// The connection was reset during setup.
    #[error("connection reset during connect")]
    Reset,
    /// No answer within the connect timeout (black hole, overloaded accept queue, partition).
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// Any other socket error (unreachable network, out of ports...).
    #[error("connect failed: {0}")]
    Io(io::Error),
}

impl ConnectError {
    /// This error as the failure of a try. Nothing was sent, so any request may go to
    /// another member. A refusal or reset proves nothing serves at the address; a timeout or
    /// an unreachable network is the member's (or its network's) problem; running out of
    /// file descriptors, ports or buffers is this process's, and never counts against the
    /// member.
    pub fn failure(&self) -> Failure {
        let (kind, blame) = match self {
            ConnectError::Refused | ConnectError::Reset => {
                (ErrorKind::ConnectRefused, Blame::Upstream)
            }
            ConnectError::Timeout(_) => (ErrorKind::ConnectTimeout, Blame::Upstream),
            ConnectError::Io(e) if is_local(e) => (ErrorKind::ConnectFailed, Blame::Local),
            ConnectError::Io(_) => (ErrorKind::ConnectFailed, Blame::Upstream),
        };
        Failure {
            kind,
            blame,
            retry: Retry::Unsent,
        }
    }
}

/// Whether a socket error is this process's or host's own shortage (not the member's).
fn is_local(e: &io::Error) -> bool {
    // Out of descriptors (process or system), buffers, memory, or local ports.
    matches!(
        e.raw_os_error(),
        Some(
            libc::EMFILE
                | libc::ENFILE
                | libc::ENOBUFS
                | libc::ENOMEM
                | libc::EADDRNOTAVAIL
                | libc::EADDRINUSE
        )
    )
}

fn classify(e: io::Error) -> ConnectError {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ConnectError::Refused,
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => ConnectError::Reset,
        _ => ConnectError::Io(e),
    }
}

/// Open a TCP connection with a timeout, with Nagle off.
pub async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => return Err(ConnectError::Timeout(timeout)),
        Ok(Err(e)) => return Err(classify(e)),
        Ok(Ok(s)) => s,
    };
    // Latency matters more than packet count for request/response traffic.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Open an HTTP/1.1 connection to `addr`.
pub async fn connect_http(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
    Ok(Conn::new(dial(addr, timeout).await?))
}

struct Idle {
    conn: Conn,
    epoch: u64,
    since: Instant,
}

/// Idle keep-alive connections of one member, one list per worker thread.
pub struct ConnPool {
    slots: Box<[Mutex<Vec<Idle>>]>,
    max_idle: AtomicUsize,
    idle_timeout_ns: AtomicU64,
}

impl std::fmt::Debug for ConnPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool")
            .field("idle", &self.idle_count())
            .finish()
    }
}

impl ConnPool {
    /// A pool for `workers` threads keeping at most `max_idle` idle connections per thread.
    pub fn new(workers: usize, max_idle: usize, idle_timeout: Duration) -> ConnPool {
        ConnPool {
            slots: (0..workers.max(1))
                .map(|_| Mutex::new(Vec::new()))
                .collect(),
            max_idle: AtomicUsize::new(max_idle),
            idle_timeout_ns: AtomicU64::new(nanos(idle_timeout)),
        }
    }

    /// Change the limits (reload); idle connections beyond them go at the next sweep.
    pub fn set_limits(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.store(max_idle, Ordering::Relaxed);
        self.idle_timeout_ns
            .store(nanos(idle_timeout), Ordering::Relaxed);
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_nanos(self.idle_timeout_ns.load(Ordering::Relaxed))
    }

    fn slot(&self) -> &Mutex<Vec<Idle>> {
        &self.slots[worker() % self.slots.len()]
    }

    /// The most recently used idle connection of this worker that is still open and from
    /// `epoch`; stale ones found on the way are closed.
    pub fn checkout(&self, epoch: u64, now: Instant) -> Option<Conn> {
        let mut slot = self.slot().lock();
        while let Some(idle) = slot.pop() {
            if idle.epoch == epoch
                && now.saturating_duration_since(idle.since) < self.idle_timeout()
                && idle.conn.looks_alive()
            {
                return Some(idle.conn);
            }
        }
        None
    }

    /// Return a connection after a clean response.
    pub fn checkin(&self, conn: Conn, epoch: u64, now: Instant) {
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        if max_idle == 0 {
            return;
        }
        let mut slot = self.slot().lock();
        if slot.len() < max_idle {
            slot.push(Idle {
                conn,
                epoch,
                since: now,
            });
        }
    }

    /// Close every idle connection (the member went down or was removed).
    pub fn clear(&self) {
        for s in self.slots.iter() {
            // Dropping a connection closes its socket.
            s.lock().clear();
        }
    }

    /// Close idle connections older than the idle timeout or already closed by the peer.
    pub fn sweep(&self, now: Instant) {
        let timeout = self.idle_timeout();
        let max_idle = self.max_idle.load(Ordering::Relaxed);
        for s in self.slots.iter() {
            let mut slot = s.lock();
            slot.retain(|i| now.saturating_duration_since(i.since) < timeout);
            // Oldest first: trim from the front after a limit was lowered.
            let excess = slot.len().saturating_sub(max_idle);
            slot.drain(..excess);
        }
    }

    /// Idle connections across workers.
    pub fn idle_count(&self) -> usize {
        self.slots.iter().map(|s| s.lock().len()).sum()
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::{Blame, ErrorKind, Failure, Retry};
    use crate::lease::Lease;
    use hastack_core::health::Event;
    use tokio::net::TcpListener;

    /// A connected pair on loopback: our side as a `Conn`, and the member's side.
    async fn pair(l: &TcpListener) -> (Conn, TcpStream) {
        let ours = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (theirs, _) = l.accept().await.unwrap();
        (Conn::new(ours), theirs)
    }

    #[tokio::test]
    async fn no_pooled_connection_is_reused_across_a_members_failure() {
        let p = crate::pool::tests::pool(
            "members = [\"127.0.0.1:9001\"]\nslow_start = \"0s\"\n[proxy.pools.p.health]\nrise = 1",
        );
        let m = &p.members[0];
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let now = Instant::now();
        let e0 = m.epoch();
        // While the member is up, a pooled connection is handed out again.
        let (a, _a) = pair(&l).await;
        m.conns.checkin(a, e0, now);
        assert!(m.conns.checkout(e0, now).is_some());
        // When it fails, one connection is idle and one is held by a try in flight.
        let (b, _b) = pair(&l).await;
        m.conns.checkin(b, e0, now);
        let (c, _c) = pair(&l).await;
        let mut lease = Lease::begin(m.clone(), e0, now);
        lease.attach(c, now);
        lease.mark_reusable();
        let refused = Failure {
            kind: ErrorKind::ConnectRefused,
            blame: Blame::Upstream,
            retry: Retry::Unsent,
        };
        m.record(now, &refused);
        let e1 = m.epoch();
        assert!(e1 > e0, "a failure starts a new epoch");
        assert_eq!(
            m.conns.idle_count(),
            0,
            "idle connections are closed at once"
        );
        // The try in flight ends cleanly after the failure: its connection is returned
        // under its old epoch...
        drop(lease);
        // ...and the member comes back: still never handed out.
        m.report(now, Event::ProbeOk);
        assert_eq!(m.state(), hastack_core::health::State::Up);
        assert_eq!(m.epoch(), e1, "coming back does not need a new epoch");
        assert!(m.conns.checkout(m.epoch(), now).is_none());
        assert_eq!(
            m.conns.idle_count(),
            0,
            "the stale one was closed on the way"
        );
        // Connections of the new epoch are reused as usual.
        let (d, _d) = pair(&l).await;
        m.conns.checkin(d, e1, now);
        assert!(m.conns.checkout(e1, now).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire_and_the_limits_hold() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = ConnPool::new(1, 2, Duration::from_secs(20));
        let mut theirs = Vec::new();
        for _ in 0..3 {
            let (c, t) = pair(&l).await;
            theirs.push(t);
            pool.checkin(c, 0, Instant::now());
        }
        assert_eq!(pool.idle_count(), 2, "at most max_idle per worker");
        tokio::time::advance(Duration::from_secs(19)).await;
        let c = pool.checkout(0, Instant::now()).expect("still fresh");
        pool.checkin(c, 0, Instant::now());
        tokio::time::advance(Duration::from_secs(20)).await;
        // The one checked in 20 s ago is too old now; so is the other.
        assert!(pool.checkout(0, Instant::now()).is_none());
        assert_eq!(pool.idle_count(), 0);
        // A lowered limit trims at the next sweep, oldest first; the timeout too.
        for _ in 0..2 {
            let (c, t) = pair(&l).await;
            theirs.push(t);
            pool.checkin(c, 0, Instant::now());
        }
        pool.set_limits(1, Duration::from_secs(20));
        pool.sweep(Instant::now());
        assert_eq!(pool.idle_count(), 1);
        tokio::time::advance(Duration::from_secs(20)).await;
        pool.sweep(Instant::now());
        assert_eq!(pool.idle_count(), 0);
        // max_idle 0 keeps nothing.
        pool.set_limits(0, Duration::from_secs(20));
        let (c, _t) = pair(&l).await;
        pool.checkin(c, 0, Instant::now());
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_connection_the_member_closed_is_skipped() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = ConnPool::new(1, 4, Duration::from_secs(20));
        let (c, theirs) = pair(&l).await;
        pool.checkin(c, 0, Instant::now());
        drop(theirs);
        // The close reaches the worker's event loop (an event, awaited with a bound):
        // from then on the connection is never handed out.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match pool.checkout(0, Instant::now()) {
                None => break,
                Some(c) => {
                    assert!(Instant::now() < deadline, "the close was never noticed");
                    pool.checkin(c, 0, Instant::now());
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
        assert_eq!(pool.idle_count(), 0);
    }

    #[test]
    fn connect_errors_blame_the_right_party() {
        let f = ConnectError::Refused.failure();
        assert_eq!(
            (f.kind, f.blame),
            (ErrorKind::ConnectRefused, Blame::Upstream)
        );
        let f = ConnectError::Timeout(Duration::from_secs(1)).failure();
        assert_eq!(
            (f.kind, f.blame),
            (ErrorKind::ConnectTimeout, Blame::Upstream)
        );
        let f = ConnectError::Io(io::Error::from_raw_os_error(libc::EMFILE)).failure();
        assert_eq!((f.kind, f.blame), (ErrorKind::ConnectFailed, Blame::Local));
        let f = ConnectError::Io(io::Error::from_raw_os_error(libc::EHOSTUNREACH)).failure();
        assert_eq!(
            (f.kind, f.blame),
            (ErrorKind::ConnectFailed, Blame::Upstream)
        );
        for e in [
            ConnectError::Refused,
            ConnectError::Reset,
            ConnectError::Timeout(Duration::ZERO),
        ] {
            assert_eq!(e.failure().retry, Retry::Unsent, "nothing was sent: {e}");
        }
    }
}

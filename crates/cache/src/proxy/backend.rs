//! One worker's connection to one backend server, multiplexed: the requests of every
//! client of the worker are pipelined over it in arrival order and the answers handed back
//! in the same order (RESP answers come back in request order), like twemproxy.
//!
//! Failures are values ([`Failure`]) handed to every request they hit; the client decides
//! what they mean (a read: a miss; a write: an error). A refused or reset connect marks the
//! server down at once (passive detection). A request unanswered after `timeout` closes the
//! connection (its answer can no longer be matched) and fails every request on it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::debug;

use super::server::Server;
use crate::resp::{Limits, ProtocolError, Scanner, write};

/// Why a request got no answer from its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// Not connected and the connect failed: the request was never sent.
    Unavailable(String),
    /// The connection failed after the request was queued on it: it may have run.
    Lost(String),
    /// No answer within `timeout`.
    Timeout,
    /// The server sent malformed or oversized RESP.
    BadReply(ProtocolError),
}

/// A request for a backend connection.
#[derive(Debug)]
pub struct BackendRequest {
    /// The bytes to send (one command, or a `MULTI ... EXEC` batch).
    pub frame: Bytes,
    /// Answers the bytes produce; the last one is the request's answer.
    pub replies: usize,
    /// Where the answer goes.
    pub tx: oneshot::Sender<Result<Bytes, Failure>>,
    /// The client's output account.
    pub sink: Arc<Sink>,
}

/// A client's account of answers produced but not yet written to its socket: Redis's
/// `client-output-buffer-limit` (hard limit). Shared by the client task and every backend
/// connection that answers it, so answers waiting behind a slow one count too.
#[derive(Debug)]
pub struct Sink {
    held: AtomicUsize,
    limit: usize,
    over: AtomicBool,
    /// Wakes the client task when the limit is crossed.
    pub notify: Notify,
}

impl Sink {
    /// An empty account with a hard limit.
    pub fn new(limit: usize) -> Sink {
        Sink {
            held: AtomicUsize::new(0),
            limit,
            over: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    /// Count `n` more bytes held for the client; `false` (and the account is marked over
    /// its limit) when that would cross the limit: the bytes must then be dropped.
    pub fn admit(&self, n: usize) -> bool {
        if self.over.load(Ordering::Acquire) {
            return false;
        }
        let held = self.held.fetch_add(n, Ordering::AcqRel) + n;
        if held > self.limit {
            self.held.fetch_sub(n, Ordering::AcqRel);
            self.over.store(true, Ordering::Release);
            self.notify.notify_one();
            return false;
        }
        true
    }

    /// `n` bytes were written (or dropped).
    pub fn release(&self, n: usize) {
        self.held.fetch_sub(n, Ordering::AcqRel);
    }

    /// Whether the limit was crossed.
    pub fn over(&self) -> bool {
        self.over.load(Ordering::Acquire)
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held.load(Ordering::Acquire)
    }
}

/// How a backend connection behaves.
#[derive(Clone, Debug)]
pub struct BackendConfig {
    /// Bound on one request's wait for its answer.
    pub timeout: Duration,
    /// Bound on connecting (and authenticating).
    pub connect_timeout: Duration,
    /// Password sent on connect.
    pub password: Option<Bytes>,
    /// Framing limits for answers.
    pub limits: Limits,
}

struct InFlight {
    replies: usize,
    tx: oneshot::Sender<Result<Bytes, Failure>>,
    sink: Arc<Sink>,
    queued: Instant,
}

/// Stop taking requests off the channel while this much is waiting to be written.
const WRITE_HIGH_WATER: usize = 1024 * 1024;

/// Run the connection until every sender is gone.
pub async fn run(
    server: Arc<Server>,
    cfg: BackendConfig,
    mut rx: mpsc::UnboundedReceiver<BackendRequest>,
) {
    let mut inflight: VecDeque<InFlight> = VecDeque::new();
    let mut wbuf = BytesMut::new();
    let mut rbuf = BytesMut::with_capacity(16 * 1024);
    let mut scanner = Scanner::new();
    loop {
        // Disconnected: wait for work, then connect.
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut stream = match connect(&server, &cfg).await {
            Ok(s) => s,
            Err(Failure::Unavailable(detail)) => {
                fail_one(first, Failure::Unavailable(detail.clone()));
                while let Ok(r) = rx.try_recv() {
                    fail_one(r, Failure::Unavailable(detail.clone()));
                }
                continue;
            }
            Err(other) => {
                fail_one(first, other);
                continue;
            }
        };
        enqueue(first, &mut wbuf, &mut inflight);
        let failure = serve(
            &mut stream,
            &cfg,
            &mut rx,
            &mut wbuf,
            &mut rbuf,
            &mut scanner,
            &mut inflight,
        )
        .await;
        if failure == Failure::Timeout {
            server.suspect();
        }
        debug!(shard = %server.shard_name, addr = %server.addr, ?failure, failed = inflight.len(), "backend connection closed");
        for f in inflight.drain(..) {
            let _ = f.tx.send(Err(failure.clone()));
        }
        wbuf.clear();
        rbuf.clear();
        scanner.reset();
        if rx.is_closed() && rx.is_empty() {
            return;
        }
    }
}

/// Pump one connection until it fails; returns why.
async fn serve(
    stream: &mut TcpStream,
    cfg: &BackendConfig,
    rx: &mut mpsc::UnboundedReceiver<BackendRequest>,
    wbuf: &mut BytesMut,
    rbuf: &mut BytesMut,
    scanner: &mut Scanner,
    inflight: &mut VecDeque<InFlight>,
) -> Failure {
    let (mut rd, mut wr) = stream.split();
    let mut closed = false;
    // One timer for the oldest request's deadline, moved only when that deadline changes
    // (a new timer per wait would cost a timer-wheel registration per batch).
    let far = || Instant::now() + Duration::from_secs(24 * 3600);
    let mut armed: Option<Instant> = None;
    let mut timer = std::pin::pin!(tokio::time::sleep_until(far()));
    loop {
        if closed && inflight.is_empty() {
            return Failure::Lost("proxy shutting down".into());
        }
        let deadline = inflight.front().map(|f| f.queued + cfg.timeout);
        if deadline != armed {
            armed = deadline;
            timer.as_mut().reset(deadline.unwrap_or_else(far));
        }
        if rbuf.capacity() - rbuf.len() < 4096 {
            rbuf.reserve(16 * 1024);
        }
        tokio::select! {
            biased;
            r = rd.read_buf(rbuf) => {
                match r {
                    Ok(0) => return Failure::Lost("connection closed by the server".into()),
                    Err(e) => return Failure::Lost(format!("read: {e}")),
                    Ok(_) => {}
                }
                loop {
                    match scanner.scan(rbuf, &cfg.limits) {
                        Ok(Some(len)) => {
                            let frame = rbuf.split_to(len).freeze();
                            let Some(front) = inflight.front_mut() else {
                                return Failure::BadReply(ProtocolError::MissingCrlf("(an answer nobody asked for)"));
                            };
                            front.replies -= 1;
                            if front.replies == 0 {
                                if let Some(f) = inflight.pop_front() {
                                    deliver(f, frame);
                                }
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Failure::BadReply(e),
                    }
                }
            }
            r = wr.write(wbuf), if !wbuf.is_empty() => {
                match r {
                    Ok(0) => return Failure::Lost("write: connection closed".into()),
                    Ok(n) => { let _ = wbuf.split_to(n); }
                    Err(e) => return Failure::Lost(format!("write: {e}")),
                }
            }
            req = rx.recv(), if !closed && wbuf.len() < WRITE_HIGH_WATER => {
                match req {
                    Some(r) => {
                        enqueue(r, wbuf, inflight);
                        // Batch whatever else is queued into the same write.
                        while wbuf.len() < WRITE_HIGH_WATER {
                            match rx.try_recv() {
                                Ok(r) => enqueue(r, wbuf, inflight),
                                Err(_) => break,
                            }
                        }
                    }
                    None => closed = true,
                }
            }
            () = &mut timer, if armed.is_some() => return Failure::Timeout,
        }
    }
}

fn enqueue(r: BackendRequest, wbuf: &mut BytesMut, inflight: &mut VecDeque<InFlight>) {
    if r.tx.is_closed() {
        return; // the client is gone: do not send its request at all
    }
    wbuf.extend_from_slice(&r.frame);
    inflight.push_back(InFlight {
        replies: r.replies.max(1),
        tx: r.tx,
        sink: r.sink,
        queued: Instant::now(),
    });
}

fn deliver(f: InFlight, frame: Bytes) {
    let n = frame.len();
    if !f.sink.admit(n) {
        return; // over its output limit: the client is being disconnected
    }
    if f.tx.send(Ok(frame)).is_err() {
        f.sink.release(n);
    }
}

fn fail_one(r: BackendRequest, failure: Failure) {
    let _ = r.tx.send(Err(failure));
}

/// Connect (and authenticate) within `connect_timeout`. A refused or reset connect marks
/// the server down.
pub(crate) async fn connect(server: &Server, cfg: &BackendConfig) -> Result<TcpStream, Failure> {
    let attempt = async {
        let mut s = TcpStream::connect(server.addr)
            .await
            .map_err(|e| (true, format!("connect: {e}")))?;
        let _ = s.set_nodelay(true);
        if let Some(p) = &cfg.password {
            let mut out = BytesMut::new();
            write::command(&mut out, [&b"AUTH"[..], p].into_iter());
            s.write_all(&out)
                .await
                .map_err(|e| (true, format!("AUTH: {e}")))?;
            // The answer is one short line: read until its CRLF (bounded).
            let mut buf = Vec::with_capacity(64);
            while !buf.ends_with(b"\r\n") && buf.len() < 1024 {
                let mut byte = [0u8; 1];
                match s.read(&mut byte).await {
                    Ok(0) => return Err((true, "AUTH: connection closed".to_string())),
                    Ok(_) => buf.push(byte[0]),
                    Err(e) => return Err((true, format!("AUTH: {e}"))),
                }
            }
            if buf != b"+OK\r\n" {
                let text = String::from_utf8_lossy(&buf).trim().to_string();
                return Err((false, format!("AUTH refused: {text}")));
            }
        }
        Ok::<_, (bool, String)>(s)
    };
    match tokio::time::timeout(cfg.connect_timeout, attempt).await {
        Ok(Ok(s)) => Ok(s),
        Ok(Err((dead, detail))) => {
            if dead {
                server.connect_failed(&detail);
            }
            Err(Failure::Unavailable(detail))
        }
        Err(_) => {
            server.suspect();
            Err(Failure::Unavailable(format!(
                "connect timed out after {}",
                hastack_config::Dur(cfg.connect_timeout)
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_enforces_its_hard_limit() {
        let s = Sink::new(10);
        assert!(s.admit(6));
        assert!(s.admit(4));
        assert_eq!(s.held(), 10);
        assert!(!s.admit(1));
        assert!(s.over());
        // Once over, nothing more is admitted, even after bytes are released.
        s.release(10);
        assert!(!s.admit(1));
    }
}

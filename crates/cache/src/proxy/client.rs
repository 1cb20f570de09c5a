//! One client connection: parse requests (pipelined), route each (the session and
//! [`crate::route`] decide), send them to the backend connections of this worker, and write
//! the answers back in request order.
//!
//! Bounded everywhere: at most `max_pipeline` requests in flight (then the proxy stops
//! reading the client, which is TCP back-pressure, not an error), one request at most
//! `client_query_buffer_limit` bytes, answers waiting for the client at most
//! `client_output_buffer_limit` bytes (then the client is disconnected, as Redis does).

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tracing::{debug, info};

use super::Worker;
use super::backend::{BackendRequest, Failure, Sink};
use super::metrics::Disconnect;
use crate::command::{Access, Split};
use crate::config::ReadPolicy;
use crate::resp::{Request, RequestParser};
use crate::route::{self, Part, PartReply, Plan};
use crate::session::{Session, SessionConfig, Step};

/// Stop reading a client while this much is waiting to be written to it.
const OUT_HIGH_WATER: usize = 256 * 1024;

type Answer = oneshot::Receiver<Result<Bytes, Failure>>;

/// An answer owed to the client, in request order.
enum Pending {
    /// Known already.
    Ready(Bytes),
    /// One backend answer; on failure, the dead-shard answer of `access`.
    One {
        rx: Answer,
        shard: usize,
        access: Access,
        args: Vec<Bytes>,
    },
    /// A split command's parts.
    Split(Box<SplitState>),
}

struct SplitState {
    how: Split,
    access: Access,
    keys: usize,
    parts: Vec<Part>,
    rxs: Vec<Option<Answer>>,
    got: Vec<Option<PartReply>>,
}

/// What ends the normal loop.
enum Next {
    Close,
    Subscribe(Request, BytesMut),
}

/// Serve one client until it leaves, misbehaves, or the proxy shuts down.
pub async fn serve(mut stream: TcpStream, worker: Arc<Worker>) {
    let _ = stream.set_nodelay(true);
    let shared = worker.shared.clone();
    shared.metrics.clients.inc();
    let id = shared.next_client_id();
    let next = normal(&mut stream, &worker, id).await;
    if let Next::Subscribe(req, rest) = next {
        super::pubsub::tunnel(stream, &worker, req, rest).await;
    }
    shared.metrics.clients.dec();
}

async fn normal(stream: &mut TcpStream, worker: &Worker, id: u64) -> Next {
    let shared = &worker.shared;
    let spec = &shared.spec;
    let limits = spec.limits;
    let cfg = SessionConfig {
        password: spec.password.as_deref(),
        max_queued: limits.max_transaction,
        max_queued_bytes: limits.request.max_frame_len,
    };
    let mut session = Session::new(id, &cfg);
    let sink = Arc::new(Sink::new(limits.client_output_buffer_limit));
    let (mut rd, mut wr) = stream.split();
    let mut inbuf = BytesMut::with_capacity(16 * 1024);
    let mut parser = RequestParser::new();
    let mut pending: VecDeque<Pending> = VecDeque::new();
    // Answers ready to write, as received (no copy), and those that became ready during
    // one wait, appended to `out` after it.
    let mut out = OutQueue::default();
    let mut staged = OutQueue::default();
    let mut closing = false;
    let mut eof = false;
    let mut subscribe: Option<Request> = None;
    // Registered once for the connection's life, not once per wait: each registration
    // takes a lock.
    let shutdown = shared.shutdown.clone();
    let mut shutdown = std::pin::pin!(shutdown.cancelled());
    let mut over_limit = std::pin::pin!(sink.notify.notified());
    loop {
        while !closing
            && subscribe.is_none()
            && pending.len() < limits.max_pipeline
            && out.len() < OUT_HIGH_WATER
        {
            match parser.parse(&mut inbuf, &limits.request) {
                Ok(Some(req)) => match dispatch(worker, &mut session, &cfg, &sink, req) {
                    Dispatched::Pending(p) => pending.push_back(p),
                    Dispatched::Close(p) => {
                        pending.push_back(p);
                        closing = true;
                    }
                    Dispatched::Subscribe(req) => subscribe = Some(req),
                },
                Ok(None) => break,
                Err(e) => {
                    info!(client = id, error = %e, "protocol error from client: closing");
                    shared.metrics.disconnect(Disconnect::protocol_error);
                    pending.push_back(Pending::Ready(e.to_reply()));
                    closing = true;
                }
            }
        }
        if sink.over() {
            info!(
                client = id,
                limit = limits.client_output_buffer_limit,
                "client does not read its answers: output buffer limit reached, disconnecting"
            );
            shared.metrics.disconnect(Disconnect::output_limit);
            return Next::Close;
        }
        if pending.is_empty() && out.is_empty() {
            if closing || eof {
                let _ = wr.shutdown().await;
                return Next::Close;
            }
            if let Some(req) = subscribe.take() {
                return Next::Subscribe(req, inbuf);
            }
        }
        let reading = !closing
            && !eof
            && subscribe.is_none()
            && pending.len() < limits.max_pipeline
            && out.len() < OUT_HIGH_WATER;
        // Read into at least 16 KiB of room: `read_buf` on a full buffer reads 64 bytes.
        if inbuf.capacity() - inbuf.len() < 4096 {
            inbuf.reserve(16 * 1024);
        }
        tokio::select! {
            biased;
            () = &mut over_limit, if !sink.over() => {}
            () = poll_fn(|cx| drain_ready(worker, &mut pending, &mut staged, &sink, cx)), if !pending.is_empty() => {
                out.append(&mut staged);
            }
            r = write_some(&mut wr, &out), if !out.is_empty() => match r {
                Ok(n) if n > 0 => {
                    out.advance(n);
                    sink.release(n);
                }
                _ => return Next::Close,
            },
            r = rd.read_buf(&mut inbuf), if reading => match r {
                Ok(0) => eof = true,
                Ok(_) => {}
                Err(e) => {
                    debug!(client = id, error = %e, "client read failed");
                    return Next::Close;
                }
            },
            () = &mut shutdown, if !closing => closing = true,
        }
    }
}

/// Answers waiting to be written, kept as the `Bytes` they arrived in and written with
/// vectored writes, so a large answer is never copied.
#[derive(Default)]
struct OutQueue {
    bufs: VecDeque<Bytes>,
    len: usize,
}

impl OutQueue {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.len += b.len();
            self.bufs.push_back(b);
        }
    }

    fn append(&mut self, other: &mut OutQueue) {
        self.len += other.len;
        other.len = 0;
        self.bufs.append(&mut other.bufs);
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `n` bytes were written.
    fn advance(&mut self, mut n: usize) {
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.bufs.front_mut() else {
                return;
            };
            if n >= front.len() {
                n -= front.len();
                self.bufs.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
}

/// One vectored write of up to 64 answers.
async fn write_some(
    wr: &mut tokio::net::tcp::WriteHalf<'_>,
    out: &OutQueue,
) -> std::io::Result<usize> {
    let slices: Vec<std::io::IoSlice<'_>> = out
        .bufs
        .iter()
        .take(64)
        .map(|b| std::io::IoSlice::new(b))
        .collect();
    wr.write_vectored(&slices).await
}

enum Dispatched {
    Pending(Pending),
    Close(Pending),
    Subscribe(Request),
}

fn dispatch(
    worker: &Worker,
    session: &mut Session,
    cfg: &SessionConfig<'_>,
    sink: &Arc<Sink>,
    req: Request,
) -> Dispatched {
    let shared = &worker.shared;
    let step = session.step(&req, &shared.spec.slots, cfg);
    let pending = match step {
        Step::Reply(b) => Pending::Ready(b),
        Step::Close(b) => return Dispatched::Close(Pending::Ready(b)),
        Step::Info => Pending::Ready(super::info_text(shared)),
        Step::Exec {
            shard,
            batch,
            replies,
        } => send(
            worker,
            sink,
            shard,
            Access::Write,
            batch,
            replies,
            Vec::new(),
        ),
        Step::Route(plan) => match plan {
            Plan::Reply(b) => Pending::Ready(b),
            Plan::Shard { shard, access } => {
                send(worker, sink, shard, access, req.frame, 1, req.args)
            }
            Plan::Split {
                how,
                access,
                keys,
                parts,
            } => split(worker, sink, how, access, keys, parts),
            Plan::AnyServer => match shared.shards.iter().position(|s| s.master.usable()) {
                Some(shard) => send(
                    worker,
                    sink,
                    shard,
                    Access::Read(None),
                    req.frame,
                    1,
                    req.args,
                ),
                None => Pending::Ready(route::error("ERR no shard available")),
            },
            Plan::PubSub => {
                let shard = shared.spec.pubsub_shard;
                send(worker, sink, shard, Access::Write, req.frame, 1, req.args)
            }
            Plan::Subscribe => return Dispatched::Subscribe(req),
            Plan::Local(_) => Pending::Ready(route::error(
                "ERR internal: a local command reached the router",
            )),
        },
    };
    Dispatched::Pending(pending)
}

/// The server of `shard` that serves `access` now, if any.
fn pick(worker: &Worker, shard: usize, access: Access) -> Option<usize> {
    let s = worker.shared.shards.get(shard)?;
    let read = matches!(access, Access::Read(_));
    if read && worker.shared.spec.read_policy == ReadPolicy::PreferReplica && !s.replicas.is_empty()
    {
        let n = s.replicas.len();
        let start = s.next_replica();
        if let Some(r) = (0..n)
            .map(|i| &s.replicas[(start + i) % n])
            .find(|r| r.usable())
        {
            return Some(r.id);
        }
    }
    s.master.usable().then_some(s.master.id)
}

fn submit(
    worker: &Worker,
    sink: &Arc<Sink>,
    server: usize,
    frame: Bytes,
    replies: usize,
) -> Answer {
    let (tx, rx) = oneshot::channel();
    if let Some(conn) = worker.backends.get(server) {
        // A send error drops `tx`: the answer reads as a failure.
        let _ = conn.send(BackendRequest {
            frame,
            replies,
            tx,
            sink: sink.clone(),
        });
    }
    rx
}

fn send(
    worker: &Worker,
    sink: &Arc<Sink>,
    shard: usize,
    access: Access,
    frame: Bytes,
    replies: usize,
    args: Vec<Bytes>,
) -> Pending {
    let shared = &worker.shared;
    let Some(server) = pick(worker, shard, access) else {
        return Pending::Ready(dead_shard(worker, shard, access, &args));
    };
    if let Some(m) = shared.metrics.shards.get(shard) {
        m.requests.inc();
    }
    Pending::One {
        rx: submit(worker, sink, server, frame, replies),
        shard,
        access,
        args,
    }
}

fn split(
    worker: &Worker,
    sink: &Arc<Sink>,
    how: Split,
    access: Access,
    keys: usize,
    parts: Vec<Part>,
) -> Pending {
    let shared = &worker.shared;
    let mut rxs = Vec::with_capacity(parts.len());
    let mut got = Vec::with_capacity(parts.len());
    for part in &parts {
        match pick(worker, part.shard, access) {
            Some(server) => {
                if let Some(m) = shared.metrics.shards.get(part.shard) {
                    m.requests.inc();
                }
                rxs.push(Some(submit(worker, sink, server, part.frame.clone(), 1)));
                got.push(None);
            }
            None => {
                count_dead(worker, part.shard, access, part.positions.len());
                rxs.push(None);
                got.push(Some(PartReply::Unavailable));
            }
        }
    }
    Pending::Split(Box::new(SplitState {
        how,
        access,
        keys,
        parts,
        rxs,
        got,
    }))
}

fn count_dead(worker: &Worker, shard: usize, access: Access, keys: usize) {
    if let Some(m) = worker.shared.metrics.shards.get(shard) {
        match access {
            Access::Read(Some(_)) => m.misses.inc_by(keys.max(1) as u64),
            _ => m.rejected.inc(),
        };
    }
}

fn dead_shard(worker: &Worker, shard: usize, access: Access, args: &[Bytes]) -> Bytes {
    let keys = match crate::command::lookup(args.first().map_or(&[][..], |a| &a[..])) {
        Some(spec) => crate::command::key_positions(spec.keys, args)
            .map(|k| k.len())
            .unwrap_or(1),
        None => 1,
    };
    count_dead(worker, shard, access, keys);
    route::dead_shard_answer(access, args, worker.shared.shard_name(shard))
}

/// Move every answer that is ready at the front of `pending` into `out`. Ready when at
/// least one moved.
fn drain_ready(
    worker: &Worker,
    pending: &mut VecDeque<Pending>,
    out: &mut OutQueue,
    sink: &Sink,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let mut moved = false;
    while let Some(front) = pending.front_mut() {
        let Poll::Ready((bytes, counted)) = poll_one(worker, front, cx) else {
            break;
        };
        pending.pop_front();
        // Re-count: backend answers were counted when delivered; joined and local ones
        // are counted now, at their final size.
        sink.release(counted);
        if !sink.admit(bytes.len()) {
            return Poll::Ready(());
        }
        out.push(bytes);
        moved = true;
    }
    if moved {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// Poll one pending answer: its bytes and how many bytes of it the sink already counts.
fn poll_one(worker: &Worker, p: &mut Pending, cx: &mut Context<'_>) -> Poll<(Bytes, usize)> {
    match p {
        Pending::Ready(b) => Poll::Ready((std::mem::take(b), 0)),
        Pending::One {
            rx,
            shard,
            access,
            args,
        } => match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(bytes))) => {
                let n = bytes.len();
                Poll::Ready((bytes, n))
            }
            Poll::Ready(Ok(Err(failure))) => {
                failed(worker, *shard, &failure);
                Poll::Ready((dead_shard(worker, *shard, *access, args), 0))
            }
            Poll::Ready(Err(_)) => Poll::Ready((dead_shard(worker, *shard, *access, args), 0)),
        },
        Pending::Split(s) => {
            let mut waiting = false;
            for i in 0..s.rxs.len() {
                let Some(rx) = s.rxs[i].as_mut() else {
                    continue;
                };
                match Pin::new(rx).poll(cx) {
                    Poll::Pending => waiting = true,
                    Poll::Ready(r) => {
                        s.rxs[i] = None;
                        let shard = s.parts[i].shard;
                        s.got[i] = Some(match r {
                            Ok(Ok(bytes)) => PartReply::Reply(bytes),
                            Ok(Err(failure)) => {
                                failed(worker, shard, &failure);
                                count_dead(worker, shard, s.access, s.parts[i].positions.len());
                                PartReply::Unavailable
                            }
                            Err(_) => PartReply::Unavailable,
                        });
                    }
                }
            }
            if waiting {
                return Poll::Pending;
            }
            let counted = s
                .got
                .iter()
                .map(|g| match g {
                    Some(PartReply::Reply(b)) => b.len(),
                    _ => 0,
                })
                .sum();
            let replies = s
                .got
                .iter_mut()
                .map(|g| g.take().unwrap_or(PartReply::Unavailable))
                .collect();
            let names: Vec<&str> = (0..worker.shared.shards.len())
                .map(|i| worker.shared.shard_name(i))
                .collect();
            Poll::Ready((
                route::join(s.how, s.access, s.keys, &s.parts, replies, &names),
                counted,
            ))
        }
    }
}

fn failed(worker: &Worker, shard: usize, failure: &Failure) {
    if let Some(m) = worker.shared.metrics.shards.get(shard) {
        m.errors.inc();
    }
    debug!(
        shard = worker.shared.shard_name(shard),
        ?failure,
        "request failed"
    );
}

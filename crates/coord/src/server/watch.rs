//! Watch streams of the embedded store.
//!
//! One task per `Watch` RPC serves every watcher created on it. Watchers *pull*: each keeps
//! the next revision it owes its client and reads the history table from there whenever the
//! store's revision moves past it. So a slow client never makes the server buffer events (its
//! task just falls behind and reads later, in bounded batches), a watcher starting in the past
//! is the same code as a live one, and compaction is detected in the same read snapshot as the
//! events (no event silently skipped).
//!
//! Ordering guarantees (etcd's): a watcher's events come in revision order, each exactly once,
//! never split within a revision; the `created` answer precedes its events; a progress answer
//! (`watch_id` -1, or a watcher's own progress notification) promises that every event at or
//! below its header revision has been sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::ServeError;
use super::grpc::Services;
use super::store::{HistoryRead, KeyRange, read_history};
use crate::proto::etcdserverpb::{self as pb, watch_create_request::FilterType, watch_request};
use crate::proto::mvccpb::event::EventType;

/// Most events in one watch response (a revision is never split, so one may hold more).
const MAX_EVENTS: usize = 1000;
/// Bytes of events after which a response is closed (at a revision boundary).
const MAX_BYTES: usize = 2 * 1024 * 1024;
/// Responses queued per stream for a slow client before its task waits.
const QUEUE: usize = 4;

/// Limits shared by every watch stream.
#[derive(Debug, Clone)]
pub struct WatchLimits {
    /// Most watchers over every stream.
    pub max_watchers: usize,
    /// Interval of progress notifications.
    pub progress_notify: Duration,
    /// Watchers alive now.
    pub active: Arc<AtomicUsize>,
}

struct Watcher {
    id: i64,
    key: Vec<u8>,
    end: Vec<u8>,
    /// The next revision this watcher owes its client.
    next: i64,
    prev_kv: bool,
    no_put: bool,
    no_delete: bool,
    progress: bool,
}

type Out = mpsc::Sender<Result<pb::WatchResponse, Status>>;

/// Serve one `Watch` RPC; returns the stream of responses.
pub fn spawn_stream(
    svc: Services,
    inbound: Streaming<pb::WatchRequest>,
) -> mpsc::Receiver<Result<pb::WatchResponse, Status>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    tokio::spawn(async move {
        svc.core.metrics.watch_streams.inc();
        let mut s = Stream {
            svc: svc.clone(),
            watchers: Vec::new(),
            next_id: 0,
        };
        s.run(inbound, &tx).await;
        let n = s.watchers.len();
        svc.watch.active.fetch_sub(n, Ordering::Relaxed);
        svc.core.metrics.watchers.dec_by(n as i64);
        svc.core.metrics.watch_streams.dec();
    });
    rx
}

struct Stream {
    svc: Services,
    watchers: Vec<Watcher>,
    next_id: i64,
}

/// The stream ended (client gone, server stopping): stop serving it.
struct Closed;

impl Stream {
    async fn run(&mut self, mut inbound: Streaming<pb::WatchRequest>, tx: &Out) {
        let mut revs = self.svc.core.revs();
        let mut tick = tokio::time::interval(self.svc.watch.progress_notify);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            if self.catch_up(tx).await.is_err() {
                return;
            }
            tokio::select! {
                msg = inbound.next() => match msg {
                    Some(Ok(req)) => if self.handle(req, tx).await.is_err() { return },
                    // The client closed its side or the connection broke.
                    Some(Err(_)) | None => return,
                },
                changed = revs.changed() => if changed.is_err() {
                    let _ = tx.send(Err(ServeError::Stopping.status())).await;
                    return;
                },
                _ = tick.tick() => if self.progress_notify(tx).await.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    }

    fn current(&self) -> i64 {
        self.svc.core.revs().borrow().revision
    }

    async fn send(&self, tx: &Out, r: pb::WatchResponse) -> Result<(), Closed> {
        tx.send(Ok(r)).await.map_err(|_| Closed)
    }

    fn response(&self, id: i64, revision: i64) -> pb::WatchResponse {
        pb::WatchResponse {
            header: self.svc.watch_header(revision),
            watch_id: id,
            ..Default::default()
        }
    }

    /// Send every watcher its events up to the current revision.
    async fn catch_up(&mut self, tx: &Out) -> Result<(), Closed> {
        let cur = self.current();
        let mut i = 0;
        while i < self.watchers.len() {
            if self.watchers[i].next > cur {
                i += 1;
                continue;
            }
            match self.read(i, cur).await {
                Ok(HistoryRead::Events(events, last)) => {
                    self.watchers[i].next = last + 1;
                    if !events.is_empty() {
                        let mut r = self.response(self.watchers[i].id, cur);
                        r.events = events;
                        self.send(tx, r).await?;
                    }
                    // Loop on the same watcher until it is caught up (bounded batches).
                }
                Ok(HistoryRead::Compacted(compact)) => {
                    let w = self.remove(i);
                    let mut r = self.response(w.id, cur);
                    r.compact_revision = compact;
                    r.canceled = true;
                    r.cancel_reason =
                        "etcdserver: mvcc: required revision has been compacted".into();
                    self.send(tx, r).await?;
                }
                Err(e) => {
                    let _ = tx.send(Err(e.status())).await;
                    return Err(Closed);
                }
            }
        }
        Ok(())
    }

    async fn read(&self, i: usize, cur: i64) -> Result<HistoryRead, ServeError> {
        let w = &self.watchers[i];
        let (db, key, end, from) = (
            self.svc.core.db().clone(),
            w.key.clone(),
            w.end.clone(),
            w.next,
        );
        let (prev_kv, no_put, no_delete) = (w.prev_kv, w.no_put, w.no_delete);
        let read = tokio::task::spawn_blocking(move || {
            read_history(
                &db,
                &KeyRange::new(&key, &end),
                from,
                cur,
                MAX_EVENTS,
                MAX_BYTES,
            )
        })
        .await
        .map_err(|e| ServeError::Storage(format!("history read failed: {e}")))??;
        Ok(match read {
            HistoryRead::Events(mut events, last) => {
                events.retain(|e| {
                    let put = e.r#type == EventType::Put as i32;
                    !(put && no_put || !put && no_delete)
                });
                if !prev_kv {
                    for e in &mut events {
                        e.prev_kv = None;
                    }
                }
                HistoryRead::Events(events, last)
            }
            c => c,
        })
    }

    fn remove(&mut self, i: usize) -> Watcher {
        self.svc.watch.active.fetch_sub(1, Ordering::Relaxed);
        self.svc.core.metrics.watchers.dec();
        self.watchers.remove(i)
    }

    async fn handle(&mut self, req: pb::WatchRequest, tx: &Out) -> Result<(), Closed> {
        match req.request_union {
            Some(watch_request::RequestUnion::CreateRequest(c)) => self.create(c, tx).await,
            Some(watch_request::RequestUnion::CancelRequest(c)) => {
                if let Some(i) = self.watchers.iter().position(|w| w.id == c.watch_id) {
                    self.remove(i);
                }
                let mut r = self.response(c.watch_id, self.current());
                r.canceled = true;
                self.send(tx, r).await
            }
            Some(watch_request::RequestUnion::ProgressRequest(_)) => {
                // Everything up to the current revision goes out first, so the promise holds.
                let cur = self.current();
                self.catch_up(tx).await?;
                self.send(tx, self.response(-1, cur)).await
            }
            None => Ok(()),
        }
    }

    async fn create(&mut self, c: pb::WatchCreateRequest, tx: &Out) -> Result<(), Closed> {
        let cur = self.current();
        let id = if c.watch_id > 0 {
            c.watch_id
        } else {
            while self.watchers.iter().any(|w| w.id == self.next_id) {
                self.next_id += 1;
            }
            self.next_id
        };
        let refuse = |reason: String| {
            let mut r = self.response(id, cur);
            r.created = true;
            r.canceled = true;
            r.cancel_reason = reason;
            r
        };
        if c.key.is_empty() {
            return self
                .send(tx, refuse("etcdserver: key is not provided".into()))
                .await;
        }
        if self.watchers.iter().any(|w| w.id == id) {
            return self
                .send(
                    tx,
                    refuse(format!(
                        "hastack coord: watch id {id} is in use on this stream"
                    )),
                )
                .await;
        }
        let limit = self.svc.watch.max_watchers;
        if self.svc.watch.active.fetch_add(1, Ordering::Relaxed) >= limit {
            self.svc.watch.active.fetch_sub(1, Ordering::Relaxed);
            let msg = ServeError::TooManyWatchers(limit)
                .status()
                .message()
                .to_string();
            return self.send(tx, refuse(msg)).await;
        }
        self.svc.core.metrics.watchers.inc();
        if c.watch_id <= 0 {
            self.next_id += 1;
        }
        let filters = |f: FilterType| c.filters.contains(&(f as i32));
        self.watchers.push(Watcher {
            id,
            next: if c.start_revision > 0 {
                c.start_revision
            } else {
                cur + 1
            },
            no_put: filters(FilterType::Noput),
            no_delete: filters(FilterType::Nodelete),
            prev_kv: c.prev_kv,
            progress: c.progress_notify,
            key: c.key,
            end: c.range_end,
        });
        let mut r = self.response(id, cur);
        r.created = true;
        self.send(tx, r).await
    }

    async fn progress_notify(&mut self, tx: &Out) -> Result<(), Closed> {
        let cur = self.current();
        self.catch_up(tx).await?;
        let ids: Vec<i64> = self
            .watchers
            .iter()
            .filter(|w| w.progress && w.next > cur)
            .map(|w| w.id)
            .collect();
        for id in ids {
            self.send(tx, self.response(id, cur)).await?;
        }
        Ok(())
    }
}

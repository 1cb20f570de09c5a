//! Resumable watches: every change to a key or prefix, in revision order, each exactly once,
//! across reconnects and endpoint failover.
//!
//! The watch remembers the next revision it owes its caller. When the stream breaks (member
//! killed, frozen, cut off from its quorum: etcd cancels watches on a member without a leader
//! because the client asks it to with `hasleader`), it reconnects, to another member if need
//! be, and asks for history from that revision; events below it are dropped if a server sends
//! them again. If that revision has been compacted meanwhile, [`Watch::next`] returns
//! [`Error::Compacted`]: the caller must list again and watch from the listing's revision + 1
//! (nothing can be replayed that the store no longer has).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use crate::client::{Client, MAX_RESPONSE_BYTES};
use crate::error::Error;
use crate::proto::etcdserverpb::{self as pb, watch_client::WatchClient, watch_request};
use crate::types::{Event, prefix_end};

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    key: Vec<u8>,
    range_end: Vec<u8>,
    start_revision: i64,
    prev_kv: bool,
}

impl WatchSpec {
    /// One key.
    pub fn key(key: impl AsRef<[u8]>) -> WatchSpec {
        WatchSpec {
            key: key.as_ref().to_vec(),
            range_end: Vec::new(),
            start_revision: 0,
            prev_kv: false,
        }
    }

    /// Every key under `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> WatchSpec {
        let p = prefix.as_ref();
        WatchSpec {
            key: p.to_vec(),
            range_end: prefix_end(p),
            start_revision: 0,
            prev_kv: false,
        }
    }

    /// Start at `revision` (inclusive) instead of "changes after now". Typically a listing's
    /// revision + 1.
    pub fn from_revision(mut self, revision: i64) -> WatchSpec {
        self.start_revision = revision;
        self
    }

    /// Include each key's previous value in events.
    pub fn with_prev_kv(mut self) -> WatchSpec {
        self.prev_kv = true;
        self
    }
}

/// A batch of events, all from revisions not seen before, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchBatch {
    /// The events.
    pub events: Vec<Event>,
    /// The server's revision when it sent them.
    pub header_revision: i64,
}

struct Live {
    url: String,
    _requests: mpsc::Sender<pb::WatchRequest>,
    responses: Streaming<pb::WatchResponse>,
}

/// A resumable watch. Dropping it cancels the server-side watcher (its stream closes).
pub struct Watch {
    client: Client,
    spec: WatchSpec,
    /// The next revision owed to the caller; 0 until the first stream said where "now" is.
    next: i64,
    live: Option<Live>,
    /// Reconnections so far (for tests and metrics).
    reconnects: u64,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("spec", &self.spec)
            .field("next", &self.next)
            .field("connected", &self.live.is_some())
            .finish()
    }
}

impl Client {
    /// Start watching; returns once the server has created the watcher (so every change after
    /// this returns is seen).
    pub async fn watch(&self, spec: WatchSpec) -> Result<Watch, Error> {
        let mut w = Watch {
            client: self.clone(),
            next: spec.start_revision.max(0),
            spec,
            live: None,
            reconnects: 0,
        };
        w.connect().await?;
        Ok(w)
    }
}

impl Watch {
    /// The next revision the watch will deliver (every event below it has been delivered).
    pub fn next_revision(&self) -> i64 {
        self.next
    }

    /// How many times the stream was re-established.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    async fn connect(&mut self) -> Result<(), Error> {
        let deadline = Instant::now() + self.client.timeout();
        let mut rng = fastrand::Rng::new();
        let mut attempt = 0u32;
        loop {
            let err = match self.client.channel(deadline).await {
                Err(e) => e,
                Ok((url, ch)) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    let cap = left.min(self.client.options().attempt_timeout);
                    match tokio::time::timeout(cap, self.open(url.clone(), ch)).await {
                        Ok(Ok(())) => return Ok(()),
                        Ok(Err(e @ (Error::Compacted { .. } | Error::WatchCanceled(_)))) => {
                            return Err(e);
                        }
                        Ok(Err(e)) => {
                            self.client.failed(&url);
                            e
                        }
                        Err(_) => {
                            self.client.failed(&url);
                            Error::Unknown {
                                endpoint: url,
                                what: format!("watch not created within {cap:?}"),
                            }
                        }
                    }
                }
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(err);
            }
            let pause = self.client.options().backoff.delay(attempt, &mut rng);
            tokio::time::sleep(pause.min(deadline - now)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    async fn open(&mut self, url: String, ch: tonic::transport::Channel) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel(4);
        let create = pb::WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: self.spec.key.clone(),
                    range_end: self.spec.range_end.clone(),
                    start_revision: self.next,
                    progress_notify: true,
                    prev_kv: self.spec.prev_kv,
                    ..Default::default()
                },
            )),
        };
        tx.send(create)
            .await
            .map_err(|_| Error::Invalid("watch request channel closed".into()))?;
        let mut req = tonic::Request::new(ReceiverStream::new(rx));
        // etcd: cancel this watch when the member loses its leader, so that a member cut off
        // from the quorum does not leave us waiting on a stream that will never see a change.
        req.metadata_mut().insert(
            "hasleader",
            tonic::metadata::MetadataValue::from_static("true"),
        );
        let mut responses = WatchClient::new(ch)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .watch(req)
            .await
            .map_err(|s| Error::from_status(&url, &s))?
            .into_inner();
        let first = responses
            .message()
            .await
            .map_err(|s| Error::from_status(&url, &s))?
            .ok_or_else(|| Error::Unknown {
                endpoint: url.clone(),
                what: "watch stream closed before the watcher was created".into(),
            })?;
        if first.canceled || first.compact_revision > 0 {
            return Err(canceled(&first));
        }
        if !first.created {
            return Err(Error::Protocol {
                endpoint: url,
                what: "the first watch answer is not `created`".into(),
            });
        }
        let rev = first.header.as_ref().map_or(0, |h| h.revision);
        if self.next == 0 {
            if rev <= 0 {
                return Err(Error::Protocol {
                    endpoint: url,
                    what: "watch created without a revision".into(),
                });
            }
            self.next = rev + 1;
        }
        self.live = Some(Live {
            url,
            _requests: tx,
            responses,
        });
        Ok(())
    }

    /// The next batch of new events. Reconnects as needed; returns an error when it cannot
    /// reconnect within the client's call timeout (calling again keeps trying from the same
    /// revision), or when the history it needs is compacted ([`Error::Compacted`]).
    pub async fn next(&mut self) -> Result<WatchBatch, Error> {
        loop {
            if self.live.is_none() {
                self.reconnects += 1;
                self.connect().await?;
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            let msg = live.responses.message().await;
            let url = live.url.clone();
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled || resp.compact_revision > 0 {
                        self.live = None;
                        let e = canceled(&resp);
                        if matches!(e, Error::Compacted { .. }) {
                            return Err(e);
                        }
                        // A member that lost its leader cancels with a reason; go elsewhere.
                        self.client.failed(&url);
                        tracing::debug!(endpoint = %url, error = %e, "watch canceled; reconnecting");
                        continue;
                    }
                    let header_revision = resp.header.as_ref().map_or(0, |h| h.revision);
                    let mut events = Vec::with_capacity(resp.events.len());
                    for e in resp.events {
                        let e = Event::from_proto(e).map_err(|what| Error::Protocol {
                            endpoint: url.clone(),
                            what,
                        })?;
                        if e.revision() < self.next {
                            continue; // sent again after a reconnect
                        }
                        if let Some(last) = events.last().map(Event::revision) {
                            if e.revision() < last {
                                return Err(Error::Protocol {
                                    endpoint: url,
                                    what: format!(
                                        "events out of order ({} after {last})",
                                        e.revision()
                                    ),
                                });
                            }
                        }
                        events.push(e);
                    }
                    if let Some(last) = events.last() {
                        self.next = last.revision() + 1;
                        return Ok(WatchBatch {
                            events,
                            header_revision,
                        });
                    }
                    // A progress notification: nothing at or below the header revision is
                    // still to come.
                    if header_revision >= self.next {
                        self.next = header_revision + 1;
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::debug!(endpoint = %url, "watch stream broke; resuming from revision {}", self.next);
                    self.live = None;
                    self.client.failed(&url);
                }
            }
        }
    }

    /// [`Watch::next`] with a timeout: `Ok(None)` when nothing came within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<WatchBatch>, Error> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }
}

fn canceled(r: &pb::WatchResponse) -> Error {
    if r.compact_revision > 0 {
        Error::Compacted {
            compact_revision: r.compact_revision,
        }
    } else if r.cancel_reason.is_empty() {
        Error::WatchCanceled("canceled without a reason".into())
    } else {
        Error::WatchCanceled(r.cancel_reason.clone())
    }
}

//! The client: one code path for etcd and the embedded store (both speak etcd v3 gRPC).
//!
//! **Endpoints and failover.** The client keeps one HTTP/2 connection, to the endpoint it
//! last reached. A call that cannot connect tries the next endpoint at once; when a round of
//! every endpoint fails it backs off (jittered, bounded: [`hastack_core::Backoff`]) and tries
//! again until the call's deadline. A call that was sent and then failed (connection broken,
//! member cut off from its quorum) drops that connection so the next call may pick another
//! member, and is retried only when that is safe:
//!
//! * reads (`get`, `list`, `time_to_live`, ...) are retried on another endpoint;
//! * writes are retried only when they were certainly not sent (connect refused, no
//!   connection); otherwise the caller gets [`Error::Unknown`] with [`Retry::IfIdempotent`]
//!   and decides (a CAS can read back its key, a put of the same value can simply repeat).
//!   That is the etcd Go client's rule too: it never resends a mutation whose fate is unknown.
//!
//! **Deadlines.** Every call has one ([`ClientOptions::call_timeout`], overridable with
//! [`Client::with_timeout`]); each attempt on one endpoint is further capped by
//! [`ClientOptions::attempt_timeout`] so a frozen member costs one attempt, not the call.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hastack_core::Backoff;
use parking_lot::Mutex;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Retry};
use crate::proto::etcdserverpb as pb;
use crate::proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
};
use crate::txn::{Txn, TxnResult};
use crate::types::{KeyValue, LeaseGrant, LeaseInfo, Listing, MemberStatus, prefix_end};

/// Largest answer the client decodes (a hostile or broken server cannot make it allocate
/// more per message). Wide enough for big listings and watch batches.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Client settings. Defaults are written here once.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Deadline of one call, retries included.
    pub call_timeout: Duration,
    /// Deadline of one attempt on one endpoint.
    pub attempt_timeout: Duration,
    /// Deadline to establish a connection to one endpoint.
    pub connect_timeout: Duration,
    /// Back-off between rounds over every endpoint.
    pub backoff: Backoff,
    /// HTTP/2 keep-alive ping interval; a dead or frozen member is noticed within about
    /// twice this on long-lived streams (watches, lease keep-alives).
    pub keepalive: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            call_timeout: Duration::from_secs(5),
            attempt_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(1),
            backoff: Backoff::new(Duration::from_millis(25), Duration::from_millis(500)),
            keepalive: Duration::from_secs(2),
        }
    }
}

struct Conn {
    endpoints: Vec<String>,
    /// The endpoint to try first, and its connection if one is up.
    current: usize,
    channel: Option<Channel>,
}

struct Inner {
    conn: Mutex<Conn>,
    options: ClientOptions,
}

/// A coord client. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoints", &self.inner.conn.lock().endpoints)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Whether a call changes the store (decides what may be retried).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Read,
    Write,
}

impl Client {
    /// A client over `endpoints` (`http://host:port` or `host:port`), in order of preference.
    /// Nothing is connected until the first call.
    pub fn new(endpoints: &[impl AsRef<str>], options: ClientOptions) -> Result<Client, Error> {
        if endpoints.is_empty() {
            return Err(Error::Invalid("no coord endpoint given".into()));
        }
        let mut eps = Vec::new();
        for e in endpoints {
            let e = e.as_ref().trim();
            let url = if e.contains("://") {
                e.to_string()
            } else {
                format!("http://{e}")
            };
            Endpoint::from_shared(url.clone())
                .map_err(|err| Error::Invalid(format!("endpoint {e:?}: {err}")))?;
            eps.push(url);
        }
        let timeout = options.call_timeout;
        Ok(Client {
            inner: Arc::new(Inner {
                conn: Mutex::new(Conn {
                    endpoints: eps,
                    current: 0,
                    channel: None,
                }),
                options,
            }),
            timeout,
        })
    }

    /// A handle to the same connection whose calls have deadline `timeout`.
    pub fn with_timeout(&self, timeout: Duration) -> Client {
        Client {
            inner: self.inner.clone(),
            timeout,
        }
    }

    /// The options.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The call deadline of this handle.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The endpoints, in order.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.conn.lock().endpoints.clone()
    }

    fn endpoint(&self, url: &str) -> Result<Endpoint, Error> {
        let o = &self.inner.options;
        Ok(Endpoint::from_shared(url.to_string())
            .map_err(|e| Error::Invalid(format!("endpoint {url:?}: {e}")))?
            .connect_timeout(o.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(o.keepalive)
            .keep_alive_timeout(o.keepalive)
            .keep_alive_while_idle(true))
    }

    /// A connected channel: the current one, or the first endpoint (from the current one on)
    /// that accepts a connection. Returns the endpoint's URL too.
    pub(crate) async fn channel(&self, deadline: Instant) -> Result<(String, Channel), Error> {
        let (start, n, cached) = {
            let c = self.inner.conn.lock();
            (
                c.current,
                c.endpoints.len(),
                c.channel
                    .clone()
                    .map(|ch| (c.endpoints[c.current].clone(), ch)),
            )
        };
        if let Some(x) = cached {
            return Ok(x);
        }
        let mut last = String::from("no attempt");
        for i in 0..n {
            let idx = (start + i) % n;
            let url = self.inner.conn.lock().endpoints[idx].clone();
            let ep = self.endpoint(&url)?;
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(self.inner.options.connect_timeout);
            match tokio::time::timeout(wait, ep.connect()).await {
                Ok(Ok(ch)) => {
                    let mut c = self.inner.conn.lock();
                    c.current = idx;
                    c.channel = Some(ch.clone());
                    return Ok((url, ch));
                }
                Ok(Err(e)) => last = format!("{url}: {e}"),
                Err(_) => last = format!("{url}: connect timed out after {wait:?}"),
            }
            if Instant::now() >= deadline {
                break;
            }
        }
        let endpoints = self.inner.conn.lock().endpoints.join(", ");
        Err(Error::Unreachable { endpoints, last })
    }

    /// Forget the connection to `url` (it failed) and prefer the next endpoint.
    pub(crate) fn failed(&self, url: &str) {
        let mut c = self.inner.conn.lock();
        if c.endpoints[c.current] == url {
            c.channel = None;
            c.current = (c.current + 1) % c.endpoints.len();
        }
    }

    /// Run `f` against a connected channel with the retry rules in the module docs.
    pub(crate) async fn call<T, F, Fut>(&self, kind: Kind, mut f: F) -> Result<T, Error>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut rng = fastrand::Rng::new();
        let mut attempt = 0u32;
        let mut sent = false;
        loop {
            let err = match self.channel(deadline).await {
                Err(e) => e,
                Ok((url, ch)) => {
                    sent = true;
                    let left = deadline.saturating_duration_since(Instant::now());
                    let cap = left.min(self.inner.options.attempt_timeout);
                    match tokio::time::timeout(cap, f(ch)).await {
                        Ok(Ok(v)) => return Ok(v),
                        Ok(Err(status)) => {
                            let e = Error::from_status(&url, &status);
                            if matches!(e.retry(), Retry::Safe | Retry::IfIdempotent) {
                                self.failed(&url);
                            }
                            e
                        }
                        Err(_) => {
                            self.failed(&url);
                            Error::Unknown {
                                endpoint: url,
                                what: format!("no answer within {cap:?}"),
                            }
                        }
                    }
                }
            };
            let retry = matches!(
                (err.retry(), kind),
                (Retry::Safe, _) | (Retry::IfIdempotent, Kind::Read)
            );
            let now = Instant::now();
            if !retry {
                return Err(err);
            }
            if now >= deadline {
                return Err(match err {
                    Error::Unreachable { .. } if !sent => err,
                    _ => Error::Deadline {
                        after: self.timeout,
                        sent,
                    },
                });
            }
            let pause = self.inner.options.backoff.delay(attempt, &mut rng);
            tokio::time::sleep(pause.min(deadline - now)).await;
            attempt = attempt.saturating_add(1);
        }
    }

    // ---- KV --------------------------------------------------------------------------------

    /// The value of `key`, and the store's revision when it was read.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<(Option<KeyValue>, i64), Error> {
        let l = self
            .range(pb::RangeRequest {
                key: key.as_ref().to_vec(),
                ..Default::default()
            })
            .await?;
        Ok((l.kvs.into_iter().next(), l.revision))
    }

    /// Every key under `prefix`, in key order, and the revision of the listing (watch from
    /// `revision + 1` to follow it without a gap).
    pub async fn list(&self, prefix: impl AsRef<[u8]>) -> Result<Listing, Error> {
        let prefix = prefix.as_ref();
        self.range(pb::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        })
        .await
    }

    /// A raw etcd `Range`.
    pub async fn range(&self, req: pb::RangeRequest) -> Result<Listing, Error> {
        let r = self
            .call(Kind::Read, |ch| {
                let req = req.clone();
                async move {
                    KvClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .range(req)
                        .await
                }
            })
            .await?
            .into_inner();
        Listing::from_proto(r)
    }

    /// Set `key` to `value` (attached to `lease`, if any); returns the new revision.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        lease: Option<i64>,
    ) -> Result<i64, Error> {
        let req = pb::PutRequest {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            lease: lease.unwrap_or(0),
            ..Default::default()
        };
        let r = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).put(req).await }
            })
            .await
            .map_err(|e| with_lease(e, lease))?
            .into_inner();
        revision_of(r.header.as_ref())
    }

    /// Delete `key`; returns how many keys were deleted (0 or 1) and the revision.
    pub async fn delete(&self, key: impl AsRef<[u8]>) -> Result<(i64, i64), Error> {
        self.delete_range(key.as_ref().to_vec(), Vec::new()).await
    }

    /// Delete every key under `prefix`; returns how many and the revision.
    pub async fn delete_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<(i64, i64), Error> {
        let p = prefix.as_ref();
        self.delete_range(p.to_vec(), prefix_end(p)).await
    }

    async fn delete_range(&self, key: Vec<u8>, range_end: Vec<u8>) -> Result<(i64, i64), Error> {
        let req = pb::DeleteRangeRequest {
            key,
            range_end,
            ..Default::default()
        };
        let r = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move { KvClient::new(ch).delete_range(req).await }
            })
            .await?
            .into_inner();
        Ok((r.deleted, revision_of(r.header.as_ref())?))
    }

    /// Run a transaction: compares, then the success or the failure branch, atomically.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, Error> {
        let req = txn.into_proto();
        let lease = None;
        let r = self
            .call(Kind::Write, |ch| {
                let req = req.clone();
                async move {
                    KvClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .txn(req)
                        .await
                }
            })
            .await
            .map_err(|e| with_lease(e, lease))?
            .into_inner();
        TxnResult::from_proto(r)
    }

    /// Compact the history up to `revision` (watches from before it then fail with
    /// [`Error::Compacted`]).
    pub async fn compact(&self, revision: i64) -> Result<(), Error> {
        let req = pb::CompactionRequest {
            revision,
            physical: false,
        };
        self.call(Kind::Write, |ch| async move {
            KvClient::new(ch).compact(req).await
        })
        .await?;
        Ok(())
    }

    // ---- leases ----------------------------------------------------------------------------

    /// Grant a lease of `ttl` (whole seconds, at least 1; the server may raise it).
    pub async fn grant(&self, ttl: Duration) -> Result<LeaseGrant, Error> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let req = pb::LeaseGrantRequest { ttl: secs, id: 0 };
        let r = self
            .call(Kind::Write, |ch| async move {
                LeaseClient::new(ch).lease_grant(req).await
            })
            .await?
            .into_inner();
        if r.id <= 0 || r.ttl <= 0 {
            return Err(self.protocol(format!("lease grant answered id {} ttl {}", r.id, r.ttl)));
        }
        Ok(LeaseGrant {
            id: r.id,
            ttl: Duration::from_secs(r.ttl as u64),
        })
    }

    /// Revoke `lease`, deleting its keys.
    pub async fn revoke(&self, lease: i64) -> Result<(), Error> {
        let req = pb::LeaseRevokeRequest { id: lease };
        self.call(Kind::Write, |ch| async move {
            LeaseClient::new(ch).lease_revoke(req).await
        })
        .await
        .map_err(|e| with_lease(e, Some(lease)))?;
        Ok(())
    }

    /// Renew `lease` once; returns its TTL, or [`Error::LeaseNotFound`] when it is gone.
    /// (Long-lived renewal: [`crate::LeaseKeeper`].)
    pub async fn keep_alive_once(&self, lease: i64) -> Result<Duration, Error> {
        let r = self
            .call(Kind::Read, |ch| async move {
                let mut c = LeaseClient::new(ch);
                let mut s = c
                    .lease_keep_alive(tokio_stream::once(pb::LeaseKeepAliveRequest { id: lease }))
                    .await?
                    .into_inner();
                s.message().await?.ok_or_else(|| {
                    tonic::Status::unavailable("keep-alive stream closed without an answer")
                })
            })
            .await?;
        if r.ttl <= 0 {
            return Err(Error::LeaseNotFound(lease));
        }
        Ok(Duration::from_secs(r.ttl as u64))
    }

    /// The remaining and granted TTL of `lease` (and its keys when `keys`).
    pub async fn time_to_live(&self, lease: i64, keys: bool) -> Result<LeaseInfo, Error> {
        let req = pb::LeaseTimeToLiveRequest { id: lease, keys };
        let r = self
            .call(Kind::Read, |ch| async move {
                LeaseClient::new(ch).lease_time_to_live(req).await
            })
            .await
            .map_err(|e| with_lease(e, Some(lease)))?
            .into_inner();
        if r.ttl < 0 {
            return Err(Error::LeaseNotFound(lease));
        }
        Ok(LeaseInfo {
            id: lease,
            remaining: Duration::from_secs(r.ttl as u64),
            granted: Duration::from_secs(r.granted_ttl.max(0) as u64),
            keys: r.keys,
        })
    }

    /// Every lease id.
    pub async fn leases(&self) -> Result<Vec<i64>, Error> {
        let r = self
            .call(Kind::Read, |ch| async move {
                LeaseClient::new(ch)
                    .max_decoding_message_size(MAX_RESPONSE_BYTES)
                    .lease_leases(pb::LeaseLeasesRequest {})
                    .await
            })
            .await?
            .into_inner();
        Ok(r.leases.into_iter().map(|l| l.id).collect())
    }

    /// The status of the endpoint the client is connected to (after connecting if needed).
    pub async fn status(&self) -> Result<MemberStatus, Error> {
        let r = self
            .call(Kind::Read, |ch| async move {
                MaintenanceClient::new(ch)
                    .status(pb::StatusRequest {})
                    .await
            })
            .await?
            .into_inner();
        let h = r
            .header
            .ok_or_else(|| self.protocol("status without a header".into()))?;
        Ok(MemberStatus {
            version: r.version,
            member_id: h.member_id,
            leader: r.leader,
            revision: h.revision,
            raft_term: r.raft_term,
        })
    }

    fn protocol(&self, what: String) -> Error {
        let c = self.inner.conn.lock();
        Error::Protocol {
            endpoint: c.endpoints[c.current].clone(),
            what,
        }
    }
}

fn with_lease(e: Error, lease: Option<i64>) -> Error {
    match (e, lease) {
        (Error::LeaseNotFound(_), Some(id)) => Error::LeaseNotFound(id),
        (e, _) => e,
    }
}

/// The revision in a response header; a missing header is a malformed answer.
pub(crate) fn revision_of(h: Option<&pb::ResponseHeader>) -> Result<i64, Error> {
    match h {
        Some(h) if h.revision > 0 => Ok(h.revision),
        Some(h) => Err(Error::Protocol {
            endpoint: String::new(),
            what: format!("revision {} in a response header", h.revision),
        }),
        None => Err(Error::Protocol {
            endpoint: String::new(),
            what: "a response without a header".into(),
        }),
    }
}

//! The HTTP data plane: route a request to a pool, pick a member, forward, retry.
//!
//! Retry rules (each one is a safety property):
//! * A try that failed **before the request was written** (connect refused or timed out, a
//!   pooled connection found closed) may always be retried: the member never saw it.
//! * A try that failed **after** the request was written is retried only if the method is
//!   idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and its body was buffered (at most
//!   `retry.buffer_body`), so it can be sent again unchanged.
//! * Nothing is retried once response bytes were sent to the client: retries happen only
//!   while waiting for response headers, and a retried response is discarded unread.
//! * Every retry goes to a member not tried yet for this request, spends from the pool's
//!   retry budget, and (from the second retry on) waits a jittered back-off; the whole
//!   request stays within `request_timeout`.
//! * A pooled connection that turns out to be dead is not the member's fault: the try is
//!   redone on a fresh connection to the same member, at most twice, without spending an
//!   attempt or budget.
//!
//! Passive health: a refused or reset *fresh* connection marks the member down at once
//! (only the active prober re-admits it); timeouts and 5xx answers count towards outlier
//! ejection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::{debug, info};

use crate::Shared;
use crate::body::{ReqBody, RespBody};
use crate::config::{HashKey, ListenerKind};
use crate::guards;
use crate::h1::{self, H1Error};
use crate::pool::{Member, Pick, Pool};
use crate::upstream::{self, ConnectError, Lease};
use hastack_guard::FallbackAction;

/// Most fresh-connection redos after finding a pooled connection dead.
const MAX_STALE_REDOS: u32 = 2;

/// Most members tried for one request (config allows at most 10 attempts).
const MAX_TRIED: usize = 10;

/// Who a downstream connection is.
#[derive(Debug)]
pub struct ConnInfo {
    /// Listener name.
    pub listener: Arc<str>,
    /// Client address.
    pub peer: SocketAddr,
    /// Whether it arrived over TLS.
    pub tls: bool,
    /// The client's IP as a header value, made once per connection for X-Forwarded-For.
    pub peer_ip: HeaderValue,
}

impl ConnInfo {
    /// Describe a new client connection.
    pub fn new(listener: Arc<str>, peer: SocketAddr, tls: bool) -> ConnInfo {
        // An IP address's text is always a valid header value.
        let peer_ip = HeaderValue::from_str(&peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        ConnInfo {
            listener,
            peer,
            tls,
            peer_ip,
        }
    }
}

/// Serve one request.
pub async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, Infallible> {
    let start = Instant::now();
    let rt = shared.runtime.load_full();
    let Some(listener) = rt.listeners.get(&conn.listener).cloned() else {
        // The listener was removed by a reload while this connection was open.
        return Ok(error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "listener_removed",
            "this listener was removed by a configuration reload".into(),
            Some(1),
        ));
    };
    drop(rt);
    let ListenerKind::Http(hspec) = &listener.spec.kind else {
        return Ok(error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "HTTP request on a TCP listener".into(),
            None,
        ));
    };
    // Only an access log needs owned copies of the request line.
    let log = shared.access_log.load(Ordering::Relaxed).then(|| {
        (
            req.method().clone(),
            request_host(&req).into_owned(),
            req.uri().path().to_string(),
        )
    });
    // The guards (crate::guards): the listener's rate limit counts every request, routed
    // or not; then the route's switch, rate limit, breaker and bulkhead, and a refusal gets
    // the route's fallback.
    let ip = conn.peer.ip();
    let limited = guards::listener_limit(&listener, ip, req.headers()).await;
    let route = listener.route(&request_host(&req), req.uri().path());
    let (resp, member, tries) = match (limited, route) {
        (Some(resp), _) => (resp, None, 0),
        (None, None) => (
            error_response(
                StatusCode::NOT_FOUND,
                "no_route",
                format!(
                    "no route for host {:?} and path {:?}",
                    request_host(&req),
                    req.uri().path()
                ),
                None,
            ),
            None,
            0,
        ),
        (None, Some(route)) => {
            let key = route.guard.rate_key(ip, req.headers());
            let admitted = match route.guard.admit(key, start).await {
                Ok(permit) => guards::pool_slot(route).await.map(|slot| (permit, slot)),
                Err(rej) => Err(rej),
            };
            match admitted {
                Ok((permit, slot)) => {
                    let ctx = Ctx {
                        pool: &route.pool,
                        conn: &conn,
                        forwarded: hspec.forwarded_headers,
                        max_body: hspec.max_request_body,
                        start,
                    };
                    let (resp, member, tries) = forward(&ctx, req).await;
                    (
                        guards::settle(route, start, permit, slot, resp),
                        member,
                        tries,
                    )
                }
                Err(rej) => match (route.guard.fallback_for(&rej), &route.fallback_pool) {
                    (Some(FallbackAction::Static(s)), _) => {
                        (guards::static_fallback(route, s, &rej), None, 0)
                    }
                    (Some(FallbackAction::Pool(_)), Some((fpool, class))) => {
                        match guards::fallback_slot(fpool.limiter.as_ref(), *class).await {
                            Ok(slot) => {
                                let ctx = Ctx {
                                    pool: fpool,
                                    conn: &conn,
                                    forwarded: hspec.forwarded_headers,
                                    max_body: hspec.max_request_body,
                                    start,
                                };
                                let (mut resp, member, tries) = forward(&ctx, req).await;
                                if let Some(s) = slot {
                                    s.complete(Instant::now(), guards::outcome_of(resp.status()));
                                }
                                guards::mark_fallback(route, &rej, &mut resp);
                                (resp, member, tries)
                            }
                            Err(_) => (guards::refused(route, &rej), None, 0),
                        }
                    }
                    _ => (guards::refused(route, &rej), None, 0),
                },
            }
        }
    };
    listener.metrics.response(resp.status().as_u16());
    if let Some((method, host, path)) = log {
        info!(
            target: "hastack::access",
            listener = %conn.listener,
            client = %conn.peer,
            %method,
            host = %host,
            path = %path,
            status = resp.status().as_u16(),
            member = member.as_ref().map_or("-", |m| m.name()),
            tries,
            ms = start.elapsed().as_secs_f64() * 1000.0,
        );
    }
    Ok(resp)
}

struct Ctx<'a> {
    pool: &'a Arc<Pool>,
    conn: &'a ConnInfo,
    forwarded: bool,
    max_body: u64,
    start: Instant,
}

/// Why a try failed.
enum TryError {
    /// No connection could be made; nothing was sent.
    Connect(ConnectError),
    /// A pooled connection was dead before any request byte left: redo on a fresh one.
    NotSent,
    /// The request was (possibly partly) sent, then the exchange failed.
    Failed { reused: bool, error: H1Error },
    /// No response headers within the try timeout.
    Timeout,
    /// The client's own request body failed.
    Client(crate::body::BoxError),
}

/// Forward `req` through the pool. Returns the response, the member that answered, and the
/// number of tries.
async fn forward(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> (Response<RespBody>, Option<Arc<Member>>, u32) {
    let pool = ctx.pool;
    let spec = &pool.spec;
    let (mut parts, body) = req.into_parts();

    if let Some(len) = content_length(&parts.headers) {
        if len > ctx.max_body {
            return (
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    format!(
                        "request body of {len} bytes exceeds the limit of {} bytes",
                        ctx.max_body
                    ),
                    None,
                ),
                None,
                0,
            );
        }
    }

    let upgrade = is_upgrade(&parts.headers, parts.version);
    let idempotent = is_idempotent(&parts.method);
    let too_large = Arc::new(AtomicBool::new(false));
    // Buffer the body when a retry could resend it; stream it otherwise.
    let mut body = if body.is_end_stream() {
        ReqBody::Empty
    } else if idempotent && !upgrade {
        match read_prefix(body, spec.retry.buffer_body, ctx.max_body).await {
            Ok(Prefix::Complete(b)) => ReqBody::Full(b),
            Ok(Prefix::Partial(head, rest)) => ReqBody::Stream {
                seen: head.len() as u64,
                head: Some(head),
                rest,
                limit: ctx.max_body,
                declared: content_length(&parts.headers),
                too_large: too_large.clone(),
            },
            Err(PrefixError::TooLarge) => {
                return (
                    error_response(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        format!("request body exceeds the limit of {} bytes", ctx.max_body),
                        None,
                    ),
                    None,
                    0,
                );
            }
            Err(PrefixError::Client(e)) => {
                return (
                    error_response(
                        StatusCode::BAD_REQUEST,
                        "bad_request_body",
                        format!("cannot read the request body: {e}"),
                        None,
                    ),
                    None,
                    0,
                );
            }
        }
    } else {
        ReqBody::Stream {
            head: None,
            rest: body,
            seen: 0,
            limit: ctx.max_body,
            declared: content_length(&parts.headers),
            too_large: too_large.clone(),
        }
    };
    let resendable = idempotent && body.resendable();

    let hash = spec
        .hash_key
        .as_ref()
        .and_then(|k| hash_of(k, &parts, ctx.conn.peer));
    let sticky_cookie = spec
        .sticky
        .as_ref()
        .and_then(|s| cookie_value(&parts.headers, &s.cookie).map(str::to_string));
    let mut sticky = sticky_cookie.as_deref().and_then(|t| pool.sticky_member(t));

    let headers = upstream_headers(&mut parts, ctx.conn, ctx.forwarded, upgrade);
    let uri = origin_form(&parts.uri);
    let method = parts.method;
    let mut on_upgrade = None;
    if upgrade {
        // The client's upgrade future lives in the request extensions.
        let mut shell = Request::new(());
        *shell.extensions_mut() = parts.extensions;
        on_upgrade = Some(hyper::upgrade::on(&mut shell));
    }

    let deadline = ctx.start + spec.request_timeout;
    let attempts = spec.retry.attempts.max(1);
    let mut tried = [usize::MAX; MAX_TRIED];
    let mut n_tried = 0usize;
    let mut attempt = 0u32;
    let mut stale_redos = 0u32;
    let mut redo_member: Option<usize> = None;
    let mut last: Option<Response<RespBody>> = None;
    pool.deposit(ctx.start);
    // Clock reads are not free at this rate: each try reuses the last one taken.
    let mut now = ctx.start;

    loop {
        if now >= deadline {
            let resp = last.take().unwrap_or_else(|| {
                error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "request_timeout",
                    format!(
                        "no answer within request_timeout ({:?})",
                        spec.request_timeout
                    ),
                    None,
                )
            });
            return (resp, None, attempt);
        }
        let idx = if let Some(i) = redo_member.take() {
            i
        } else if let Some(i) = sticky.take() {
            i
        } else {
            match pool.pick(hash, &tried[..n_tried], now) {
                Pick::Member(i) => i,
                Pick::Empty if last.is_none() => {
                    pool.metrics.no_member.inc();
                    let why = pool.describe_empty(now);
                    return (
                        error_response(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no_usable_member",
                            why,
                            Some(pool.retry_after(now)),
                        ),
                        None,
                        attempt,
                    );
                }
                Pick::Empty | Pick::Exhausted => {
                    let resp = last.take().unwrap_or_else(|| {
                        error_response(
                            StatusCode::BAD_GATEWAY,
                            "all_members_failed",
                            format!("every usable member of pool {:?} failed", spec.name),
                            None,
                        )
                    });
                    return (resp, None, attempt);
                }
            }
        };
        if !tried[..n_tried].contains(&idx) && n_tried < MAX_TRIED {
            tried[n_tried] = idx;
            n_tried += 1;
        }
        let member = pool.members[idx].clone();
        let breaker = guards::member_try(&member, now);

        let head = h1::RequestHead {
            method: &method,
            uri: &uri,
            headers: &headers,
        };
        let remaining = deadline.saturating_duration_since(now);
        let (result, done) = try_once(
            &member,
            head,
            &mut body,
            now,
            spec.connect_timeout.min(remaining),
            spec.try_timeout.min(remaining),
            upgrade,
        )
        .await;
        attempt += 1;
        now = done;
        // Connect failures and dead pooled connections leave even a streamed body untouched.
        let can_retry_unsent = attempt < attempts;
        let can_retry_sent = resendable && attempt < attempts && !upgrade;
        match result {
            Ok((exchange, lease)) => {
                let status = exchange.head.status.as_u16();
                guards::member_status(breaker, now, status);
                if status >= 500 {
                    member.metrics.err_status.inc();
                    member.gateway_error(now, pool.may_eject());
                } else {
                    member.success(now);
                }
                if status >= 500
                    && pool.retries_status(status)
                    && can_retry_sent
                    && pool.withdraw(now)
                {
                    pool.metrics.retry_status.inc();
                    debug!(pool = %spec.name, member = %member.name(), status, "retrying on status");
                    // Release the connection now (unread, so not reusable); if every retry
                    // fails, the client gets this status with an explanation.
                    drop((exchange, lease));
                    last = Some(error_response(
                        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                        "upstream_status",
                        format!(
                            "member {} answered {status}, and so did every retry",
                            member.name()
                        ),
                        None,
                    ));
                    now = backoff(spec, attempt, deadline, now).await;
                    continue;
                }
                let mut resp = if upgrade && status == 101 {
                    upgrade_response(exchange, lease, on_upgrade.take())
                } else {
                    finish_response(exchange, lease)
                };
                if let Some(s) = &spec.sticky {
                    if sticky_cookie.as_deref() != Some(member.token()) {
                        set_sticky_cookie(&mut resp, s, member.token());
                    }
                }
                return (resp, Some(member), attempt);
            }
            Err(TryError::Connect(e)) => {
                guards::member_failed(breaker, now);
                member.metrics.err_connect.inc();
                if e.proves_dead() {
                    member.report(now, hastack_core::health::Event::ConnectFailed);
                } else {
                    member.gateway_error(now, pool.may_eject());
                }
                debug!(pool = %spec.name, member = %member.name(), error = %e, "connect failed");
                let resp = error_response(
                    StatusCode::BAD_GATEWAY,
                    "connect_failed",
                    format!("cannot connect to a member of pool {:?}: {e}", spec.name),
                    None,
                );
                // The request was never sent: retrying is safe for any method.
                if can_retry_unsent && pool.withdraw(now) {
                    pool.metrics.retry_connect.inc();
                    last = Some(resp);
                    now = backoff(spec, attempt, deadline, now).await;
                    continue;
                }
                return (resp, None, attempt);
            }
            Err(TryError::NotSent) => {
                // A pooled connection died under us before any byte left: redo on a fresh
                // one, same member, without spending an attempt.
                if stale_redos < MAX_STALE_REDOS {
                    stale_redos += 1;
                    attempt -= 1;
                    redo_member = Some(idx);
                    continue;
                }
                return (
                    error_response(
                        StatusCode::BAD_GATEWAY,
                        "upstream_unavailable",
                        format!("member {} kept closing connections", member.name()),
                        None,
                    ),
                    None,
                    attempt,
                );
            }
            Err(TryError::Client(e)) => {
                // The client's own body failed: its fault, nothing to retry.
                let (status, kind) = if too_large.load(Ordering::Relaxed) {
                    (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large")
                } else {
                    (StatusCode::BAD_REQUEST, "bad_request_body")
                };
                return (
                    error_response(status, kind, format!("{e}"), None),
                    None,
                    attempt,
                );
            }
            Err(TryError::Failed { reused, error }) => {
                member.metrics.err_reset.inc();
                // A reused connection failing before any answer is often the keep-alive
                // race (the member closed an idle connection as we wrote): not evidence
                // against the member.
                let race = reused && matches!(error, H1Error::ClosedBeforeResponse);
                guards::member_reset(breaker, now, race);
                if !race {
                    member.gateway_error(now, pool.may_eject());
                }
                debug!(pool = %spec.name, member = %member.name(), reused, error = %error, "try failed");
                let resp = error_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream_reset",
                    format!("member {} failed before answering: {error}", member.name()),
                    None,
                );
                if can_retry_sent && pool.withdraw(now) {
                    pool.metrics.retry_reset.inc();
                    last = Some(resp);
                    now = backoff(spec, attempt, deadline, now).await;
                    continue;
                }
                return (resp, None, attempt);
            }
            Err(TryError::Timeout) => {
                guards::member_failed(breaker, now);
                member.metrics.err_timeout.inc();
                member.gateway_error(now, pool.may_eject());
                let resp = error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    "try_timeout",
                    format!("member {} sent no response headers in time", member.name()),
                    None,
                );
                if can_retry_sent && now < deadline && pool.withdraw(now) {
                    pool.metrics.retry_timeout.inc();
                    last = Some(resp);
                    now = backoff(spec, attempt, deadline, now).await;
                    continue;
                }
                return (resp, None, attempt);
            }
        }
    }
}

/// Back-off before the next try: the first retry goes at once (it targets a different
/// member), later ones wait a jittered, bounded delay, never past the deadline. Returns the
/// time after the wait.
async fn backoff(
    spec: &crate::config::PoolSpec,
    attempt: u32,
    deadline: Instant,
    now: Instant,
) -> Instant {
    if attempt < 2 {
        return now;
    }
    let d = spec
        .retry
        .backoff
        .delay(attempt - 2, &mut fastrand::Rng::new());
    tokio::time::sleep_until((now + d).min(deadline)).await;
    Instant::now()
}

/// One try: get a connection (pooled, else fresh), send, wait for the response headers.
/// Returns the result and the time it ended.
async fn try_once(
    member: &Arc<Member>,
    head: h1::RequestHead<'_>,
    body: &mut ReqBody,
    now: Instant,
    connect_timeout: Duration,
    try_timeout: Duration,
    fresh_only: bool,
) -> (Result<(h1::Exchange, Lease), TryError>, Instant) {
    let epoch = member.epoch();
    let mut lease = Lease::begin(member.clone(), epoch, now);
    member.metrics.requests.inc();
    let pooled = if fresh_only {
        None
    } else {
        member.conns.checkout(epoch, now)
    };
    let reused = pooled.is_some();
    let (mut conn, sent_at) = match pooled {
        Some(c) => (c, now),
        None => match upstream::connect_http(member.addr(), connect_timeout).await {
            Ok(c) => (c, Instant::now()),
            Err(e) => return (Err(TryError::Connect(e)), Instant::now()),
        },
    };
    let result = tokio::time::timeout(try_timeout, conn.send(head, body)).await;
    let done = Instant::now();
    let r = match result {
        Err(_) => Err(TryError::Timeout),
        Ok(Err(e)) => Err(match e.error {
            H1Error::ClientBody(b) => TryError::Client(b),
            // Nothing left the proxy on a pooled connection: a stale connection.
            _ if reused && !e.written => TryError::NotSent,
            error => TryError::Failed { reused, error },
        }),
        Ok(Ok(exchange)) => {
            let rtt = done.saturating_duration_since(sent_at);
            member.load.observe(rtt, done);
            member.metrics.latency.observe(rtt.as_secs_f64());
            lease.attach(conn, done);
            Ok((exchange, lease))
        }
    };
    (r, done)
}

/// Turn an upstream response head into the client's response: hop-by-hop headers go, the
/// body is read from the member's connection as the client consumes it.
fn finish_response(exchange: h1::Exchange, mut lease: Lease) -> Response<RespBody> {
    let h1::Exchange {
        head,
        framing,
        keep_alive,
    } = exchange;
    let mut headers = head.headers;
    strip_hop_by_hop(&mut headers);
    let empty = matches!(framing, h1::Framing::Empty | h1::Framing::Length(0));
    if empty {
        // Nothing more to read: settle now (the client may never poll an empty body).
        let clean = lease.conn_mut().is_some_and(|c| !c.has_leftover());
        if keep_alive && clean {
            lease.mark_reusable();
        }
    }
    let mut resp = Response::new(RespBody::Upstream {
        lease,
        framing,
        keep_alive,
        finished: empty,
    });
    *resp.status_mut() = head.status;
    *resp.headers_mut() = headers;
    resp
}

/// A `101 Switching Protocols` from the member: answer the client with it and, once the
/// client's side is upgraded too, splice the two connections.
fn upgrade_response(
    exchange: h1::Exchange,
    mut lease: Lease,
    client: Option<hyper::upgrade::OnUpgrade>,
) -> Response<RespBody> {
    let conn = lease.take_conn();
    drop(lease);
    if let (Some(conn), Some(client)) = (conn, client) {
        tokio::spawn(splice_upgrade(client, conn));
    }
    let mut resp = Response::new(RespBody::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *resp.headers_mut() = exchange.head.headers;
    resp
}

async fn splice_upgrade(client: hyper::upgrade::OnUpgrade, upstream: h1::Conn) {
    use tokio::io::AsyncWriteExt;
    let client = match client.await {
        Ok(c) => c,
        Err(e) => {
            debug!(error = %e, "client upgrade failed");
            return;
        }
    };
    let mut c = TokioIo::new(client);
    let (mut u, early) = upstream.into_parts();
    // Bytes the member sent right after its 101 belong to the client.
    if !early.is_empty() && c.write_all(&early).await.is_err() {
        return;
    }
    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut u).await {
        debug!(error = %e, "upgraded connection ended with an error");
    }
}

enum Prefix {
    Complete(Bytes),
    Partial(Bytes, Incoming),
}

enum PrefixError {
    TooLarge,
    Client(hyper::Error),
}

/// Read the body up to `limit` bytes: all of it if it fits (resendable), else what was read
/// plus the rest of the stream.
async fn read_prefix(
    mut body: Incoming,
    limit: usize,
    max_body: u64,
) -> Result<Prefix, PrefixError> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(PrefixError::Client)?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() as u64 > max_body {
                return Err(PrefixError::TooLarge);
            }
            if buf.len() > limit {
                return Ok(Prefix::Partial(buf.freeze(), body));
            }
        }
        // Request trailers are not forwarded (rare in practice; documented).
    }
    Ok(Prefix::Complete(buf.freeze()))
}

/// GET, HEAD, OPTIONS, PUT, DELETE, TRACE (RFC 9110 section 9.2.2).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

fn content_length(h: &HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn is_upgrade(h: &HeaderMap, v: Version) -> bool {
    v == Version::HTTP_11 && h.contains_key(header::UPGRADE) && connection_has(h, "upgrade")
}

fn connection_has(h: &HeaderMap, token: &str) -> bool {
    h.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str()
            .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The request's host, lower case, without port (borrowed when already lower case).
pub fn request_host<B>(req: &Request<B>) -> std::borrow::Cow<'_, str> {
    let raw = req
        .uri()
        .authority()
        .map(|a| a.host())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let host = if raw.starts_with('[') {
        // IPv6 literal: keep the brackets, drop the port.
        raw.split_once(']')
            .map_or(raw, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        raw.split(':').next().unwrap_or(raw)
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the (few) names present instead of a hashed lookup per hop-by-hop
    // name: most messages carry none of them, and this runs twice per request.
    let present = h.keys().any(|k| HOP_BY_HOP.contains(k));
    if !present {
        return;
    }
    // Headers named by Connection are hop-by-hop too.
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in &HOP_BY_HOP {
        h.remove(n);
    }
}

static XFF: HeaderName = HeaderName::from_static("x-forwarded-for");
static XFP: HeaderName = HeaderName::from_static("x-forwarded-proto");

/// The headers sent upstream: the client's minus hop-by-hop, plus Host (from the authority
/// for HTTP/2 clients) and X-Forwarded-*; upgrade requests keep Connection/Upgrade.
fn upstream_headers(
    parts: &mut http::request::Parts,
    conn: &ConnInfo,
    forwarded: bool,
    upgrade: bool,
) -> HeaderMap {
    let mut h = std::mem::take(&mut parts.headers);
    let upgrade_to = if upgrade {
        h.get(header::UPGRADE).cloned()
    } else {
        None
    };
    strip_hop_by_hop(&mut h);
    if let Some(u) = upgrade_to {
        h.insert(header::UPGRADE, u);
        h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
    if !h.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                h.insert(header::HOST, v);
            }
        }
    }
    if forwarded {
        match h.get(&XFF).and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                let xff = format!("{prev}, {}", conn.peer.ip());
                if let Ok(v) = HeaderValue::from_str(&xff) {
                    h.insert(XFF.clone(), v);
                }
            }
            None => {
                h.insert(XFF.clone(), conn.peer_ip.clone());
            }
        }
        h.insert(
            XFP.clone(),
            HeaderValue::from_static(if conn.tls { "https" } else { "http" }),
        );
    }
    h
}

/// Path and query only (what an HTTP/1.1 origin server expects).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(_) if uri.scheme().is_none() && uri.authority().is_none() => uri.clone(),
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

fn hash_of(key: &HashKey, parts: &http::request::Parts, peer: SocketAddr) -> Option<u64> {
    let h = match key {
        HashKey::ClientIp => match peer.ip() {
            std::net::IpAddr::V4(a) => hastack_balance::hash_key(&a.octets()),
            std::net::IpAddr::V6(a) => hastack_balance::hash_key(&a.octets()),
        },
        HashKey::Uri => hastack_balance::hash_key(
            parts
                .uri
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .as_bytes(),
        ),
        HashKey::Header(name) => hastack_balance::hash_key(parts.headers.get(name)?.as_bytes()),
        HashKey::Cookie(name) => {
            hastack_balance::hash_key(cookie_value(&parts.headers, name)?.as_bytes())
        }
    };
    Some(h)
}

/// The value of cookie `name` in the request's Cookie headers.
pub fn cookie_value<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim_matches('"'))
}

fn set_sticky_cookie(resp: &mut Response<RespBody>, s: &crate::config::StickySpec, token: &str) {
    let mut c = format!("{}={token}; Path=/; HttpOnly; SameSite=Lax", s.cookie);
    if let Some(age) = s.max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if let Ok(v) = HeaderValue::from_str(&c) {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
}

/// A response generated by the proxy: plain-text body naming the problem, an
/// `x-hastack-error` header with a machine-readable kind, `Retry-After` when useful.
pub fn error_response(
    status: StatusCode,
    kind: &'static str,
    message: String,
    retry_after: Option<u64>,
) -> Response<RespBody> {
    let body = format!(
        "{} {}: {message}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let mut r = Response::new(RespBody::local(body));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-hastack-error", HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised() {
        let r = Request::builder()
            .uri("/x")
            .header("host", "Example.COM:8080")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), "example.com");
        let r = Request::builder()
            .uri("http://[::1]:80/x")
            .body(())
            .unwrap();
        assert_eq!(request_host(&r), "::1");
        let r = Request::builder().uri("/x").body(()).unwrap();
        assert_eq!(request_host(&r), "");
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn cookies_are_found() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1; srv=abc"));
        h.append("cookie", HeaderValue::from_static("b=\"2\""));
        assert_eq!(cookie_value(&h, "srv"), Some("abc"));
        assert_eq!(cookie_value(&h, "b"), Some("2"));
        assert_eq!(cookie_value(&h, "c"), None);
    }

    #[test]
    fn idempotency() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
            Method::TRACE,
        ] {
            assert!(is_idempotent(&m));
        }
        assert!(!is_idempotent(&Method::POST));
        assert!(!is_idempotent(&Method::PATCH));
    }

    #[test]
    fn origin_form_drops_scheme_and_authority() {
        let u: Uri = "http://a.example/x?y=1".parse().unwrap();
        assert_eq!(origin_form(&u).to_string(), "/x?y=1");
        let u: Uri = "/p".parse().unwrap();
        assert_eq!(origin_form(&u).to_string(), "/p");
    }
}

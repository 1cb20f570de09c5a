//! The HTTP data plane: route a request, pass its guards, forward it through a pool.
//!
//! One job per file: [`handle`] (this file: listener, routing, the guards around forwarding,
//! the access log), [`mod@forward`] (the retry loop), [`attempt`] (one try), [`request`] (what is
//! sent upstream), [`headers`] (header rewriting and what routing and hashing read),
//! [`response`] (what the client gets back), [`conn_info`] (who the client is). The retry and
//! ejection rules are values and pure functions in [`crate::failure`].
//!
//! Retry rules (each one is a safety property; the table is in docs/proxy.md):
//! * A try that failed **before the request was written** (connect refused or timed out, a
//!   pooled connection found closed) may always be retried: the member never saw it.
//! * A try that failed **after** the request was written is retried only if the method is
//!   idempotent (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) and its body was buffered (at most
//!   `retry.buffer_body`), so it can be sent again unchanged.
//! * A **reused** connection that fails before any response byte is the keep-alive race,
//!   nobody's fault: a request that may be sent again (per the two rules above) is redone at
//!   once on a fresh connection to the same member, without spending an attempt or budget.
//!   A request that may not (a written POST) gets 502: the member may have processed it.
//! * Nothing is retried once response bytes were sent to the client: retries happen only
//!   while waiting for response headers, and a retried response is discarded unread.
//! * Every retry goes to a member not tried yet for this request, spends from the pool's
//!   retry budget, and (from the second retry on) waits a jittered back-off; the whole
//!   request stays within `request_timeout`.
//!
//! Passive health: a refused or reset *fresh* connection marks the member down at once
//! (only the active prober re-admits it); timeouts, resets on fresh connections and 5xx
//! answers count towards outlier ejection.

pub mod attempt;
pub mod conn_info;
pub mod forward;
pub mod headers;
pub mod request;
pub mod response;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::info;

pub use conn_info::ConnInfo;
pub use headers::{cookie_value, request_host};
pub use request::is_idempotent;

use crate::Shared;
use crate::body::RespBody;
use crate::config::{HttpListenerSpec, ListenerKind};
use crate::failure::ErrorKind;
use crate::guards;
use crate::reply;
use crate::runtime::{ListenerRt, RouteRt};
use forward::{Ctx, Forwarded, forward};
use hastack_guard::{FallbackAction, Rejection};
use request::Limits;

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
        let k = ErrorKind::ListenerRemoved;
        return Ok(reply::plain(
            k.status(),
            k.as_str(),
            "this listener was removed by a configuration reload".into(),
            Some(1),
        ));
    };
    drop(rt);
    let ListenerKind::Http(hspec) = &listener.spec.kind else {
        return Ok(reply::error(
            ErrorKind::Internal,
            "HTTP request on a TCP listener".into(),
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
    let (resp, member, tries) = guarded(&listener, hspec, &conn, req, start).await;
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

type Served = (Response<RespBody>, Option<Arc<crate::pool::Member>>, u32);

/// The guards (crate::guards) around forwarding: the listener's rate limit counts every
/// request, routed or not; then the route's switch, rate limit, breaker and bulkhead; a
/// refusal gets the route's fallback, an admitted request is forwarded and settled.
async fn guarded(
    listener: &ListenerRt,
    hspec: &HttpListenerSpec,
    conn: &ConnInfo,
    req: Request<Incoming>,
    start: Instant,
) -> Served {
    let ip = conn.peer.ip();
    if let Some(resp) = guards::listener_limit(listener, ip, req.headers()).await {
        return (resp, None, 0);
    }
    let Some(route) = listener.route(&request_host(&req), req.uri().path()) else {
        let msg = format!(
            "no route for host {:?} and path {:?}",
            request_host(&req),
            req.uri().path()
        );
        return (reply::error(ErrorKind::NoRoute, msg), None, 0);
    };
    let limits = Limits {
        max_body: hspec.max_request_body,
        forwarded: hspec.forwarded_headers,
    };
    let key = route.guard.rate_key(ip, req.headers());
    let admitted = match route.guard.admit(key, start).await {
        Ok(permit) => guards::pool_slot(route).await.map(|slot| (permit, slot)),
        Err(rej) => Err(rej),
    };
    match admitted {
        Ok((permit, slot)) => {
            let ctx = Ctx {
                pool: &route.pool,
                conn,
                limits,
                start,
            };
            let Forwarded {
                response,
                member,
                tries,
                failure,
            } = forward(&ctx, req).await;
            let response = guards::settle(route, start, permit, slot, response, failure.as_ref());
            (response, member, tries)
        }
        Err(rej) => refused(route, rej, conn, limits, req, start).await,
    }
}

/// A refused request: the route's fallback when it covers the refusal (a static answer, or
/// the request forwarded to the fallback pool), else the plain refusal.
async fn refused(
    route: &RouteRt,
    rej: Rejection,
    conn: &ConnInfo,
    limits: Limits,
    req: Request<Incoming>,
    start: Instant,
) -> Served {
    match (route.guard.fallback_for(&rej), &route.fallback_pool) {
        (Some(FallbackAction::Static(s)), _) => (guards::static_fallback(route, s, &rej), None, 0),
        (Some(FallbackAction::Pool(_)), Some((fpool, class))) => {
            match guards::fallback_slot(fpool.limiter.as_ref(), *class).await {
                Ok(slot) => {
                    let ctx = Ctx {
                        pool: fpool,
                        conn,
                        limits,
                        start,
                    };
                    let Forwarded {
                        mut response,
                        member,
                        tries,
                        ..
                    } = forward(&ctx, req).await;
                    if let Some(s) = slot {
                        s.complete(Instant::now(), guards::outcome_of(response.status()));
                    }
                    guards::mark_fallback(route, &rej, &mut response);
                    (response, member, tries)
                }
                Err(_) => (guards::refused(route, &rej), None, 0),
            }
        }
        _ => (guards::refused(route, &rej), None, 0),
    }
}

//! How the HTTP data plane applies `hastack-guard`: the pieces `http::handle` calls around
//! forwarding, and the per-try hooks of the member breakers.
//!
//! A request's path through the guards (see docs/guards.md for every key):
//! ```text
//! listener rate limit ─▶ route: switch ─▶ rate limit ─▶ breaker ─▶ bulkhead (+ shedding)
//!   429                  refusal ─▶ fallback (static answer | fallback pool) or 429/503
//!                        admitted ─▶ [pool bulkhead, if the route also has its own]
//!                                 ─▶ forward (each try: member breaker excludes / records)
//!                                 ─▶ permit.complete(outcome) ─▶ [static fallback on
//!                                    timeout / upstream error, if configured]
//! ```
//!
//! What the guards learn comes as values: the response's status for the outcome, and the
//! proxy's own [`Failure`] (if it answered itself) to tell its timeouts from a member's 504;
//! no header is read back.
//!
//! Outcomes, as every guard sees them ([`outcome_of`]): 2xx-4xx `Success` (a client's
//! mistake is not the upstream's failure); 503 and 504 `Dropped` (overload or timeout: the
//! adaptive limit backs off); other 5xx, refused and reset connections `Failure`.
//!
//! A request is completed when its response *headers* are ready, not when its body has
//! been streamed: bulkhead slots bound the time upstreams spend producing an answer, which
//! is what overload is made of; long downloads are bounded by the listener's connection
//! limit instead.
//!
//! Invariant: a refusal never reaches an upstream of the refused route, so it is always
//! safe to answer it from a fallback pool, whatever the method.

use std::net::IpAddr;
use std::time::Duration;

use hastack_guard::breaker::BreakerPermit;
use hastack_guard::config::RateHeaders;
use hastack_guard::stack::{RateStatus, RouteGuardStatus};
use hastack_guard::{
    ClassId, ConcurrencyLimiter, ConcurrencyPermit, FallbackAction, Outcome, RateDecision,
    RateInfo, RateLimiter, RejectReason, Rejection, RoutePermit, StaticResponse,
};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use serde::Serialize;
use tokio::time::Instant;

use crate::body::RespBody;
use crate::failure::{Blame, Failure};
use crate::pool::Member;
use crate::reply;
use crate::runtime::{ListenerRt, RouteRt};

/// Marks answers given by a fallback: its value is the refusal (or `upstream_error`).
pub static FALLBACK_HEADER: HeaderName = HeaderName::from_static("x-hastack-fallback");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// How a response ended, for breakers and adaptive limits.
pub fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        503 | 504 => Outcome::Dropped,
        s if s >= 500 => Outcome::Failure,
        _ => Outcome::Success,
    }
}

// ---------------------------------------------------------------------------------------
// Admission

/// The listener-wide rate limit: `Some(429)` when it refuses; paces (sleeps) in queue mode.
pub async fn listener_limit(
    l: &ListenerRt,
    client: IpAddr,
    headers: &HeaderMap,
) -> Option<Response<RespBody>> {
    let (rl, mode) = l.rate_limit.as_ref()?;
    match rl.check(rl.key(client, headers)) {
        RateDecision::Allow(_) => None,
        RateDecision::Delay(d, _) => {
            tokio::time::sleep(d).await;
            None
        }
        RateDecision::Reject(info) => {
            let mut resp = reply::plain(
                StatusCode::TOO_MANY_REQUESTS,
                RejectReason::RateLimited.as_str(),
                format!(
                    "rate limit of listener {:?} exceeded: at most {} requests per {:?}",
                    &*l.spec.name,
                    rl.policy().rate,
                    rl.policy().per
                ),
                None,
            );
            rate_headers(resp.headers_mut(), rl, &info, true, *mode);
            Some(resp)
        }
    }
}

/// The pool's bulkhead for a route that also has its own (both apply). `Ok(None)` when
/// the route has no second limiter to pass.
pub async fn pool_slot(route: &RouteRt) -> Result<Option<ConcurrencyPermit>, Rejection> {
    let Some((limiter, class)) = &route.pool_slot else {
        return Ok(None);
    };
    limiter
        .acquire(*class, Instant::now())
        .await
        .map(Some)
        .map_err(refusal)
}

/// A slot in the fallback pool's bulkhead (none needed without one).
pub async fn fallback_slot(
    limiter: Option<&std::sync::Arc<ConcurrencyLimiter>>,
    class: ClassId,
) -> Result<Option<ConcurrencyPermit>, Rejection> {
    match limiter {
        None => Ok(None),
        Some(l) => l
            .acquire(class, Instant::now())
            .await
            .map(Some)
            .map_err(refusal),
    }
}

fn refusal(reason: RejectReason) -> Rejection {
    Rejection {
        reason,
        retry_after: None,
        rate: None,
    }
}

/// Settle an admitted request: complete the permits with the response's outcome, then
/// apply what the route does after forwarding (rate headers on every answer, a static
/// fallback on timeout or upstream failure). `failure` is why the proxy answered itself
/// (`None` for a member's own answer).
pub fn settle(
    route: &RouteRt,
    start: Instant,
    permit: RoutePermit,
    slot: Option<ConcurrencyPermit>,
    resp: Response<RespBody>,
    failure: Option<&Failure>,
) -> Response<RespBody> {
    let outcome = outcome_of(resp.status());
    // Read the clock only for a guard that measures time (breaker latency, adaptive RTT,
    // slot release): an unguarded route pays nothing here.
    let timed =
        slot.is_some() || route.guard.breaker().is_some() || route.guard.concurrency().is_some();
    let done = if timed { Instant::now() } else { start };
    let rate = permit.rate_info().copied();
    permit.complete(done, outcome);
    if let Some(s) = slot {
        s.complete(done, outcome);
    }
    let mut resp = match after_forward_fallback(route, failure, outcome) {
        Some(f) => f,
        None => resp,
    };
    if route.rate_headers == RateHeaders::Always {
        if let (Some(rl), Some(info)) = (route.guard.rate_limiter(), rate) {
            rate_headers(resp.headers_mut(), rl, &info, false, RateHeaders::Always);
        }
    }
    resp
}

/// A static fallback standing in for a failed forward: the proxy's own timeout when the
/// fallback covers `timeout`, or any failure (a member's 5xx included) when it has
/// `upstream_error = true`. A member's own 504, even one retried and then passed on because
/// no member was left, is an upstream error, not the proxy's timeout.
fn after_forward_fallback(
    route: &RouteRt,
    failure: Option<&Failure>,
    outcome: Outcome,
) -> Option<Response<RespBody>> {
    if outcome == Outcome::Success {
        return None;
    }
    let f = route.guard.fallback()?;
    // A fallback pool cannot take a request that was already sent (validation forbids
    // `upstream_error` with one); only static answers apply here.
    if !matches!(f.action, FallbackAction::Static(_)) {
        return None;
    }
    let proxy_timeout = failure.is_some_and(|f| f.kind.is_proxy_timeout());
    let (action, why) = if proxy_timeout && f.covers(RejectReason::Timeout) {
        (f.for_reason(RejectReason::Timeout)?, "timeout")
    } else {
        (f.for_upstream_error()?, "upstream_error")
    };
    match action {
        FallbackAction::Static(s) => Some(static_response(s, why)),
        FallbackAction::Pool(_) => None,
    }
}

// ---------------------------------------------------------------------------------------
// Refusals

/// The answer to a refusal that no fallback covers: 429 / 503 / 504 with `Retry-After`
/// (and the `RateLimit` fields for rate-limit refusals, unless `headers = "never"`).
pub fn refused(route: &RouteRt, rej: &Rejection) -> Response<RespBody> {
    let name = &*route.spec.name;
    let message = match rej.reason {
        RejectReason::Disabled => format!("route {name:?} is switched off by an operator"),
        RejectReason::RateLimited => match route.guard.rate_limiter() {
            Some(rl) => format!(
                "rate limit of route {name:?} exceeded: at most {} requests per {:?}",
                rl.policy().rate,
                rl.policy().per
            ),
            None => format!("rate limit of route {name:?} exceeded"),
        },
        RejectReason::BreakerOpen => format!(
            "the circuit breaker of route {name:?} is open after too many upstream failures"
        ),
        RejectReason::Shed => format!(
            "shed under overload to keep capacity for more important requests (route {name:?}, priority {:?})",
            route.spec.guards.priority.as_deref().unwrap_or("normal")
        ),
        RejectReason::Overloaded => {
            format!("route {name:?} is at its concurrency limit and no slot freed up in time")
        }
        RejectReason::Timeout => format!("route {name:?} ran out of time"),
    };
    let mut resp = reply::plain(rej.status(), rej.reason.as_str(), message, None);
    decorate(route, rej, resp.headers_mut());
    resp
}

/// A static fallback answering refusal `rej`.
pub fn static_fallback(route: &RouteRt, s: &StaticResponse, rej: &Rejection) -> Response<RespBody> {
    let mut resp = static_response(s, rej.reason.as_str());
    decorate(route, rej, resp.headers_mut());
    resp
}

/// Mark a response that a fallback pool gave in place of refusal `rej`.
pub fn mark_fallback(route: &RouteRt, rej: &Rejection, resp: &mut Response<RespBody>) {
    resp.headers_mut().insert(
        FALLBACK_HEADER.clone(),
        HeaderValue::from_static(rej.reason.as_str()),
    );
    if rej.reason == RejectReason::RateLimited {
        decorate(route, rej, resp.headers_mut());
    }
}

/// `Retry-After` and, for a rate-limit refusal, the `RateLimit` fields (kept when a
/// fallback answers: the client still learns when to come back). `Retry-After` says what
/// the guard knows: the rate limiter's and an open breaker's own figures, "1" for
/// overload; nothing for a route switched off (nobody knows when it comes back). A header
/// the operator put on a static fallback wins.
fn decorate(route: &RouteRt, rej: &Rejection, h: &mut HeaderMap) {
    match (route.guard.rate_limiter(), rej.rate) {
        (Some(rl), Some(info)) if rej.reason == RejectReason::RateLimited => {
            let operator = h.get(header::RETRY_AFTER).cloned();
            rate_headers(h, rl, &info, true, route.rate_headers);
            if let Some(v) = operator {
                h.insert(header::RETRY_AFTER, v);
            }
        }
        _ => {
            let known = rej.retry_after.is_some() || rej.reason != RejectReason::Disabled;
            if known && !h.contains_key(header::RETRY_AFTER) {
                h.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(rej.retry_after)),
                );
            }
        }
    }
}

/// Whole seconds, rounded up, at least 1 (a refusal without a known end says "1").
fn retry_after_secs(d: Option<Duration>) -> u64 {
    d.map_or(1, |d| {
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
    })
}

/// Write the `RateLimit-Policy` / `RateLimit` fields per `mode`, and `Retry-After` on a
/// refusal whatever the mode.
fn rate_headers(
    h: &mut HeaderMap,
    rl: &RateLimiter,
    info: &RateInfo,
    rejected: bool,
    mode: RateHeaders,
) {
    if mode == RateHeaders::Never {
        if rejected {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(info.retry_after_secs()),
            );
        }
        return;
    }
    h.insert(RATELIMIT_POLICY.clone(), rl.policy_header().clone());
    info.write_headers(&rl.policy().name, rejected, h);
}

fn static_response(s: &StaticResponse, why: &'static str) -> Response<RespBody> {
    let (mut parts, body) = s.to_response().into_parts();
    parts
        .headers
        .insert(FALLBACK_HEADER.clone(), HeaderValue::from_static(why));
    let body = if body.is_empty() {
        RespBody::empty()
    } else {
        RespBody::local(body)
    };
    Response::from_parts(parts, body)
}

// ---------------------------------------------------------------------------------------
// Member breakers, per try (called from the retry loop in `http::forward`)

/// A try is about to go to `member`: take a breaker permit (none without a breaker). The
/// pick already skipped members whose breaker refuses; a refusal here means another
/// worker took the last half-open trial slot meanwhile, and the try goes on untracked.
pub fn member_try(member: &Member, now: Instant) -> Option<BreakerPermit> {
    member.breaker()?.acquire(now).ok()
}

/// The try ended: `None` for an answer below 500 (a success), else its failure. Only a
/// failure the member is blamed for counts against its breaker; any other (the client's,
/// ours, the keep-alive race) cancels the call instead of counting it.
pub fn member_result(permit: Option<BreakerPermit>, now: Instant, failure: Option<&Failure>) {
    let Some(p) = permit else { return };
    match failure {
        None => {
            let _ = p.record(now, false);
        }
        Some(f) if f.blame == Blame::Upstream => {
            let _ = p.record(now, true);
        }
        // Dropping the permit cancels the call.
        Some(_) => {}
    }
}

// ---------------------------------------------------------------------------------------
// Status

/// A route as `GET /status` shows it.
#[derive(Debug, Serialize)]
pub struct RouteView {
    /// Route name.
    pub name: String,
    /// Listener it belongs to.
    pub listener: String,
    /// Pool it forwards to.
    pub pool: String,
    /// Whether it is the listener's default route.
    pub default: bool,
    /// Switched off by an operator.
    pub disabled: bool,
    /// Priority class.
    pub priority: Option<String>,
    /// `"own"` (the route's bulkhead), `"pool"` (the pool's) or absent.
    pub bulkhead: Option<&'static str>,
    /// `"static"` or `"pool:NAME"`.
    pub fallback: Option<String>,
    /// Guard state and counters.
    pub guards: RouteGuardStatus,
}

/// A route's view at `now`.
pub fn route_view(l: &ListenerRt, r: &RouteRt, now: Instant) -> RouteView {
    let guards = r.guard.status(now);
    RouteView {
        name: r.spec.name.to_string(),
        listener: l.spec.name.to_string(),
        pool: r.spec.pool.to_string(),
        default: r.spec.is_default,
        disabled: guards.disabled,
        priority: r.spec.guards.priority.clone(),
        bulkhead: match (&r.spec.guards.concurrency, &r.pool.limiter) {
            (Some(_), _) => Some("own"),
            (None, Some(_)) => Some("pool"),
            (None, None) => None,
        },
        fallback: r.guard.fallback().map(|f| match &f.action {
            FallbackAction::Static(_) => "static".to_string(),
            FallbackAction::Pool(p) => format!("pool:{p}"),
        }),
        guards,
    }
}

/// A rate limiter's counters.
pub fn rate_status(r: &RateLimiter) -> RateStatus {
    RateStatus {
        rejected: r.rejected_total(),
        delayed: r.delayed_total(),
        key_evictions: r.evictions_total(),
        warmup_fraction: r.warmup_fraction(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_follow_the_status() {
        for (s, o) in [
            (200, Outcome::Success),
            (404, Outcome::Success),
            (429, Outcome::Success),
            (500, Outcome::Failure),
            (502, Outcome::Failure),
            (503, Outcome::Dropped),
            (504, Outcome::Dropped),
        ] {
            assert_eq!(outcome_of(StatusCode::from_u16(s).unwrap()), o, "{s}");
        }
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        assert_eq!(retry_after_secs(None), 1);
        assert_eq!(retry_after_secs(Some(Duration::ZERO)), 1);
        assert_eq!(retry_after_secs(Some(Duration::from_millis(1200))), 2);
        assert_eq!(retry_after_secs(Some(Duration::from_secs(3))), 3);
    }
}

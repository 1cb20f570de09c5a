//! Forwarding one request through a pool: pick a member, try, and after a failed try do
//! what [`crate::failure::decide`] says (redo on a fresh connection, retry on another
//! member, or answer the failure). The rules themselves live in `crate::failure`; this file
//! only carries them out and keeps the request's counters.

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tokio::time::Instant;
use tracing::debug;

use super::attempt::{self, Cause, Plan};
use super::conn_info::ConnInfo;
use super::request::{self, Limits, Outgoing};
use super::response::{finish_response, set_sticky_cookie, upgrade_response};
use crate::body::RespBody;
use crate::config::PoolSpec;
use crate::failure::{ErrorKind, Failure, Next, Tries, decide};
use crate::guards;
use crate::h1::Exchange;
use crate::lease::Lease;
use crate::pool::{Member, Pick, Pool};
use crate::reply;

/// Most free redos per request after a pooled connection turned out stale. A redo goes to a
/// fresh connection, which cannot be stale, so one is enough; the bound is a safety net.
const MAX_REDOS: u32 = 2;

/// Most members tried for one request (config allows at most 10 attempts).
const MAX_TRIED: usize = 10;

/// What forwarding needs besides the request.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The pool.
    pub pool: &'a Arc<Pool>,
    /// The client connection.
    pub conn: &'a ConnInfo,
    /// The listener's limits.
    pub limits: Limits,
    /// When the request arrived (its deadline counts from here).
    pub start: Instant,
}

/// The outcome of forwarding.
#[derive(Debug)]
pub struct Forwarded {
    /// The client's response.
    pub response: http::Response<RespBody>,
    /// The member whose answer it is (`None` when the proxy answered itself).
    pub member: Option<Arc<Member>>,
    /// Tries made, redos included.
    pub tries: u32,
    /// Why the proxy answered itself; `None` for a member's own answer, whatever its status.
    pub failure: Option<Failure>,
}

impl Forwarded {
    fn local(failure: Failure, response: http::Response<RespBody>, tries: u32) -> Forwarded {
        Forwarded {
            response,
            member: None,
            tries,
            failure: Some(failure),
        }
    }
}

/// Forward `req` through `ctx.pool`.
pub async fn forward(ctx: &Ctx<'_>, req: Request<Incoming>) -> Forwarded {
    let pool = ctx.pool;
    let spec = &pool.spec;
    let mut out = match request::prepare(req, spec, ctx.conn, ctx.limits).await {
        Ok(o) => o,
        Err(r) => {
            let resp = reply::error(r.failure.kind, r.message);
            return Forwarded::local(r.failure, resp, 0);
        }
    };
    let mut sticky = out
        .sticky_cookie
        .as_deref()
        .and_then(|t| pool.sticky_member(t));
    let deadline = ctx.start + spec.request_timeout;
    let mut req = RequestState::default();
    pool.deposit(ctx.start);
    // Clock reads are not free at this rate: each try reuses the last one taken.
    let mut now = ctx.start;
    let mut redo: Option<usize> = None;
    // A retry decided but not sent yet: counted once a member is found for it.
    let mut retrying: Option<Failure> = None;

    loop {
        if now >= deadline {
            return req.out_of_time(spec);
        }
        let fresh_only = out.upgrade || redo.is_some();
        let idx = match redo.take().or_else(|| sticky.take()) {
            Some(i) => i,
            None => match pool.pick(out.hash, req.tried(), now) {
                Pick::Member(i) => i,
                Pick::Empty if req.last.is_none() => return no_member(pool, now, req.tries()),
                Pick::Empty | Pick::Exhausted => return req.exhausted(spec),
            },
        };
        req.tried_member(idx);
        if let Some(f) = retrying.take() {
            pool.metrics.retry(&f);
        }
        let member = pool.members[idx].clone();
        let breaker = guards::member_try(&member, now);
        let remaining = deadline.saturating_duration_since(now);
        let plan = Plan {
            connect_timeout: spec.connect_timeout.min(remaining),
            try_timeout: spec.try_timeout.min(remaining),
            fresh_only,
        };
        let (result, done) = attempt::run(&member, &mut out, now, plan).await;
        now = done;
        req.attempt += 1;

        // A member's answer below 500 ends the request; a 5xx is a failure of the try
        // (retried if the pool retries that status) that the client may still get as is.
        let (failure, outcome) = match result {
            Ok((exchange, lease)) => {
                let status = exchange.head.status.as_u16();
                if status < 500 {
                    guards::member_result(breaker, now, None);
                    member.success(now);
                    return answered(&mut out, spec, member, exchange, lease, req.tries());
                }
                let f = Failure::status(pool.retries_status(status));
                (f, Ok((exchange, lease)))
            }
            Err(e) => (e.failure, Err(e.cause)),
        };
        guards::member_result(breaker, now, Some(&failure));
        member.record(now, &failure);
        let tries = Tries {
            attempt: req.attempt,
            attempts: spec.retry.attempts.max(1),
            redos_left: MAX_REDOS.saturating_sub(req.redos),
            resendable: out.resendable,
            time_left: now < deadline,
        };
        let next = decide(&failure, &tries, || pool.withdraw(now));
        debug!(
            pool = %spec.name,
            member = %member.name(),
            kind = failure.kind.as_str(),
            blame = failure.blame.as_str(),
            next = ?next,
            "try failed"
        );
        match (next, outcome) {
            (Next::Redo, _) => {
                // Not an attempt: the member never had a fair chance (stale connection).
                req.attempt -= 1;
                req.redos += 1;
                pool.metrics.redos.inc();
                redo = Some(idx);
            }
            (Next::Retry, outcome) => {
                retrying = Some(failure);
                // A retried answer is released unread (its connection is not reused); the
                // client gets it as an explanation if every retry fails too.
                req.last = Some((failure, explain(&failure, outcome, &member, spec)));
                now = backoff(spec, req.attempt, deadline, now).await;
            }
            (Next::Fail, Ok((exchange, lease))) => {
                // The member's own 5xx, not retried: the client gets it unchanged.
                return answered(&mut out, spec, member, exchange, lease, req.tries());
            }
            (Next::Fail, Err(cause)) => {
                let resp = explain(&failure, Err(cause), &member, spec);
                return Forwarded::local(failure, resp, req.tries());
            }
        }
    }
}

/// A request's counters across its tries.
#[derive(Default)]
struct RequestState {
    /// Members tried, in order (without repeats).
    tried: [usize; MAX_TRIED],
    n_tried: usize,
    /// Tries that counted (redos excluded).
    attempt: u32,
    /// Free redos made.
    redos: u32,
    /// The last retried failure and its answer, for when nothing better comes.
    last: Option<(Failure, http::Response<RespBody>)>,
}

impl RequestState {
    fn tried(&self) -> &[usize] {
        &self.tried[..self.n_tried]
    }

    fn tried_member(&mut self, idx: usize) {
        if !self.tried().contains(&idx) && self.n_tried < MAX_TRIED {
            self.tried[self.n_tried] = idx;
            self.n_tried += 1;
        }
    }

    fn tries(&self) -> u32 {
        self.attempt + self.redos
    }

    /// Every candidate was tried: the last failure, if any was kept.
    fn exhausted(&mut self, spec: &PoolSpec) -> Forwarded {
        let tries = self.tries();
        match self.last.take() {
            Some((f, resp)) => Forwarded::local(f, resp, tries),
            None => {
                let f = Failure::request(ErrorKind::AllMembersFailed);
                let msg = format!("every usable member of pool {:?} failed", spec.name);
                Forwarded::local(f, reply::error(f.kind, msg), tries)
            }
        }
    }

    /// The request's deadline passed: the last failure, else a request timeout.
    fn out_of_time(&mut self, spec: &PoolSpec) -> Forwarded {
        if self.last.is_some() {
            return self.exhausted(spec);
        }
        let f = Failure::request(ErrorKind::RequestTimeout);
        let msg = format!(
            "no answer within request_timeout ({:?})",
            spec.request_timeout
        );
        Forwarded::local(f, reply::error(f.kind, msg), self.tries())
    }
}

/// The pool has nothing to send to: 503 with `Retry-After`.
fn no_member(pool: &Pool, now: Instant, tries: u32) -> Forwarded {
    pool.metrics.no_member.inc();
    let f = Failure::request(ErrorKind::NoUsableMember);
    let why = pool.describe_empty(now);
    let resp = reply::plain(
        f.kind.status(),
        f.kind.as_str(),
        why,
        Some(pool.retry_after(now)),
    );
    Forwarded::local(f, resp, tries)
}

/// The client's response from a member's answer, with the sticky cookie when the pool
/// binds sessions and the client is not bound to this member yet.
fn answered(
    out: &mut Outgoing,
    spec: &PoolSpec,
    member: Arc<Member>,
    exchange: Exchange,
    lease: Lease,
    tries: u32,
) -> Forwarded {
    let mut resp = if out.upgrade && exchange.head.status == StatusCode::SWITCHING_PROTOCOLS {
        upgrade_response(exchange, lease, out.on_upgrade.take())
    } else {
        finish_response(exchange, lease)
    };
    if let Some(s) = &spec.sticky {
        if out.sticky_cookie.as_deref() != Some(member.token()) {
            set_sticky_cookie(&mut resp, s, member.token());
        }
    }
    Forwarded {
        response: resp,
        member: Some(member),
        tries,
        failure: None,
    }
}

/// The proxy's answer for a failed try: its kind, and a sentence naming the member.
fn explain(
    failure: &Failure,
    outcome: Result<(Exchange, Lease), Cause>,
    member: &Member,
    spec: &PoolSpec,
) -> http::Response<RespBody> {
    let name = member.name();
    match outcome {
        Ok((exchange, _lease)) => {
            let status = exchange.head.status;
            reply::plain(
                status,
                failure.kind.as_str(),
                format!(
                    "member {name} answered {}, and so did every retry",
                    status.as_u16()
                ),
                None,
            )
        }
        Err(Cause::Connect(e)) => reply::error(
            failure.kind,
            format!(
                "cannot connect to member {name} of pool {:?}: {e}",
                spec.name
            ),
        ),
        Err(Cause::Exchange(e)) => reply::error(
            failure.kind,
            format!("member {name} failed before answering: {e}"),
        ),
        Err(Cause::Timeout(t)) => reply::error(
            failure.kind,
            format!("member {name} sent no response headers within {t:?}"),
        ),
    }
}

/// Back-off before the next try: the first retry goes at once (it targets a different
/// member), later ones wait a jittered, bounded delay, never past the deadline. Returns the
/// time after the wait.
async fn backoff(spec: &PoolSpec, attempt: u32, deadline: Instant, now: Instant) -> Instant {
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

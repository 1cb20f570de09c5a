//! One try of a request on one member: take a connection (pooled, else fresh), send the
//! request, wait for the response head. A failed try comes back as a [`Failure`] saying who
//! is to blame and whether the request may be sent again, plus its cause for the message.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::request::Outgoing;
use crate::failure::Failure;
use crate::h1::{Exchange, H1Error, RequestHead};
use crate::lease::Lease;
use crate::pool::Member;
use crate::upstream::{self, ConnectError};

/// How a try may get its connection and how long it may take.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Time to connect (capped by what is left of the request's deadline).
    pub connect_timeout: Duration,
    /// Time to the response head (same cap).
    pub try_timeout: Duration,
    /// Open a fresh connection even if an idle one exists (upgrades, redos after a stale
    /// pooled connection).
    pub fresh_only: bool,
}

/// A failed try.
#[derive(Debug)]
pub struct TryError {
    /// What failed, who is to blame, whether a resend is safe.
    pub failure: Failure,
    /// The underlying cause, for the message and logs.
    pub cause: Cause,
}

/// The underlying cause of a failed try.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// No connection.
    #[error(transparent)]
    Connect(ConnectError),
    /// The exchange failed.
    #[error(transparent)]
    Exchange(H1Error),
    /// No response head in time.
    #[error("no response headers within try_timeout ({0:?})")]
    Timeout(Duration),
}

/// Run one try of `out` on `member` starting at `now`. Returns the result and the time it
/// ended.
///
/// A pooled connection is taken only if it looks alive (a close the worker's event loop has
/// seen); one closed since fails the try with the blame on nobody (`crate::failure`).
pub async fn run(
    member: &Arc<Member>,
    out: &mut Outgoing,
    now: Instant,
    plan: Plan,
) -> (Result<(Exchange, Lease), TryError>, Instant) {
    let epoch = member.epoch();
    let mut lease = Lease::begin(member.clone(), epoch, now);
    member.metrics.requests.inc();
    let pooled = if plan.fresh_only {
        None
    } else {
        member.conns.checkout(epoch, now)
    };
    let (mut conn, sent_at) = match pooled {
        Some(c) => (c, now),
        None => match upstream::connect_http(member.addr(), plan.connect_timeout).await {
            Ok(c) => (c, Instant::now()),
            Err(e) => {
                let err = TryError {
                    failure: e.failure(),
                    cause: Cause::Connect(e),
                };
                return (Err(err), Instant::now());
            }
        },
    };
    // Field by field: the head is borrowed while the body is lent out mutably.
    let head = RequestHead {
        method: &out.method,
        uri: &out.uri,
        headers: &out.headers,
    };
    let result = tokio::time::timeout(plan.try_timeout, conn.send(head, &mut out.body)).await;
    let done = Instant::now();
    let r = match result {
        Err(_) => Err(TryError {
            failure: Failure::try_timeout(conn.progress()),
            cause: Cause::Timeout(plan.try_timeout),
        }),
        Ok(Err(e)) => Err(TryError {
            failure: e.failure(conn.progress()),
            cause: Cause::Exchange(e),
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

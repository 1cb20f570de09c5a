//! A try's hold on a member ([`Lease`]): counted in flight and waiting for an answer from
//! the moment the try starts, it carries the upstream connection while the response body
//! streams to the client, and settles the try when dropped (the connection goes back to the
//! idle pool only if the body ended cleanly).

use std::sync::Arc;

use tokio::time::Instant;

use crate::failure::{Progress, Retry};
use crate::h1::{Conn, H1Error};
use crate::pool::Member;

/// One try's hold on a member: counted in flight until dropped; if marked reusable before
/// the drop, its connection goes back to the idle pool.
pub struct Lease {
    member: Arc<Member>,
    conn: Option<Conn>,
    epoch: u64,
    reusable: bool,
    /// When the response head arrived: stands in for "now" when the connection goes back
    /// to the pool (the idle timeout does not need better than that, and it saves a clock
    /// read per request).
    answered: Option<Instant>,
    /// The member's waiting-age token while the try waits for its answer's head.
    waiting: Option<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("member", &self.member.name())
            .finish()
    }
}

impl Lease {
    /// Start a try on `member` at `now`: counts it in flight and waiting for an answer.
    pub fn begin(member: Arc<Member>, epoch: u64, now: Instant) -> Lease {
        member.load.begin();
        let waiting = Some(member.load.waiting(now));
        member.metrics.inflight.inc();
        Lease {
            member,
            conn: None,
            epoch,
            reusable: false,
            answered: None,
            waiting,
        }
    }

    /// The try's answer (its head) arrived, or the try ended without one.
    pub fn answered(&mut self) {
        if let Some(t) = self.waiting.take() {
            self.member.load.answered(t);
        }
    }

    /// The member.
    pub fn member(&self) -> &Arc<Member> {
        &self.member
    }

    /// Attach the connection the try uses, once its response head arrived at `at`.
    pub fn attach(&mut self, conn: Conn, at: Instant) {
        self.answered();
        self.conn = Some(conn);
        self.answered = Some(at);
    }

    /// The attached connection.
    pub fn conn_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// Take the attached connection (for an upgrade).
    pub fn take_conn(&mut self) -> Option<Conn> {
        self.conn.take()
    }

    /// The member failed in the middle of a response body: recorded against it (its head
    /// was already counted a success); nothing can be retried once the client has bytes.
    pub fn failed_mid_body(&self, error: &H1Error) {
        let mut failure = error.failure(Progress {
            reused: false,
            written: true,
            answered: true,
        });
        failure.retry = Retry::Never;
        self.member.record(Instant::now(), &failure);
    }

    /// The response ended cleanly: the connection may be reused.
    pub fn mark_reusable(&mut self) {
        self.reusable = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.answered();
        self.member.load.end();
        self.member.metrics.inflight.dec();
        if self.reusable {
            if let Some(conn) = self.conn.take() {
                let at = self.answered.unwrap_or_else(Instant::now);
                self.member.conns.checkin(conn, self.epoch, at);
            }
        }
    }
}

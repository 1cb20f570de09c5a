//! Keeping a lease alive, and knowing until when it is certainly alive.
//!
//! [`LeaseKeeper`] renews a lease every third of its TTL (as etcd's Go client does) over the
//! client's failover, and publishes a **conservative deadline**: the instant the renewal was
//! *sent* plus the TTL the server granted. The server restarts its countdown when it
//! *receives* the renewal, later, so the lease cannot expire on the server before that
//! deadline (etcd only ever extends leases on a leader change, and the embedded store gives a
//! full TTL after a restart). A holder that must stop acting before anyone else can take over
//! (a database primary, a cache master) fences itself at `deadline - margin`, where the margin
//! covers the clock-rate difference between the machines and its own reaction time.
//!
//! The timing decisions are [`Renewal`], a pure state machine with `now` passed in.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::Client;
use crate::error::Error;

/// What the keeper knows of its lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Certainly alive on the server until `deadline`.
    Alive {
        /// Conservative expiry (see the module docs).
        deadline: Instant,
    },
    /// Expired, revoked, or not renewed before its deadline: gone or about to be.
    Lost,
}

/// The renewal schedule of one lease: pure, `now` passed in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Renewal {
    ttl: Duration,
    deadline: Instant,
    last_sent: Instant,
}

impl Renewal {
    /// A lease granted with `ttl`, whose grant request was sent at `sent`.
    pub fn new(sent: Instant, ttl: Duration) -> Renewal {
        Renewal {
            ttl,
            deadline: sent + ttl,
            last_sent: sent,
        }
    }

    /// The conservative expiry.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// When to send the next renewal: a third of the TTL after the last one.
    pub fn next_renewal(&self) -> Instant {
        self.last_sent + self.ttl / 3
    }

    /// A renewal is being sent at `now`.
    pub fn sending(&mut self, now: Instant) {
        self.last_sent = now;
    }

    /// The renewal sent at `sent` was answered with `ttl`: the deadline moves (never back).
    pub fn renewed(&mut self, sent: Instant, ttl: Duration) {
        self.ttl = ttl;
        self.deadline = self.deadline.max(sent + ttl);
    }

    /// Whether the lease must be considered lost at `now`.
    pub fn lost(&self, now: Instant) -> bool {
        now >= self.deadline
    }
}

/// A background task renewing one lease. Dropping it stops the renewals (the lease then
/// expires on its own); [`LeaseKeeper::revoke`] ends it at once.
#[derive(Debug)]
pub struct LeaseKeeper {
    id: i64,
    state: watch::Receiver<LeaseState>,
    stop: CancellationToken,
    client: Client,
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Client {
    /// Grant a lease of `ttl` and keep it alive in the background.
    pub async fn lease_keeper(&self, ttl: Duration) -> Result<LeaseKeeper, Error> {
        let sent = Instant::now();
        let grant = self.grant(ttl).await?;
        Ok(self.keep_alive(grant.id, Renewal::new(sent, grant.ttl)))
    }

    /// Keep the already granted lease `id` alive with the schedule `renewal`.
    pub fn keep_alive(&self, id: i64, renewal: Renewal) -> LeaseKeeper {
        let (tx, rx) = watch::channel(LeaseState::Alive {
            deadline: renewal.deadline(),
        });
        let stop = CancellationToken::new();
        tokio::spawn(renew(self.clone(), id, renewal, tx, stop.clone()));
        LeaseKeeper {
            id,
            state: rx,
            stop,
            client: self.clone(),
        }
    }
}

async fn renew(
    client: Client,
    id: i64,
    mut r: Renewal,
    tx: watch::Sender<LeaseState>,
    stop: CancellationToken,
) {
    let mut rng = fastrand::Rng::new();
    let mut failures = 0u32;
    loop {
        let wake = if failures == 0 {
            r.next_renewal()
        } else {
            Instant::now() + client.options().backoff.delay(failures - 1, &mut rng)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(wake.min(r.deadline())) => {}
        }
        let now = Instant::now();
        if r.lost(now) {
            let _ = tx.send(LeaseState::Lost);
            tracing::warn!(
                lease = format!("{id:x}"),
                "lease not renewed before its deadline: lost"
            );
            return;
        }
        r.sending(now);
        // Never wait for an answer past the deadline: by then the answer no longer matters.
        let budget = r
            .deadline()
            .saturating_duration_since(now)
            .min(client.timeout());
        let bounded = client.with_timeout(budget);
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            res = bounded.keep_alive_once(id) => res,
        };
        match result {
            Ok(ttl) => {
                failures = 0;
                r.renewed(now, ttl);
                let _ = tx.send(LeaseState::Alive {
                    deadline: r.deadline(),
                });
            }
            Err(Error::LeaseNotFound(_)) => {
                let _ = tx.send(LeaseState::Lost);
                tracing::warn!(
                    lease = format!("{id:x}"),
                    "lease expired or revoked on the server"
                );
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::debug!(lease = format!("{id:x}"), error = %e, "lease renewal failed; retrying");
            }
        }
    }
}

impl LeaseKeeper {
    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        *self.state.borrow()
    }

    /// A receiver of state changes.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.clone()
    }

    /// Resolve when the lease is lost.
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| *s == LeaseState::Lost).await;
    }

    /// Stop renewing and revoke the lease (its keys are deleted at once).
    pub async fn revoke(self) -> Result<(), Error> {
        self.stop.cancel();
        match self.client.revoke(self.id).await {
            Ok(()) | Err(Error::LeaseNotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_counts_from_the_send_not_the_answer() {
        let t0 = Instant::now();
        let mut r = Renewal::new(t0, Duration::from_secs(3));
        assert_eq!(r.next_renewal(), t0 + Duration::from_secs(1));
        let sent = t0 + Duration::from_secs(1);
        r.sending(sent);
        // The answer arrives 1.5 s later; the deadline still counts from the send.
        r.renewed(sent, Duration::from_secs(3));
        assert_eq!(r.deadline(), sent + Duration::from_secs(3));
        assert!(!r.lost(sent + Duration::from_millis(2999)));
        assert!(r.lost(sent + Duration::from_secs(3)));
    }

    #[test]
    fn a_late_answer_never_moves_the_deadline_back() {
        let t0 = Instant::now();
        let mut r = Renewal::new(t0, Duration::from_secs(6));
        r.renewed(t0 + Duration::from_secs(2), Duration::from_secs(6));
        // An answer to an older renewal arrives after a newer one.
        r.renewed(t0 + Duration::from_secs(1), Duration::from_secs(6));
        assert_eq!(r.deadline(), t0 + Duration::from_secs(8));
    }

    #[test]
    fn without_answers_the_lease_is_lost_at_the_deadline() {
        let t0 = Instant::now();
        let mut r = Renewal::new(t0, Duration::from_secs(3));
        for s in [1, 2] {
            r.sending(t0 + Duration::from_secs(s));
        }
        assert!(!r.lost(t0 + Duration::from_millis(2999)));
        assert!(r.lost(t0 + Duration::from_secs(3)));
    }
}

//! The embedded store's lease table: a pure state machine with `now` passed in.
//!
//! A lease has a granted TTL and an expiry instant. Keep-alive moves the expiry to
//! `now + ttl`; [`Leases::expired`] names the leases whose expiry has passed, and the driver
//! revokes them (deleting their keys in one revision, as etcd does). Nothing here reads a
//! clock, so tests step time explicitly.
//!
//! **Restarts.** Only the grant (id, TTL) is persisted, never the expiry. When the store
//! starts, every lease is restored with a full TTL from the start instant ([`Leases::restore`]).
//! That is what etcd does when a new leader takes over (it extends every lease's expiry by the
//! election timeout, so a lease never expires because of the leader change itself): a lease
//! never expires *earlier* because the server was down, and at worst lives one TTL past the
//! restart. A client whose process died while the store was down loses its lease one TTL after
//! the store is back.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// Smallest TTL granted, in seconds (a request for less gets this). etcd's is 1.5 x its
/// election timeout rounded up (2 s with defaults); one node has no election, so 1 s.
pub const MIN_TTL: i64 = 1;
/// Largest TTL accepted, in seconds: etcd's `MaxLeaseTTL` (about 285 years).
pub const MAX_TTL: i64 = 9_000_000_000;

/// One lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    /// The TTL granted, in seconds.
    pub ttl: i64,
    /// When it expires unless kept alive.
    pub expires: Instant,
}

/// Why a grant was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantError {
    /// The requested id is taken.
    Exists,
    /// TTL above [`MAX_TTL`].
    TtlTooLarge,
    /// The table holds `max` leases already.
    TooMany {
        /// The configured limit.
        max: usize,
    },
}

/// The lease table.
#[derive(Debug)]
pub struct Leases {
    leases: HashMap<i64, Lease>,
    /// Expiry order: (expiry, id). Kept in step with `leases`.
    by_expiry: BTreeSet<(Instant, i64)>,
    max: usize,
}

impl Leases {
    /// An empty table holding at most `max` leases.
    pub fn new(max: usize) -> Self {
        Leases {
            leases: HashMap::new(),
            by_expiry: BTreeSet::new(),
            max,
        }
    }

    /// Restore persisted grants after a restart: each gets a full TTL from `now` (see the
    /// module docs). The limit does not apply to restored leases.
    pub fn restore(&mut self, now: Instant, grants: impl IntoIterator<Item = (i64, i64)>) {
        for (id, ttl) in grants {
            self.insert(id, ttl, now);
        }
    }

    /// Grant lease `id` for `ttl` seconds (raised to [`MIN_TTL`]); returns the TTL granted.
    pub fn grant(&mut self, now: Instant, id: i64, ttl: i64) -> Result<i64, GrantError> {
        if ttl > MAX_TTL {
            return Err(GrantError::TtlTooLarge);
        }
        if self.leases.contains_key(&id) {
            return Err(GrantError::Exists);
        }
        if self.leases.len() >= self.max {
            return Err(GrantError::TooMany { max: self.max });
        }
        let ttl = ttl.max(MIN_TTL);
        self.insert(id, ttl, now);
        Ok(ttl)
    }

    fn insert(&mut self, id: i64, ttl: i64, now: Instant) {
        let expires = now + ttl_duration(ttl);
        if let Some(old) = self.leases.insert(id, Lease { ttl, expires }) {
            self.by_expiry.remove(&(old.expires, id));
        }
        self.by_expiry.insert((expires, id));
    }

    /// Renew `id`: it now expires `ttl` after `now`. `None` if it does not exist (expired,
    /// revoked, never granted): the caller answers TTL 0, as etcd does.
    pub fn keep_alive(&mut self, now: Instant, id: i64) -> Option<i64> {
        let lease = self.leases.get_mut(&id)?;
        // A lease past its expiry that the driver has not revoked yet is dead already.
        if lease.expires <= now {
            return None;
        }
        self.by_expiry.remove(&(lease.expires, id));
        lease.expires = now + ttl_duration(lease.ttl);
        self.by_expiry.insert((lease.expires, id));
        Some(lease.ttl)
    }

    /// Remove `id`; whether it existed.
    pub fn remove(&mut self, id: i64) -> bool {
        match self.leases.remove(&id) {
            Some(l) => {
                self.by_expiry.remove(&(l.expires, id));
                true
            }
            None => false,
        }
    }

    /// The lease `id`, if it exists.
    pub fn get(&self, id: i64) -> Option<Lease> {
        self.leases.get(&id).copied()
    }

    /// Whole seconds left before `id` expires (0 when due), if it exists.
    pub fn remaining(&self, now: Instant, id: i64) -> Option<i64> {
        let l = self.leases.get(&id)?;
        let left = l.expires.saturating_duration_since(now);
        Some(i64::try_from(left.as_secs()).unwrap_or(i64::MAX))
    }

    /// Leases whose expiry is at or before `now`, soonest first. They stay in the table until
    /// the driver revokes them ([`Leases::remove`]).
    pub fn expired(&self, now: Instant) -> Vec<i64> {
        self.by_expiry
            .iter()
            .take_while(|(t, _)| *t <= now)
            .map(|(_, id)| *id)
            .collect()
    }

    /// The next expiry, for the driver's timer.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.by_expiry.first().map(|(t, _)| *t)
    }

    /// Every lease id.
    pub fn ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// How many leases exist.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }
}

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(u64::try_from(ttl).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t0() -> Instant {
        Instant::now()
    }

    #[test]
    fn expires_on_time_and_not_before() {
        let now = t0();
        let mut l = Leases::new(10);
        assert_eq!(l.grant(now, 7, 3), Ok(3));
        assert!(l.expired(now + Duration::from_millis(2999)).is_empty());
        assert_eq!(l.expired(now + Duration::from_secs(3)), vec![7]);
        assert_eq!(l.next_expiry(), Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn keep_alive_moves_the_expiry() {
        let now = t0();
        let mut l = Leases::new(10);
        l.grant(now, 1, 2).unwrap();
        let later = now + Duration::from_millis(1500);
        assert_eq!(l.keep_alive(later, 1), Some(2));
        assert!(l.expired(now + Duration::from_millis(3400)).is_empty());
        assert_eq!(l.expired(later + Duration::from_secs(2)), vec![1]);
        assert_eq!(l.remaining(later, 1), Some(2));
    }

    #[test]
    fn a_due_lease_cannot_be_revived() {
        let now = t0();
        let mut l = Leases::new(10);
        l.grant(now, 1, 1).unwrap();
        assert_eq!(l.keep_alive(now + Duration::from_secs(1), 1), None);
        assert_eq!(l.keep_alive(now, 99), None);
    }

    #[test]
    fn grant_limits_and_minimum() {
        let now = t0();
        let mut l = Leases::new(2);
        assert_eq!(l.grant(now, 1, 0), Ok(MIN_TTL));
        assert_eq!(l.grant(now, 1, 5), Err(GrantError::Exists));
        assert_eq!(l.grant(now, 2, MAX_TTL + 1), Err(GrantError::TtlTooLarge));
        l.grant(now, 2, 5).unwrap();
        assert_eq!(l.grant(now, 3, 5), Err(GrantError::TooMany { max: 2 }));
        assert!(l.remove(1));
        assert!(!l.remove(1));
        assert_eq!(l.ids(), vec![2]);
    }

    #[test]
    fn restore_gives_a_full_ttl_from_the_restart() {
        let start = t0();
        let mut l = Leases::new(1);
        l.restore(start, [(1, 10), (2, 3)]);
        assert_eq!(l.len(), 2, "restored leases are not limited");
        assert_eq!(l.expired(start + Duration::from_secs(3)), vec![2]);
        assert_eq!(l.remaining(start, 1), Some(10));
    }

    proptest! {
        /// Whatever the sequence of grants, renewals and revocations, a lease is reported
        /// expired exactly when its last renewal (or grant) is at least its TTL in the past.
        #[test]
        fn expiry_matches_the_last_renewal(ops in proptest::collection::vec((0u8..3, 0i64..4, 0u64..5000), 1..60)) {
            let start = t0();
            let mut l = Leases::new(100);
            let mut model: HashMap<i64, (i64, u64)> = HashMap::new(); // id -> (ttl, last renewal ms)
            let mut now_ms = 0u64;
            for (op, id, dt) in ops {
                now_ms += dt;
                let now = start + Duration::from_millis(now_ms);
                // Drive expiry first, as the server does.
                for gone in l.expired(now) {
                    l.remove(gone);
                    let (ttl, at) = model.remove(&gone).unwrap();
                    prop_assert!(now_ms >= at + (ttl as u64) * 1000);
                }
                for (&id, &(ttl, at)) in &model {
                    prop_assert!(now_ms < at + (ttl as u64) * 1000, "lease {id} should have expired");
                }
                match op {
                    0 => if let Ok(ttl) = l.grant(now, id, id + 1) { model.insert(id, (ttl, now_ms)); },
                    1 => if l.keep_alive(now, id).is_some() { model.get_mut(&id).unwrap().1 = now_ms; },
                    _ => { l.remove(id); model.remove(&id); }
                }
            }
        }
    }
}

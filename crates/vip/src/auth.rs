//! HMAC-SHA256 advert authentication with anti-replay.
//!
//! VRRPv3 has no authentication (RFC 5798 removed v2's), so any host on the LAN can take the
//! VIP with one forged advert. hastack appends a trailer (see [`crate::packet`]): a sequence
//! number and an HMAC over the advert, the sequence and the IPv4 source and destination.
//!
//! Anti-replay: the sequence is the sender's wall clock in microseconds, forced strictly
//! increasing. A receiver accepts an advert only if its sequence is greater than the last one
//! accepted from that source, and within `max_clock_skew` of its own clock (so a replay of a
//! recorded advert is refused even by a receiver that just restarted). This needs clocks
//! within `max_clock_skew` of each other (NTP), which every real deployment has.
//!
//! Peers without the key (keepalived) cannot join an authenticated group: that is the point.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::packet::{Advert, AuthTrailer};

type HmacSha256 = Hmac<Sha256>;

/// Why an advert was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No trailer while authentication is on.
    Unsigned,
    /// The MAC does not verify.
    BadMac,
    /// Sequence not newer than the last accepted one from that source.
    Replay,
    /// Sequence timestamp too far from our clock.
    Stale,
}

impl Reject {
    /// Label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Unsigned => "unsigned",
            Reject::BadMac => "bad_mac",
            Reject::Replay => "replay",
            Reject::Stale => "stale",
        }
    }
}

/// Signs and verifies adverts for one instance.
#[derive(Debug)]
pub struct Authenticator {
    mac: HmacSha256,
    max_skew: Duration,
    last_sent: u64,
    last_seen: HashMap<Ipv4Addr, u64>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl Authenticator {
    /// An authenticator for `key`.
    pub fn new(key: &[u8], max_skew: Duration) -> Self {
        #[allow(clippy::expect_used, reason = "HMAC accepts keys of any length")]
        let mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
        Authenticator {
            mac,
            max_skew,
            last_sent: 0,
            last_seen: HashMap::new(),
        }
    }

    fn compute(&self, advert: &Advert, src: Ipv4Addr, dst: Ipv4Addr) -> [u8; 32] {
        let mut m = self.mac.clone();
        m.update(&advert.signed_bytes(src, dst));
        m.finalize().into_bytes().into()
    }

    /// Attach a fresh trailer to `advert` for sending `src -> dst`.
    pub fn sign(&mut self, advert: &mut Advert, src: Ipv4Addr, dst: Ipv4Addr) {
        self.sign_at(advert, src, dst, now_micros());
    }

    fn sign_at(&mut self, advert: &mut Advert, src: Ipv4Addr, dst: Ipv4Addr, now: u64) {
        let seq = now.max(self.last_sent + 1);
        self.last_sent = seq;
        advert.auth = Some(AuthTrailer { seq, mac: [0; 32] });
        let mac = self.compute(advert, src, dst);
        advert.auth = Some(AuthTrailer { seq, mac });
    }

    /// Verify a received advert; on success remember its sequence.
    pub fn verify(&mut self, advert: &Advert, src: Ipv4Addr, dst: Ipv4Addr) -> Result<(), Reject> {
        self.verify_at(advert, src, dst, now_micros())
    }

    fn verify_at(
        &mut self,
        advert: &Advert,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        now: u64,
    ) -> Result<(), Reject> {
        let Some(t) = &advert.auth else {
            return Err(Reject::Unsigned);
        };
        let mut m = self.mac.clone();
        m.update(&advert.signed_bytes(src, dst));
        // Constant-time comparison.
        m.verify_slice(&t.mac).map_err(|_| Reject::BadMac)?;
        if self.last_seen.get(&src).is_some_and(|&l| t.seq <= l) {
            return Err(Reject::Replay);
        }
        let skew = u64::try_from(self.max_skew.as_micros()).unwrap_or(u64::MAX);
        if t.seq.abs_diff(now) > skew {
            return Err(Reject::Stale);
        }
        self.last_seen.insert(src, t.seq);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ChecksumKind, VRRP_GROUP, Version, parse};

    fn advert() -> Advert {
        Advert {
            version: Version::V3,
            vrid: 7,
            priority: 200,
            interval_cs: 100,
            addrs: vec![Ipv4Addr::new(10, 0, 0, 50)],
            v2_auth_type: 0,
            auth: None,
        }
    }
    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const SKEW: Duration = Duration::from_secs(30);

    #[test]
    fn signed_advert_verifies_once() {
        let mut tx = Authenticator::new(b"0123456789abcdef", SKEW);
        let mut rx = Authenticator::new(b"0123456789abcdef", SKEW);
        let mut a = advert();
        tx.sign(&mut a, A, VRRP_GROUP);
        // Through the wire format and back.
        let bytes = a.encode(A, VRRP_GROUP, ChecksumKind::PseudoHeader);
        let (b, _) = parse(&bytes, A, VRRP_GROUP).unwrap();
        assert_eq!(rx.verify(&b, A, VRRP_GROUP), Ok(()));
        assert_eq!(rx.verify(&b, A, VRRP_GROUP), Err(Reject::Replay));
        // A newer one is accepted.
        let mut c = advert();
        tx.sign(&mut c, A, VRRP_GROUP);
        assert_eq!(rx.verify(&c, A, VRRP_GROUP), Ok(()));
    }

    #[test]
    fn forgeries_are_rejected() {
        let mut tx = Authenticator::new(b"0123456789abcdef", SKEW);
        let mut rx = Authenticator::new(b"0123456789abcdef", SKEW);
        assert_eq!(rx.verify(&advert(), A, VRRP_GROUP), Err(Reject::Unsigned));
        let mut wrong = Authenticator::new(b"another key 12345", SKEW);
        let mut a = advert();
        wrong.sign(&mut a, A, VRRP_GROUP);
        assert_eq!(rx.verify(&a, A, VRRP_GROUP), Err(Reject::BadMac));
        // Raising the priority of a genuine advert breaks the MAC.
        let mut g = advert();
        tx.sign(&mut g, A, VRRP_GROUP);
        g.priority = 255;
        assert_eq!(rx.verify(&g, A, VRRP_GROUP), Err(Reject::BadMac));
        // Replaying a genuine advert from another source breaks it too.
        let mut h = advert();
        tx.sign(&mut h, A, VRRP_GROUP);
        assert_eq!(
            rx.verify(&h, Ipv4Addr::new(10, 0, 0, 66), VRRP_GROUP),
            Err(Reject::BadMac)
        );
    }

    #[test]
    fn stale_adverts_are_rejected_after_restart() {
        let mut tx = Authenticator::new(b"0123456789abcdef", SKEW);
        let mut a = advert();
        tx.sign_at(&mut a, A, VRRP_GROUP, 1_000_000);
        let mut fresh = Authenticator::new(b"0123456789abcdef", SKEW);
        assert_eq!(
            fresh.verify_at(&a, A, VRRP_GROUP, 1_000_000 + 31_000_000),
            Err(Reject::Stale)
        );
        assert_eq!(fresh.verify_at(&a, A, VRRP_GROUP, 1_000_001), Ok(()));
    }
}

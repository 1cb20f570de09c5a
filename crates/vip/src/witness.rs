//! The witness: a third party that hears every advert and tells a would-be master whether
//! some other router is still advertising.
//!
//! One-way loss (B stops hearing A's adverts while A keeps serving) makes plain VRRP elect a
//! second master. With `witness = [...]` configured, an instance only claims the VIP if a
//! majority of witnesses answer and none of them still hears a better live master (priority
//! higher than ours, or equal with a higher address, or any master when we would not preempt),
//! and a master steps down when it cannot reach a majority for three query rounds, or when a
//! witness reports a better live master it cannot hear itself.
//!
//! Protocol (UDP, one datagram each way, text):
//! `HSW1 Q <vrid> <nonce>` -> `HSW1 A <nonce> [<ip>:<priority>:<ms_left>]...`, listing the
//! senders of non-zero-priority adverts for `vrid` heard within their Master_Down_Interval,
//! with the time left before the witness considers each one dead.
//!
//! What it is not: an authenticated channel (run it on the same trusted segment; a forged
//! answer can at worst delay a takeover or cause a step-down), or a consensus service.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::Error;
use crate::config::WitnessServer;
use crate::net::VrrpSocket;
use crate::netlink::Netlink;
use crate::packet::{IPPROTO_VRRP, parse, parse_ipv4};
use crate::state::master_down_interval;

/// A live sender as a witness sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Live {
    /// Sender address.
    pub ip: Ipv4Addr,
    /// Its advertised priority.
    pub priority: u8,
    /// Time before the witness considers it dead.
    pub left: Duration,
}

fn encode_answer(nonce: u64, live: &[Live]) -> String {
    let mut s = format!("HSW1 A {nonce}");
    for l in live {
        s.push_str(&format!(" {}:{}:{}", l.ip, l.priority, l.left.as_millis()));
    }
    s
}

fn parse_answer(s: &str, nonce: u64) -> Option<Vec<Live>> {
    let mut w = s.split_whitespace();
    if w.next()? != "HSW1" || w.next()? != "A" || w.next()?.parse::<u64>().ok()? != nonce {
        return None;
    }
    w.map(|x| {
        let mut p = x.split(':');
        Some(Live {
            ip: p.next()?.parse().ok()?,
            priority: p.next()?.parse().ok()?,
            left: Duration::from_millis(p.next()?.parse().ok()?),
        })
    })
    .collect()
}

/// Ask every witness about `vrid`; each answer or `None` (no answer within `timeout`).
pub async fn query(
    witnesses: &[SocketAddr],
    vrid: u8,
    timeout: Duration,
) -> Vec<Option<Vec<Live>>> {
    let futs = witnesses.iter().map(|w| query_one(*w, vrid, timeout));
    futures_util::future::join_all(futs).await
}

async fn query_one(w: SocketAddr, vrid: u8, timeout: Duration) -> Option<Vec<Live>> {
    let bind: SocketAddr = if w.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let s = UdpSocket::bind(bind).await.ok()?;
    s.connect(w).await.ok()?;
    let nonce = fastrand::u64(..);
    let q = format!("HSW1 Q {vrid} {nonce}");
    let deadline = Instant::now() + timeout;
    // Two tries within the timeout: one lost datagram should not cost a takeover.
    for attempt in 0..2u32 {
        let _ = s.send(q.as_bytes()).await;
        let until = if attempt == 0 {
            Instant::now() + timeout / 2
        } else {
            deadline
        };
        let mut buf = [0u8; 1500];
        while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.recv(&mut buf)).await {
            if let Some(a) = std::str::from_utf8(&buf[..n])
                .ok()
                .and_then(|t| parse_answer(t, nonce))
            {
                return Some(a);
            }
        }
    }
    None
}

/// The claim decision from witness answers. `Ok(())` to claim; `Err(retry_after)` to wait.
pub fn decide(
    answers: &[Option<Vec<Live>>],
    me: Ipv4Addr,
    my_priority: u8,
    preempt: bool,
    fallback_retry: Duration,
) -> Result<(), Duration> {
    let answered: Vec<&Vec<Live>> = answers.iter().flatten().collect();
    if answered.len() * 2 <= answers.len() {
        return Err(fallback_retry);
    }
    let blocking = answered
        .iter()
        .flat_map(|a| a.iter())
        .filter(|l| l.ip != me && l.priority > 0)
        .filter(|l| {
            !preempt
                || l.priority > my_priority
                || (l.priority == my_priority && l.ip > me)
                || l.priority == 255
        })
        .map(|l| l.left)
        .max();
    match blocking {
        // Ask again just after the witness would declare it dead.
        Some(left) => Err((left + Duration::from_millis(5)).min(fallback_retry)),
        None => Ok(()),
    }
}

/// Whether a master must step down: `Some(reason)` if so.
pub fn master_check(
    answers: &[Option<Vec<Live>>],
    me: Ipv4Addr,
    my_priority: u8,
) -> Option<&'static str> {
    let answered: Vec<&Vec<Live>> = answers.iter().flatten().collect();
    if answered.len() * 2 <= answers.len() {
        return Some("no witness majority");
    }
    let better = answered.iter().flat_map(|a| a.iter()).any(|l| {
        l.ip != me && (l.priority > my_priority || (l.priority == my_priority && l.ip > me))
    });
    better.then_some("a witness hears a better master")
}

#[derive(Debug)]
struct Seen {
    priority: u8,
    interval_cs: u16,
    at: Instant,
}

/// Run a witness until `shutdown`.
pub async fn run_server(cfg: WitnessServer, shutdown: CancellationToken) -> Result<(), Error> {
    let nl = Netlink::connect()?;
    let link = nl.link(&cfg.interface).await?;
    let primary = nl.primary_v4(link.index).await?.ok_or_else(|| {
        Error::Config(format!(
            "witness interface {} has no IPv4 address",
            cfg.interface
        ))
    })?;
    let vrrp = VrrpSocket::open(&cfg.interface, link.index, primary)?;
    let udp = UdpSocket::bind(cfg.listen)
        .await
        .map_err(|e| Error::Io(format!("witness: cannot bind {}: {e}", cfg.listen)))?;
    info!(listen = %cfg.listen, interface = %cfg.interface, "witness running");
    let mut seen: HashMap<(u8, Ipv4Addr), Seen> = HashMap::new();
    let mut pkt = vec![0u8; 2048];
    let mut q = [0u8; 512];
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = vrrp.recv(&mut pkt) => {
                let Ok(n) = r else { continue };
                let Ok(ip) = parse_ipv4(&pkt[..n]) else { continue };
                if ip.protocol != IPPROTO_VRRP || ip.ttl != 255 {
                    continue;
                }
                if let Ok((a, _)) = parse(&pkt[ip.header_len..ip.total_len], ip.src, ip.dst) {
                    if a.priority == 0 {
                        seen.remove(&(a.vrid, ip.src));
                    } else {
                        seen.insert((a.vrid, ip.src), Seen { priority: a.priority, interval_cs: a.interval_cs, at: Instant::now() });
                    }
                }
            }
            r = udp.recv_from(&mut q) => {
                let Ok((n, from)) = r else { continue };
                let Some(text) = std::str::from_utf8(&q[..n]).ok() else { continue };
                let mut w = text.split_whitespace();
                let (Some("HSW1"), Some("Q"), Some(vrid), Some(nonce)) = (w.next(), w.next(), w.next(), w.next()) else {
                    debug!(%from, "witness: malformed query");
                    continue;
                };
                let (Ok(vrid), Ok(nonce)) = (vrid.parse::<u8>(), nonce.parse::<u64>()) else { continue };
                let now = Instant::now();
                let live: Vec<Live> = seen
                    .iter()
                    .filter(|((v, _), _)| *v == vrid)
                    .filter_map(|((_, ip), s)| {
                        // The witness uses the sender's own priority for the skew: the
                        // sender is the master, and it is what its backups compute.
                        let down = master_down_interval(crate::packet::Version::V3, s.priority, s.interval_cs);
                        let age = now.duration_since(s.at);
                        (age < down).then(|| Live { ip: *ip, priority: s.priority, left: down - age })
                    })
                    .collect();
                if let Err(e) = udp.send_to(encode_answer(nonce, &live).as_bytes(), from).await {
                    warn!(%from, error = %e, "witness: cannot answer");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const OTHER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

    fn live(prio: u8, left_ms: u64) -> Live {
        Live {
            ip: OTHER,
            priority: prio,
            left: Duration::from_millis(left_ms),
        }
    }

    #[test]
    fn answer_roundtrip() {
        let a = vec![live(200, 1500)];
        assert_eq!(parse_answer(&encode_answer(9, &a), 9), Some(a));
        assert_eq!(parse_answer(&encode_answer(9, &[]), 8), None);
    }

    #[test]
    fn claim_needs_majority_and_no_better_master() {
        let fb = Duration::from_secs(3);
        assert_eq!(decide(&[Some(vec![])], ME, 100, true, fb), Ok(()));
        assert_eq!(decide(&[None], ME, 100, true, fb), Err(fb));
        assert_eq!(decide(&[Some(vec![]), None], ME, 100, true, fb), Err(fb));
        assert_eq!(
            decide(&[Some(vec![live(200, 700)])], ME, 100, true, fb),
            Err(Duration::from_millis(705))
        );
        // A lower master does not block a preempting claim, but blocks without preempt.
        assert_eq!(
            decide(&[Some(vec![live(50, 700)])], ME, 100, true, fb),
            Ok(())
        );
        assert!(decide(&[Some(vec![live(50, 700)])], ME, 100, false, fb).is_err());
    }

    #[test]
    fn master_steps_down_without_majority_or_for_better() {
        assert_eq!(master_check(&[Some(vec![])], ME, 100), None);
        assert!(master_check(&[None], ME, 100).is_some());
        assert!(master_check(&[Some(vec![live(150, 100)])], ME, 100).is_some());
        assert_eq!(master_check(&[Some(vec![live(50, 100)])], ME, 100), None);
    }
}

//! Trackers: local checks that lower an instance's priority (weight > 0) or put it in fault
//! (weight 0) while they fail.
//!
//! Each tracker is a task probing every `interval` (first probe at once), with a `timeout`
//! per probe, and consecutive-count hysteresis: `fall` failures to go down, `rise` successes
//! to come back. It reports changes only. Trackers start "up" so a daemon whose checks pass
//! does not flap through fault at start; a check that fails from the start reports "down"
//! after `fall` probes.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::{TrackConfig, TrackKind};
use crate::netlink::Netlink;

/// A tracker's state change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrackChange {
    /// Index in the instance's tracker list.
    pub index: usize,
    /// Whether it is now passing.
    pub up: bool,
}

/// Effective priority and fault from the tracker states: `(priority, fault)`.
///
/// Failed weights are subtracted from `base`, clamped to 1..=254 (an address owner whose
/// trackers lowered it stops being the owner). Any failed weight-0 tracker means fault.
pub fn effective(base: u8, tracks: &[TrackConfig], up: &[bool]) -> (u8, bool) {
    let mut fault = false;
    let mut lowered: u32 = 0;
    for (t, &ok) in tracks.iter().zip(up) {
        if !ok {
            if t.weight == 0 {
                fault = true;
            } else {
                lowered += u32::from(t.weight);
            }
        }
    }
    if lowered == 0 {
        return (base, fault);
    }
    let p = u32::from(base).saturating_sub(lowered).clamp(1, 254);
    (u8::try_from(p).unwrap_or(1), fault)
}

/// Start every tracker of an instance; changes arrive on the returned channel.
pub fn spawn_all(
    tracks: &[TrackConfig],
    nl: &Netlink,
    shutdown: &CancellationToken,
) -> mpsc::UnboundedReceiver<TrackChange> {
    let (tx, rx) = mpsc::unbounded_channel();
    for (index, t) in tracks.iter().enumerate() {
        tokio::spawn(run_one(
            index,
            t.clone(),
            nl.clone(),
            tx.clone(),
            shutdown.clone(),
        ));
    }
    rx
}

async fn run_one(
    index: usize,
    t: TrackConfig,
    nl: Netlink,
    tx: mpsc::UnboundedSender<TrackChange>,
    shutdown: CancellationToken,
) {
    let mut up = true;
    let mut streak: u32 = 0;
    let mut tick = tokio::time::interval(t.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = matches!(
            tokio::time::timeout(t.timeout, probe(&t.kind, &nl)).await,
            Ok(true)
        );
        debug!(tracker = %t.name, ok, "probe");
        if ok == up {
            streak = 0;
            continue;
        }
        streak += 1;
        if streak >= if up { t.fall } else { t.rise } {
            up = ok;
            streak = 0;
            info!(tracker = %t.name, up, weight = t.weight, "tracker changed");
            if tx.send(TrackChange { index, up }).is_err() {
                return;
            }
        }
    }
}

async fn probe(kind: &TrackKind, nl: &Netlink) -> bool {
    match kind {
        TrackKind::Tcp(a) => TcpStream::connect(a).await.is_ok(),
        TrackKind::Http { addr, host, path } => http_ok(*addr, host, path).await,
        TrackKind::Command(argv) => {
            let Some((prog, args)) = argv.split_first() else {
                return false;
            };
            tokio::process::Command::new(prog)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .status()
                .await
                .is_ok_and(|s| s.success())
        }
        TrackKind::Interface(name) => nl.link(name).await.is_ok_and(|l| l.up),
    }
}

async fn http_ok(addr: SocketAddr, host: &str, path: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    let mut n = 0;
    while n < 12 {
        match s.read(&mut buf[n..]).await {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    // "HTTP/1.x 2xx"
    n >= 12 && buf.starts_with(b"HTTP/1.") && buf[9] == b'2'
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(weight: u8) -> TrackConfig {
        TrackConfig {
            name: "t".into(),
            kind: TrackKind::Tcp("127.0.0.1:1".parse().unwrap()),
            weight,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        }
    }

    #[test]
    fn weights_and_fault() {
        let ts = vec![t(30), t(50), t(0)];
        assert_eq!(effective(150, &ts, &[true, true, true]), (150, false));
        assert_eq!(effective(150, &ts, &[false, true, true]), (120, false));
        assert_eq!(effective(150, &ts, &[false, false, true]), (70, false));
        assert_eq!(effective(60, &ts, &[false, false, true]), (1, false));
        assert_eq!(effective(255, &ts, &[false, true, true]), (225, false));
        assert_eq!(effective(150, &ts, &[true, true, false]), (150, true));
    }

    #[tokio::test]
    async fn tcp_and_http_probes() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut b = [0u8; 256];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(b"HTTP/1.0 204 No Content\r\n\r\n").await;
            }
        });
        assert!(http_ok(addr, "x", "/").await);
        assert!(TcpStream::connect(addr).await.is_ok());
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        assert!(!http_ok(closed, "x", "/").await);
    }
}

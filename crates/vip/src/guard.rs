//! The guard: a tiny second process that withdraws the virtual addresses when the daemon
//! dies or freezes.
//!
//! keepalived leaves the VIP on a host whose daemon was killed with -9 or stopped with
//! SIGSTOP: the kernel keeps answering for the address while a backup takes it over, and two
//! hosts answer. A process cannot clean up after its own SIGKILL, and a frozen process
//! cannot do anything at all, so the withdrawal must come from *outside* the daemon:
//!
//! 1. **The guard process** (this module). The daemon starts it (same binary, `hastack vip
//!    --guard`) with a pipe to its stdin and one from its stdout. Before adding addresses the
//!    daemon sends `hold`; while master it sends `beat` with every advert. The guard removes
//!    the addresses (netlink) and reports `fenced` when
//!    * the beats stop for `watchdog_timeout` (the daemon is frozen or starved), which is
//!      shorter than the backups' Master_Down_Interval, so the address is gone before a
//!      backup claims it; or
//!    * its stdin reaches EOF: the daemon exited, however it died (the kernel closes the pipe
//!      even on SIGKILL). This is immediate.
//!
//!    It ignores SIGINT/SIGTERM (a Ctrl-C or `systemctl stop` hits the whole group; the
//!    daemon's graceful stop releases the addresses itself and then closes the pipe).
//! 2. **A kernel-side lease** (see [`crate::netlink`]): addresses carry `valid_lft`, refreshed
//!    while master, so even if both processes are SIGKILLed or frozen together (a cgroup
//!    freeze, `kill -9 -PGID`), the kernel deletes the address within the lease. The lease
//!    has one-second granularity, so it is the backstop, not the fast path.
//!
//! Why not only the lease: at 10-20 ms adverts a backup takes over within ~40-80 ms, far
//! below the kernel's one-second lifetime resolution. Why not only the guard: the guard can be
//! frozen together with the daemon. Together: fast in the common case, bounded in the worst.
//!
//! If the guard dies, the daemon's supervising task starts a new one and replays the current
//! `hold` of every instance.
//!
//! Messages are lines: daemon -> guard `hold <id> <ifindex> <timeout_ms> <addr>/<len>...`,
//! `beat <id>`, `release <id>`; guard -> daemon `ready`, `fenced <id>`.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::Error;
use crate::netlink::Netlink;

/// The daemon's side of the guard.
///
/// A supervising task owns the guard process: it writes the daemon's messages to the guard's
/// stdin, reports `fenced` lines, and if the guard dies it starts a new one (jittered,
/// bounded back-off) and replays the current `hold` of every instance, so a guard killed by
/// the OOM killer or an operator does not leave the daemon unprotected until its restart.
#[derive(Debug)]
pub struct GuardClient {
    tx: mpsc::UnboundedSender<String>,
}

/// A guard message to the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardEvent {
    /// The guard removed instance `id`'s addresses.
    Fenced(u32),
    /// The guard exited; a new one is being started.
    Lost,
    /// A new guard runs (after [`GuardEvent::Lost`]).
    Restarted,
}

struct Running {
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _child: Child,
}

async fn start_guard(program: &PathBuf, args: &[String]) -> Result<Running, Error> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| Error::Io(format!("start the guard {}: {e}", program.display())))?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::Io("guard stdin missing".into()))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Error::Io("guard stdout missing".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    match tokio::time::timeout(Duration::from_secs(5), lines.next_line()).await {
        Ok(Ok(Some(l))) if l == "ready" => Ok(Running {
            stdin,
            lines,
            _child: child,
        }),
        other => Err(Error::Io(format!(
            "the guard process did not start: {other:?}"
        ))),
    }
}

impl GuardClient {
    /// Start the guard (`program args...`), wait for it to say `ready` (5 s limit), and
    /// return the client plus a stream of its events.
    pub async fn spawn(
        program: PathBuf,
        args: Vec<String>,
    ) -> Result<(GuardClient, mpsc::UnboundedReceiver<GuardEvent>), Error> {
        let first = start_guard(&program, &args).await?;
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        tokio::spawn(supervise(program, args, first, rx, ev_tx));
        Ok((GuardClient { tx }, ev_rx))
    }

    /// Tell the guard we are about to hold `addrs` on `ifindex`.
    pub fn hold(&self, id: u32, ifindex: u32, timeout: Duration, addrs: &[(Ipv4Addr, u8)]) {
        let mut l = format!("hold {id} {ifindex} {}", timeout.as_millis());
        for (a, p) in addrs {
            l.push_str(&format!(" {a}/{p}"));
        }
        let _ = self.tx.send(l);
    }

    /// We are alive and still master.
    pub fn beat(&self, id: u32) {
        let _ = self.tx.send(format!("beat {id}"));
    }

    /// We no longer hold instance `id`'s addresses.
    pub fn release(&self, id: u32) {
        let _ = self.tx.send(format!("release {id}"));
    }

    /// Say goodbye: the guard exits (we already released everything).
    pub fn close(&self) {
        let _ = self.tx.send("bye".into());
    }
}

async fn supervise(
    program: PathBuf,
    args: Vec<String>,
    first: Running,
    mut rx: mpsc::UnboundedReceiver<String>,
    ev_tx: mpsc::UnboundedSender<GuardEvent>,
) {
    // The current hold line of each instance, replayed to a restarted guard.
    let mut holds: HashMap<u32, String> = HashMap::new();
    let mut running = Some(first);
    let mut attempt: u32 = 0;
    loop {
        let Some(g) = running.as_mut() else {
            // Jittered, bounded back-off between restarts: 100 ms doubling to 5 s.
            let ceiling =
                Duration::from_millis(100u64 << attempt.min(6)).min(Duration::from_secs(5));
            let delay = ceiling / 2 + ceiling.mul_f64(fastrand::f64()) / 2;
            tokio::time::sleep(delay).await;
            attempt += 1;
            match start_guard(&program, &args).await {
                Ok(mut g) => {
                    let mut ok = true;
                    for l in holds.values() {
                        ok &= g.stdin.write_all(format!("{l}\n").as_bytes()).await.is_ok();
                    }
                    if ok {
                        info!(held = holds.len(), "guard restarted");
                        let _ = ev_tx.send(GuardEvent::Restarted);
                        attempt = 0;
                        running = Some(g);
                    }
                }
                Err(e) => warn!(error = %e, "cannot restart the guard"),
            }
            continue;
        };
        tokio::select! {
            m = rx.recv() => {
                let Some(l) = m else { return };
                let mut w = l.split_whitespace();
                match (w.next(), w.next().and_then(|x| x.parse::<u32>().ok())) {
                    (Some("hold"), Some(id)) => { holds.insert(id, l.clone()); }
                    (Some("release"), Some(id)) => { holds.remove(&id); }
                    _ => {}
                }
                let bye = l == "bye";
                if g.stdin.write_all(format!("{l}\n").as_bytes()).await.is_err() {
                    running = None;
                    let _ = ev_tx.send(GuardEvent::Lost);
                    continue;
                }
                if bye {
                    return;
                }
            }
            line = g.lines.next_line() => match line {
                Ok(Some(l)) => {
                    if let Some(id) = l.strip_prefix("fenced ").and_then(|x| x.parse::<u32>().ok()) {
                        holds.remove(&id);
                        let _ = ev_tx.send(GuardEvent::Fenced(id));
                    }
                }
                _ => {
                    running = None;
                    let _ = ev_tx.send(GuardEvent::Lost);
                }
            },
        }
    }
}

#[derive(Debug)]
struct Held {
    ifindex: u32,
    addrs: Vec<(Ipv4Addr, u8)>,
    timeout: Duration,
    last: Instant,
}

/// One parsed daemon -> guard message.
#[derive(Debug, PartialEq, Eq)]
enum Msg {
    Hold {
        id: u32,
        ifindex: u32,
        timeout: Duration,
        addrs: Vec<(Ipv4Addr, u8)>,
    },
    Beat(u32),
    Release(u32),
    Bye,
}

fn parse_msg(l: &str) -> Option<Msg> {
    let mut w = l.split_whitespace();
    match w.next()? {
        "hold" => {
            let id = w.next()?.parse().ok()?;
            let ifindex = w.next()?.parse().ok()?;
            let timeout = Duration::from_millis(w.next()?.parse().ok()?);
            let addrs = w
                .map(|c| {
                    let (a, p) = c.split_once('/')?;
                    Some((a.parse().ok()?, p.parse().ok()?))
                })
                .collect::<Option<Vec<_>>>()?;
            Some(Msg::Hold {
                id,
                ifindex,
                timeout,
                addrs,
            })
        }
        "beat" => Some(Msg::Beat(w.next()?.parse().ok()?)),
        "release" => Some(Msg::Release(w.next()?.parse().ok()?)),
        "bye" => Some(Msg::Bye),
        _ => None,
    }
}

async fn withdraw(nl: &Netlink, h: &Held) {
    for (a, p) in &h.addrs {
        if let Err(e) = nl.remove(h.ifindex, *a, *p).await {
            warn!(addr = %a, error = %e, "guard: cannot remove the address");
        }
    }
}

/// The guard process's main loop: reads the daemon's messages from stdin until EOF.
pub async fn run_guard() -> Result<(), Error> {
    let nl = Netlink::connect()?;
    // Ignore SIGINT/SIGTERM: only the daemon's pipe decides when we go.
    for kind in [
        tokio::signal::unix::SignalKind::interrupt(),
        tokio::signal::unix::SignalKind::terminate(),
    ] {
        if let Ok(mut s) = tokio::signal::unix::signal(kind) {
            tokio::spawn(async move { while s.recv().await.is_some() {} });
        }
    }
    // The pipes are registered with the reactor directly (non-blocking), not read through
    // tokio's stdin/stdout, which use helper threads: threads created after
    // SCHED_RESET_ON_FORK run at normal priority, and a starved reader thread would delay
    // the beats until the guard fenced a healthy daemon.
    let dup = |fd: std::os::fd::BorrowedFd<'_>, what: &str| {
        fd.try_clone_to_owned()
            .map_err(|e| Error::Io(format!("guard: dup {what}: {e}")))
    };
    let stdin = dup(std::io::stdin().as_fd(), "stdin")?;
    let stdout = dup(std::io::stdout().as_fd(), "stdout")?;
    let input = tokio::net::unix::pipe::Receiver::from_owned_fd(stdin)
        .map_err(|e| Error::Io(format!("guard: stdin must be a pipe: {e}")))?;
    let mut out = tokio::net::unix::pipe::Sender::from_owned_fd(stdout)
        .map_err(|e| Error::Io(format!("guard: stdout must be a pipe: {e}")))?;
    out.write_all(b"ready\n")
        .await
        .map_err(|e| Error::Io(format!("guard stdout: {e}")))?;
    out.flush().await.ok();
    let mut lines = BufReader::new(input).lines();
    let mut held: HashMap<u32, Held> = HashMap::new();
    loop {
        let next = held.values().map(|h| h.last + h.timeout).min();
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            l = lines.next_line() => match l {
                Ok(Some(l)) => match parse_msg(&l) {
                    Some(Msg::Hold { id, ifindex, timeout, addrs }) => {
                        held.insert(id, Held { ifindex, addrs, timeout, last: Instant::now() });
                    }
                    Some(Msg::Beat(id)) => {
                        if let Some(h) = held.get_mut(&id) {
                            h.last = Instant::now();
                        }
                    }
                    Some(Msg::Release(id)) => {
                        held.remove(&id);
                    }
                    Some(Msg::Bye) => {
                        for h in held.values() {
                            withdraw(&nl, h).await;
                        }
                        return Ok(());
                    }
                    None => warn!(line = %l, "guard: unknown message"),
                },
                _ => {
                    // The daemon is gone (exit, crash, SIGKILL): nobody advertises for these
                    // addresses any more, so nobody may hold them.
                    for h in held.values() {
                        withdraw(&nl, h).await;
                    }
                    if !held.is_empty() {
                        warn!("guard: the daemon died while master; addresses withdrawn");
                    }
                    return Ok(());
                }
            },
            () = sleep => {
                let now = Instant::now();
                let expired: Vec<u32> = held
                    .iter()
                    .filter(|(_, h)| now >= h.last + h.timeout)
                    .map(|(id, _)| *id)
                    .collect();
                for id in expired {
                    if let Some(h) = held.remove(&id) {
                        withdraw(&nl, &h).await;
                        info!(id, stalled_ms = now.duration_since(h.last).as_millis(), "guard: the daemon stopped beating; addresses withdrawn");
                        let _ = out.write_all(format!("fenced {id}\n").as_bytes()).await;
                        let _ = out.flush().await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages() {
        assert_eq!(
            parse_msg("hold 3 7 250 10.0.0.1/24 10.0.0.2/32"),
            Some(Msg::Hold {
                id: 3,
                ifindex: 7,
                timeout: Duration::from_millis(250),
                addrs: vec![
                    (Ipv4Addr::new(10, 0, 0, 1), 24),
                    (Ipv4Addr::new(10, 0, 0, 2), 32)
                ]
            })
        );
        assert_eq!(parse_msg("beat 3"), Some(Msg::Beat(3)));
        assert_eq!(parse_msg("release 3"), Some(Msg::Release(3)));
        assert_eq!(parse_msg("hold 3 x"), None);
        assert_eq!(parse_msg("hold 3 7 250 10.0.0.1"), None);
        assert_eq!(parse_msg(""), None);
    }
}

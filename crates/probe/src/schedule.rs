//! The probe scheduler: one task per member, probing on a jittered cadence chosen by the
//! member's health phase.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hastack_core::health::ProbePhase;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::trace;

use crate::check::{Check, Outcome, human, probe};

/// No cadence is shorter than this, whatever the schedule says: a zero interval must not
/// turn the scheduler into a busy loop.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// No cadence or timeout is longer than this (a day), so that time arithmetic can never
/// overflow, whatever the schedule says.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);

/// Largest accepted jitter fraction.
pub const MAX_JITTER: f64 = 0.5;

/// When to probe (HAProxy's `inter`, `fastinter`, `downinter` and `timeout check`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Between probes of a member that is up and stable ([`ProbePhase::Steady`]).
    pub interval: Duration,
    /// Between probes while a member is changing state ([`ProbePhase::Changing`]).
    pub fast_interval: Duration,
    /// Between probes of a member that is down and stable ([`ProbePhase::Down`]).
    pub down_interval: Duration,
    /// Bound on each probe, from start to verdict.
    pub timeout: Duration,
    /// Each wait is multiplied by a uniform factor in `[1 - jitter, 1 + jitter]`
    /// (a fraction, clamped to `0..=0.5`).
    pub jitter: f64,
}

impl Default for Schedule {
    /// The config defaults: 2s, 500ms, 2s, timeout 1s, jitter 0.1.
    fn default() -> Self {
        Schedule {
            interval: Duration::from_secs(2),
            fast_interval: Duration::from_millis(500),
            down_interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            jitter: 0.1,
        }
    }
}

impl Schedule {
    /// The un-jittered wait after a probe that left the member in `phase`.
    pub fn base(&self, phase: ProbePhase) -> Duration {
        match phase {
            ProbePhase::Steady => self.interval,
            ProbePhase::Changing => self.fast_interval,
            ProbePhase::Down => self.down_interval,
        }
        .clamp(MIN_INTERVAL, MAX_INTERVAL)
    }

    /// `base` times a uniform factor in `[1 - jitter, 1 + jitter]` (`base` capped at
    /// [`MAX_INTERVAL`]).
    pub fn jittered(&self, base: Duration, rng: &mut fastrand::Rng) -> Duration {
        let base = base.min(MAX_INTERVAL);
        let j = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, MAX_JITTER)
        } else {
            0.0
        };
        base.mul_f64(1.0 + j * (2.0 * rng.f64() - 1.0))
    }
}

/// A member the scheduler probes. The proxy implements it on its per-member state.
pub trait Target: Send + Sync + 'static {
    /// Where to probe (read before every probe, so an address change is picked up).
    fn addr(&self) -> SocketAddr;

    /// Record an outcome (the proxy feeds its `HealthMachine`); return the phase that picks
    /// the next interval.
    fn report(&self, outcome: Outcome) -> ProbePhase;

    /// A signal to probe sooner: when notified (`notify_one`), the pending wait is cut short
    /// to `fast_interval` after the previous probe's start (or now, if that has passed). The
    /// proxy uses it when live traffic marks a member down between probes, so the member is
    /// re-checked at the fast cadence at once. Default: none.
    fn wake(&self) -> Option<&tokio::sync::Notify> {
        None
    }
}

/// Something that can probe an address within a timeout: [`Check`] (TCP/HTTP), or another
/// layer's protocol check (RESP, SQL) that reuses this scheduler.
pub trait Prober: Send + Sync + 'static {
    /// Probe `addr` once; should finish within `timeout` (the scheduler enforces it anyway).
    fn probe(&self, addr: SocketAddr, timeout: Duration) -> impl Future<Output = Outcome> + Send;
}

impl Prober for Check {
    fn probe(&self, addr: SocketAddr, timeout: Duration) -> impl Future<Output = Outcome> + Send {
        probe(addr, self, timeout)
    }
}

/// Probe `target` forever on its schedule until `shutdown`.
///
/// The first probe comes after a random offset within `interval`, so the probes of many
/// members never align. After each probe, the phase returned by [`Target::report`] picks the
/// wait ([`ProbePhase::Steady`] -> `interval`, `Changing` -> `fast_interval`, `Down` ->
/// `down_interval`), jittered by +-`jitter` and measured from the start of that probe (so a
/// slow probe does not slow the cadence; if it took longer than the wait, the next starts at
/// once). Every probe is bounded by `timeout`. Cancelling `shutdown` ends the task promptly,
/// even mid-probe (that probe is not reported).
pub fn spawn(
    target: Arc<dyn Target>,
    check: Arc<Check>,
    schedule: Schedule,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    spawn_with(target, check, schedule, shutdown)
}

/// [`spawn`] with any [`Prober`].
pub fn spawn_with<P: Prober>(
    target: Arc<dyn Target>,
    prober: Arc<P>,
    schedule: Schedule,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let rng = fastrand::Rng::with_seed(fastrand::u64(..));
    tokio::spawn(run(target, prober, schedule, shutdown, rng))
}

async fn wake(target: &dyn Target) {
    match target.wake() {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

pub(crate) async fn run<P: Prober>(
    target: Arc<dyn Target>,
    prober: Arc<P>,
    schedule: Schedule,
    shutdown: CancellationToken,
    mut rng: fastrand::Rng,
) {
    let timeout = schedule.timeout.min(MAX_INTERVAL);
    let first = schedule.base(ProbePhase::Steady).mul_f64(rng.f64());
    let mut next = Instant::now() + first;
    let mut last_start: Option<Instant> = None;
    loop {
        let sleep = tokio::time::sleep_until(next);
        let mut sleep = std::pin::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                () = &mut sleep => break,
                () = wake(target.as_ref()) => {
                    let now = Instant::now();
                    let soonest = last_start
                        .map_or(now, |s| s + schedule.base(ProbePhase::Changing))
                        .max(now);
                    if soonest < sleep.deadline() {
                        sleep.as_mut().reset(soonest);
                    }
                }
            }
        }
        let started = Instant::now();
        last_start = Some(started);
        let addr = target.addr();
        let attempt = tokio::time::timeout(timeout, prober.probe(addr, timeout));
        let outcome = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            r = attempt => r.unwrap_or_else(|_| Outcome {
                ok: false,
                latency: started.elapsed(),
                detail: format!("timed out after {}", human(timeout)),
            }),
        };
        trace!(%addr, ok = outcome.ok, latency_us = outcome.latency.as_micros() as u64, detail = %outcome.detail, "probe");
        let phase = target.report(outcome);
        next = started + schedule.jittered(schedule.base(phase), &mut rng);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::collections::VecDeque;
    use tokio::sync::{Notify, mpsc};

    const MS: Duration = Duration::from_millis(1);

    /// A prober that takes `latency` of (virtual) time, or never finishes.
    struct Fake {
        latency: Option<Duration>,
    }

    impl Prober for Fake {
        fn probe(&self, _: SocketAddr, _: Duration) -> impl Future<Output = Outcome> + Send {
            let latency = self.latency;
            async move {
                match latency {
                    Some(l) => tokio::time::sleep(l).await,
                    None => std::future::pending().await,
                }
                Outcome {
                    ok: true,
                    latency: latency.unwrap_or_default(),
                    detail: "fake".into(),
                }
            }
        }
    }

    /// Reports every outcome (with the time it arrived) on a channel and answers with the
    /// next scripted phase (Steady once the script runs out).
    struct Recorder {
        tx: mpsc::UnboundedSender<(Instant, Outcome)>,
        script: Mutex<VecDeque<ProbePhase>>,
        wake: Option<Notify>,
    }

    impl Target for Recorder {
        fn addr(&self) -> SocketAddr {
            SocketAddr::from(([127, 0, 0, 1], 9))
        }
        fn report(&self, outcome: Outcome) -> ProbePhase {
            let _ = self.tx.send((Instant::now(), outcome));
            self.script.lock().pop_front().unwrap_or(ProbePhase::Steady)
        }
        fn wake(&self) -> Option<&Notify> {
            self.wake.as_ref()
        }
    }

    fn recorder(
        script: &[ProbePhase],
        wake: bool,
    ) -> (Arc<Recorder>, mpsc::UnboundedReceiver<(Instant, Outcome)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let r = Arc::new(Recorder {
            tx,
            script: Mutex::new(script.iter().copied().collect()),
            wake: wake.then(Notify::new),
        });
        (r, rx)
    }

    fn schedule(jitter: f64) -> Schedule {
        Schedule {
            interval: 2000 * MS,
            fast_interval: 500 * MS,
            down_interval: 5000 * MS,
            timeout: 300 * MS,
            jitter,
        }
    }

    async fn times(rx: &mut mpsc::UnboundedReceiver<(Instant, Outcome)>, n: usize) -> Vec<Instant> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let (t, _) = tokio::time::timeout(Duration::from_secs(3600), rx.recv())
                .await
                .expect("no probe within an hour of virtual time")
                .expect("scheduler ended");
            out.push(t);
        }
        out
    }

    fn gaps(t: &[Instant]) -> Vec<Duration> {
        t.windows(2).map(|w| w[1] - w[0]).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn phases_choose_intervals() {
        use ProbePhase::{Changing, Down, Steady};
        let (target, mut rx) = recorder(&[Steady, Changing, Changing, Down, Down, Steady], false);
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let task = spawn_with(
            target,
            Arc::new(Fake {
                latency: Some(Duration::ZERO),
            }),
            schedule(0.0),
            stop.clone(),
        );
        let t = times(&mut rx, 8).await;
        assert!(t[0] - t0 < 2000 * MS, "first probe within one interval");
        assert_eq!(
            gaps(&t),
            [2000, 500, 500, 5000, 5000, 2000, 2000].map(|n| n * MS)
        );
        stop.cancel();
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn jitter_is_bounded_and_varies() {
        let (target, mut rx) = recorder(&[], false);
        let stop = CancellationToken::new();
        let mut s = schedule(0.2);
        s.interval = 1000 * MS;
        let _task = spawn_with(
            target,
            Arc::new(Fake {
                latency: Some(Duration::ZERO),
            }),
            s,
            stop.clone(),
        );
        let g = gaps(&times(&mut rx, 200).await);
        assert!(g.iter().all(|&d| d >= 800 * MS && d <= 1200 * MS), "{g:?}");
        let (lo, hi) = (g.iter().min().unwrap(), g.iter().max().unwrap());
        assert!(
            *lo < 850 * MS && *hi > 1150 * MS,
            "jitter barely used: {lo:?}..{hi:?}"
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn first_probes_are_spread_over_the_interval() {
        let stop = CancellationToken::new();
        let t0 = Instant::now();
        let mut s = schedule(0.0);
        s.interval = Duration::from_secs(10);
        let mut rxs = Vec::new();
        for _ in 0..50 {
            let (target, rx) = recorder(&[], false);
            spawn_with(
                target,
                Arc::new(Fake {
                    latency: Some(Duration::ZERO),
                }),
                s,
                stop.clone(),
            );
            rxs.push(rx);
        }
        let mut offsets = Vec::new();
        for rx in &mut rxs {
            offsets.push(times(rx, 1).await[0] - t0);
        }
        assert!(offsets.iter().all(|&o| o < s.interval), "{offsets:?}");
        let mut seconds: Vec<u64> = offsets.iter().map(Duration::as_secs).collect();
        seconds.sort_unstable();
        seconds.dedup();
        assert!(seconds.len() >= 6, "offsets bunched into {seconds:?}");
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_stops_promptly_even_mid_probe() {
        // Between probes.
        let (target, mut rx) = recorder(&[], false);
        let stop = CancellationToken::new();
        let task = spawn_with(
            target,
            Arc::new(Fake {
                latency: Some(Duration::ZERO),
            }),
            schedule(0.1),
            stop.clone(),
        );
        times(&mut rx, 2).await;
        stop.cancel();
        tokio::time::timeout(MS, task)
            .await
            .expect("did not stop")
            .unwrap();
        assert!(rx.recv().await.is_none(), "reported after shutdown");

        // In the middle of a probe that would take 10 minutes (a generous timeout).
        let (target, mut rx) = recorder(&[], false);
        let stop = CancellationToken::new();
        let mut s = schedule(0.0);
        s.timeout = Duration::from_secs(600);
        let task = spawn_with(target, Arc::new(Fake { latency: None }), s, stop.clone());
        tokio::time::sleep(s.interval).await; // the first probe has started by now
        stop.cancel();
        tokio::time::timeout(MS, task)
            .await
            .expect("did not stop")
            .unwrap();
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn every_probe_is_bounded_by_the_timeout() {
        let (target, mut rx) = recorder(&[], false);
        let stop = CancellationToken::new();
        let _task = spawn_with(
            target,
            Arc::new(Fake { latency: None }),
            schedule(0.0),
            stop.clone(),
        );
        let mut starts = Vec::new();
        for _ in 0..3 {
            let (t, o) = rx.recv().await.unwrap();
            assert!(!o.ok);
            assert_eq!(o.detail, "timed out after 300ms");
            assert_eq!(o.latency, 300 * MS);
            starts.push(t - o.latency);
        }
        assert_eq!(
            gaps(&starts),
            [2000 * MS, 2000 * MS],
            "cadence counts from probe starts"
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_slower_than_the_wait_is_followed_at_once() {
        let (target, mut rx) = recorder(&[ProbePhase::Changing; 5], false);
        let stop = CancellationToken::new();
        let mut s = schedule(0.0);
        s.timeout = 1000 * MS;
        let _task = spawn_with(
            target,
            Arc::new(Fake {
                latency: Some(700 * MS),
            }),
            s,
            stop.clone(),
        );
        let t = times(&mut rx, 4).await;
        assert_eq!(gaps(&t), [700 * MS; 3]);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn zero_intervals_do_not_spin() {
        let (target, mut rx) = recorder(&[], false);
        let stop = CancellationToken::new();
        let s = Schedule {
            interval: Duration::ZERO,
            fast_interval: Duration::ZERO,
            down_interval: Duration::ZERO,
            timeout: 300 * MS,
            jitter: f64::NAN,
        };
        let _task = spawn_with(
            target,
            Arc::new(Fake {
                latency: Some(Duration::ZERO),
            }),
            s,
            stop.clone(),
        );
        let g = gaps(&times(&mut rx, 5).await);
        assert_eq!(g, [MIN_INTERVAL; 4]);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn wake_brings_the_next_probe_forward_but_not_before_fast_interval() {
        let (target, mut rx) = recorder(&[], true);
        let stop = CancellationToken::new();
        let _task = spawn_with(
            target.clone(),
            Arc::new(Fake {
                latency: Some(Duration::ZERO),
            }),
            schedule(0.0),
            stop.clone(),
        );
        let t1 = times(&mut rx, 1).await[0];
        // Woken soon after a probe: waits for fast_interval after that probe's start.
        tokio::time::sleep_until(t1 + 100 * MS).await;
        target.wake.as_ref().unwrap().notify_one();
        let t2 = times(&mut rx, 1).await[0];
        assert_eq!(t2 - t1, 500 * MS);
        // Woken long after: probes at once.
        tokio::time::sleep_until(t2 + 1200 * MS).await;
        target.wake.as_ref().unwrap().notify_one();
        let t3 = times(&mut rx, 1).await[0];
        assert_eq!(t3 - t2, 1200 * MS);
        // Not woken: the steady interval.
        let t4 = times(&mut rx, 1).await[0];
        assert_eq!(t4 - t3, 2000 * MS);
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_schedules_are_clamped() {
        let (target, mut rx) = recorder(&[], false);
        let stop = CancellationToken::new();
        let s = Schedule {
            interval: Duration::MAX,
            fast_interval: Duration::MAX,
            down_interval: Duration::MAX,
            timeout: Duration::MAX,
            jitter: 0.5,
        };
        let _task = spawn_with(target, Arc::new(Fake { latency: None }), s, stop.clone());
        let (_, o) = rx.recv().await.unwrap();
        assert_eq!(o.latency, MAX_INTERVAL);
        assert_eq!(o.detail, "timed out after 1day");
        stop.cancel();
    }

    #[test]
    fn jitter_is_clamped() {
        let mut rng = fastrand::Rng::with_seed(1);
        let s = Schedule {
            jitter: 3.0,
            ..Schedule::default()
        };
        for _ in 0..1000 {
            let d = s.jittered(Duration::from_secs(1), &mut rng);
            assert!(d >= 500 * MS && d <= 1500 * MS, "{d:?}");
        }
    }
}

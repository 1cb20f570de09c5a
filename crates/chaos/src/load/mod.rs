//! The open-loop load generator.
//!
//! Requests are scheduled at fixed intervals (`1 / rate`) from the start of the run and sent
//! on schedule whether or not earlier ones have finished: a slow or stalled server never
//! slows the sender down, so there is no coordinated omission. Each request's latency is
//! measured from its **intended** send time, so any delay in the generator itself (a busy
//! runtime, a full machine) shows up as latency instead of vanishing.
//!
//! The in-flight cap bounds memory and file descriptors: a request due while the cap is
//! reached is recorded as [`Outcome::Overload`] (a failure) at its intended time, never
//! queued or delayed.
//!
//! Protocols plug in through [`Driver`]: HTTP ([`http::HttpDriver`]) and TCP
//! ([`tcp::TcpDriver`]) exist; Redis or SQL drivers implement the same trait. Entry
//! addresses are tried in order per request, moving on only when the connection could not
//! be made (like a client resolving a name with several records): see [`call_with_failover`].

pub mod http;
pub mod tcp;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::record::{Outcome, Recorder};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why one call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallError {
    /// How to count it.
    pub outcome: Outcome,
    /// Whether the failure happened before anything reached the server (connection refused
    /// or timed out), so that the next entry address may be tried safely.
    pub before_send: bool,
}

impl CallError {
    /// A failure after (possibly) reaching the server.
    pub fn after(outcome: Outcome) -> Self {
        CallError {
            outcome,
            before_send: false,
        }
    }

    /// A connect failure: safe to fail over.
    pub fn connect(outcome: Outcome) -> Self {
        CallError {
            outcome,
            before_send: true,
        }
    }
}

/// A protocol: sends one request to one address and says how it went.
///
/// Implementations apply their own connect timeout; the generator applies the overall
/// request timeout around [`call_with_failover`].
pub trait Driver: Send + Sync + std::fmt::Debug + 'static {
    /// One request to `target`.
    fn call(&self, target: SocketAddr) -> BoxFuture<'_, Result<(), CallError>>;
}

/// Try `targets` in order; move to the next only when the previous failed before sending.
/// The last failure is returned when every address fails.
pub async fn call_with_failover(
    driver: &dyn Driver,
    targets: &[SocketAddr],
) -> Result<(), CallError> {
    let mut last = CallError::connect(Outcome::Refused);
    for &t in targets {
        match driver.call(t).await {
            Ok(()) => return Ok(()),
            Err(e) if e.before_send => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// What to send and how fast.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// Requests per second.
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// Entry addresses, in failover order.
    pub targets: Vec<SocketAddr>,
    /// Overall timeout of one request (including failover attempts).
    pub timeout: Duration,
    /// Most requests in flight at once; more are counted as [`Outcome::Overload`].
    pub max_in_flight: usize,
}

impl LoadPlan {
    /// Requests the plan schedules: `floor(rate x duration)`.
    pub fn count(&self) -> u64 {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "validated positive and bounded"
        )]
        let n = (self.rate * self.duration.as_secs_f64()).floor() as u64;
        n
    }

    /// Intended send offset of request `i`.
    pub fn offset(&self, i: u64) -> Duration {
        #[allow(clippy::cast_precision_loss, reason = "request indices far below 2^52")]
        Duration::from_secs_f64(i as f64 / self.rate)
    }
}

/// Live counters of a running generator.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Requests scheduled so far.
    pub scheduled: AtomicU64,
    /// Requests in flight now.
    pub in_flight: AtomicUsize,
    /// Most in flight at once.
    pub max_in_flight_seen: AtomicUsize,
}

/// Run the plan from `start` (which may lie in the past: overdue requests are sent at once
/// and their latency still counts from their intended time). Every scheduled request is
/// recorded in `recorder` before this returns; requests still in flight when the plan ends
/// are awaited (each is bounded by the request timeout). `cancel` stops scheduling early.
pub async fn run(
    plan: &LoadPlan,
    driver: Arc<dyn Driver>,
    recorder: Arc<Mutex<Recorder>>,
    stats: Arc<LoadStats>,
    start: Instant,
    cancel: CancellationToken,
) {
    let targets: Arc<[SocketAddr]> = plan.targets.clone().into();
    let mut tasks = JoinSet::new();
    for i in 0..plan.count() {
        let offset = plan.offset(i);
        let intended = start + offset;
        tokio::select! {
            () = tokio::time::sleep_until(intended) => {}
            () = cancel.cancelled() => break,
        }
        // Reap finished tasks so the set stays as small as the in-flight count.
        while tasks.try_join_next().is_some() {}
        stats.scheduled.fetch_add(1, Ordering::Relaxed);
        let now_in_flight = stats.in_flight.load(Ordering::Relaxed);
        if now_in_flight >= plan.max_in_flight {
            recorder.lock().record(offset, None, Outcome::Overload);
            continue;
        }
        let n = stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_in_flight_seen.fetch_max(n, Ordering::Relaxed);
        let driver = driver.clone();
        let targets = targets.clone();
        let recorder = recorder.clone();
        let stats = stats.clone();
        let timeout = plan.timeout;
        tasks.spawn(async move {
            let r =
                tokio::time::timeout_at(intended + timeout, call_with_failover(&*driver, &targets))
                    .await;
            let latency = Instant::now().saturating_duration_since(intended);
            let (latency, outcome) = match r {
                Ok(Ok(())) => (Some(latency), Outcome::Ok),
                Ok(Err(e)) => (None, e.outcome),
                Err(_) => (None, Outcome::Timeout),
            };
            recorder.lock().record(offset, latency, outcome);
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Each task ends by its own deadline, so this wait is bounded by the request timeout.
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver that answers after a fixed (virtual) delay, or fails before sending.
    #[derive(Debug)]
    struct Fake {
        delay: Duration,
        refuse: Vec<SocketAddr>,
        calls: Mutex<Vec<SocketAddr>>,
    }

    impl Driver for Fake {
        fn call(&self, target: SocketAddr) -> BoxFuture<'_, Result<(), CallError>> {
            self.calls.lock().push(target);
            let refused = self.refuse.contains(&target);
            Box::pin(async move {
                if refused {
                    return Err(CallError::connect(Outcome::Refused));
                }
                tokio::time::sleep(self.delay).await;
                Ok(())
            })
        }
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn plan(rate: f64, secs: u64, cap: usize) -> LoadPlan {
        LoadPlan {
            rate,
            duration: Duration::from_secs(secs),
            targets: vec![addr(1), addr(2)],
            timeout: Duration::from_secs(10),
            max_in_flight: cap,
        }
    }

    async fn go(plan: &LoadPlan, fake: Arc<Fake>, start: Instant) -> crate::record::History {
        let rec = Arc::new(Mutex::new(Recorder::new(
            plan.duration + plan.timeout,
            Duration::from_secs(60),
        )));
        run(
            plan,
            fake,
            rec.clone(),
            Arc::new(LoadStats::default()),
            start,
            CancellationToken::new(),
        )
        .await;
        let r = Arc::try_unwrap(rec).unwrap().into_inner();
        r.finish(plan.duration + plan.timeout)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_server_does_not_slow_the_sender() {
        // Every answer takes 500 ms; 100 req/s for 2 s must still schedule 200 requests,
        // each with 500 ms latency, all on time (paused clock: exact).
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(500),
            refuse: vec![],
            calls: Mutex::new(vec![]),
        });
        let p = plan(100.0, 2, 1000);
        let h = go(&p, fake.clone(), Instant::now()).await;
        assert_eq!(h.totals().good(), 200);
        assert_eq!(fake.calls.lock().len(), 200);
        let l = crate::report::latency_of(&h.total).unwrap();
        assert!(
            (l.p50_ms - 500.0).abs() < 5.0 && (l.max_ms - 500.0).abs() < 5.0,
            "{l:?}"
        );
        // 100 requests per second of intended time, one per 10 ms bucket.
        assert!(h.buckets[..200].iter().all(|b| b.total() == 1));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_counts_from_the_intended_send_time() {
        // The generator starts 1 s late (start lies in the past): the first 100 requests go
        // out at once, and their latency includes the time they were overdue.
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(10),
            refuse: vec![],
            calls: Mutex::new(vec![]),
        });
        let p = plan(100.0, 2, 1000);
        let start = Instant::now() - Duration::from_secs(1);
        let h = go(&p, fake, start).await;
        assert_eq!(h.totals().good(), 200);
        let l = crate::report::latency_of(&h.total).unwrap();
        // Request 0 was due 1 s ago: 1010 ms; the on-time half sees 10 ms.
        assert!((l.max_ms - 1010.0).abs() < 15.0, "{l:?}");
        assert!((l.p50_ms - 10.0).abs() < 1.0, "{l:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn over_cap_sends_fail_instead_of_waiting() {
        // Answers take 1 s, 100 req/s, cap 50: requests 0..49 go out, 50..99 are refused
        // (cap full until the first answer at 1.0 s), then the pattern repeats.
        let fake = Arc::new(Fake {
            delay: Duration::from_secs(1),
            refuse: vec![],
            calls: Mutex::new(vec![]),
        });
        let p = plan(100.0, 2, 50);
        let h = go(&p, fake.clone(), Instant::now()).await;
        let t = h.totals();
        assert_eq!(t.total(), 200);
        assert_eq!(t.counts[Outcome::Overload.index()], 100);
        assert_eq!(fake.calls.lock().len(), 100);
        // Overloaded requests are recorded at their intended time.
        assert_eq!(h.buckets[60].counts[Outcome::Overload.index()], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn connect_failures_fail_over_to_the_next_address() {
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(1),
            refuse: vec![addr(1)],
            calls: Mutex::new(vec![]),
        });
        let p = plan(10.0, 1, 100);
        let h = go(&p, fake.clone(), Instant::now()).await;
        assert_eq!(h.totals().good(), 10);
        let calls = fake.calls.lock();
        assert_eq!(calls.len(), 20);
        assert_eq!(calls[0], addr(1));
        assert_eq!(calls[1], addr(2));
    }

    #[tokio::test(start_paused = true)]
    async fn every_address_refusing_is_a_refusal() {
        let fake = Arc::new(Fake {
            delay: Duration::from_millis(1),
            refuse: vec![addr(1), addr(2)],
            calls: Mutex::new(vec![]),
        });
        let p = plan(10.0, 1, 100);
        let h = go(&p, fake, Instant::now()).await;
        assert_eq!(h.totals().counts[Outcome::Refused.index()], 10);
    }
}

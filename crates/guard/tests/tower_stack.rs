//! tower-level integration: guards composed around a real tokio service, under virtual time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use hastack_guard::breaker::Window;
use hastack_guard::layer::*;
use hastack_guard::{
    Breaker, BreakerPolicy, BreakerState, ClassId, ConcurrencyLimiter, ConcurrencyPolicy,
    GuardError, RateLimitPolicy, RateLimiter, RejectReason, ShedPolicy,
};
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt, service_fn};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A backend that takes `latency` per request and fails while `failing` is set.
#[derive(Clone)]
struct Backend {
    failing: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
}

impl Backend {
    fn new() -> Self {
        Backend {
            failing: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    fn service(
        &self,
        latency: Duration,
    ) -> impl Service<u32, Response = String, Error = BoxError, Future: Send> + Clone + Send + 'static
    {
        let (failing, calls) = (self.failing.clone(), self.calls.clone());
        service_fn(move |req: u32| {
            let (failing, calls) = (failing.clone(), calls.clone());
            async move {
                calls.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(latency).await;
                if failing.load(Ordering::Relaxed) {
                    Err::<String, BoxError>("backend exploded".into())
                } else {
                    Ok(format!("ok {req}"))
                }
            }
        })
    }
}

#[tokio::test(start_paused = true)]
async fn failing_backend_trips_breaker_fallback_is_served_then_it_closes() {
    let backend = Backend::new();
    let breaker = Breaker::new(
        BreakerPolicy {
            window: Window::Count(20),
            min_calls: 10,
            failure_ratio: 0.5,
            open_for: Duration::from_secs(2),
            open_max: Duration::from_secs(10),
            half_open_calls: 3,
            ..BreakerPolicy::default()
        },
        42,
    );
    let fallback_served = Arc::new(AtomicU64::new(0));
    let fs = fallback_served.clone();
    let mut svc = ServiceBuilder::new()
        .layer(FallbackLayer::new(move |e: &BoxError| {
            matches!(
                e.downcast_ref::<GuardError>(),
                Some(GuardError::Rejected {
                    reason: RejectReason::BreakerOpen,
                    ..
                })
            )
            .then(|| {
                fs.fetch_add(1, Ordering::Relaxed);
                "fallback page".to_string()
            })
        }))
        .layer(BreakerLayer::new(breaker.clone(), ErrorsFail))
        .service(backend.service(ms(5)));

    // Healthy.
    for i in 0..30 {
        assert_eq!(
            svc.ready().await.unwrap().call(i).await.unwrap(),
            format!("ok {i}")
        );
    }
    // The backend starts failing: errors pass through until the breaker trips, within the
    // window's minimum of calls.
    backend.failing.store(true, Ordering::Relaxed);
    let mut errors = 0;
    let mut first_fallback_at = None;
    for i in 0..40 {
        match svc.ready().await.unwrap().call(i).await {
            Ok(body) => {
                assert_eq!(body, "fallback page");
                first_fallback_at.get_or_insert(i);
            }
            Err(_) => errors += 1,
        }
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert!(
        errors <= 10,
        "{errors} errors reached callers before the trip"
    );
    assert_eq!(first_fallback_at, Some(errors));
    let calls_while_open = backend.calls.load(Ordering::Relaxed);
    for i in 0..100 {
        assert_eq!(
            svc.ready().await.unwrap().call(i).await.unwrap(),
            "fallback page"
        );
    }
    assert_eq!(
        backend.calls.load(Ordering::Relaxed),
        calls_while_open,
        "open breaker let calls through"
    );
    // Recovery: after the open period, trial calls succeed and the breaker closes.
    backend.failing.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..10 {
        assert_eq!(
            svc.ready().await.unwrap().call(i).await.unwrap(),
            format!("ok {i}")
        );
    }
    assert_eq!(breaker.state(), BreakerState::Closed);
    let c = breaker.counts();
    assert_eq!((c.opened, c.half_opened, c.closed), (1, 1, 1));
    assert!(fallback_served.load(Ordering::Relaxed) >= 100);
}

/// 2x overload: critical keeps >= 99% success while best-effort is shed.
#[tokio::test(start_paused = true)]
async fn shedding_keeps_critical_alive_under_2x_overload() {
    // Capacity: 10 in flight x 10 ms = 1000 requests/s.
    let limiter = ConcurrencyLimiter::new(ConcurrencyPolicy {
        shedding: Some(ShedPolicy::default()),
        ..ConcurrencyPolicy::fixed(10, 50, ms(500))
    });
    let backend = Backend::new();
    let svc = ServiceBuilder::new()
        .layer(ConcurrencyLayer::shedding(
            limiter.clone(),
            |req: &u32| ClassId((*req % 10 >= 3) as u8 * 2),
            ErrorsFail,
        ))
        .service(backend.service(ms(10)));
    // Open loop: 2000 requests/s for 10 s; 30% critical (class 0), 70% best effort (class 2).
    let ok = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let sent = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
    let mut tasks = Vec::new();
    let start = Instant::now();
    for n in 0..20_000u32 {
        tokio::time::sleep_until(start + Duration::from_micros(500 * u64::from(n))).await;
        let class = usize::from(n % 10 >= 3);
        sent[class].fetch_add(1, Ordering::Relaxed);
        let (ok, svc) = (ok[class].clone(), svc.clone());
        tasks.push(tokio::spawn(async move {
            if svc.oneshot(n).await.is_ok() {
                ok.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rate =
        |i: usize| ok[i].load(Ordering::Relaxed) as f64 / sent[i].load(Ordering::Relaxed) as f64;
    let snap = limiter.snapshot();
    let served = backend.calls.load(Ordering::Relaxed);
    println!(
        "critical {:.4}, best effort {:.4}, served {served}, {snap:?}",
        rate(0),
        rate(1)
    );
    assert!(
        rate(0) >= 0.99,
        "critical success {:.4} ({snap:?})",
        rate(0)
    );
    assert!(rate(1) < 0.6, "best effort was not shed: {:.4}", rate(1));
    assert!(snap.shed[2] > 0 && snap.shed[0] == 0, "{snap:?}");
    // Goodput stays near capacity: 10 s x 1000/s.
    assert!(served >= 9_000, "goodput collapsed: {served}");
}

/// A rate limit holds within +-5% over 10 s of (virtual) time at 3x offered load.
#[tokio::test(start_paused = true)]
async fn rate_limit_holds_within_5_percent_over_10_seconds() {
    let limiter = Arc::new(
        RateLimiter::new(RateLimitPolicy {
            burst: 20,
            ..RateLimitPolicy::new("api", 200, Duration::from_secs(1))
        })
        .unwrap(),
    );
    let backend = Backend::new();
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone(), |_: &u32| 0))
        .service(backend.service(ms(1)));
    let start = Instant::now();
    let mut ok = 0u64;
    let mut limited = 0u64;
    let mut n = 0u32;
    // 600 requests/s offered (3x), for 10 s.
    while Instant::now() - start < Duration::from_secs(10) {
        match svc.clone().oneshot(n).await {
            Ok(_) => ok += 1,
            Err(e) => {
                let g = e.downcast_ref::<GuardError>().unwrap();
                assert_eq!(g.reason(), Some(RejectReason::RateLimited));
                limited += 1;
            }
        }
        n += 1;
        tokio::time::sleep_until(start + Duration::from_micros(1667 * u64::from(n))).await;
    }
    let expected = 200.0 * 10.0;
    let err = (ok as f64 - expected).abs() / expected;
    assert!(
        err <= 0.05,
        "admitted {ok} vs {expected} ({:.1}% off), refused {limited}",
        err * 100.0
    );
    assert!(limited > 3000, "{limited}");
    assert_eq!(limiter.rejected_total(), limited);
}

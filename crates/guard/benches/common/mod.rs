//! The full guard stack used by the zero-allocation test and the criterion bench: every
//! guard on, as a busy route would have it.

use std::sync::Arc;
use std::time::Duration;

use hastack_guard::breaker::Window;
use hastack_guard::rate::KeyKind;
use hastack_guard::{
    AdaptivePolicy, Breaker, BreakerPolicy, ConcurrencyLimiter, ConcurrencyPolicy, Fallback,
    FallbackAction, RateLimitPolicy, RateLimiter, RejectReason, RouteGuard, ShedPolicy,
    SwitchBoard,
};

/// A route with a per-client-IP rate limit (effectively unlimited, so every request takes
/// the admitted path), a time-window breaker, an adaptive concurrency limit with priority
/// shedding, and a fallback.
#[allow(clippy::expect_used, reason = "fixed, valid parameters")]
pub fn full_stack() -> RouteGuard {
    let board = SwitchBoard::new();
    let rate = RateLimiter::new(RateLimitPolicy {
        key: KeyKind::ClientIp,
        burst: 1_000_000,
        ..RateLimitPolicy::new("bench", 10_000_000, Duration::from_secs(1))
    })
    .expect("valid rate limit");
    let breaker = Breaker::new(
        BreakerPolicy {
            window: Window::Time(Duration::from_secs(10)),
            ..BreakerPolicy::default()
        },
        1,
    );
    let limiter = ConcurrencyLimiter::new(ConcurrencyPolicy {
        adaptive: Some(AdaptivePolicy {
            initial_limit: 100,
            window: Duration::from_millis(1),
            ..AdaptivePolicy::default()
        }),
        shedding: Some(ShedPolicy::default()),
        ..ConcurrencyPolicy::fixed(1000, 100, Duration::from_secs(1))
    });
    let class = limiter.class("critical").expect("default class");
    RouteGuard::new("bench", board.switch("bench"))
        .with_rate_limit(Arc::new(rate))
        .with_breaker(breaker)
        .with_concurrency(limiter, class)
        .with_fallback(Fallback::new(
            FallbackAction::Pool("static".into()),
            &[RejectReason::BreakerOpen],
            false,
        ))
}

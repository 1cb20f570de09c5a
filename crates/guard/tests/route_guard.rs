//! The proxy's per-request API end to end: switch, fallback, pacing, breaker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hastack_config::{Diagnostics, KeyPath, Source};
use hastack_guard::config::{
    FallbackConfig, RateLimitConfig, validate_fallback, validate_rate_limit,
};
use hastack_guard::{
    Breaker, BreakerPolicy, FallbackAction, Outcome, RejectReason, RouteGuard, SwitchBoard,
};
use http::{HeaderMap, StatusCode};
use tokio::time::Instant;

fn src() -> Source {
    Source::parse(
        "t.toml",
        "[proxy.routes.register.fallback]\nstatus = 503\nbody = \"registration is paused for the sale\"\n[proxy.routes.register.rate_limit]\nrate = 2\nburst = 1\nmax_wait = \"1s\"\n"
            .to_string(),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn disabled_route_answers_its_fallback_and_re_enables_cleanly() {
    let src = src();
    let mut d = Diagnostics::new();
    let fb = validate_fallback(
        &src,
        &KeyPath::of(&["proxy", "routes", "register", "fallback"]),
        &FallbackConfig {
            status: Some(503),
            body: Some("registration is paused for the sale".into()),
            ..FallbackConfig::default()
        },
        &mut d,
    )
    .unwrap();
    assert!(d.is_empty(), "{d}");
    let board = SwitchBoard::new();
    let route = RouteGuard::new("register", board.switch("register")).with_fallback(fb);
    let p = route.admit(0, Instant::now()).await.unwrap();
    p.complete(Instant::now(), Outcome::Success);

    assert!(board.disable("register"));
    // A reload rebuilds the route from config: the switch state carries over.
    let route = RouteGuard::new("register", board.switch("register"))
        .with_fallback(route.fallback().unwrap().clone());
    let rej = route.admit(0, Instant::now()).await.unwrap_err();
    assert_eq!(rej.reason, RejectReason::Disabled);
    let Some(FallbackAction::Static(resp)) = route.fallback_for(&rej) else {
        panic!("no static fallback");
    };
    let resp = resp.to_response();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(&resp.body()[..], b"registration is paused for the sale");

    assert!(board.enable("register"));
    let p = route.admit(0, Instant::now()).await.unwrap();
    p.complete(Instant::now(), Outcome::Success);
    assert_eq!(route.fallback().unwrap().served_total(), 1);
}

#[tokio::test(start_paused = true)]
async fn pacing_waits_and_breaker_refusals_carry_retry_after() {
    let src = src();
    let mut d = Diagnostics::new();
    let spec = validate_rate_limit(
        &src,
        &KeyPath::of(&["proxy", "routes", "register", "rate_limit"]),
        &RateLimitConfig {
            rate: Some(2),
            burst: Some(1),
            max_wait: hastack_config::Dur::secs(1),
            ..RateLimitConfig::default()
        },
        &mut d,
    )
    .unwrap();
    let board = SwitchBoard::new();
    let breaker = Breaker::new(
        BreakerPolicy {
            min_calls: 1,
            ..BreakerPolicy::default()
        },
        1,
    );
    let route = RouteGuard::new("register", board.switch("register"))
        .with_rate_limit(spec.build())
        .with_breaker(breaker);
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let key = route.rate_key(ip, &HeaderMap::new());
    let t0 = Instant::now();
    let p1 = route.admit(key, t0).await.unwrap();
    assert_eq!(p1.waited(), Duration::ZERO);
    let p2 = route.admit(key, Instant::now()).await.unwrap();
    assert_eq!(
        Instant::now() - t0,
        Duration::from_millis(500),
        "paced one interval"
    );
    assert_eq!(p2.waited(), Duration::from_millis(500));
    let p3 = route.admit(key, Instant::now()).await.unwrap();
    drop(p3);
    // Other requests take the queue (max_wait 1 s = two paced slots) without waiting
    // here; the next one would wait beyond max_wait: refused, with a Retry-After.
    let rl = route.rate_limiter().unwrap();
    assert!(matches!(
        rl.check(key),
        hastack_guard::RateDecision::Delay(..)
    ));
    assert!(matches!(
        rl.check(key),
        hastack_guard::RateDecision::Delay(..)
    ));
    let rej = route.admit(key, Instant::now()).await.unwrap_err();
    assert_eq!(rej.reason, RejectReason::RateLimited);
    assert_eq!(rej.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(rej.rate.unwrap().retry_after_secs() >= 1);
    // One failure trips the breaker (min_calls = 1): the next request is refused by it.
    p1.complete(Instant::now(), Outcome::Failure);
    drop(p2);
    // (Past the rate limiter's queue, well within the open period of [2.5 s, 5 s].)
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rej = route.admit(key, Instant::now()).await.unwrap_err();
    assert_eq!(rej.reason, RejectReason::BreakerOpen);
    assert!(rej.retry_after.unwrap() > Duration::ZERO);
    assert!(Arc::strong_count(route.breaker().unwrap()) >= 1);
    let status = serde_json::to_value(route.status(Instant::now())).unwrap();
    assert_eq!(status["breaker"]["state"], "open");
    assert_eq!(status["rate_limit"]["rejected"], 1);
    assert_eq!(status["disabled"], false);
}

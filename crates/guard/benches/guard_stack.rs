//! Cost of the whole guard stack per request on the proxy's hot path (admit + complete),
//! and of each primitive alone. Zero allocations on this path is asserted by
//! `tests/zero_alloc.rs`.

use std::future::Future;
use std::hint::black_box;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use hastack_guard::rate::KeyKind;
use hastack_guard::{
    Breaker, BreakerPolicy, ClassId, ConcurrencyLimiter, ConcurrencyPolicy, Outcome,
    RateLimitPolicy, RateLimiter,
};
use http::HeaderMap;
use tokio::time::Instant;

mod common;

fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("the admitted path never waits"),
    }
}

fn bench(c: &mut Criterion) {
    let route = common::full_stack();
    let headers = HeaderMap::new();
    let ips: Vec<IpAddr> = (0..1024u32)
        .map(|i| IpAddr::from((0x0a00_0000 + i).to_be_bytes()))
        .collect();
    let mut i = 0usize;
    c.bench_function("guard_stack/admit+complete (all guards)", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let key = route.rate_key(ips[i & 1023], &headers);
            let permit = now_or_never(route.admit(black_box(key), Instant::now()));
            if let Ok(p) = permit {
                p.complete(Instant::now(), Outcome::Success);
            }
        })
    });

    // Two threads on the same route (the proxy's worker threads share one RouteGuard):
    // reported as wall time per request per thread.
    let shared = Arc::new(common::full_stack());
    c.bench_function(
        "guard_stack/admit+complete, 2 threads sharing the route",
        |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for t in 0..2u32 {
                        let (route, ips, headers) = (&shared, &ips, &headers);
                        s.spawn(move || {
                            for n in 0..iters {
                                let ip = ips[(n as usize + t as usize * 512) & 1023];
                                let key = route.rate_key(ip, headers);
                                if let Ok(p) = now_or_never(route.admit(key, Instant::now())) {
                                    p.complete(Instant::now(), Outcome::Success);
                                }
                            }
                        });
                    }
                });
                start.elapsed()
            })
        },
    );

    let global = RateLimiter::new(RateLimitPolicy {
        burst: 1_000_000,
        ..RateLimitPolicy::new("g", 10_000_000, Duration::from_secs(1))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("rate_limit/global check", |b| {
        b.iter(|| black_box(global.check(0)))
    });
    let keyed = RateLimiter::new(RateLimitPolicy {
        key: KeyKind::ClientIp,
        burst: 1_000_000,
        ..RateLimitPolicy::new("k", 10_000_000, Duration::from_secs(1))
    })
    .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("rate_limit/per-ip key+check", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            black_box(keyed.check(keyed.key(ips[i & 1023], &headers)))
        })
    });
    let breaker = Breaker::new(BreakerPolicy::default(), 1);
    c.bench_function("breaker/acquire+record (closed)", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(p) = breaker.acquire(now) {
                let _ = p.record(now, false);
            }
        })
    });
    let bulkhead =
        ConcurrencyLimiter::new(ConcurrencyPolicy::fixed(100, 0, Duration::from_secs(1)));
    c.bench_function("bulkhead/try_acquire+complete", |b| {
        b.iter(|| {
            let now = Instant::now();
            if let Ok(p) = bulkhead.try_acquire(ClassId(0), now) {
                p.complete(now, Outcome::Success);
            }
        })
    });
    c.bench_function("clock/tokio Instant::now", |b| {
        b.iter(|| black_box(Instant::now()))
    });
    black_box(Arc::strong_count(&breaker));
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! The admitted path of the whole guard stack allocates nothing: a counting global
//! allocator watches `admit` + `complete` over many requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// A GlobalAlloc impl is unsafe by definition; this one only forwards to the system
// allocator and counts, on the test thread only.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};

use hastack_guard::Outcome;
use http::HeaderMap;
use tokio::time::Instant;

#[path = "../benches/common/mod.rs"]
mod common;

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Poll a future that must complete at once (the admitted path never waits).
fn now_or_never<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the admitted path waited"),
    }
}

#[test]
fn whole_stack_admitted_path_allocates_nothing() {
    let route = common::full_stack();
    let headers = HeaderMap::new();
    let ips: Vec<IpAddr> = (0..64u8).map(|i| IpAddr::from([10, 0, 0, i])).collect();
    let run = |n: usize| {
        for i in 0..n {
            let key = route.rate_key(ips[i % ips.len()], &headers);
            let permit = now_or_never(route.admit(key, Instant::now())).unwrap();
            permit.complete(
                Instant::now(),
                if i % 50 == 0 {
                    Outcome::Failure
                } else {
                    Outcome::Success
                },
            );
        }
    };
    // Warm up: first touches of thread-locals, lazily built statics, the key table.
    run(10_000);
    COUNTING.with(|c| c.set(true));
    run(100_000);
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCS.load(Ordering::Relaxed),
        0,
        "allocations on the admitted path"
    );
    // The stack did run: the adaptive limiter saw the windows, the breaker counted calls.
    assert_eq!(route.breaker().unwrap().counts().calls, 110_000);
    assert_eq!(route.concurrency().unwrap().inflight(), 0);
}

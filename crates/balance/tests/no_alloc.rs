//! `Picker::pick` must never allocate: it runs on every request on every worker thread.
//! A counting global allocator proves it for every strategy, with and without exclusions
//! and hash keys.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// The only unsafe in this crate: a GlobalAlloc impl must be `unsafe impl`. It forwards to the
// system allocator unchanged and only counts calls.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use hastack_balance::{
    Candidate, HashAlgorithm, Load, PickRequest, Picker, Strategy, hash_key, member_id,
};
use tokio::time::Instant;

struct Counting;

thread_local! {
    /// Allocations made by this thread while counting is on (const-initialised, so reading
    /// it never allocates).
    static ALLOCS: Cell<Option<u64>> = const { Cell::new(None) };
}

fn note() {
    // `try_with`: the allocator may run during thread teardown.
    let _ = ALLOCS.try_with(|a| {
        if let Some(n) = a.get() {
            a.set(Some(n + 1));
        }
    });
}

// SAFETY: every method forwards to `System` with the same arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Allocations made by `f` on this thread.
fn allocations(f: impl FnOnce()) -> u64 {
    ALLOCS.with(|a| a.set(Some(0)));
    f();
    ALLOCS.with(|a| a.replace(None)).unwrap_or(0)
}

#[test]
fn counting_works() {
    let n = allocations(|| drop(std::hint::black_box(vec![1u8; 10])));
    assert_eq!(n, 1);
}

#[test]
fn pick_never_allocates() {
    let now = Instant::now();
    for n in [1usize, 3, 10, 100] {
        let cands: Vec<Candidate> = (0..n)
            .map(|i| {
                let load = Arc::new(Load::new());
                load.observe(Duration::from_micros(100 + i as u64), now);
                Candidate {
                    member: i,
                    id: member_id(&format!("m{i}")),
                    weight: 1 + (i as u32 % 4),
                    load,
                }
            })
            .collect();
        for s in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::LeastConn,
            Strategy::P2cEwma,
            Strategy::Hash(HashAlgorithm::Maglev),
            Strategy::Hash(HashAlgorithm::Ketama),
        ] {
            let p = Picker::new(s, cands.clone());
            // Warm up the thread-local RNG outside the measurement.
            let _ = p.pick(&PickRequest {
                now,
                hash: None,
                exclude: &[],
            });
            let exclude: Vec<usize> = (0..n.min(3) - 1).collect();
            let all: Vec<usize> = (0..n).collect();
            let mut picked = 0;
            let count = allocations(|| {
                for k in 0..1_000u64 {
                    let hash = (k % 2 == 0).then(|| hash_key(&k.to_le_bytes()));
                    for ex in [&[][..], &exclude[..], &all[..]] {
                        let r = PickRequest {
                            now,
                            hash,
                            exclude: ex,
                        };
                        picked += usize::from(p.pick(&r).is_some());
                        let mut rng = fastrand::Rng::with_seed(k);
                        picked += usize::from(p.pick_with(&mut rng, &r).is_some());
                    }
                }
            });
            assert_eq!(count, 0, "{s:?} with {n} candidates allocated");
            assert_eq!(
                picked, 4_000,
                "{s:?}: two picks per round, the all-excluded ones fail"
            );
        }
    }
}

//! Fuzz the embedded coordination store's request handling: arbitrary bytes decoded as etcd
//! v3 requests (Range, Put, DeleteRange, Txn, lease calls, Watch create, Compact) the way
//! tonic hands them to the services, applied to an in-memory store with a virtual clock,
//! checking the store's invariants (revisions never go back, one revision per request,
//! watch replays in order and in range).
//! Run: `cargo +nightly fuzz run coord_requests` from the repository root.
#![no_main]

use hastack_coord::server::harness::Harness;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    Harness::new().feed(data);
});

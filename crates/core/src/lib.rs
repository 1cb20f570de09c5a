//! Shared vocabulary of hastack, used by every layer.
//!
//! * [`Endpoint`]: the identity of a backend member (stable across reloads).
//! * [`health`]: the per-member health state machine (active rise/fall, passive ejection with
//!   growing and capped duration, admin drain/disable, slow start).
//! * [`backoff`]: jittered, bounded exponential back-off.
//! * [`budget`]: a retry budget (a share of recent requests plus a floor per second).
//! * [`failure`]: failures as values (who is to blame, whether a retry is safe) and the one
//!   pure retry decision every forwarding data plane follows.
//!
//! Everything here is pure logic: no sockets, no clocks, no tasks. Time is always passed in as
//! a [`tokio::time::Instant`] (so drivers running under tokio's paused clock get virtual time
//! for free) and randomness comes from a caller-provided [`fastrand::Rng`] (so tests are
//! reproducible from a seed).
//!
//! This crate deliberately knows nothing about HTTP, TCP, configuration files or metrics:
//! drivers in the feature crates own those and feed events in.

pub mod backoff;
pub mod budget;
pub mod endpoint;
pub mod failure;
pub mod health;

pub use backoff::Backoff;
pub use budget::{RetryBudget, RetryBudgetPolicy};
pub use endpoint::Endpoint;
pub use failure::{Blame, Next, Progress, Retry, Tries};
pub use health::{HealthMachine, HealthPolicy};

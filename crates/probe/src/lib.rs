//! Active health probes and their scheduler: the async driver around
//! `hastack_core::health::HealthMachine`'s probe phases.
//!
//! * [`probe`] runs one check against one address: a TCP connect ([`Check::Tcp`]), or an
//!   HTTP/1.1 request on a fresh connection with `Connection: close` ([`Check::Http`]: method,
//!   path, `Host`, expected status range, optional body substring in the first 64 KiB).
//!   Failure is a value ([`Outcome`] with a plain-English `detail`), never an error.
//! * [`spawn`] probes one member forever: first after a random offset within the interval
//!   (so many members' probes never align), then at the cadence the member's
//!   [`ProbePhase`](hastack_core::health::ProbePhase) asks for (steady / changing / down),
//!   each wait jittered, each probe bounded by the timeout, until the shutdown token fires.
//!   [`spawn_with`] does the same for any [`Prober`], so other layers (RESP, SQL checks)
//!   reuse the scheduler.
//! * [`HealthCheckConfig`] is the `health` table every pool shares, with
//!   [`HealthCheckConfig::validate`] turning it into a [`ValidatedHealth`] (check, schedule,
//!   rise, fall) and located, plain-English errors.
//!
//! The HTTP client is hyper's connection API (no hand-written HTTP parsing); the only
//! hand-written part is the scheduling loop, because it must follow the health machine's
//! phases, which no off-the-shelf scheduler knows about.
//!
//! This crate deliberately keeps no health state: [`Target::report`] hands every outcome to
//! the caller, whose `HealthMachine` decides (rise/fall) and answers with the next phase. It
//! does no passive checking either (that is the data plane's job) and touches no metrics: the
//! caller counts outcomes where it records them.

mod check;
mod config;
mod schedule;

pub use check::{Check, HttpCheck, MAX_BODY, Outcome, USER_AGENT, probe};
pub use config::{
    CheckKind, DEFAULT_FALL, DEFAULT_INTERVAL, DEFAULT_JITTER, DEFAULT_RISE, DEFAULT_TIMEOUT,
    Fraction, HealthCheckConfig, MIN_DEFAULT_FAST_INTERVAL, StatusSpec, ValidatedHealth,
};
pub use schedule::{
    MAX_INTERVAL, MAX_JITTER, MIN_INTERVAL, Prober, Schedule, Target, spawn, spawn_with,
};
